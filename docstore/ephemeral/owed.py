"""What the cache still owes Redis (no I/O; shared by the sync and the async cache).

- Drops of documents whose invalidation did not surely reach Redis (it was unreachable, or the
  call was cancelled, or the change's outcome is unknown). A drop stays owed until one that
  started after it succeeded, so another thread or task never reads past it, and a notice that
  arrives while a drop is under way is not forgotten by that drop.
- A drop of every cached document, once more than `max_documents` are owed (memory stays
  bounded) or a change's documents are not known.
- Single-flight locks a reader may hold without knowing it: its lock script timed out on a
  frozen Redis, which may run it later. Released at the next contact, so the next reader does
  not wait for the lock to expire.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

logger = logging.getLogger("docstore.cache")

# Locks kept for release, at most (each expires by itself anyway).
MAX_OWED_LOCKS = 1000


@dataclass(frozen=True)
class Debt:
    """What was owed when a payment started: `documents` with the stamp of their latest notice,
    and the stamp of the latest notice asking to drop every document (0: none)."""

    documents: dict[int, int]
    everything: int


class Owed:
    """The drops and lock releases the cache owes Redis; thread-safe."""

    def __init__(self, max_documents: int) -> None:
        self.max_documents = max_documents
        self._lock = threading.Lock()
        self._stamp = 0
        self._documents: dict[int, int] = {}  # document id -> stamp of its latest notice
        self._everything = 0  # stamp of the latest notice asking to drop every document
        self._folded = 0  # document notices folded into that one (counted as pending)
        self._locks: dict[tuple[str, str], None] = {}  # (lock key, token), oldest first

    # -- notices ------------------------------------------------------------------------------

    def documents(self, document_ids: Iterable[int]) -> None:
        """Owe a drop of these documents' cached copies."""
        with self._lock:
            for document_id in document_ids:
                self._stamp += 1
                self._documents[document_id] = self._stamp
            if len(self._documents) > self.max_documents:
                if not self._everything:
                    logger.warning(
                        "more than %d cache invalidations wait for Redis: every cached "
                        "document result will be dropped when it answers",
                        self.max_documents,
                    )
                self._fold_locked(len(self._documents))
                self._documents.clear()

    def everything(self) -> None:
        """Owe a drop of every cached document result."""
        with self._lock:
            self._fold_locked(1)

    def _fold_locked(self, count: int) -> None:
        self._stamp += 1
        self._everything = self._stamp
        self._folded += count

    def lock(self, lock_key: str, token: str) -> None:
        """Owe the release of a lock that may be held under `token`."""
        with self._lock:
            self._locks[(lock_key, token)] = None
            while len(self._locks) > MAX_OWED_LOCKS:
                del self._locks[next(iter(self._locks))]

    # -- paying -------------------------------------------------------------------------------

    def any(self) -> bool:
        """Whether anything is owed."""
        return bool(self._documents or self._everything or self._locks)

    def pending(self) -> int:
        """Documents whose drop is owed (those folded into a drop of everything included)."""
        with self._lock:
            return len(self._documents) + self._folded

    def take(self) -> Debt:
        """What is owed now; it stays owed until `paid` or `paid_everything`."""
        with self._lock:
            return Debt(dict(self._documents), self._everything)

    def paid(self, debt: Debt, document_ids: Iterable[int]) -> None:
        """These documents of `debt` were dropped: forget them unless noticed again since."""
        with self._lock:
            for document_id in document_ids:
                if self._documents.get(document_id) == debt.documents.get(document_id):
                    del self._documents[document_id]

    def paid_everything(self, debt: Debt) -> None:
        """Every cached document was dropped after `debt` was taken: forget what it held."""
        with self._lock:
            for document_id, stamp in debt.documents.items():
                if self._documents.get(document_id) == stamp:
                    del self._documents[document_id]
            if self._everything == debt.everything:
                self._everything = 0
                self._folded = 0

    def locks(self) -> list[tuple[str, str]]:
        """The locks to release, oldest first."""
        with self._lock:
            return list(self._locks)

    def released(self, locks: Iterable[tuple[str, str]]) -> None:
        """These locks were released (or found not held)."""
        with self._lock:
            for lock in locks:
                self._locks.pop(lock, None)


__all__ = ["MAX_OWED_LOCKS", "Debt", "Owed"]

"""Run an iterator in a background thread, a bounded number of items ahead of its consumer.

The migration reads Redis (network wait, reply parsing) while the main thread waits on
PostgreSQL; the bounded queue keeps memory at `depth` batches however large the keyspace.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

Item = TypeVar("Item")


class _Done:
    pass


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class ReadAhead(Generic[Item]):
    """Iterate `source` in a thread; items, then its end or its exception, reach the consumer."""

    def __init__(self, source: Iterator[Item], *, depth: int = 2, name: str = "read-ahead") -> None:
        self._source = source
        self._queue: queue.Queue[Item | _Done | _Failed] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=name, daemon=True)

    def _put(self, item: Item | _Done | _Failed) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
            except queue.Full:
                continue
            return True
        return False

    def _produce(self) -> None:
        try:
            for item in self._source:
                if not self._put(item):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, re-raised there
            self._put(_Failed(exc))
            return
        self._put(_Done())

    def __iter__(self) -> Iterator[Item]:
        self._thread.start()
        try:
            while True:
                item = self._queue.get()
                if isinstance(item, _Done):
                    return
                if isinstance(item, _Failed):
                    raise item.exc
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer after its current step and wait for it (idempotent)."""
        # The consumer stopped (done, failed, or interrupted).
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

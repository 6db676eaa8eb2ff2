"""Which named queries may read from a replica, and how a caller asks for the primary.

A query belongs in `REPLICA_QUERIES` when a result a few seconds old is still a right answer:
listings, search, counts and the user-with-documents overview. Single-row reads (`get_document`,
`authenticate_user`, ...) stay on the primary, so a `get` after a write sees the write.
Everything inside a transaction (a caller's `conn`) runs where that transaction runs.

`consistency("primary")` sends every read of the current context (thread or asyncio task, and
what it awaits) to the primary; it does no I/O, so the same plain context manager serves
`Docstore` and `AsyncDocstore`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Literal

from docstore.errors import InvalidInput

Consistency = Literal["primary", "replica"]

REPLICA_QUERIES: frozenset[str] = frozenset(
    {
        "list_user_documents",
        "count_user_documents_by_status",
        "search_documents",
        "get_user_with_documents",
        "list_users",
    }
)

_consistency: ContextVar[Consistency] = ContextVar("docstore_consistency", default="replica")


@contextmanager
def consistency(level: Consistency) -> Iterator[None]:
    """Within the block, lag-tolerant reads go to the replica ("replica", the default when one
    is configured) or to the primary ("primary": read what was just written anywhere)."""
    if level not in ("primary", "replica"):
        raise InvalidInput(f"consistency is 'primary' or 'replica', not {level!r}", field="level")
    token = _consistency.set(level)
    try:
        yield
    finally:
        _consistency.reset(token)


def may_read_from_replica(query_name: str) -> bool:
    """True when the named query tolerates lag and the caller did not ask for the primary."""
    return query_name in REPLICA_QUERIES and _consistency.get() == "replica"


__all__ = ["REPLICA_QUERIES", "Consistency", "consistency", "may_read_from_replica"]

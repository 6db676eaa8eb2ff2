"""Names of docstore's Redis keys: one `docstore:` namespace, hash-tagged for Redis Cluster.

Every key is ``docstore:<kind>:{<name>}`` plus an optional suffix. Redis Cluster hashes only the
part between the first ``{`` and the next ``}``, so all the keys built from one name (a cached
value and its lock, a stream and its dead letters) live in one slot and a Lua script may touch
them together.
"""

from __future__ import annotations

from collections.abc import Iterable

from docstore.errors import InvalidInput
from docstore.rules import RedisName, RowId, check

NAMESPACE = "docstore"


def check_name(name: str, what: str = "key") -> str:
    """`name` if it may be part of a key (`rules.RedisName`); `InvalidInput` naming `what`."""
    return str(check(RedisName, name, what))


def check_document_id(document_id: int) -> int:
    """`document_id` if it is a row id (`rules.RowId`: a positive BIGINT, never a bool)."""
    return int(check(RowId, document_id, "document_id"))


def check_document_ids(document_ids: object) -> list[int]:
    """`document_ids` as a list of row ids: an iterable of them (not a lone id or a string)."""
    if isinstance(document_ids, str | bytes) or not isinstance(document_ids, Iterable):
        raise InvalidInput("document_ids must be a list of document ids", field="document_ids")
    return [check_document_id(document_id) for document_id in document_ids]


def redis_key(kind: str, name: str, suffix: str = "") -> str:
    """``docstore:<kind>:{<name>}[:<suffix>]``; keys of one `name` share a cluster slot.

    A name starting with ``}`` would leave the hash tag empty (Redis Cluster then hashes the
    whole key, so a value and its lock could land in different slots): names starting with a
    brace get one ``{`` in front, which keeps every name's key distinct.
    """
    tag = "{" + name if name[:1] in ("{", "}") else name
    key = f"{NAMESPACE}:{kind}:{{{tag}}}"
    return f"{key}:{suffix}" if suffix else key


def cache_key(name: str) -> str:
    """Key of a cached value."""
    return redis_key("cache", name)


def cache_lock_key(name: str) -> str:
    """Key of the single-flight lock of a cached value (same slot as the value)."""
    return redis_key("cache", name, "lock")


def rate_limit_key(policy: str, name: str) -> str:
    """Key holding the state of one rate-limit policy for one client."""
    return redis_key(f"ratelimit:{policy}", name)


def queue_key(stream: str) -> str:
    """Key of a task stream."""
    return redis_key("queue", stream)


def dead_letter_key(stream: str) -> str:
    """Key of the dead-letter stream of a task stream (same slot as the stream)."""
    return redis_key("queue", stream, "dead")


def progress_key(document_id: int) -> str:
    """Key of a document's progress hash."""
    return redis_key("progress", str(document_id))


__all__ = [
    "NAMESPACE",
    "cache_key",
    "cache_lock_key",
    "check_document_id",
    "check_name",
    "dead_letter_key",
    "progress_key",
    "queue_key",
    "rate_limit_key",
    "redis_key",
]

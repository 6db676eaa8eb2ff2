"""Names of docstore's Redis keys: one `docstore:` namespace, hash-tagged for Redis Cluster.

Every key is ``docstore:<kind>:{<name>}`` plus an optional suffix. Redis Cluster hashes only the
part between the first ``{`` and the next ``}``, so all the keys built from one name (a cached
value and its lock, a stream and its dead letters) live in one slot and a Lua script may touch
them together.
"""

from __future__ import annotations

from docstore.errors import InvalidInput

NAMESPACE = "docstore"
MAX_NAME_LENGTH = 512
MAX_DOCUMENT_ID = 2**63 - 1  # documents.id is a BIGINT


def check_name(name: str, what: str = "key") -> str:
    """Return `name` if it is a non-empty string short enough to be part of a key.

    Any character goes (Redis keys are binary-safe) except lone surrogates, which UTF-8 cannot
    encode: redis-py would raise a raw `UnicodeEncodeError` for them.
    """
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"{what} must be a non-empty string", field=what)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidInput(f"{what} is longer than {MAX_NAME_LENGTH} characters", field=what)
    check_encodable(name, what)
    return name


def check_encodable(text: str, what: str) -> str:
    """Return `text` if UTF-8 can encode it (no lone surrogates); `InvalidInput` otherwise."""
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(
                f"{what} holds a lone surrogate, which UTF-8 cannot encode", field=what
            ) from None
    return text


def check_document_id(document_id: int) -> int:
    """Return `document_id` if it is a positive integer (not a bool) that fits a BIGINT."""
    if (
        not isinstance(document_id, int)
        or isinstance(document_id, bool)
        or not 1 <= document_id <= MAX_DOCUMENT_ID
    ):
        raise InvalidInput(
            f"document_id must be an integer from 1 to {MAX_DOCUMENT_ID}", field="document_id"
        )
    return document_id


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
    "MAX_NAME_LENGTH",
    "NAMESPACE",
    "cache_key",
    "cache_lock_key",
    "check_document_id",
    "check_encodable",
    "check_name",
    "dead_letter_key",
    "progress_key",
    "queue_key",
    "rate_limit_key",
    "redis_key",
]

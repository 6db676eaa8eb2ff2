"""Entries of the task queue's streams read as values: I/O-free, shared by `AsyncTaskQueue` and
its generated sync twin."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from docstore.ephemeral.values import DeadLetter, QueueMessage
from docstore.errors import InvalidInput
from docstore.observability.messaging import TRACE_FIELDS
from docstore.redis.client import as_text
from docstore.redis.keys import check_document_id

# A stream entry id: "<milliseconds>-<sequence>", each an unsigned 64-bit number.
_MESSAGE_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")


def id_time(message_id: str) -> datetime:
    """When the entry was added (its id's milliseconds are the server clock's)."""
    return datetime.fromtimestamp(int(message_id.split("-", 1)[0]) / 1000, tz=timezone.utc)


def entry_fields(raw: Any, errors: str = "strict") -> dict[str, str]:
    """An entry's fields as text (RESP3 gives a mapping, RESP2 a flat list)."""
    if isinstance(raw, dict):
        return {as_text(k, errors): as_text(v, errors) for k, v in raw.items()}
    flat = [as_text(item, errors) for item in raw]
    return dict(zip(flat[::2], flat[1::2], strict=errors == "strict"))


def queue_message(message_id: str, raw: Any, deliveries: int) -> QueueMessage:
    """The message of an entry; `KeyError`/`ValueError`/`InvalidInput` if it names no document."""
    fields = entry_fields(raw)
    return QueueMessage(
        message_id=message_id,
        document_id=check_document_id(int(fields["document_id"])),
        deliveries=deliveries,
        enqueued_at=id_time(message_id),
        trace_context={k: fields[k] for k in TRACE_FIELDS if k in fields},
    )


def dead_letter(letter_id: str, raw: Any) -> DeadLetter:
    """A dead letter as read back, whatever the entry it was made of held."""
    fields = entry_fields(raw, errors="replace")
    try:
        document_id: int | None = check_document_id(int(fields.get("document_id", "")))
    except (ValueError, InvalidInput):
        document_id = None
    deliveries = fields.get("deliveries", "")
    return DeadLetter(
        message_id=letter_id,
        source_id=fields.get("source_id", ""),
        document_id=document_id,
        deliveries=int(deliveries) if deliveries.isdecimal() else 0,
        last_consumer=fields.get("last_consumer", ""),
        dead_at=id_time(letter_id),
        reason=fields.get("reason"),
    )


def is_message_id(value: object) -> bool:
    """Whether `value` is a stream entry id ("<milliseconds>-<sequence>", 64 bits each)."""
    match = _MESSAGE_ID.fullmatch(value) if isinstance(value, str) else None
    return match is not None and all(int(part) < 2**64 for part in match.groups())


__all__ = ["dead_letter", "entry_fields", "id_time", "is_message_id", "queue_message"]

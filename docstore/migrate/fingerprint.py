"""What a legacy task says, as a digest (has it changed since?) and as a listing (conflicts)."""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from docstore.migrate.legacy_records import LegacyDocument, TaskPayload

# Characters of a result text shown in a conflict listing (with its length and digest).
EXCERPT_LENGTH = 200
# Part of every digest: a change to what is digested makes every task "changed" once, not
# "unchanged" by accident.
_DIGEST_VERSION = b"docstore.migrate source digest 1"
_NONE = (-1).to_bytes(8, "little", signed=True)
# Part of every raw digest: bump it when the parser changes what it makes of the same bytes, so
# that a re-run parses every task again instead of skipping one whose meaning changed.
_RAW_DIGEST_VERSION = b"docstore.migrate raw digest 1"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def source_fingerprint(doc: LegacyDocument) -> bytes:
    """MD5 of everything the migration writes from `doc` (16 bytes); same task, same digest.

    Each value is hashed with its length (None as a length of -1), so no two different tasks
    give the same byte stream; floats as repr (exact), times as ISO-8601 with their offset.
    """
    digest = hashlib.md5(_DIGEST_VERSION, usedforsecurity=False)
    for value in (
        doc.user_email,
        doc.filename,
        doc.s3_key,
        doc.status,
        doc.result_text,
        doc.error_message,
        None if doc.page_count is None else str(doc.page_count),
        None if doc.extraction_time_seconds is None else repr(doc.extraction_time_seconds),
        _time(doc.created_at),
        _time(doc.started_at),
        _time(doc.completed_at),
    ):
        if value is None:
            digest.update(_NONE)
        else:
            raw = value.encode("utf-8")
            digest.update(len(raw).to_bytes(8, "little", signed=True))
            digest.update(raw)
    return digest.digest()


def raw_fingerprint(payload: TaskPayload, result: bytes | None) -> bytes:
    """MD5 of a task's bytes as Redis gave them (16 bytes): its hash fields in sorted order (or
    its JSON string) and its result. Equal bytes parse to the same document, so a task whose raw
    digest is the one recorded is unchanged without being parsed."""
    digest = hashlib.md5(_RAW_DIGEST_VERSION, usedforsecurity=False)
    parts: list[bytes | None]
    if isinstance(payload, bytes):
        parts = [b"s", payload, result]
    else:
        parts = [b"h", *(part for item in sorted(payload.items()) for part in item), result]
    for part in parts:
        if part is None:
            digest.update(_NONE)
        else:
            digest.update(len(part).to_bytes(8, "little", signed=True))
            digest.update(part)
    return digest.digest()


def text_md5(text: str | None) -> str | None:
    """The hex MD5 of a text as PostgreSQL's md5() gives it (None for None)."""
    if text is None:
        return None
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def legacy_version(doc: LegacyDocument) -> dict[str, Any]:
    """The task as the migration would write it, JSON-ready, the text cut short."""
    text = doc.result_text
    return {
        "user_email": doc.user_email,
        "filename": doc.filename,
        "s3_key": doc.s3_key,
        "status": doc.status,
        "result_text": None if text is None else text[:EXCERPT_LENGTH],
        "result_length": None if text is None else len(text),
        "result_md5": text_md5(text),
        "error_message": doc.error_message,
        "page_count": doc.page_count,
        "extraction_time_seconds": doc.extraction_time_seconds,
        "created_at": _time(doc.created_at),
        "started_at": _time(doc.started_at),
        "completed_at": _time(doc.completed_at),
    }

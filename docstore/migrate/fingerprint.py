"""What a legacy task says, as a digest (has it changed since?) and as a listing (conflicts)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any

from docstore.migrate.legacy_records import LegacyDocument

# Characters of a result text shown in a conflict listing (with its length and digest).
EXCERPT_LENGTH = 200
# Part of every digest: a change to what is digested makes every task "changed" once, not
# "unchanged" by accident.
_DIGEST_VERSION = "1"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def source_fingerprint(doc: LegacyDocument) -> bytes:
    """MD5 of everything the migration writes from `doc` (16 bytes); same task, same digest."""
    values = [
        _DIGEST_VERSION,
        doc.user_email,
        doc.filename,
        doc.s3_key,
        doc.status,
        doc.result_text,
        doc.error_message,
        doc.page_count,
        doc.extraction_time_seconds,
        _time(doc.created_at),
        _time(doc.started_at),
        _time(doc.completed_at),
    ]
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).digest()


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

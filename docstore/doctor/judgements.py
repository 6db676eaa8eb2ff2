"""What `docstore doctor` concludes from what it read: I/O-free, shared by the async doctor and
its generated sync twin."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from typing import Any, NamedTuple

from pydantic import TypeAdapter, ValidationError

from docstore.models import UNFINISHED_STATUSES
from docstore.redis.client import as_text

_TIME: TypeAdapter[datetime] = TypeAdapter(datetime)
# Statuses in which a document still waits for, or is with, a worker; any other is finished.
ACTIVE = frozenset(UNFINISHED_STATUSES)


class DocumentState(NamedTuple):
    """A document's row as the audits judge it."""

    status: str
    updated_at: datetime
    quiet: bool  # unchanged for the grace period


def retry_due(retry_at: datetime | None, now: datetime) -> bool:
    """True when a PENDING document waits for no scheduled retry (or its time has come)."""
    return retry_at is None or retry_at <= now


def listed_document_id(fields: dict[str, str]) -> int | None:
    value = fields.get("document_id", "")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


def why_not_waiting(document_id: int | None, states: dict[int, DocumentState]) -> str | None:
    """Why a message cannot lead to work: '' for a document finished within the grace period
    (its worker is about to ack), None when it is waiting or with a worker."""
    if document_id is None:
        return "it names no document"
    state = states.get(document_id)
    if state is None:
        return f"document {document_id} has no row"
    if state.status in ACTIVE:
        return None
    return f"document {document_id} is {state.status}" if state.quiet else ""


def cached_updated_at(raw: bytes | str) -> datetime | None:
    try:
        value = json.loads(raw)
        moment = _TIME.validate_python(value["updated_at"]) if isinstance(value, dict) else None
    except (ValueError, KeyError, ValidationError):
        return None
    # A time without an offset (not written by docstore) is read as UTC.
    return moment.replace(tzinfo=timezone.utc) if moment and moment.tzinfo is None else moment


def stale_cache(cached: datetime | None, state: DocumentState | None) -> str | None:
    if state is None:
        return "cached result of a document that has no row"
    if cached is None:
        return "cached result that is not a document"
    if state.status in ACTIVE:  # written by an older docstore: nothing drops it as the row moves
        return f"cached copy of a {state.status} document (only finished ones are cached)"
    if cached < state.updated_at and state.quiet:
        return f"cached as of {when(cached)}, row changed {when(state.updated_at)}"
    return None


def stale_progress(
    percent: Any, stage: Any, ttl_ms: int, state: DocumentState | None
) -> str | None:
    if state is None:
        return "progress of a document that has no row"
    if state.status in ACTIVE or not state.quiet:
        return None
    if percent is None:
        return f"{state.status}, progress shows nothing"
    shown = as_text(percent, "replace")
    try:
        value = float(shown)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        return f"{state.status}, progress holds {shown[:40]!r}, not a percent"
    # A final stage naming the status (completed, failed, cancelled) says it at any percent.
    says_so = stage is not None and as_text(stage, "replace") == state.status.lower()
    if value < 100 and not says_so:
        return f"{state.status}, progress shows {shown}%"
    if ttl_ms == -1:
        return f"{state.status}, progress key never expires"
    return None


def when(moment: datetime) -> str:
    return f"{moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S} UTC"


__all__ = [
    "ACTIVE",
    "DocumentState",
    "cached_updated_at",
    "listed_document_id",
    "retry_due",
    "stale_cache",
    "stale_progress",
    "when",
    "why_not_waiting",
]

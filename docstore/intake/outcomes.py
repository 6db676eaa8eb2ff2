"""What the intake flow returns: plain values shared by the async and the sync side."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict

from docstore.intake.extractors import Extraction, ProgressCallback
from docstore.models import DocumentResponse

# An extractor is plain (CPU-bound) code: the async side runs it on a thread.
Extractor = Callable[[bytes, str, ProgressCallback], Extraction]


def failure_text(exc: BaseException) -> str:
    """What a failed attempt records of `exc`: its type and message, as PostgreSQL text can
    hold them (a lone surrogate escaped, NUL bytes dropped), at most 10,000 characters."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - a broken __str__ must not lose the failure
        message = "(its message cannot be shown)"
    text = f"{type(exc).__name__}: {message}".replace("\x00", "")
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:10_000]


def checked_report(percent: object, stage: object) -> tuple[float, str]:
    """An extractor's progress report: a number and a text. Else a `TypeError` that says which
    (the extractor's own mistake: its attempt fails and is retried, as for any error of its),
    not one from inside docstore ('NoneType' object is not subscriptable)."""
    if not isinstance(percent, int | float):
        raise TypeError(f"the progress percent must be a number, not {type(percent).__name__}")
    if not isinstance(stage, str):
        raise TypeError(f"the progress stage must be text, not {type(stage).__name__}")
    return float(percent), stage


class Outcome(BaseModel):
    """What `process_next` did with the document it was handed."""

    model_config = ConfigDict(frozen=True)

    document_id: int
    action: Literal["completed", "failed", "retrying", "skipped", "lease_lost", "cancelled"]
    detail: str = ""
    document: DocumentResponse | None = None


class StuckReport(BaseModel):
    """What `requeue_stuck` found and re-enqueued."""

    model_config = ConfigDict(frozen=True)

    expired_leases: int
    requeued: int  # handed back or enqueued again (a retry waits for its backoff first)
    failed: int
    blobs_deleted: int = 0
    consumers_forgotten: int = 0  # consumers of workers gone (idle an hour, holding nothing)
    # Redis could not be reached: lost messages were not looked for and nothing was enqueued
    # (workers claim from PostgreSQL meanwhile); the next call after it answers catches up.
    queue_unavailable: bool = False


class BlobPurgeReport(BaseModel):
    """What `purge_deleted_blobs` did with the blobs of deleted documents."""

    model_config = ConfigDict(frozen=True)

    deleted: int
    failed: int


__all__ = ["BlobPurgeReport", "Extractor", "Outcome", "StuckReport", "failure_text"]

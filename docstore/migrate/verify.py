"""`verify()`: compare the legacy tasks still in Redis with their documents in PostgreSQL."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

from docstore.migrate.legacy_records import LegacyDocument
from docstore.migrate.pg_writer import check_schema
from docstore.migrate.runner import DEFAULT_BATCH_SIZE, DEFAULT_PREFIX, check_options, scan_batches
from docstore.postgres.executor import Database
from docstore.redis.client import RedisClient
from docstore.redis.core import RedisCore


class MigratedDocument(BaseModel):
    """The columns of a migrated document that verify compares."""

    legacy_task_id: str
    user_email: str
    filename: str
    s3_key: str
    status: str
    result_md5: str | None
    error_message: str | None
    page_count: int | None
    extraction_time_seconds: float | None
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """A task that is missing from PostgreSQL, or whose document differs (`fields`)."""

    key: str
    task_id: str
    problem: str  # "missing" or "differs"
    fields: tuple[str, ...] = ()

    def text(self) -> str:
        """One line for people."""
        if self.problem == "missing":
            return f"missing  {self.key}"
        return f"differs  {self.key}: {', '.join(self.fields)}"


@dataclass(slots=True)
class VerifyReport:
    """Counters of a verify run; `ok` when every valid task has an identical document."""

    checked: int = 0
    matching: int = 0
    missing: int = 0
    differing: int = 0
    # What a migration run rejects while reading: invalid tasks and results without a task.
    unmigratable: int = 0

    @property
    def ok(self) -> bool:
        """No task missing or differing."""
        return self.missing == 0 and self.differing == 0


def _md5(text: str | None) -> str | None:
    if text is None:
        return None
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def differing_fields(doc: LegacyDocument, row: MigratedDocument) -> tuple[str, ...]:
    """Names of the columns where `row` does not hold what `doc` says."""
    expected = {
        "user_email": doc.user_email.lower(),
        "filename": doc.filename,
        "s3_key": doc.s3_key,
        "status": doc.status,
        "result_text": _md5(doc.result_text),
        "error_message": doc.error_message,
        "page_count": doc.page_count,
        "extraction_time_seconds": doc.extraction_time_seconds,
        "started_at": doc.started_at,
        "completed_at": doc.completed_at,
    }
    actual = row.model_dump()
    actual["result_text"] = row.result_md5
    names = [name for name, value in expected.items() if actual[name] != value]
    # Without a legacy created_at the migration used its own clock: nothing to compare.
    if doc.created_at is not None and row.created_at != doc.created_at:
        names.append("created_at")
    return tuple(names)


def verify(
    source: RedisClient | RedisCore,
    target: Database,
    *,
    prefix: str = DEFAULT_PREFIX,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_problem: Callable[[VerifyProblem], None] | None = None,
) -> VerifyReport:
    """Check every valid task in Redis against PostgreSQL; report each problem as found.

    Reads only. Records the migration rejects are counted as `unmigratable`, not as missing.
    Without the schema in `target`, raises `ConfigurationError` naming the command to apply it.
    """
    raw_prefix = check_options(prefix, batch_size)
    check_schema(target)
    report = VerifyReport()
    for batch in scan_batches(source, raw_prefix, batch_size):
        report.unmigratable += len(batch.rejects)
        if not batch.documents:
            continue
        rows = target.all(
            "migrate_fetch_migrated",
            {"task_ids": [doc.task_id for doc in batch.documents]},
            MigratedDocument,
        )
        by_id = {row.legacy_task_id: row for row in rows}
        for doc in batch.documents:
            report.checked += 1
            row = by_id.get(doc.task_id)
            if row is None:
                problem = VerifyProblem(doc.key, doc.task_id, "missing")
            else:
                fields = differing_fields(doc, row)
                if not fields:
                    report.matching += 1
                    continue
                problem = VerifyProblem(doc.key, doc.task_id, "differs", fields)
            if problem.problem == "missing":
                report.missing += 1
            else:
                report.differing += 1
            if on_problem is not None:
                on_problem(problem)
    return report

"""`verify()`: the gate of a cutover. Every legacy task in Redis against its document, then every
migrated document against Redis; it passes only when all of them agree."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from docstore.migrate.compare import (
    CHANGED_IN_DOCSTORE,
    DELETED_IN_DOCSTORE,
    UNRECORDED,
    MigratedDocument,
    differing_fields,
)
from docstore.migrate.fingerprint import source_fingerprint
from docstore.migrate.legacy_records import LegacyDocument, Reject
from docstore.migrate.pg_writer import check_schema
from docstore.migrate.runner import DEFAULT_BATCH_SIZE, DEFAULT_PREFIX, check_options, scan_batches
from docstore.postgres.executor import Database
from docstore.redis.client import RedisClient
from docstore.redis.core import RedisCore
from docstore.rules import check_function

NOT_IN_REDIS = "not in Redis"
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class VerifyProblem:
    """A task and its document that do not agree.

    `problem`: "missing" (no document), "differs" (`fields` differ; a catch-up run updates it),
    "conflict" (docstore changed or deleted the document since the migration wrote it, or it
    was migrated before the ledger existed and differs; `fields` that differ), "rejected" (a
    migrated task that the migration now refuses, `reason`: its document holds an older
    version) or "not in Redis" (a migrated document whose legacy task is gone).
    """

    key: str
    task_id: str
    problem: str
    fields: tuple[str, ...] = ()
    reason: str = ""

    def text(self) -> str:
        """One line for people."""
        if self.problem == "missing":
            return f"missing  {self.key}"
        if self.problem == NOT_IN_REDIS:
            return f"not in Redis  {self.key} (a migrated document whose legacy task is gone)"
        if self.problem == REJECTED:
            return (
                f"rejected  {self.key}: {self.reason} (its document holds an older version of "
                "the task: fix the task in the old service, then run the migration)"
            )
        fields = ", ".join(self.fields)
        if self.problem == "conflict":
            return f"conflict  {self.key}: {self.reason}" + (f" ({fields})" if fields else "")
        return f"differs  {self.key}: {fields} (a catch-up run updates it)"


@dataclass(slots=True)
class VerifyReport:
    """Counters of a verify run; `ok` only when every task and its document agree."""

    checked: int = 0
    matching: int = 0
    missing: int = 0
    differing: int = 0
    conflicts: int = 0
    # Migrated tasks that the migration now refuses: their documents hold an older version.
    rejected: int = 0
    # Conflicts whose legacy task is the one the operator decided against (--keep-docstore).
    kept: int = 0
    # Migrated documents looked up in Redis, and those whose legacy task is gone.
    documents_checked: int = 0
    not_in_redis: int = 0
    # What a migration run rejects while reading: invalid tasks and results without a task.
    unmigratable: int = 0

    @property
    def ok(self) -> bool:
        """Nothing missing, differing, in conflict, rejected after its migration or gone from
        Redis."""
        problems = (self.missing, self.differing, self.conflicts, self.rejected, self.not_in_redis)
        return not any(problems)

    def text(self) -> str:
        """The verdict for people, one line."""
        return (
            f"checked {self.checked}: {self.matching} match, {self.missing} missing, "
            f"{self.differing} differ, {self.conflicts} in conflict, {self.kept} kept as "
            f"docstore has them; {self.unmigratable} rejected: invalid in Redis, as a migration "
            f"run lists them ({self.rejected} of them migrated before); "
            f"{self.documents_checked} migrated documents: {self.not_in_redis} not in Redis"
        )


def _problem(doc: LegacyDocument, row: MigratedDocument | None) -> VerifyProblem | None:
    if row is None:
        return VerifyProblem(doc.key, doc.task_id, "missing")
    if not row.present:
        return VerifyProblem(doc.key, doc.task_id, "conflict", reason=DELETED_IN_DOCSTORE)
    fields = differing_fields(doc, row)
    if not fields:
        return None
    if not row.recorded:
        # A run cannot tell whose change this is either: it reports the same conflict.
        return VerifyProblem(doc.key, doc.task_id, "conflict", fields, UNRECORDED)
    if row.changed_in_docstore:
        return VerifyProblem(doc.key, doc.task_id, "conflict", fields, CHANGED_IN_DOCSTORE)
    return VerifyProblem(doc.key, doc.task_id, "differs", fields)


def _kept(doc: LegacyDocument, row: MigratedDocument) -> bool:
    """The operator kept docstore's version against this very legacy task."""
    return row.kept_docstore_at is not None and row.ledger_source_md5 == source_fingerprint(doc)


def _check_tasks(
    source: RedisCore,
    target: Database,
    raw_prefix: bytes,
    batch_size: int,
    report: VerifyReport,
) -> Iterator[VerifyProblem]:
    for batch in scan_batches(source, raw_prefix, batch_size):
        report.unmigratable += len(batch.rejects)
        rejected = [r for r in batch.rejects if r.task_id is not None]
        if not batch.documents and not rejected:
            continue
        task_ids = [doc.task_id for doc in batch.documents] + [r.task_id for r in rejected]
        rows = target.all("migrate_fetch_migrated", {"task_ids": task_ids}, MigratedDocument)
        by_id = {row.legacy_task_id: row for row in rows}
        yield from _migrated_rejects(rejected, by_id, report)
        for doc in batch.documents:
            report.checked += 1
            row = by_id.get(doc.task_id)
            problem = _problem(doc, row)
            if problem is None:
                report.matching += 1
                continue
            if problem.problem == "conflict" and row is not None and _kept(doc, row):
                report.kept += 1
                continue
            if problem.problem == "missing":
                report.missing += 1
            elif problem.problem == "conflict":
                report.conflicts += 1
            else:
                report.differing += 1
            yield problem


def _migrated_rejects(
    rejects: list[Reject], rows: dict[str, MigratedDocument], report: VerifyReport
) -> Iterator[VerifyProblem]:
    """The rejects whose task has a document: changed in Redis into what a run refuses."""
    for reject in rejects:
        row = rows.get(reject.task_id or "")
        if row is not None and row.present:
            report.rejected += 1
            yield VerifyProblem(reject.key, row.legacy_task_id, REJECTED, reason=reject.reason)


def _check_documents(
    source: RedisCore,
    target: Database,
    raw_prefix: bytes,
    batch_size: int,
    report: VerifyReport,
) -> Iterator[VerifyProblem]:
    """Page through the migrated documents; look up each page's task keys in one pipeline."""
    after = ""
    while True:
        rows = target.all("migrate_page_migrated_ids", {"after": after, "limit": batch_size})
        page = [str(row[0]) for row in rows]
        kept_gone = {str(row[0]) for row in rows if row[1]}
        if not page:
            return
        with source.errors():
            pipe = source.client.pipeline(transaction=False)
            for task_id in page:
                pipe.exists(raw_prefix + task_id.encode("utf-8"))
            found = pipe.execute()
        report.documents_checked += len(page)
        for task_id, exists in zip(page, found, strict=True):
            if not exists and task_id in kept_gone:
                report.kept += 1  # the operator kept it (--keep-docstore)
            elif not exists:
                report.not_in_redis += 1
                key = (raw_prefix + task_id.encode("utf-8")).decode("utf-8", "backslashreplace")
                yield VerifyProblem(key, task_id, NOT_IN_REDIS)
        after = page[-1]


def verify(
    source: RedisClient | RedisCore,
    target: Database,
    *,
    prefix: str = DEFAULT_PREFIX,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_problem: Callable[[VerifyProblem], None] | None = None,
) -> VerifyReport:
    """Check every valid task in Redis against PostgreSQL, then every migrated document against
    Redis; report each problem as found. Streams both ways in batches (flat memory).

    Reads only. Records the migration rejects are counted as `unmigratable`, not as missing.
    Without the schema in `target`, raises `ConfigurationError` naming the command to apply it.
    """
    raw_prefix = check_options(prefix, batch_size)
    check_function(on_problem, "on_problem", "a function of a problem", optional=True)
    check_schema(target)
    core = RedisCore.of(source)
    report = VerifyReport()
    for check in (_check_tasks, _check_documents):
        for problem in check(core, target, raw_prefix, batch_size, report):
            if on_problem is not None:
                on_problem(problem)
    return report

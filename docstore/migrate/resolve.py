"""`keep_docstore()`: the operator keeps docstore's version of tasks in conflict, and the ledger
remembers it, so that runs and `--verify` accept it until the task changes in Redis again."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from docstore.errors import InvalidInput
from docstore.migrate.compare import MigratedDocument, differing_fields
from docstore.migrate.fingerprint import source_fingerprint
from docstore.migrate.legacy_records import LegacyDocument, Reject, display_key, task_id_of
from docstore.migrate.pg_writer import check_schema
from docstore.migrate.redis_reader import ReadBatch, read_task_batch
from docstore.migrate.runner import DEFAULT_PREFIX, check_options
from docstore.postgres.executor import Database
from docstore.redis.client import RedisClient
from docstore.redis.core import RedisCore

NOT_IN_REDIS = "no such task in Redis"
NOT_MIGRATED = "not migrated yet: a run migrates it"
UNRECORDED = "migrated before the ledger existed: a run records it first"
AGREES = "no conflict: the document agrees with the task"
NOT_CHANGED = (
    "no conflict: docstore has not changed the document since the migration wrote it "
    "(a catch-up run updates it)"
)
# Task ids one call reads from Redis in one pipeline.
_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class KeepOutcome:
    """One task given to `keep_docstore`: kept, or why not."""

    key: str
    task_id: str
    kept: bool
    reason: str = ""

    def text(self) -> str:
        """One line for people."""
        if self.kept:
            return f"kept  {self.key}: docstore's version stays (until the task changes in Redis)"
        return f"not kept  {self.key}: {self.reason}"


def keep_docstore(
    source: RedisClient | RedisCore,
    target: Database,
    task_ids: Iterable[str],
    *,
    prefix: str = DEFAULT_PREFIX,
) -> list[KeepOutcome]:
    """For each task in conflict among `task_ids`, keep docstore's version of its document (or
    its deletion) against the legacy task as it now stands; any other task is left alone, with
    the reason. Writes only the ledger; a task that changes in Redis afterwards is a conflict
    again. Never writes to Redis."""
    raw_prefix = check_options(prefix, 1)
    ids = list(dict.fromkeys(task_ids))
    if not ids:
        raise InvalidInput("give the task ids to keep", field="task_ids")
    check_schema(target)
    core = RedisCore.of(source)
    outcomes: list[KeepOutcome] = []
    for start in range(0, len(ids), _CHUNK):
        outcomes += _keep(core, target, raw_prefix, ids[start : start + _CHUNK])
    return outcomes


def _keep(core: RedisCore, target: Database, prefix: bytes, ids: list[str]) -> list[KeepOutcome]:
    keys = {task_id: prefix + task_id.encode("utf-8") for task_id in ids}
    refused: dict[str, str] = {}
    readable: list[tuple[bytes, str]] = []
    for task_id, raw_key in keys.items():
        checked = task_id_of(raw_key, prefix)
        if isinstance(checked, Reject):
            refused[task_id] = checked.reason
        else:
            readable.append((raw_key, task_id))
    batch = ReadBatch()
    if readable:
        with core.errors():
            read_task_batch(core.client, readable, batch)
    docs = {doc.task_id: doc for doc in batch.documents}
    invalid = {reject.key: reject.reason for reject in batch.rejects}
    found = {"task_ids": list(docs)}
    rows = {
        row.legacy_task_id: row
        for row in target.all("migrate_fetch_migrated", found, MigratedDocument)
    }
    outcomes = []
    for task_id in ids:
        key = display_key(keys[task_id])
        doc = docs.get(task_id)
        if doc is None:
            reason = refused.get(task_id) or invalid.get(key) or NOT_IN_REDIS
            outcomes.append(KeepOutcome(key, task_id, False, reason))
            continue
        row = rows.get(task_id)
        reason = _why_not(row, doc) if row is not None else NOT_MIGRATED
        if not reason:
            decision = {
                "task_id": task_id,
                "source_md5": source_fingerprint(doc),
                "raw_md5": doc.raw_md5,
            }
            # Guarded in SQL too: a document a catch-up run updated meanwhile is no conflict.
            if not target.all("migrate_keep_docstore", decision):
                reason = NOT_CHANGED
        outcomes.append(KeepOutcome(key, task_id, not reason, reason))
    return outcomes


def _why_not(row: MigratedDocument, doc: LegacyDocument) -> str:
    """Why the task of `row` is no conflict to keep ('' when it is one)."""
    if not row.recorded:
        return UNRECORDED
    if row.present and not differing_fields(doc, row):
        return AGREES
    if not row.changed_in_docstore:
        return NOT_CHANGED
    return ""


__all__ = ["KeepOutcome", "keep_docstore"]

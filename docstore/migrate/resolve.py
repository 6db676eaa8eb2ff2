"""The operator's decisions on tasks in conflict, written to the ledger: `keep_docstore()` (runs
and `--verify` accept docstore's version until the task changes in Redis again) and
`take_legacy()` (the next run rewrites the document from Redis)."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from docstore.errors import InvalidInput, NotFound
from docstore.intake.blobs import BlobStore
from docstore.migrate.compare import MigratedDocument, differing_fields
from docstore.migrate.fingerprint import source_fingerprint
from docstore.migrate.legacy_records import LegacyDocument, Reject, display_key, task_id_of
from docstore.migrate.pg_writer import check_schema
from docstore.migrate.redis_reader import ReadBatch, read_task_batch
from docstore.migrate.runner import DEFAULT_PREFIX, check_options
from docstore.postgres.executor import Database
from docstore.redis.client import RedisClient
from docstore.redis.core import RedisCore
from docstore.rules import check_function, encodable

logger = logging.getLogger("docstore.migrate")

NOT_IN_REDIS = "no such task in Redis"
NOT_MIGRATED = "not migrated yet: a run migrates it"
AGREES = "no conflict: the document agrees with the task"
NOT_CHANGED = (
    "no conflict: docstore has not changed the document since the migration wrote it "
    "(a catch-up run updates it)"
)
# A decision's statement parameters, from the task as read.
Params = Callable[[LegacyDocument], dict[str, Any]]
# Task ids one call reads from Redis in one pipeline.
_CHUNK = 1000


KEPT = "docstore's version stays (until the task changes in Redis)"
KEPT_GONE = "docstore's document stays although its legacy task is gone (until the task is back)"
GONE_UNKNOWN = "no such task in Redis, and no document migrated from it"
BLOB_GONE = (
    "docstore deleted the document and its blob: the legacy version would come back without "
    "its bytes (submit the file again instead)"
)
BLOB_NOT_FOUND = (
    "docstore deleted the document, and the blob the task names was not found in the blob "
    "store (or its deletion has started, or the store could not tell): the legacy version "
    "would come back without its bytes (submit the file again instead)"
)
TAKEN = "the next run rewrites the document from Redis (brings it back if docstore deleted it)"


@dataclass(frozen=True, slots=True)
class Decision:
    """One task given to `keep_docstore` or `take_legacy`: `done`, or why not (`reason`)."""

    key: str
    task_id: str
    done: bool
    reason: str

    def text(self) -> str:
        """One line for people."""
        return f"{'done' if self.done else 'refused'}  {self.key}: {self.reason}"


def keep_docstore(
    source: RedisClient | RedisCore,
    target: Database,
    task_ids: Iterable[str],
    *,
    prefix: str = DEFAULT_PREFIX,
) -> list[Decision]:
    """For each task in conflict among `task_ids`, keep docstore's version of its document (or
    its deletion) against the legacy task as it now stands; for a task gone from Redis whose
    document was migrated, keep the document (`--verify` then counts it as kept, not as 'not in
    Redis'). Any other task is left alone, with the reason. Writes only the ledger; a task that
    changes in Redis afterwards (or comes back) is decided again. Never writes to Redis."""
    rule = _Rule("migrate_keep_docstore", _digests, KEPT, keep_gone=True)
    return _decide(source, target, task_ids, prefix, rule)


def take_legacy(
    source: RedisClient | RedisCore,
    target: Database,
    task_ids: Iterable[str],
    *,
    prefix: str = DEFAULT_PREFIX,
    blobs: BlobStore | None = None,
) -> list[Decision]:
    """For each task in conflict among `task_ids`, let the next run write the legacy version:
    it overwrites docstore's document (or brings back one docstore deleted), so a caller asks
    for confirmation first. Writes only the ledger now; any other task is left alone, with the
    reason. Never writes to Redis.

    A document docstore deleted comes back only with its blob: while its deletion still waits
    (it is called off), or, given `blobs` (the store's blob store), when the blob the task
    names is there and no deletion of it has started (the legacy task names a new key)."""
    if blobs is not None:  # the sync store's blob store: this function never awaits
        check_function(
            getattr(blobs, "open", None), "blobs", "a blob store (store.blobs)", plain=True
        )
    rule = _Rule(
        "migrate_take_legacy",
        _take_params,
        TAKEN,
        deleted_refused=BLOB_GONE if blobs is None else BLOB_NOT_FOUND,
        blob_is_there=None if blobs is None else functools.partial(_blob_is_there, blobs),
    )
    return _decide(source, target, task_ids, prefix, rule)


@dataclass(frozen=True, slots=True)
class _Rule:
    """One kind of decision: its statement, the statement's parameters from the task, and the
    reason given when it is done. `keep_gone`: a task gone from Redis keeps its document.
    `deleted_refused`: the reason given when the statement refuses a document docstore
    deleted. `blob_is_there`: such a refusal is asked again once the blob the task names is
    found (`blob_seen`)."""

    statement: str
    params: Params
    done: str
    keep_gone: bool = False
    deleted_refused: str = NOT_CHANGED
    blob_is_there: Callable[[str], bool] | None = None


def _decide(
    source: RedisClient | RedisCore,
    target: Database,
    task_ids: Iterable[str],
    prefix: str,
    rule: _Rule,
) -> list[Decision]:
    """Each task's decision under `rule`."""
    raw_prefix = check_options(prefix, 1)
    if isinstance(task_ids, str | bytes) or not isinstance(task_ids, Iterable):
        # A lone id would be read character by character.
        raise InvalidInput("task_ids must be a list of task ids", field="task_ids")
    given = list(task_ids)
    if not all(isinstance(task_id, str) for task_id in given):
        raise InvalidInput("task ids must be text (without the key prefix)", field="task_ids")
    try:
        for task_id in given:
            encodable(task_id)
    except ValueError:
        raise InvalidInput("task ids must not hold a lone surrogate", field="task_ids") from None
    ids = list(dict.fromkeys(given))
    if not ids:
        raise InvalidInput("give the ids of the tasks in conflict", field="task_ids")
    check_schema(target)
    core = RedisCore.of(source)
    decisions: list[Decision] = []
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        decisions += _decide_chunk(core, target, raw_prefix, chunk, rule)
    return decisions


def _decide_chunk(
    core: RedisCore,
    target: Database,
    prefix: bytes,
    ids: list[str],
    rule: _Rule,
) -> list[Decision]:
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
    decisions = []
    for task_id in ids:
        key = display_key(keys[task_id])
        doc = docs.get(task_id)
        if doc is None:
            reason = refused.get(task_id) or invalid.get(key) or NOT_IN_REDIS
            if reason == NOT_IN_REDIS and rule.keep_gone:
                kept = target.all("migrate_keep_gone", {"task_id": task_id})
                decisions.append(
                    Decision(key, task_id, bool(kept), KEPT_GONE if kept else GONE_UNKNOWN)
                )
                continue
            decisions.append(Decision(key, task_id, False, reason))
            continue
        reason = _written(target, rule, rows.get(task_id), doc)
        decisions.append(Decision(key, task_id, not reason, reason or rule.done))
    return decisions


def _written(
    target: Database, rule: _Rule, row: MigratedDocument | None, doc: LegacyDocument
) -> str:
    """Write `rule`'s decision for the task `doc`, whose migrated document is `row`; '' when
    written, else why not."""
    reason = _why_not(row, doc) if row is not None else NOT_MIGRATED
    # Guarded in SQL too: a document a catch-up run updated meanwhile is no conflict.
    if reason or target.all(rule.statement, rule.params(doc)):
        return reason
    if row is None or row.present:
        return NOT_CHANGED
    if rule.blob_is_there is not None:  # deleted: asked again once its blob is found
        seen = {**rule.params(doc), "blob_seen": True}
        if _taken_with_its_blob(target, rule.statement, seen, rule.blob_is_there, doc.s3_key):
            return ""
    return rule.deleted_refused


def _digests(doc: LegacyDocument) -> dict[str, Any]:
    """migrate_keep_docstore's parameters: the task as it now stands."""
    return {"task_id": doc.task_id, "source_md5": source_fingerprint(doc), "raw_md5": doc.raw_md5}


def _take_params(doc: LegacyDocument) -> dict[str, Any]:
    """migrate_take_legacy's parameters (the key: a deleted document comes back with its blob
    or not at all; `blob_seen` once the caller found that blob)."""
    return {"task_id": doc.task_id, "s3_key": doc.s3_key, "blob_seen": False}


class _BlobNotThere(Exception):
    """Rolls back a take whose blob was not found."""


def _taken_with_its_blob(
    target: Database,
    statement: str,
    params: dict[str, Any],
    blob_is_there: Callable[[str], bool],
    key: str,
) -> bool:
    """Run the take with `blob_seen`, and keep it only if the blob is there once it ran: in
    that order, a deletion of the key that ended before the statement's snapshot (its row gone,
    nothing left to say it ran) has removed the blob before the store is asked."""
    try:
        with target.transaction() as conn:
            if not target.all(statement, params, conn=conn):
                return False
            if not blob_is_there(key):
                raise _BlobNotThere
    except _BlobNotThere:
        return False
    return True


def _blob_is_there(blobs: BlobStore, key: str) -> bool:
    """Whether the blob store holds `key`; a key it refuses is not there, nor is one it cannot
    tell about (logged: the task is refused, and may be given again)."""
    try:
        blobs.open(key).close()
    except (NotFound, InvalidInput):
        return False
    except Exception as exc:  # noqa: BLE001 - a blob store of the caller's may raise anything
        logger.warning("the blob store could not say whether %s is there: %s", key, exc)
        return False
    return True


def _why_not(row: MigratedDocument, doc: LegacyDocument) -> str:
    """Why the task of `row` is no conflict to keep ('' when it is one). A document migrated
    before the ledger existed that differs from its task is one: nobody knows whose change it
    is (the statements record it in the ledger then)."""
    if row.present and not differing_fields(doc, row):
        return AGREES
    if row.recorded and not row.changed_in_docstore:
        return NOT_CHANGED
    return ""


__all__ = ["Decision", "keep_docstore", "take_legacy"]

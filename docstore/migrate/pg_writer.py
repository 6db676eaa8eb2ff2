"""Write batches of legacy documents to PostgreSQL: plan, COPY the new, update the changed.

Each batch is one transaction. The plan (`migrate_plan`) compares the digest of every task with
what `legacy_migrations` recorded: unchanged tasks cost no write; new ones are COPied; changed
ones are updated only while their document still holds what the migration wrote, else they are
conflicts, left alone. A run killed at any moment and started again converges to the result of
one clean run: a batch commits whole, and the plan of the next run sees exactly what it did.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from docstore.errors import ConfigurationError, Conflict, InvalidInput
from docstore.migrate.compare import (
    CHANGED_IN_DOCSTORE,
    DELETED_IN_DOCSTORE,
    UNRECORDED,
    DocstoreVersion,
    MigratedDocument,
    MigrationConflict,
    differing_fields,
)
from docstore.migrate.fingerprint import EXCERPT_LENGTH, legacy_version, source_fingerprint
from docstore.migrate.legacy_records import LegacyDocument, Reject
from docstore.models import UNFINISHED_STATUSES
from docstore.postgres.executor import Connection, Database

SCHEMA_COMMAND = "python -m docstore schema apply"
LEGACY_WORKER = "legacy-service"
WORK_TO_DO = frozenset(UNFINISHED_STATUSES)  # statuses a worker still takes


@dataclass(slots=True)
class WriteOutcome:
    """What writing one batch did (or, in a dry run, would do)."""

    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    not_updated: int = 0  # changed in Redis, left as they are by an insert-only run
    users_created: int = 0
    updated_ids: list[int] = field(default_factory=list)  # documents updated (their cache)
    rejects: list[Reject] = field(default_factory=list)
    conflicts: list[MigrationConflict] = field(default_factory=list)

    def add(self, other: WriteOutcome) -> None:
        """Add the counts and listings of `other` to these."""
        self.inserted += other.inserted
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.not_updated += other.not_updated
        self.users_created += other.users_created
        self.updated_ids.extend(other.updated_ids)
        self.rejects.extend(other.rejects)
        self.conflicts.extend(other.conflicts)


@dataclass(slots=True)
class _Plan:
    new: list[LegacyDocument] = field(default_factory=list)
    changed: list[LegacyDocument] = field(default_factory=list)
    unrecorded: list[LegacyDocument] = field(default_factory=list)
    unchanged: list[LegacyDocument] = field(default_factory=list)  # since the run that wrote it
    conflicts: dict[str, str] = field(default_factory=dict)  # task id -> reason


def _copy_row(doc: LegacyDocument, user_id: int, turn: int, now: datetime) -> tuple[Any, ...]:
    in_flight = doc.status == "PROCESSING"
    created_at = doc.created_at or now
    return (
        user_id, doc.filename, doc.s3_key, doc.status, doc.result_text, doc.error_message,
        doc.page_count, doc.extraction_time_seconds, created_at, doc.started_at,
        doc.completed_at, doc.task_id,
        # A task in flight in the legacy service: one attempt whose lease has run out.
        LEGACY_WORKER if in_flight else None,
        (doc.started_at or created_at) if in_flight else None,
        1 if in_flight else 0,
        turn,
    )  # fmt: skip


def _turns(docs: list[LegacyDocument], next_turns: dict[str, int], now: datetime) -> dict[str, int]:
    """The turn of each new document: its owner's next turns, oldest first, one per document
    still to be worked on; a finished one shares the turn of the next (it is never claimed)."""
    turns: dict[str, int] = {}
    ordered = sorted(docs, key=lambda d: (d.user_email, d.created_at or now, d.task_id))
    for doc in ordered:
        turns[doc.task_id] = next_turns[doc.user_email]
        if doc.status in WORK_TO_DO:
            next_turns[doc.user_email] += 1
    return turns


def _staging_row(doc: LegacyDocument, digest: bytes) -> tuple[Any, ...]:
    return (
        doc.task_id, doc.user_email, doc.filename, doc.s3_key, doc.status, doc.result_text,
        doc.error_message, doc.page_count, doc.extraction_time_seconds, doc.created_at,
        doc.started_at, doc.completed_at, digest, doc.raw_md5,
    )  # fmt: skip


def _plan(
    db: Database, docs: Sequence[LegacyDocument], digests: dict[str, bytes], conn: Connection
) -> tuple[_Plan, int]:
    """Sort the batch by what it needs; also return how many tasks are unchanged."""
    params = {"task_ids": list(digests), "source_md5s": list(digests.values())}
    states = dict(db.all("migrate_plan", params, None, conn))
    plan = _Plan()
    for doc in docs:
        state = states.get(doc.task_id)
        if state == "new":
            plan.new.append(doc)
        elif state == "changed":
            plan.changed.append(doc)
        elif state == "unrecorded":
            plan.unrecorded.append(doc)
        elif state == "touched":
            plan.conflicts[doc.task_id] = CHANGED_IN_DOCSTORE
        elif state == "deleted":
            plan.conflicts[doc.task_id] = DELETED_IN_DOCSTORE
        elif state is None:
            plan.unchanged.append(doc)
    return plan, len(plan.unchanged)


def _insert_new(
    db: Database,
    docs: list[LegacyDocument],
    emails: list[str],
    digests: dict[str, bytes],
    conn: Connection,
) -> int:
    """Create the missing users, COPY the new documents, record them; the users created."""
    users = db.execute("migrate_insert_users", {"emails": emails}, conn)
    if docs:
        owners = sorted({doc.user_email for doc in docs})
        owned = db.all("migrate_user_ids", {"emails": owners}, None, conn)
        ids = {email: user_id for email, user_id, _ in owned}
        now = datetime.now(timezone.utc)
        turns = _turns(docs, {email: turn for email, _, turn in owned}, now)
        rows = (_copy_row(d, ids[d.user_email], turns[d.task_id], now) for d in docs)
        db.copy("migrate_copy_documents", rows, conn)
        _record(db, docs, digests, conn)
    return users


def _record(
    db: Database, docs: list[LegacyDocument], digests: dict[str, bytes], conn: Connection
) -> None:
    params = {
        "task_ids": [doc.task_id for doc in docs],
        "source_md5s": [digests[doc.task_id] for doc in docs],
        "raw_md5s": [doc.raw_md5 for doc in docs],
    }
    db.execute("migrate_record_written", params, conn)


def _record_raw(db: Database, plan: _Plan, conn: Connection) -> None:
    """Unchanged tasks whose bytes differ from those recorded (or none are, for rows from before
    migration 0006): record their raw digest, so that the next run skips them unparsed."""
    same = [d for d in plan.unchanged if d.raw_md5 is not None]
    if same:
        params = {"task_ids": [d.task_id for d in same], "raw_md5s": [d.raw_md5 for d in same]}
        db.execute("migrate_record_raw", params, conn)


def ledger_is_empty(db: Database) -> bool:
    """True while no run has recorded a task (before the first run wrote anything)."""
    return bool(db.value("migrate_ledger_is_empty", {}))


def unchanged_tasks(db: Database, task_ids: list[str], raw_md5s: list[bytes]) -> set[str]:
    """Those of `task_ids` whose raw digest is the one recorded by the run that wrote them."""
    params = {"task_ids": task_ids, "raw_md5s": raw_md5s}
    return {row[0] for row in db.all("migrate_unchanged_raw", params)}


def _update_changed(
    db: Database, docs: list[LegacyDocument], digests: dict[str, bytes], conn: Connection
) -> dict[str, int]:
    """Update the changed tasks whose documents still hold what was written; task id ->
    document id of those updated."""
    db.execute("migrate_create_staging", {}, conn)
    db.copy("migrate_copy_staging", (_staging_row(d, digests[d.task_id]) for d in docs), conn)
    db.execute("migrate_analyze_staging", {}, conn)
    db.all("migrate_lock_changed", {}, None, conn)
    return dict(db.all("migrate_update_documents", {}, None, conn))


def _adopt_unrecorded(
    db: Database, plan: _Plan, digests: dict[str, bytes], conn: Connection, *, dry_run: bool
) -> int:
    """Pre-ledger documents: record those equal to their task, conflict the others."""
    params = {"task_ids": [doc.task_id for doc in plan.unrecorded]}
    rows = {
        r.legacy_task_id: r
        for r in db.all("migrate_fetch_migrated", params, MigratedDocument, conn)
    }
    equal: list[LegacyDocument] = []
    for doc in plan.unrecorded:
        fields = differing_fields(doc, rows[doc.task_id])
        if fields:
            plan.conflicts[doc.task_id] = f"{UNRECORDED}: {', '.join(fields)}"
        else:
            equal.append(doc)
    if equal and not dry_run:
        _record(db, equal, digests, conn)
    return len(equal)


def _listed_conflicts(
    db: Database, docs: Sequence[LegacyDocument], reasons: dict[str, str], conn: Connection
) -> list[MigrationConflict]:
    """Both versions of every task in conflict, in batch order."""
    if not reasons:
        return []
    params = {"task_ids": list(reasons), "excerpt": EXCERPT_LENGTH}
    rows = db.all("migrate_fetch_conflicting", params, DocstoreVersion, conn)
    current = {row.legacy_task_id: row.listing() for row in rows}
    return [
        MigrationConflict(
            doc.key,
            doc.task_id,
            reasons[doc.task_id],
            legacy_version(doc),
            current.get(doc.task_id),
        )
        for doc in docs
        if doc.task_id in reasons
    ]


def _write(
    db: Database,
    docs: Sequence[LegacyDocument],
    conn: Connection,
    *,
    update: bool,
    dry_run: bool,
) -> WriteOutcome:
    # One order for every lock the batch takes: writers side by side never deadlock.
    docs = sorted(docs, key=lambda doc: doc.task_id)
    digests = {doc.task_id: source_fingerprint(doc) for doc in docs}
    plan, unchanged = _plan(db, docs, digests, conn)
    if unchanged and not dry_run:
        _record_raw(db, plan, conn)
    if not update:  # insert-only: whatever exists is left as it is
        return _write_new_only(db, docs, plan, digests, conn, unchanged, dry_run=dry_run)
    outcome = WriteOutcome(unchanged=unchanged, inserted=len(plan.new))
    if plan.unrecorded:
        outcome.unchanged += _adopt_unrecorded(db, plan, digests, conn, dry_run=dry_run)
    if dry_run:
        outcome.updated = len(plan.changed)
    else:
        emails = sorted({doc.user_email for doc in [*plan.new, *plan.changed]})
        if emails:
            outcome.users_created = _insert_new(db, plan.new, emails, digests, conn)
        if plan.changed:
            updated = _update_changed(db, plan.changed, digests, conn)
            outcome.updated = len(updated)
            outcome.updated_ids = sorted(updated.values())
            for doc in plan.changed:  # changed by docstore between the plan and the lock
                if doc.task_id not in updated:
                    plan.conflicts[doc.task_id] = CHANGED_IN_DOCSTORE
    outcome.conflicts = _listed_conflicts(db, docs, plan.conflicts, conn)
    return outcome


def _write_new_only(
    db: Database,
    docs: Sequence[LegacyDocument],
    plan: _Plan,
    digests: dict[str, bytes],
    conn: Connection,
    unchanged: int,
    *,
    dry_run: bool,
) -> WriteOutcome:
    # Tasks changed in Redis are told apart from unchanged ones, and conflicts listed as
    # ever: an insert-only run leaves them as they are, it does not make them agree.
    # Documents migrated before the ledger (unrecorded): those equal to their task are
    # present, the others conflicts, as in an update run (which also records the equal ones).
    if plan.unrecorded:
        unchanged += _adopt_unrecorded(db, plan, digests, conn, dry_run=True)
    outcome = WriteOutcome(
        inserted=len(plan.new), unchanged=unchanged, not_updated=len(plan.changed)
    )
    if plan.new and not dry_run:
        emails = sorted({doc.user_email for doc in plan.new})
        outcome.users_created = _insert_new(db, plan.new, emails, digests, conn)
    outcome.conflicts = _listed_conflicts(db, docs, plan.conflicts, conn)
    return outcome


def write_documents(
    db: Database, docs: Sequence[LegacyDocument], *, update: bool = True, dry_run: bool = False
) -> WriteOutcome:
    """Write one batch in one transaction; rows the database refuses become rejects.

    `update=False` only inserts new tasks. A `dry_run` plans and writes nothing. A refused row
    (a check or unique rule the parser does not know about) fails the whole batch; the batch is
    then written row by row so that only the offending rows are rejected.
    """
    if not docs:
        return WriteOutcome()
    try:
        with db.transaction() as conn:
            return _write(db, docs, conn, update=update, dry_run=dry_run)
    except (InvalidInput, Conflict) as exc:
        if len(docs) == 1:
            return WriteOutcome(rejects=[Reject(docs[0].key, f"refused: {exc.message}")])
    outcome = WriteOutcome()
    for doc in docs:
        outcome.add(write_documents(db, [doc], update=update, dry_run=dry_run))
    return outcome


def check_schema(db: Database) -> None:
    """Raise InvalidInput unless `db` is docstore's `Database` (`store.db`), and
    ConfigurationError, naming the schema command, unless the tables are there."""
    if not isinstance(db, Database):
        raise InvalidInput(
            f"target must be docstore's Database (store.db), not {type(db).__name__}",
            field="target",
        )
    missing = [str(row[0]) for row in db.all("migrate_missing_schema", {})]
    if missing:
        raise ConfigurationError(
            f"the docstore schema is not applied to this database (missing: "
            f"{', '.join(missing)}): run `{SCHEMA_COMMAND}` first"
        )

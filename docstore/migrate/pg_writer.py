"""Write batches of legacy documents to PostgreSQL: COPY into staging, then insert-on-conflict.

Each batch commits atomically, and both inserts skip rows that exist (users by lower(email),
documents by legacy_task_id), so a run killed at any moment and started again converges to the
result of one clean run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from docstore.errors import ConfigurationError, Conflict, InvalidInput
from docstore.migrate.legacy_records import LegacyDocument, Reject
from docstore.postgres.executor import Connection, Database

SCHEMA_COMMAND = "python -m docstore schema apply"


@dataclass(slots=True)
class WriteOutcome:
    """What writing one batch did."""

    inserted: int = 0
    already_present: int = 0
    users_created: int = 0
    rejects: list[Reject] = field(default_factory=list)


def _row(doc: LegacyDocument) -> tuple[Any, ...]:
    return (
        doc.task_id,
        doc.user_email,
        doc.filename,
        doc.s3_key,
        doc.status,
        doc.result_text,
        doc.error_message,
        doc.page_count,
        doc.extraction_time_seconds,
        doc.created_at,
        doc.started_at,
        doc.completed_at,
    )


def _write(
    db: Database, docs: Sequence[LegacyDocument], conn: Connection
) -> WriteOutcome:
    db.execute("migrate_create_staging", {}, conn)
    db.copy("migrate_copy_staging", (_row(doc) for doc in docs), conn)
    users = db.execute("migrate_insert_users", {}, conn)
    inserted = db.execute("migrate_insert_documents", {}, conn)
    return WriteOutcome(
        inserted=inserted, already_present=len(docs) - inserted, users_created=users
    )


def write_documents(db: Database, docs: Sequence[LegacyDocument]) -> WriteOutcome:
    """Write one batch in one transaction; rows the database refuses become rejects.

    A refused row (a check or unique rule the parser does not know about) fails the whole
    batch; the batch is then written row by row so that only the offending rows are rejected.
    """
    if not docs:
        return WriteOutcome()
    try:
        with db.transaction() as conn:
            return _write(db, docs, conn)
    except (InvalidInput, Conflict) as exc:
        if len(docs) == 1:
            return WriteOutcome(rejects=[Reject(docs[0].key, f"refused: {exc.message}")])
    outcome = WriteOutcome()
    for doc in docs:
        single = write_documents(db, [doc])
        outcome.inserted += single.inserted
        outcome.already_present += single.already_present
        outcome.users_created += single.users_created
        outcome.rejects.extend(single.rejects)
    return outcome


def count_present(db: Database, task_ids: Sequence[str]) -> int:
    """How many of `task_ids` are already migrated (for dry runs)."""
    if not task_ids:
        return 0
    return int(db.value("migrate_count_present", {"task_ids": list(task_ids)}))


def check_schema(db: Database) -> None:
    """Raise ConfigurationError, naming the schema command, unless the tables are there."""
    missing = [str(row[0]) for row in db.all("migrate_missing_schema", {})]
    if missing:
        raise ConfigurationError(
            f"the docstore schema is not applied to this database (missing: "
            f"{', '.join(missing)}): run `{SCHEMA_COMMAND}` first"
        )

"""Move the legacy Redis data (`task:*`, `result:*`) into PostgreSQL, once and safely.

    from docstore.migrate import migrate, verify
    summary = migrate(store.redis, store.db, rejects=open("rejects.jsonl", "w"))
    report = verify(store.redis, store.db)
    keep_docstore(store.redis, store.db, ["8f2c"])   # a conflict: docstore's version stays
    take_legacy(store.redis, store.db, ["91ab"])     # a conflict: the next run writes Redis's

`python -m docstore.migrate` is the command-line shell over these functions.
"""

from docstore.migrate.legacy_records import DEFAULT_USER_EMAIL, LegacyDocument, Reject, parse_task
from docstore.migrate.resolve import Decision, keep_docstore, take_legacy
from docstore.migrate.runner import migrate
from docstore.migrate.summary import MigrationSummary
from docstore.migrate.verify import VerifyProblem, VerifyReport, verify

__all__ = [
    "DEFAULT_USER_EMAIL",
    "Decision",
    "LegacyDocument",
    "MigrationSummary",
    "Reject",
    "VerifyProblem",
    "VerifyReport",
    "keep_docstore",
    "migrate",
    "parse_task",
    "take_legacy",
    "verify",
]

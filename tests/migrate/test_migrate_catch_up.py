"""Catch-up re-runs: tasks changed in Redis since the run that wrote them are brought up to date,
unless docstore changed their document too (a conflict: left alone, counted, listed)."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from helpers import migrated_table_contents

from docstore import Docstore, RedisCache, Settings
from docstore.errors import InvalidInput
from docstore.intake.blob_access_async import AsyncBlobs
from docstore.migrate import keep_docstore, migrate, redis_reader, take_legacy, verify
from docstore.migrate.cli import main
from docstore.migrate.progress import BarProgress, LogProgress
from docstore.migrate.resolve import BLOB_GONE, BLOB_NOT_FOUND, KEPT, TAKEN
from docstore.migrate.summary import MigrationSummary
from docstore.testing import free_port
from docstore.testing.plugin import create_database, drop_database, with_database

T = 1_709_294_400  # 2024-03-01 12:00 UTC


def pending(i: int) -> dict[str, str]:
    return {
        "filename": f"scan-{i}.pdf",
        "s3_key": f"uploads/{i}.pdf",
        "status": "queued",
        "created_at": str(T + i),
        "user_email": f"owner{i % 3}@example.com",
    }


def running(i: int) -> dict[str, str]:
    return {**pending(i), "status": "running", "started_at": str(T + i + 1)}


def completed(i: int) -> dict[str, str]:
    return {
        **running(i),
        "status": "done",
        "completed_at": str(T + i + 9),
        "page_count": "4",
        "extraction_time": "2.5",
    }


def seed(r: redis.Redis, count: int) -> None:
    for i in range(count):
        r.hset(f"task:t{i}", mapping=pending(i) if i % 2 else running(i))


def finish_in_legacy(r: redis.Redis, i: int) -> None:
    """What the legacy service does when it completes task i during the cutover window."""
    r.hset(f"task:t{i}", mapping=completed(i))
    r.set(f"result:t{i}", json.dumps({"text": f"the text of task {i}", "page_count": 4}))


def run(store: Docstore, **options: Any) -> tuple[MigrationSummary, list[dict[str, Any]]]:
    stream = io.StringIO()
    summary = migrate(store.redis, store.db, rejects=stream, batch_size=4, **options)
    return summary, [json.loads(line) for line in stream.getvalue().splitlines()]


def row_versions(store: Docstore) -> list[tuple[Any, ...]]:
    """Every row's physical version (ctid, xmin) in the tables a migration writes."""
    with store.db.connection() as conn:
        return [
            tuple(row)
            for table in ("users", "documents", "legacy_migrations")
            for row in conn.execute(f"SELECT '{table}', ctid::text, xmin::text FROM {table}")
        ]


def document_id(store: Docstore, task_id: str) -> int:
    doc = store.documents.get_by_task_id(task_id)
    assert doc is not None
    return doc.id


@pytest.fixture
def second_database(docstore_postgres_url: str, docstore_template_database: str) -> Iterator[str]:
    name = create_database(docstore_postgres_url, docstore_template_database)
    yield with_database(docstore_postgres_url, name)
    drop_database(docstore_postgres_url, name)


def test_a_rerun_of_an_unchanged_keyspace_writes_nothing_and_says_so(
    docstore_store: Docstore,
) -> None:
    seed(docstore_store.redis, 10)
    first, _ = run(docstore_store)
    assert (first.migrated, first.updated, first.conflicts) == (10, 0, 0)
    before = row_versions(docstore_store)
    again, lines = run(docstore_store)
    assert (again.migrated, again.updated, again.already_present, again.conflicts) == (0, 0, 10, 0)
    assert again.users_created == 0 and lines == []
    assert row_versions(docstore_store) == before  # not one row rewritten, nor added
    assert "nothing written: every task is up to date\n" in again.text() + "\n"
    assert "nothing written" not in first.text()


def parse_counter(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The task ids the reader parses from now on (the real parser still does the work)."""
    parsed: list[str] = []
    real = redis_reader.parse_record

    def counting(key: bytes, task_id: str, payload: Any, result: bytes | None) -> Any:
        parsed.append(task_id)
        return real(key, task_id, payload, result)

    monkeypatch.setattr(redis_reader, "parse_record", counting)
    return parsed


def test_a_rerun_skips_tasks_whose_bytes_are_unchanged_without_parsing_them(
    docstore_store: Docstore, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = docstore_store.redis
    seed(r, 9)
    r.set("task:json", json.dumps(pending(9)))  # a task stored as a JSON string
    finish_in_legacy(r, 2)  # and one with a result
    run(docstore_store)
    with docstore_store.db.connection() as conn:
        missing = conn.execute(
            "SELECT count(*) FROM legacy_migrations WHERE source_raw_md5 IS NULL"
        ).fetchone()
    assert missing == (0,)
    parsed = parse_counter(monkeypatch)
    again, _ = run(docstore_store)
    assert (again.already_present, again.updated, parsed) == (10, 0, [])
    r.hset("task:t2", "filename", "renamed.pdf")  # changed bytes: parsed and caught up
    r.set("task:json", json.dumps(pending(9), indent=1))  # other bytes, the same task
    caught_up, _ = run(docstore_store)
    assert sorted(parsed) == ["json", "t2"]
    assert (caught_up.updated, caught_up.already_present) == (1, 9)
    assert docstore_store.documents.get_by_task_id("t2").filename == "renamed.pdf"
    before = row_versions(docstore_store)
    parsed.clear()
    last, _ = run(docstore_store)  # the re-serialized JSON task's new bytes were recorded
    assert (parsed, last.already_present, last.updated) == ([], 10, 0)
    assert row_versions(docstore_store) == before


def test_a_ledger_from_before_raw_digests_is_parsed_once_then_skipped(
    docstore_store: Docstore, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(docstore_store.redis, 6)
    run(docstore_store)
    with docstore_store.db.connection() as conn:  # as migration 0006 leaves older rows
        conn.execute("UPDATE legacy_migrations SET source_raw_md5 = NULL")
    documents_before = [v for v in row_versions(docstore_store) if v[0] != "legacy_migrations"]
    parsed = parse_counter(monkeypatch)
    upgraded, _ = run(docstore_store)
    assert (len(parsed), upgraded.already_present, upgraded.updated) == (6, 6, 0)
    after = [v for v in row_versions(docstore_store) if v[0] != "legacy_migrations"]
    assert after == documents_before  # only the ledger's raw digests were written
    parsed.clear()
    assert run(docstore_store)[0].already_present == 6 and parsed == []


def test_tasks_the_legacy_service_finished_since_are_brought_up_to_date_as_a_first_run_would(
    docstore_store: Docstore, docstore_redis_url: str, second_database: str
) -> None:
    r = docstore_store.redis
    seed(r, 10)
    run(docstore_store)
    for i in (0, 3, 4):  # running, queued, running
        finish_in_legacy(r, i)
    r.hset("task:t5", mapping={**pending(5), "status": "failed", "error": "bad scan"})
    r.hset("task:t10", mapping=pending(10))  # new since
    summary, lines = run(docstore_store)
    assert (summary.migrated, summary.updated, summary.already_present) == (1, 4, 6)
    assert summary.conflicts == 0 and lines == []
    done = docstore_store.documents.get_by_task_id("t0")
    assert done is not None and done.status == "COMPLETED"
    assert (done.result_text, done.page_count, done.extraction_time_seconds) == (
        "the text of task 0",
        4,
        2.5,
    )
    assert verify(r, docstore_store.db).ok
    # One first run of the final keyspace on an empty database writes the same rows.
    settings = Settings.model_validate({"DATABASE_URL": second_database})
    with Docstore.connect(settings, redis_client=r) as fresh:
        migrate(r, fresh.db)
    assert migrated_table_contents(docstore_store.settings.database_url) == (
        migrated_table_contents(second_database)
    )


def test_a_document_docstore_changed_is_a_conflict_left_alone_and_listed_with_both_versions(
    docstore_store: Docstore,
) -> None:
    r = docstore_store.redis
    seed(r, 4)
    run(docstore_store)
    # docstore's worker claims t1 (PENDING) and completes it; the legacy service fails it.
    claimed = docstore_store.lifecycle.claim(document_id(docstore_store, "t1"), "worker-7")
    docstore_store.lifecycle.mark_completed(claimed.id, "worker-7", "docstore's text")
    r.hset("task:t1", mapping={**pending(1), "status": "failed", "error": "legacy gave up"})
    finish_in_legacy(r, 2)  # untouched in docstore: updated
    before = docstore_store.documents.get_by_task_id("t1")
    summary, lines = run(docstore_store)
    assert (summary.updated, summary.conflicts, summary.already_present) == (1, 1, 2)
    assert docstore_store.documents.get_by_task_id("t1") == before  # left as it is
    [line] = lines
    assert (line["key"], line["outcome"]) == ("task:t1", "conflict")
    assert line["reason"] == "changed in docstore since the migration wrote it"
    assert (line["legacy"]["status"], line["legacy"]["error_message"]) == (
        "FAILED",
        "legacy gave up",
    )
    assert line["docstore"]["status"] == "COMPLETED"
    assert line["docstore"]["result_text"] == "docstore's text"
    assert line["docstore"]["worker_id"] == "worker-7"
    # Still a conflict on the next run (nothing resolved it), and for verify.
    again = run(docstore_store)[0]
    assert again.conflicts == 1
    assert "nothing written: every task is up to date but the 1 conflicts (listed)" in again.text()
    report = verify(r, docstore_store.db)
    assert (report.conflicts, report.ok) == (1, False)


def test_a_document_docstore_deleted_is_never_brought_back(docstore_store: Docstore) -> None:
    r = docstore_store.redis
    seed(r, 3)
    run(docstore_store)
    docstore_store.documents.delete(document_id(docstore_store, "t0"))
    docstore_store.documents.delete(document_id(docstore_store, "t1"))
    finish_in_legacy(r, 1)  # changed in Redis as well: a conflict
    summary, lines = run(docstore_store)
    assert (summary.migrated, summary.updated, summary.conflicts) == (0, 0, 1)
    assert summary.already_present == 2  # t0: deleted, unchanged in Redis; t2: unchanged
    assert docstore_store.documents.get_by_task_id("t0") is None
    assert docstore_store.documents.get_by_task_id("t1") is None
    assert [(line["key"], line["reason"], line["docstore"]) for line in lines] == [
        ("task:t1", "deleted in docstore since the migration wrote it", None)
    ]
    assert lines[0]["legacy"]["status"] == "COMPLETED"


def test_no_update_keeps_insert_only_and_a_dry_run_says_what_a_run_would_do(
    docstore_store: Docstore,
) -> None:
    r = docstore_store.redis
    seed(r, 4)
    run(docstore_store)
    finish_in_legacy(r, 0)
    docstore_store.documents.delete(document_id(docstore_store, "t1"))
    finish_in_legacy(r, 1)
    r.hset("task:t4", mapping=pending(4))
    before = row_versions(docstore_store)
    dry, dry_lines = run(docstore_store, dry_run=True)
    assert (dry.migrated, dry.updated, dry.conflicts, dry.already_present) == (1, 1, 1, 2)
    assert [line["key"] for line in dry_lines] == ["task:t1"]
    assert row_versions(docstore_store) == before
    insert_only, lines = run(docstore_store, update=False)
    # t0 changed in Redis and t1 in conflict were counted as "already present" (unchanged):
    # an insert-only run leaves them, and says so; the conflict is listed as in any run.
    assert (insert_only.migrated, insert_only.updated, insert_only.not_updated) == (1, 0, 1)
    assert (insert_only.conflicts, insert_only.already_present) == (1, 2)
    assert [line["key"] for line in lines] == ["task:t1"]  # t1 deleted: not brought back
    assert re.search(r"not updated +1 +\(changed in Redis: left as is\)", insert_only.text())
    stale = docstore_store.documents.get_by_task_id("t0")
    assert stale is not None and stale.status == "PROCESSING"
    caught_up, _ = run(docstore_store)
    assert (caught_up.updated, caught_up.conflicts, caught_up.already_present) == (1, 1, 3)


def test_documents_migrated_before_the_ledger_are_adopted_when_equal_else_conflicts(
    docstore_store: Docstore,
) -> None:
    r = docstore_store.redis
    seed(r, 3)
    run(docstore_store)
    with docstore_store.db.connection() as conn:
        conn.execute("DELETE FROM legacy_migrations")  # as an older docstore left them
    finish_in_legacy(r, 2)  # no record of what was written: not safe to overwrite
    # An insert-only run sees the same: t0 and t1 present, t2 a conflict (all three were
    # "changed in Redis: left as is", and t2 was listed nowhere).
    insert_only, listed = run(docstore_store, update=False)
    assert (insert_only.not_updated, insert_only.already_present) == (0, 2)
    assert insert_only.conflicts == 1 and [line["key"] for line in listed] == ["task:t2"]
    summary, lines = run(docstore_store)
    assert (summary.updated, summary.conflicts, summary.already_present) == (0, 1, 2)
    assert [(line["key"], line["reason"]) for line in lines] == [
        (
            "task:t2",
            "migrated before the migration ledger existed (0004) and differs from Redis: "
            "status, result_text, page_count, extraction_time_seconds, completed_at",
        )
    ]
    with docstore_store.db.connection() as conn:
        recorded = conn.execute("SELECT legacy_task_id FROM legacy_migrations ORDER BY 1")
        assert [row[0] for row in recorded] == ["t0", "t1"]  # adopted: they agree with Redis
    assert run(docstore_store)[0].already_present == 2


def pre_ledger_conflict(store: Docstore) -> None:
    """t0..t2 migrated by a docstore older than the ledger; t2 then finished in Redis."""
    seed(store.redis, 3)
    run(store)
    with store.db.connection() as conn:
        conn.execute("DELETE FROM legacy_migrations")  # as an older docstore left them
    finish_in_legacy(store.redis, 2)


def test_verify_calls_a_pre_ledger_document_that_differs_a_conflict_not_a_catch_up(
    docstore_store: Docstore,
) -> None:
    r, db = docstore_store.redis, docstore_store.db
    pre_ledger_conflict(docstore_store)
    problems: list[str] = []
    report = verify(r, db, on_problem=lambda p: problems.append(p.text()))
    assert (report.conflicts, report.differing, report.ok) == (1, 0, False)
    assert problems == [
        "conflict  task:t2: migrated before the migration ledger existed (0004) and differs "
        "from Redis (status, result_text, page_count, extraction_time_seconds, completed_at)"
    ]


def test_a_pre_ledger_conflict_can_be_kept_and_stays_kept_until_the_task_changes_again(
    docstore_store: Docstore,
) -> None:
    r, db = docstore_store.redis, docstore_store.db
    pre_ledger_conflict(docstore_store)
    before = docstore_store.documents.get_by_task_id("t2")
    [decision] = keep_docstore(r, db, ["t2"])
    assert (decision.done, decision.reason) == (True, KEPT)
    summary = run(docstore_store)[0]
    assert (summary.conflicts, summary.updated) == (0, 0)
    report = verify(r, db)
    assert (report.kept, report.conflicts, report.ok) == (1, 0, True)
    r.hset("task:t2", "error_message", "changed again")  # what the old service wrote is unknown:
    assert run(docstore_store)[0].conflicts == 1  # a conflict again, never an update over it
    assert docstore_store.documents.get_by_task_id("t2") == before


def test_a_pre_ledger_conflict_can_be_taken_from_redis(docstore_store: Docstore) -> None:
    r, db = docstore_store.redis, docstore_store.db
    pre_ledger_conflict(docstore_store)
    [decision] = take_legacy(r, db, ["t2"])
    assert (decision.done, decision.reason) == (True, TAKEN)
    summary = run(docstore_store)[0]
    assert (summary.conflicts, summary.updated) == (0, 1)
    taken = docstore_store.documents.get_by_task_id("t2")
    assert taken is not None
    assert (taken.status, taken.result_text) == ("COMPLETED", "the text of task 2")
    assert verify(r, db).ok


def test_verify_fails_a_migrated_task_that_a_run_now_rejects(docstore_store: Docstore) -> None:
    r, db = docstore_store.redis, docstore_store.db
    seed(r, 3)
    r.hset("task:t9", mapping={"status": "queued"})  # never migratable: no filename
    run(docstore_store)
    r.hset("task:t1", "status", "on hold")  # a status the migration does not know
    r.set("result:t2", '{"text": 5}')  # a result the migration cannot read
    problems: list[str] = []
    report = verify(r, db, on_problem=lambda p: problems.append(p.text()))
    assert (report.unmigratable, report.rejected, report.ok) == (3, 2, False)
    assert sorted(problems) == [
        "rejected  result:t2: result text must be text, got int (its document holds an older "
        "version of the task: fix the task in the old service, then run the migration)",
        "rejected  task:t1: unknown status 'on hold' (its document holds an older version of "
        "the task: fix the task in the old service, then run the migration)",
    ]
    r.hset("task:t1", "status", "queued")
    r.delete("result:t2")
    r.hset("task:t2", "status", "queued")
    run(docstore_store)
    report = verify(r, db)
    assert (report.unmigratable, report.rejected, report.ok) == (1, 0, True)


def test_a_document_whose_legacy_task_is_gone_can_be_kept_and_then_passes_the_gate(
    docstore_store: Docstore,
) -> None:
    r, db = docstore_store.redis, docstore_store.db
    seed(r, 3)
    run(docstore_store)
    r.delete("task:t1")  # the old service deleted it after the migration
    report = verify(r, db)
    assert (report.not_in_redis, report.ok) == (1, False)
    decisions = keep_docstore(r, db, ["t1", "t7"])
    assert [(d.done, d.reason) for d in decisions] == [
        (
            True,
            "docstore's document stays although its legacy task is gone (until the task is back)",
        ),
        (False, "no such task in Redis, and no document migrated from it"),
    ]
    report = verify(r, db)
    assert (report.not_in_redis, report.kept, report.ok) == (0, 1, True)
    assert run(docstore_store)[0].conflicts == 0
    # Back in Redis, and changed there: a catch-up run brings the document up to date.
    finish_in_legacy(r, 1)
    assert verify(r, db).differing == 1
    assert run(docstore_store)[0].updated == 1
    assert verify(r, db).ok
    with pytest.raises(InvalidInput):  # take_legacy has nothing to take for a gone task
        take_legacy(r, db, [])
    assert take_legacy(r, db, ["t9"])[0].reason == "no such task in Redis"


def test_cli_reports_updated_and_conflicts_and_exits_1_on_conflicts(
    docstore_store: Docstore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = docstore_store.redis
    seed(r, 3)
    args = [
        "--database-url", docstore_store.settings.database_url,
        "--redis-url", docstore_store.settings.redis_url,
        "--rejects", str(tmp_path / "rejects.jsonl"), "--report", str(tmp_path / "report.json"),
    ]  # fmt: skip
    assert main(args) == 0
    finish_in_legacy(r, 0)
    assert main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["updated"], report["conflicts"], report["already_present"]) == (1, 0, 2)
    docstore_store.documents.delete(document_id(docstore_store, "t1"))
    finish_in_legacy(r, 1)
    capsys.readouterr()
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "conflicts" in out and "listed in" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["updated"], report["conflicts"]) == (0, 1)
    [line] = map(json.loads, (tmp_path / "rejects.jsonl").read_text().splitlines())
    assert (line["key"], line["outcome"]) == ("task:t1", "conflict")
    assert main([*args, "--verify"]) == 1


def test_verify_lists_documents_whose_legacy_task_is_gone_and_passes_only_when_all_agree(
    docstore_store: Docstore,
) -> None:
    r = docstore_store.redis
    seed(r, 9)
    run(docstore_store)
    assert verify(r, docstore_store.db, batch_size=2).ok
    r.delete("task:t3", "task:t7")  # the legacy service dropped them after the run
    problems: list[Any] = []
    report = verify(r, docstore_store.db, batch_size=2, on_problem=problems.append)
    assert (report.checked, report.matching, report.documents_checked) == (7, 7, 9)
    assert (report.not_in_redis, report.ok) == (2, False)
    assert [p.text() for p in problems] == [
        "not in Redis  task:t3 (a migrated document whose legacy task is gone)",
        "not in Redis  task:t7 (a migrated document whose legacy task is gone)",
    ]
    for i in (3, 7):
        r.hset(f"task:t{i}", mapping=pending(i) if i % 2 else running(i))
    assert verify(r, docstore_store.db, batch_size=2).ok


@pytest.mark.parametrize(
    "name",
    [
        "migrate_plan",
        "migrate_fetch_migrated",
        "migrate_record_written",
        "migrate_unchanged_raw",
        "migrate_record_raw",
    ],
)
def test_a_batch_looks_up_its_tasks_by_index_however_large_the_ledger(
    docstore_store: Docstore, name: str
) -> None:
    """A scan of the ledger or of documents per batch would make a run quadratic. As plain
    joins the planner chose a seq scan of legacy_migrations at 40,000 recorded tasks (and
    migrate_record_written hashed all of documents for every batch of a first run)."""
    with docstore_store.db.connection() as conn:
        conn.execute("INSERT INTO users (email) VALUES ('owner@example.com')")
        conn.execute(
            "INSERT INTO documents (user_id, filename, s3_key, legacy_task_id)"
            " SELECT u.id, 'f.pdf', 'k', g::text FROM users AS u, generate_series(1, 40000) AS g"
        )
        conn.execute(
            "INSERT INTO legacy_migrations (legacy_task_id, source_md5, written_md5)"
            " SELECT legacy_task_id, decode(md5(legacy_task_id), 'hex'),"
            " legacy_document_fingerprint(d) FROM documents AS d"
        )
        conn.execute("ANALYZE documents, legacy_migrations")
        params: dict[str, Any] = {"task_ids": [str(i) for i in range(39_500, 40_500)]}
        if name in ("migrate_plan", "migrate_record_written"):
            params["source_md5s"] = [b"x" * 16] * 1000
        if name in ("migrate_record_written", "migrate_unchanged_raw", "migrate_record_raw"):
            params["raw_md5s"] = [b"r" * 16] * 1000
        query = docstore_store.db.query(name, params)
        plan = "\n".join(row[0] for row in conn.execute("EXPLAIN " + query.sql, params))
    assert "Seq Scan" not in plan, plan


def test_a_catch_up_drops_the_cached_results_of_the_documents_it_updates(
    docstore_store: Docstore, tmp_path: Path
) -> None:
    r = docstore_store.redis
    seed(r, 4)
    run(docstore_store)
    cache = docstore_store.cache
    updated, kept = document_id(docstore_store, "t0"), document_id(docstore_store, "t1")
    for doc_id in (updated, kept):
        assert cache.cache_document_result(doc_id, {"status": "PROCESSING"})
    finish_in_legacy(r, 0)
    summary, _ = run(docstore_store, cache=cache)
    assert (summary.updated, summary.cache_dropped, summary.cache_not_dropped) == (1, 1, 0)
    assert cache.get_document_result(updated, dict) is None  # a read now loads the new version
    assert cache.get_document_result(kept, dict) == {"status": "PROCESSING"}

    # Through the command line, on docstore's Redis named by --cache-redis-url.
    assert cache.cache_document_result(kept, {"status": "PROCESSING"})
    finish_in_legacy(r, 1)
    args = [
        "--database-url", docstore_store.settings.database_url,
        "--redis-url", docstore_store.settings.redis_url,
        "--cache-redis-url", docstore_store.settings.redis_url,
        "--rejects", str(tmp_path / "rejects.jsonl"), "--report", str(tmp_path / "report.json"),
    ]  # fmt: skip
    assert main(args) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["updated"], report["cache_dropped"], report["cache_not_dropped"]) == (1, 1, 0)
    assert cache.get_document_result(kept, dict) is None


def test_a_catch_up_says_what_it_could_not_drop_from_the_cache(docstore_store: Docstore) -> None:
    r = docstore_store.redis
    seed(r, 2)
    run(docstore_store)
    finish_in_legacy(r, 0)
    without, _ = run(docstore_store)  # no cache: the summary says how to drop them
    assert without.updated == 1 and without.cache_dropped is None
    assert "pass --cache-redis-url" in without.text()
    finish_in_legacy(r, 1)
    down = RedisCache(redis.Redis(port=free_port(), socket_connect_timeout=0.2))
    summary, _ = run(docstore_store, cache=down)  # docstore's Redis is down: the run goes on
    assert (summary.updated, summary.cache_dropped, summary.cache_not_dropped) == (1, 0, 1)
    assert "1 updated documents may still be cached" in summary.text()


def two_conflicts(store: Docstore) -> None:
    """Four tasks migrated; then t1 completed by docstore's worker and failed by the legacy
    service, t3 deleted in docstore and finished in Redis: two conflicts."""
    r = store.redis
    seed(r, 4)
    run(store)
    claimed = store.lifecycle.claim(document_id(store, "t1"), "worker-7")
    store.lifecycle.mark_completed(claimed.id, "worker-7", "docstore's text")
    r.hset("task:t1", mapping={**pending(1), "status": "failed", "error": "legacy gave up"})
    store.documents.delete(document_id(store, "t3"))
    finish_in_legacy(r, 3)
    assert run(store)[0].conflicts == 2


def test_a_conflict_the_operator_kept_passes_the_gate_until_the_task_changes_again(
    docstore_store: Docstore,
) -> None:
    r, db = docstore_store.redis, docstore_store.db
    two_conflicts(docstore_store)
    assert (verify(r, db).conflicts, verify(r, db).ok) == (2, False)
    before = docstore_store.documents.get_by_task_id("t1")

    outcomes = keep_docstore(r, db, ["t1", "t3", "t0", "t9", "t1"])
    assert [(o.key, o.done, o.reason) for o in outcomes] == [
        ("task:t1", True, KEPT),
        ("task:t3", True, KEPT),
        ("task:t0", False, "no conflict: the document agrees with the task"),
        ("task:t9", False, "no such task in Redis, and no document migrated from it"),
    ]
    assert docstore_store.documents.get_by_task_id("t1") == before  # only the ledger changed
    assert docstore_store.documents.get_by_task_id("t3") is None
    summary = run(docstore_store)[0]
    assert (summary.conflicts, summary.updated, summary.migrated) == (0, 0, 0)
    report = verify(r, db)
    assert (report.conflicts, report.kept, report.matching, report.ok) == (0, 2, 2, True)
    assert "2 kept as docstore has them" in report.text()

    finish_in_legacy(r, 1)  # the legacy service changes t1 again: a conflict again
    summary, lines = run(docstore_store)
    assert summary.conflicts == 1
    assert [line["key"] for line in lines] == ["task:t1"]
    report = verify(r, db)
    assert (report.conflicts, report.kept, report.ok) == (1, 1, False)
    assert docstore_store.documents.get_by_task_id("t1") == before


def test_keep_docstore_refuses_a_task_a_catch_up_run_would_update(
    docstore_store: Docstore,
) -> None:
    r = docstore_store.redis
    seed(r, 2)
    run(docstore_store)
    finish_in_legacy(r, 0)  # changed in Redis only: no conflict, the next run updates it
    [outcome] = keep_docstore(r, docstore_store.db, ["t0"])
    assert (outcome.done, outcome.reason) == (
        False,
        "no conflict: docstore has not changed the document since the migration wrote it "
        "(a catch-up run updates it)",
    )
    assert run(docstore_store)[0].updated == 1
    with pytest.raises(InvalidInput):
        keep_docstore(r, docstore_store.db, [])
    with pytest.raises(InvalidInput, match="must be text"):
        take_legacy(r, docstore_store.db, [42])  # type: ignore[list-item]


def cli_with_a_deleted_conflict(store: Docstore, tmp_path: Path) -> list[str]:
    """Two tasks migrated by the CLI, then t1 deleted in docstore and finished in Redis; the
    CLI's arguments."""
    seed(store.redis, 2)
    args = [
        "--database-url", store.settings.database_url,
        "--redis-url", store.settings.redis_url,
        "--rejects", str(tmp_path / "rejects.jsonl"),
    ]  # fmt: skip
    assert main(args) == 0
    store.documents.delete(document_id(store, "t1"))
    finish_in_legacy(store.redis, 1)
    return args


def test_cli_keep_docstore_exits_0_when_every_task_is_kept(
    docstore_store: Docstore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_with_a_deleted_conflict(docstore_store, tmp_path)
    assert main([*args, "--verify"]) == 1
    capsys.readouterr()
    assert main([*args, "--keep-docstore", "t0", "t1"]) == 1  # t0 is no conflict
    out = capsys.readouterr().out
    assert "done  task:t1: docstore's version stays" in out
    assert "refused  task:t0: no conflict" in out
    assert "kept docstore's version of 1 of 2 tasks" in out
    assert main([*args, "--keep-docstore", "t1"]) == 0
    assert main([*args, "--verify"]) == 0
    assert main(args) == 0
    with pytest.raises(SystemExit) as refused:
        main([*args, "--verify", "--keep-docstore", "t1"])
    assert refused.value.code == 2


def test_cli_take_legacy_needs_the_confirmation(
    docstore_store: Docstore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli_with_a_deleted_conflict(docstore_store, tmp_path)
    with pytest.raises(SystemExit) as refused:
        main([*args, "--take-legacy", "t1"])
    assert refused.value.code == 2
    assert "add --yes-destroy-data" in capsys.readouterr().err
    assert docstore_store.documents.get_by_task_id("t1") is None
    assert main(args) == 1  # still a conflict: nothing was decided
    assert main([*args, "--take-legacy", "t1", "--yes-destroy-data"]) == 0
    assert "the next run writes the legacy version of 1 of 1 tasks" in capsys.readouterr().out
    assert main(args) == 0
    assert main([*args, "--verify"]) == 0
    assert docstore_store.documents.get_by_task_id("t1") is not None


def test_taking_the_legacy_version_lets_the_next_run_rewrite_or_bring_back_the_document(
    docstore_store: Docstore,
) -> None:
    r, db = docstore_store.redis, docstore_store.db
    two_conflicts(docstore_store)
    decisions = take_legacy(r, db, ["t1", "t3", "t0"])
    assert [(d.key, d.done, d.reason) for d in decisions] == [
        ("task:t1", True, TAKEN),
        ("task:t3", True, TAKEN),
        ("task:t0", False, "no conflict: the document agrees with the task"),
    ]
    before = docstore_store.documents.get_by_task_id("t1")
    assert before is not None and before.result_text == "docstore's text"
    summary = run(docstore_store)[0]
    assert (summary.conflicts, summary.updated, summary.migrated) == (0, 1, 1)
    rewritten = docstore_store.documents.get_by_task_id("t1")
    assert rewritten is not None
    assert (rewritten.status, rewritten.error_message, rewritten.result_text) == (
        "FAILED",
        "legacy gave up",
        None,
    )
    back = docstore_store.documents.get_by_task_id("t3")
    assert back is not None
    assert (back.status, back.result_text) == ("COMPLETED", "the text of task 3")
    # Its blob came back with it: the deletion its delete had listed was called off.
    assert docstore_store.purge_deleted_blobs().deleted == 0
    assert docstore_store.documents.count_blob_deletions()[0] == 0
    assert verify(r, db).ok
    assert run(docstore_store)[0].updated == 0  # settled: the run after writes nothing


def test_a_deleted_document_whose_blob_is_gone_is_not_brought_back(
    docstore_store: Docstore,
) -> None:
    # It came back pointing at a blob its delete had purged: no worker could ever read it.
    r, db = docstore_store.redis, docstore_store.db
    seed(r, 2)
    run(docstore_store)
    docstore_store.delete_document(document_id(docstore_store, "t1"))  # its blob goes too
    finish_in_legacy(r, 1)
    [decision] = take_legacy(r, db, ["t1"])
    assert (decision.done, decision.reason) == (False, BLOB_GONE)
    assert run(docstore_store)[0].conflicts == 1  # still the operator's to decide
    assert docstore_store.documents.get_by_task_id("t1") is None


def test_a_deleted_document_comes_back_when_its_task_names_a_new_blob_that_is_there(
    docstore_store: Docstore,
) -> None:
    # Its task named a new key, never docstore's to delete: refused as "blob gone" all the same.
    r, db = docstore_store.redis, docstore_store.db
    seed(r, 3)
    run(docstore_store)
    for task in ("t1", "t2"):
        docstore_store.delete_document(document_id(docstore_store, task))
    assert docstore_store.documents.count_blob_deletions()[0] == 0  # both blobs gone
    # The legacy service took both files again, under new keys, and finished the tasks; only
    # t1's new file reached the blob store.
    uploaded = docstore_store.blobs.put(1, "scan-1.pdf", b"%PDF-1.4 again")
    for i, key in ((1, uploaded.key), (2, "uploads/2-again.pdf")):
        finish_in_legacy(r, i)
        r.hset(f"task:t{i}", "s3_key", key)
    # Without the blob store nobody can tell: refused as before.
    assert take_legacy(r, db, ["t1"])[0].reason == BLOB_GONE
    decisions = take_legacy(r, db, ["t1", "t2"], blobs=docstore_store.blobs)
    assert [(d.task_id, d.done, d.reason) for d in decisions] == [
        ("t1", True, TAKEN),
        ("t2", False, BLOB_NOT_FOUND),
    ]
    summary = run(docstore_store)[0]
    assert (summary.migrated, summary.conflicts) == (1, 1)
    back = docstore_store.documents.get_by_task_id("t1")
    assert back is not None and back.s3_key == uploaded.key
    assert docstore_store.blobs.get(back.s3_key) == b"%PDF-1.4 again"
    assert docstore_store.documents.get_by_task_id("t2") is None
    with pytest.raises(InvalidInput, match="blobs"):
        take_legacy(r, db, ["t2"], blobs="/tmp/blobs")  # type: ignore[arg-type]
    # An async store's blobs would answer a coroutine, which "opens" every key.
    with pytest.raises(InvalidInput, match="async"):
        take_legacy(r, db, ["t2"], blobs=AsyncBlobs(docstore_store.blobs.store))  # type: ignore[arg-type]


class PurgeEndsMeanwhile:
    """The store's blob store, with a purge of `key` that ends right after a look at it."""

    def __init__(self, store: Docstore, key: str) -> None:
        self.store, self.key = store, key

    def open(self, key: str) -> Any:
        found = self.store.blobs.open(key)
        if key == self.key:  # the purge deletes the blob, then drops its row
            self.store.blobs.delete(key)
            assert self.store.db.execute("finish_blob_deletion", {"s3_key": key}) == 1
        return found


def test_a_take_never_brings_back_a_document_whose_blob_a_running_purge_deletes(
    docstore_store: Docstore,
) -> None:
    # The blob was looked for first and found; the purge then ended (blob and row gone) before
    # the statement ran, which found no deletion started and took the task.
    r, db = docstore_store.redis, docstore_store.db
    seed(r, 2)
    uploaded = docstore_store.blobs.put(1, "scan-1.pdf", b"%PDF-1.4")
    r.hset("task:t1", "s3_key", uploaded.key)
    run(docstore_store)
    docstore_store.documents.delete(document_id(docstore_store, "t1"))  # its blob is listed
    assert db.all("take_due_blob_deletions", {"limit": 10, "retry_in": 60})  # a purge took it
    finish_in_legacy(r, 1)
    r.hset("task:t1", "s3_key", uploaded.key)
    blobs = PurgeEndsMeanwhile(docstore_store, uploaded.key)
    [decision] = take_legacy(r, db, ["t1"], blobs=blobs)  # type: ignore[arg-type]
    assert (decision.done, decision.reason) == (False, BLOB_NOT_FOUND)
    assert run(docstore_store)[0].conflicts == 1
    assert docstore_store.documents.get_by_task_id("t1") is None


def test_every_option_of_a_run_is_checked_before_anything_is_written(
    docstore_store: Docstore,
) -> None:
    r, db = docstore_store.redis, docstore_store.db
    seed(r, 5)
    bad: list[dict[str, Any]] = [
        {"progress": 5},
        {"rejects": object()},
        {"cache": "x"},
        {"writers": float("nan")},  # hung for good: no writer thread ever started
        {"writers": "2"},
        {"batch_size": True},
        {"batch_size": "10"},
        {"prefix": None},
        {"prefix": "\ud800"},
        {"dry_run": "no"},
    ]
    for options in bad:
        with pytest.raises(InvalidInput):
            migrate(r, db, **options)
    # Not a Redis client, not docstore's Database: an AttributeError from deep inside before.
    for source, target in (("x", db), (None, db), (r, "x"), (r, docstore_store)):
        with pytest.raises(InvalidInput, match=r"Redis client|target"):
            migrate(source, target)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match=r"Redis client|target"):
            verify(source, target)  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match=r"Redis client|target"):
            keep_docstore(source, target, ["t1"])  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="on_problem"):  # a TypeError at the first problem
        verify(r, db, on_problem=1)  # type: ignore[arg-type]
    with db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)
    for ids in ("t1", None, 5):  # a lone id was decided character by character
        with pytest.raises(InvalidInput, match="task_ids"):
            keep_docstore(r, db, ids)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="surrogate"):
        take_legacy(r, db, ["\ud800"])


def test_an_insert_only_runs_progress_shows_the_changed_tasks_it_leaves(
    docstore_store: Docstore, caplog: pytest.LogCaptureFixture
) -> None:
    r = docstore_store.redis
    seed(r, 2)
    run(docstore_store)
    finish_in_legacy(r, 0)
    stream = io.StringIO()
    bar = BarProgress(stream)
    with caplog.at_level(logging.INFO, logger="docstore.migrate"):
        summary, _ = run(docstore_store, update=False, progress=bar)
        run(docstore_store, update=False, progress=LogProgress(interval=0))
    bar.close()
    assert summary.not_updated == 1
    assert "not_updated=1" in stream.getvalue()
    assert "updated 0, not updated 1, conflicts 0" in caplog.text
    # A run that leaves nothing says nothing of it.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="docstore.migrate"):
        run(docstore_store, progress=LogProgress(interval=0))
    assert "updated 1, conflicts 0" in caplog.text and "not updated" not in caplog.text

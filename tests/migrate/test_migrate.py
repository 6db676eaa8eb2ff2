"""docstore.migrate against real Redis and PostgreSQL: the legacy contract end to end."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from typing import Any

import pytest
import redis
from psycopg.rows import dict_row

from docstore import Docstore
from docstore.migrate import DEFAULT_USER_EMAIL, legacy_records, migrate, verify
from docstore.migrate.redis_reader import ReadBatch, read_task_batch

T0 = datetime(2024, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
ALIASES = {
    "running": "PROCESSING",
    "started": "PROCESSING",
    "done": "COMPLETED",
    "success": "COMPLETED",
    "pending": "PENDING",
    "FAILED": "FAILED",
}


@pytest.fixture
def legacy(docstore_store: Docstore) -> redis.Redis:
    return docstore_store.redis


def documents(store: Docstore) -> dict[str, dict[str, Any]]:
    """Every document by legacy task id, with its owner's email."""
    with store.db.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT d.*, u.email FROM documents AS d JOIN users AS u ON u.id = d.user_id")
        return {row["legacy_task_id"]: row for row in cur.fetchall()}


def user_emails(store: Docstore) -> list[str]:
    with store.db.connection() as conn:
        return sorted(row[0] for row in conn.execute("SELECT email FROM users").fetchall())


def run(store: Docstore, **options: Any) -> tuple[Any, list[dict[str, str]]]:
    """Migrate; return the summary and the rejects-file lines."""
    stream = io.StringIO()
    summary = migrate(store.redis, store.db, rejects=stream, **options)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return summary, lines


def seed_contract_variants(r: redis.Redis) -> None:
    """One task per variant of the legacy contract, as hashes and as JSON strings."""
    r.hset(
        "task:h-full",
        mapping={
            "filename": "a.pdf",
            "s3_key": "uploads/a.pdf",
            "status": "completed",
            "created_at": "2024-03-01T12:00:00",  # naive: UTC
            "started_at": "2024-03-01T13:00:01+01:00",
            "completed_at": "2024-03-01T12:00:05Z",
            "page_count": "3",
            "extraction_time": "1.5",
            "user_email": "Alice@Example.com",
            "progress": "100",  # unknown fields are ignored
        },
    )
    r.set("result:h-full", json.dumps({"text": "hello", "page_count": 9}))
    r.hset(
        "task:h-epoch",
        mapping={
            "filename": "b.pdf",
            "s3_key": "k/b",
            "status": "ERROR",
            "error": "boom",
            "created_at": str(T0.timestamp()),
            "started_at": "1709294400.25",
        },
    )
    r.set(
        "task:j-numbers",
        json.dumps(
            {
                "filename": "c.pdf",
                "s3_key": "k/c",
                "status": "Succeeded",
                "created_at": int(T0.timestamp()),
                "completed_at": T0.timestamp() + 0.5,
                "error_message": None,
                "extraction_time_seconds": 2,
                "user_email": "alice@example.com",
            }
        ),
    )
    r.set("result:j-numbers", "raw text, not JSON")
    r.set(
        "task:j-queued",
        json.dumps({"filename": "d.pdf", "s3_key": "k/d", "status": "queued", "created_at": ""}),
    )
    r.set("result:j-queued", json.dumps({"text": "t", "page_count": 4, "extraction_time": 0.25}))
    for alias in ALIASES:
        r.hset(f"task:alias-{alias}", mapping={"filename": "f", "s3_key": "s", "status": alias})
    r.set("progress:h-full", "100")
    r.set("session:xyz", "temporary")


def test_every_variant_of_the_contract_becomes_the_right_row(docstore_store: Docstore) -> None:
    seed_contract_variants(docstore_store.redis)
    summary, lines = run(docstore_store, batch_size=3)
    assert (summary.migrated, summary.rejected, summary.already_present) == (10, 0, 0)
    assert summary.skipped == 2 and summary.task_keys == 10 and summary.result_keys == 3
    assert lines == []
    docs = documents(docstore_store)
    full = docs["h-full"]
    assert full["email"] == "alice@example.com"  # created users get lower-case emails
    assert (full["filename"], full["s3_key"], full["status"]) == (
        "a.pdf",
        "uploads/a.pdf",
        "COMPLETED",
    )
    assert full["created_at"] == T0
    assert full["started_at"] == T0.replace(second=1)
    assert full["completed_at"] == T0.replace(second=5)
    assert full["result_text"] == "hello"
    assert full["page_count"] == 3  # the task's number wins over the result's
    assert full["extraction_time_seconds"] == 1.5
    epoch = docs["h-epoch"]
    assert (epoch["status"], epoch["error_message"]) == ("FAILED", "boom")
    assert epoch["created_at"] == T0
    assert epoch["started_at"] == datetime(2024, 3, 1, 12, 0, 0, 250000, tzinfo=timezone.utc)
    assert epoch["result_text"] is None and epoch["email"] == DEFAULT_USER_EMAIL
    numbers = docs["j-numbers"]
    assert numbers["status"] == "COMPLETED" and numbers["error_message"] is None
    assert numbers["completed_at"] == T0.replace(microsecond=500000)
    assert numbers["extraction_time_seconds"] == 2.0
    assert numbers["result_text"] == "raw text, not JSON"
    assert numbers["user_id"] == full["user_id"]  # same user whatever the case
    queued = docs["j-queued"]
    assert queued["status"] == "PENDING"
    assert (queued["result_text"], queued["page_count"], queued["extraction_time_seconds"]) == (
        "t",
        4,
        0.25,
    )
    for alias, status in ALIASES.items():
        assert docs[f"alias-{alias}"]["status"] == status
    assert user_emails(docstore_store) == ["alice@example.com", DEFAULT_USER_EMAIL]
    assert summary.users_created == 2


def seed_malformed(r: redis.Redis) -> dict[str, str]:
    """One broken record of each kind; returns key -> expected reason fragment."""
    good = {"filename": "f.pdf", "s3_key": "k", "status": "done"}
    r.hset("task:no-filename", mapping={"s3_key": "k", "status": "done"})
    r.hset("task:no-s3", mapping={"filename": "f", "status": "done"})
    r.hset("task:no-status", mapping={"filename": "f", "s3_key": "k"})
    r.hset("task:bad-status", mapping={**good, "status": "exploded"})
    r.hset("task:bad-time", mapping={**good, "created_at": "yesterday"})
    r.hset("task:bad-epoch", mapping={**good, "created_at": "1e20"})
    r.hset("task:bad-pages", mapping={**good, "page_count": "-2"})
    r.hset("task:frac-pages", mapping={**good, "page_count": "2.5"})
    r.hset("task:bad-seconds", mapping={**good, "extraction_time": "fast"})
    r.hset("task:bad-email", mapping={**good, "user_email": "nobody"})
    r.hset("task:long-name", mapping={**good, "filename": "x" * 256})
    r.set("task:not-json", "{not json")
    r.set("task:json-list", json.dumps([1, 2]))
    r.set("task:json-bool", json.dumps({**good, "page_count": True}))
    r.rpush("task:a-list", "x")
    r.hset("task:bad-result", mapping=good)
    r.set("result:bad-result", json.dumps({"text": 42}))
    r.hset("task:result-hash", mapping=good)
    r.hset("result:result-hash", mapping={"text": "x"})
    r.set("result:orphan", "text of a task that is gone")
    r.hset("task:fine", mapping=good)
    return {
        "task:no-filename": "missing required field 'filename'",
        "task:no-s3": "missing required field 's3_key'",
        "task:no-status": "missing required field 'status'",
        "task:bad-status": "unknown status 'exploded'",
        "task:bad-time": "created_at is not a timestamp",
        "task:bad-epoch": "created_at is out of range (UTC years 1 to 9999)",
        "task:bad-pages": "page_count must be a whole number",
        "task:frac-pages": "page_count must be a whole number",
        "task:bad-seconds": "extraction_time_seconds is not a number",
        "task:bad-email": "user_email is not an email address",
        "task:long-name": "filename is longer than 255",
        "task:not-json": "task string is not valid JSON",
        "task:json-list": "task string is JSON but not an object",
        "task:json-bool": "page_count is not a number",
        "task:a-list": "task key is a list",
        "result:bad-result": "result text must be text",
        "result:result-hash": "result key is not a string",
        "result:orphan": "result without a task",
    }


def test_malformed_records_are_rejected_listed_and_the_rest_migrates(
    docstore_store: Docstore,
) -> None:
    expected = seed_malformed(docstore_store.redis)
    summary, lines = run(docstore_store, batch_size=4)
    assert summary.rejected == len(expected)
    assert summary.migrated == 1
    listed = {line["key"]: line for line in lines}
    assert listed.keys() == expected.keys()
    for key, fragment in expected.items():
        assert fragment in listed[key]["reason"], (key, listed[key])
        assert listed[key]["outcome"] == "rejected"
    assert list(documents(docstore_store)) == ["fine"]
    assert summary.reject_reasons["missing required field 'filename'"] == 1


def test_nul_bytes_and_invalid_utf8_are_cleaned_counted_and_listed(
    docstore_store: Docstore,
) -> None:
    r = docstore_store.redis
    r.hset("task:nul", mapping={"filename": b"a\x00b.pdf", "s3_key": "k", "status": "done"})
    r.set("result:nul", b"te\x00xt\x00")
    r.hset("task:utf", mapping={"filename": b"caf\xe9.pdf", "s3_key": "k", "status": "done"})
    r.set("result:utf", b"ok \xff\xfe end")
    r.set(
        "task:json-esc",
        b'{"filename": "x\\u0000y", "s3_key": "k", "status": "done", "error": "bad \\ud800 half"}',
    )
    r.hset("task:clean", mapping={"filename": "c", "s3_key": "k", "status": "done"})
    summary, lines = run(docstore_store)
    assert (summary.migrated, summary.rejected, summary.sanitized) == (4, 0, 3)
    docs = documents(docstore_store)
    assert docs["nul"]["filename"] == "ab.pdf" and docs["nul"]["result_text"] == "text"
    assert docs["utf"]["filename"] == "caf\ufffd.pdf"
    assert docs["utf"]["result_text"] == "ok \ufffd\ufffd end"
    assert docs["json-esc"]["filename"] == "xy"
    assert docs["json-esc"]["error_message"] == "bad \ufffd half"
    listed = {line["key"]: line for line in lines}
    assert set(listed) == {"task:nul", "task:utf", "task:json-esc"}
    assert all(line["outcome"] == "sanitized" for line in lines)
    assert "filename: stripped 1 NUL" in listed["task:nul"]["reason"]
    assert "result: stripped 2 NUL" in listed["task:nul"]["reason"]
    assert "result: invalid UTF-8" in listed["task:utf"]["reason"]


def test_a_task_id_postgres_cannot_keep_exactly_is_rejected(docstore_store: Docstore) -> None:
    r = docstore_store.redis
    r.hset(b"task:\xff\xfe", mapping={"filename": "f", "s3_key": "k", "status": "done"})
    r.hset("task:" + "x" * 513, mapping={"filename": "f", "s3_key": "k", "status": "done"})
    summary, lines = run(docstore_store)
    assert (summary.rejected, summary.migrated) == (2, 0)
    assert sorted(line["reason"] for line in lines) == [
        "task id is not valid UTF-8",
        "task id must be 1 to 512 characters",
    ]
    assert lines[0]["key"].startswith("task:")


def test_a_20_mb_result_text_is_migrated_whole(docstore_store: Docstore) -> None:
    text = ("lorem ipsum dolor sit amet " * 777_000)[:20_000_000]
    docstore_store.redis.hset(
        "task:big", mapping={"filename": "big.pdf", "s3_key": "k", "status": "done"}
    )
    docstore_store.redis.set("result:big", text.encode())
    summary, _ = run(docstore_store)
    assert summary.migrated == 1
    with docstore_store.db.connection() as conn:
        length, digest = conn.execute(
            "SELECT length(result_text), md5(result_text) = md5(%s) FROM documents", [text]
        ).fetchone() or (None, None)
    assert (length, digest) == (20_000_000, True)
    assert verify(docstore_store.redis, docstore_store.db).ok


def test_running_again_changes_nothing(docstore_store: Docstore) -> None:
    seed_contract_variants(docstore_store.redis)
    first, _ = run(docstore_store, batch_size=4)
    before = documents(docstore_store)
    second, _ = run(docstore_store, batch_size=4)
    assert (second.migrated, second.already_present, second.users_created) == (0, 10, 0)
    assert documents(docstore_store) == before
    assert first.migrated == 10


def test_a_dry_run_writes_nothing_and_says_what_would_happen(docstore_store: Docstore) -> None:
    seed_contract_variants(docstore_store.redis)
    seed_malformed(docstore_store.redis)
    keys_before = sorted(docstore_store.redis.keys("*"))
    dry, lines = run(docstore_store, dry_run=True)
    assert (dry.migrated, dry.already_present, dry.users_created) == (11, 0, 0)
    assert dry.rejected == 18 and len(lines) == 18
    assert documents(docstore_store) == {} and user_emails(docstore_store) == []
    real, _ = run(docstore_store)
    assert real.migrated == 11
    again, _ = run(docstore_store, dry_run=True)
    assert (again.migrated, again.already_present) == (0, 11)
    assert sorted(docstore_store.redis.keys("*")) == keys_before  # Redis untouched


def test_verify_tells_missing_stale_and_changed_in_docstore_apart(docstore_store: Docstore) -> None:
    seed_contract_variants(docstore_store.redis)
    run(docstore_store)
    assert verify(docstore_store.redis, docstore_store.db).ok
    with docstore_store.db.connection() as conn:
        conn.execute("DELETE FROM documents WHERE legacy_task_id = 'h-epoch'")
        conn.execute(
            "UPDATE documents SET result_text = 'x', status = 'FAILED' "
            "WHERE legacy_task_id = 'h-full'"
        )
        # Gone from the ledger and from documents: as if never migrated.
        conn.execute("DELETE FROM documents WHERE legacy_task_id = 'j-queued'")
        conn.execute("DELETE FROM legacy_migrations WHERE legacy_task_id = 'j-queued'")
    docstore_store.redis.hset("task:alias-done", "filename", "renamed.pdf")  # stale document
    problems: list[Any] = []
    report = verify(docstore_store.redis, docstore_store.db, on_problem=problems.append)
    assert not report.ok
    assert (report.checked, report.matching) == (10, 6)
    assert (report.missing, report.differing, report.conflicts) == (1, 1, 2)
    assert sorted(p.text() for p in problems) == [
        "conflict  task:h-epoch: deleted in docstore since the migration wrote it",
        "conflict  task:h-full: changed in docstore since the migration wrote it "
        "(status, result_text)",
        "differs  task:alias-done: filename (a catch-up run updates it)",
        "missing  task:j-queued",
    ]


def test_existing_users_are_reused_and_never_duplicated(docstore_store: Docstore) -> None:
    with docstore_store.db.connection() as conn:
        conn.execute("INSERT INTO users (email) VALUES ('MIGRATED@system.local')")
    docstore_store.redis.hset("task:a", mapping={"filename": "f", "s3_key": "k", "status": "done"})
    summary, _ = run(docstore_store)
    assert (summary.migrated, summary.users_created) == (1, 0)
    assert user_emails(docstore_store) == ["MIGRATED@system.local"]


def test_a_row_the_database_refuses_is_rejected_alone(docstore_store: Docstore) -> None:
    # A rule the parser does not know about: the batch fails, then goes row by row.
    with docstore_store.db.connection() as conn:
        conn.execute(
            "ALTER TABLE documents ADD CONSTRAINT no_exe CHECK (filename NOT LIKE '%.exe')"
        )
    for name in ("a.pdf", "b.exe", "c.pdf"):
        docstore_store.redis.hset(
            f"task:{name}", mapping={"filename": name, "s3_key": "k", "status": "done"}
        )
    summary, lines = run(docstore_store)
    assert (summary.migrated, summary.rejected) == (2, 1)
    assert lines[0]["key"] == "task:b.exe" and "no_exe" in lines[0]["reason"]
    assert sorted(documents(docstore_store)) == ["a.pdf", "c.pdf"]


def test_a_key_deleted_between_scan_and_read_is_counted_as_vanished(
    docstore_store: Docstore,
) -> None:
    r = docstore_store.redis
    r.hset("task:here", mapping={"filename": "f", "s3_key": "k", "status": "done"})
    batch = ReadBatch()
    read_task_batch(r, [(b"task:here", "here"), (b"task:gone", "gone")], batch)
    assert batch.vanished == 1 and batch.rejects == []
    assert [doc.task_id for doc in batch.documents] == ["here"]


def test_migrated_documents_are_found_by_task_id(docstore_store: Docstore) -> None:
    seed_contract_variants(docstore_store.redis)
    run(docstore_store)
    found = docstore_store.documents.get_by_task_id("h-full")
    assert found is not None
    assert found.filename == "a.pdf" and found.legacy_task_id == "h-full"
    assert found.status == "COMPLETED"


def test_a_task_in_flight_in_the_legacy_service_is_handed_to_a_new_worker(
    docstore_store: Docstore, legacy: redis.Redis
) -> None:
    legacy.hset(
        "task:in-flight",
        mapping={
            "filename": "slow.pdf",
            "s3_key": "uploads/slow.pdf",
            "status": "running",
            "created_at": "2024-03-01T12:00:00Z",
            "started_at": "2024-03-01T12:00:30Z",
        },
    )
    run(docstore_store)
    migrated = docstore_store.documents.get_by_task_id("in-flight")
    assert migrated is not None and migrated.status == "PROCESSING"
    assert migrated.attempts == 1 and migrated.worker_id == "legacy-service"
    assert migrated.lease_expires_at == datetime(2024, 3, 1, 12, 0, 30, tzinfo=timezone.utc)

    (requeued,) = docstore_store.lifecycle.requeue_expired()
    assert requeued.id == migrated.id and requeued.status == "PENDING"
    claimed = docstore_store.lifecycle.claim(migrated.id, "new-worker", 60)
    assert claimed.status == "PROCESSING" and claimed.attempts == 2


def test_a_row_that_breaks_a_unique_rule_is_rejected_alone(docstore_store: Docstore) -> None:
    # A unique rule the parser does not know about: a conflict is about one row, not the run.
    with docstore_store.db.connection() as conn:
        conn.execute("ALTER TABLE documents ADD CONSTRAINT one_s3_key UNIQUE (s3_key)")
    for task_id, s3_key in (("a", "same"), ("b", "same"), ("c", "other")):
        docstore_store.redis.hset(
            f"task:{task_id}", mapping={"filename": "f", "s3_key": s3_key, "status": "done"}
        )
    summary, lines = run(docstore_store)
    assert (summary.migrated, summary.rejected) == (2, 1)
    assert [line["key"] for line in lines] in (["task:a"], ["task:b"])
    assert "one_s3_key" in lines[0]["reason"]
    assert sorted(documents(docstore_store)) == sorted({"a", "b", "c"} - {lines[0]["key"][5:]})


def test_verify_counts_as_invalid_exactly_what_the_migration_rejects(
    docstore_store: Docstore,
) -> None:
    r = docstore_store.redis
    seed_malformed(r)  # 18 rejects, among them a result without its task
    r.hset(b"task:\xff", mapping={"filename": "f", "s3_key": "k", "status": "done"})
    r.set("result:gone-too", "orphan")
    before = verify(r, docstore_store.db, batch_size=4)
    dry, _ = run(docstore_store, dry_run=True, batch_size=4)
    summary, _ = run(docstore_store, batch_size=4)
    after = verify(r, docstore_store.db, batch_size=4)
    assert summary.rejected == dry.rejected == 20
    assert before.unmigratable == after.unmigratable == summary.rejected
    assert after.ok and (after.checked, after.matching) == (1, 1)


def test_rejects_lines_stay_one_line_whatever_the_key_holds(docstore_store: Docstore) -> None:
    # U+0085, U+2028 and U+2029 end a line for str.splitlines (and JavaScript); JSON leaves
    # them unescaped.
    keys = ["task:a\x85b", "task:c\u2028d", "task:e\u2029f\r\ng"]
    for key in keys:
        docstore_store.redis.hset(key, mapping={"filename": "f", "s3_key": "k", "status": "?"})
    stream = io.StringIO()
    migrate(docstore_store.redis, docstore_store.db, rejects=stream)
    lines = stream.getvalue().splitlines()
    assert sorted(json.loads(line)["key"] for line in lines) == sorted(keys)


def _parser_bug_on(monkeypatch: pytest.MonkeyPatch, status: str, error: BaseException) -> None:
    """Make the record parser raise `error` for tasks with this status (a bug in our parser)."""
    real = legacy_records.parse_status

    def parse_status(value: object) -> str:
        if value == status:
            raise error
        return real(value)

    monkeypatch.setattr(legacy_records, "parse_status", parse_status)


def test_a_record_the_parser_fails_on_is_rejected_with_the_error_and_the_run_goes_on(
    docstore_store: Docstore, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = docstore_store.redis
    for task_id in ("a", "b", "c", "d"):
        r.hset(f"task:{task_id}", mapping={"filename": "f", "s3_key": "k", "status": "done"})
    r.hset("task:bug", mapping={"filename": "f", "s3_key": "k", "status": "trigger"})
    _parser_bug_on(monkeypatch, "trigger", RuntimeError("parser bug"))
    expected = {
        "key": "task:bug",
        "reason": "internal error parsing record: RuntimeError: parser bug",
        "outcome": "rejected",
    }
    dry, dry_lines = run(docstore_store, dry_run=True, batch_size=2)
    assert (dry.migrated, dry.rejected, dry_lines) == (4, 1, [expected])
    summary, lines = run(docstore_store, batch_size=2)
    assert (summary.migrated, summary.rejected, lines) == (4, 1, [expected])
    assert sorted(documents(docstore_store)) == ["a", "b", "c", "d"]
    report = verify(r, docstore_store.db, batch_size=2)
    assert report.ok and (report.checked, report.unmigratable) == (4, 1)


def test_an_interrupt_while_parsing_still_stops_the_run(
    docstore_store: Docstore, monkeypatch: pytest.MonkeyPatch
) -> None:
    docstore_store.redis.hset(
        "task:bug", mapping={"filename": "f", "s3_key": "k", "status": "trigger"}
    )
    _parser_bug_on(monkeypatch, "trigger", KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        migrate(docstore_store.redis, docstore_store.db)
    with pytest.raises(KeyboardInterrupt):
        verify(docstore_store.redis, docstore_store.db)

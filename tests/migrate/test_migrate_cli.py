"""`python -m docstore.migrate`: exit codes, files, and a run killed with SIGKILL then resumed."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from helpers import migrated_table_contents

from docstore import Docstore, Settings
from docstore.migrate import migrate
from docstore.migrate.cli import main
from docstore.migrate.progress import BarProgress, LogProgress
from docstore.migrate.rejects_file import interrupted_of, rejects_file
from docstore.testing import free_port
from docstore.testing.plugin import create_database, drop_database, with_database

GOOD = {"filename": "f.pdf", "s3_key": "k", "status": "done"}


def args_for(settings: Settings, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--database-url", settings.database_url,
        "--redis-url", settings.redis_url,
        "--rejects", str(tmp_path / "rejects.jsonl"),
        "--report", str(tmp_path / "report.json"),
        *extra,
    ]  # fmt: skip


def count_in(summary: str, label: str) -> int:
    """The first count of the summary text with this label."""
    found = re.search(rf"^ *{re.escape(label)} +(\d+)", summary, re.MULTILINE)
    assert found is not None, summary
    return int(found[1])


def run_module(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "docstore.migrate", *args],
        cwd=cwd,  # away from any .env of the checkout
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_module_exits_0_when_everything_migrates_and_writes_its_report(
    docstore_settings: Settings, docstore_redis_url: str, tmp_path: Path
) -> None:
    r = redis.Redis.from_url(docstore_redis_url)
    r.hset("task:1", mapping=GOOD)
    r.set("progress:1", "50")
    proc = run_module(args_for(docstore_settings, tmp_path), tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert (count_in(out, "migrated"), count_in(out, "other keys")) == (1, 1)
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["migrated"], report["skipped"], report["rejected"]) == (1, 1, 0)
    assert report["scanned_keys"] == 2 and report["dry_run"] is False
    assert (tmp_path / "rejects.jsonl").read_text() == ""


def test_exit_1_with_rejects_listed_in_the_rejects_file(
    docstore_settings: Settings,
    docstore_redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    r = redis.Redis.from_url(docstore_redis_url)
    r.hset("task:ok", mapping=GOOD)
    r.hset("task:bad", mapping={**GOOD, "status": "lost"})
    assert main(args_for(docstore_settings, tmp_path)) == 1
    lines = (tmp_path / "rejects.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"key": "task:bad", "reason": "unknown status 'lost'", "outcome": "rejected"}
    ]
    assert count_in(capsys.readouterr().out, "rejected") == 1


def test_dry_run_exits_like_a_run_and_writes_nothing(
    docstore_store: Docstore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docstore_store.redis.hset("task:ok", mapping=GOOD)
    assert main(args_for(docstore_store.settings, tmp_path, "--dry-run")) == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run: nothing written") and count_in(out, "would migrate") == 1
    with docstore_store.db.connection() as conn:
        assert conn.execute("SELECT count(*) FROM documents").fetchone() == (0,)


def test_verify_exits_0_when_all_match_and_1_listing_what_is_missing(
    docstore_store: Docstore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(3):
        docstore_store.redis.hset(f"task:{i}", mapping=GOOD)
    assert main(args_for(docstore_store.settings, tmp_path)) == 0
    assert main(args_for(docstore_store.settings, tmp_path, "--verify")) == 0
    with docstore_store.db.connection() as conn:
        conn.execute("DELETE FROM documents WHERE legacy_task_id = '1'")
    docstore_store.redis.hset("task:new", mapping=GOOD)  # added after the run
    capsys.readouterr()
    assert main(args_for(docstore_store.settings, tmp_path, "--verify")) == 1
    out = capsys.readouterr().out
    assert "missing  task:new\n" in out
    # Deleted in docstore after the migration wrote it: a conflict, not a task never migrated.
    assert "conflict  task:1: deleted in docstore since the migration wrote it\n" in out
    assert "checked 4: 2 match, 1 missing, 0 differ, 1 in conflict" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert (report["missing"], report["conflicts"]) == (1, 1)


def test_timestamps_beyond_datetime_in_utc_are_rejects_and_every_mode_finishes(
    docstore_store: Docstore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    r = docstore_store.redis
    r.hset("task:ok", mapping=GOOD)
    r.hset("task:year0", mapping={**GOOD, "created_at": "0001-01-01T00:00:00+01:00"})
    r.hset("task:year10000", mapping={**GOOD, "completed_at": "9999-12-31T23:30:00-01:00"})
    r.set("task:json-epoch", json.dumps({**GOOD, "started_at": 10**15}))
    # The limits themselves are migrated as they are (PostgreSQL's range is wider).
    r.hset(
        "task:limits",
        mapping={
            **GOOD,
            "created_at": "0001-01-01T00:00:00-01:00",
            "started_at": "-62135596800",
            "completed_at": "9999-12-31T23:59:59.999999Z",
        },
    )
    settings = docstore_store.settings
    assert main(args_for(settings, tmp_path, "--dry-run")) == 1
    assert main(args_for(settings, tmp_path)) == 1
    reasons = {
        line["key"]: line["reason"]
        for line in map(json.loads, (tmp_path / "rejects.jsonl").read_text().splitlines())
    }
    assert reasons == {
        "task:year0": "created_at is out of range (UTC years 1 to 9999): "
        "'0001-01-01T00:00:00+01:00'",
        "task:year10000": "completed_at is out of range (UTC years 1 to 9999): "
        "'9999-12-31T23:30:00-01:00'",
        "task:json-epoch": "started_at is out of range (UTC years 1 to 9999): '1000000000000000'",
    }
    limits = docstore_store.documents.get_by_task_id("limits")
    assert limits is not None
    assert limits.created_at == datetime(1, 1, 1, 1, tzinfo=timezone.utc)
    assert limits.started_at == datetime(1, 1, 1, tzinfo=timezone.utc)
    assert limits.completed_at == datetime.max.replace(tzinfo=timezone.utc)
    capsys.readouterr()
    assert main(args_for(settings, tmp_path, "--verify")) == 0
    assert (
        "checked 2: 2 match, 0 missing, 0 differ, 0 in conflict, 0 kept as docstore has them; "
        "3 rejected: invalid in Redis, as a migration run lists them (0 of them migrated before)"
        in capsys.readouterr().out
    )


@pytest.mark.parametrize("mode", [[], ["--dry-run"], ["--verify"]])
def test_a_database_without_the_schema_is_a_one_line_error_naming_schema_apply(
    docstore_empty_database_url: str,
    docstore_redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    mode: list[str],
) -> None:
    redis.Redis.from_url(docstore_redis_url).hset("task:1", mapping=GOOD)
    settings = Settings.model_validate(
        {"DATABASE_URL": docstore_empty_database_url, "REDIS_URL": docstore_redis_url}
    )
    assert main(args_for(settings, tmp_path, *mode)) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: the docstore schema is not applied to this database (missing: users, documents, "
        "legacy_migrations): run `python -m docstore schema apply` first"
    ], err
    assert "Traceback" not in err


def test_a_schema_without_legacy_task_id_names_the_missing_column(
    docstore_store: Docstore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with docstore_store.db.connection() as conn:
        conn.execute("ALTER TABLE documents DROP COLUMN legacy_task_id")
    docstore_store.redis.hset("task:1", mapping=GOOD)
    assert main(args_for(docstore_store.settings, tmp_path)) == 2
    err = capsys.readouterr().err
    assert "(missing: documents.legacy_task_id)" in err
    assert "run `python -m docstore schema apply` first" in err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"redis": "unreachable"}, "error: Redis at 127.0.0.1:"),
        ({"database": "unreachable"}, "error: PostgreSQL at 127.0.0.1:"),
        ({"extra": ["--prefix", "result:"]}, "error: prefix must be non-empty"),
    ],
)
def test_exit_2_with_a_clear_message_on_usage_or_connection_errors(
    docstore_settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, Any],
    message: str,
) -> None:
    args = args_for(docstore_settings, tmp_path, *change.get("extra", []))
    if "redis" in change:
        args[args.index("--redis-url") + 1] = f"redis://127.0.0.1:{free_port()}/0"
    if "database" in change:
        url = f"postgresql://nobody@127.0.0.1:{free_port()}/nothing"
        args[args.index("--database-url") + 1] = url
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message), err
    assert "Traceback" not in err


def test_argparse_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--batch-size", "many"])
    assert exited.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


# --- crash safety ---------------------------------------------------------------------------

TASKS = 600
BATCH = 20
BLOCKER = "blocker@example.com"


def seed_for_crash(r: redis.Redis) -> None:
    """TASKS tasks with results; every task in the second half of SCAN order is the blocker's."""
    pipe = r.pipeline(transaction=False)
    for i in range(TASKS):
        pipe.hset(
            f"task:t{i}",
            mapping={**GOOD, "filename": f"f{i}.pdf", "created_at": str(1_700_000_000 + i),
                     "page_count": str(i % 7), "user_email": f"user{i % 5}@example.com"},
        )  # fmt: skip
        pipe.set(f"result:t{i}", f"text of task {i} " * 20)
    pipe.hset("task:broken", mapping={"filename": "x"})
    pipe.execute()
    # The migration reads tasks in SCAN order; nothing is added from here on, so that order
    # stays. Tasks late in it belong to a user the test keeps locked: the run blocks there,
    # with the first batches committed.
    order = [key for key in r.scan_iter(count=BATCH) if key.startswith(b"task:t")]
    for key in order[len(order) // 2 :]:
        r.hset(key, "user_email", BLOCKER)


# A session of the run waits for the test's uncommitted blocker user (not, say, for a relation
# extension lock the two writers take turns on).
BLOCKED_BY = "SELECT count(*) > 0 FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))"
NO_OTHER_SESSIONS = (
    "SELECT count(*) = 0 FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
)


def wait_for(admin: psycopg.Connection[Any], condition: str, param: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = admin.execute(condition, [param]).fetchone()  # type: ignore[call-overload]
        if row and row[0]:
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for: {condition}")


@pytest.fixture
def clean_run_database(
    docstore_postgres_url: str, docstore_template_database: str
) -> Iterator[str]:
    name = create_database(docstore_postgres_url, docstore_template_database)
    yield with_database(docstore_postgres_url, name)
    drop_database(docstore_postgres_url, name)


@pytest.mark.slow
def test_a_run_killed_mid_batch_then_run_again_equals_one_clean_run(
    docstore_settings: Settings, clean_run_database: str, tmp_path: Path
) -> None:
    url = docstore_settings.database_url
    r = redis.Redis.from_url(docstore_settings.redis_url)
    seed_for_crash(r)
    args = args_for(docstore_settings, tmp_path, "--batch-size", str(BATCH))
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as admin:
        with psycopg.connect(url) as blocker:
            blocker.execute("INSERT INTO users (email) VALUES (%s)", [BLOCKER])  # not committed
            proc = run_module(args, tmp_path)
            try:
                wait_for(admin, BLOCKED_BY, blocker.info.backend_pid, timeout=60)
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
            blocker.rollback()
        # The killed run's sessions end once they find their client gone.
        wait_for(admin, NO_OTHER_SESSIONS, dbname, timeout=30)
        committed = admin.execute("SELECT count(*) FROM documents").fetchone()
    assert proc.returncode == -signal.SIGKILL
    assert committed is not None
    assert 0 < committed[0] < TASKS  # the kill landed mid-run

    rerun = run_module(args, tmp_path)
    _, err = rerun.communicate(timeout=60)
    assert rerun.returncode == 1, err  # task:broken
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["already_present"] == committed[0]
    assert report["migrated"] == TASKS - committed[0]

    clean_settings = Settings.model_validate(
        {"DATABASE_URL": clean_run_database, "REDIS_URL": docstore_settings.redis_url}
    )
    with Docstore.connect(clean_settings) as clean:
        summary = migrate(r, clean.db, batch_size=BATCH)
    assert summary.migrated == TASKS
    resumed = migrated_table_contents(url)
    assert len(resumed[0]) == TASKS
    assert resumed == migrated_table_contents(clean_run_database)
    assert os.path.getsize(tmp_path / "rejects.jsonl") > 0


def test_progress_is_a_bar_on_a_terminal_and_log_lines_otherwise(
    docstore_store: Docstore, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(5):
        docstore_store.redis.hset(f"task:{i}", mapping=GOOD)
    stream = io.StringIO()
    bar = BarProgress(stream)
    migrate(docstore_store.redis, docstore_store.db, batch_size=2, progress=bar)
    bar.close()
    assert "5/5" in stream.getvalue() and "migrated=5" in stream.getvalue()
    with caplog.at_level(logging.INFO, logger="docstore.migrate"):
        migrate(docstore_store.redis, docstore_store.db, progress=LogProgress(interval=0))
    assert "scanned 5/5 keys: migrated 0, already present 5, rejected 0" in caplog.text


@pytest.mark.parametrize(
    ("extra", "said"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--writers", "100000"], "--writers"),
        (["--writers", "0"], "--writers"),
        (["--report", "/no/such/folder/report.json"], "--report"),
        # Each of these was taken: the rejects folder after connecting (naming a temporary
        # file), the two others silently ignored.
        (["--rejects", "/no/such/folder/rejects.jsonl"], "--rejects"),
        (["--verify", "--dry-run"], "--dry-run"),
        (["--yes-destroy-data"], "--yes-destroy-data confirms --take-legacy"),
        # Taken before: "--y" as the confirmation (argparse's abbreviations), a folder as the
        # rejects file (renamed aside at the end) or the report (refused after the run), and
        # an empty rejects path (a traceback).
        (["--take-legacy", "t1", "--y"], "unrecognized arguments: --y"),
        (["--rejects", "."], "is not a file"),
        (["--report", "."], "is not a file"),
        (["--rejects", ""], "needs a file name"),
        # A pydantic traceback (exit 1) after connecting both servers, before.
        (["--cache-redis-url", "http://x"], "--cache-redis-url: the URL must start with redis://"),
        (["--cache-redis-url", "redis://127.0.0.1:99999/0"], "--cache-redis-url: the URL's port"),
    ],
)
def test_bad_options_are_refused_before_the_last_rejects_file_is_emptied(
    docstore_settings: Settings,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    said: str,
) -> None:
    # Each was found after connecting and emptying the last run's rejects file (or, for the
    # report, after the whole run); 100,000 writers meant as many threads and connections.
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text('{"task_id": "from the last run"}\n')
    args = [a for a in args_for(docstore_settings, tmp_path) if a]
    args = args[: args.index("--report")] + extra if "--report" in extra else args + extra
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    assert said in capsys.readouterr().err
    assert rejects.read_text() == '{"task_id": "from the last run"}\n'


def test_the_rejects_file_is_replaced_only_by_a_finished_run_and_the_last_list_is_kept(
    docstore_settings: Settings,
    docstore_redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # It is the only list of what a run sanitized or rejected: a run refused after it
    # connected (a prefix it cannot take) emptied it, and so did a dry run or a re-run
    # that had nothing new to list.
    r = redis.Redis.from_url(docstore_redis_url)
    r.hset("task:nul", mapping={**GOOD, "filename": "a\x00b.pdf"})
    r.hset("task:ok", mapping=GOOD)
    rejects, previous = tmp_path / "rejects.jsonl", tmp_path / "rejects.jsonl.previous"
    assert main(args_for(docstore_settings, tmp_path)) == 0
    listed = rejects.read_text()
    assert '"task:nul"' in listed and '"sanitized"' in listed
    assert main(args_for(docstore_settings, tmp_path, "--prefix", "result:")) == 2
    assert rejects.read_text() == listed
    # A dry run lists beside the last real run's list, by default.
    monkeypatch.chdir(tmp_path)
    dry_run = args_for(docstore_settings, tmp_path, "--dry-run")
    del dry_run[dry_run.index("--rejects") : dry_run.index("--rejects") + 2]
    assert main(dry_run) == 0
    assert (tmp_path / "migrate-rejects.dry-run.jsonl").read_text() == ""  # all unchanged
    assert rejects.read_text() == listed and not (tmp_path / "migrate-rejects.jsonl").exists()
    assert main(args_for(docstore_settings, tmp_path)) == 0  # nothing new: an empty list
    assert rejects.read_text() == "" and previous.read_text() == listed
    assert f"kept in {previous}" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.partial"))


def test_what_an_interrupted_run_listed_is_kept_beside_the_last_list(tmp_path: Path) -> None:
    # Its committed batches are not read again by the next run, so their sanitized records
    # were listed nowhere once the interrupted run's file was deleted.
    rejects = tmp_path / "rejects.jsonl"
    rejects.write_text('{"key": "from the last run"}\n')
    with pytest.raises(KeyboardInterrupt), rejects_file(rejects) as listing:
        listing.write('{"key": "task:1", "outcome": "sanitized"}\n')
        raise KeyboardInterrupt
    assert rejects.read_text() == '{"key": "from the last run"}\n'
    assert interrupted_of(rejects).read_text() == '{"key": "task:1", "outcome": "sanitized"}\n'
    with pytest.raises(KeyboardInterrupt), rejects_file(rejects) as listing:
        listing.write('{"key": "task:2", "outcome": "sanitized"}\n')
        raise KeyboardInterrupt  # a second interrupted run: the first one's list stays
    assert interrupted_of(rejects).read_text().splitlines() == [
        '{"key": "task:1", "outcome": "sanitized"}',
        '{"key": "task:2", "outcome": "sanitized"}',
    ]
    with pytest.raises(RuntimeError), rejects_file(tmp_path / "empty.jsonl"):
        raise RuntimeError("refused before anything was listed")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "rejects.jsonl",
        "rejects.jsonl.interrupted",
    ]


def test_verify_into_a_reader_that_stops_early_ends_with_one_line(
    docstore_settings: Settings, docstore_redis_url: str, tmp_path: Path
) -> None:
    # `--verify | head -1`: "error: Broken pipe:", then Python's own complaint at exit.
    r = redis.Redis.from_url(docstore_redis_url)
    with r.pipeline() as pipe:
        for i in range(3000):  # never migrated: one "missing" line each
            pipe.hset(f"task:{i}", mapping=GOOD)
        pipe.execute()
    verify_run = subprocess.Popen(
        [sys.executable, "-m", "docstore.migrate", "--verify",
         *args_for(docstore_settings, tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )  # fmt: skip
    assert verify_run.stdout is not None and verify_run.stderr is not None
    verify_run.stdout.readline()
    verify_run.stdout.close()
    err = verify_run.stderr.read().decode()
    assert verify_run.wait(timeout=60) == 2, err
    assert "broken pipe" in err and "Exception ignored" not in err and "Traceback" not in err

"""`python -m docstore.migrate` killed with SIGKILL at five points of a run, each followed by a
re-run: every time the result is exactly that of one clean run.

The kill is made deterministic by a transaction of the test that holds, uncommitted, the
legacy task ids of the first tasks of batches k and k+1: the run commits batches 0..k-1, then
both of its writers wait on those rows inside their open transactions, and it is killed there.
The test waits for exactly that state: batches 0..k-1 committed, seen from another connection,
and both writers waiting on the held rows.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from helpers import migrated_table_contents

from docstore import Docstore, Settings
from docstore.migrate import migrate
from docstore.migrate.cli import main
from docstore.migrate.redis_reader import read_batches
from docstore.testing.plugin import create_database, drop_database, with_database

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TASKS = 300
BATCH = 25
BLOCKER = "kill-point@example.com"


def seed(r: redis.Redis) -> None:
    """TASKS migratable tasks of many shapes, plus records that are rejected or skipped."""
    pipe = r.pipeline(transaction=False)
    statuses = ["done", "error", "queued", "running", "COMPLETED", "failed"]
    for i in range(TASKS):
        task: dict[Any, Any] = {
            "filename": f"file {i}.pdf",
            "s3_key": f"uploads/{i}.pdf",
            "status": statuses[i % len(statuses)],
            "created_at": str(1_700_000_000 + i * 60),
        }
        if i % 4:
            task["user_email"] = f"User{i % 6}@Example.com"  # users found case-insensitively
        if i % 6 == 1:
            task["error"] = f"error {i}"
        if i % 5 == 0:
            task["completed_at"] = f"2024-01-{1 + i % 28:02d}T10:00:00+02:00"
        if i == 7:
            task["filename"] = "nul\x00in name.pdf"  # sanitized, still migrated
        if i % 7 == 3:
            pipe.set(f"task:t{i}", json.dumps(task))  # a JSON string instead of a hash
        else:
            pipe.hset(f"task:t{i}", mapping=task)
        if i % 3 == 0:
            pipe.set(f"result:t{i}", json.dumps({"text": f"result {i} " * 30, "page_count": 2}))
        elif i % 3 == 1:
            pipe.set(f"result:t{i}", f"raw extracted text of task {i} invoice report")
    pipe.hset("task:broken", mapping={"filename": "x.pdf", "status": "done"})  # no s3_key
    pipe.hset("task:odd", mapping={"filename": "y.pdf", "s3_key": "k", "status": "lost"})
    pipe.set("result:orphan", "no task for this one")
    pipe.set("progress:t1", "50")
    pipe.execute()


def wait_for(
    admin: psycopg.Connection[Any], query: str, params: dict[str, Any], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = admin.execute(query, params).fetchone()
        if row and row[0]:
            return
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for: {query} {params}")


# This many sessions wait for the test's uncommitted rows, directly or through a session that
# does (batch k+1 may wait for a user batch k created).
BLOCKED_SESSIONS = """
WITH RECURSIVE waiting (pid) AS (
    SELECT pid FROM pg_stat_activity WHERE %(blocker)s = ANY(pg_blocking_pids(pid))
    UNION
    SELECT a.pid
    FROM pg_stat_activity AS a
    JOIN waiting AS w ON w.pid = ANY(pg_blocking_pids(a.pid))
)
SELECT count(*) = %(sessions)s FROM waiting
"""
# Exactly these task ids are committed.
COMMITTED_EXACTLY = """
SELECT count(*) = cardinality(%(task_ids)s::text[])
    AND count(*) FILTER (WHERE legacy_task_id = ANY(%(task_ids)s::text[])) = count(*)
FROM documents
"""
NO_OTHER_SESSIONS = (
    "SELECT count(*) = 0 FROM pg_stat_activity"
    " WHERE datname = %(dbname)s AND pid <> pg_backend_pid()"
)


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    """The task ids of one batch the run will write, and the emails of their owners."""

    task_ids: tuple[str, ...]
    emails: frozenset[str]


def planned_batches(r: redis.Redis) -> list[PlannedBatch]:
    """The batches the run will write, in its order."""
    return [
        PlannedBatch(
            tuple(doc.task_id for doc in batch.documents),
            frozenset(doc.user_email for doc in batch.documents),
        )
        for batch in read_batches(r, b"task:", BATCH)
        if batch.documents
    ]


def stable_batches(r: redis.Redis) -> list[PlannedBatch]:
    """The planned batches once SCAN order has settled: after many writes Redis may still be
    rehashing its key table (a step at a time), which reorders SCAN until it is done."""
    previous = planned_batches(r)
    for _ in range(50):
        time.sleep(0.1)
        current = planned_batches(r)
        if current == previous:
            return current
        previous = current
    pytest.fail("SCAN order of the seeded keys did not settle")


def may_wait_for_held_batch(batches: list[PlannedBatch], k: int) -> bool:
    """Whether batch k-1 may wait forever for batch k once batch k is held.

    The two writers run batches k-1 and k side by side. A user both need that no earlier
    batch created is inserted by whichever comes first; if that is batch k, batch k-1 waits
    for batch k's transaction, which waits for the test.
    """
    if k == 0:
        return False
    created_before = frozenset().union(*(batch.emails for batch in batches[: k - 1]))
    return bool((batches[k - 1].emails & batches[k].emails) - created_before)


def kill_points(batches: list[PlannedBatch]) -> list[int]:
    """Five points spread over the run (after 0, 2, n/3, 2n/3 and n-2 committed batches),
    each moved to the next batch where batch k-1 can commit while batch k is held."""
    n = len(batches)
    points: list[int] = []
    for wanted in (0, 2, n // 3, 2 * n // 3, n - 2):
        k = max(wanted, points[-1] + 1 if points else 0)
        while may_wait_for_held_batch(batches, k):
            k += 1
        points.append(k)
    assert points[-1] + 1 < n, f"no kill point near the end of the run: {points}"
    return points


@pytest.fixture
def databases(docstore_postgres_url: str, docstore_template_database: str) -> Iterator[list[str]]:
    """Six fresh databases with the schema: one clean run, five killed and resumed runs."""
    names = [create_database(docstore_postgres_url, docstore_template_database) for _ in range(6)]
    yield [with_database(docstore_postgres_url, name) for name in names]
    for name in names:
        drop_database(docstore_postgres_url, name)


def kill_while_held(
    url: str,
    redis_url: str,
    tmp_path: Path,
    hold: Callable[[psycopg.Connection[Any]], int],
    committed: tuple[str, dict[str, Any]],
) -> None:
    """Start the CLI while `hold` keeps rows locked in an open transaction of the test (it
    returns how many of the run's sessions will wait on them); once the `committed` query
    holds and that many sessions wait, SIGKILL the run."""
    args = [
        sys.executable, "-m", "docstore.migrate",
        "--database-url", url, "--redis-url", redis_url, "--batch-size", str(BATCH),
        "--rejects", str(tmp_path / "killed-rejects.jsonl"),
    ]  # fmt: skip
    dbname = url.rsplit("/", 1)[1]
    with psycopg.connect(url, autocommit=True) as admin:
        with psycopg.connect(url) as blocker:
            sessions = hold(blocker)  # not committed
            proc = subprocess.Popen(
                args,
                cwd=tmp_path,  # away from any .env of the checkout
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                # Nothing else can commit while the test holds batches k and k+1: the run
                # starts batch k+2 only once batch k is done.
                wait_for(admin, committed[0], committed[1], 60)
                wait_for(
                    admin,
                    BLOCKED_SESSIONS,
                    {"blocker": blocker.info.backend_pid, "sessions": sessions},
                    60,
                )
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(timeout=10)
            assert proc.returncode == -signal.SIGKILL
            blocker.rollback()
        # The killed run's sessions end once they find their client gone.
        wait_for(admin, NO_OTHER_SESSIONS, {"dbname": dbname}, timeout=30)


def kill_after_batches(
    url: str, redis_url: str, batches: list[PlannedBatch], k: int, tmp_path: Path
) -> set[str]:
    """Start the CLI, let it commit batches 0..k-1, SIGKILL it while both of its writers wait
    inside their transactions; return the task ids it committed."""
    held = [batch.task_ids[0] for batch in batches[k : k + 2]]  # both writers stop on these
    committed = [task_id for batch in batches[:k] for task_id in batch.task_ids]

    def hold(blocker: psycopg.Connection[Any]) -> int:
        user_id = blocker.execute(
            "INSERT INTO users (email) VALUES (%s) RETURNING id", [BLOCKER]
        ).fetchone()
        assert user_id is not None
        for task_id in held:
            blocker.execute(
                "INSERT INTO documents (user_id, filename, s3_key, legacy_task_id)"
                " VALUES (%s, 'held.pdf', 'held', %s)",
                [user_id[0], task_id],
            )
        return len(held)

    kill_while_held(url, redis_url, tmp_path, hold, (COMMITTED_EXACTLY, {"task_ids": committed}))
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT legacy_task_id FROM documents").fetchall()
    return {row[0] for row in rows}


def test_killed_at_five_points_then_rerun_equals_one_clean_run(
    docstore_redis_url: str, databases: list[str], tmp_path: Path
) -> None:
    r = redis.Redis.from_url(docstore_redis_url)
    seed(r)
    batches = stable_batches(r)
    assert sum(len(batch.task_ids) for batch in batches) == TASKS
    points = kill_points(batches)  # never 1: batches 0 and 1 both create the users

    clean_url, *killed_urls = databases
    settings = Settings.model_validate({"DATABASE_URL": clean_url, "REDIS_URL": docstore_redis_url})
    with Docstore.connect(settings) as clean:
        summary = migrate(r, clean.db, batch_size=BATCH)
    assert (summary.migrated, summary.rejected, summary.sanitized) == (TASKS, 3, 1)
    expected = migrated_table_contents(clean_url)
    assert len(expected[0]) == TASKS

    for k, url in zip(points, killed_urls, strict=True):
        assert planned_batches(r) == batches  # the run will write these batches
        committed_ids = kill_after_batches(url, docstore_redis_url, batches, k, tmp_path)
        expected_ids = {task_id for batch in batches[:k] for task_id in batch.task_ids}
        assert committed_ids == expected_ids, f"kill point {k}"
        committed = len(committed_ids)
        report = tmp_path / f"rerun-{k}.json"
        code = main(
            [
                "--database-url", url, "--redis-url", docstore_redis_url,
                "--batch-size", str(BATCH), "--rejects", str(tmp_path / f"rejects-{k}.jsonl"),
                "--report", str(report),
            ]
        )  # fmt: skip
        assert code == 1  # the three rejects
        rerun = json.loads(report.read_text())
        assert (rerun["already_present"], rerun["migrated"]) == (committed, TASKS - committed)
        assert migrated_table_contents(url) == expected, f"kill point {k}"


# Exactly these task ids hold the text the catch-up brings.
CAUGHT_UP_EXACTLY = """
SELECT count(*) = cardinality(%(task_ids)s::text[])
    AND count(*) FILTER (WHERE legacy_task_id = ANY(%(task_ids)s::text[])) = count(*)
FROM documents
WHERE result_text LIKE 'caught up %%'
"""
NEW_TASKS = 30


def work_of_the_cutover_window(r: redis.Redis) -> tuple[set[str], set[str]]:
    """What the legacy service does after the first run: a third of the tasks finish (their
    result text starts with 'caught up'), new ones arrive (done already); (changed, new) ids."""
    changed: set[str] = set()
    pipe = r.pipeline(transaction=False)
    for i in range(0, TASKS, 3):
        if i % 7 == 3:
            continue  # stored as JSON strings: left as they are
        pipe.hset(f"task:t{i}", mapping={"status": "done", "completed_at": "2024-02-01T00:00:00Z"})
        pipe.set(f"result:t{i}", f"caught up {i}")
        changed.add(f"t{i}")
    for i in range(TASKS, TASKS + NEW_TASKS):
        task = {
            "filename": f"new {i}.pdf",
            "s3_key": f"uploads/{i}.pdf",
            "status": "done",
            "created_at": str(1_700_000_000 + i * 60),
            "user_email": f"user{i % 6}@example.com",  # no user to create: no wait between batches
        }
        pipe.hset(f"task:t{i}", mapping=task)
        pipe.set(f"result:t{i}", f"caught up {i}")
    pipe.execute()
    return changed, {f"t{i}" for i in range(TASKS, TASKS + NEW_TASKS)}


def ledger_state(url: str) -> tuple[list[tuple[Any, ...]], int]:
    """The recorded digest of every task, and how many records do not match their document."""
    with psycopg.connect(url) as conn:
        digests = conn.execute(
            "SELECT legacy_task_id, source_md5 FROM legacy_migrations ORDER BY 1"
        ).fetchall()
        stale = conn.execute(
            "SELECT count(*) FROM legacy_migrations AS l"
            " LEFT JOIN documents AS d ON d.legacy_task_id = l.legacy_task_id"
            " WHERE legacy_document_fingerprint(d) IS DISTINCT FROM l.written_md5"
        ).fetchone()
    assert stale is not None
    return digests, int(stale[0])


# Four early runs, one clean catch-up and three killed ones: more than the file's default.
@pytest.mark.timeout(240)
def test_a_catch_up_run_killed_at_three_points_then_rerun_equals_one_clean_catch_up(
    docstore_redis_url: str, databases: list[str], tmp_path: Path
) -> None:
    r = redis.Redis.from_url(docstore_redis_url)
    seed(r)
    urls = databases[:4]
    for url in urls:  # the early run, on every database
        with Docstore.connect(Settings.model_validate({"DATABASE_URL": url})) as store:
            assert migrate(r, store.db, batch_size=BATCH).migrated == TASKS
    changed, new = work_of_the_cutover_window(r)
    batches = stable_batches(r)
    clean_url, *killed_urls = urls
    with Docstore.connect(Settings.model_validate({"DATABASE_URL": clean_url})) as clean:
        summary = migrate(r, clean.db, batch_size=BATCH)
    assert (summary.migrated, summary.updated, summary.conflicts) == (NEW_TASKS, len(changed), 0)
    expected, expected_ledger = migrated_table_contents(clean_url), ledger_state(clean_url)
    assert expected_ledger[1] == 0

    # Kill points: first, middle and last pair of batches that both hold a changed task (SCAN's
    # order, and so what each batch holds, differs from one Redis server to the next).
    pairs = [
        i
        for i in range(len(batches) - 1)
        if all(any(t in changed for t in b.task_ids) for b in batches[i : i + 2])
    ]
    for k, url in zip((pairs[0], pairs[len(pairs) // 2], pairs[-1]), killed_urls, strict=True):
        assert planned_batches(r) == batches
        # Both writers stop on the document of the first changed task of batches k and k+1.
        held = [next(t for t in batch.task_ids if t in changed) for batch in batches[k : k + 2]]
        done = [t for batch in batches[:k] for t in batch.task_ids if t in changed | new]

        def hold(blocker: psycopg.Connection[Any], held: list[str] = held) -> int:
            blocker.execute(
                "SELECT 1 FROM documents WHERE legacy_task_id = ANY(%s) FOR UPDATE", [held]
            )
            return len(held)

        kill_while_held(
            url, docstore_redis_url, tmp_path, hold, (CAUGHT_UP_EXACTLY, {"task_ids": done})
        )
        report = tmp_path / f"catch-up-{k}.json"
        code = main(
            [
                "--database-url", url, "--redis-url", docstore_redis_url,
                "--batch-size", str(BATCH), "--rejects", str(tmp_path / f"rejects-{k}.jsonl"),
                "--report", str(report),
            ]
        )  # fmt: skip
        assert code == 1  # the three rejects
        rerun = json.loads(report.read_text())
        assert rerun["updated"] + rerun["migrated"] == len(changed) + NEW_TASKS - len(done)
        assert rerun["conflicts"] == 0, f"kill point {k}"
        assert migrated_table_contents(url) == expected, f"kill point {k}"
        assert ledger_state(url) == expected_ledger, f"kill point {k}"

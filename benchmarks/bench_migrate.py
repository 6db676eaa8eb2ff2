"""Benchmark `docstore.migrate` against a naive per-key script and the floors of the same run.

    python benchmarks/bench_migrate.py                 # 100,000 tasks, then 300,000 for memory
    python benchmarks/bench_migrate.py --tasks 20000 --large 0 --naive 2000   # quick look

Seeds legacy tasks (hashes, ~2 KB JSON results) into a throwaway Redis and measures, each on a
fresh database of a throwaway PostgreSQL (fsync off, like the tests):

- floor "read": pipelined HGETALL of every task key alone (batches of 1,000), and the same with
  the GET of each result, which the migration also needs;
- floor "write": COPY of the same rows straight into `documents` alone (1,000 rows a commit);
- docstore's migration (`migrate()`, in a child process for its own peak RSS, VmHWM),
  with the hiredis reply parser when installed and with redis-py's pure-Python parser;
- the naive script (HGETALL and GET per key, SELECT for a duplicate, one INSERT and commit per
  row) on a subset (`--naive`), its rate extrapolated to the whole run.

Then the migration again on `--large` tasks: its peak RSS must stay the same. Set
BENCH_DATABASE_URL (admin URL, may create databases) and BENCH_REDIS_URL to use running servers
(the Redis database is flushed).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import redis
from redis._parsers import _RESP2Parser

from docstore import Docstore, Settings
from docstore.migrate.redis_reader import read_batches
from docstore.postgres.schema import apply_schema
from docstore.testing import LocalPostgres, LocalRedis
from docstore.testing.plugin import create_database, with_database

USERS = 100
COPY_DOCUMENTS = (
    "COPY documents (user_id, filename, s3_key, status, result_text, error_message, page_count,"
    " extraction_time_seconds, created_at, started_at, completed_at, legacy_task_id) FROM STDIN"
)
BATCH = 1000
T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
STATUSES = ["completed", "done", "failed", "PENDING", "running"]
_LETTERS = "abcdefghijklmnopqrstuvwxyz"
WORDS = ["".join(random.Random(n).choices(_LETTERS, k=2 + n % 9)) for n in range(5000)]
# Word frequencies fall off like a natural language's (Zipf): few distinct lexemes per text.
WEIGHTS = [1 / (rank + 1) for rank in range(len(WORDS))]


def result_text(i: int) -> str:
    rng = random.Random(i % 2000)
    text = f"task {i}"
    while len(text) < 2000:
        text += " " + " ".join(rng.choices(WORDS, WEIGHTS, k=50))
    return text[:2000]


def task_fields(i: int) -> dict[str, Any]:
    created = T0 + timedelta(seconds=i)
    return {
        "filename": f"scan-{i}.pdf",
        "s3_key": f"uploads/{i:08d}/scan-{i}.pdf",
        "status": STATUSES[i % len(STATUSES)],
        "created_at": created.isoformat(),
        "started_at": str((created + timedelta(seconds=1)).timestamp()),
        "completed_at": (created + timedelta(seconds=3)).isoformat(),
        "page_count": str(1 + i % 40),
        "extraction_time": str(0.5 + (i % 100) / 10),
        "user_email": f"user{i % USERS}@example.com",
    }


def seed(r: redis.Redis, count: int) -> None:
    r.flushdb()
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        pipe.hset(f"task:{i}", mapping=task_fields(i))
        pipe.set(f"result:{i}", json.dumps({"text": result_text(i), "page_count": 1}))
        pipe.set(f"progress:{i}", "100")
        if i % BATCH == BATCH - 1:
            pipe.execute()
    pipe.execute()


def fresh_database(admin_url: str) -> str:
    url = with_database(admin_url, create_database(admin_url))
    apply_schema(Settings.model_validate({"DATABASE_URL": url}))
    return url


def floor_read(r: redis.Redis, with_results: bool) -> float:
    """Pipelined HGETALL (and GET of the result) of every task key, 1,000 a round trip."""
    started = time.perf_counter()
    count = 0
    batch: list[bytes] = []

    def flush() -> None:
        pipe = r.pipeline(transaction=False)
        for key in batch:
            pipe.hgetall(key)
            if with_results:
                pipe.get(b"result:" + key[5:])
        pipe.execute()
        batch.clear()

    for key in r.scan_iter(match="task:*", count=BATCH):
        batch.append(key)
        count += 1
        if len(batch) == BATCH:
            flush()
    flush()
    return count / (time.perf_counter() - started)


def floor_copy(url: str, count: int, connections: int = 1) -> float:
    """COPY the rows straight into `documents`, 1,000 a commit, on `connections` connections."""
    with psycopg.connect(url) as conn:
        ids = {}
        for n in range(USERS):
            email = f"user{n}@example.com"
            ids[email] = conn.execute(
                "INSERT INTO users (email) VALUES (%s) RETURNING id", [email]
            ).fetchone()[0]  # type: ignore[index]
    rows = []
    for i in range(count):
        f = task_fields(i)
        created = T0 + timedelta(seconds=i)
        rows.append((ids[f["user_email"]], f["filename"], f["s3_key"], "COMPLETED",
                     result_text(i), None, int(f["page_count"]), float(f["extraction_time"]),
                     created, created + timedelta(seconds=1), created + timedelta(seconds=3),
                     str(i)))  # fmt: skip
    starts = list(range(0, count, BATCH))

    def copy_batches(mine: list[int]) -> None:
        with psycopg.connect(url) as conn:
            for start in mine:
                with (
                    conn.cursor() as cur,
                    cur.copy(COPY_DOCUMENTS) as copy,
                ):
                    for row in rows[start : start + BATCH]:
                        copy.write_row(row)
                conn.commit()

    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(copy_batches, [starts[k::connections] for k in range(connections)]))
    return count / (time.perf_counter() - started)


def reader_alone(redis_url: str, pure_python_parser: bool) -> float:
    """docstore's reader (SCAN, pipelined reads, parsing) without writing anything."""
    options: dict[str, Any] = {"socket_timeout": 60}
    if pure_python_parser:
        options["parser_class"] = _RESP2Parser
    r = redis.Redis.from_url(redis_url, **options)
    started = time.perf_counter()
    count = sum(len(batch.documents) for batch in read_batches(r, b"task:", BATCH))
    return count / (time.perf_counter() - started)


def naive(r: redis.Redis, url: str, sample: int) -> float:
    """What a first script does: one key at a time, a duplicate check, one INSERT per row."""
    started = time.perf_counter()
    done = 0
    with psycopg.connect(url, autocommit=True) as conn:
        for key in r.scan_iter(match="task:*"):
            task = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
            task_id = key.decode()[5:]
            raw = r.get(f"result:{task_id}")
            text = json.loads(raw)["text"] if raw else None
            if conn.execute(
                "SELECT 1 FROM documents WHERE legacy_task_id = %s", [task_id]
            ).fetchone():
                continue
            conn.execute(
                "INSERT INTO users (email) VALUES (%s) ON CONFLICT ((lower(email))) DO NOTHING",
                [task["user_email"]],
            )
            conn.execute(
                "INSERT INTO documents (user_id, filename, s3_key, status, result_text,"
                " page_count, extraction_time_seconds, created_at, legacy_task_id)"
                " SELECT id, %s, %s, 'COMPLETED', %s, %s, %s, %s, %s FROM users"
                " WHERE lower(email) = lower(%s)",
                [task["filename"], task["s3_key"], text, int(task["page_count"]),
                 float(task["extraction_time"]), task["created_at"], task_id,
                 task["user_email"]],
            )  # fmt: skip
            done += 1
            if done == sample:
                break
    return done / (time.perf_counter() - started)


def peak_rss_kb() -> int:
    """This process's peak RSS (VmHWM: unlike ru_maxrss, not inherited from the parent at fork)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(args: argparse.Namespace) -> None:
    """Run the migration in this process and print its rate and this process's peak RSS."""
    from docstore.migrate import migrate

    options: dict[str, Any] = {"socket_timeout": 60}
    if args.pure_python_parser:
        options["parser_class"] = _RESP2Parser
    source = redis.Redis.from_url(args.redis_url, **options)
    settings = Settings.model_validate(
        {
            "DATABASE_URL": args.database_url,
            "pool_min_size": 1,
            "pool_max_overflow": 4,
            "statement_timeout_ms": 0,
        }
    )
    with Docstore.connect(settings, redis_client=source) as store:
        summary = migrate(source, store.db, batch_size=args.batch_size, writers=args.writers)
    peak_kb = peak_rss_kb()
    print(json.dumps({"rows_per_s": summary.rows_per_second, "migrated": summary.migrated,
                      "peak_rss_mb": peak_kb / 1024}))  # fmt: skip


def run_child(redis_url: str, url: str, *extra: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "child", "--redis-url", redis_url, "--database-url", url,
         *extra],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return dict(json.loads(out.splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "child"])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--large", type=int, default=300_000, help="0 skips the memory run")
    parser.add_argument("--naive", type=int, default=10_000, help="tasks the naive script runs")
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--pure-python-parser", action="store_true")
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL as in the tests")
    args = parser.parse_args()
    if args.mode == "child":
        child(args)
        return
    with ExitStack() as stack:
        admin = os.environ.get("BENCH_DATABASE_URL")
        redis_url = os.environ.get("BENCH_REDIS_URL")
        if not admin:
            # Durable by default (fsync and synchronous commit on, like production): a commit
            # per row costs what it costs there. --no-fsync matches the test servers.
            base = None if args.no_fsync else stack.enter_context(tempfile.TemporaryDirectory())
            pg = LocalPostgres(base_dir=base)
            stack.callback(pg.close)
            pg.start()
            admin = pg.url
        if not redis_url:
            rs = LocalRedis()
            stack.callback(rs.close)
            rs.start()
            redis_url = rs.url
        r = redis.Redis.from_url(redis_url, socket_timeout=60)
        n = args.tasks
        print(f"seeding {n} tasks (~2 KB results) ...", flush=True)
        seed(r, n)
        results: dict[str, float] = {}
        results["floor: pipelined HGETALL"] = floor_read(r, with_results=False)
        results["floor: pipelined HGETALL + GET result"] = floor_read(r, with_results=True)
        pure_r = redis.Redis.from_url(redis_url, socket_timeout=60, parser_class=_RESP2Parser)
        results["floor: pipelined HGETALL (pure-Python parser)"] = floor_read(pure_r, False)
        results["docstore reader alone, no writes (hiredis)"] = reader_alone(redis_url, False)
        results["docstore reader alone (pure-Python parser)"] = reader_alone(redis_url, True)
        results["floor: COPY into documents"] = floor_copy(fresh_database(admin), n)
        results["floor: COPY into documents, 2 connections"] = floor_copy(
            fresh_database(admin), n, connections=2
        )
        migration = run_child(redis_url, fresh_database(admin))
        results["docstore migrate (hiredis)"] = migration["rows_per_s"]
        pure = run_child(redis_url, fresh_database(admin), "--pure-python-parser")
        results["docstore migrate (pure-Python parser)"] = pure["rows_per_s"]
        one = run_child(redis_url, fresh_database(admin), "--writers", "1")
        results["docstore migrate (hiredis, 1 writer)"] = one["rows_per_s"]
        results[f"naive per-key ({args.naive} tasks)"] = naive(r, fresh_database(admin), args.naive)
        durability = "fsync off" if args.no_fsync else "fsync on"
        print(f"\n{n} tasks, batch {args.batch_size}, PostgreSQL {durability}")
        for name, rate in results.items():
            print(f"  {name:<48} {rate:>10,.0f} rows/s")
        slower_floor = min(results["floor: pipelined HGETALL"],
                           results["floor: COPY into documents"])  # fmt: skip
        rate = migration["rows_per_s"]
        print(f"  migrate / slower floor: {rate / slower_floor:.2f} (target >= 0.5)")
        both = results["floor: COPY into documents, 2 connections"]
        print(f"  migrate / COPY floor on 2 connections: {rate / both:.2f}")
        naive_rate = results[f"naive per-key ({args.naive} tasks)"]
        print(f"  migrate / naive:        {rate / naive_rate:.1f}x (target >= 20x)")
        print(f"  peak RSS at {n}: {migration['peak_rss_mb']:.0f} MB (pure parser "
              f"{pure['peak_rss_mb']:.0f} MB)")  # fmt: skip
        if args.large:
            print(f"seeding {args.large} tasks ...", flush=True)
            seed(r, args.large)
            large = run_child(redis_url, fresh_database(admin))
            print(f"  peak RSS at {args.large}: {large['peak_rss_mb']:.0f} MB "
                  f"({large['rows_per_s']:,.0f} rows/s)")  # fmt: skip


if __name__ == "__main__":
    main()

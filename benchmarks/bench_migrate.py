"""Benchmark `docstore.migrate` through a cutover against the floors measured in the same run.

    python benchmarks/bench_migrate.py                          # 100,000 tasks
    python benchmarks/bench_migrate.py --tasks 100000 1000000   # the issue's two sizes (heavy)
    python benchmarks/bench_migrate.py --tasks 20000 --extras   # quick look, plus the variants

For each size: seeds legacy tasks (hashes, ~2 KB JSON results, a progress key each) into a
throwaway Redis, then measures on a throwaway PostgreSQL (fsync on unless --no-fsync; its
settings with --pg-setting, e.g. shared_buffers=4GB: see docs/cutover.md):

- floor "read": pipelined HGETALL + GET result of every task key (batches of 1,000);
- floor "write": COPY of the same rows straight into `documents` (1,000 rows a commit) on as
  many connections as the migration has writers, on a fresh database (`--floor-tasks` measures
  it on fewer rows: its rate hardly depends on the count), in the order of the task numbers;
  with `--scan-floor` also in the order SCAN returns the keys, which is the order the migration
  reads and writes them (random to every index of `documents`: what is left of the gap to that
  floor is the migration's own work);
- the cutover, each run in a child process (its own peak RSS, VmHWM) with a progress bar (rate,
  ETA) on stderr: the first run on a fresh database, an unchanged re-run, then a catch-up re-run
  after 1 % of the tasks changed in Redis (finished by the legacy service: status, times, text).

Every measured write starts from the same state: the floor's database is dropped and the server
CHECKPOINTed first, so that no run pays for writing out the pages another left dirty.

It prints rows/s, wall time and peak RSS of each run, the first run against the COPY floor
(goal >= 0.8), the unchanged re-run's speed-up over the first run (goal >= 5x) and, with several
sizes, the peak RSS of the largest against the smallest (goal: within 10 %). --extras adds the
reader alone, the pure-Python reply parser, one writer and a naive per-key script (`--naive`).
Set BENCH_DATABASE_URL (admin URL, may create databases) and BENCH_REDIS_URL to use running
servers (the Redis database is flushed).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis
from redis._parsers import _RESP2Parser

from docstore import Docstore, Settings
from docstore.migrate.redis_reader import read_batches
from docstore.postgres.schema import apply_schema
from docstore.testing import LocalPostgres, LocalRedis
from docstore.testing.plugin import create_database, drop_database, with_database

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


@functools.cache
def _body(n: int) -> str:
    rng = random.Random(n)
    text = ""
    while len(text) < 2000:
        text += " " + " ".join(rng.choices(WORDS, WEIGHTS, k=50))
    return text


def result_text(i: int) -> str:
    return f"task {i}{_body(i % 2000)}"[:2000]


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


def change_one_percent(r: redis.Redis, count: int) -> int:
    """What the legacy service does in the cutover window: every 100th task finishes anew."""
    pipe = r.pipeline(transaction=False)
    changed = 0
    for i in range(0, count, 100):
        done = T0 + timedelta(seconds=i, hours=1)
        pipe.hset(f"task:{i}", mapping={"status": "completed", "completed_at": done.isoformat()})
        pipe.set(
            f"result:{i}", json.dumps({"text": "caught up " + result_text(i), "page_count": 2})
        )
        changed += 1
        if changed % BATCH == 0:
            pipe.execute()
    pipe.execute()
    return changed


def fresh_database(admin_url: str) -> str:
    url = with_database(admin_url, create_database(admin_url))
    apply_schema(Settings.model_validate({"DATABASE_URL": url}))
    return url


def settle(admin_url: str) -> None:
    """Start the next measurement from the state the first one had: CHECKPOINT, so nothing is
    left for the checkpointer to write. Otherwise a run pays for writing out the pages of the
    one before it: at 1M tasks the floor leaves ~2.5 GB of dirty buffers behind (dropping its
    database first discards them unwritten)."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


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


def scan_order(r: redis.Redis, count: int) -> list[int]:
    """The numbers of the first `count` task keys in the order SCAN returns them: the order in
    which the migration reads, and so writes, the tasks."""
    keys = dict.fromkeys(r.scan_iter(match="task:*", count=BATCH))  # SCAN may repeat a key
    return [int(key[5:]) for key in keys][:count]


def floor_copy(url: str, count: int, connections: int = 1, order: list[int] | None = None) -> float:
    """COPY the rows straight into `documents`, 1,000 a commit, on `connections` connections
    (rows built as they are sent: memory stays flat at any count), in the order of the task
    numbers (`order`: SCAN's, see `scan_order`)."""
    with psycopg.connect(url) as conn:
        ids = {}
        for n in range(USERS):
            email = f"user{n}@example.com"
            ids[email] = conn.execute(
                "INSERT INTO users (email) VALUES (%s) RETURNING id", [email]
            ).fetchone()[0]  # type: ignore[index]

    def row(i: int) -> tuple[Any, ...]:
        f = task_fields(i)
        created = T0 + timedelta(seconds=i)
        return (ids[f["user_email"]], f["filename"], f["s3_key"], "COMPLETED", result_text(i),
                None, int(f["page_count"]), float(f["extraction_time"]), created,
                created + timedelta(seconds=1), created + timedelta(seconds=3), str(i))  # fmt: skip

    numbers = range(count) if order is None else order
    batches = [numbers[start : start + BATCH] for start in range(0, count, BATCH)]

    def copy_batches(mine: list[Sequence[int]]) -> None:
        with psycopg.connect(url) as conn:
            for batch in mine:
                with (
                    conn.cursor() as cur,
                    cur.copy(COPY_DOCUMENTS) as copy,
                ):
                    for i in batch:
                        copy.write_row(row(i))
                conn.commit()

    started = time.perf_counter()
    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(copy_batches, [batches[k::connections] for k in range(connections)]))
    return count / (time.perf_counter() - started)


def copy_floor_on_fresh_database(
    admin: str, count: int, connections: int, order: list[int] | None = None
) -> float:
    """`floor_copy` into a database of its own, made for it after a CHECKPOINT and dropped after
    (dropping discards its dirty pages unwritten, so the next run does not pay for them)."""
    url = fresh_database(admin)
    settle(admin)
    try:
        return floor_copy(url, count, connections, order)
    finally:
        drop_database(admin, urlsplit(url).path.lstrip("/"))


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


def client_cpu_seconds() -> float:
    """CPU time (user + system) this process has used: the client's share of a run."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args: argparse.Namespace) -> None:
    """Run the migration in this process; print its figures and this process's peak RSS."""
    from docstore.migrate import migrate, verify
    from docstore.migrate.progress import BarProgress, LogProgress

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
    if sys.stderr.isatty():
        progress: BarProgress | LogProgress = BarProgress(sys.stderr)
    else:  # a log line every 10 s, as the CLI writes them
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        progress = LogProgress(interval=10)
    if args.verify:
        with Docstore.connect(settings, redis_client=source) as store:
            started = time.perf_counter()
            report = verify(source, store.db, batch_size=args.batch_size)
            seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "checked": report.checked, "ok": report.ok,
                          "documents_checked": report.documents_checked,
                          "peak_rss_mb": peak_rss_kb() / 1024,
                          "cpu_s": client_cpu_seconds()}))  # fmt: skip
        return
    with Docstore.connect(settings, redis_client=source) as store:
        try:
            summary = migrate(
                source, store.db, batch_size=args.batch_size, writers=args.writers,
                progress=progress,
            )  # fmt: skip
        finally:
            progress.close()
    print(json.dumps({"rows_per_s": summary.rows_per_second, "migrated": summary.migrated,
                      "updated": summary.updated, "present": summary.already_present,
                      "conflicts": summary.conflicts, "seconds": summary.duration_seconds,
                      "peak_rss_mb": peak_rss_kb() / 1024,
                      "cpu_s": client_cpu_seconds()}))  # fmt: skip


def run_child(redis_url: str, url: str, *extra: str) -> dict[str, Any]:
    # stderr is the terminal's: the progress bar shows while the run goes.
    out = subprocess.run(
        [sys.executable, __file__, "child", "--redis-url", redis_url, "--database-url", url,
         *extra],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout  # fmt: skip
    return dict(json.loads(out.splitlines()[-1]))


def _show_run(name: str, run: dict[str, Any]) -> None:
    print(f"  run    {name:<48} {run['rows_per_s']:>10,.0f} rows/s  {run['seconds']:>7.1f} s"
          f"  {run['peak_rss_mb']:>5.0f} MB peak RSS  {run['cpu_s']:>6.1f} s client CPU"
          f"  (migrated {run['migrated']:,},"
          f" updated {run['updated']:,}, unchanged {run['present']:,},"
          f" conflicts {run['conflicts']})", flush=True)  # fmt: skip


def _show_floor(name: str, rate: float) -> None:
    print(f"  floor  {name:<48} {rate:>10,.0f} rows/s", flush=True)


def cutover(
    args: argparse.Namespace, r: redis.Redis, redis_url: str, admin: str, n: int
) -> dict[str, Any]:
    """Seed n tasks, measure the floors and the three runs; print each figure as it comes (a
    long run on a busy machine shows what it has), then the ratios; return the peak RSS."""
    writers = str(args.writers)
    durability = "fsync off" if args.no_fsync else "fsync on"
    print(f"seeding {n:,} tasks (~2 KB results) ...", flush=True)
    started = time.perf_counter()
    seed(r, n)
    print(f"  seeded in {time.perf_counter() - started:.0f} s", flush=True)
    with psycopg.connect(admin) as conn:  # the server's own word, also for BENCH_DATABASE_URL
        buffers = conn.execute("SHOW shared_buffers").fetchone()[0]  # type: ignore[index]
    print(
        f"{n:,} tasks, batch {args.batch_size}, {writers} writers, PostgreSQL {durability}, "
        f"shared_buffers {buffers}"
    )
    # The COPY floor's rate hardly depends on the size: --floor-tasks measures it on fewer rows.
    sample = min(n, args.floor_tasks or n)
    copy_floor = copy_floor_on_fresh_database(admin, sample, args.writers)
    _show_floor(f"write: COPY into documents, {writers} connections ({sample:,} rows)", copy_floor)
    scan_floor = None
    if args.scan_floor:
        order = scan_order(r, sample)
        scan_floor = copy_floor_on_fresh_database(admin, sample, args.writers, order)
        _show_floor(f"write: the same COPY in SCAN's order ({sample:,} rows)", scan_floor)
    url = fresh_database(admin)
    runs: dict[str, dict[str, Any]] = {}
    for name in ("first run", "unchanged re-run"):
        settle(admin)
        runs[name] = run_child(redis_url, url, "--writers", writers)
        _show_run(name, runs[name])
    first, unchanged = runs["first run"], runs["unchanged re-run"]
    print(f"  first run / COPY floor on {writers} connections: "
          f"{first['rows_per_s'] / copy_floor:.2f} (goal >= 0.8)")  # fmt: skip
    if scan_floor is not None:
        ratio = first["rows_per_s"] / scan_floor
        print(f"  first run / COPY floor in SCAN's order: {ratio:.2f} (what the migration adds"
              " to writing the rows in the order it reads them)")  # fmt: skip
    print(f"  unchanged re-run speed-up over the first run: "
          f"{first['seconds'] / unchanged['seconds']:.1f}x (goal >= 5x)", flush=True)  # fmt: skip
    changed = change_one_percent(r, n)
    name = f"catch-up re-run ({changed:,} changed)"
    settle(admin)
    runs[name] = run_child(redis_url, url, "--writers", writers)
    _show_run(name, runs[name])
    settle(admin)
    gate = run_child(redis_url, url, "--verify")
    rate = gate["checked"] / gate["seconds"]
    print(f"  run    {'--verify (the gate)':<48} {rate:>10,.0f} tasks/s"
          f"  {gate['seconds']:>7.1f} s  {gate['peak_rss_mb']:>5.0f} MB peak RSS"
          f"  {gate['cpu_s']:>6.1f} s client CPU  (ok: {gate['ok']}, tasks {gate['checked']:,},"
          f" documents {gate['documents_checked']:,})", flush=True)  # fmt: skip
    read_floor = floor_read(r, with_results=True)
    _show_floor("read: pipelined HGETALL + GET result", read_floor)
    print(f"  first run / read floor: {first['rows_per_s'] / read_floor:.2f}", flush=True)
    if args.extras:
        _show_floor(
            "read: pipelined HGETALL (pure-Python parser)",
            floor_read(
                redis.Redis.from_url(redis_url, socket_timeout=60, parser_class=_RESP2Parser),
                False,
            ),
        )
        _show_floor("docstore reader alone, no writes (hiredis)", reader_alone(redis_url, False))
        _show_floor("docstore reader alone (pure-Python parser)", reader_alone(redis_url, True))
        for name, extra in (
            ("first run, pure-Python parser", ["--pure-python-parser"]),
            ("first run, 1 writer", []),
        ):
            writer_count = "1" if name.endswith("1 writer") else writers
            variant_url = fresh_database(admin)
            settle(admin)
            runs[name] = run_child(redis_url, variant_url, "--writers", writer_count, *extra)
            _show_run(name, runs[name])
        if args.naive:
            rate = naive(r, fresh_database(admin), args.naive)
            print(f"  naive per-key script ({args.naive:,} tasks): {rate:,.0f} rows/s")
    return {"n": n, "peak_rss_mb": max(run["peak_rss_mb"] for run in runs.values())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", nargs="?", default="bench", choices=["bench", "child"])
    parser.add_argument("--tasks", type=int, nargs="+", default=[100_000])
    parser.add_argument("--extras", action="store_true", help="the variants and the naive script")
    parser.add_argument("--naive", type=int, default=10_000, help="tasks the naive script runs")
    parser.add_argument(
        "--floor-tasks", type=int, help="rows of the COPY floor (default: as many as tasks)"
    )
    parser.add_argument(
        "--scan-floor",
        action="store_true",
        help="also the COPY floor in SCAN's order (the migration's), not the task numbers'",
    )
    parser.add_argument("--batch-size", type=int, default=BATCH)
    parser.add_argument("--redis-url")
    parser.add_argument("--database-url")
    parser.add_argument("--writers", type=int, default=2)
    parser.add_argument("--pure-python-parser", action="store_true")
    parser.add_argument("--verify", action="store_true", help="child: time --verify instead")
    parser.add_argument("--no-fsync", action="store_true", help="PostgreSQL as in the tests")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the PostgreSQL this starts, e.g. shared_buffers=4GB (repeatable)",
    )
    args = parser.parse_args()
    if args.mode == "child":
        child(args)
        return
    with ExitStack() as stack:
        admin = os.environ.get("BENCH_DATABASE_URL")
        redis_url = os.environ.get("BENCH_REDIS_URL")
        if not admin:
            # Durable by default (fsync and synchronous commit on, like production).
            # --no-fsync matches the test servers.
            base = None if args.no_fsync else stack.enter_context(tempfile.TemporaryDirectory())
            settings = dict(setting.split("=", 1) for setting in args.pg_setting)
            pg = LocalPostgres(base_dir=base, server_settings=settings)
            stack.callback(pg.close)
            pg.start()
            admin = pg.url
        if not redis_url:
            rs = LocalRedis()
            stack.callback(rs.close)
            rs.start()
            redis_url = rs.url
        r = redis.Redis.from_url(redis_url, socket_timeout=60)
        sizes = [cutover(args, r, redis_url, admin, n) for n in args.tasks]
        if len(sizes) > 1:
            small, large = sizes[0], sizes[-1]
            ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
            print(f"\npeak RSS at {large['n']:,} / at {small['n']:,}: {ratio:.2f} (goal <= 1.10)")


if __name__ == "__main__":
    main()

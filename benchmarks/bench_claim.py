"""Claiming in a shared service: claim cost against the backlog, how long a small user waits
behind a bulk upload, and how fast an S3 outage burns retries.

    python benchmarks/bench_claim.py                  # throwaway PostgreSQL and Redis
    python benchmarks/bench_claim.py --pending 100000 --users 1000 --pairs 2000
    PYTHONPATH=/path/to/an/older/checkout python benchmarks/bench_claim.py   # the same on it

It uses only calls every docstore version has (`claim_next`, `mark_completed`, `submit_document`,
`process_next`), so the same script measures an older checkout for the before/after figures.

1. Claim cost: `claim_next` + `mark_completed`, one worker, with a small backlog (5,000 pending)
   and with `--pending` documents over `--users` users (each user's documents submitted in one
   burst, users one after another); the best slice of `--slice` pairs is printed (slower slices
   measure other processes on the machine), and the ratio big/small (1.0: cost independent of
   the backlog).
2. Starvation: user A submits 10,000 documents, then user B submits 10; claims (each completed)
   until all of B's are handed out: how many claims, and how long B waited.
3. S3 outage: `--outage-docs` documents, then every blob read fails (as with S3 down); two
   workers run `process_next` for `--outage-seconds`: attempts per minute and documents that
   used up all their attempts.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from tempfile import TemporaryDirectory

import psycopg
from psycopg import sql

from docstore import Docstore, Settings
from docstore.errors import ServiceUnavailable
from docstore.intake.blobs import LocalBlobStore
from docstore.intake.extractors import extract_text
from docstore.models import DocumentCreate, UserCreate
from docstore.postgres.queries import queries
from docstore.postgres.schema import apply_schema
from docstore.testing.servers import LocalPostgres, LocalRedis

WORKER = "bench-worker"
# The backlog the big one is compared with (more than --pairs, which it must outlast).
SMALL_BACKLOG = 5000


class S3Down(LocalBlobStore):
    """Blob reads fail as they do while S3 is unreachable."""

    def get(self, key: str) -> bytes:
        raise ServiceUnavailable("S3 at s3.local:443 is unavailable", service="s3")


@contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    name = f"docstore_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = admin_url.rsplit("/", 1)[0] + "/" + name
    try:
        apply_schema(Settings.model_validate({"DATABASE_URL": url}))
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def settings_for(url: str, redis_url: str) -> Settings:
    return Settings.model_validate({"DATABASE_URL": url, "REDIS_URL": redis_url})


def seed(store: Docstore, pending: int, users: int) -> None:
    """`pending` documents over `users` users, each user's in one burst (COPY-free, batched)."""
    per_user = max(1, pending // users)
    for n in range(users):
        user = store.users.create(UserCreate(email=f"bulk{n}-{uuid.uuid4().hex[:6]}@x.io")).user
        store.documents.create_many(
            [
                DocumentCreate(user_id=user.id, filename=f"{i}.pdf", s3_key=f"k/{n}/{i}")
                for i in range(per_user)
            ]
        )
    with store.pool.connection() as conn:
        conn.execute("ANALYZE documents")


def claim_cost(store: Docstore, pairs: int, slice_size: int) -> float:
    """Best µs per claim_next + mark_completed over slices of `slice_size` pairs."""
    best = float("inf")
    done = 0
    while done < pairs:
        started = time.perf_counter()
        for _ in range(slice_size):
            document = store.lifecycle.claim_next(WORKER)
            assert document is not None, "backlog ran out"
            store.lifecycle.mark_completed(document.id, WORKER, "text", 1, 0.01)
        best = min(best, (time.perf_counter() - started) / slice_size * 1e6)
        done += slice_size
    return best


def claim_plan(url: str) -> tuple[int, float]:
    """(shared buffers touched, server ms) of one claim_next statement, rolled back: the work
    PostgreSQL does for a claim, which other load on the machine does not change."""
    query = queries()["claim_next_document"]
    params = {"worker_id": WORKER, "lease_seconds": 300.0, "max_processing": None}
    params = {name: value for name, value in params.items() if name in query.params}
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            sql.SQL("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) ") + sql.SQL(query.sql), params
        ).fetchone()
        conn.rollback()
    assert rows is not None
    plan = rows[0][0]
    buffers = plan["Plan"].get("Shared Hit Blocks", 0) + plan["Plan"].get("Shared Read Blocks", 0)
    return int(buffers), float(plan["Execution Time"])


def bench_claims(admin_url: str, redis_url: str, args: argparse.Namespace) -> None:
    print("\n1. claim_next + mark_completed, one worker (best slice, µs per pair);")
    print("   one claim statement: shared buffers touched and server time (EXPLAIN ANALYZE)")
    results = {}
    for pending, users in ((SMALL_BACKLOG, 50), (args.pending, args.users)):
        with fresh_database(admin_url) as url, Docstore.connect(settings_for(url, redis_url)) as s:
            seed(s, pending, users)
            buffers, server_ms = claim_plan(url)
            results[pending] = claim_cost(s, args.pairs, args.slice)
        print(
            f"   {pending:>7} pending over {users:>4} users: {results[pending]:8.0f} µs;"
            f" claim: {buffers} buffers, {server_ms:.2f} ms in PostgreSQL"
        )
    ratio = results[args.pending] / results[SMALL_BACKLOG]
    print(f"   ratio {args.pending} / {SMALL_BACKLOG} pending: {ratio:.2f}")


def bench_starvation(admin_url: str, redis_url: str) -> None:
    print("\n2. user A submits 10,000, then user B submits 10: claims until B's 10 are out")
    with fresh_database(admin_url) as url, Docstore.connect(settings_for(url, redis_url)) as s:
        a = s.users.create(UserCreate(email="a@x.io")).user
        b = s.users.create(UserCreate(email="b@x.io")).user
        s.documents.create_many(
            [DocumentCreate(user_id=a.id, filename="a.pdf", s3_key=f"a/{i}") for i in range(10_000)]
        )
        mine = {
            s.documents.create(DocumentCreate(user_id=b.id, filename="b.pdf", s3_key=f"b/{i}")).id
            for i in range(10)
        }
        started = time.perf_counter()
        claims = 0
        while mine:
            document = s.lifecycle.claim_next(WORKER)
            assert document is not None
            claims += 1
            mine.discard(document.id)
            s.lifecycle.mark_completed(document.id, WORKER, "text", 1, 0.01)
        waited = time.perf_counter() - started
    print(f"   B's last document handed out at claim {claims}, after {waited:.2f} s")


def bench_outage(admin_url: str, redis_url: str, args: argparse.Namespace) -> None:
    print(f"\n3. S3 outage: {args.outage_docs} documents, 2 workers, {args.outage_seconds:g} s")
    with (
        TemporaryDirectory() as folder,
        fresh_database(admin_url) as url,
        Docstore.connect(settings_for(url, redis_url), blobs=S3Down(Path(folder))) as s,
    ):
        user = s.users.create(UserCreate(email="outage@x.io")).user
        uploads = LocalBlobStore(folder)
        for i in range(args.outage_docs):
            blob = uploads.put(user.id, f"{i}.txt", b"text")
            document = s.documents.create(
                DocumentCreate(user_id=user.id, filename=f"{i}.txt", s3_key=blob.key)
            )
            s.queue.enqueue(document.id)
        stop = time.monotonic() + args.outage_seconds

        def work(n: int) -> None:
            while time.monotonic() < stop:
                s.process_next(f"{WORKER}-{n}", extract_text, block_ms=200)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(2)]
        for thread in workers:
            thread.start()
        for thread in workers:
            thread.join()
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT sum(attempts), count(*) FILTER (WHERE status = 'FAILED'),"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY"
                "  extract(epoch FROM completed_at - created_at)) FILTER (WHERE status = 'FAILED')"
                " FROM documents"
            ).fetchone()
        assert row is not None
        attempts, exhausted = int(row[0]), int(row[1])
        burnt = "-" if row[2] is None else f"{float(row[2]):.1f} s"
    retries = attempts - min(attempts, args.outage_docs)  # attempts after each first one
    per_minute = retries / (args.outage_seconds / 60)
    print(f"   attempts {attempts}, retries {retries}: {per_minute:.0f} retries per minute;")
    print(f"   {exhausted} of {args.outage_docs} documents used up every attempt (FAILED),")
    print(f"   median time from submission to FAILED: {burnt}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="admin URL of a server (default: start one)")
    parser.add_argument("--redis-url", help="Redis URL (default: start one)")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=2000, help="claim+complete pairs measured")
    parser.add_argument("--slice", type=int, default=200)
    parser.add_argument("--outage-docs", type=int, default=100)
    parser.add_argument("--outage-seconds", type=float, default=30.0)
    parser.add_argument("--only", choices=["claims", "starvation", "outage"])
    args = parser.parse_args()
    with ExitStack() as stack:
        admin_url = args.database_url
        if admin_url is None:
            server = LocalPostgres()
            stack.callback(server.close)
            server.start()
            admin_url = server.url
        redis_url = args.redis_url
        if redis_url is None:
            redis_server = LocalRedis()
            stack.callback(redis_server.stop)
            redis_server.start()
            redis_url = redis_server.url
        if args.only in (None, "claims"):
            bench_claims(admin_url, redis_url, args)
        if args.only in (None, "starvation"):
            bench_starvation(admin_url, redis_url)
        if args.only in (None, "outage"):
            bench_outage(admin_url, redis_url, args)


if __name__ == "__main__":
    main()

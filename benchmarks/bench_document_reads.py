"""What `AsyncDocstore.get_document` costs for a finished document and for one still changing.

The cache keeps finished documents only (COMPLETED, FAILED, CANCELLED). A finished one is a cache
hit; one still PENDING or PROCESSING costs a Redis `GET` (the mark that says "read it yourself")
and a PostgreSQL read. Beside them, in the same run and process, the floors of each:

- redis GET + decode: redis-py's asyncio client reading the same cached JSON, then pydantic
  reading it into `DocumentResponse` (what a hit cannot cost less than);
- raw psycopg: the same named `get_document` statement on an async pool, rows as tuples (what
  a read from PostgreSQL cannot cost less than).

Every variant reads one document over and over, one task at a time and `--tasks` at once, in
rotating slices; the best slice is printed, with the process's CPU µs per call.

    python benchmarks/bench_document_reads.py [--database-url URL] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import time
from collections.abc import Awaitable, Callable

import psycopg
import redis.asyncio
from bench_async import RawAsyncRepos, add_pending, seed
from bench_repositories import bench_database, bench_redis

from docstore import AsyncDocstore, DocumentResponse, Settings
from docstore.redis.keys import cache_key

Call = Callable[[], Awaitable[object]]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def best_of(call: Call, tasks: int, calls: int, slices: int) -> tuple[float, float]:
    """(calls/s, CPU µs per call) of the best of `slices` slices of `calls` calls each."""
    best_rate, best_cpu = 0.0, 0.0
    per_task = max(1, calls // tasks)

    async def task() -> None:
        for _ in range(per_task):
            await call()

    await task()  # warm-up: connections, prepared statements, the first load
    for _ in range(slices):
        started, cpu = time.perf_counter(), cpu_seconds()
        await asyncio.gather(*(task() for _ in range(tasks)))
        rate = per_task * tasks / (time.perf_counter() - started)
        if rate > best_rate:
            best_rate = rate
            best_cpu = (cpu_seconds() - cpu) / (per_task * tasks) * 1e6
    return best_rate, best_cpu


async def bench(url: str, redis_url: str, finished: int, unfinished: int, tasks: int) -> None:
    settings = Settings.model_validate(
        {"DATABASE_URL": url, "REDIS_URL": redis_url, "pool_min_size": 10, "pool_max_overflow": 0}
    )
    raw = RawAsyncRepos(url, 10, settings.pool_check_idle_after)
    client = redis.asyncio.Redis.from_url(redis_url)
    async with await AsyncDocstore.connect(settings) as store:
        await raw.open()
        try:
            await store.get_document(finished)  # cached from now on
            key = cache_key(store.cache.document_key(finished))

            async def redis_get() -> object:
                raw_json = await client.get(key)
                return DocumentResponse.model_validate_json(raw_json)

            variants: dict[str, Call] = {
                "get_document, COMPLETED": lambda: store.get_document(finished),
                "redis GET + decode": redis_get,
                "get_document, PENDING": lambda: store.get_document(unfinished),
                "raw psycopg SELECT": lambda: raw.get(unfinished),
            }
            for mode in (1, tasks):
                print(f"\n{mode} task{'s' if mode > 1 else ''} at a time")
                print(f"{'variant':<28}{'calls/s':>10}{'CPU µs/call':>14}")
                results = {}
                for _ in range(3):  # rounds, rotating which variant runs when
                    for name, call in variants.items():
                        rate, cpu = await best_of(call, mode, 600, 3)
                        if rate > results.get(name, (0.0, 0.0))[0]:
                            results[name] = (rate, cpu)
                for name, (rate, cpu) in results.items():
                    print(f"{name:<28}{rate:>10,.0f}{cpu:>14.0f}")
        finally:
            await raw.close()
            await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="admin URL of a server (default: start one)")
    parser.add_argument("--redis-url", help="a Redis to use (default: start one)")
    parser.add_argument("--tasks", type=int, default=16, help="tasks of the concurrent mode")
    args = parser.parse_args()
    with bench_database(args.database_url) as url, bench_redis(args.redis_url) as redis_url:
        seeded = seed(url, 100)
        add_pending(url, seeded.user_id, 1)
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT id FROM documents WHERE status = 'PENDING'").fetchone()
        assert row is not None
        asyncio.run(bench(url, redis_url, seeded.ids[0], row[0], args.tasks))


if __name__ == "__main__":
    main()

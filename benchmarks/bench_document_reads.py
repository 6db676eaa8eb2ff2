"""What `AsyncDocstore.get_document` costs for a finished document and for one still changing.

The cache keeps finished documents only (COMPLETED, FAILED, CANCELLED). A finished one is a cache
hit; one still PENDING or PROCESSING costs a Redis `GET` (the mark that says "read it yourself")
and a PostgreSQL read. Beside them, in the same run and process, the floors of each:

- redis GET + decode: redis-py's asyncio client reading the same cached JSON, then pydantic
  reading it into `DocumentResponse` (what a hit cannot cost less than);
- raw psycopg: the same named `get_document` statement on an async pool, rows as tuples (what
  a read from PostgreSQL cannot cost less than).

Every variant reads one document over and over, one task at a time and `--tasks` at once, with
bench_async.py's own rounds (new pools each round, variants in rotating slices): the best slice
is printed, with the lowest CPU µs per call of this process.

    python benchmarks/bench_document_reads.py [--database-url URL] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import asyncio

import psycopg
import redis.asyncio
from bench_async import Call, Clients, Mode, add_pending, run_rounds, seed
from bench_repositories import bench_database, bench_redis

from docstore import DocumentResponse, Settings
from docstore.ephemeral.cache import RedisCache
from docstore.redis.keys import cache_key


async def bench(url: str, finished: int, unfinished: int, args: argparse.Namespace) -> None:
    client = redis.asyncio.Redis.from_url(args.redis_url)  # the floor of a hit: plain redis-py
    key = cache_key(RedisCache.document_key(finished))

    async def redis_get() -> object:
        return DocumentResponse.model_validate_json(await client.get(key))

    def variants(c: Clients) -> dict[str, Call]:
        # run_rounds warms each variant up first: the finished document is cached by then.
        return {
            "get_document, COMPLETED": lambda: c.store.get_document(finished),
            "redis GET + decode": redis_get,
            "get_document, PENDING": lambda: c.store.get_document(unfinished),
            "raw psycopg SELECT": lambda: c.raw.get(unfinished),
        }

    try:
        for mode in (Mode("one task at a time", 1, 50), Mode(f"{args.tasks} tasks", args.tasks, 4)):
            per_round, cpu_us = await run_rounds(url, variants, mode, args)
            print(f"\n{mode.title}\n{'variant':<28}{'calls/s':>10}{'CPU µs/call':>14}")
            for name in per_round[0]:
                best = max(round_[name] for round_ in per_round)
                print(f"{name:<28}{best:>10,.0f}{cpu_us[name]:>14.0f}")
    finally:
        await client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="admin URL of a server (default: start one)")
    parser.add_argument("--redis-url", help="a Redis to use (default: start one)")
    parser.add_argument("--tasks", type=int, default=16, help="tasks of the concurrent mode")
    parser.add_argument("--ops", type=int, default=600, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pool-size", type=int, default=10, help="connections of every pool")
    args = parser.parse_args()
    args.check_idle_after = Settings.model_validate({}).pool_check_idle_after
    with bench_database(args.database_url) as url, bench_redis(args.redis_url) as redis_url:
        args.redis_url = redis_url
        seeded = seed(url, 100)
        add_pending(url, seeded.user_id, 1)
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT id FROM documents WHERE status = 'PENDING'").fetchone()
        assert row is not None
        asyncio.run(bench(url, seeded.ids[0], row[0], args))


if __name__ == "__main__":
    main()

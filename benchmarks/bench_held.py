"""Benchmark docstore's held Redis connections against redis-py's own way, on both sides.

    pip install -e ".[bench]"
    python benchmarks/bench_held.py                  # starts a throwaway redis-server
    python benchmarks/bench_held.py --redis-url redis://127.0.0.1:6379/15 --ops 40000

docstore's own clients send single commands and pipelines without MULTI on connections they
hold between calls (`docstore/redis/held_async.py`). Here the same calls run through two
clients of `new_redis`: one as docstore makes it, one given back redis-py's `execute_command`
and `pipeline`. Calls: a cache read (`RedisCache.get`), the example service's guard
(`RateLimiter.decide_together`: two scripts in one pipeline) and a bare `GET`. The asyncio side
runs 32 tasks at once on one event loop (uvloop when installed), as a service does; the sync
side one call at a time. Printed: CPU µs per call (process time: what a busy process pays), the
best of interleaved rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import time
from collections.abc import Awaitable, Callable
from typing import Any

from docstore import Settings
from docstore.ephemeral.cache import RedisCache
from docstore.ephemeral.cache_async import AsyncRedisCache
from docstore.ephemeral.rate_limit import LimitCheck, RateLimiter
from docstore.ephemeral.rate_limit_async import AsyncRateLimiter
from docstore.redis.client import new_redis
from docstore.redis.client_async import new_redis as new_async_redis
from docstore.redis.core import RedisCore
from docstore.redis.core_async import AsyncRedisCore
from docstore.testing.servers import LocalRedis

TASKS = 32
DOCUMENT = {"text": "x" * 500, "page_count": 3}


def redis_py_way(client: Any) -> Any:
    """`client` with redis-py's own `execute_command` and `pipeline` back."""
    del client.execute_command, client.pipeline
    return client


# What each side is made of: its client maker, core, cache and limiter.
SYNC = (new_redis, RedisCore, RedisCache, RateLimiter)
ASYNC = (new_async_redis, AsyncRedisCore, AsyncRedisCache, AsyncRateLimiter)


def calls_of(url: str, held: bool, side: tuple[Any, ...]) -> dict[str, Callable[[], Any]]:
    """The measured calls on one side (`SYNC` or `ASYNC`), through a client that holds its
    connections or not (the cached document is stored by `main` first)."""
    make_client, core_class, cache_class, limiter_class = side
    client = make_client(Settings.model_validate({"REDIS_URL": url}))
    core = core_class(client if held else redis_py_way(client))
    cache = cache_class(core)
    ip = limiter_class(core, limit=10**9, period=60, policy="ip")
    api = limiter_class(core, limit=10**9, period=60, policy="api")
    checks = [LimitCheck(ip, "203.0.113.9", consume=False), LimitCheck(api, "key-1")]
    return {
        "cache read": lambda: cache.get("doc", dict),
        "decide_together (2 scripts)": lambda: limiter_class.decide_together(checks),
        "GET": lambda: client.get("nothing"),
    }


def sync_cpu(call: Callable[[], object], ops: int) -> float:
    started = time.process_time()
    for _ in range(ops):
        call()
    return (time.process_time() - started) / ops * 1e6


async def async_cpu(call: Callable[[], Awaitable[object]], ops: int) -> float:
    async def task() -> None:
        for _ in range(ops // TASKS):
            await call()

    started = time.process_time()
    await asyncio.gather(*(task() for _ in range(TASKS)))
    return (time.process_time() - started) / ops * 1e6


async def bench_async(url: str, ops: int, rounds: int) -> dict[tuple[str, bool], float]:
    ways = {held: calls_of(url, held, ASYNC) for held in (False, True)}
    best: dict[tuple[str, bool], float] = {}
    for _ in range(rounds):
        for held, calls in ways.items():
            for name, call in calls.items():
                await async_cpu(call, ops // 10)  # warm: connections, scripts
                cpu = await async_cpu(call, ops)
                best[name, held] = min(best.get((name, held), cpu), cpu)
    return best


def bench_sync(url: str, ops: int, rounds: int) -> dict[tuple[str, bool], float]:
    ways = {held: calls_of(url, held, SYNC) for held in (False, True)}
    best: dict[tuple[str, bool], float] = {}
    for _ in range(rounds):
        for held, calls in ways.items():
            for name, call in calls.items():
                sync_cpu(call, ops // 10)
                cpu = sync_cpu(call, ops)
                best[name, held] = min(best.get((name, held), cpu), cpu)
    return best


def print_side(title: str, best: dict[tuple[str, bool], float]) -> None:
    print(f"\n{title}: CPU µs per call, redis-py's way -> held connections")
    for name in dict.fromkeys(name for name, _ in best):
        plain, held = best[name, False], best[name, True]
        print(f"  {name:30s} {plain:7.1f} -> {held:7.1f}  ({held / plain - 1:+.0%})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="an existing Redis (default: start one)")
    parser.add_argument("--ops", type=int, default=20_000, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    server = None
    url = args.redis_url
    if url is None:
        server = LocalRedis()
        server.start()
        url = server.url
    try:
        # The document both sides read (before, the asyncio side read a missing key).
        RedisCache(RedisCore(new_redis(Settings.model_validate({"REDIS_URL": url})))).set(
            "doc", DOCUMENT
        )
        use_uvloop = importlib.util.find_spec("uvloop") is not None
        print(
            f"{args.rounds} rounds of {args.ops:,} calls; asyncio side: {TASKS} tasks on "
            f"{'uvloop' if use_uvloop else 'asyncio'}; sync side: one call at a time"
        )
        if use_uvloop:
            import uvloop

            best = uvloop.run(bench_async(url, args.ops, args.rounds))
        else:
            best = asyncio.run(bench_async(url, args.ops, args.rounds))
        print_side("asyncio", best)
        print_side("sync", bench_sync(url, args.ops, args.rounds))
    finally:
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()

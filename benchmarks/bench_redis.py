"""Benchmark docstore's Redis side against the `limits` library and a bare round-trip floor.

    pip install -e ".[bench]"
    python benchmarks/bench_redis.py                  # starts a throwaway redis-server
    python benchmarks/bench_redis.py --redis-url redis://127.0.0.1:6379/15 --ops 20000

All variants run against the same Redis in one process, one call at a time (a round trip each),
in interleaved rounds; the median of the rounds is printed. Rate limiters:

- floor: a bare ``EVALSHA`` of ``return 1`` — one round trip, no work;
- docstore: `RateLimiter.hit` (GCRA, one number per key);
- limits moving window (a list of one timestamp per request, up to the limit);
- limits sliding window counter (two counters per key).

Each runs at 100/minute and at 100,000/hour. At the large limit the moving window's list is
filled to 99% first, as it is for a busy client. The cache compares `RedisCache.get` (and a
`get_or_set` hit) with a bare ``GET`` plus pydantic JSON decoding.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timezone

import redis
from limits import RateLimitItem, RateLimitItemPerHour, RateLimitItemPerMinute
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
from pydantic import BaseModel

from docstore import Settings
from docstore.ephemeral.cache import RedisCache
from docstore.ephemeral.rate_limit import RateLimiter
from docstore.redis.client import new_redis
from docstore.testing.servers import LocalRedis


class DocumentResult(BaseModel):
    document_id: int
    text: str
    page_count: int
    extraction_time_seconds: float
    completed_at: datetime


def ops_per_second(call: Callable[[], object], ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        call()
    return ops / (time.perf_counter() - start)


def run_rounds(
    variants: dict[str, Callable[[], object]], ops: int, rounds: int
) -> dict[str, tuple[float, float]]:
    """(median ops/s, median slowdown against the first variant) over interleaved rounds.

    Rounds are short and interleaved, and each ratio compares variants of the same round, so
    load from other processes on the machine hits all variants alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for call in variants.values():  # warm up: connections, scripts, caches
        for _ in range(200):
            call()
    for _ in range(rounds):
        for name, call in variants.items():
            samples[name].append(ops_per_second(call, ops))
    floor = samples[next(iter(variants))]
    return {
        name: (
            statistics.median(values),
            statistics.median(f / v for f, v in zip(floor, values, strict=True)),
        )
        for name, values in samples.items()
    }


def print_table(title: str, results: dict[str, tuple[float, float]]) -> None:
    print(f"\n{title}")
    print(f"  {'variant':<38} {'ops/s':>9}  {'time vs floor':>13}")
    for name, (rate, slowdown) in results.items():
        print(f"  {name:<38} {rate:>9,.0f}  {slowdown:>12.2f}x")


def bench_limiters(client: redis.Redis, url: str, ops: int, rounds: int) -> None:
    storage = RedisStorage(url)
    moving = MovingWindowRateLimiter(storage)
    sliding = SlidingWindowCounterRateLimiter(storage)
    floor_sha = client.script_load("return 1")

    def floor() -> object:
        return client.evalsha(floor_sha, 0)

    sizes: list[tuple[str, int, float, RateLimitItem]] = [
        ("100/minute", 100, 60.0, RateLimitItemPerMinute(100)),
        ("100,000/hour", 100_000, 3600.0, RateLimitItemPerHour(100_000)),
    ]
    for label, limit, period, item in sizes:
        client.flushdb()
        ours = RateLimiter(client, limit=limit, period=period, policy="bench")
        if limit > 10_000:
            # A busy client: its timestamp list is nearly full (one entry per request so far).
            moving.hit(item, "client", cost=int(limit * 0.99))
            ours.hit("client", cost=int(limit * 0.99))
            sliding.hit(item, "client", cost=int(limit * 0.99))
        results = run_rounds(
            {
                "floor: bare EVALSHA (return 1)": floor,
                "docstore RateLimiter.hit (GCRA)": lambda ours=ours: ours.hit("client"),
                "limits moving window": lambda item=item: moving.hit(item, "client"),
                "limits sliding window counter": lambda item=item: sliding.hit(item, "client"),
                # What HTTP headers need: docstore's hit already returns remaining and reset.
                "limits moving window + stats": lambda item=item: (
                    moving.hit(item, "client"),
                    moving.get_window_stats(item, "client"),
                ),
                "limits sliding window + stats": lambda item=item: (
                    sliding.hit(item, "client"),
                    sliding.get_window_stats(item, "client"),
                ),
            },
            ops,
            rounds,
        )
        print_table(f"Rate limiter, {label} (one client key)", results)
        ours_slowdown = results["docstore RateLimiter.hit (GCRA)"][1]
        for other in list(results)[2:]:
            speedup = results[other][1] / ours_slowdown
            print(f"  docstore vs {other}: {speedup:.2f}x as fast")
        memory = {
            "docstore": client.memory_usage("docstore:ratelimit:bench:{client}"),
            "limits moving window": sum(
                client.memory_usage(k) or 0
                for k in client.keys("LIMITS:LIMITER/client/*")
                if b"{" not in k
            ),
        }
        print(f"  memory per client key (bytes): {memory}")


def bench_cache(client: redis.Redis, ops: int, rounds: int) -> None:
    client.flushdb()
    cache = RedisCache(client, default_ttl=600)
    value = DocumentResult(
        document_id=42,
        text="lorem ipsum dolor sit amet " * 40,
        page_count=12,
        extraction_time_seconds=3.25,
        completed_at=datetime.now(timezone.utc),
    )
    cache.set("document:42:result", value)
    raw_key = "docstore:cache:{document:42:result}"

    def bare() -> object:
        raw = client.get(raw_key)
        assert raw is not None
        return DocumentResult.model_validate_json(raw)

    results = run_rounds(
        {
            "floor: bare GET + JSON decode": bare,
            "docstore RedisCache.get": lambda: cache.get("document:42:result", DocumentResult),
            "docstore RedisCache.get_or_set (hit)": lambda: cache.get_or_set(
                "document:42:result", lambda: value, DocumentResult
            ),
        },
        ops,
        rounds,
    )
    print_table("Cache hit (a ~1 KB document result)", results)
    print(f"  cache stats: {cache.stats()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis-url", help="an existing Redis (its database is flushed)")
    parser.add_argument("--ops", type=int, default=1000, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=21)
    args = parser.parse_args()
    server = None
    url = args.redis_url
    if url is None:
        server = LocalRedis()
        server.start()
        url = server.url
    client = new_redis(Settings.model_validate({"REDIS_URL": url}))
    try:
        info = client.info("server")
        version = info["redis_version"]
        print(f"redis-server {version} at {url}; {args.ops} calls x {args.rounds} rounds")
        bench_limiters(client, url, args.ops, args.rounds)
        bench_cache(client, args.ops, args.rounds)
    finally:
        client.close()
        if server is not None:
            server.close()


if __name__ == "__main__":
    main()

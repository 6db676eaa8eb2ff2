"""What OpenTelemetry costs docstore's hot paths: without it, with the API alone, with the SDK.

    pip install -e ".[bench]"
    python benchmarks/bench_otel.py                   # throwaway PostgreSQL and Redis
    python benchmarks/bench_otel.py --ops 2000 --rounds 7

Each mode runs in its own process on the same servers and data (a tracer provider can be set
once per process):

- absent: `opentelemetry` cannot be imported (an import of it fails), so docstore's hooks are
  the no-op path, as on a machine without the package;
- api: opentelemetry-api installed, no SDK: what every user of the `otel` extra pays until the
  application sets a provider (goal: at most 3 % over absent);
- sdk: the SDK's TracerProvider with a batch processor and an exporter that drops spans, and a
  MeterProvider whose reader is never collected: the cost of recording everything.

Hot paths, on the sync `Docstore` (the async side runs the same hooks): a document by id, a
page of 50 documents, a cache hit, a rate-limiter hit. The modes take turns (rotating order)
for `--rounds` rounds; the best round of each is kept, like `timeit`. Printed per operation:
microseconds per call (wall) and this process's CPU microseconds per call (steadier on a
shared machine), and each mode's difference to `absent`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

MODES = ["absent", "api", "sdk"]
SLICES = 10
OPERATIONS = ["get document", "list 50", "cache hit", "limiter hit"]


def _setup_mode(mode: str) -> None:
    if mode == "absent":
        sys.modules["opentelemetry"] = None  # type: ignore[assignment]
        return
    if mode == "sdk":
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )

        class DroppingExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(DroppingExporter()))
        trace.set_tracer_provider(provider)
        metrics.set_meter_provider(MeterProvider(metric_readers=[InMemoryMetricReader()]))


def child(mode: str, database_url: str, redis_url: str, ops: int) -> None:
    """Run every operation `ops` times in this process; print µs per call (wall, CPU)."""
    _setup_mode(mode)
    from docstore import Docstore, Settings, observability
    from docstore.models import DocumentResponse

    observability.refresh()
    state = observability.telemetry()
    expected = {"absent": False, "api": True, "sdk": True}[mode]
    assert (state is not None) == expected, (mode, state)
    assert mode != "sdk" or state is None or state.tracer() is not None
    settings = Settings.model_validate(
        {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "pool_min_size": 1,
         "rate_limit": 10**9}
    )  # fmt: skip
    with Docstore.connect(settings) as store:
        user = store.users.get_by_email("bench@example.com")
        assert user is not None
        page = store.documents.list_for_user(user.id, limit=1)
        document = store.documents.get(page.items[0].id)
        store.cache.set("bench-document", document, ttl=3600)
        calls: dict[str, Callable[[], object]] = {
            "get document": lambda: store.documents.get(document.id),
            "list 50": lambda: store.documents.list_for_user(user.id, limit=50),
            "cache hit": lambda: store.cache.get("bench-document", DocumentResponse),
            "limiter hit": lambda: store.limiter.hit("bench-client"),
        }
        results: dict[str, dict[str, tuple[float, float]]] = {}
        for name, call in calls.items():
            for _ in range(ops // 10):  # warm up
                call()
            # Slices of `ops // SLICES` calls, telemetry off and on in turn in this process
            # (same connections, same moment): the best slice of each.
            best: dict[str, tuple[float, float]] = {}
            for slice_number in range(2 * SLICES):
                variant = "on" if slice_number % 2 else "off"
                if mode == "absent":
                    variant = "off"
                elif variant == "on":
                    observability.refresh()
                else:
                    observability.disable()
                count = max(1, ops // SLICES)
                wall, cpu = time.perf_counter(), time.process_time()
                for _ in range(count):
                    call()
                sample = (
                    (time.perf_counter() - wall) / count * 1e6,
                    (time.process_time() - cpu) / count * 1e6,
                )
                old = best.get(variant)
                best[variant] = (min(old[0], sample[0]), min(old[1], sample[1])) if old else sample
            observability.refresh()
            results[name] = best
        if mode != "absent":
            results["hooks"] = hook_costs(store)
    print(json.dumps(results))


def hook_costs(store: Any) -> dict[str, tuple[float, float]]:
    """CPU µs of the hooks each operation passes through, telemetry on and off, timed alone
    (no I/O, so steady even on a loaded machine): (on, off) per operation."""
    from docstore import observability
    from docstore.observability.database import observe_query
    from docstore.observability.messaging import count_cache, count_rate_limit
    from docstore.postgres.queries import queries

    address = store.db.address
    get_sql, list_sql = queries()["get_document"].sql, queries()["list_user_documents"].sql

    def statement(name: str, sql: str) -> Callable[[], None]:
        def run() -> None:
            with observe_query(name, sql, address):
                pass

        return run

    # What the instrumented client's wrapper does around a command (the command left out).
    def redis_command(*extra: Callable[[], None]) -> Callable[[], None]:
        from docstore.observability.redis_commands import _start

        def run() -> None:
            call = _start(store.redis_core.address, 0, ("GET", "k"))
            if call is not None:
                call.end(None)
            for hook in extra:
                hook()

        return run

    hooks = {
        "get document": statement("get_document", get_sql),
        "list 50": statement("list_user_documents", list_sql),
        "cache hit": redis_command(lambda: count_cache("hits")),
        "limiter hit": redis_command(lambda: count_rate_limit("default", True, "redis")),
    }
    found = {}
    for name, hook in hooks.items():
        timings = {}
        for variant in ("on", "off", "on", "off"):
            (observability.refresh if variant == "on" else observability.disable)()
            started = time.process_time()
            for _ in range(20_000):
                hook()
            cost = (time.process_time() - started) / 20_000 * 1e6
            timings[variant] = min(timings.get(variant, cost), cost)
        found[name] = (timings["on"], timings["off"])
    observability.refresh()
    return found


def seed(database_url: str) -> None:
    from docstore import Docstore, DocumentCreate, Settings, UserCreate

    with Docstore.connect(Settings.model_validate({"DATABASE_URL": database_url})) as store:
        user = store.users.create(UserCreate(email="bench@example.com")).user
        store.documents.create_many(
            [
                DocumentCreate(user_id=user.id, filename=f"{i}.pdf", s3_key=f"k/{i}")
                for i in range(200)
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="an existing server (a database is made on it)")
    parser.add_argument("--redis-url", help="an existing Redis (its database is flushed)")
    parser.add_argument("--ops", type=int, default=1000, help="calls per operation per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.database_url, args.redis_url, args.ops)
        return

    sys.path.insert(0, str(Path(__file__).parent))
    from bench_repositories import bench_database, bench_redis

    with ExitStack() as stack:
        database_url = stack.enter_context(bench_database(args.database_url))
        redis_url = stack.enter_context(bench_redis(args.redis_url))
        seed(database_url)
        # best[mode][operation][variant] = (wall, cpu) µs per call, the best over rounds.
        best: dict[str, dict[str, dict[str, tuple[float, float]]]] = {m: {} for m in MODES}
        for round_number in range(args.rounds):
            shift = round_number % len(MODES)
            for mode in MODES[shift:] + MODES[:shift]:
                command = [sys.executable, __file__, "--child", mode, "--ops", str(args.ops),
                           "--database-url", database_url, "--redis-url", redis_url]  # fmt: skip
                output = subprocess.run(
                    command, capture_output=True, text=True, check=True, env=dict(os.environ)
                ).stdout
                for name, variants in json.loads(output.splitlines()[-1]).items():
                    if name == "hooks":
                        for operation, (on, off) in variants.items():
                            old = best[mode].setdefault("hooks", {}).get(operation)
                            best[mode]["hooks"][operation] = (
                                (min(old[0], on), min(old[1], off)) if old else (on, off)
                            )
                        continue
                    for variant, (wall, cpu) in variants.items():
                        old = best[mode].setdefault(name, {}).get(variant)
                        best[mode][name][variant] = (
                            (min(old[0], wall), min(old[1], cpu)) if old else (wall, cpu)
                        )
        print(f"{args.ops} calls per operation per round, {args.rounds} rounds, best slice;")
        print("µs per call, wall / CPU of this process. 'off' is the same process with")
        print("docstore.observability.disable(): the pairs are measured side by side.")
        header = ["absent", "api off", "api on", "sdk off", "sdk on"]
        print(f"{'operation':<14}" + "".join(f"{h:>18}" for h in header)
              + f"{'api on/off':>18}{'sdk on/off':>18}{'api on/absent':>18}")  # fmt: skip
        for name in OPERATIONS:
            cells = [
                best["absent"][name]["off"],
                best["api"][name]["off"],
                best["api"][name]["on"],
                best["sdk"][name]["off"],
                best["sdk"][name]["on"],
            ]
            text = "".join(f"{w:>9.1f} /{c:>7.1f}" for w, c in cells)

            def ratio(on: tuple[float, float], off: tuple[float, float]) -> str:
                return f"{(on[0] / off[0] - 1) * 100:>+8.1f}% /{(on[1] / off[1] - 1) * 100:>+6.1f}%"

            text += ratio(cells[2], cells[1]) + ratio(cells[4], cells[3])
            text += ratio(cells[2], cells[0])
            print(f"{name:<14}{text}")
        print()
        print("The hooks alone (no I/O: steady on a loaded machine), CPU µs per call, and what")
        print("they add to the operation's CPU with telemetry off (the same process):")
        columns = ("api hooks on/off", "share", "sdk hooks on/off", "share")
        print(f"{'operation':<14}" + "".join(f"{c:>{20 if 'hooks' in c else 9}}" for c in columns))
        for name in OPERATIONS:
            line = f"{name:<14}"
            for mode in ("api", "sdk"):
                on, off = best[mode]["hooks"][name]
                operation_cpu = best[mode][name]["off"][1]
                line += f"{on:>11.2f} /{off:>6.2f}{(on - off) / operation_cpu * 100:>+8.1f}%"
            print(line)


if __name__ == "__main__":
    main()

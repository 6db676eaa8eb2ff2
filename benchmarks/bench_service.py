"""Benchmark the example service over HTTP: the example vs the sync example vs a seed-style app.

    pip install -e ".[bench]"
    python benchmarks/bench_service.py                      # starts PostgreSQL and Redis
    python benchmarks/bench_service.py --seconds 3 --rounds 5 --pin
    python benchmarks/bench_service.py --database-url postgresql://... --redis-url redis://...

Three apps, each in its own uvicorn process (one worker, no access log, the same `--loop` and
`--http` for all: uvloop and httptools when installed, `pip install "uvicorn[standard]"`, else
asyncio and h11), on the same PostgreSQL and Redis, with the same settings (pool of 10 + 20
connections):

- example: examples/fastapi_service.py as it is in the working tree (async once it runs on
  `AsyncDocstore`; the header line says which it found);
- sync example: benchmarks/service_sync_app.py, the frozen copy of the sync example;
- seed-style: `create_seed_app` below, what the old design would have written: sync SQLAlchemy,
  a `Session` per request from `get_db`, pool 10 + 20 with pre-ping, the key looked up through
  the ORM and a fixed-window INCR/EXPIRE limit per key in Redis; it answers the same routes with
  the same work (the page leaves the text unloaded, as docstore's does).

Scenarios: GET a document (by a random id of the user's `--seed-documents`; every run asks the
same ids in the same order, on the same cache: `--cache cold`, the default, drops every cached
document first, so most reads miss and load; `--cache warm` caches every one first, so all hit;
the report says how many each run stored), GET a page of 50, and an authenticated, rate-limited
request: the key's limit is spent beforehand, so the app authenticates it, asks the limiter and
answers 429 — the cost of the guard that every route pays. Each at 1, 16 and 64 concurrent
clients: a closed loop of that many asyncio tasks, each on its own keep-alive connection, in
this process. The connection is a small HTTP/1.1 client on asyncio streams (`RawHttp`): httpx
costs several times its CPU per request, close to half an app's, which on two cores would
measure the generator (`--client httpx` runs it anyway).

The load generator shares the two cores with the app, PostgreSQL and Redis. To keep it fair:
every app faces the same generator, whose CPU per request is printed beside the app's and the
servers' (so what bounds a rate is in view); apps take turns in short runs, in an order that
moves by one from round to round, `--rounds` times, and the median and range over rounds are
printed; `--pin` puts each app on CPU 0 (set before its exec, so every thread it starts stays
there: the sync apps' threadpool and pool threads too) and the generator on CPU 1 (PostgreSQL
and Redis float), so the generator cannot take an app's core and no app gets more than one.
`--pin-servers` (with `--pin`) also puts PostgreSQL and Redis, when this script starts them, on
CPU 1: each app then has its core to itself, and the servers' work for one app (the seed-style
app's is the largest) cannot slow that app down. The header line says the load average when the
run began: other processes on the machine are load none of this controls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import AsyncExitStack, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import redis
from bench_repositories import RESULT_TEXT, Document, User, bench_database
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, defer, sessionmaker

from docstore import Docstore, RateLimiter, RedisCache, Settings
from docstore.models import DocumentCreate, DocumentResponse, DocumentSummary, UserCreate
from docstore.redis.keys import cache_key
from docstore.repositories.api_keys import api_key_digest, is_well_formed
from docstore.testing.servers import LocalPostgres, LocalRedis, _wait_for_port, free_port

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the example's own name for a key's limit
from examples.fastapi_service import key_limit_name  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
# Per RATE_LIMIT_PERIOD (almost ten years): the allowed key never reaches it, and the spent key gets
# a unit back only every 30 s (the example's limiter is a GCRA), so it stays refused during a run.
RATE_LIMIT = 10**7
RATE_LIMIT_PERIOD = 300_000_000
SEED_LIMIT_KEY = "seed-ratelimit:{user_id}"
APP_CPU, GENERATOR_CPU = 0, 1  # --pin: each app on one, the load generator on the other


# --- The seed-style app -----------------------------------------------------------------------
# Module-level dependencies: FastAPI resolves these (string) annotations in the module's globals.


def get_db(request: Request) -> Iterator[Session]:
    """A session per request, closed after it (the old design's `get_db`)."""
    db: Session = request.app.state.sessions()
    try:
        yield db
    finally:
        db.close()


DbDep = Annotated[Session, Depends(get_db)]


def current_user(
    request: Request, db: DbDep, x_api_key: Annotated[str | None, Header()] = None
) -> User:
    """The key's user, after a fixed-window count of its requests (INCR, EXPIRE on the first)."""
    if not x_api_key or not is_well_formed(x_api_key):
        raise HTTPException(401, "missing or invalid X-API-Key")
    user = db.query(User).filter(User.api_key_hash == api_key_digest(x_api_key)).first()
    if user is None:
        raise HTTPException(401, "missing or invalid X-API-Key")
    state = request.app.state
    key = SEED_LIMIT_KEY.format(user_id=user.id)
    count = int(state.limits.incr(key))
    if count == 1:
        state.limits.expire(key, state.period)
    if count > state.limit:
        raise HTTPException(429, "rate limit exceeded", headers={"Retry-After": "60"})
    return user


UserDep = Annotated[User, Depends(current_user)]


def get_document(document_id: int, user: UserDep, db: DbDep) -> Any:
    document = db.query(Document).filter(Document.id == document_id).first()
    if document is None or document.user_id != user.id:
        raise HTTPException(404, "Document not found")
    return document


def list_documents(
    user: UserDep, db: DbDep, offset: int = 0, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> Any:
    return (
        db.query(Document)
        .options(defer(Document.result_text))
        .filter(Document.user_id == user.id)
        .order_by(Document.created_at.desc(), Document.id.desc())
        .offset(offset)
        .limit(limit)
        .all()
    )


def create_seed_app() -> FastAPI:
    """The service as the old design would have it: sync ORM sessions, INCR rate limit."""
    url = os.environ["DATABASE_URL"]
    engine = create_engine(
        "postgresql+psycopg://" + url.split("://", 1)[1],
        pool_size=10,
        max_overflow=20,
        pool_pre_ping=True,
    )
    app = FastAPI(title="seed-style service")
    app.state.sessions = sessionmaker(bind=engine, autoflush=False)
    app.state.limits = redis.Redis.from_url(os.environ["REDIS_URL"])
    app.state.limit = int(os.environ["RATE_LIMIT"])
    app.state.period = int(float(os.environ["RATE_LIMIT_PERIOD"]))
    app.get("/documents/{document_id}", response_model=DocumentResponse)(get_document)
    app.get("/documents", response_model=list[DocumentSummary])(list_documents)
    return app


# --- Servers and apps -------------------------------------------------------------------------


@dataclass
class App:
    name: str
    target: list[str]  # uvicorn's arguments naming the app
    process: subprocess.Popen[bytes] | None = None
    port: int = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def example_kind() -> str:
    source = (ROOT / "examples" / "fastapi_service.py").read_text()
    return "async (AsyncDocstore)" if "AsyncDocstore" in source else "still sync (Docstore)"


def apps() -> list[App]:
    return [
        App("example", ["examples.fastapi_service:app"]),
        App("sync example", ["--app-dir", str(BENCH_DIR), "service_sync_app:app"]),
        App(
            "seed-style",
            ["--app-dir", str(BENCH_DIR), "--factory", "bench_service:create_seed_app"],
        ),
    ]


def serving(args: argparse.Namespace) -> tuple[str, str]:
    """uvicorn's event loop and HTTP parser for every app: uvloop and httptools when installed
    (`uvicorn[standard]`), else asyncio and h11, unless given."""
    loop = args.loop or ("uvloop" if importlib.util.find_spec("uvloop") else "asyncio")
    http = args.http or ("httptools" if importlib.util.find_spec("httptools") else "h11")
    return loop, http


def start_app(app: App, env: dict[str, str], args: argparse.Namespace) -> None:
    app.port = free_port()
    loop, http = serving(args)
    command = [sys.executable, "-m", "uvicorn", *app.target, "--host", "127.0.0.1"]
    command += ["--port", str(app.port), "--no-access-log", "--log-level", "warning"]
    command += ["--loop", loop, "--http", http]

    def pin_to_app_core() -> None:
        # Before exec: every thread the app starts (its pool's, the threadpool's) inherits it.
        os.sched_setaffinity(0, {APP_CPU})

    app.process = subprocess.Popen(
        command, cwd=ROOT, env=env, preexec_fn=pin_to_app_core if args.pin else None
    )
    _wait_for_port(app.port, 60)


def pin_servers(pids: list[int]) -> None:
    """PostgreSQL's and Redis's processes on the generator's CPU (new backends inherit it from
    the postmaster)."""
    for pid in pids:
        process = psutil.Process(pid)
        for p in [process, *process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.cpu_affinity([GENERATOR_CPU])


def stop_app(app: App) -> None:
    if app.process is not None:
        app.process.terminate()
        app.process.wait(20)


@dataclass
class Backends:
    database_url: str
    redis_url: str
    pids: list[int]  # PostgreSQL's and Redis's processes, when we started them


@contextmanager
def backends(args: argparse.Namespace) -> Iterator[Backends]:
    with ExitStack() as stack:
        pids: list[int] = []
        admin_url = args.database_url
        postgres: LocalPostgres | None = None
        if admin_url is None:
            postgres = LocalPostgres()
            stack.callback(postgres.close)
            postgres.start()
            admin_url = postgres.url
        redis_url = args.redis_url
        if redis_url is None:
            local_redis = LocalRedis()
            stack.callback(local_redis.close)
            local_redis.start()
            redis_url = local_redis.url
            assert local_redis.process is not None
            pids.append(local_redis.process.pid)
        database_url = stack.enter_context(bench_database(admin_url))
        if postgres is not None:
            pid_file = postgres.data_dir / "postmaster.pid"
            pids.append(int(pid_file.read_text().splitlines()[0]))
        yield Backends(database_url, redis_url, pids)


# --- Data -------------------------------------------------------------------------------------


@dataclass
class Seeded:
    api_key: str  # a key whose limit is never reached
    limited_key: str  # a key whose limit is spent before each run (`spend_limit`)
    limited_user_id: int
    ids: list[int]  # the documents of the first key's user


def seed(settings: Settings, documents: int) -> Seeded:
    """Two users: one with `documents` COMPLETED documents, one whose rate limit is spent."""
    with Docstore.connect(settings) as store:
        user = store.users.create(UserCreate(email="bench@example.com"))
        limited = store.users.create(UserCreate(email="limited@example.com"))
        items = [
            DocumentCreate(user_id=user.user.id, filename=f"seed-{n}.pdf", s3_key=f"seed/{n}")
            for n in range(documents)
        ]
        ids = [d.id for d in store.documents.create_many(items)]
        with store.pool.connection() as conn:
            conn.execute(
                "UPDATE documents SET result_text = %s, status = 'COMPLETED'", (RESULT_TEXT,)
            )
            conn.execute("ANALYZE documents")
        return Seeded(user.api_key, limited.api_key, limited.user.id, ids)


def spend_limit(client: redis.Redis, user_id: int, api_key: str) -> None:
    """Spend the whole limit of the user's key as each app counts it: the example's `api` policy
    per key, the sync example's per user, the seed app's fixed window per user."""
    api = RateLimiter(client, limit=RATE_LIMIT, period=RATE_LIMIT_PERIOD, policy="api")
    for name in (key_limit_name(api_key), f"user-{user_id}"):
        api.reset(name)
        assert api.hit(name, cost=RATE_LIMIT).allowed
    client.set(SEED_LIMIT_KEY.format(user_id=user_id), RATE_LIMIT, ex=RATE_LIMIT_PERIOD)


def prepare_cache(mode: str, store: Docstore, ids: list[int]) -> None:
    """Before each GET run, the same cache for every app: `cold`, no document cached (the run's
    ids are spread over all of them, so most reads miss); `warm`, every document cached."""
    if mode == "warm":
        for document_id in ids:
            store.get_document(document_id)
        return
    keys = [cache_key(RedisCache.document_key(document_id)) for document_id in ids]
    for start in range(0, len(keys), 1000):
        store.redis.unlink(*keys[start : start + 1000])


# --- The load generator -----------------------------------------------------------------------


@dataclass
class Scenario:
    title: str
    key: str
    expected: int  # the status every answer should have
    by_id: bool = True  # GET /documents/{a random id}, else a page of 50

    def path(self, rng: random.Random, ids: list[int]) -> str:
        if not self.by_id:
            return "/documents?limit=50"
        return f"/documents/{ids[rng.randrange(len(ids))]}"


@dataclass
class Run:
    """One app at one concurrency for a few seconds."""

    rate: float
    p50_ms: float
    p99_ms: float
    unexpected: Counter[str] = field(default_factory=Counter)
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per request, by process
    # Keys Redis gained during the measured part, per request: on GET, the share of requests
    # whose document the app loaded and stored in the cache (the rate-limit keys already exist).
    new_keys: float = 0.0


def cpu_seconds(pids: list[int]) -> float:
    """CPU time of these processes, their live descendants and the children they reaped."""
    total = 0.0
    for pid in pids:
        try:
            process = psutil.Process(pid)
            root = process.cpu_times()
            total += root.children_user + root.children_system  # e.g. PostgreSQL backends gone
            for p in [process, *process.children(recursive=True)]:
                times = p.cpu_times()
                total += times.user + times.system
        except psutil.NoSuchProcess:
            continue
    return total


class RawHttp:
    """One keep-alive HTTP/1.1 connection on asyncio streams: GETs with Content-Length answers.

    A fraction of httpx's CPU per request, so the generator takes less of the cores it shares.
    """

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        host, port = base_url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        fields = {"Host": f"{host}:{port}", **headers}
        self.head = "".join(f"{k}: {v}\r\n" for k, v in fields.items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHttp:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()

    async def status_of_get(self, path: str) -> int:
        assert self.reader is not None and self.writer is not None
        self.writer.write(f"GET {path} HTTP/1.1\r\n{self.head}\r\n".encode())
        head = await self.reader.readuntil(b"\r\n\r\n")
        marker = b"\r\ncontent-length:"
        at = head.lower().index(marker) + len(marker)
        await self.reader.readexactly(int(head[at : head.index(b"\r\n", at)]))
        return int(head[9:12])


class HttpxHttp:
    """The same on httpx (one client, one connection), for a cross-check: `--client httpx`."""

    def __init__(self, base_url: str, headers: dict[str, str]) -> None:
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        self.client = httpx.AsyncClient(base_url=base_url, headers=headers, limits=limits)

    async def __aenter__(self) -> HttpxHttp:
        await self.client.__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.client.__aexit__(*exc)

    async def status_of_get(self, path: str) -> int:
        return (await self.client.get(path)).status_code


async def load(
    app: App,
    scenario: Scenario,
    ids: list[int],
    clients: int,
    seconds: float,
    backend_pids: list[int],
    http: type[RawHttp | HttpxHttp],
    limits: redis.Redis,
) -> Run:
    """`clients` tasks sending requests back to back for `seconds` (after a short warm-up)."""
    latencies: list[float] = []
    unexpected: Counter[str] = Counter()
    headers = {"X-API-Key": scenario.key}
    measuring = False
    deadline = 0.0

    # The same id sequences in every run, for every app (on the cache `prepare_cache` left).
    rngs = [random.Random(n) for n in range(clients)]

    async def client(c: RawHttp | HttpxHttp, rng: random.Random) -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                status = str(await c.status_of_get(scenario.path(rng, ids)))
            except (httpx.HTTPError, OSError, ValueError, asyncio.IncompleteReadError) as exc:
                status = type(exc).__name__
            if measuring:
                latencies.append(time.perf_counter() - started)
                if status != str(scenario.expected):
                    unexpected[status] += 1

    # One keep-alive connection per task, made before anything is timed (an httpx client costs
    # milliseconds to make: its TLS context).
    async with AsyncExitStack() as stack:
        sessions: list[RawHttp | HttpxHttp] = [
            await stack.enter_async_context(http(app.base_url, headers)) for _ in range(clients)
        ]
        deadline = time.perf_counter() + 0.5  # warm-up: connections, pools, prepared statements
        await asyncio.gather(*(client(c, rng) for c, rng in zip(sessions, rngs, strict=True)))
        assert app.process is not None
        measuring = True
        keys_before = int(limits.dbsize())
        before = (time.process_time(), cpu_seconds([app.process.pid]), cpu_seconds(backend_pids))
        started = time.perf_counter()
        deadline = started + seconds
        await asyncio.gather(*(client(c, rng) for c, rng in zip(sessions, rngs, strict=True)))
        elapsed = time.perf_counter() - started
        after = (time.process_time(), cpu_seconds([app.process.pid]), cpu_seconds(backend_pids))
        keys_after = int(limits.dbsize())
    count = len(latencies)
    latencies.sort()
    cpu = {
        name: (after[i] - before[i]) * 1000 / max(count, 1)
        for i, name in enumerate(["generator", "app", "postgres+redis"])
    }
    return Run(
        rate=count / elapsed,
        p50_ms=latencies[count // 2] * 1000,
        p99_ms=latencies[min(count - 1, int(count * 0.99))] * 1000,
        unexpected=unexpected,
        cpu_ms=cpu,
        new_keys=(keys_after - keys_before) / max(count, 1),
    )


# --- Report -----------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def span(values: list[float], digits: int = 0) -> str:
    return f"{min(values):,.{digits}f}-{max(values):,.{digits}f}"


def print_results(
    results: dict[tuple[str, int, str], list[Run]],
    scenarios: list[Scenario],
    concurrencies: list[int],
    app_names: list[str],
) -> None:
    print(
        f"\n{'scenario':<22}{'clients':>8}  {'app':<14}{'req/s median':>13}{'(range)':>16}"
        f"{'p50 ms':>8}{'p99 ms':>8}   CPU ms/request: generator / app / postgres+redis"
    )
    for scenario in scenarios:
        for clients in concurrencies:
            for name in app_names:
                runs = results[(scenario.title, clients, name)]
                rates = [r.rate for r in runs]
                cpu = {k: median([r.cpu_ms[k] for r in runs]) for k in runs[0].cpu_ms}
                wrong = sum((r.unexpected for r in runs), Counter())
                print(
                    f"{scenario.title:<22}{clients:>8}  {name:<14}{median(rates):>13,.0f}"
                    f"{'(' + span(rates) + ')':>16}"
                    f"{median([r.p50_ms for r in runs]):>8.1f}"
                    f"{median([r.p99_ms for r in runs]):>8.1f}   "
                    + " / ".join(f"{v:.2f}" for v in cpu.values())
                    + (f"   UNEXPECTED {dict(wrong)}" if wrong else "")
                )
    get = scenarios[0].title
    cached_apps = [name for name in app_names if name != "seed-style"]  # it caches nothing
    for clients in concurrencies:
        loaded = [
            f"{n} {median([r.new_keys for r in results[(get, clients, n)]]):.0%}"
            for n in cached_apps
        ]
        print(
            f"{get} at {clients} clients, documents stored in the cache per request: "
            + ", ".join(loaded)
            + " (the sync example reads the cache but never fills it)"
        )
    print("\ntarget at 64 clients: example >= 1.5x the sync example and >= 3x seed-style req/s,")
    print("with a lower p99 (ratios of medians; range: the same ratio round by round)")
    for scenario in scenarios:
        at_max = {name: results[(scenario.title, max(concurrencies), name)] for name in app_names}
        verdicts = []
        for other, goal in [("sync example", 1.5), ("seed-style", 3.0)]:
            ratio = median([r.rate for r in at_max["example"]]) / median(
                [r.rate for r in at_max[other]]
            )
            by_round = [
                a.rate / b.rate for a, b in zip(at_max["example"], at_max[other], strict=True)
            ]
            lower_p99 = median([r.p99_ms for r in at_max["example"]]) < median(
                [r.p99_ms for r in at_max[other]]
            )
            verdicts.append(
                f"vs {other} {ratio:.2f}x ({span(by_round, 2)}) "
                f"{'ok' if ratio >= goal else 'MISSED'}, p99 "
                f"{'lower' if lower_p99 else 'NOT lower'}"
            )
        print(f"  {scenario.title:<22} " + "; ".join(verdicts))


# --- Main -------------------------------------------------------------------------------------


async def bench(
    services: list[App],
    seeded: Seeded,
    args: argparse.Namespace,
    backend_pids: list[int],
    limits: redis.Redis,
    store: Docstore,
) -> dict[tuple[str, int, str], list[Run]]:
    scenarios = [
        Scenario("GET a document", seeded.api_key, 200),
        Scenario("list a page of 50", seeded.api_key, 200, by_id=False),
        Scenario("rate-limited (429)", seeded.limited_key, 429),
    ]
    results: dict[tuple[str, int, str], list[Run]] = {}
    http = HttpxHttp if args.client == "httpx" else RawHttp
    for round_number in range(args.rounds):
        turn = round_number  # each run's order of apps moves by one from round to round
        for scenario in scenarios:
            for clients in args.clients:
                shift = turn % len(services)
                turn += 1
                for app in services[shift:] + services[:shift]:
                    if scenario.expected == 429:
                        spend_limit(limits, seeded.limited_user_id, seeded.limited_key)
                    if scenario.by_id and scenario.expected == 200:
                        prepare_cache(args.cache, store, seeded.ids)
                    run = await load(
                        app, scenario, seeded.ids, clients, args.seconds, backend_pids, http, limits
                    )
                    results.setdefault((scenario.title, clients, app.name), []).append(run)
    print_results(results, scenarios, args.clients, [app.name for app in services])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="admin URL of a server (default: start one)")
    parser.add_argument("--redis-url", help="a Redis to use (default: start one); FLUSHDB first")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one measured run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--seed-documents", type=int, default=10_000)
    parser.add_argument(
        "--client",
        choices=["raw", "httpx"],
        default="raw",
        help="load generator's HTTP client: asyncio streams (default) or httpx",
    )
    parser.add_argument("--pin", action="store_true", help="app on CPU 0, load generator on CPU 1")
    parser.add_argument(
        "--pin-servers",
        action="store_true",
        help="with --pin: PostgreSQL and Redis (when started here) on CPU 1 too",
    )
    parser.add_argument(
        "--cache",
        choices=["cold", "warm"],
        default="cold",
        help="before each GET run: no document cached (default), or every one",
    )
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], help="uvicorn's loop, every app")
    parser.add_argument("--http", choices=["h11", "httptools"], help="uvicorn's HTTP, every app")
    args = parser.parse_args()
    if args.pin_servers and not (args.pin and args.database_url is None and args.redis_url is None):
        parser.error("--pin-servers needs --pin and servers started here (no --*-url)")

    with backends(args) as servers, ExitStack() as stack:
        env = {
            **os.environ,
            "DATABASE_URL": servers.database_url,
            "REDIS_URL": servers.redis_url,
            "RATE_LIMIT": str(RATE_LIMIT),
            "RATE_LIMIT_PERIOD": str(RATE_LIMIT_PERIOD),
        }
        settings = Settings.model_validate(
            {"DATABASE_URL": servers.database_url, "REDIS_URL": servers.redis_url}
        )
        limits = redis.Redis.from_url(servers.redis_url)
        limits.flushdb()
        seeded = seed(settings, args.seed_documents)
        services = apps()
        for app in services:
            stack.callback(stop_app, app)
            start_app(app, env, args)
        if args.pin:
            os.sched_setaffinity(0, {GENERATOR_CPU})
        if args.pin_servers:
            pin_servers(servers.pids)
        loop, http = serving(args)
        print(
            f"example: {example_kind()}; {args.rounds} rounds of {args.seconds:g} s per app, "
            f"scenario and concurrency; {os.cpu_count()} CPUs; {args.client} client; "
            f"uvicorn --loop {loop} --http {http} for every app; GET on a {args.cache} cache; "
            "load average "
            + " ".join(f"{v:.2f}" for v in os.getloadavg())
            + (
                f"; apps on CPU {APP_CPU}, load generator on CPU {GENERATOR_CPU}"
                + (" with PostgreSQL and Redis" if args.pin_servers else "")
                if args.pin
                else "; nothing pinned"
            )
        )
        store = stack.enter_context(Docstore.connect(settings))
        asyncio.run(bench(services, seeded, args, servers.pids, limits, store))
        print("load average at the end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()

"""Benchmark AsyncDocstore vs raw async psycopg (the floor), SQLAlchemy's asyncio ORM, asyncpg.

    pip install -e ".[bench]"
    python benchmarks/bench_async.py                        # starts a throwaway PostgreSQL
    python benchmarks/bench_async.py --database-url postgresql://... --rounds 5 --ops 1000

The database named in the URL gets a fresh copy of the schema in a new database beside it
(dropped at the end). All variants run in one process on one event loop (asyncio's default)
against the same server, in two modes:

- one task at a time: each call awaited before the next (latency: the library's overhead shows
  as a share of one round trip);
- 64 tasks at once: 64 tasks share each variant's pool of `--pool-size` connections (throughput:
  the library's CPU per call competes with the event loop's, and the pool hands off).

Variants take turns in short slices (rotating order), so load from other processes hits them
alike; the best slice of each is printed, like `timeit`, and beside each ratio the range of that
ratio over the rounds (every round opens new pools), so the spread is in plain view.

- docstore: `AsyncDocstore`'s `users` / `documents` / `lifecycle`, returning pydantic models;
  on a Redis of its own (`--redis-url`, default: a throwaway one). None of these calls talks
  to it: a lifecycle step changes an unfinished document, and only finished ones are cached;
- raw psycopg: the same named SQL from `sql/` on a `psycopg_pool.AsyncConnectionPool` checked on
  checkout like docstore's (docstore's `AsyncCheckedPool`: a round trip only for a connection
  idle for POOL_CHECK_IDLE_AFTER, default 2 s, or whose socket is readable), in autocommit,
  rows as tuples; "no check" is the same without any check;
- SQLAlchemy asyncio ORM: the mapped classes of bench_repositories.py on `create_async_engine`
  (psycopg, pre-ping), an `AsyncSession` per call, converted to the same pydantic models;
- asyncpg: the same SQL with `$n` placeholders on an `asyncpg` pool, rows as Records — a
  reference for what a different driver costs, not a floor for docstore (which runs on psycopg).

Operations: get a document by id, authenticate an API key, create a document, list a page of
50, claim the next pending document then complete it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import asyncpg
import psycopg
import psycopg_pool
from bench_repositories import (
    FAR_FUTURE,
    RESULT_TEXT,
    WORKER,
    Document,
    User,
    bench_database,
    bench_redis,
)
from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import defer

from docstore import AsyncDocstore, Docstore, Settings
from docstore.models import (
    DocumentCreate,
    DocumentResponse,
    DocumentSummary,
    UserCreate,
    UserResponse,
)
from docstore.postgres.pool_async import AsyncCheckedPool
from docstore.postgres.queries import queries
from docstore.repositories.api_keys import api_key_digest, is_well_formed

STATUSES = ["PENDING", "PROCESSING", "COMPLETED", "FAILED"]
Call = Callable[[], Awaitable[object]]


# --- SQLAlchemy's asyncio ORM (what a team would otherwise write) ---------------------------


class AsyncOrmRepos:
    """The five operations with `AsyncSession`s, returning docstore's pydantic models."""

    def __init__(self, url: str, pool_size: int) -> None:
        self.engine: AsyncEngine = create_async_engine(
            "postgresql+psycopg://" + url.split("://", 1)[1],
            pool_size=pool_size,
            max_overflow=0,
            pool_pre_ping=True,  # like the old design, and like docstore's checked pool
        )
        self.sessions = async_sessionmaker(self.engine)

    async def get(self, document_id: int) -> DocumentResponse:
        async with self.sessions() as session:
            document = await session.get(Document, document_id)
            assert document is not None
            return DocumentResponse.model_validate(document)

    async def authenticate(self, api_key: str) -> UserResponse | None:
        if not is_well_formed(api_key):
            return None
        async with self.sessions() as session:
            result = await session.scalars(
                select(User).where(User.api_key_hash == api_key_digest(api_key))
            )
            user = result.first()
            if user is None:
                return None
            now = datetime.now(timezone.utc)
            last = user.api_key_last_used_at
            if last is None or (now - last).total_seconds() > 60:
                user.api_key_last_used_at = now
                await session.commit()
            return UserResponse.model_validate(user)

    async def create(self, item: DocumentCreate) -> DocumentResponse:
        async with self.sessions() as session:
            # The ORM model maps no idempotency or content hash columns (None here anyway).
            fields = item.model_dump(exclude={"idempotency_key", "content_sha256"})
            document = Document(**fields)
            session.add(document)
            await session.commit()
            await session.refresh(document)
            return DocumentResponse.model_validate(document)

    async def list_page(self, user_id: int, limit: int) -> list[DocumentSummary]:
        async with self.sessions() as session:
            rows = await session.scalars(
                select(Document)
                .options(defer(Document.result_text))
                .where(Document.user_id == user_id)
                .where(tuple_(Document.created_at, Document.id) < tuple_(FAR_FUTURE, 2**63 - 1))
                .order_by(Document.created_at.desc(), Document.id.desc())
                .limit(limit)
            )
            return [DocumentSummary.model_validate(d) for d in rows.all()]

    async def claim_and_complete(self) -> DocumentResponse:
        async with self.sessions() as session:
            result = await session.scalars(
                select(Document)
                .where(Document.status == "PENDING")
                .order_by(Document.created_at, Document.id)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            document = result.first()
            assert document is not None, "no PENDING document left to claim"
            document.status = "PROCESSING"
            document.worker_id = WORKER
            document.started_at = func.now()
            document.lease_expires_at = func.now() + func.make_interval(0, 0, 0, 0, 0, 0, 300)
            document.attempts = Document.attempts + 1
            claimed_id = document.id
            await session.commit()
        async with self.sessions() as session:
            # Read under a row lock, check in Python, write: the usual ORM shape.
            document = await session.get(Document, claimed_id, with_for_update=True)
            assert document is not None and document.status == "PROCESSING"
            assert document.worker_id == WORKER
            document.status = "COMPLETED"
            document.result_text = RESULT_TEXT
            document.page_count = 3
            document.extraction_time_seconds = 1.5
            document.lease_expires_at = None
            document.completed_at = func.now()
            document.updated_at = func.now()
            await session.commit()
            await session.refresh(document)
            return DocumentResponse.model_validate(document)

    async def close(self) -> None:
        await self.engine.dispose()


# --- Raw async psycopg and asyncpg with the same SQL -----------------------------------------


def page_params(user_id: int, limit: int) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "statuses": STATUSES,
        "before_created_at": FAR_FUTURE,
        "before_id": 2**63 - 1,
        "limit": limit + 1,
    }


def complete_params(document_id: int) -> dict[str, Any]:
    return {
        "document_id": document_id,
        "worker_id": WORKER,
        "result_text": RESULT_TEXT,
        "page_count": 3,
        "extraction_time_seconds": 1.5,
    }


async def _autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.set_autocommit(True)


class RawAsyncRepos:
    """The five operations as bare async psycopg calls on docstore's own SQL; rows stay tuples."""

    def __init__(self, url: str, pool_size: int, check_idle_after: float | None) -> None:
        """`check_idle_after`: docstore's check (see `AsyncCheckedPool`); None: no check."""
        options: dict[str, Any] = {
            "min_size": pool_size,
            "max_size": pool_size,
            "configure": _autocommit,  # one statement needs no BEGIN/COMMIT round trips
            "open": False,
        }
        self.pool: psycopg_pool.AsyncConnectionPool = (
            # The check docstore's pools make (POOL_CHECK_IDLE_AFTER, its default): part of the
            # pool's configuration, not of the library's code, so the floor makes it too.
            AsyncCheckedPool(url, check_idle_after=check_idle_after, **options)
            if check_idle_after is not None
            else psycopg_pool.AsyncConnectionPool(url, **options)
        )
        self.sql = {name: query.sql for name, query in queries().items()}

    async def open(self) -> None:
        await self.pool.open(wait=True)

    async def _one(self, name: str, params: dict[str, Any]) -> Any:
        async with self.pool.connection() as conn:
            cur = await conn.execute(self.sql[name], params)
            return await cur.fetchone()

    async def get(self, document_id: int) -> Any:
        return await self._one("get_document", {"document_id": document_id})

    async def authenticate(self, api_key: str) -> Any:
        digest = hashlib.sha256(api_key.encode()).digest()
        return await self._one("authenticate_user", {"api_key_hash": digest})

    async def create(self, item: DocumentCreate) -> Any:
        return await self._one("insert_document", item.model_dump())

    async def list_page(self, user_id: int, limit: int) -> list[Any]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(self.sql["list_user_documents"], page_params(user_id, limit))
            return (await cur.fetchall())[:limit]

    async def claim_and_complete(self) -> Any:
        claimed = await self._one(
            "claim_next_document",
            {"worker_id": WORKER, "lease_seconds": 300.0, "max_processing": None},
        )
        assert claimed is not None, "no PENDING document left to claim"
        return await self._one("complete_document", complete_params(claimed[0]))

    async def close(self) -> None:
        await self.pool.close()


def positional(sql_text: str) -> tuple[str, list[str]]:
    """`%(name)s` and `%(name)b` (binary) placeholders as asyncpg's `$n`, and the names in `$n`
    order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)[sb]", number, sql_text), names


class AsyncpgRepos:
    """The five operations on asyncpg with docstore's SQL (placeholders renumbered)."""

    def __init__(self, url: str, pool_size: int) -> None:
        self.url = url
        self.pool_size = pool_size
        self.sql = {name: positional(query.sql) for name, query in queries().items()}
        self.pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        self.pool = await asyncpg.create_pool(
            self.url, min_size=self.pool_size, max_size=self.pool_size
        )

    async def _fetch(self, name: str, params: dict[str, Any]) -> list[asyncpg.Record]:
        assert self.pool is not None
        text, names = self.sql[name]
        rows: list[asyncpg.Record] = await self.pool.fetch(text, *[params[n] for n in names])
        return rows

    async def _one(self, name: str, params: dict[str, Any]) -> asyncpg.Record | None:
        rows = await self._fetch(name, params)
        return rows[0] if rows else None

    async def get(self, document_id: int) -> Any:
        return await self._one("get_document", {"document_id": document_id})

    async def authenticate(self, api_key: str) -> Any:
        digest = hashlib.sha256(api_key.encode()).digest()
        return await self._one("authenticate_user", {"api_key_hash": digest})

    async def create(self, item: DocumentCreate) -> Any:
        return await self._one("insert_document", item.model_dump())

    async def list_page(self, user_id: int, limit: int) -> list[Any]:
        return (await self._fetch("list_user_documents", page_params(user_id, limit)))[:limit]

    async def claim_and_complete(self) -> Any:
        claimed = await self._one(
            "claim_next_document",
            {"worker_id": WORKER, "lease_seconds": 300.0, "max_processing": None},
        )
        assert claimed is not None, "no PENDING document left to claim"
        return await self._one("complete_document", complete_params(claimed[0]))

    async def close(self) -> None:
        if self.pool is not None:
            await self.pool.close()


# --- Harness ----------------------------------------------------------------------------------


class Clients:
    """One pool per variant, on new server connections, all of `pool_size` connections."""

    def __init__(self, url: str, pool_size: int, check_idle_after: float, redis_url: str) -> None:
        settings = Settings.model_validate(
            {
                "DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "pool_min_size": pool_size,
                "pool_max_overflow": 0,
                "pool_check_idle_after": check_idle_after,
            }
        )
        self.store = AsyncDocstore(settings)
        self.raw = RawAsyncRepos(url, pool_size, check_idle_after)
        self.unchecked = RawAsyncRepos(url, pool_size, None)
        self.orm = AsyncOrmRepos(url, pool_size)
        self.asyncpg = AsyncpgRepos(url, pool_size)

    async def open(self) -> None:
        await self.store.open()
        await self.raw.open()
        await self.unchecked.open()
        await self.asyncpg.open()

    async def close(self) -> None:
        await self.store.close()
        await self.raw.close()
        await self.unchecked.close()
        await self.orm.close()
        await self.asyncpg.close()


Variants = Callable[[Clients], dict[str, Call]]
VARIANTS = ["docstore", "raw psycopg", "SQLAlchemy ORM", "asyncpg", "raw, no check"]


async def rate(call: Call, tasks: int, calls_per_task: int) -> tuple[float, float]:
    """Calls per second, and this process's CPU microseconds per call, of `tasks` tasks each
    awaiting `call` `calls_per_task` times in turn."""

    async def one_task() -> None:
        for _ in range(calls_per_task):
            await call()

    start, cpu_start = time.perf_counter(), time.process_time()
    if tasks == 1:
        await one_task()
    else:
        await asyncio.gather(*(one_task() for _ in range(tasks)))
    calls = tasks * calls_per_task
    cpu_us = (time.process_time() - cpu_start) * 1e6 / calls
    return calls / (time.perf_counter() - start), cpu_us


@dataclass
class Mode:
    """How many tasks call at once, and how many calls each makes in one slice."""

    title: str
    tasks: int
    calls_per_task: int

    @property
    def slice_calls(self) -> int:
        return self.tasks * self.calls_per_task


@dataclass
class Result:
    """One operation in one mode: each round's best calls/s per variant, and the lowest CPU
    microseconds per call seen (of this process: the library's own cost, less sensitive than
    a rate to other processes on the machine)."""

    title: str
    per_round: list[dict[str, float]]
    cpu_us: dict[str, float]


async def run_rounds(
    url: str, variants: Variants, mode: Mode, args: argparse.Namespace
) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Per round, the best slice of each variant (calls per second); the lowest CPU per call."""
    per_round: list[dict[str, float]] = []
    cpu_us: dict[str, float] = {}
    ops, rounds = args.ops, args.rounds
    for _ in range(rounds):
        clients = Clients(url, args.pool_size, args.check_idle_after, args.redis_url)
        await clients.open()
        try:
            calls = variants(clients)
            for call in calls.values():  # warm up: prepared statements, caches, the pool
                await rate(call, mode.tasks, 2)
            names = list(calls)
            best: dict[str, float] = dict.fromkeys(names, 0.0)
            for turn in range(max(1, ops // mode.slice_calls)):
                shift = turn % len(names)
                for name in names[shift:] + names[:shift]:
                    sample, cpu = await rate(calls[name], mode.tasks, mode.calls_per_task)
                    best[name] = max(best[name], sample)
                    cpu_us[name] = min(cpu_us.get(name, cpu), cpu)
            per_round.append(best)
        finally:
            await clients.close()
    return per_round, cpu_us


def spread(per_round: list[dict[str, float]], ratio: Callable[[dict[str, float]], float]) -> str:
    values = [ratio(r) for r in per_round]
    return f"{min(values):.2f}-{max(values):.2f}"


@dataclass
class Seeded:
    user_id: int
    api_key: str
    ids: list[int]
    version: str


def seed(url: str, documents: int) -> Seeded:
    """One user with `documents` COMPLETED documents (~2 KB of text each)."""
    store = Docstore.connect(Settings.model_validate({"DATABASE_URL": url, "pool_min_size": 1}))
    try:
        created = store.users.create(UserCreate(email="bench@example.com"))
        items = [
            DocumentCreate(user_id=created.user.id, filename=f"seed-{n}.pdf", s3_key=f"seed/{n}")
            for n in range(documents)
        ]
        ids = [d.id for d in store.documents.create_many(items)]
        with store.pool.connection() as conn:
            conn.execute(
                "UPDATE documents SET result_text = %s, status = 'COMPLETED'", (RESULT_TEXT,)
            )
        version = str(store.health().postgres_version)
        return Seeded(created.user.id, created.api_key, ids, version)
    finally:
        store.close()


def add_pending(url: str, user_id: int, count: int) -> None:
    """`count` PENDING documents for claim + complete to take (each call takes one)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO documents (user_id, filename, s3_key)"
            " SELECT %s, 'todo.pdf', 'todo/' || n FROM generate_series(1, %s) AS n",
            (user_id, count),
        )
        conn.execute("ANALYZE documents")


def operations(seeded: Seeded, rng: random.Random) -> list[tuple[str, Variants]]:
    """Each operation's variants, given a docstore call and the call shared by the others."""

    def doc_id() -> int:
        return seeded.ids[rng.randrange(len(seeded.ids))]

    def item() -> DocumentCreate:
        return DocumentCreate(user_id=seeded.user_id, filename="new.pdf", s3_key="uploads/new.pdf")

    async def claim_complete(store: AsyncDocstore) -> object:
        claimed = await store.lifecycle.claim_next(WORKER)
        assert claimed is not None, "no PENDING document left to claim"
        return await store.lifecycle.mark_completed(claimed.id, WORKER, RESULT_TEXT, 3, 1.5)

    def variants(
        docstore: Callable[[AsyncDocstore], Awaitable[object]],
        bare: Callable[[Any], Awaitable[object]],
    ) -> Variants:
        return lambda c: {
            "docstore": lambda: docstore(c.store),
            "raw psycopg": lambda: bare(c.raw),
            "SQLAlchemy ORM": lambda: bare(c.orm),
            "asyncpg": lambda: bare(c.asyncpg),
            "raw, no check": lambda: bare(c.unchecked),
        }

    key, user = seeded.api_key, seeded.user_id
    return [
        (
            "get document by id",
            variants(lambda s: s.documents.get(doc_id()), lambda r: r.get(doc_id())),
        ),
        (
            "authenticate",
            variants(lambda s: s.users.authenticate(key), lambda r: r.authenticate(key)),
        ),
        (
            "create document",
            variants(lambda s: s.documents.create(item()), lambda r: r.create(item())),
        ),
        (
            "list a page of 50",
            variants(
                lambda s: s.documents.list_for_user(user, limit=50), lambda r: r.list_page(user, 50)
            ),
        ),
        # docstore's steps drop no cached copy: only finished documents are cached.
        ("claim + complete", variants(claim_complete, lambda r: r.claim_and_complete())),
    ]


def print_table(mode: Mode, results: list[Result]) -> None:
    print(f"\n{mode.title}: best calls/s (ratio: best of all rounds, then its range over rounds)")
    header = (
        f"{'operation':<20}"
        + "".join(f"{name:>15}" for name in VARIANTS)
        + f"{'raw/docstore':>22}{'docstore/ORM':>22}{'asyncpg/docstore':>18}"
    )
    print(header)
    for result in results:
        title, per_round = result.title, result.per_round
        best = {name: max(r[name] for r in per_round) for name in VARIANTS}
        floor = best["raw psycopg"] / best["docstore"]
        orm = best["docstore"] / best["SQLAlchemy ORM"]
        floor_range = spread(per_round, lambda r: r["raw psycopg"] / r["docstore"])
        orm_range = spread(per_round, lambda r: r["docstore"] / r["SQLAlchemy ORM"])
        print(
            f"{title:<20}"
            + "".join(f"{best[name]:>15,.0f}" for name in VARIANTS)
            + f"{floor:>9.2f}x ({floor_range:>9})"
            + f"{orm:>9.2f}x ({orm_range:>9})"
            + f"{best['asyncpg'] / best['docstore']:>17.2f}x"
        )
    print(f"{'  CPU µs per call':<20}" + "".join(f"{name:>15}" for name in VARIANTS))
    for result in results:
        print(
            f"{'  ' + result.title:<20}"
            + "".join(f"{result.cpu_us[name]:>15,.0f}" for name in VARIANTS)
        )


def print_verdicts(tables: dict[str, list[Result]]) -> None:
    print("\ntarget: raw/docstore <= 1.2x one task at a time; docstore/ORM >= 3x")
    for mode_title, results in tables.items():
        for result in results:
            title = result.title
            best = {name: max(r[name] for r in result.per_round) for name in VARIANTS}
            floor = best["raw psycopg"] / best["docstore"]
            orm = best["docstore"] / best["SQLAlchemy ORM"]
            floor_verdict = ("ok" if floor <= 1.2 else "MISSED") if "one" in mode_title else "-"
            print(
                f"  {mode_title:<20} {title:<20} floor: {floor_verdict:<6} "
                f"ORM: {'ok' if orm >= 3 else 'MISSED'}"
            )


async def bench(url: str, seeded: Seeded, args: argparse.Namespace) -> None:
    modes = [
        Mode("one task at a time", 1, 50),
        Mode(f"{args.tasks} tasks at once", args.tasks, 4),
    ]
    tables: dict[str, list[Result]] = {}
    rng = random.Random(7)
    for mode in modes:
        results: list[Result] = []
        for title, variants in operations(seeded, rng):
            if title.startswith("claim"):
                warm = mode.tasks * 2
                slices = max(1, args.ops // mode.slice_calls)
                per_round = len(VARIANTS) * (warm + slices * mode.slice_calls)
                add_pending(url, seeded.user_id, args.rounds * per_round + mode.slice_calls)
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ANALYZE documents")  # the table grows with every create
            per_round_rates = await run_rounds(url, variants, mode, args)
            results.append(Result(title, *per_round_rates))
        tables[mode.title] = results
        print_table(mode, results)
    print_verdicts(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="admin URL of a server (default: start one)")
    parser.add_argument("--ops", type=int, default=600, help="calls per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=64, help="tasks of the concurrent mode")
    parser.add_argument("--pool-size", type=int, default=10, help="connections of every pool")
    parser.add_argument("--seed-documents", type=int, default=10_000)
    parser.add_argument("--redis-url", help="the store's Redis (default: start one)")
    parser.add_argument(
        "--check-idle-after",
        type=float,
        default=Settings.model_validate({}).pool_check_idle_after,
        help="POOL_CHECK_IDLE_AFTER of docstore's pool and the floor's (0: check every checkout)",
    )
    args = parser.parse_args()

    with bench_database(args.database_url) as url, bench_redis(args.redis_url) as redis_url:
        args.redis_url = redis_url
        seeded = seed(url, args.seed_documents)
        print(
            f"PostgreSQL {seeded.version}, asyncio default loop, pools of {args.pool_size}, "
            f"{args.rounds} rounds of {args.ops} calls per variant, connections checked by a "
            f"round trip after {args.check_idle_after:g} s idle; load average "
            + " ".join(f"{v:.2f}" for v in os.getloadavg())
        )
        asyncio.run(bench(url, seeded, args))
        print("load average at the end: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))


if __name__ == "__main__":
    main()

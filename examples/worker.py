"""A document worker: takes queued documents, extracts their text, records the result.

Run:  docstore schema apply                  (once per database)
      python examples/worker.py [--worker-id NAME] [--concurrency N]
      (settings from the environment, WORKER_CONCURRENCY too)

One process works on `--concurrency` documents at once (env WORKER_CONCURRENCY, default 4): that
many asyncio tasks on one `AsyncDocstore`, task i calling `process_next` as worker ``NAME-i``.
Extraction runs on threads, so the tasks overlap their S3, PostgreSQL and extraction time. PDFs
are read with pypdf, plain text as is; progress is reported per page (`--extractor` plugs in
another extractor, e.g. OCR).

SIGTERM or Ctrl-C stops it gracefully: no new document is taken, the ones in hand are finished,
then the worker exits 0. With `--shutdown-grace SECONDS` (env WORKER_SHUTDOWN_GRACE; set it below
your orchestrator's kill timeout) the ones still in hand after that long are stopped half way:
docstore hands each back as a failed attempt, retried after its backoff by another worker.
Whenever the queue is empty, `process_next` itself claims from PostgreSQL
what has no message (lost messages, migrated work, expired leases), so work migrated just before
the start is taken at once. Every `--requeue-every` seconds it also calls `requeue_stuck`, which
re-enqueues such documents for busy workers too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import logging
import os
import signal
import socket
import sys
from concurrent.futures import ThreadPoolExecutor

from docstore import (
    AsyncDocstore,
    ConfigurationError,
    DocstoreError,
    Extractor,
    InvalidInput,
    ServiceUnavailable,
)
from docstore.rules import Checker, WorkerId, check_function

logger = logging.getLogger("worker")

DEFAULT_EXTRACTOR = "docstore.intake.extractors:extract_text"
RETRY_AFTER_OUTAGE = 1.0
check_worker_id: Checker[str] = Checker(WorkerId, "worker_id")


async def sleep_unless_stopped(stop: asyncio.Event, seconds: float) -> None:
    """Wait `seconds`, or less if `stop` is set meanwhile."""
    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def process_documents(
    store: AsyncDocstore,
    worker_id: str,
    extract: Extractor,
    stop: asyncio.Event,
    idle_block_ms: int,
    cut_off: asyncio.Event | None = None,
) -> int:
    """One task's loop: a document at a time until `stop` is set; returns how many it handled.
    Cancelled once `cut_off` is set, it returns too: docstore handed its document back."""
    handled = 0
    try:
        while not stop.is_set():
            try:
                # Asked again after the wait for a message: a SIGTERM meanwhile claims nothing.
                outcome = await store.process_next(
                    worker_id, extract, block_ms=idle_block_ms, stopping=stop.is_set
                )
            except ServiceUnavailable as exc:
                logger.warning(
                    "%s: %s; retrying in %.0f s", worker_id, exc.message, RETRY_AFTER_OUTAGE
                )
                await sleep_unless_stopped(stop, RETRY_AFTER_OUTAGE)
                continue
            except ConfigurationError:
                raise  # settings that cannot work: the process ends and says why
            except DocstoreError as exc:
                # A deadlock, a serialization failure, a Redis that refuses a command: this
                # turn failed, not the worker. Its document (if it had one) is handed back by
                # docstore or by its lease; the next turn goes on.
                logger.error(
                    "%s: %s; going on in %.0f s", worker_id, exc.message, RETRY_AFTER_OUTAGE
                )
                await sleep_unless_stopped(stop, RETRY_AFTER_OUTAGE)
                continue
            if outcome is not None:
                handled += 1
                logger.info(
                    "%s: document %s %s %s",
                    worker_id,
                    outcome.document_id,
                    outcome.action,
                    outcome.detail,
                )
    except asyncio.CancelledError:
        if cut_off is None or not cut_off.is_set():
            raise
        logger.warning("%s: stopped half way by the shutdown grace", worker_id)
    return handled


async def cut_off_after_grace(
    stop: asyncio.Event,
    grace: float,
    tasks: list[asyncio.Task[int]],
    requeuer: asyncio.Task[None],
    cut_off: asyncio.Event,
) -> None:
    """Once `stop` is set, give the tasks `grace` seconds to finish their documents, then
    cancel those still at work (docstore hands their documents back as failed attempts), and
    a `requeue_stuck` still running."""
    await stop.wait()
    _, pending = await asyncio.wait([*tasks, requeuer], timeout=grace)
    if pending:
        at_work = len(pending - {requeuer})
        logger.warning("shutdown grace of %g s is over: %d task(s) stopped", grace, at_work)
        cut_off.set()
        for task in pending:
            task.cancel()


async def requeue_periodically(store: AsyncDocstore, stop: asyncio.Event, every: float) -> None:
    """Call `requeue_stuck` now and every `every` seconds until `stop` is set."""
    while not stop.is_set():
        try:
            report = await store.requeue_stuck()
        except DocstoreError as exc:  # PostgreSQL away, Redis refusing: the next turn tries again
            logger.warning("requeue_stuck: %s", exc.message)
        except Exception:  # never end the loop: a worker with a backlog is never idle to do it
            logger.exception("requeue_stuck failed; trying again in %g s", every)
        else:
            if report.requeued:
                logger.info("requeued %d stuck document(s)", report.requeued)
        await sleep_unless_stopped(stop, every)


async def run_worker(
    store: AsyncDocstore,
    worker_id: str,
    stop: asyncio.Event,
    *,
    concurrency: int = 4,
    extract: Extractor | None = None,
    requeue_every: float = 30.0,
    idle_block_ms: int = 1000,
    shutdown_grace: float | None = None,
) -> int:
    """Run `concurrency` document tasks until `stop` is set and each has finished its document
    (or, with `shutdown_grace`, until that many seconds after `stop`: the rest are handed
    back); returns how many documents were handled."""
    if extract is None:
        extract = load_extractor(DEFAULT_EXTRACTOR)
    # Each task needs a thread for its blob download and extractor: asyncio's default pool (at
    # most cores + 4 threads) would leave claimed documents waiting, their leases running out.
    threads = ThreadPoolExecutor(concurrency + 4, thread_name_prefix=f"{worker_id}-extract")
    asyncio.get_running_loop().set_default_executor(threads)
    requeuer = asyncio.create_task(requeue_periodically(store, stop, requeue_every))
    cut_off = asyncio.Event()
    tasks = [
        asyncio.create_task(
            process_documents(store, f"{worker_id}-{i}", extract, stop, idle_block_ms, cut_off)
        )
        for i in range(concurrency)
    ]
    grace = None
    if shutdown_grace is not None:
        grace = asyncio.create_task(
            cut_off_after_grace(stop, shutdown_grace, tasks, requeuer, cut_off)
        )
    try:
        counts = await asyncio.gather(*tasks)
    finally:
        # A task that failed stops the others too, each after the document in its hands.
        stop.set()
        # The grace, while it runs, cancels a requeue_stuck still running too.
        await asyncio.wait([*tasks, requeuer])
        if grace is not None:
            grace.cancel()  # its timer, when everything finished in time
            await asyncio.wait([grace])
    return sum(counts)


def load_extractor(path: str) -> Extractor:
    """The extractor named ``module:function`` (an argparse type: a usage error otherwise)."""
    module_name, _, function_name = path.partition(":")
    if not module_name or not function_name:
        raise argparse.ArgumentTypeError(f"must be module:function, not {path!r}")
    try:
        extractor: Extractor = getattr(importlib.import_module(module_name), function_name)
    except (ImportError, AttributeError) as exc:
        raise argparse.ArgumentTypeError(f"cannot load {path!r}: {exc}") from exc
    if not callable(extractor):
        raise argparse.ArgumentTypeError(f"{path!r} is not a function")
    try:  # docstore's own rule: it runs on a thread, never awaited
        check_function(extractor, "the extractor", "a plain function", plain=True)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(f"{path!r}: {exc.message}") from exc
    return extractor


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text}")
    return value


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker-id", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument(
        "--concurrency",
        type=positive_int,
        default=os.environ.get("WORKER_CONCURRENCY", "4"),  # a string: parsed like the option
        help="documents processed at once (env WORKER_CONCURRENCY, default 4)",
    )
    parser.add_argument(
        "--requeue-every",
        type=positive_float,
        default=30.0,
        help="seconds between two requeue_stuck runs (default 30)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=non_negative_float,
        default=os.environ.get("WORKER_SHUTDOWN_GRACE"),
        help="seconds after SIGTERM before documents still in hand are handed back "
        "(env WORKER_SHUTDOWN_GRACE; default: wait for every one)",
    )
    parser.add_argument(
        "--extractor", type=load_extractor, default=DEFAULT_EXTRACTOR, help="module:function"
    )
    args = parser.parse_args()
    try:  # the id of the last task, the longest (`<id>-<n>`), must pass docstore's rule
        check_worker_id(f"{args.worker_id}-{args.concurrency - 1}")
    except InvalidInput as exc:
        parser.error(f"--worker-id: {exc.message} (with its task number)")
    return args


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()

    def request_stop(signum: signal.Signals) -> None:
        logger.info("%s: finishing the documents in hand, then stopping", signum.name)
        stop.set()

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop, signum)
    # Without settings, connect reads the environment: a bad value is a ConfigurationError.
    async with await AsyncDocstore.connect() as store:
        logger.info("worker %s started, %d at once", args.worker_id, args.concurrency)
        handled = await run_worker(
            store,
            args.worker_id,
            stop,
            concurrency=args.concurrency,
            extract=args.extractor,
            requeue_every=args.requeue_every,
            shutdown_grace=args.shutdown_grace,
        )
    logger.info("worker %s stopped after %d document(s)", args.worker_id, handled)


def main() -> int:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(serve(args))
    except ConfigurationError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

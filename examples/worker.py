"""A document worker: takes queued documents, extracts their text, records the result.

Run:  python examples/worker.py [--worker-id NAME]     (settings from the environment)

PDFs are read with pypdf, plain text as is; progress is reported per page. SIGTERM or Ctrl-C
stops it gracefully: the current document is finished first, then the worker exits. Whenever
the queue is empty, `process_next` itself claims from PostgreSQL what has no message (lost
messages, migrated work, expired leases), so work migrated just before the start is taken at
once. Every `--requeue-every` seconds it also calls `requeue_stuck`, which re-enqueues such
documents for busy workers too.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import threading
import time
from types import FrameType

from docstore import Docstore, ServiceUnavailable, Settings
from docstore.intake.extractors import extract_text

logger = logging.getLogger("worker")


def run_worker(
    store: Docstore,
    worker_id: str,
    stop: threading.Event,
    *,
    requeue_every: float = 30.0,
    idle_block_ms: int = 1000,
) -> int:
    """Process documents until `stop` is set; returns how many were handled."""
    handled = 0
    next_requeue = time.monotonic()
    while not stop.is_set():
        try:
            if time.monotonic() >= next_requeue:
                report = store.requeue_stuck()
                if report.requeued:
                    logger.info("requeued %d stuck document(s)", report.requeued)
                next_requeue = time.monotonic() + requeue_every
            outcome = store.process_next(worker_id, extract_text, block_ms=idle_block_ms)
        except ServiceUnavailable as exc:
            logger.warning("%s; retrying in 1 s", exc.message)
            stop.wait(1)
            continue
        if outcome is not None:
            handled += 1
            logger.info("document %s: %s %s", outcome.document_id, outcome.action, outcome.detail)
    return handled


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--worker-id", default=f"{socket.gethostname()}-{os.getpid()}")
    parser.add_argument("--requeue-every", type=float, default=30.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        logger.info("signal %s: finishing the current document, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    with Docstore.connect(Settings()) as store:
        logger.info("worker %s started", args.worker_id)
        handled = run_worker(store, args.worker_id, stop, requeue_every=args.requeue_every)
    logger.info("worker %s stopped after %d document(s)", args.worker_id, handled)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

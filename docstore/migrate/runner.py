"""`migrate()`: stream every legacy task from Redis into PostgreSQL, batch by batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TextIO

import redis

from docstore.database import Database
from docstore.error_mapping import wrap_redis_errors
from docstore.errors import InvalidInput
from docstore.migrate.legacy_records import RESULT_PREFIX
from docstore.migrate.pg_writer import count_present, write_documents
from docstore.migrate.read_ahead import ReadAhead
from docstore.migrate.redis_reader import ReadBatch, read_batches, redis_address
from docstore.migrate.summary import MigrationSummary, RejectsWriter

DEFAULT_PREFIX = "task:"
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 100_000

ProgressCallback = Callable[[MigrationSummary], None]


def check_options(prefix: str, batch_size: int) -> bytes:
    """Validate the options shared by migrate and verify; return the prefix as bytes."""
    if not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise InvalidInput(f"batch size must be 1 to {MAX_BATCH_SIZE}", field="batch_size")
    raw = prefix.encode("utf-8")
    if not raw or raw.startswith(RESULT_PREFIX) or RESULT_PREFIX.startswith(raw):
        raise InvalidInput(
            f"prefix must be non-empty and distinct from {RESULT_PREFIX.decode()!r}",
            field="prefix",
        )
    return raw


def scan_batches(source: redis.Redis, prefix: bytes, batch_size: int) -> Iterator[ReadBatch]:
    """`read_batches` with Redis errors turned into docstore errors."""
    with wrap_redis_errors(redis_address(source)):
        yield from read_batches(source, prefix, batch_size)


def migrate(
    source: redis.Redis,
    target: Database,
    *,
    prefix: str = DEFAULT_PREFIX,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    rejects: TextIO | None = None,
    progress: ProgressCallback | None = None,
) -> MigrationSummary:
    """Copy every `{prefix}{id}` task (and its `result:{id}`) into `documents`.

    Safe to run again at any time, also after a crash: tasks already migrated are counted as
    `already_present` and left alone. Redis is only read. `rejects` receives one JSON line per
    rejected or sanitized record as the run goes; `progress` is called after every batch.
    A `dry_run` reads and validates everything and writes nothing.
    """
    raw_prefix = check_options(prefix, batch_size)
    summary = MigrationSummary(dry_run=dry_run)
    listing = RejectsWriter(summary, rejects)
    started = time.perf_counter()
    with wrap_redis_errors(redis_address(source)):
        summary.total_keys = int(source.dbsize())
    # Redis is read one batch ahead in a thread while this one waits on PostgreSQL.
    for batch in ReadAhead(scan_batches(source, raw_prefix, batch_size), name="migrate-reader"):
        summary.scanned_keys += batch.scanned
        summary.task_keys += batch.task_keys
        summary.result_keys += batch.result_keys
        summary.skipped += batch.skipped
        summary.vanished += batch.vanished
        for reject in batch.rejects:
            listing.reject(reject)
        for doc in batch.documents:
            if doc.notes:
                listing.sanitized(doc)
        if dry_run:
            present = count_present(target, [doc.task_id for doc in batch.documents])
            summary.migrated += len(batch.documents) - present
            summary.already_present += present
        else:
            outcome = write_documents(target, batch.documents)
            summary.migrated += outcome.inserted
            summary.already_present += outcome.already_present
            summary.users_created += outcome.users_created
            for reject in outcome.rejects:
                listing.reject(reject)
        listing.flush()
        summary.duration_seconds = time.perf_counter() - started
        if progress is not None:
            progress(summary)
    summary.duration_seconds = time.perf_counter() - started
    return summary

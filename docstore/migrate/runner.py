"""`migrate()`: stream every legacy task from Redis into PostgreSQL, batch by batch."""

from __future__ import annotations

import functools
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from typing import Annotated, TextIO

from pydantic import Field

from docstore.ephemeral.cache import RedisCache
from docstore.errors import InvalidInput
from docstore.migrate.legacy_records import RESULT_PREFIX
from docstore.migrate.pg_writer import (
    WriteOutcome,
    check_schema,
    ledger_is_empty,
    unchanged_tasks,
    write_documents,
)
from docstore.migrate.read_ahead import ReadAhead
from docstore.migrate.redis_reader import ReadBatch, UnchangedCheck, count_keys, read_batches
from docstore.migrate.summary import MigrationSummary, RejectsWriter
from docstore.postgres.executor import Database
from docstore.redis.client import RedisClient
from docstore.redis.core import RedisCore
from docstore.rules import Checker, Flag, PositiveInt, check_function

DEFAULT_PREFIX = "task:"
DEFAULT_BATCH_SIZE = 1000
# PostgreSQL's work per row (the generated search_vector above all) dominates: two connections
# let the server use two cores while one client thread reads Redis.
DEFAULT_WRITERS = 2
MAX_BATCH_SIZE = 100_000

ProgressCallback = Callable[[MigrationSummary], None]

_batch_size: Checker[int] = Checker(
    Annotated[int, Field(strict=True, ge=1, le=MAX_BATCH_SIZE)], "batch_size"
)
_writers: Checker[int] = Checker(PositiveInt, "writers")
_dry_run: Checker[bool] = Checker(Flag, "dry_run")
_update: Checker[bool] = Checker(Flag, "update")


def check_options(prefix: str, batch_size: int) -> bytes:
    """Validate the options shared by migrate and verify; return the prefix as bytes."""
    _batch_size(batch_size)
    if not isinstance(prefix, str):
        raise InvalidInput("prefix must be text", field="prefix")
    try:
        raw = prefix.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("prefix must not hold a lone surrogate", field="prefix") from None
    if not raw or raw.startswith(RESULT_PREFIX) or RESULT_PREFIX.startswith(raw):
        raise InvalidInput(
            f"prefix must be non-empty and distinct from {RESULT_PREFIX.decode()!r}",
            field="prefix",
        )
    return raw


def scan_batches(
    source: RedisClient | RedisCore,
    prefix: bytes,
    batch_size: int,
    unchanged: UnchangedCheck | None = None,
) -> Iterator[ReadBatch]:
    """`read_batches` with Redis errors turned into docstore errors."""
    core = RedisCore.of(source)
    with core.errors():
        yield from read_batches(core.client, prefix, batch_size, unchanged)


def migrate(
    source: RedisClient | RedisCore,
    target: Database,
    *,
    prefix: str = DEFAULT_PREFIX,
    batch_size: int = DEFAULT_BATCH_SIZE,
    writers: int = DEFAULT_WRITERS,
    dry_run: bool = False,
    update: bool = True,
    rejects: TextIO | None = None,
    progress: ProgressCallback | None = None,
    cache: RedisCache | None = None,
) -> MigrationSummary:
    """Copy every `{prefix}{id}` task (and its `result:{id}`) into `documents`, or catch up.

    Safe to run again at any time, also after a crash. A task unchanged since the run that wrote
    it is counted as `already_present` and costs no write; one changed in Redis since is
    `updated` when its document still holds what the migration wrote, else it is a conflict:
    left alone, counted, listed with both versions. `update=False` only inserts new tasks.
    Redis is only read. `rejects` receives one JSON line per rejected, sanitized or conflicting
    record as the run goes; `progress` is called after every batch. With `cache` (docstore's
    `RedisCache`), the cached results of updated documents are dropped once their batch commits.
    `writers` batches are written at once, each on its own connection (at most the pool's size).
    A `dry_run` reads and validates everything and writes nothing. Without the schema in
    `target`, raises `ConfigurationError` naming the command that applies it.
    """
    raw_prefix = check_options(prefix, batch_size)
    # Every option before the first write: a bad one found after a batch committed would end
    # the run half done.
    writers = _writers(writers)
    _dry_run(dry_run)
    _update(update)
    check_function(progress, "progress", "a function of the summary", optional=True)
    if rejects is not None and not all(
        callable(getattr(rejects, method, None)) for method in ("write", "flush")
    ):
        raise InvalidInput("rejects must be a text file open for writing", field="rejects")
    if cache is not None and not isinstance(cache, RedisCache):
        raise InvalidInput("cache must be docstore's RedisCache", field="cache")
    check_schema(target)
    writers = min(writers, target.pool.max_size)
    summary = MigrationSummary(dry_run=dry_run, cache_dropped=None if cache is None else 0)
    listing = RejectsWriter(summary, rejects)
    started = time.perf_counter()
    core = RedisCore.of(source)
    with core.errors():
        summary.total_keys = count_keys(core.client)
    # Redis is read one batch ahead in a thread while the writers wait on PostgreSQL; the
    # reader skips parsing the tasks whose bytes are those the run that wrote them read. With
    # nothing recorded yet there are none: a first run spares itself the ledger probe per task
    # (a task SCAN returns twice is then parsed again and the plan finds it unchanged).
    unchanged = None if ledger_is_empty(target) else functools.partial(unchanged_tasks, target)
    batches = scan_batches(core, raw_prefix, batch_size, unchanged)
    reader = ReadAhead(batches, name="migrate-reader")
    in_flight: deque[Future[WriteOutcome]] = deque()
    with closing(reader), ThreadPoolExecutor(writers, "migrate-writer") as pool:
        for batch in reader:
            _count_read(summary, listing, batch)
            if batch.documents:
                in_flight.append(
                    pool.submit(
                        write_documents, target, batch.documents, update=update, dry_run=dry_run
                    )
                )
                while len(in_flight) >= writers:
                    _count_written(summary, listing, in_flight.popleft().result(), cache)
            _report(summary, listing, started, progress)
        while in_flight:
            _count_written(summary, listing, in_flight.popleft().result(), cache)
            _report(summary, listing, started, progress)
    if cache is not None:
        _finish_invalidations(summary, cache)
    summary.duration_seconds = time.perf_counter() - started
    return summary


def _count_read(summary: MigrationSummary, listing: RejectsWriter, batch: ReadBatch) -> None:
    summary.scanned_keys += batch.scanned
    summary.task_keys += batch.task_keys
    summary.result_keys += batch.result_keys
    summary.skipped += batch.skipped
    summary.repeated_keys += batch.repeated
    summary.vanished += batch.vanished
    summary.orphan_results += batch.orphan_results
    summary.already_present += batch.unchanged
    for reject in batch.rejects:
        listing.reject(reject)
    for doc in batch.documents:
        if doc.notes:
            listing.sanitized(doc)


def _count_written(
    summary: MigrationSummary,
    listing: RejectsWriter,
    outcome: WriteOutcome,
    cache: RedisCache | None,
) -> None:
    if cache is not None and outcome.updated_ids:
        # Committed: no reader can load the old version again. Fails open (retried below).
        cache.invalidate_documents(outcome.updated_ids)
        summary.cache_dropped = (summary.cache_dropped or 0) + len(outcome.updated_ids)
    summary.migrated += outcome.inserted
    summary.updated += outcome.updated
    summary.already_present += outcome.unchanged
    summary.not_updated += outcome.not_updated
    summary.users_created += outcome.users_created
    for reject in outcome.rejects:
        listing.reject(reject)
    for conflict in outcome.conflicts:
        listing.conflict(conflict)


def _finish_invalidations(summary: MigrationSummary, cache: RedisCache) -> None:
    """Retry the invalidations that failed; count what stays undone."""
    if cache.pending_invalidations:
        cache.invalidate_documents([])
    summary.cache_not_dropped = cache.pending_invalidations
    summary.cache_dropped = max((summary.cache_dropped or 0) - summary.cache_not_dropped, 0)


def _report(
    summary: MigrationSummary,
    listing: RejectsWriter,
    started: float,
    progress: ProgressCallback | None,
) -> None:
    listing.flush()
    summary.duration_seconds = time.perf_counter() - started
    if progress is not None:
        progress(summary)

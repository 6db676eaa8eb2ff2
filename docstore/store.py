# Generated from docstore/store_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""`Docstore`: the pool, the Redis client and everything built on them, in one handle.

One store is shared by all tasks (or threads) of a process. On the asyncio side blob I/O, yoyo
and extractors run on threads, so no call blocks the event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import IO, Any

import psycopg_pool

from docstore._sync_runtime import Lock, finish, in_thread
from docstore.ephemeral.cache import RedisCache
from docstore.ephemeral.progress import ProgressTracker
from docstore.ephemeral.queue import TaskQueue
from docstore.ephemeral.rate_limit import RateLimiter
from docstore.ephemeral.values import FailurePolicy
from docstore.errors import ConfigurationError, DocstoreError, InvalidInput, PoolExhausted
from docstore.health import HEALTH_TIMEOUT, HealthReport, PoolStats, ReplicaHealth
from docstore.intake.blob_access import Blobs
from docstore.intake.blobs import BlobStore, blob_store_from_settings
from docstore.intake.flow import DocumentIntake
from docstore.intake.outcomes import BlobPurgeReport, Extractor, Outcome, StuckReport
from docstore.models import FINISHED_STATUSES, DocumentResponse, UserResponse
from docstore.postgres import schema
from docstore.postgres.executor import Connection, Database
from docstore.postgres.pool import new_pool, open_pool
from docstore.postgres.replica import Replica
from docstore.redis.client import RedisClient
from docstore.redis.core import RedisCore
from docstore.repositories.changes import DocumentChanges, tracked_database
from docstore.repositories.documents import DocumentRepo
from docstore.repositories.lifecycle import DocumentLifecycle
from docstore.repositories.users import UserRepo
from docstore.settings import Settings, settings_from_environment

logger = logging.getLogger("docstore")


def _finished(document: DocumentResponse) -> bool:
    """Whether the lifecycle is done with `document` (only such documents are cached)."""
    return document.status in FINISHED_STATUSES


def _check_parts(settings: object, pool: object, blobs: object) -> None:
    """`InvalidInput` for a part of the wrong kind, before anything is made (they failed later,
    each with its own raw error: a URL given as settings, a sync pool, a path as the blobs)."""
    if settings is not None and not isinstance(settings, Settings):
        raise InvalidInput(
            f"settings must be docstore's Settings, not {type(settings).__name__}",
            field="settings",
        )
    wanted = psycopg_pool.ConnectionPool
    if pool is not None and not isinstance(pool, wanted):
        raise InvalidInput(
            f"pool must be a psycopg_pool.{wanted.__name__}, not {type(pool).__name__}",
            field="pool",
        )
    if blobs is not None and not all(
        callable(getattr(blobs, method, None)) for method in ("put", "get", "open", "delete")
    ):
        raise InvalidInput(
            f"blobs must be a blob store (S3BlobStore, LocalBlobStore), not {type(blobs).__name__}",
            field="blobs",
        )


class Docstore:
    """Entry point: `with Docstore.connect(Settings()) as store: ...`.

    A pool or Redis client passed in by the caller is used as is and never opened or closed here.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        pool: psycopg_pool.ConnectionPool | None = None,
        redis_client: RedisClient | RedisCore | None = None,
        blobs: BlobStore | None = None,
    ) -> None:
        _check_parts(settings, pool, blobs)
        self.settings = settings or settings_from_environment()
        self._owns_pool = pool is None
        self._owns_redis = redis_client is None
        self.pool = pool if pool is not None else new_pool(self.settings)
        self.redis_core = (
            RedisCore.from_settings(self.settings)
            if redis_client is None
            else RedisCore.of(redis_client)
        )
        self.redis = self.redis_core.client
        # Every committed change to a cached (finished) document drops its copy (see
        # `changes`).
        self.changes = DocumentChanges()
        self.db = tracked_database(
            Database(
                self.pool,
                address=self.settings.database_address,
                debug_sql=self.settings.debug_sql,
                replica=Replica.from_settings(self.settings),
            ),
            self.changes,
        )
        self.changes.attach(self.db)
        # Repositories (PostgreSQL).
        self.users = UserRepo(self.db, self.changes)
        self.documents = DocumentRepo(self.db, self.changes)
        self.lifecycle = DocumentLifecycle(
            self.db,
            backoff_base=self.settings.retry_backoff_base,
            backoff_cap=self.settings.retry_backoff_cap,
            max_processing_per_user=self.settings.max_processing_per_user,
        )
        # Redis side, all through one core (each fails open or raises typed errors when Redis
        # is down).
        self.cache = RedisCache(self.redis_core, default_ttl=self.settings.cache_ttl)
        self.limiter = RateLimiter(
            self.redis_core,
            limit=self.settings.rate_limit,
            period=self.settings.rate_limit_period,
            failure_policy=FailurePolicy(self.settings.rate_limit_failure_policy),
        )
        self.queue = TaskQueue(
            self.redis_core,
            max_deliveries=self.settings.queue_max_deliveries,
            reclaim_idle=self.settings.queue_reclaim_idle,
        )
        self.progress = ProgressTracker(self.redis_core)
        self.changes.listen(self._invalidate_cached, self.cache.invalidate_later)
        # Blobs and the document flow built on all of the above.
        self._blobs = blobs
        self._opened = False
        self._pool_spent = False  # an open of our pool failed: the next open makes a new one
        self._opening = Lock()  # one open at a time: another would close the pool it opens
        self._intake = DocumentIntake(
            self.documents,
            self.lifecycle,
            self.users,
            self._blob_store,
            self.queue,
            self.progress,
            self.cache,
            max_upload_bytes=self.settings.max_upload_bytes,
            lease_seconds=self.settings.lease_seconds,
        )

    @classmethod
    def connect(
        cls,
        settings: Settings | None = None,
        *,
        pool: psycopg_pool.ConnectionPool | None = None,
        redis_client: RedisClient | RedisCore | None = None,
        blobs: BlobStore | None = None,
    ) -> Docstore:
        """Create a store and open its pool; unreachable PostgreSQL raises `ServiceUnavailable`.
        A failed or cancelled connect closes what it opened."""
        store = cls(settings, pool=pool, redis_client=redis_client, blobs=blobs)
        store._open_or_close()
        return store

    def open(self) -> None:
        """Open the pool we own (once), failing within the connect timeout when PostgreSQL is
        down, and make the blob store the settings describe. `connect` and entering the store's
        context call it. After a `ServiceUnavailable`, calling it again tries again. Callers
        at once open it once: the others wait for that open."""
        with self._opening:
            self._open_once()

    def _open_once(self) -> None:
        if self._blobs is None:
            # Now, not on first use, and through `in_thread`: a process's first boto3 client
            # takes 0.1-0.3 s (more when the credential chain asks the instance metadata
            # service), which must not stall an event loop. Settings that cannot make it do
            # not stop the store from opening (not every process uses blobs): the first blob
            # call raises their `ConfigurationError`.
            try:
                self._blobs = in_thread(blob_store_from_settings, self.settings)
            except ConfigurationError as exc:
                logger.warning("no blob store: %s", exc.message)
        if self._owns_pool and not self._opened:
            if self._pool_spent:  # a failed open may have closed it: a closed pool never reopens
                self.pool.close()  # or an interrupted one left it open: closed either way
                self.pool = new_pool(self.settings)
                self.db.use_pool(self.pool)
            self._pool_spent = True
            open_pool(self.pool, self.settings)
            self._pool_spent = False
        self._opened = True

    def close(self) -> None:
        """Close the pool and Redis client if this store created them."""
        self.db.close()  # the replica's pool (DATABASE_REPLICA_URL), always ours
        if self._owns_pool:
            self.pool.close()
        if self._owns_redis:
            self.redis.close()

    def __enter__(self) -> Docstore:
        self._open_or_close()
        return self

    def _open_or_close(self) -> None:
        """`open`, or on any failure (a cancel too) `close`: nobody else would close it. The
        close runs before another open may start, which would open a new pool for it to
        close."""
        with self._opening:
            try:
                self._open_once()
            except BaseException:
                finish(self.close)
                raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def blobs(self) -> Blobs:
        """The blob store given to the constructor, or one made from the settings on first use
        (`store.blobs.store` is the store itself)."""
        return Blobs(self._blob_store())

    def _blob_store(self) -> BlobStore:
        if self._blobs is None:
            self._blobs = blob_store_from_settings(self.settings)
        return self._blobs

    def _invalidate_cached(self, document_ids: list[int]) -> None:
        self.cache.invalidate_documents(document_ids)

    @contextmanager
    def transaction(self, conn: Connection | None = None) -> Iterator[Connection]:
        """A connection in a transaction for `conn=` calls (the same as `store.db.transaction`):
        cached copies of the documents it changes are dropped once it commits, not before, and
        not at all when it rolls back."""
        with self.db.transaction(conn) as c:
            yield c

    def get_document(self, document_id: int) -> DocumentResponse:
        """The document, cache first (`NotFound` otherwise); a copy older than a committed change
        is never served.

        Only finished documents (COMPLETED, FAILED, CANCELLED) are cached, one reader loading
        each however many miss at once. One still PENDING or PROCESSING is read from PostgreSQL
        by each reader, so the lifecycle's steps have no copy to drop."""
        key = self.cache.document_key(document_id)
        # Writes in transactions docstore did not open that have committed since: dropped now.
        self.changes.settle()

        def load() -> DocumentResponse:
            return self.documents.get(document_id)

        return self.cache.get_or_set(key, load, DocumentResponse, keep=_finished)

    def cancel_document(self, document_id: int) -> DocumentResponse:
        """Cancel a PENDING or PROCESSING document: it is never processed, a worker on it stops
        at its next progress report or heartbeat, and its late result is refused
        (`InvalidTransition` once COMPLETED or FAILED; a cancelled one is returned as is)."""
        return self._intake.cancel_document(document_id)

    def delete_document(self, document_id: int) -> None:
        """Delete the document, its blob, its cached result and its progress (`NotFound` if
        absent); a queued message for it becomes a no-op. A blob delete that fails is retried by
        `purge_deleted_blobs` (which `requeue_stuck` runs)."""
        self._intake.delete_document(document_id)

    def delete_user(self, user_id: int) -> list[int]:
        """Delete the user and everything of its documents, as `delete_document` does; returns
        the ids of the deleted documents (`NotFound` if the user is absent)."""
        return self._intake.delete_user(user_id)

    def purge_deleted_blobs(self, limit: int = 100) -> BlobPurgeReport:
        """Delete up to `limit` blobs of deleted documents still waiting (their earlier delete
        failed, or was left for later)."""
        return self._intake.purge_deleted_blobs(limit)

    def submit_document(
        self,
        user: UserResponse | int,
        filename: str,
        data: bytes | IO[bytes],
        idempotency_key: str | None = None,
    ) -> DocumentResponse:
        """Upload the bytes, record a PENDING document and enqueue it (see `DocumentIntake`).

        With `idempotency_key`, the same key and content from the same user returns the first
        document and stores nothing again (races included); other content raises `Conflict`."""
        return self._intake.submit(user, filename, data, idempotency_key)

    def process_next(
        self,
        worker_id: str,
        extract: Extractor,
        *,
        block_ms: int = 1000,
        stopping: Callable[[], bool] | None = None,
    ) -> Outcome | None:
        """Process one document with `extract`: queued, or waiting in PostgreSQL without a message;
        None when there was nothing to do, or when `stopping()`, asked after the wait for a
        message, is true (a worker shutting down claims nothing more)."""
        return self._intake.process_next(worker_id, extract, block_ms=block_ms, stopping=stopping)

    def requeue_stuck(self, pending_for: float = 300.0) -> StuckReport:
        """Re-enqueue documents whose worker died or whose queue message was lost."""
        return self._intake.requeue_stuck(pending_for)

    def apply_schema(self) -> list[str]:
        """Apply pending migrations (idempotent); return the ids applied now."""
        return in_thread(schema.apply_schema, self.settings)

    def rollback_schema(self, count: int | None = 1, *, confirm_destroy: bool = False) -> list[str]:
        """Roll back the last `count` migrations (all when None); refused (`RollbackRefused`)
        while their tables hold rows, unless `confirm_destroy`."""
        return in_thread(
            schema.rollback_schema, self.settings, count=count, confirm_destroy=confirm_destroy
        )

    def schema_status(self) -> list[schema.MigrationStatus]:
        """Every shipped migration and whether it is applied, then any applied migration this
        docstore does not ship (`shipped=False`)."""
        return in_thread(schema.schema_status, self.settings)

    def health(self) -> HealthReport:
        """Server versions and pool counters; an unreachable server is reported, not raised."""
        postgres_version: str | None = None
        postgres_error: str | None = None
        postgres_busy = False
        try:
            wait = min(self.settings.pool_timeout, HEALTH_TIMEOUT)
            postgres_version = self.db.server_version(wait)
        except PoolExhausted:
            postgres_busy = True  # every connection is at work: busy, not down
        except DocstoreError as exc:
            postgres_error = exc.message
        redis_version: str | None = None
        redis_error: str | None = None
        try:
            with self.redis_core.errors():
                info: dict[str, Any] = self.redis.info("server")
            redis_version = str(info.get("redis_version"))
        except DocstoreError as exc:
            redis_error = exc.message
        stats = self.pool.get_stats()
        pool = PoolStats(
            size=stats.get("pool_size", 0),
            available=stats.get("pool_available", 0),
            waiting=stats.get("requests_waiting", 0),
            min_size=self.pool.min_size,
            max_size=self.pool.max_size,
        )
        return HealthReport(
            postgres_version=postgres_version,
            postgres_error=postgres_error,
            postgres_busy=postgres_busy,
            redis_version=redis_version,
            redis_error=redis_error,
            pool=pool,
            replica=self._replica_health(),
        )

    def _replica_health(self) -> ReplicaHealth | None:
        replica = self.db.replica
        if replica is None:
            return None
        replica.check()  # the state as it is now, not as the last read found it
        return ReplicaHealth(
            address=replica.address,
            state=replica.state,
            lag_seconds=replica.lag if replica.state in ("ok", "lagging") else None,
            max_lag_seconds=replica.max_lag,
            reads=replica.reads,
            reads_on_primary=replica.reads_on_primary,
        )


__all__ = ["Docstore"]

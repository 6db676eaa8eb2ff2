"""`AsyncRedisCache`: temporary results as JSON, single flight on a miss, and fail-open on outages.

Values are serialised by pydantic (never pickle) and read back into the type the caller names.
When Redis cannot be reached, a read is a miss, a write is skipped and the loader still runs: the
cache can slow nothing down for longer than one socket timeout per call and never raises for it.
"""

from __future__ import annotations

import logging
import math
import random
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast, final

import pydantic
from pydantic import ConfigDict, TypeAdapter
from pydantic_core import PydanticSerializationError

from docstore._async_runtime import AsyncCall, awaited, finish, sleep
from docstore.ephemeral.owed import Debt, Owed
from docstore.ephemeral.values import CacheStats, loaded_as, type_adapter
from docstore.errors import InvalidInput, RedisCommandError, ServiceUnavailable
from docstore.observability.messaging import count_cache
from docstore.redis.client_async import RedisClient
from docstore.redis.core_async import AsyncRedisCore
from docstore.redis.keys import (
    cache_key,
    cache_lock_key,
    check_document_id,
    check_document_ids,
    check_name,
)
from docstore.rules import Checker, PositiveSeconds, check, check_function

logger = logging.getLogger("docstore.cache")

T = TypeVar("T")
R = TypeVar("R")

# NaN and infinities are written as the JSON extensions NaN/Infinity, which pydantic reads back:
# the default would write null and hand the caller None for a float it stored.
_ANY: TypeAdapter[Any] = TypeAdapter(Any, config=ConfigDict(ser_json_inf_nan="constants"))
# Longest accepted TTL, in seconds (Redis refuses expiry times that overflow its clock).
_ttl: Checker[float] = Checker(PositiveSeconds, "ttl")
# Documents invalidated per pipelined round trip.
_INVALIDATE_BATCH = 500
# Failed invalidations kept for retry, at most: past that, the next contact drops every cached
# document result instead (memory stays bounded, and still no stale copy survives).
MAX_PENDING_INVALIDATIONS = 100_000


@final
class _FailedOpen:
    """What a Redis call of the cache gives back when it failed open (counted and logged)."""


_FAILED_OPEN = _FailedOpen()

# `get_or_set` reads with a plain GET first while fewer than MISSES_FOR_SCRIPT_FIRST of this
# cache's recent reads missed, else it goes straight to the script that reads or takes the
# load's lock: a miss then costs two commands instead of three, a hit the script's slightly
# dearer call (bench_redis: 1.12x -> 1.22x a bare GET). "Recent": a moving average in which each
# read weighs MISS_AVERAGE_WEIGHT.
MISSES_FOR_SCRIPT_FIRST = 0.1
MISS_AVERAGE_WEIGHT = 0.05

# What `get_or_set` stores in place of a loaded value its `keep` refused, for NOT_KEPT_TTL seconds
# at most: not JSON, so no reader takes it for a value. Readers that find it load for themselves,
# without the lock: many readers of a value that is not kept do not queue behind each other.
NOT_KEPT = b"\x00docstore:not-kept"
NOT_KEPT_TTL = 1.0
_NOT_KEPT_TEXT = NOT_KEPT.decode()  # as a client with decode_responses reads it


def is_not_kept(raw: object) -> bool:
    """Whether `raw`, read from a cache key, is the mark of a value `get_or_set` did not keep."""
    return raw == (NOT_KEPT if isinstance(raw, bytes) else _NOT_KEPT_TEXT)


class AsyncRedisCache:
    """Get, set and delete JSON values under ``docstore:cache:{key}``, with TTL jitter.

    `jitter` is the fraction by which a TTL is shortened at random (0.1: a 300 s TTL becomes
    270-300 s) so keys written together do not expire together. `lock_timeout` bounds how long a
    crashed loader can hold a key; waiters poll for the value for up to `wait_timeout` seconds,
    then run the loader themselves. `client` is a core (`AsyncRedisCore`) or a plain client.
    """

    def __init__(
        self,
        client: RedisClient | AsyncRedisCore,
        *,
        default_ttl: float = 300.0,
        jitter: float = 0.1,
        lock_timeout: float = 10.0,
        wait_timeout: float | None = None,
        max_pending_invalidations: int = MAX_PENDING_INVALIDATIONS,
    ) -> None:
        default_ttl = check(PositiveSeconds, default_ttl, "default_ttl")
        lock_timeout = check(PositiveSeconds, lock_timeout, "lock_timeout")
        if not 0 <= jitter < 1:
            raise InvalidInput("jitter must be in [0, 1)", field="jitter")
        if max_pending_invalidations < 1:
            raise InvalidInput(
                "max_pending_invalidations must be at least 1", field="max_pending_invalidations"
            )
        self.max_pending_invalidations = max_pending_invalidations
        self.core = AsyncRedisCore.of(client)
        self.default_ttl = default_ttl
        self.jitter = jitter
        self.lock_timeout = lock_timeout
        self.wait_timeout = lock_timeout if wait_timeout is None else wait_timeout
        self._lock_ms = max(1, math.ceil(lock_timeout * 1000))
        self._get_or_lock = self.core.script("cache_get_or_lock")
        self._store_and_unlock = self.core.script("cache_store_and_unlock")
        self._unlock = self.core.script("cache_unlock")
        self._counts = {"hits": 0, "misses": 0, "errors": 0, "loads": 0}
        self._counts_lock = threading.Lock()
        self._recent_misses = 0.0  # share of recent reads that missed (moving average)
        # Drops and lock releases Redis did not surely take: paid by the next call.
        self._owed = Owed(max_pending_invalidations)
        self._dropping_everything = threading.Lock()  # never waited on: see invalidate_documents

    # -- counters -----------------------------------------------------------------------------

    def stats(self) -> CacheStats:
        """Hits, misses, Redis errors (each one a fail-open) and loader runs so far."""
        with self._counts_lock:
            return CacheStats(**self._counts)

    def _count(self, name: str, *, steers: bool = True) -> None:
        """Count one `name`; a hit or miss that `steers` also moves the share of recent misses
        (a mark's miss does not: reading it never needs the lock's script)."""
        with self._counts_lock:
            self._counts[name] += 1
            if steers and name in ("hits", "misses"):
                missed = 1.0 if name == "misses" else 0.0
                self._recent_misses += MISS_AVERAGE_WEIGHT * (missed - self._recent_misses)
        count_cache(name)  # docstore.cache.requests, when OpenTelemetry is on

    def _failed(self, action: str, key: str, reason: str) -> _FailedOpen:
        self._count("errors")
        logger.warning("cache %s of %r failed open: %s", action, key, reason)
        return _FAILED_OPEN

    async def _fail_open(self, action: str, key: str, call: AsyncCall[R]) -> R | _FailedOpen:
        """`await call()`, or _FAILED_OPEN when Redis is unavailable or refused the command."""

        def failed(error: ServiceUnavailable | RedisCommandError) -> _FailedOpen:
            return self._failed(action, key, error.message)

        return await self.core.fail_open(call, failed, also_refused=True)

    # -- plain operations ---------------------------------------------------------------------

    async def get(self, key: str, type_: type[T]) -> T | None:
        """The cached value read as `type_`, or None on a miss (or when Redis is unreachable)."""
        redis_key = cache_key(check_name(key))
        type_adapter(type_)  # a bad type is refused before Redis is asked
        if not await self._pay_owed():
            return None  # Redis did not answer: a miss, with no second wait for it
        raw = await self._fail_open("read", key, lambda: self.core.client.get(redis_key))
        if isinstance(raw, _FailedOpen):
            return None
        if raw is None or is_not_kept(raw):
            self._count("misses", steers=raw is None)
            return None
        return self._decode(key, cast(bytes, raw), type_)[1]

    async def set(self, key: str, value: object, ttl: float | None = None) -> bool:
        """Store `value` as JSON for about `ttl` seconds; False when Redis was unreachable."""
        redis_key = cache_key(check_name(key))
        payload = self._encode(value)
        ttl_ms = self._ttl_ms(ttl)
        done = await self._fail_open(
            "write", key, lambda: self.core.client.set(redis_key, payload, px=ttl_ms)
        )
        return not isinstance(done, _FailedOpen)

    async def delete(self, key: str) -> bool:
        """Drop the value (and any single-flight lock, so a load in flight cannot write it back).

        Returns False when Redis was unreachable.
        """
        keys = cache_key(check_name(key)), cache_lock_key(key)
        done = await self._fail_open("delete", key, lambda: self.core.client.delete(*keys))
        return not isinstance(done, _FailedOpen)

    # -- single flight ------------------------------------------------------------------------

    async def get_or_set(
        self,
        key: str,
        loader: AsyncCall[T],
        type_: type[T],
        ttl: float | None = None,
        *,
        keep: Callable[[T], bool] | None = None,
    ) -> T:
        """The cached value, or `await loader()`'s result stored for next time.

        When many callers miss at once, one runs the loader and the others wait for its value.
        An exception from the loader reaches its caller and stores nothing. A hit costs one
        command; a miss three, or two while many reads miss (`MISSES_FOR_SCRIPT_FIRST`).

        With `keep`, a loaded value for which `keep(value)` is false is returned but not stored
        (a document still changing): for `NOT_KEPT_TTL` seconds (or `ttl`, when shorter) the
        readers of `key` load for themselves, none waiting for another; a cached value `keep`
        refuses (stored without it) is dropped and loaded afresh.
        """
        name = check_name(key)
        ttl_ms = self._ttl_ms(ttl)
        type_adapter(type_)
        check_function(loader, "loader", "a function returning the value")
        check_function(keep, "keep", "a function of the value", optional=True, plain=True)
        if not await self._pay_owed():
            # Redis did not answer: load without a second wait for it (and without reading
            # a copy the unpaid drops may be meant to remove).
            return await self._load(loader, type_)
        if self._recent_misses < MISSES_FOR_SCRIPT_FIRST:
            # Mostly hits: a plain GET, as cheap as `get`.
            raw = await self._fail_open("read", key, lambda: self.core.client.get(cache_key(name)))
            if isinstance(raw, _FailedOpen):
                return await self._load(loader, type_)
            if is_not_kept(raw):
                return await self._load_for_myself(loader, type_)
            if raw is not None:
                readable, value = self._decode(key, cast(bytes, raw), type_, keep)
                if readable:
                    return cast(T, value)
                # Written by an older shape of the model, or without `keep`: load afresh.
                await self.delete(key)
        return await self._single_flight(key, name, loader, type_, ttl_ms, keep)

    async def _single_flight(
        self,
        key: str,
        name: str,
        loader: AsyncCall[T],
        type_: type[T],
        ttl_ms: int,
        keep: Callable[[T], bool] | None,
    ) -> T:
        keys = [cache_key(name), cache_lock_key(name)]
        token = secrets.token_hex(16)
        deadline = time.monotonic() + self.wait_timeout
        delay = 0.005
        while True:
            try:
                reply = await self._fail_open(
                    "read", key, lambda: self._get_or_lock(keys, token, self._lock_ms)
                )
            except BaseException:
                # Cancelled with the script sent: it may have taken the lock for us.
                await finish(self._release, key, keys[1], token)
                raise
            if isinstance(reply, _FailedOpen):
                # A frozen Redis may still run the script and lock for nobody: release it at
                # the next contact, so the next reader does not wait for it to expire.
                self._owed.lock(keys[1], token)
                return await self._load(loader, type_)
            raw, locked = reply
            if is_not_kept(raw):
                return await self._load_for_myself(loader, type_)
            if raw:
                readable, value = self._decode(key, raw, type_, keep)
                if readable:
                    return cast(T, value)
                await self.delete(key)
                continue
            if locked == 1:
                self._count("misses")
                return await self._load_and_store(key, keys, token, loader, type_, ttl_ms, keep)
            if time.monotonic() >= deadline:
                # The holder is slow or gone and its lock not yet expired: wait no longer.
                self._count("misses")
                logger.info("cache %r: gave up waiting for another loader", key)
                return await self._load(loader, type_)
            await sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _load_for_myself(self, loader: AsyncCall[T], type_: type[T]) -> T:
        """Load past the mark of a value not kept: a miss that leaves the script-first choice as
        it is (reading the mark never needs the lock's script)."""
        self._count("misses", steers=False)
        return await self._load(loader, type_)

    async def _load(self, loader: AsyncCall[T], type_: type[T]) -> T:
        self._count("loads")
        return cast(T, loaded_as(type_, await awaited(loader(), "loader")))

    async def _load_and_store(
        self,
        key: str,
        keys: list[str],
        token: str,
        loader: AsyncCall[T],
        type_: type[T],
        ttl_ms: int,
        keep: Callable[[T], bool] | None,
    ) -> T:
        try:
            value = await self._load(loader, type_)
            if keep is None or keep(value):
                payload = self._encode(value)
            else:  # readers load for themselves for a while, none waiting on a lock
                payload, ttl_ms = NOT_KEPT, min(ttl_ms, int(NOT_KEPT_TTL * 1000))
            await self._fail_open(
                "write", key, lambda: self._store_and_unlock(keys, token, payload, ttl_ms)
            )
        except BaseException:
            # The loader failed, or the task was cancelled: readers waiting on the lock load
            # themselves now (a no-op when the store already released it).
            await finish(self._release, key, keys[1], token)
            raise
        return value

    async def _release(self, key: str, lock_key: str, token: str) -> None:
        # On failure the lock expires by itself after lock_timeout.
        await self._fail_open("unlock", key, lambda: self._unlock([lock_key], token))

    # -- documents ----------------------------------------------------------------------------

    # Every `document_key`, as a SCAN glob (after `cache_key`).
    DOCUMENT_KEYS = "document:*:result"

    @staticmethod
    def document_key(document_id: int) -> str:
        """Cache key of a document's result (one of `DOCUMENT_KEYS`)."""
        return f"document:{check_document_id(document_id)}:result"

    async def cache_document_result(
        self, document_id: int, result: object, ttl: float | None = None
    ) -> bool:
        """Keep a completed document's result (e.g. its response model) for fast reads."""
        return await self.set(self.document_key(document_id), result, ttl)

    async def get_document_result(self, document_id: int, type_: type[T]) -> T | None:
        """A cached document result, or None."""
        return await self.get(self.document_key(document_id), type_)

    @property
    def pending_invalidations(self) -> int:
        """Documents whose cached copies are still to be dropped (Redis did not surely take the
        drop), retried by the next call."""
        return self._owed.pending()

    async def invalidate_document(self, document_id: int) -> bool:
        """Forget a document's cached result (the store calls it on every committed change that
        could leave a copy stale)."""
        return await self.invalidate_documents([document_id])

    async def invalidate_documents(self, document_ids: Iterable[int]) -> bool:
        """Forget the cached results of these documents, and their single-flight locks, so that
        a load in flight cannot write an older version back; a few hundred keys per round trip.

        False when Redis was unreachable: the ids stay owed and are dropped by the next call of
        this cache (a value that outlived its document's change is never served by this process
        after Redis answers again). Past `max_pending_invalidations` owed ids, that next call
        drops every cached document result instead (logged), one call at a time: the calls
        meanwhile return False too, and fail open without reading the cache.
        """
        self._owed.documents(check_document_ids(document_ids))
        debt = self._owed.take()  # owed until paid: a cancel here forgets nothing
        if debt.everything:
            # One call at a time scans the keyspace; the others fail open meanwhile (still
            # owed: none of them reads the cache before the drop is done).
            if not self._dropping_everything.acquire(blocking=False):
                return False
            try:
                return await self._drop_every_document(debt)
            finally:
                self._dropping_everything.release()
        ordered = sorted(debt.documents)
        for start in range(0, len(ordered), _INVALIDATE_BATCH):
            batch = ordered[start : start + _INVALIDATE_BATCH]
            done = await self._fail_open("delete", f"{len(batch)} documents", self._dropper(batch))
            if isinstance(done, _FailedOpen):
                return False
            self._owed.paid(debt, batch)
        return True

    def invalidate_later(self, document_ids: Iterable[int] | None) -> None:
        """Have this cache's next call drop these documents' cached copies (None: every cached
        document result): for changes whose outcome is unknown, such as a write or a COMMIT
        interrupted by a cancel. No I/O, so it runs even in a task being cancelled."""
        if document_ids is None:
            self._owed.everything()
        else:
            self._owed.documents(check_document_ids(document_ids))

    async def _drop_every_document(self, debt: Debt) -> bool:
        """Delete every cached document result and lock (after an overflow); False when Redis
        did not answer (still owed)."""
        pattern = cache_key(self.DOCUMENT_KEYS) + "*"  # each value and its lock

        async def drop(keys: list[Any]) -> None:
            pipe = self.core.client.pipeline(transaction=False)
            for key in keys:  # one DEL per key: a cluster pipeline sends each to its node
                pipe.delete(key)
            await pipe.execute()

        async def drop_all() -> int:
            keys: list[Any] = []
            dropped = 0
            async for key in self.core.client.scan_iter(match=pattern, count=_INVALIDATE_BATCH):
                keys.append(key)
                if len(keys) == _INVALIDATE_BATCH:
                    await drop(keys)
                    dropped, keys = dropped + len(keys), []
            if keys:
                await drop(keys)
            return dropped + len(keys)

        done = await self._fail_open("delete", "every document result", drop_all)
        if isinstance(done, _FailedOpen):
            return False
        # SCAN saw every key that existed all along: the copies owed before `debt` are gone.
        self._owed.paid_everything(debt)
        logger.info("dropped %d cached document keys after an overflow of invalidations", done)
        return True

    def _dropper(self, document_ids: list[int]) -> AsyncCall[list[Any]]:
        async def drop() -> list[Any]:
            # A DEL per key: a cluster's pipeline refuses a DEL of several keys, even of one
            # slot (a document's value and lock share one; documents do not).
            pipe = self.core.client.pipeline(transaction=False)
            for document_id in document_ids:
                name = self.document_key(document_id)
                pipe.delete(cache_key(name))
                pipe.delete(cache_lock_key(name))
            return list(await pipe.execute())

        return drop

    async def _pay_owed(self) -> bool:
        """Drop what is owed and release the locks a reader may hold unknowingly; False when
        the drops could not be made (still owed: the caller fails open without reading).
        Locks that could not be released stay owed, and a read goes on: a lock held for
        nobody makes readers wait, it never makes them read a stale copy."""
        if not self._owed.any():
            return True
        if not await self.invalidate_documents([]):
            return False
        locks = self._owed.locks()
        if locks:
            calls = [([lock_key], [token]) for lock_key, token in locks]
            done = await self._fail_open(
                "unlock", f"{len(locks)} locks", lambda: self._unlock.run_many(calls)
            )
            if not isinstance(done, _FailedOpen):
                self._owed.released(locks)
        return True

    # -- encoding -----------------------------------------------------------------------------

    def _decode(
        self, key: str, raw: bytes, type_: type[T], keep: Callable[[Any], bool] | None = None
    ) -> tuple[bool, T | None]:
        """(True, value) for a readable hit; (False, None) when it no longer fits `type_`, or
        `keep` refuses it."""
        try:
            value = type_adapter(type_).validate_json(raw)
        except pydantic.ValidationError as exc:
            self._failed("decode", key, f"{type(exc).__name__}: {exc}")
            return False, None
        if keep is not None and not keep(value):
            return False, None  # counted as the miss it leads to
        self._count("hits")
        return True, cast(T, value)

    @staticmethod
    def _encode(value: object) -> bytes:
        try:
            return _ANY.dump_json(value)
        except PydanticSerializationError as exc:
            raise InvalidInput(f"value cannot be stored as JSON: {exc}", field="value") from exc

    def _ttl_ms(self, ttl: float | None) -> int:
        seconds = self.default_ttl if ttl is None else _ttl(ttl)
        # Shorten at random, never lengthen: `ttl` stays an upper bound.
        factor = 1.0 - self.jitter * random.random()  # noqa: S311 - spreading expiry, not security
        return max(1, int(seconds * 1000 * factor))


__all__ = ["NOT_KEPT", "NOT_KEPT_TTL", "AsyncRedisCache", "CacheStats", "is_not_kept"]

"""AsyncDocstore: the same surface as Docstore, the document flow end to end, and asyncio safety
(cancelled calls leave a clean pool and no half-written rows; the loop is never blocked)."""

from __future__ import annotations

import asyncio
import gc
import inspect
import io
import logging
import random
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from helpers import store_env

from docstore import (
    AsyncDocstore,
    Docstore,
    DocumentCreate,
    DocumentResponse,
    DocumentUpdate,
    Settings,
    UserCreate,
)
from docstore.errors import Cancelled, ConfigurationError, InvalidInput, NotFound
from docstore.intake.blobs import LocalBlobStore, S3BlobStore
from docstore.intake.extractors import Extraction, ProgressCallback, extract_text
from docstore.intake.flow_async import INTERRUPTED
from docstore.redis.keys import cache_key, cache_lock_key

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def store(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> AsyncIterator[AsyncDocstore]:
    async with await AsyncDocstore.connect(docstore_settings, blobs=docstore_blob_store) as opened:
        yield opened


async def _cut_short(call: Callable[[], Awaitable[object]], seconds: float) -> bool:
    """Run `call` under `asyncio.timeout(seconds)`; whether the timeout cut it short."""
    try:
        async with asyncio.timeout(seconds):
            await call()
    except TimeoutError:
        return True
    return False


async def _new_document(store: AsyncDocstore, email: str, filename: str) -> DocumentResponse:
    """A PENDING document of a new user (no blob)."""
    user = (await store.users.create(UserCreate(email=email))).user
    item = DocumentCreate(user_id=user.id, filename=filename, s3_key="k")
    return await store.documents.create(item)


async def _finished_document(store: AsyncDocstore, email: str, filename: str) -> DocumentResponse:
    """A COMPLETED document of a new user (only finished documents are cached)."""
    document = await _new_document(store, email, filename)
    await store.lifecycle.claim(document.id, "w0")
    return await store.lifecycle.mark_completed(document.id, "w0", "text")


async def _cached(store: AsyncDocstore, document_id: int) -> bool:
    return await store.cache.get_document_result(document_id, DocumentResponse) is not None


def _public(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") and (inspect.isfunction(member) or inspect.ismethod(member))
    }


def test_async_docstore_offers_every_public_method_of_docstore_awaited() -> None:
    sync, async_ = _public(Docstore), _public(AsyncDocstore)
    assert sorted(sync) == sorted(async_)
    assert {"submit_document", "process_next", "health", "connect"} <= set(sync)
    for name, method in sync.items():
        twin = async_[name]
        # Awaited, or entered with `async with` (store.transaction).
        entered = inspect.isasyncgenfunction(getattr(twin, "__wrapped__", None))
        assert inspect.iscoroutinefunction(twin) or entered, name
        assert list(inspect.signature(method).parameters) == list(
            inspect.signature(twin).parameters
        ), name


async def test_users_documents_and_the_flow_work_awaited(store: AsyncDocstore) -> None:
    created = await store.users.create(UserCreate(email="ann@example.com"))
    user = await store.users.authenticate(created.api_key)
    assert user is not None and user.id == created.user.id
    doc = await store.submit_document(user, "report.txt", b"quarterly invoice for the shop")
    outcome = await store.process_next("worker-1", extract_text)
    assert outcome is not None and outcome.action == "completed"
    assert (await store.documents.get(doc.id)).status == "COMPLETED"
    hits = await store.documents.search(user.id, "invoice")
    assert [hit.id for hit in hits.items] == [doc.id]
    page = await store.documents.list_for_user(user.id, limit=50)
    assert [item.id for item in page.items] == [doc.id]
    decision = await store.limiter.hit(f"user-{user.id}")
    assert decision.allowed
    progress = await store.progress.get(doc.id)
    assert progress is not None and progress.percent == 100
    assert (await store.health()).ok


async def test_cancelled_calls_return_their_connections_clean_and_write_half_nothing(
    store: AsyncDocstore,
) -> None:
    user = (await store.users.create(UserCreate(email="c@example.com"))).user
    items = [DocumentCreate(user_id=user.id, filename=f"{n}.pdf", s3_key="k") for n in range(1500)]

    async def attempt(n: int) -> bool:
        # create_many of 1,500 is two statements in one transaction: cancelled before, between
        # or inside them it must leave nothing; the timeouts spread over the call's length, and
        # four run at once, so some wait for a connection when they are cancelled.
        return await _cut_short(lambda: store.documents.create_many(items), 0.001 * (n % 50))

    outcomes: list[bool] = []
    for start in range(0, 240, 4):
        outcomes += await asyncio.gather(*(attempt(n) for n in range(start, start + 4)))
    cancelled = sum(outcomes)
    count = (await store.documents.count_by_status(user.id))["PENDING"]
    # Whole batches only; every finished call is there (one cancelled after its COMMIT may be too).
    assert count % 1500 == 0 and count >= 1500 * (len(outcomes) - cancelled)
    assert cancelled >= 20
    stats = store.pool.get_stats()
    assert stats.get("pool_available", 0) == stats.get("pool_size", 0)  # every connection back
    # And they are clean: a fresh call on each works.
    results = await asyncio.gather(*(store.health() for _ in range(store.pool.max_size)))
    assert all(report.ok for report in results)


class SlowBlobStore(LocalBlobStore):
    """A real local store whose every call takes 0.2 s, like a far-away S3."""

    def put(self, user_id: int, filename: str, data: Any) -> Any:
        time.sleep(0.2)
        return super().put(user_id, filename, data)

    def get(self, key: str) -> bytes:
        time.sleep(0.2)
        return super().get(key)


def _slow_extract(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
    # 0.2 s of blocking work: on the loop it would be seen; on a thread it is not.
    time.sleep(0.2)
    report(50, "halfway")
    return extract_text(data, filename, report)


async def test_the_intake_flow_never_blocks_the_loop(
    docstore_settings: Settings,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    # A full collection of the test process's heap (boto3, moto, pydantic: 0.12-0.15 s here) is
    # not a call of the flow: what earlier tests left is frozen out of it; the flow's own
    # garbage is still collected as it goes.
    gc.collect()
    gc.freeze()
    request.addfinalizer(gc.unfreeze)
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    blobs = SlowBlobStore(tmp_path)
    with caplog.at_level(logging.WARNING, logger="asyncio"):
        async with await AsyncDocstore.connect(docstore_settings, blobs=blobs) as store:
            user = (await store.users.create(UserCreate(email="loop@example.com"))).user
            for n in range(3):
                await store.submit_document(user, f"{n}.txt", b"words to index " * 100)
            outcomes = [await store.process_next("w", _slow_extract) for _ in range(3)]
    assert [o.action for o in outcomes if o] == ["completed"] * 3
    slow = [r.getMessage() for r in caplog.records if "Executing" in r.getMessage()]
    assert slow == []


# A fresh process connects from its settings and submits: the store makes its own boto3
# client (the first one a process makes takes 0.1-0.3 s: imports, botocore's service model,
# the credential chain) and must not make it on the loop.
FIRST_SUBMIT = """
import asyncio, logging, sys
from docstore import AsyncDocstore, UserCreate

async def main():
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    async with await AsyncDocstore.connect() as store:
        user = (await store.users.create(UserCreate(email="first@example.com"))).user
        await store.submit_document(user, "a.txt", b"the first upload of this process")

logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(message)s")
asyncio.run(main())
"""


def test_a_store_made_from_settings_never_blocks_the_loop_making_its_blob_client(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore, docstore_s3_endpoint: str
) -> None:
    env = store_env(docstore_settings, docstore_blob_store, docstore_s3_endpoint)
    run = subprocess.run(
        [sys.executable, "-c", FIRST_SUBMIT], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    slow = [line for line in run.stdout.splitlines() if "Executing" in line]
    assert slow == []
    assert (
        len(
            docstore_blob_store.client.list_objects_v2(Bucket=docstore_blob_store.bucket)[
                "Contents"
            ]
        )
        == 1
    )


async def test_opens_at_once_open_one_pool_and_close_it(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    """Before, the second open found the first one's pool half open, closed it and made another:
    the first then opened the pool nobody held, and `close` never closed it."""
    store = AsyncDocstore(docstore_settings, blobs=docstore_blob_store)
    pool = store.pool
    await asyncio.gather(*(store.open() for _ in range(3)))
    assert store.pool is pool and not pool.closed
    await store.close()
    assert pool.closed


def test_opens_from_threads_at_once_open_one_pool_and_close_it(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    store = Docstore(docstore_settings, blobs=docstore_blob_store)
    pool = store.pool
    start = threading.Barrier(3)

    def open_it() -> None:
        start.wait()
        store.open()

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert store.pool is pool and not pool.closed
    store.close()
    assert pool.closed


def test_the_blob_store_has_the_same_methods_awaited_on_the_async_side() -> None:
    from docstore.intake.blob_access import Blobs
    from docstore.intake.blob_access_async import AsyncBlobs

    sync, async_ = _public(Blobs), _public(AsyncBlobs)
    assert sorted(sync) == sorted(async_) == ["delete", "get", "open", "presigned_url", "put"]
    assert all(inspect.iscoroutinefunction(method) for method in async_.values())


async def test_blob_calls_are_awaited_and_run_off_the_loop(store: AsyncDocstore) -> None:
    blob = await store.blobs.put(1, "a.txt", b"bytes kept in S3")
    assert await store.blobs.get(blob.key) == b"bytes kept in S3"
    assert (await store.blobs.presigned_url(blob.key)).startswith("http")
    await store.blobs.delete(blob.key)
    assert isinstance(store.blobs.store, S3BlobStore)


async def test_calls_cancelled_while_giving_their_connection_back_still_give_it_back(
    docstore_settings: Settings,
) -> None:
    # Eight tasks on five connections: returning one can wait for the pool's lock, and a
    # timeout landing in that wait must not keep the connection from the pool for good.
    settings = docstore_settings.model_copy(update={"pool_min_size": 5, "pool_max_overflow": 0})
    async with await AsyncDocstore.connect(settings) as store:
        user = (await store.users.create(UserCreate(email="give@example.com"))).user
        cancelled = 0

        async def reader(seed: int) -> None:
            nonlocal cancelled
            rng = random.Random(seed)
            for _ in range(300):
                cancelled += await _cut_short(
                    lambda: store.documents.list_for_user(user.id, limit=10),
                    rng.uniform(0, 0.004),
                )

        for round_ in range(3):
            await asyncio.gather(*(reader(10 * round_ + n) for n in range(8)))
            # A connection the pool discarded is replaced in the background: wait for that.
            for _ in range(50):
                stats = store.pool.get_stats()
                if stats.get("pool_available", 0) == stats.get("pool_size", 0) == 5:
                    break
                await asyncio.sleep(0.1)
            assert stats.get("pool_available", 0) == stats.get("pool_size", 0) == 5, stats
        assert cancelled >= 100
        assert (await store.health()).ok


async def test_a_cancelled_cache_read_never_leaves_its_load_lock_behind(
    store: AsyncDocstore,
) -> None:
    # A read cancelled after its script took the single-flight lock, or while its loader ran,
    # lets the lock go: otherwise the next reader of the document waits for the lock to expire.
    document = await _finished_document(store, "lock@example.com", "a.pdf")
    name = store.cache.document_key(document.id)
    value_key, lock_key = cache_key(name), cache_lock_key(name)

    spread = await _spread_of(  # not a fixed figure: machines differ
        lambda: store.get_document(document.id),
        before=lambda: store.redis.delete(value_key, lock_key),
    )
    rng = random.Random(7)
    cancelled = left = 0
    for _ in range(1500):
        await store.redis.delete(value_key, lock_key)
        cancelled += await _cut_short(
            lambda: store.get_document(document.id), rng.uniform(0, spread)
        )
        if await store.redis.exists(lock_key) and not await store.redis.exists(value_key):
            left += 1
    assert cancelled >= 200, cancelled
    assert left == 0


async def _spread_of(
    call: Callable[[], Awaitable[object]],
    before: Callable[[], Awaitable[object]] | None = None,
) -> float:
    """Twice the fastest time of `call` (after `before`, untimed, each time; one warm-up
    call first): timeouts drawn below it land anywhere inside one, and at least half of them
    expire. (The median let a slow moment of a busy machine stretch the spread until only
    48 of 400 timeouts expired, in CI.)"""
    times = []
    for _ in range(10):
        if before is not None:
            await before()
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return 2 * min(times[1:])


async def test_a_change_committed_by_a_cancelled_call_leaves_no_stale_cached_copy(
    store: AsyncDocstore,
) -> None:
    # psycopg lets a cancelled statement finish: the row may be committed while the call raises.
    # Whatever the cancel cut (the UPDATE, the COMMIT of a transaction, the cache's drop), the
    # next get_document serves what PostgreSQL holds, alone or inside store.transaction().
    document = await _finished_document(store, "stale@example.com", "0.pdf")
    counter = iter(range(1, 10**6))

    async def alone() -> None:
        update = DocumentUpdate(filename=f"{next(counter)}.pdf")
        await store.documents.update(document.id, update)

    async def in_transaction() -> None:
        async with store.transaction() as conn:
            update = DocumentUpdate(filename=f"{next(counter)}.pdf")
            await store.documents.update(document.id, update, conn=conn)

    rng = random.Random(3)
    for write in (alone, in_transaction):
        spread = await _spread_of(write)
        cancelled = stale = 0
        for _ in range(400):
            await store.get_document(document.id)
            assert await _cached(store, document.id)
            cancelled += await _cut_short(write, rng.uniform(0, spread))
            held = (await store.documents.get(document.id)).filename
            stale += (await store.get_document(document.id)).filename != held
        assert cancelled >= 50, write.__name__
        assert stale == 0, write.__name__


async def test_invalidations_kept_for_retry_survive_a_cancelled_retry(
    store: AsyncDocstore,
) -> None:
    # Ids waiting to be dropped (as after a Redis blip) stay waiting when the call that retries
    # them is cancelled before its DEL was sent: the next call drops them.
    document = await _finished_document(store, "retry@example.com", "old.pdf")
    rename = "UPDATE documents SET filename = %s WHERE id = %s"
    spread = await _spread_of(lambda: store.get_document(document.id))
    rng = random.Random(5)
    cancelled = stale = 0
    for n in range(400):
        await store.get_document(document.id)
        assert await _cached(store, document.id)
        async with store.pool.connection() as conn:  # a change docstore does not see
            await conn.execute(rename, (f"{n}.pdf", document.id))
        store.cache.invalidate_later([document.id])
        await store.redis.connection_pool.disconnect()  # the retry connects first, as after a blip
        cancelled += await _cut_short(
            lambda: store.get_document(document.id), rng.uniform(0, spread)
        )
        stale += (await store.get_document(document.id)).filename != f"{n}.pdf"
    assert cancelled >= 50
    assert stale == 0


async def test_a_cancelled_submit_never_leaves_a_row_without_its_blob(store: AsyncDocstore) -> None:
    # A submit cancelled while its INSERT runs may still commit the row: the blob stays then.
    user = (await store.users.create(UserCreate(email="submit@example.com"))).user
    counter = iter(range(10**6))

    async def submit() -> None:
        await store.submit_document(user, f"{next(counter)}.txt", b"some words to keep")

    spread = await _spread_of(submit)
    rng = random.Random(11)
    cancelled = 0
    for _ in range(300):
        cancelled += await _cut_short(submit, rng.uniform(0, spread))
    page = await store.documents.list_for_user(user.id, limit=100)
    rows = list(page.items)
    while page.next_cursor is not None:
        page = await store.documents.list_for_user(user.id, limit=100, cursor=page.next_cursor)
        rows += page.items
    missing = []
    for row in rows:
        try:
            await store.blobs.get(row.s3_key)
        except NotFound:
            missing.append(row.id)
    assert cancelled >= 50
    assert len(rows) >= 9 + 300 - cancelled
    assert missing == []


class _SlowStream(io.RawIOBase):
    """A client's upload arriving in 20 slow parts; counts the reads made."""

    def __init__(self) -> None:
        self.reads = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        self.reads += 1
        if self.reads > 20:
            return b""
        time.sleep(0.05)
        return b"hello world\n" * 100


def _blob_keys(blobs: S3BlobStore) -> list[str]:
    listing = blobs.client.list_objects_v2(Bucket=blobs.bucket)
    return [item["Key"] for item in listing.get("Contents", [])]


async def test_a_submit_cancelled_during_its_upload_leaves_no_blob_and_stops_reading(
    store: AsyncDocstore, docstore_blob_store: S3BlobStore
) -> None:
    """Before, the upload's thread went on after the cancel: the blob was stored by nobody's
    call (no row names it) and the stream read after the call had ended."""
    user = (await store.users.create(UserCreate(email="slow@example.com"))).user
    stream = _SlowStream()
    assert await _cut_short(lambda: store.submit_document(user, "a.txt", stream), 0.3)
    reads = stream.reads
    await asyncio.sleep(1.2)  # the rest of the upload, had it gone on
    assert stream.reads == reads < 20
    assert _blob_keys(docstore_blob_store) == []
    assert (await store.documents.list_for_user(user.id)).items == []


class _StoresThenDawdles(S3BlobStore):
    """The real store, whose `put` returns late: a cancel lands once the blob is stored."""

    def put(self, user_id: int, filename: str, data: Any) -> Any:
        stored = super().put(user_id, filename, data)
        time.sleep(0.3)
        return stored


async def test_a_blob_stored_after_its_submit_was_cancelled_is_deleted(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    blobs = _StoresThenDawdles(docstore_blob_store.client, docstore_blob_store.bucket)
    async with await AsyncDocstore.connect(docstore_settings, blobs=blobs) as store:
        user = (await store.users.create(UserCreate(email="late@example.com"))).user
        assert await _cut_short(lambda: store.submit_document(user, "b.txt", b"words"), 0.1)
        assert _blob_keys(docstore_blob_store) == []
        assert (await store.documents.list_for_user(user.id)).items == []


class _DeleteFails(_StoresThenDawdles):
    """Its delete raises what no docstore store raises: a blob store of the caller's may."""

    def delete(self, key: str) -> None:
        raise RuntimeError("this store cannot delete")


async def test_an_undo_that_fails_never_replaces_the_cancel(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    """Before, the delete's RuntimeError came out of the cancelled submit instead of the
    cancel (asyncio.timeout then raised no TimeoutError)."""
    blobs = _DeleteFails(docstore_blob_store.client, docstore_blob_store.bucket)
    async with await AsyncDocstore.connect(docstore_settings, blobs=blobs) as store:
        user = (await store.users.create(UserCreate(email="undo@example.com"))).user
        assert await _cut_short(lambda: store.submit_document(user, "c.txt", b"words"), 0.1)


class _SlowUpload(S3BlobStore):
    """The real store, uploading what it is given 1 MiB per read, a read per 50 ms."""

    def __init__(self, blobs: S3BlobStore) -> None:
        super().__init__(blobs.client, blobs.bucket)
        self.read = 0

    def put(self, user_id: int, filename: str, data: Any) -> Any:
        store = self

        class Slow(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def read(self, size: int = -1) -> bytes:
                time.sleep(0.05)
                chunk = data.read(min(size, 1 << 20) if size >= 0 else 1 << 20)
                store.read += len(chunk)
                return bytes(chunk)

        return super().put(user_id, filename, Slow())


async def test_a_submit_of_bytes_cancelled_during_its_upload_reads_no_more(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    """Before, bytes were handed over as they are: a cancel waited for the whole upload."""
    blobs = _SlowUpload(docstore_blob_store)
    data = b"x" * (10 << 20)
    async with await AsyncDocstore.connect(docstore_settings, blobs=blobs) as store:
        user = (await store.users.create(UserCreate(email="bytes@example.com"))).user
        assert await _cut_short(lambda: store.submit_document(user, "d.bin", data), 0.2)
    assert blobs.read < len(data)
    assert _blob_keys(docstore_blob_store) == []


async def test_a_cancelled_process_next_stops_its_extractor_at_the_next_report(
    store: AsyncDocstore,
) -> None:
    # The extractor's thread outlives the cancelled call; its next progress report stops it
    # instead of extending the lease of a document nobody will complete. The document is
    # handed back at once as a failed attempt, not when its lease runs out.
    user = (await store.users.create(UserCreate(email="abandon@example.com"))).user
    document = await store.submit_document(user, "long.txt", b"a long document")
    started, stopped = threading.Event(), threading.Event()

    def long_extract(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        started.set()
        try:
            for n in range(100):
                time.sleep(0.02)
                report(n, "reading")
        except Cancelled:
            stopped.set()
            raise
        return extract_text(data, filename, report)

    task = asyncio.create_task(store.process_next("w", long_extract))
    assert await asyncio.to_thread(started.wait, 10)
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    handed_back = await store.documents.get(document.id)
    assert (handed_back.status, handed_back.worker_id) == ("PENDING", None)
    (attempt,) = await store.lifecycle.attempts(document.id)
    assert (attempt.worker_id, attempt.error_message) == ("w", INTERRUPTED)
    assert await asyncio.to_thread(stopped.wait, 10)


async def test_an_interrupted_drop_after_a_write_tells_what_it_wrote_as_unsure(
    store: AsyncDocstore,
) -> None:
    # Once the statement returned, the document it wrote is known: when telling the cache is
    # interrupted, that one is told as unsure (dropped by the cache's next call).
    document = await _finished_document(store, "batch@example.com", "0.pdf")
    unsure: list[list[int] | None] = []

    async def interrupted(ids: list[int]) -> None:
        raise asyncio.CancelledError

    store.changes.listen(interrupted, unsure.append)
    with pytest.raises(asyncio.CancelledError):
        await store.documents.update(document.id, DocumentUpdate(filename="1.pdf"))
    assert unsure == [[document.id]]
    assert (await store.documents.get(document.id)).filename == "1.pdf"


async def test_lifecycle_steps_tell_the_cache_nothing(store: AsyncDocstore) -> None:
    # Every step changes an unfinished document, of which no copy is cached: nothing to tell,
    # also when the step is a batch (requeue_expired), or cut short.
    document = await _new_document(store, "steps@example.com", "0.pdf")
    await store.lifecycle.claim(document.id, "doomed")
    async with store.pool.connection() as conn:
        expire = "UPDATE documents SET lease_expires_at = now() - interval '1 s' WHERE id = %s"
        await conn.execute(expire, (document.id,))
    told: list[list[int] | None] = []

    async def listener(ids: list[int]) -> None:
        told.append(ids)

    store.changes.listen(listener, told.append)
    assert [d.id for d in await store.lifecycle.requeue_expired()] == [document.id]
    await store.lifecycle.cancel(document.id)
    assert told == []
    assert store.cache.pending_invalidations == 0


async def test_a_cancel_landing_on_any_call_is_never_lost(store: AsyncDocstore) -> None:
    # Before Python 3.12, redis-py's `asyncio.wait_for` around a command's send returned over a
    # cancel that landed just as the send finished: asyncio.timeout never fired and the call
    # went on. Every expired timeout must now raise, whether on the raw client, a pipeline, a
    # script (the limiter), a cached read, or any other public call.
    created = await store.users.create(UserCreate(email="lost@example.com"))
    document = await store.submit_document(created.user, "a.txt", b"lost words")
    await store.get_document(document.id)  # cached

    def pipeline() -> Awaitable[object]:
        return store.redis.pipeline(transaction=False).get("a").get("b").execute()

    async def in_transaction() -> None:
        async with store.transaction() as conn:
            await store.documents.update(document.id, DocumentUpdate(filename="t.txt"), conn=conn)

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "command": lambda: store.redis.get("lost"),
        "pipeline": pipeline,
        "script": lambda: store.limiter.peek("lost"),
        "cached read": lambda: store.get_document(document.id),
        "authenticate": lambda: store.users.authenticate(created.api_key),
        "page": lambda: store.documents.list_for_user(created.user.id, limit=50),
        "update": lambda: store.documents.update(document.id, DocumentUpdate(filename="u.txt")),
        "transaction": in_transaction,
        "submit": lambda: store.submit_document(created.user, "b.txt", b"more"),
        "progress": lambda: store.progress.get(document.id),
        "blob": lambda: store.blobs.get(document.s3_key),
        "health": store.health,
    }
    rng = random.Random(11)
    for name, call in calls.items():
        spread = await _spread_of(call)
        expired = lost = 0
        for _ in range(400):
            raised = False
            try:
                async with asyncio.timeout(rng.uniform(0, spread)) as scope:
                    await call()
            except TimeoutError:
                raised = True
            expired += scope.expired()
            lost += scope.expired() and not raised
        assert expired >= 50, (name, expired)
        assert lost == 0, (name, lost, expired)


@pytest.fixture
async def crowded(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> AsyncIterator[tuple[AsyncDocstore, DocumentResponse, float]]:
    """A store of two connections, a document, and a spread of timeouts long enough for eight
    tasks reading it at once to wait for a connection."""
    settings = docstore_settings.model_copy(update={"pool_min_size": 2, "pool_max_overflow": 0})
    async with await AsyncDocstore.connect(settings, blobs=docstore_blob_store) as store:
        document = await _new_document(store, "crowded@example.com", "a.pdf")
        spread = 8 * await _spread_of(lambda: store.documents.get(document.id))
        yield store, document, spread
        # What tells PoolExhausted from an outage: connections checked out right now.
        assert store.db._in_use == 0
        # The pool rolls back, or replaces, a connection given back mid-transaction in the
        # background: give it a moment; a connection lost for good never comes back.
        for _ in range(100):
            stats = store.pool.get_stats()
            if stats["pool_available"] == stats["pool_size"] == 2:
                break
            await asyncio.sleep(0.1)
        assert stats["pool_available"] == stats["pool_size"] == 2, stats


async def test_a_cancel_landing_on_a_wait_for_a_pooled_connection_is_never_lost(
    crowded: tuple[AsyncDocstore, DocumentResponse, float],
) -> None:
    # psycopg_pool waits for a free connection under asyncio.wait_for, which (before Python
    # 3.12) returns the connection over a cancel that arrives with it: the statement then ran
    # as if nobody had cancelled it. Eight tasks share two connections under random timeouts.
    store, document, spread = crowded
    expired = lost = 0

    async def reader(seed: int) -> None:
        nonlocal expired, lost
        rng = random.Random(seed)
        for _ in range(200):
            raised = False
            try:
                async with asyncio.timeout(rng.uniform(0, spread)) as scope:
                    await store.documents.get(document.id)
            except TimeoutError:
                raised = True
            expired += scope.expired()
            lost += scope.expired() and not raised

    await asyncio.gather(*(reader(seed) for seed in range(8)))
    assert expired >= 200, expired
    assert lost == 0, (lost, expired)


async def test_a_cancel_raised_again_stays_inside_an_anyio_cancel_scope(
    crowded: tuple[AsyncDocstore, DocumentResponse, float],
) -> None:
    # anyio knows its own cancels by their message; a cancel that docstore raises again (after
    # a wait dropped it, or after finishing a step) must still be one the scope catches, or it
    # would cancel the whole task instead of ending the scope.
    store, document, spread = crowded
    caught = 0

    async def reader(seed: int) -> None:
        nonlocal caught
        rng = random.Random(seed)
        for n in range(200):
            with anyio.move_on_after(rng.uniform(0, spread)) as scope:
                if n % 2:
                    await store.documents.get(document.id)
                else:
                    await store.redis.get("scope")
            caught += scope.cancelled_caught

    await asyncio.gather(*(reader(seed) for seed in range(8)))
    assert caught >= 200, caught


async def test_a_failure_being_recorded_when_the_call_is_cancelled_is_still_recorded(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    # The extractor refused bad input (not retried); the cancel lands while that failure waits
    # for a connection. The failure is recorded as it is, not replaced by the hand-back of an
    # interrupted attempt (which is retried).
    settings = docstore_settings.model_copy(update={"pool_min_size": 1, "pool_max_overflow": 0})
    started, go = threading.Event(), threading.Event()

    def refuse(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        started.set()
        go.wait(10)
        raise InvalidInput("unreadable scan")

    async with await AsyncDocstore.connect(settings, blobs=docstore_blob_store) as store:
        user = (await store.users.create(UserCreate(email="refused@example.com"))).user
        document = await store.submit_document(user, "scan.pdf", b"not really a pdf")
        task = asyncio.create_task(store.process_next("w", refuse))
        assert await asyncio.to_thread(started.wait, 10)
        async with store.pool.connection():  # the only connection: the failure must wait
            go.set()
            await asyncio.sleep(0.3)
            task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        final = await store.documents.get(document.id)
    assert (final.status, final.error_message) == ("FAILED", "InvalidInput: unreadable scan")


async def test_a_statement_cut_short_by_an_anyio_scope_is_cancelled_on_the_server(
    store: AsyncDocstore, docstore_settings: Settings
) -> None:
    # anyio asks a scope's cancel again on every turn of the loop. psycopg answers the first
    # by cancelling the statement on the server and reading its outcome; a second one landing
    # meanwhile made it close the socket instead, leaving the statement running on the server:
    # here it waited for a row lock and committed once that was released, after the caller had
    # been told it was cancelled (and after any clean-up it did for that).
    user = (await store.users.create(UserCreate(email="scope@example.com"))).user
    row = await store.documents.create(
        DocumentCreate(user_id=user.id, filename="before.txt", s3_key="k")
    )
    async with await psycopg.AsyncConnection.connect(docstore_settings.database_url) as holder:
        await holder.execute("SELECT 1 FROM documents WHERE id = %s FOR UPDATE", [row.id])
        with anyio.move_on_after(0.3) as scope:
            await store.documents.update(row.id, DocumentUpdate(filename="after.txt"))
        assert scope.cancelled_caught
        await holder.commit()  # the lock is released
    await asyncio.sleep(0.3)
    assert (await store.documents.get(row.id)).filename == "before.txt"
    stats = store.pool.get_stats()
    assert stats.get("connections_lost", 0) == 0  # the connection was kept, not closed


async def test_a_commit_cut_short_by_an_anyio_scope_does_not_happen_later(
    store: AsyncDocstore, docstore_settings: Settings
) -> None:
    # A COMMIT that takes a while: a deferred constraint trigger sleeps in it.
    async with await psycopg.AsyncConnection.connect(
        docstore_settings.database_url, autocommit=True
    ) as admin:
        await admin.execute(
            """
            CREATE TABLE slow_commits (id int);
            CREATE FUNCTION sleep_a_second() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER slow_commit AFTER INSERT ON slow_commits
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION sleep_a_second();
            """
        )
        with anyio.move_on_after(0.3) as scope:
            async with store.transaction() as conn:
                await conn.execute("INSERT INTO slow_commits VALUES (1)")
        assert scope.cancelled_caught
        await asyncio.sleep(1.2)  # the trigger's second has passed
        rows = await (await admin.execute("SELECT count(*) FROM slow_commits")).fetchone()
    assert rows == (0,)  # cancelled on the server, not committed behind the caller's back
    assert store.pool.get_stats().get("connections_lost", 0) == 0


async def test_a_blob_store_the_settings_cannot_make_is_a_configuration_error_on_use(
    docstore_settings: Settings, tmp_path: Path
) -> None:
    # open() made the blob store after opening the pool: a BLOB_DIR that cannot be a folder
    # raised a raw NotADirectoryError from connect, and the opened pool was never closed.
    (tmp_path / "a-file").write_bytes(b"not a folder")
    settings = docstore_settings.model_copy(
        update={"blob_backend": "local", "blob_dir": str(tmp_path / "a-file" / "blobs")}
    )
    async with await AsyncDocstore.connect(settings) as store:  # what needs no blob works
        assert (await store.health()).ok
        user = (await store.users.create(UserCreate(email="noblobs@example.com"))).user
        with pytest.raises(ConfigurationError, match="BLOB_DIR"):
            await store.submit_document(user, "a.txt", b"bytes")
        assert (await store.documents.list_for_user(user.id)).items == []

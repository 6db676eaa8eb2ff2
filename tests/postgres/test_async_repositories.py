"""The async repositories (the sources the sync ones are generated from) against a real PostgreSQL.

Most checks run on both sides through one small adapter (`Side`): on the sync side each method is
awaited like its async twin's but runs in place, so a behaviour written once is proven on the
async repositories and on the generated sync ones alike.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from types import ModuleType
from typing import Any

import anyio
import pytest

import docstore.repositories.documents
import docstore.repositories.documents_async
from docstore.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from docstore.models import DocumentCreate, DocumentUpdate, UserCreate, UserUpdate
from docstore.postgres import pool as sync_pool
from docstore.postgres import pool_async
from docstore.postgres.executor import Database
from docstore.postgres.executor_async import AsyncDatabase
from docstore.repositories.documents import DocumentRepo
from docstore.repositories.documents_async import AsyncDocumentRepo
from docstore.repositories.lifecycle import DocumentLifecycle
from docstore.repositories.lifecycle_async import AsyncDocumentLifecycle
from docstore.repositories.users import UserRepo
from docstore.repositories.users_async import AsyncUserRepo
from docstore.settings import Settings

pytestmark = pytest.mark.anyio

TWINS = [
    (UserRepo, AsyncUserRepo),
    (DocumentRepo, AsyncDocumentRepo),
    (DocumentLifecycle, AsyncDocumentLifecycle),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _Awaited:
    """A sync repository whose methods are awaited like its async twin's (they run in place)."""

    def __init__(self, repo: object) -> None:
        self._repo = repo

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._repo, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            return method(*args, **kwargs)

        return call


@dataclass
class Side:
    """One side's repositories, awaited the same way, and what a test needs around them."""

    name: str
    documents_module: ModuleType
    users: Any
    documents: Any
    lifecycle: Any
    transaction: Callable[[], AbstractAsyncContextManager[Any]]
    sql: Callable[[str, tuple[object, ...]], Any]  # a raw statement, to stage what tests need


def _async_side(db: AsyncDatabase) -> Side:
    async def sql(statement: str, params: tuple[object, ...]) -> None:
        async with db.connection() as conn:
            await conn.execute(statement, params)  # type: ignore[arg-type]

    return Side(
        name="async",
        documents_module=docstore.repositories.documents_async,
        users=AsyncUserRepo(db),
        documents=AsyncDocumentRepo(db),
        # Retries at once (no backoff): the backoff has its own tests (test_shared_retries.py).
        lifecycle=AsyncDocumentLifecycle(db, backoff_base=0),
        transaction=db.transaction,
        sql=sql,
    )


def _sync_side(db: Database) -> Side:
    @asynccontextmanager
    async def transaction() -> AsyncIterator[Any]:
        with db.transaction() as conn:
            yield conn

    async def sql(statement: str, params: tuple[object, ...]) -> None:
        with db.connection() as conn:
            conn.execute(statement, params)  # type: ignore[arg-type]

    return Side(
        name="sync",
        documents_module=docstore.repositories.documents,
        users=_Awaited(UserRepo(db)),
        documents=_Awaited(DocumentRepo(db)),
        lifecycle=_Awaited(DocumentLifecycle(db, backoff_base=0)),
        transaction=transaction,
        sql=sql,
    )


@pytest.fixture
async def async_db(docstore_settings: Settings) -> AsyncIterator[AsyncDatabase]:
    pool = pool_async.new_pool(docstore_settings)
    await pool_async.open_pool(pool, docstore_settings)
    try:
        yield AsyncDatabase(pool, address=docstore_settings.database_address)
    finally:
        await pool.close()


@pytest.fixture
def sync_db(docstore_settings: Settings) -> Iterator[Database]:
    pool = sync_pool.new_pool(docstore_settings)
    sync_pool.open_pool(pool, docstore_settings)
    try:
        yield Database(pool, address=docstore_settings.database_address)
    finally:
        pool.close()


@pytest.fixture(params=["async", "sync"])
def side(request: pytest.FixtureRequest) -> Side:
    if request.param == "async":
        return _async_side(request.getfixturevalue("async_db"))
    return _sync_side(request.getfixturevalue("sync_db"))


async def _user(side: Side, email: str = "owner@example.com") -> int:
    created = await side.users.create(UserCreate(email=email))
    return int(created.user.id)


async def _document(side: Side, user_id: int, max_attempts: int = 3, name: str = "a.pdf") -> int:
    item = DocumentCreate(user_id=user_id, filename=name, s3_key="k", max_attempts=max_attempts)
    return int((await side.documents.create(item)).id)


async def _expire_lease(side: Side, document_id: int) -> None:
    await side.sql(
        "UPDATE documents SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
        (document_id,),
    )


# -- the two sides are twins ------------------------------------------------------------------


def _public_methods(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


@pytest.mark.parametrize(("sync_class", "async_class"), TWINS, ids=lambda cls: cls.__name__)
def test_every_public_method_has_an_async_twin_with_the_same_parameters(
    sync_class: type, async_class: type
) -> None:
    sync_methods, async_methods = _public_methods(sync_class), _public_methods(async_class)
    assert len(sync_methods) >= 4  # the scan sees the methods (so the test can fail)
    assert set(async_methods) == set(sync_methods)
    for name, method in sync_methods.items():
        twin = async_methods[name]
        assert inspect.signature(twin) == inspect.signature(method), name
        assert inspect.iscoroutinefunction(twin), name
        assert not inspect.iscoroutinefunction(method), name


# -- users --------------------------------------------------------------------------------------


async def test_users_are_created_authenticated_changed_and_deleted(side: Side) -> None:
    created = await side.users.create(UserCreate(email="Ada@Example.com"))
    user_id = created.user.id
    assert (await side.users.get(user_id)).email == "Ada@Example.com"
    assert (await side.users.get_by_email("ada@example.COM")).id == user_id
    assert (await side.users.authenticate(created.api_key)).id == user_id
    assert await side.users.authenticate("ds_" + "x" * 40) is None

    rotated = await side.users.rotate_api_key(user_id)
    assert await side.users.authenticate(created.api_key) is None
    assert (await side.users.authenticate(rotated.api_key)).id == user_id
    await side.users.revoke_api_key(user_id)
    assert await side.users.authenticate(rotated.api_key) is None

    changed = await side.users.update(user_id, UserUpdate(email="lovelace@example.com"))
    assert changed.email == "lovelace@example.com"
    await side.users.delete(user_id)
    with pytest.raises(NotFound):
        await side.users.get(user_id)
    with pytest.raises(NotFound):
        await side.users.delete(user_id)


async def test_user_errors_are_typed(side: Side) -> None:
    await _user(side, "taken@example.com")
    with pytest.raises(Conflict) as conflict:
        await side.users.create(UserCreate(email="TAKEN@example.com"))
    assert conflict.value.constraint_name == "users_email_lower_key"
    with pytest.raises(InvalidInput) as invalid:
        await side.users.create({"email": "not an email"})
    assert invalid.value.field == "email"
    with pytest.raises(InvalidInput) as invalid:
        await side.users.get(0)
    assert invalid.value.field == "user_id"
    with pytest.raises(NotFound):
        await side.users.update(10**9, UserUpdate(email="nobody@example.com"))


async def test_users_list_pages_through_every_user_once(side: Side) -> None:
    ids = [await _user(side, f"u{n}@example.com") for n in range(5)]
    seen: list[int] = []
    cursor = None
    while True:
        page = await side.users.list(limit=2, cursor=cursor)
        seen.extend(user.id for user in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids
    with_documents = await side.users.get_with_documents(ids[0])
    assert with_documents.id == ids[0] and with_documents.documents == []


# -- documents ----------------------------------------------------------------------------------


async def test_documents_are_created_read_changed_and_deleted(side: Side) -> None:
    user_id = await _user(side)
    doc_id = await _document(side, user_id)
    doc = await side.documents.get(doc_id)
    assert (doc.status, doc.user_id, doc.filename) == ("PENDING", user_id, "a.pdf")
    assert doc.created_at.tzinfo is not None and doc.created_at.utcoffset().total_seconds() == 0
    assert (await side.documents.get_with_user(doc_id)).user.id == user_id

    changed = await side.documents.update(doc_id, DocumentUpdate(filename="b.pdf"))
    assert changed.filename == "b.pdf"
    await side.documents.delete(doc_id)
    for action in (side.documents.get, side.documents.delete, side.documents.get_with_user):
        with pytest.raises(NotFound):
            await action(doc_id)


async def test_documents_of_unknown_users_and_bad_fields_are_invalid_input(side: Side) -> None:
    with pytest.raises(InvalidInput) as caught:
        await side.documents.create(DocumentCreate(user_id=10**9, filename="a", s3_key="k"))
    assert (caught.value.field, caught.value.constraint) == ("user_id", "documents_user_id_fkey")
    user_id = await _user(side)
    with pytest.raises(InvalidInput) as caught:
        await side.documents.create({"user_id": user_id, "filename": "", "s3_key": "k"})
    assert caught.value.field == "filename"
    with pytest.raises(InvalidInput) as caught:
        await side.documents.list_for_user(user_id, status="DONE")
    assert caught.value.field == "status"


async def test_list_for_user_pages_newest_first_with_a_status_filter(side: Side) -> None:
    user_id = await _user(side)
    ids = [await _document(side, user_id, name=f"{n}.pdf") for n in range(5)]
    await side.lifecycle.claim(ids[0], "w1")
    seen: list[int] = []
    cursor = None
    while True:
        page = await side.documents.list_for_user(user_id, limit=2, cursor=cursor)
        seen.extend(doc.id for doc in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids[::-1]
    processing = await side.documents.list_for_user(user_id, status="PROCESSING")
    assert [doc.id for doc in processing.items] == [ids[0]]
    counts = await side.documents.count_by_status(user_id)
    assert counts == {"PENDING": 4, "PROCESSING": 1, "COMPLETED": 0, "FAILED": 0, "CANCELLED": 0}


async def test_create_many_keeps_input_order_and_a_bad_batch_writes_nothing(side: Side) -> None:
    user_id = await _user(side)
    items = [DocumentCreate(user_id=user_id, filename=f"{n}.pdf", s3_key="k") for n in range(3)]
    created = await side.documents.create_many(items)
    assert [doc.filename for doc in created] == ["0.pdf", "1.pdf", "2.pdf"]
    assert await side.documents.create_many([]) == []

    # Over one batch, so the batches share a transaction: the unknown user in the last one
    # takes back the first.
    many = [DocumentCreate(user_id=user_id, filename="x", s3_key="k") for _ in range(1000)]
    many.append(DocumentCreate(user_id=10**9, filename="x", s3_key="k"))
    with pytest.raises(InvalidInput) as caught:
        await side.documents.create_many(many)
    assert caught.value.field == "user_id"
    assert (await side.documents.count_by_status(user_id))["PENDING"] == 3
    with pytest.raises(InvalidInput) as caught:
        await side.documents.create_many("not a list")
    assert caught.value.field == "items"


async def test_calls_share_the_callers_transaction(side: Side) -> None:
    user_id = await _user(side)
    with pytest.raises(RuntimeError):
        async with side.transaction() as conn:
            await _user(side, "inside@example.com")  # on its own connection: stays
            await side.documents.create(
                DocumentCreate(user_id=user_id, filename="a", s3_key="k"), conn=conn
            )
            await side.users.delete(user_id, conn=conn)
            raise RuntimeError("roll back")
    assert (await side.users.get(user_id)).id == user_id
    assert (await side.documents.count_by_status(user_id))["PENDING"] == 0
    assert await side.users.get_by_email("inside@example.com") is not None


async def test_search_ranks_matches_pages_and_refuses_bad_queries(side: Side) -> None:
    user_id = await _user(side)
    for name, text in [("fox", "the quick brown fox"), ("dog", "a lazy dog"), ("two", "fox fox")]:
        doc_id = await _document(side, user_id, name=name)
        await side.lifecycle.claim(doc_id, "indexer")
        await side.lifecycle.mark_completed(doc_id, "indexer", text)
    first = await side.documents.search(user_id, "fox", limit=1)
    assert len(first.items) == 1 and first.next_cursor is not None
    rest = await side.documents.search(user_id, "fox", cursor=first.next_cursor)
    assert len(rest.items) == 1 and rest.next_cursor is None
    assert {first.items[0].id, rest.items[0].id} != set()
    assert first.items[0].rank >= rest.items[0].rank
    # A run of NOTs PostgreSQL could not hold is cut to one of the same parity.
    assert [hit.filename for hit in (await side.documents.search(user_id, "-" * 41 + "fox")).items]
    for bad in ("", " ", "x" * 1001, 42):
        with pytest.raises(InvalidInput) as caught:
            await side.documents.search(user_id, bad)
        assert caught.value.field == "query"


async def test_a_query_postgresql_still_cannot_parse_is_invalid_input(
    side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each side's module calls the normaliser through its own name: patching it there disarms it.
    monkeypatch.setattr(side.documents_module, "collapse_negation_runs", lambda query: query)
    user_id = await _user(side)
    with pytest.raises(InvalidInput, match="tsquery stack too small") as caught:
        await side.documents.search(user_id, "-" * 40 + "fox")
    assert caught.value.field == "query"


# -- the lifecycle ------------------------------------------------------------------------------


async def test_claim_next_takes_the_oldest_and_claim_refuses_a_taken_document(side: Side) -> None:
    user_id = await _user(side)
    first, second = await _document(side, user_id), await _document(side, user_id)
    claimed = await side.lifecycle.claim_next("w1", lease_seconds=120)
    assert (claimed.id, claimed.status, claimed.worker_id, claimed.attempts) == (
        first,
        "PROCESSING",
        "w1",
        1,
    )
    assert (claimed.lease_expires_at - claimed.started_at).total_seconds() == pytest.approx(120)
    assert (await side.lifecycle.claim(second, "w2")).worker_id == "w2"
    assert await side.lifecycle.claim_next("w3") is None
    with pytest.raises(InvalidTransition, match="PROCESSING, not PENDING"):
        await side.lifecycle.claim(first, "w2")
    extended = await side.lifecycle.heartbeat(first, "w1", lease_seconds=600)
    assert extended.lease_expires_at > claimed.lease_expires_at
    with pytest.raises(InvalidTransition, match="worker 'w1' holds it"):
        await side.lifecycle.heartbeat(first, "w2")


async def test_completion_and_failures_follow_the_attempts(side: Side) -> None:
    user_id = await _user(side)
    doc_id = await _document(side, user_id, max_attempts=2)
    await side.lifecycle.claim(doc_id, "w1")
    retried = await side.lifecycle.mark_failed(doc_id, "w1", "timeout")
    assert (retried.status, retried.attempts, retried.worker_id) == ("PENDING", 1, None)
    await side.lifecycle.claim(doc_id, "w2")
    done = await side.lifecycle.mark_completed(doc_id, "w2", "hello\x00 world", 3, 1.25)
    assert (done.status, done.result_text, done.page_count, done.attempts) == (
        "COMPLETED",
        "hello world",
        3,
        2,
    )
    assert done.error_message is None and done.completed_at is not None
    assert await side.documents.get(doc_id) == done
    with pytest.raises(InvalidTransition, match="COMPLETED, not PROCESSING"):
        await side.lifecycle.mark_failed(doc_id, "w2", "too late")

    last = await _document(side, user_id, max_attempts=1)
    await side.lifecycle.claim(last, "w1")
    failed = await side.lifecycle.mark_failed(last, "w1", "boom")
    assert (failed.status, failed.error_message) == ("FAILED", "boom")


async def test_requeue_expired_takes_back_documents_of_dead_workers(side: Side) -> None:
    user_id = await _user(side)
    retry, last, alive = [await _document(side, user_id, m) for m in (3, 1, 3)]
    for doc_id in (retry, last, alive):
        await side.lifecycle.claim(doc_id, "w1")
    await _expire_lease(side, retry)
    await _expire_lease(side, last)
    with pytest.raises(InvalidTransition, match="lease expired"):
        await side.lifecycle.mark_completed(retry, "w1", "late")

    requeued = {doc.id: doc for doc in await side.lifecycle.requeue_expired()}
    assert set(requeued) == {retry, last}
    assert requeued[retry].status == "PENDING" and requeued[last].status == "FAILED"
    assert requeued[retry].error_message == "lease of worker w1 expired"
    assert (await side.documents.get(alive)).status == "PROCESSING"
    assert await side.lifecycle.requeue_expired() == []


async def test_take_unqueued_pending_takes_stale_documents_once(side: Side) -> None:
    user_id = await _user(side)
    stale, fresh = await _document(side, user_id), await _document(side, user_id)
    await side.sql(
        "UPDATE documents SET updated_at = now() - interval '1 hour' WHERE id = %s", (stale,)
    )
    assert await side.lifecycle.take_unqueued_pending(60, None) == [stale]
    assert await side.lifecycle.take_unqueued_pending(60, None) == []  # touched: left alone
    # Only documents last enqueued before `queued_before` (the queue's oldest message).
    older = await _document(side, user_id)
    await side.sql(
        "UPDATE documents SET updated_at = now() - interval '2 hours' WHERE id = %s", (older,)
    )
    queued_before = (await side.documents.get(fresh)).updated_at
    assert await side.lifecycle.take_unqueued_pending(0, queued_before) == [older]
    assert len(await side.lifecycle.take_unqueued_pending(0, datetime.now(timezone.utc))) == 3
    with pytest.raises(InvalidInput) as caught:
        await side.lifecycle.take_unqueued_pending(-1, None)
    assert caught.value.field == "pending_for"


async def test_lifecycle_errors_are_typed_and_change_nothing(side: Side) -> None:
    user_id = await _user(side)
    doc_id = await _document(side, user_id)
    for call, field in [
        (side.lifecycle.claim(doc_id, ""), "worker_id"),
        (side.lifecycle.claim(doc_id, "w1", lease_seconds=0), "lease_seconds"),
        (side.lifecycle.claim(0, "w1"), "document_id"),
        (side.lifecycle.mark_failed(doc_id, "w1", ""), "error_message"),
        (side.lifecycle.requeue_expired(limit=0), "limit"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            await call
        assert caught.value.field == field
    assert (await side.documents.get(doc_id)).status == "PENDING"
    for action in (side.lifecycle.claim, side.lifecycle.heartbeat):
        with pytest.raises(NotFound):
            await action(doc_id + 1000, "w1")


# -- the async side's own ---------------------------------------------------------------------


async def test_concurrent_async_workers_never_claim_one_document_twice(
    async_db: AsyncDatabase,
) -> None:
    side = _async_side(async_db)
    user_id = await _user(side)
    ids = {await _document(side, user_id) for _ in range(40)}
    claimed: list[int] = []

    async def work(worker_id: str) -> None:
        while (doc := await side.lifecycle.claim_next(worker_id)) is not None:
            claimed.append(doc.id)

    async with anyio.create_task_group() as group:
        for n in range(6):
            group.start_soon(work, f"w{n}")
    assert sorted(claimed) == sorted(ids)

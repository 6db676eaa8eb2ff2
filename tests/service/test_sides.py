"""The `side` fixture (tests/sides.py) hands the tests the store they claim to test: the sync side
gets docstore's own objects, the async side the async twins, run on their event loop, with
exceptions, transactions and callbacks passing through the blocking proxies unchanged."""

from __future__ import annotations

import threading

import pytest
from sides import Blocking, Side, side_fixture, side_store_fixture, unwrapped  # noqa: F401

from docstore import AsyncDocstore, Docstore, DocumentCreate, UserCreate
from docstore.ephemeral.cache import RedisCache
from docstore.ephemeral.cache_async import AsyncRedisCache
from docstore.errors import NotFound
from docstore.repositories.users import UserRepo
from docstore.repositories.users_async import AsyncUserRepo


def test_each_side_gets_its_own_store_and_twins(side: Side, side_store: Docstore) -> None:
    if side.is_async:
        assert isinstance(side_store, Blocking)
        assert type(unwrapped(side_store)) is AsyncDocstore
        assert type(unwrapped(side_store.users)) is AsyncUserRepo
        assert side.twin(RedisCache) is AsyncRedisCache
    else:
        # The sync side runs exactly as before: docstore's own objects, no proxy.
        assert type(side_store) is Docstore and type(side_store.users) is UserRepo
        assert side.twin(RedisCache) is RedisCache


def test_async_calls_run_on_the_loop_thread_not_the_callers() -> None:
    side = Side("async")
    try:
        seen: list[threading.Thread] = []

        async def where() -> None:
            seen.append(threading.current_thread())

        side.blocking(where)()
        assert len(seen) == 1 and seen[0] is not threading.current_thread()
        assert seen[0].name == "async-side"
    finally:
        side.close()


def test_typed_errors_and_rollbacks_pass_through(side: Side, side_store: Docstore) -> None:
    store = side_store
    user = store.users.create(UserCreate(email="sides@example.com")).user
    with pytest.raises(NotFound):
        store.users.get(user.id + 1000)
    # An error leaving the transaction reaches __aexit__ on the async side: all rolled back.
    with pytest.raises(RuntimeError, match="abandon"), store.db.transaction() as conn:
        store.documents.create(
            DocumentCreate(user_id=user.id, filename="a.txt", s3_key="k/a"), conn=conn
        )
        raise RuntimeError("abandon")
    assert sum(store.documents.count_by_status(user.id).values()) == 0
    with store.db.transaction() as conn:
        store.documents.create(
            DocumentCreate(user_id=user.id, filename="b.txt", s3_key="k/b"), conn=conn
        )
    assert store.documents.list_for_user(user.id).items[0].filename == "b.txt"


def test_a_plain_cache_loader_is_awaited_on_the_async_side(side_store: Docstore) -> None:
    calls: list[int] = []

    def load() -> int:
        calls.append(1)
        return 41 + len(calls)

    assert side_store.cache.get_or_set("answer", load, int) == 42
    assert side_store.cache.get_or_set("answer", load, int) == 42
    assert calls == [1]


def test_a_blocking_call_from_the_loop_thread_is_refused_not_hung(
    side: Side, side_store: Docstore
) -> None:
    def load() -> int:
        # On the async side this runs on the loop's thread, which cannot wait for itself.
        return side_store.cache.get_or_set("inner", lambda: 1, int)

    if not side.is_async:
        assert side_store.cache.get_or_set("outer", load, int) == 1  # sync: plain nesting
        return
    with pytest.raises(RuntimeError, match="event loop's own thread"):
        side_store.cache.get_or_set("outer", load, int)

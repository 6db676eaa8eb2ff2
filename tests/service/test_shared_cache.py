"""A cache that is never stale: every committed change drops the cached copy, after the commit.

Only finished documents are cached, so most tests here finish theirs first (`new_document`).
Each test runs on both sides (`side`): the sync `Docstore` and `AsyncDocstore`.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from typing import cast

import pytest
from helpers import finished
from sides import Side, side_fixture  # noqa: F401

from docstore import Docstore, DocumentCreate, DocumentUpdate, Settings
from docstore.models import DocumentResponse, UserCreate


@pytest.fixture
def store(side: Side, docstore_settings: Settings) -> Iterator[Docstore]:
    with cast(Docstore, side.connect(docstore_settings)) as opened:
        yield opened


def pending_document(store: Docstore, email: str = "cache@example.com") -> DocumentResponse:
    user = store.users.create(UserCreate(email=email)).user
    return store.documents.create(
        DocumentCreate(user_id=user.id, filename="v0", s3_key="uploads/v0")
    )


def new_document(store: Docstore, email: str = "cache@example.com") -> DocumentResponse:
    """A COMPLETED document (only finished documents are cached)."""
    return finished(store, pending_document(store, email).id)


def cached(store: Docstore, document_id: int) -> DocumentResponse | None:
    return store.cache.get_document_result(document_id, DocumentResponse)


def test_only_finished_documents_are_cached_so_lifecycle_steps_need_no_drop(
    store: Docstore,
) -> None:
    document = pending_document(store)

    def seen(kept: bool) -> DocumentResponse:
        read = store.get_document(document.id)
        assert read == store.documents.get(document.id)
        assert cached(store, document.id) == (read if kept else None)
        return read

    assert seen(kept=False).status == "PENDING"
    assert store.lifecycle.claim_next("w1") is not None
    assert seen(kept=False).status == "PROCESSING"
    store.lifecycle.heartbeat(document.id, "w1", 600)
    seen(kept=False)
    store.lifecycle.mark_completed(document.id, "w1", "done", 1, 0.1)
    # Read from PostgreSQL while the mark an unfinished read left lasts (1 s at most).
    assert store.get_document(document.id).result_text == "done"
    store.cache.delete(store.cache.document_key(document.id))  # the mark expired
    assert seen(kept=True).result_text == "done"
    store.documents.update(document.id, DocumentUpdate(filename="renamed"))
    assert cached(store, document.id) is None
    assert seen(kept=True).filename == "renamed"


def test_lifecycle_steps_send_redis_nothing(store: Docstore) -> None:
    """A worker's claim, heartbeat, completion and failure have no cached copy to drop: not
    one Redis command (before, each dropped the document's copy: one round trip per step)."""
    documents = [pending_document(store, f"steps{i}@example.com") for i in range(2)]
    store.redis.config_resetstat()
    first = store.lifecycle.claim_next("w1")
    assert first is not None
    store.lifecycle.heartbeat(first.id, "w1", 600)
    store.lifecycle.mark_completed(first.id, "w1", "done", 1, 0.1)
    second = store.lifecycle.claim_next("w1")
    assert second is not None
    store.lifecycle.mark_failed(second.id, "w1", "broken", retry=False)
    assert {first.id, second.id} == {d.id for d in documents}
    stats = store.redis.info("commandstats")
    assert [name for name in stats if name not in ("cmdstat_config", "cmdstat_info")] == []


def test_a_change_in_a_transaction_drops_the_copy_after_commit_not_before(
    store: Docstore,
) -> None:
    document = new_document(store)
    store.get_document(document.id)
    with store.transaction() as conn:
        store.documents.update(document.id, DocumentUpdate(filename="v1"), conn=conn)
        # Not committed: readers still see v0, and the cached v0 is still right.
        assert store.get_document(document.id).filename == "v0"
        assert cached(store, document.id) is not None
    assert cached(store, document.id) is None
    assert store.get_document(document.id).filename == "v1"

    # store.db.transaction() is the same transaction, savepoints included.
    with store.db.transaction() as conn:
        with store.db.transaction(conn) as inner:
            store.documents.update(document.id, DocumentUpdate(filename="v2"), conn=inner)
        assert cached(store, document.id) is not None
    assert store.get_document(document.id).filename == "v2"

    # So is the block of store.db.connection() (before, it was dropped early and not after).
    with store.db.connection() as conn:
        store.documents.update(document.id, DocumentUpdate(filename="v3"), conn=conn)
        assert cached(store, document.id) is not None
    assert cached(store, document.id) is None
    assert store.get_document(document.id).filename == "v3"


def test_a_change_in_a_db_connection_block_is_dropped_for_every_process_after_commit(
    side: Side, store: Docstore, docstore_settings: Settings
) -> None:
    """Another process that reads while the block is open caches the version before; the drop
    after the COMMIT must reach it too (before, only the writing process dropped it, at its
    own next read: the other served the old version until CACHE_TTL)."""
    document = new_document(store)
    with cast(Docstore, side.connect(docstore_settings)) as other:
        with store.db.connection() as conn:
            store.documents.update(document.id, DocumentUpdate(filename="v1"), conn=conn)
            assert other.get_document(document.id).filename == "v0"
        assert other.get_document(document.id).filename == "v1"


def test_a_commit_inside_a_db_connection_block_is_told_though_the_block_fails(
    side: Side, store: Docstore, docstore_settings: Settings
) -> None:
    """A transaction opened first thing in the block is psycopg's outermost (BEGIN, COMMIT),
    and the caller may commit() on its own: both committed, then the block failed. Before,
    the block's failure forgot them, and other processes served the old copy."""
    document = new_document(store)
    with cast(Docstore, side.connect(docstore_settings)) as other:
        assert other.get_document(document.id).filename == "v0"  # cached
        with pytest.raises(RuntimeError), store.db.connection() as conn:
            with store.transaction(conn):
                store.documents.update(document.id, DocumentUpdate(filename="v1"), conn=conn)
            assert other.get_document(document.id).filename == "v1"  # told at its COMMIT
            raise RuntimeError("a later step fails")
        assert other.get_document(document.id).filename == "v1"
        with pytest.raises(RuntimeError), store.db.connection() as conn:
            store.documents.update(document.id, DocumentUpdate(filename="v2"), conn=conn)
            conn.commit()
            raise RuntimeError("a later step fails")
        assert other.get_document(document.id).filename == "v2"


def test_a_rolled_back_change_leaves_the_cached_copy(store: Docstore) -> None:
    document = new_document(store)
    store.get_document(document.id)
    with pytest.raises(RuntimeError), store.transaction() as conn:
        store.documents.update(document.id, DocumentUpdate(filename="never"), conn=conn)
        raise RuntimeError("changed my mind")
    assert cached(store, document.id) is not None
    assert store.get_document(document.id).filename == "v0"


def test_interleaved_readers_never_see_a_version_older_than_the_last_committed_one(
    store: Docstore,
) -> None:
    """Writers rename documents v1, v2, ... (some in transactions held open a moment, while
    readers fill the cache with the version before); a read that starts after a rename returned
    must see it or a later one."""
    documents = [new_document(store, f"w{i}@example.com") for i in range(3)]
    acknowledged = {d.id: 0 for d in documents}
    versions = 25
    errors: list[str] = []
    done = threading.Event()

    def write(document_id: int) -> None:
        for version in range(1, versions + 1):
            change = DocumentUpdate(filename=f"v{version}")
            if version % 2:
                store.documents.update(document_id, change)
            else:
                with store.transaction() as conn:
                    store.documents.update(document_id, change, conn=conn)
                    time.sleep(0.01)  # readers reload v-1 now: it must not outlive the commit
            acknowledged[document_id] = version

    def read(seed: int) -> None:
        rng = random.Random(seed)
        while not done.is_set():
            document_id = rng.choice(list(acknowledged))
            floor = acknowledged[document_id]
            seen = int(store.get_document(document_id).filename[1:])
            if seen < floor:
                errors.append(f"document {document_id}: read v{seen} after v{floor} committed")

    readers = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    writers = [threading.Thread(target=write, args=(d.id,)) for d in documents]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    done.set()
    for thread in readers:
        thread.join()
    assert errors == []
    for document in documents:
        assert store.get_document(document.id).filename == f"v{versions}"


def test_a_change_in_a_transaction_docstore_did_not_open_is_dropped_once_it_committed(
    store: Docstore,
) -> None:
    document = new_document(store)
    # A connection the caller took from the pool itself, in a transaction of its own.
    with store.pool.connection() as conn, conn.transaction():
        store.documents.update(document.id, DocumentUpdate(filename="v1"), conn=conn)
        # Not committed: a reader refills the cache with v0 after the early drop.
        assert store.get_document(document.id).filename == "v0"
        assert cached(store, document.id) is not None
    # Committed on leaving the block: the copy of v0 is dropped at the next read, never served.
    assert store.get_document(document.id).filename == "v1"

    with pytest.raises(RuntimeError), store.pool.connection() as conn, conn.transaction():
        store.documents.update(document.id, DocumentUpdate(filename="never"), conn=conn)
        assert store.get_document(document.id).filename == "v1"
        raise RuntimeError("roll it back")
    assert store.get_document(document.id).filename == "v1"
    assert cached(store, document.id) is not None  # rolled back: nothing more to drop

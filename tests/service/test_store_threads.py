"""One sync Docstore shared by many threads (a threaded web server, a Celery thread pool): a
committed change is never served from the cache, however the threads interleave."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from helpers import finished

from docstore import Docstore, DocumentCreate, DocumentResponse, DocumentUpdate, UserCreate

THREADS = 16


def _readers_see(store: Docstore, document_id: int, pool: ThreadPoolExecutor) -> list[str]:
    """The filename each of THREADS threads gets from `get_document`, all starting at once."""
    barrier = threading.Barrier(THREADS)

    def read(_: int) -> str:
        barrier.wait()
        return store.get_document(document_id).filename

    return list(pool.map(read, range(THREADS)))


def _stale_reads(store: Docstore, change: Callable[[int, str], None]) -> int:
    user = store.users.create(UserCreate(email="threads@example.com")).user
    document = store.documents.create(DocumentCreate(user_id=user.id, filename="0", s3_key="k"))
    finished(store, document.id)  # only finished documents are cached
    stale = 0
    with ThreadPoolExecutor(THREADS) as pool:
        for n in range(1, 61):
            store.get_document(document.id)
            assert store.cache.get_document_result(document.id, DocumentResponse) is not None
            change(document.id, str(n))
            stale += sum(seen != str(n) for seen in _readers_see(store, document.id, pool))
    return stale


def test_threads_reading_after_a_commit_docstore_did_not_open_never_get_the_old_copy(
    docstore_store: Docstore,
) -> None:
    store = docstore_store

    def in_a_foreign_transaction(document_id: int, filename: str) -> None:
        # A transaction docstore did not open: its commit is found by the readers' settle(),
        # and every reader must wait for the drop it causes, not only the first.
        with store.pool.connection() as conn, conn.transaction():
            store.documents.update(document_id, DocumentUpdate(filename=filename), conn=conn)
            store.get_document(document_id)  # caches the committed (old) copy meanwhile

    assert _stale_reads(store, in_a_foreign_transaction) == 0


def test_threads_reading_while_an_owed_drop_is_paid_never_get_the_old_copy(
    docstore_store: Docstore,
) -> None:
    store = docstore_store

    def change_whose_drop_did_not_reach_redis(document_id: int, filename: str) -> None:
        old = store.documents.get(document_id)
        store.documents.update(document_id, DocumentUpdate(filename=filename))
        # What a DEL lost to an outage leaves: the old copy in Redis, its drop owed.
        store.cache.set(store.cache.document_key(document_id), old)
        store.cache.invalidate_later([document_id])

    assert _stale_reads(store, change_whose_drop_did_not_reach_redis) == 0

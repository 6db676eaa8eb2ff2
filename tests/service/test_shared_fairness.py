"""Fair turns: one user's bulk upload does not starve the others, through `claim_next` and
through the intake flow (`process_next`) alike; each user's own documents go oldest first; an
optional cap on one user's documents PROCESSING at once. Both sides (`side`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from sides import Side, side_fixture  # noqa: F401

from docstore import Docstore, DocumentCreate, Settings
from docstore.intake.blobs import LocalBlobStore
from docstore.intake.extractors import Extraction, ProgressCallback
from docstore.models import UserCreate

BULK = 10_000


@pytest.fixture
def blobs(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


def connect(side: Side, settings: Settings, blobs: LocalBlobStore, **changes: object) -> Docstore:
    return cast(Docstore, side.connect(settings.model_copy(update=changes), blobs=blobs))


@pytest.fixture
def store(side: Side, docstore_settings: Settings, blobs: LocalBlobStore) -> Iterator[Docstore]:
    with connect(side, docstore_settings, blobs) as opened:
        yield opened


def bulk_then_small(store: Docstore, blobs: LocalBlobStore) -> tuple[list[int], list[int]]:
    """User A submits BULK documents (all queued), then user B submits 10; their ids."""
    a = store.users.create(UserCreate(email="bulk@example.com")).user
    b = store.users.create(UserCreate(email="small@example.com")).user
    key = blobs.put(a.id, "page.txt", b"a page").key
    bulk = store.documents.create_many(
        [DocumentCreate(user_id=a.id, filename=f"{i}.txt", s3_key=key) for i in range(BULK)]
    )
    store.queue.enqueue_many([d.id for d in bulk])
    small = [store.submit_document(b, f"b{i}.txt", b"b's page").id for i in range(10)]
    return [d.id for d in bulk], small


def extract(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
    return Extraction(text=data.decode(), page_count=1)


def test_claim_next_hands_out_a_small_users_documents_within_the_first_40_claims(
    store: Docstore, blobs: LocalBlobStore
) -> None:
    bulk, small = bulk_then_small(store, blobs)
    claimed = []
    for _ in range(40):
        document = store.lifecycle.claim_next("w1")
        assert document is not None
        claimed.append(document.id)
        store.lifecycle.mark_completed(document.id, "w1", "text", 1, 0.1)
    assert [i for i in claimed if i in set(small)] == small  # all 10, oldest first
    mine = [i for i in claimed if i not in set(small)]
    assert mine == bulk[: len(mine)]  # A's own still oldest first


def test_process_next_hands_out_a_small_users_documents_within_the_first_40(
    store: Docstore, blobs: LocalBlobStore
) -> None:
    bulk, small = bulk_then_small(store, blobs)
    processed = []
    for _ in range(40):
        outcome = store.process_next("w1", extract, block_ms=0)
        assert outcome is not None and outcome.action == "completed"
        processed.append(outcome.document_id)
    assert [i for i in processed if i in set(small)] == small
    assert [i for i in processed if i not in set(small)] == bulk[:30]


def test_a_user_who_comes_back_later_is_not_put_behind_the_backlog(store: Docstore) -> None:
    a = store.users.create(UserCreate(email="a@example.com")).user
    b = store.users.create(UserCreate(email="b@example.com")).user

    def add(user_id: int, count: int) -> list[int]:
        items = [DocumentCreate(user_id=user_id, filename="x", s3_key="k") for _ in range(count)]
        return [d.id for d in store.documents.create_many(items)]

    def drain(count: int) -> list[int]:
        taken = []
        for _ in range(count):
            document = store.lifecycle.claim_next("w1")
            assert document is not None
            store.lifecycle.mark_completed(document.id, "w1", "t", 1, 0.1)
            taken.append(document.id)
        return taken

    first_a = add(a.id, 50)
    assert drain(50) == first_a  # A alone: its turns advance
    late_b = add(b.id, 200)  # B's bulk starts at the current round, not at turn 0
    again_a = add(a.id, 1)  # so A's next one is not put behind all 200 of B's
    taken = drain(3)
    assert taken[0] == late_b[0] and again_a[0] in taken


def test_the_per_user_cap_holds_a_user_back_while_others_get_their_turns(
    side: Side, docstore_settings: Settings, blobs: LocalBlobStore
) -> None:
    with connect(side, docstore_settings, blobs, max_processing_per_user=2) as store:
        a = store.users.create(UserCreate(email="capped@example.com")).user
        b = store.users.create(UserCreate(email="other@example.com")).user
        store.documents.create_many(
            [DocumentCreate(user_id=a.id, filename="a", s3_key="k") for _ in range(5)]
        )
        store.documents.create_many(
            [DocumentCreate(user_id=b.id, filename="b", s3_key="k") for _ in range(5)]
        )
        held = [store.lifecycle.claim_next(f"w{i}") for i in range(6)]
        owners = [d.user_id for d in held if d is not None]
        assert owners.count(a.id) == 2 and owners.count(b.id) == 2
        assert held[4] is None and held[5] is None
        first = next(d for d in held if d is not None and d.user_id == a.id)
        store.lifecycle.mark_completed(first.id, first.worker_id or "", "t", 1, 0.1)
        after = store.lifecycle.claim_next("w9")
        assert after is not None and after.user_id == a.id


def test_the_cap_holds_for_claims_at_the_same_instant(
    side: Side, docstore_settings: Settings, blobs: LocalBlobStore
) -> None:
    with connect(side, docstore_settings, blobs, max_processing_per_user=1) as store:
        a = store.users.create(UserCreate(email="capped@example.com")).user
        b = store.users.create(UserCreate(email="other@example.com")).user
        for user in (a, a, a, b):
            store.documents.create(DocumentCreate(user_id=user.id, filename="x", s3_key="k"))
        with store.pool.connection() as conn:  # B's turn comes after all of A's
            conn.execute("UPDATE documents SET turn = 100 WHERE user_id = %s", (b.id,))
        claims: list[object] = []
        with store.transaction() as conn:  # worker 1 has claimed, not yet committed
            first = store.lifecycle.claim_next("w1", conn=conn)
            assert first is not None and first.user_id == a.id
            second = threading.Thread(
                target=lambda: claims.append(store.lifecycle.claim_next("w2"))
            )
            second.start()
            second.join(1.0)  # it waits for worker 1's claim to commit (or, unfixed, it is done)
        second.join()
        [claimed] = claims
        # A's last place went to worker 1: worker 2 gets B's document, not a second of A's.
        assert claimed is not None and claimed.user_id == b.id  # type: ignore[attr-defined]
        assert store.documents.count_by_status(a.id)["PROCESSING"] == 1


def test_concurrent_workers_never_get_one_document_twice(
    store: Docstore, blobs: LocalBlobStore
) -> None:
    users = [store.users.create(UserCreate(email=f"u{i}@example.com")).user for i in range(5)]
    for user in users:
        store.documents.create_many(
            [DocumentCreate(user_id=user.id, filename="x", s3_key="k") for _ in range(40)]
        )
    taken: list[int] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        while (document := store.lifecycle.claim_next(f"w{n}")) is not None:
            with lock:
                taken.append(document.id)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 200 and len(set(taken)) == 200

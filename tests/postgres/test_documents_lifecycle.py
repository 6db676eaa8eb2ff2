"""The document lifecycle against a real PostgreSQL: every transition allowed and refused, leases,
retries, and concurrent workers."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from docstore import Docstore, Settings
from docstore.errors import InvalidInput, InvalidTransition, NotFound
from docstore.models import DocumentCreate, DocumentResponse, UserCreate

Action = Callable[[Docstore, int], object]


@pytest.fixture
def store(docstore_settings: Settings) -> Iterator[Docstore]:
    """A store whose pool lets eight threads hold a connection at once, retrying at once (the
    backoff has its own tests: tests/service/test_shared_retries.py)."""
    settings = docstore_settings.model_copy(
        update={"pool_max_overflow": 8, "retry_backoff_base": 0.0}
    )
    with Docstore.connect(settings) as store:
        yield store


@pytest.fixture
def user_id(store: Docstore) -> int:
    return store.users.create(UserCreate(email="worker-owner@example.com")).user.id


def _create(store: Docstore, user_id: int, max_attempts: int = 3) -> DocumentResponse:
    item = DocumentCreate(user_id=user_id, filename="a.pdf", s3_key="k", max_attempts=max_attempts)
    return store.documents.create(item)


def _expire_lease(store: Docstore, document_id: int) -> None:
    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE documents SET lease_expires_at = now() - interval '1 second' WHERE id = %s",
            (document_id,),
        )


def _in_state(store: Docstore, user_id: int, state: str) -> int:
    """A new document brought to `state` through the public lifecycle."""
    doc_id = _create(store, user_id).id
    if state == "PENDING":
        return doc_id
    store.lifecycle.claim(doc_id, "w1")
    if state == "EXPIRED":
        _expire_lease(store, doc_id)
    elif state == "COMPLETED":
        store.lifecycle.mark_completed(doc_id, "w1", "text", 1, 0.5)
    elif state == "FAILED":
        store.lifecycle.mark_failed(doc_id, "w1", "boom", retry=False)
    return doc_id


ACTIONS: dict[str, Action] = {
    "claim by w2": lambda s, d: s.lifecycle.claim(d, "w2"),
    "heartbeat by w1": lambda s, d: s.lifecycle.heartbeat(d, "w1"),
    "heartbeat by w2": lambda s, d: s.lifecycle.heartbeat(d, "w2"),
    "complete by w1": lambda s, d: s.lifecycle.mark_completed(d, "w1", "done", 2, 1.0),
    "complete by w2": lambda s, d: s.lifecycle.mark_completed(d, "w2", "done", 2, 1.0),
    "fail by w1 (retry)": lambda s, d: s.lifecycle.mark_failed(d, "w1", "oops"),
    "fail by w1 (final)": lambda s, d: s.lifecycle.mark_failed(d, "w1", "oops", retry=False),
    "fail by w2": lambda s, d: s.lifecycle.mark_failed(d, "w2", "oops"),
}

# State -> action -> status afterwards; actions not listed must raise InvalidTransition.
ALLOWED: dict[str, dict[str, str]] = {
    "PENDING": {"claim by w2": "PROCESSING"},
    "PROCESSING": {
        "heartbeat by w1": "PROCESSING",
        "complete by w1": "COMPLETED",
        "fail by w1 (retry)": "PENDING",
        "fail by w1 (final)": "FAILED",
    },
    "EXPIRED": {},
    "COMPLETED": {},
    "FAILED": {},
}


@pytest.mark.parametrize("state", list(ALLOWED))
def test_every_transition_is_allowed_or_refused_without_change(
    store: Docstore, user_id: int, state: str
) -> None:
    for name, action in ACTIONS.items():
        doc_id = _in_state(store, user_id, state)
        before = store.documents.get(doc_id)
        if name in ALLOWED[state]:
            result = action(store, doc_id)
            assert isinstance(result, DocumentResponse), name
            assert result.status == ALLOWED[state][name], name
            assert store.documents.get(doc_id) == result, name
        else:
            with pytest.raises(InvalidTransition):
                action(store, doc_id)
            assert store.documents.get(doc_id) == before, f"{name} changed a {state} document"


def test_refusals_say_why_and_unknown_documents_are_not_found(
    store: Docstore, user_id: int
) -> None:
    doc_id = _in_state(store, user_id, "PROCESSING")
    with pytest.raises(InvalidTransition, match="worker 'w1' holds it"):
        store.lifecycle.mark_completed(doc_id, "w2", "x")
    with pytest.raises(InvalidTransition, match="PROCESSING, not PENDING"):
        store.lifecycle.claim(doc_id, "w2")
    _expire_lease(store, doc_id)
    with pytest.raises(InvalidTransition, match="lease expired"):
        store.lifecycle.heartbeat(doc_id, "w1")
    for action in ACTIONS.values():
        with pytest.raises(NotFound):
            action(store, doc_id + 1000)


def test_claim_sets_worker_lease_start_and_attempt(store: Docstore, user_id: int) -> None:
    doc = _create(store, user_id)
    claimed = store.lifecycle.claim(doc.id, "worker-7", lease_seconds=120)
    assert (claimed.status, claimed.worker_id, claimed.attempts) == ("PROCESSING", "worker-7", 1)
    assert claimed.started_at is not None and claimed.lease_expires_at is not None
    lease = (claimed.lease_expires_at - claimed.started_at).total_seconds()
    assert lease == pytest.approx(120)

    extended = store.lifecycle.heartbeat(doc.id, "worker-7", lease_seconds=600)
    assert extended.lease_expires_at is not None
    assert extended.lease_expires_at > claimed.lease_expires_at


def test_claim_next_takes_the_oldest_pending_document(store: Docstore, user_id: int) -> None:
    first, second = _create(store, user_id), _create(store, user_id)
    claimed = store.lifecycle.claim_next("w1")
    assert claimed is not None and claimed.id == first.id
    claimed = store.lifecycle.claim_next("w2")
    assert claimed is not None and claimed.id == second.id and claimed.worker_id == "w2"
    assert store.lifecycle.claim_next("w3") is None


def test_completion_stores_the_result_and_clears_the_error(store: Docstore, user_id: int) -> None:
    doc = _create(store, user_id)
    store.lifecycle.claim(doc.id, "w1")
    store.lifecycle.mark_failed(doc.id, "w1", "first try failed")
    store.lifecycle.claim(doc.id, "w1")
    done = store.lifecycle.mark_completed(doc.id, "w1", "hello\x00 world", 3, 1.25)
    assert done.status == "COMPLETED" and done.result_text == "hello world"
    assert (done.page_count, done.extraction_time_seconds, done.attempts) == (3, 1.25, 2)
    assert done.error_message is None and done.lease_expires_at is None
    assert done.completed_at is not None
    assert store.documents.get(doc.id) == done


def test_failures_retry_while_attempts_remain_then_fail(store: Docstore, user_id: int) -> None:
    doc = _create(store, user_id, max_attempts=2)
    store.lifecycle.claim(doc.id, "w1")
    retried = store.lifecycle.mark_failed(doc.id, "w1", "timeout")
    assert (retried.status, retried.attempts, retried.worker_id) == ("PENDING", 1, None)
    assert retried.error_message == "timeout" and retried.completed_at is None

    store.lifecycle.claim(doc.id, "w2")
    failed = store.lifecycle.mark_failed(doc.id, "w2", "timeout again")
    assert (failed.status, failed.attempts, failed.worker_id) == ("FAILED", 2, "w2")
    assert failed.completed_at is not None


def test_requeue_expired_returns_dead_workers_documents(store: Docstore, user_id: int) -> None:
    retry, last, alive = (_create(store, user_id, m) for m in (3, 1, 3))
    for doc in (retry, last, alive):
        store.lifecycle.claim(doc.id, "w1")
    _expire_lease(store, retry.id)
    _expire_lease(store, last.id)

    requeued = {d.id: d for d in store.lifecycle.requeue_expired()}
    assert set(requeued) == {retry.id, last.id}
    assert requeued[retry.id].status == "PENDING" and requeued[retry.id].worker_id is None
    assert requeued[last.id].status == "FAILED" and requeued[last.id].completed_at is not None
    assert requeued[retry.id].error_message == "lease of worker w1 expired"
    assert store.documents.get(alive.id).status == "PROCESSING"
    assert store.lifecycle.requeue_expired() == []


def test_a_worker_whose_lease_expired_cannot_complete(store: Docstore, user_id: int) -> None:
    doc = _create(store, user_id)
    store.lifecycle.claim(doc.id, "slow")
    _expire_lease(store, doc.id)
    # Not yet requeued: the lease alone decides.
    with pytest.raises(InvalidTransition):
        store.lifecycle.mark_completed(doc.id, "slow", "late result")

    store.lifecycle.requeue_expired()
    store.lifecycle.claim(doc.id, "fast")
    with pytest.raises(InvalidTransition):
        store.lifecycle.mark_completed(doc.id, "slow", "late result")
    with pytest.raises(InvalidTransition):
        store.lifecycle.heartbeat(doc.id, "slow")
    done = store.lifecycle.mark_completed(doc.id, "fast", "fresh result")
    assert done.worker_id == "fast" and done.result_text == "fresh result"


def test_eight_workers_claim_five_hundred_documents_each_exactly_once(
    store: Docstore, user_id: int
) -> None:
    items = [DocumentCreate(user_id=user_id, filename=f"{n}", s3_key="k") for n in range(500)]
    created = {d.id for d in store.documents.create_many(items)}
    start = threading.Barrier(8)

    def work(worker: int) -> list[int]:
        start.wait()
        claimed = []
        while (doc := store.lifecycle.claim_next(f"w{worker}")) is not None:
            assert doc.worker_id == f"w{worker}"
            claimed.append(doc.id)
        return claimed

    with ThreadPoolExecutor(8) as pool:
        per_worker = list(pool.map(work, range(8)))
    everything = [doc_id for claimed in per_worker for doc_id in claimed]
    assert len(everything) == len(set(everything)) == 500
    assert set(everything) == created
    assert sum(1 for claimed in per_worker if claimed) > 1, "no concurrency happened"
    assert store.documents.count_by_status(user_id)["PROCESSING"] == 500


def test_a_document_delivered_to_many_consumers_is_claimed_once(
    store: Docstore, user_id: int
) -> None:
    items = [DocumentCreate(user_id=user_id, filename=f"{n}", s3_key="k") for n in range(40)]
    ids = [d.id for d in store.documents.create_many(items)]
    start = threading.Barrier(8)

    def consume(worker: int) -> list[int]:
        start.wait()
        won = []
        for doc_id in ids:
            with contextlib.suppress(InvalidTransition):
                won.append(store.lifecycle.claim(doc_id, f"c{worker}").id)
        return won

    with ThreadPoolExecutor(8) as pool:
        wins = [doc_id for won in pool.map(consume, range(8)) for doc_id in won]
    assert sorted(wins) == ids


INVALID_CALLS: list[tuple[Action, str]] = [
    (lambda s, d: s.lifecycle.claim_next(""), "worker_id"),
    (lambda s, d: s.lifecycle.claim_next("w" * 256), "worker_id"),
    (lambda s, d: s.lifecycle.claim_next("w", lease_seconds=0), "lease_seconds"),
    (lambda s, d: s.lifecycle.claim_next("w", lease_seconds=float("nan")), "lease_seconds"),
    (lambda s, d: s.lifecycle.claim(0, "w"), "document_id"),
    (lambda s, d: s.lifecycle.heartbeat(d, "w", lease_seconds=-1), "lease_seconds"),
    (lambda s, d: s.lifecycle.mark_completed(d, "w1", "\ud800"), "result_text"),
    (lambda s, d: s.lifecycle.mark_completed(d, "w1", "x", page_count=-1), "page_count"),
    (lambda s, d: s.lifecycle.mark_completed(d, "w1", "x", 1, -0.5), "extraction_time_seconds"),
    (lambda s, d: s.lifecycle.mark_completed(d, "w1", None), "result_text"),  # type: ignore[arg-type]
    (lambda s, d: s.lifecycle.mark_failed(d, "w1", ""), "error_message"),
    (lambda s, d: s.lifecycle.requeue_expired(limit=0), "limit"),
]


def test_invalid_lifecycle_arguments_are_refused_and_change_nothing(
    store: Docstore, user_id: int
) -> None:
    doc_id = _in_state(store, user_id, "PROCESSING")
    before = store.documents.get(doc_id)
    for number, (call, field) in enumerate(INVALID_CALLS):
        with pytest.raises(InvalidInput) as caught:
            call(store, doc_id)
        assert caught.value.field == field, number
    assert store.documents.get(doc_id) == before

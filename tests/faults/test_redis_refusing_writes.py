"""Redis up but refusing writes (`maxmemory` reached with the default noeviction policy; MISCONF
after a failed snapshot answers the same way): what needs only PostgreSQL and the blob store goes
on, as in an outage. The submission, the cancel and `requeue_stuck` each used to raise
`RedisCommandError` after committing: a client retrying the submission stored it twice."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import cast

import psycopg
import pytest
import redis
from sides import Side, side_fixture  # noqa: F401 (fixtures)

from docstore import Docstore, Settings
from docstore.intake.blobs import LocalBlobStore
from docstore.intake.extractors import extract_text
from docstore.models import UserCreate, UserResponse
from docstore.testing.servers import LocalRedis

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def store(
    side: Side,
    docstore_settings: Settings,
    local_redis_factory: Callable[[], LocalRedis],
    tmp_path: Path,
) -> Iterator[Docstore]:
    server = local_redis_factory()  # its own Redis: filling it disturbs no other test
    settings = docstore_settings.model_copy(
        update={"redis_url_secret": docstore_settings.redis_url_secret.__class__(server.url)}
    )
    with side.connect(settings, blobs=LocalBlobStore(tmp_path / "blobs")) as opened:
        yield opened


@contextmanager
def redis_full(store: Docstore) -> Iterator[None]:
    client = redis.Redis.from_url(store.settings.redis_url)
    client.config_set("maxmemory", 1)  # noeviction: every write that needs memory is refused
    try:
        yield
    finally:
        client.config_set("maxmemory", 0)
        client.close()


def owner(store: Docstore) -> UserResponse:
    return store.users.create(UserCreate(email="full@example.com")).user


def count(url: str, sql: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return cast(int, row[0])


def test_a_submission_is_stored_once_and_a_worker_claims_it_from_postgresql(
    store: Docstore,
) -> None:
    user = owner(store)
    with redis_full(store):
        document = store.submit_document(user, "a.txt", b"redis is full")
        outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert count(store.settings.database_url, "SELECT count(*) FROM documents") == 1
    assert outcome is not None and outcome.document_id == document.id
    assert outcome.action == "completed", outcome


def test_a_cancel_is_committed_and_answered(store: Docstore) -> None:
    document = store.submit_document(owner(store), "a.txt", b"to cancel")
    with redis_full(store):
        cancelled = store.cancel_document(document.id)
    assert cancelled.status == "CANCELLED"
    assert store.documents.get(document.id).status == "CANCELLED"


def test_requeue_stuck_does_its_postgresql_and_blob_work_and_says_the_queue_failed(
    store: Docstore,
) -> None:
    user = owner(store)
    gone = store.blobs.put(user.id, "gone.txt", b"its row was deleted")
    with psycopg.connect(store.settings.database_url, autocommit=True) as conn:
        conn.execute("INSERT INTO blob_deletions (s3_key) VALUES (%s)", [gone.key])
    with redis_full(store):
        lost = store.submit_document(user, "lost.txt", b"never enqueued")  # enqueue refused
        report = store.requeue_stuck(pending_for=0)
    assert report.queue_unavailable and report.blobs_deleted == 1, report
    assert count(store.settings.database_url, "SELECT count(*) FROM blob_deletions") == 0
    assert store.documents.get(lost.id).status == "PENDING"

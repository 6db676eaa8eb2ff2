"""Helpers shared by several test files."""

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from docstore import Docstore, DocumentResponse, Settings
from docstore.intake.blobs import S3BlobStore

# Names of the statements run so far, in order (the `sql_log` fixture).
SqlLog = Callable[[], list[str]]


def migrated_table_contents(url: str) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every document and user without generated ids and update times, in a stable order:
    equal for two databases when a migration produced the same rows in both."""
    with psycopg.connect(url) as conn:
        docs = conn.execute(
            "SELECT d.legacy_task_id, u.email, d.filename, d.s3_key, d.status, d.result_text,"
            " d.error_message, d.page_count, d.extraction_time_seconds, d.created_at,"
            " d.started_at, d.completed_at, d.attempts, d.max_attempts, d.worker_id,"
            " d.lease_expires_at, d.search_vector::text"
            " FROM documents AS d JOIN users AS u ON u.id = d.user_id"
            " ORDER BY d.legacy_task_id"
        ).fetchall()
        users = conn.execute("SELECT email, api_key_hash FROM users ORDER BY email").fetchall()
    return docs, users


@contextmanager
def serving(app: Any, port: int, root_path: str = "") -> Iterator[str]:
    """`app` served by uvicorn on 127.0.0.1:`port` in a thread (lifespan on; `root_path` as
    uvicorn's --root-path, behind a proxy serving it under a prefix); yields its URL."""
    import uvicorn  # the examples extra: only the service tests need it

    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_level="warning", lifespan="on", root_path=root_path
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting until {what}")
        time.sleep(0.05)


def store_env(
    settings: Settings, blobs: S3BlobStore, s3_endpoint: str, **extra: str
) -> dict[str, str]:
    """The environment a deployed service or worker would get (its `Settings()` read from it),
    pointing at this test's servers."""
    # Not imported at the top: conftest imports this module before pytest loads the plugin.
    from docstore.testing.plugin import S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY

    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BLOB_BACKEND": "s3",
        "S3_BUCKET": blobs.bucket,
        "S3_ENDPOINT_URL": s3_endpoint,
        "S3_REGION": "us-east-1",
        "S3_ACCESS_KEY": S3_TEST_ACCESS_KEY,
        "S3_SECRET_KEY": S3_TEST_SECRET_KEY,
        "POOL_MIN_SIZE": "1",
        **extra,
    }


def finished(store: Docstore, document_id: int) -> DocumentResponse:
    """The PENDING document `document_id` claimed and COMPLETED (only finished documents are
    cached)."""
    store.lifecycle.claim(document_id, "w0")
    return store.lifecycle.mark_completed(document_id, "w0", "text", 1, 0.1)

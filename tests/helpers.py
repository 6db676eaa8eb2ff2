"""Helpers shared by several test files."""

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

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
def serving(app: Any, port: int) -> Iterator[str]:
    """`app` served by uvicorn on 127.0.0.1:`port` in a thread (lifespan on); yields its URL."""
    import uvicorn  # the examples extra: only the service tests need it

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
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

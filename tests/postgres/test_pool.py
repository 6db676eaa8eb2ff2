"""The pool's check before a checkout: a round trip only for a connection idle long enough,
never handed out, or whose socket says the server let go of it (POOL_CHECK_IDLE_AFTER)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
from helpers import wait_until
from sides import Side, side_fixture  # noqa: F401 (fixtures)

from docstore import Docstore, Settings


def one_connection_store(side: Side, settings: Settings, idle_after: float) -> Docstore:
    return side.connect(
        settings.model_copy(
            update={
                "pool_min_size": 1,
                "pool_max_overflow": 0,
                "pool_check_idle_after": idle_after,
            }
        )
    )


@pytest.fixture
def recent(side: Side, docstore_settings: Settings) -> Iterator[Docstore]:
    """A store on one pooled connection that is checked by a round trip after 60 s idle."""
    with one_connection_store(side, docstore_settings, 60.0) as store:
        yield store


def test_a_connection_back_from_use_moments_ago_is_handed_out_without_a_round_trip(
    recent: Docstore,
) -> None:
    recent.db.value("server_version", {})  # a fresh connection is checked once
    checks = recent.pool.round_trip_checks
    assert checks >= 1
    for _ in range(5):
        assert recent.db.value("server_version", {})
    assert recent.pool.round_trip_checks == checks


def test_a_connection_idle_past_the_bound_is_checked_by_a_round_trip(
    side: Side, docstore_settings: Settings
) -> None:
    with one_connection_store(side, docstore_settings, 0.2) as store:
        store.db.value("server_version", {})
        checks = store.pool.round_trip_checks
        time.sleep(0.3)
        assert store.db.value("server_version", {})
        assert store.pool.round_trip_checks == checks + 1


def test_zero_checks_every_checkout(side: Side, docstore_settings: Settings) -> None:
    with one_connection_store(side, docstore_settings, 0.0) as store:
        store.db.value("server_version", {})
        checks = store.pool.round_trip_checks
        for _ in range(3):
            store.db.value("server_version", {})
        assert store.pool.round_trip_checks == checks + 3


def test_a_connection_the_server_closed_moments_after_use_is_replaced_not_handed_out(
    recent: Docstore, docstore_settings: Settings
) -> None:
    """Within the idle bound no round trip is made, yet the connection whose backend was
    terminated is found by its socket (the server's goodbye and end of file wait there) and
    replaced: the next call succeeds. A check by idle time alone hands it out, and the call
    fails with ServiceUnavailable."""
    with recent.pool.connection() as conn:
        pid = conn.info.backend_pid
    with psycopg.connect(docstore_settings.database_url, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)
        wait_until(
            lambda: (
                not admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
            ),
            10,
            "the backend is gone",
        )
    checks = recent.pool.round_trip_checks
    assert recent.db.value("server_version", {})
    assert recent.pool.round_trip_checks > checks
    with recent.pool.connection() as conn:
        assert conn.info.backend_pid != pid

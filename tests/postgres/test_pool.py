"""The pool's check before a checkout: a round trip only for a connection idle long enough,
never handed out, or whose socket says the server let go of it (POOL_CHECK_IDLE_AFTER)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from helpers import wait_until
from psycopg import sql
from sides import Side, side_fixture  # noqa: F401 (fixtures)

from docstore import AsyncDocstore, Docstore, Settings
from docstore.errors import ConfigurationError, ServiceUnavailable
from docstore.intake.blobs import LocalBlobStore


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


@pytest.fixture
def one_connection_role(docstore_postgres_url: str, docstore_settings: Settings) -> Iterator[str]:
    """A role PostgreSQL lets hold one connection at a time; the settings' URL as that role."""
    role = f"docstore_one_{int(time.time() * 1000)}"
    with psycopg.connect(docstore_postgres_url, autocommit=True) as admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'one' CONNECTION LIMIT 1").format(
                sql.Identifier(role)
            )
        )
    url = urlsplit(docstore_settings.database_url)
    yield urlunsplit(url._replace(netloc=f"{role}:one@{url.hostname}:{url.port}"))
    with psycopg.connect(docstore_postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,)
        )
        admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def as_role(settings: Settings, url: str) -> Settings:
    """The test's settings, on `url`, with a pool that keeps two connections."""
    return Settings.model_validate(
        {"DATABASE_URL": url, "REDIS_URL": settings.redis_url, "pool_min_size": 2}
    )


def connections_of(admin_url: str, role_url: str) -> int:
    role = urlsplit(role_url).username
    with psycopg.connect(admin_url) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (role,)
        ).fetchone()
    return int(row[0]) if row else 0


def test_a_store_whose_pool_could_not_fill_opens_when_asked_again(
    side: Side, docstore_settings: Settings, docstore_postgres_url: str, one_connection_role: str
) -> None:
    settings = as_role(docstore_settings, one_connection_role)
    store = side.make(Docstore, settings)
    try:
        with pytest.raises(ServiceUnavailable, match="did not accept 2 connections"):
            store.open()
        with psycopg.connect(docstore_postgres_url, autocommit=True) as admin:
            role = urlsplit(one_connection_role).username
            admin.execute(sql.SQL("ALTER ROLE {} CONNECTION LIMIT -1").format(sql.Identifier(role)))
        store.open()  # the pool went on trying: it fills now
        assert store.db.value("server_version", {})
    finally:
        store.close()
    wait_until(
        lambda: connections_of(docstore_postgres_url, one_connection_role) == 0,
        10,
        "the closed store's connections to end",
    )


def test_a_connect_cancelled_half_way_closes_the_pool_it_opened(
    docstore_settings: Settings, docstore_postgres_url: str, one_connection_role: str
) -> None:
    settings = as_role(docstore_settings, one_connection_role)

    async def connect_for_a_second() -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(1.0):
                await AsyncDocstore.connect(settings)
        await asyncio.sleep(0.5)  # a pool left open would still hold its connection now

    asyncio.run(connect_for_a_second())
    assert connections_of(docstore_postgres_url, one_connection_role) == 0


def test_a_store_used_before_it_is_opened_or_after_it_is_closed_says_so(
    side: Side, docstore_settings: Settings, tmp_path: Path
) -> None:
    # It raised ServiceUnavailable: code that retries outages retried a programming error.
    blobs = tmp_path / "blobs"
    store = side.make(Docstore, docstore_settings, blobs=LocalBlobStore(blobs))
    with pytest.raises(ConfigurationError, match="not open: open the store first"):
        store.users.get(1)
    with pytest.raises(ConfigurationError, match="not open"):
        store.submit_document(1, "a.txt", b"never recorded")
    assert [p for p in blobs.rglob("*") if p.is_file()] == []  # its blob was left behind
    store.open()
    assert store.users.get_by_email("nobody@example.com") is None
    store.close()
    with pytest.raises(ConfigurationError, match="a closed store stays closed"):
        store.users.get(1)

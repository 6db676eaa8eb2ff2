"""Docstore: pool ownership, health, SQL logging, and typed errors when servers are away."""

import logging
import threading
from collections.abc import Callable

import pytest
import redis

from docstore import Docstore, ServiceUnavailable, Settings
from docstore.errors import PoolExhausted
from docstore.postgres.pool import new_pool
from docstore.testing import LocalRedis, free_port

SECRET = "hunter2-very-secret"


def test_health_reports_versions_and_pool(docstore_store: Docstore) -> None:
    report = docstore_store.health()
    assert report.ok
    assert report.postgres_version and report.postgres_version[0].isdigit()
    assert report.redis_version and report.redis_version[0].isdigit()
    assert report.pool.max_size == 5
    assert report.pool.size >= 1
    assert report.replica is None  # no DATABASE_REPLICA_URL


def test_connect_owns_and_closes_its_pool(docstore_settings: Settings) -> None:
    with Docstore.connect(docstore_settings) as store:
        pool = store.pool
        assert not pool.closed
    assert pool.closed


def test_a_pool_passed_in_is_used_and_never_closed(docstore_settings: Settings) -> None:
    pool = new_pool(docstore_settings, name="callers")
    pool.open(wait=True)
    try:
        with Docstore.connect(docstore_settings, pool=pool) as store:
            assert store.pool is pool
            assert store.health().postgres_version
        assert not pool.closed
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_debug_sql_logs_query_name_and_duration(
    docstore_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = docstore_settings.model_copy(update={"debug_sql": True})
    with caplog.at_level(logging.INFO, logger="docstore.sql"), Docstore.connect(settings) as store:
        store.health()
    lines = [r.getMessage() for r in caplog.records if r.name == "docstore.sql"]
    assert any(line.startswith("server_version ") and " ms " in line for line in lines), lines


def test_debug_sql_off_logs_nothing(
    docstore_store: Docstore, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="docstore.sql"):
        docstore_store.health()
    assert [r for r in caplog.records if r.name == "docstore.sql"] == []


def test_unreachable_postgres_is_a_clear_error_naming_the_address_not_the_password() -> None:
    port = free_port()
    settings = Settings.model_validate(
        {"DATABASE_URL": f"postgresql://svc:{SECRET}@127.0.0.1:{port}/d", "connect_timeout": 2}
    )
    with pytest.raises(ServiceUnavailable) as info:
        Docstore.connect(settings)
    assert f"127.0.0.1:{port}" in str(info.value)
    assert info.value.address == f"127.0.0.1:{port}"
    assert SECRET not in str(info.value)
    assert SECRET not in repr(info.value.__cause__)


def test_wrong_password_is_a_typed_error_without_the_password(docstore_database_url: str) -> None:
    # The local test server trusts every login, so ask for a database that does not exist.
    url = docstore_database_url.rsplit("/", 1)[0].replace("postgres@", f"postgres:{SECRET}@")
    settings = Settings.model_validate({"DATABASE_URL": url + "/no_such_database"})
    with pytest.raises(ServiceUnavailable) as info:
        Docstore.connect(settings)
    assert "no_such_database" in str(info.value)
    assert SECRET not in str(info.value)


def test_redis_down_does_not_break_what_only_needs_postgres(docstore_database_url: str) -> None:
    settings = Settings.model_validate(
        {
            "DATABASE_URL": docstore_database_url,
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
            "pool_min_size": 1,
        }
    )
    with Docstore.connect(settings) as store:
        report = store.health()
    assert report.postgres_version
    assert report.redis_version is None
    assert report.redis_error and settings.redis_address in report.redis_error
    assert not report.ok


def test_health_sees_redis_come_back(
    docstore_database_url: str, local_redis_factory: Callable[[], LocalRedis]
) -> None:
    server = local_redis_factory()
    settings = Settings.model_validate(
        {"DATABASE_URL": docstore_database_url, "REDIS_URL": server.url, "pool_min_size": 1}
    )
    with Docstore.connect(settings) as store:
        assert store.health().redis_version
        server.stop()
        assert store.health().redis_error
        server.start()
        assert store.health().redis_version


def test_pool_exhaustion_gives_a_typed_error_not_a_deadlock(docstore_database_url: str) -> None:
    settings = Settings.model_validate(
        {
            "DATABASE_URL": docstore_database_url,
            "pool_min_size": 1,
            "pool_max_overflow": 1,
            "pool_timeout": 0.5,
        }
    )
    with Docstore.connect(settings) as store:
        holding = threading.Barrier(3)
        release = threading.Event()

        def hold_a_connection() -> None:
            with store.db.connection():
                holding.wait()
                release.wait(10)

        holders = [threading.Thread(target=hold_a_connection) for _ in range(2)]
        for thread in holders:
            thread.start()
        holding.wait()
        try:
            with pytest.raises(PoolExhausted, match="all 2 connections"):
                store.db.value("server_version", {})
        finally:
            release.set()
            for thread in holders:
                thread.join()
        assert store.health().postgres_version  # usable again once connections are back


def test_caller_redis_client_is_not_closed(docstore_settings: Settings) -> None:
    client = redis.Redis.from_url(docstore_settings.redis_url)
    with Docstore.connect(docstore_settings, redis_client=client) as store:
        assert store.redis is client
    assert client.ping()
    client.close()

"""Reads that tolerate lag go to a real streaming standby (DATABASE_REPLICA_URL); the rest, and
everything while the standby is down or behind, go to the primary — never an error.

The standby is made with `pg_basebackup -R` from the fixtures' own PostgreSQL binaries; lag is
made by pausing its replay (`pg_wal_replay_pause()`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import psycopg
import pytest
from helpers import wait_until
from psycopg import sql
from sides import Side, side_fixture  # noqa: F401

from docstore import Docstore, DocumentCreate, Settings, UserCreate
from docstore.errors import NotFound
from docstore.postgres.routing import consistency
from docstore.postgres.schema import apply_schema
from docstore.testing.plugin import create_database, drop_database, with_database
from docstore.testing.replica import LocalStandby
from docstore.testing.servers import LocalPostgres

pytestmark = pytest.mark.timeout(120)

CHECK_INTERVAL = 0.1


@pytest.fixture(scope="module")
def primary() -> Iterator[LocalPostgres]:
    server = LocalPostgres()
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def standby(primary: LocalPostgres) -> Iterator[LocalStandby]:
    server = LocalStandby(primary)
    server.start()
    yield server
    server.close()


@pytest.fixture(scope="module")
def template(primary: LocalPostgres) -> str:
    """A database with the schema on the private primary, copied for each test."""
    name = create_database(primary.url)
    apply_schema(Settings.model_validate({"DATABASE_URL": with_database(primary.url, name)}))
    return name


@pytest.fixture
def database(primary: LocalPostgres, standby: LocalStandby, template: str) -> Iterator[str]:
    if not standby_running(standby):
        standby.start()
    resume_replay(standby)
    name = create_database(primary.url, template)
    standby.wait_for_replay()
    yield name
    resume_replay(standby)
    drop_database(primary.url, name)


def standby_running(standby: LocalStandby) -> bool:
    return (standby.data_dir / "postmaster.pid").exists()


def settings_for(
    primary: LocalPostgres, standby: LocalStandby, name: str, **extra: Any
) -> Settings:
    return Settings.model_validate(
        {
            "DATABASE_URL": with_database(primary.url, name),
            "DATABASE_REPLICA_URL": with_database(standby.url, name),
            "REDIS_URL": "redis://127.0.0.1:1/0",  # not needed here
            "pool_min_size": 1,
            "pool_max_overflow": 4,
            "replica_check_interval": CHECK_INTERVAL,
            "replica_timeout": 0.5,
            **extra,
        }
    )


def pause_replay(standby: LocalStandby) -> None:
    with psycopg.connect(standby.url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")


def resume_replay(standby: LocalStandby) -> None:
    if not standby_running(standby):
        return
    with psycopg.connect(standby.url, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_resume()")


def replica_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "docstore.replica"]


def test_lag_tolerant_reads_go_to_the_replica_a_get_after_a_write_stays_on_the_primary(
    side: Side, primary: LocalPostgres, standby: LocalStandby, database: str
) -> None:
    settings = settings_for(primary, standby, database, replica_max_lag=3600)
    with cast(Any, side.connect(settings)) as store:
        user = store.users.create(UserCreate(email="r@example.com")).user
        standby.wait_for_replay()
        assert store.users.get_with_documents(user.id).documents == []
        pause_replay(standby)  # the replica stops here, within the lag bound
        doc = store.documents.create(DocumentCreate(user_id=user.id, filename="a", s3_key="k"))
        assert store.documents.get(doc.id) == doc  # read-your-writes: the primary
        # The listing, counts, search and overview come from the replica: not there yet.
        assert store.documents.list_for_user(user.id).items == []
        assert store.documents.count_by_status(user.id)["PENDING"] == 0
        assert store.users.get_with_documents(user.id).documents == []
        with store.db.consistency("primary"):
            assert [d.id for d in store.documents.list_for_user(user.id).items] == [doc.id]
        with consistency("primary"):  # the same, from the routing module
            assert store.documents.count_by_status(user.id)["PENDING"] == 1
        assert store.db.replica.reads >= 4
        resume_replay(standby)
        standby.wait_for_replay()
        assert [d.id for d in store.documents.list_for_user(user.id).items] == [doc.id]


def test_a_replica_lagging_past_the_bound_is_skipped_logged_once_then_used_again(
    side: Side,
    primary: LocalPostgres,
    standby: LocalStandby,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="docstore.replica")
    settings = settings_for(primary, standby, database, replica_max_lag=0.3)
    with cast(Any, side.connect(settings)) as store:
        user = store.users.create(UserCreate(email="l@example.com")).user
        standby.wait_for_replay()
        assert store.documents.list_for_user(user.id).items == []
        pause_replay(standby)
        doc = store.documents.create(DocumentCreate(user_id=user.id, filename="a", s3_key="k"))

        def listed() -> bool:
            return [d.id for d in store.documents.list_for_user(user.id).items] == [doc.id]

        # Past the bound the listing comes from the primary, with the new document.
        wait_until(listed, 10, "the listing to fall back to the primary")
        on_primary = store.db.replica.reads_on_primary
        for _ in range(20):
            assert listed()
        assert store.db.replica.reads_on_primary >= on_primary + 20
        lagging = [m for m in replica_warnings(caplog) if "lagging" in m]
        assert len(lagging) == 1 and "go to the primary" in lagging[0]
        report = store.health().replica  # the health report says so too, with the lag
        assert report.state == "lagging" and report.lag_seconds > 0.3, report
        assert report.reads_on_primary >= on_primary + 20 and report.max_lag_seconds == 0.3
        resume_replay(standby)
        standby.wait_for_replay()
        time.sleep(CHECK_INTERVAL * 2)
        reads = store.db.replica.reads
        wait_until(lambda: listed() and store.db.replica.reads > reads, 10, "replica reads")
        assert any("is back" in m for m in replica_warnings(caplog))
        report = store.health().replica
        assert report.state == "ok" and report.lag_seconds < 0.3, report


@contextmanager
def cut_off(standby: LocalStandby) -> Iterator[None]:
    """The standby keeps running but receives nothing: its primary_conninfo points nowhere."""
    with psycopg.connect(standby.url, autocommit=True) as conn:
        row = conn.execute("SHOW primary_conninfo").fetchone()
        assert row is not None
        conn.execute("ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=1'")
        conn.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        with psycopg.connect(standby.url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER SYSTEM SET primary_conninfo = {}").format(row[0]))
            conn.execute("SELECT pg_reload_conf()")
        standby.wait_for_replay()


def test_a_replica_cut_off_from_its_primary_is_lagging_not_caught_up(
    side: Side, primary: LocalPostgres, standby: LocalStandby, database: str
) -> None:
    settings = settings_for(primary, standby, database, replica_max_lag=0.3)
    with cast(Any, side.connect(settings)) as store, cut_off(standby):
        user = store.users.create(UserCreate(email="c@example.com")).user
        doc = store.documents.create(DocumentCreate(user_id=user.id, filename="a", s3_key="k"))

        def listed() -> bool:
            return [d.id for d in store.documents.list_for_user(user.id).items] == [doc.id]

        # It replayed all it received, which is nothing since the cut: past the bound, the
        # listing comes from the primary.
        wait_until(listed, 20, "the listing to fall back to the primary")
        report = store.health().replica
        assert report.state == "lagging" and report.lag_seconds > 0.3, report


def test_a_stopped_replica_sends_reads_to_the_primary_without_errors_until_it_is_back(
    side: Side,
    primary: LocalPostgres,
    standby: LocalStandby,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="docstore.replica")
    settings = settings_for(primary, standby, database, replica_max_lag=3600)
    with cast(Any, side.connect(settings)) as store:
        user = store.users.create(UserCreate(email="s@example.com")).user
        store.documents.create(DocumentCreate(user_id=user.id, filename="a", s3_key="k"))
        standby.wait_for_replay()
        assert len(store.documents.list_for_user(user.id).items) == 1
        assert store.db.replica.reads >= 1
        standby.stop("immediate")
        try:
            for _ in range(30):  # no error, ever: the primary answers
                assert len(store.documents.list_for_user(user.id).items) == 1
                assert store.documents.search(user.id, "anything").items == []
            down = [m for m in replica_warnings(caplog) if " is down " in m]
            assert len(down) == 1, replica_warnings(caplog)
            report = store.health()
            assert report.postgres_error is None  # the primary answers: no outage
            assert report.replica.state == "down" and report.replica.lag_seconds is None
        finally:
            standby.start()
        reads = store.db.replica.reads
        wait_until(
            lambda: (
                len(store.documents.list_for_user(user.id).items) == 1
                and store.db.replica.reads > reads
            ),
            20,
            "reads to return to the restarted replica",
        )
        assert any("is back" in m for m in replica_warnings(caplog))


def test_reads_inside_a_transaction_stay_on_its_connection(
    primary: LocalPostgres, standby: LocalStandby, database: str
) -> None:
    settings = settings_for(primary, standby, database, replica_max_lag=3600)
    with Docstore.connect(settings) as store:
        user = store.users.create(UserCreate(email="t@example.com")).user
        pause_replay(standby)
        with store.db.transaction() as conn:
            store.documents.create(DocumentCreate(user_id=user.id, filename="a", s3_key="k"), conn)
            assert len(store.documents.list_for_user(user.id, conn=conn).items) == 1
        assert store.documents.list_for_user(user.id).items == []  # the paused replica


def test_first_reads_from_many_threads_at_once_all_use_the_replica_quietly(
    side: Side,
    primary: LocalPostgres,
    standby: LocalStandby,
    database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="docstore.replica")
    settings = settings_for(primary, standby, database, replica_max_lag=3600)
    with cast(Any, side.connect(settings)) as store:
        user = store.users.create(UserCreate(email="m@example.com")).user
        standby.wait_for_replay()
        start = threading.Barrier(8)

        def first_read() -> None:
            start.wait()
            assert store.documents.list_for_user(user.id).items == []

        threads = [threading.Thread(target=first_read) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert store.db.replica.reads + store.db.replica.reads_on_primary == 8
        assert replica_warnings(caplog) == []  # the pool opened once, nobody saw it closed


def test_a_user_the_replica_does_not_have_yet_is_read_from_the_primary_not_missing(
    side: Side, primary: LocalPostgres, standby: LocalStandby, database: str
) -> None:
    settings = settings_for(primary, standby, database, replica_max_lag=3600)
    with cast(Any, side.connect(settings)) as store:
        pause_replay(standby)
        user = store.users.create(UserCreate(email="new@example.com")).user
        overview = store.users.get_with_documents(user.id)
        assert (overview.id, overview.documents) == (user.id, [])
        with pytest.raises(NotFound):
            store.users.get_with_documents(user.id + 1000)
        assert store.db.replica.reads >= 2  # both were asked of the replica first

"""docstore behind a real PgBouncer in transaction mode (DATABASE_POOLER=transaction).

A server connection serves whichever client runs the next transaction, so nothing may live in a
session: these tests run the repositories, the intake flow and the migration through PgBouncer
with 8 threads, and compare what they read with a direct connection to the same database.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import redis
from helpers import migrated_table_contents
from sides import Side, side_fixture  # noqa: F401

from docstore import Docstore, DocumentCreate, Settings, UserCreate
from docstore.errors import ConfigurationError, ServiceUnavailable
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import extract_text
from docstore.postgres.schema import apply_schema, rollback_schema, schema_status
from docstore.testing.pgbouncer import LocalPgBouncer
from docstore.testing.plugin import create_database, drop_database, with_database

pytestmark = pytest.mark.timeout(180)

THREADS = 8
ROUNDS = 15


def in_threads(work: Callable[[int], Any], threads: int = THREADS) -> list[Any]:
    """`work(n)` for n in range(threads), each in its own thread; every exception re-raised."""
    results: list[Any] = [None] * threads
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            results[n] = work(n)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert errors == []
    return results


def set_database_timezone(database_url: str, zone: str) -> None:
    """Sessions of this database start in `zone` (a role or database setting, as behind a
    pooler where docstore sends no startup options)."""
    name = database_url.rsplit("/", 1)[-1]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} SET TimeZone = '{zone}'")


def assert_utc(*stamps: Any) -> None:
    for stamp in stamps:
        if stamp is not None:
            assert stamp.utcoffset() == timedelta(0), stamp


@pytest.fixture(params=["unprepared", "prepared"])
def bouncer_settings(request: pytest.FixtureRequest, docstore_database_url: str) -> Settings:
    """Through Debian's PgBouncer with no prepared statements, and through a PgBouncer 1.21+
    that keeps them (DATABASE_POOLER_PREPARED): every test below runs on both."""
    fixture = {
        "unprepared": "docstore_pgbouncer_settings",
        "prepared": "docstore_pgbouncer_prepared_settings",
    }[request.param]
    settings = cast(Settings, request.getfixturevalue(fixture))
    # Sessions not in UTC: docstore must still hand back UTC timestamps.
    set_database_timezone(docstore_database_url, "Asia/Tokyo")
    return settings.model_copy(update={"pool_max_overflow": THREADS})


def server_prepared_statements(bouncer: LocalPgBouncer) -> int:
    """Prepared statements PgBouncer holds on its server connections (admin console, which
    speaks only the simple query protocol)."""
    with psycopg.connect(bouncer.url("pgbouncer"), autocommit=True) as admin:
        result = admin.pgconn.exec_(b"SHOW SERVERS")
        names = [result.fname(i) for i in range(result.nfields)]
        column = names.index(b"prepared_statements")
        return sum(int(result.get_value(row, column) or 0) for row in range(result.ntuples))


def test_behind_a_pooler_that_keeps_them_statements_are_prepared_only_with_the_setting(
    side: Side,
    docstore_pgbouncer_prepared_settings: Settings,
    docstore_pgbouncer_prepared: LocalPgBouncer,
) -> None:
    without = docstore_pgbouncer_prepared_settings.model_copy(
        update={"database_pooler_prepared": False}
    )
    with_setting = docstore_pgbouncer_prepared_settings
    for settings, expect_prepared in ((without, False), (with_setting, True)):
        before = server_prepared_statements(docstore_pgbouncer_prepared)
        with cast(Any, side.connect(settings)) as store:
            user = store.users.create(UserCreate(email=f"p{expect_prepared}@example.com")).user
            for _ in range(10):  # psycopg prepares from the sixth run of a statement
                assert store.users.get(user.id).id == user.id
        after = server_prepared_statements(docstore_pgbouncer_prepared)
        assert (after > before) is expect_prepared, (before, after)


def test_without_the_setting_connect_names_database_pooler(
    side: Side, docstore_pgbouncer_settings: Settings
) -> None:
    settings = docstore_pgbouncer_settings.model_copy(update={"database_pooler": "none"})
    with pytest.raises(ConfigurationError, match="DATABASE_POOLER=transaction") as caught:
        side.connect(settings)
    assert "unsupported startup parameter: options" in caught.value.message
    assert "pgbouncer-test" not in caught.value.message  # never the password


def test_repositories_with_8_threads_read_what_a_direct_connection_reads(
    side: Side, bouncer_settings: Settings, docstore_settings: Settings
) -> None:
    with (
        cast(Any, side.connect(bouncer_settings)) as store,
        Docstore.connect(docstore_settings) as direct,
    ):

        def work(n: int) -> dict[str, Any]:
            created = store.users.create(UserCreate(email=f"t{n}@example.com"))
            user = store.users.authenticate(created.api_key)
            ids = []
            for i in range(4):
                doc = store.documents.create(
                    DocumentCreate(user_id=user.id, filename=f"{n}-{i}.pdf", s3_key=f"k{n}{i}")
                )
                ids.append(doc.id)
            for round_ in range(ROUNDS):
                # Same statements over and over: psycopg would prepare them from the fifth run.
                assert store.documents.get(ids[round_ % 4]).user_id == user.id
                assert store.users.authenticate(created.api_key).id == user.id
                assert len(store.documents.list_for_user(user.id).items) == 4
            claimed = store.lifecycle.claim(ids[0], f"w{n}")
            store.lifecycle.mark_completed(claimed.id, f"w{n}", f"quarterly invoice {n}", 1)
            return {
                "user": user.id,
                "page": store.documents.list_for_user(user.id),
                "with_documents": store.users.get_with_documents(user.id),
                "counts": store.documents.count_by_status(user.id),
                "search": store.documents.search(user.id, "invoice"),
                "doc": store.documents.get(ids[0]),
            }

        results = in_threads(work)
        for seen in results:
            user_id = seen["user"]
            assert seen["page"] == direct.documents.list_for_user(user_id)
            assert seen["with_documents"] == direct.users.get_with_documents(user_id)
            assert seen["counts"] == direct.documents.count_by_status(user_id)
            assert seen["search"] == direct.documents.search(user_id, "invoice")
            assert seen["doc"] == direct.documents.get(seen["doc"].id)
            assert seen["doc"].status == "COMPLETED" and seen["counts"]["COMPLETED"] == 1
            doc = seen["doc"]
            assert_utc(doc.created_at, doc.updated_at, doc.started_at, doc.completed_at)
            nested = seen["with_documents"]
            assert_utc(nested.created_at, *(d.created_at for d in nested.documents))


def test_role_or_database_settings_replace_the_startup_options(
    side: Side, bouncer_settings: Settings, docstore_database_url: str
) -> None:
    name = docstore_database_url.rsplit("/", 1)[-1]
    with psycopg.connect(docstore_database_url, autocommit=True) as conn:
        conn.execute(f"ALTER DATABASE {name} SET statement_timeout = '100ms'")
    with cast(Any, side.connect(bouncer_settings)) as store:
        with (
            pytest.raises(ServiceUnavailable, match="statement timeout"),
            store.db.connection() as conn,
        ):
            conn.execute("SELECT pg_sleep(2)")
        assert store.users.create(UserCreate(email="after@example.com")).user.id > 0


@pytest.fixture
def intake_store(
    side: Side, bouncer_settings: Settings, docstore_blob_store: S3BlobStore
) -> Iterator[Docstore]:
    with cast(Any, side.connect(bouncer_settings, blobs=docstore_blob_store)) as store:
        yield store


def test_intake_with_8_threads_through_pgbouncer_completes_every_document_once(
    intake_store: Docstore, docstore_settings: Settings
) -> None:
    store = intake_store
    users = [store.users.create(UserCreate(email=f"i{n}@example.com")).user for n in range(2)]

    def submit(n: int) -> list[int]:
        return [
            store.submit_document(users[n % 2], f"{n}-{i}.txt", f"text {n} {i}".encode()).id
            for i in range(3)
        ]

    submitted = sorted(i for ids in in_threads(submit) for i in ids)

    def work(n: int) -> list[int]:
        done = []
        while outcome := store.process_next(f"worker-{n}", extract_text, block_ms=200):
            assert outcome.action == "completed", outcome
            done.append(outcome.document_id)
        return done

    processed = [i for ids in in_threads(work) for i in ids]
    assert sorted(processed) == submitted  # each once
    with Docstore.connect(docstore_settings) as direct:
        for doc_id in submitted:
            doc = direct.documents.get(doc_id)
            assert doc.status == "COMPLETED" and doc == store.documents.get(doc_id)
            assert_utc(doc.created_at, doc.completed_at)


def _seed_legacy_tasks(redis_url: str, count: int) -> None:
    client = redis.Redis.from_url(redis_url)
    with client.pipeline(transaction=False) as pipe:
        for n in range(count):
            pipe.hset(
                f"task:{n}",
                mapping={
                    "filename": f"f{n}.pdf",
                    "s3_key": f"k{n}",
                    "status": "done" if n % 3 else "failed",
                    "user_email": f"owner{n % 7}@example.com",
                    "created_at": "2024-03-01T10:00:00+00:00",
                },
            )
        pipe.execute()
    client.close()


def _migrate(database_url: str, redis_url: str, tmp_path: Path, *, pooler: str) -> None:
    env = {**os.environ, "DATABASE_POOLER": pooler}
    proc = subprocess.run(
        [
            sys.executable, "-m", "docstore.migrate",
            "--database-url", database_url, "--redis-url", redis_url,
            "--writers", str(THREADS), "--batch-size", "25",
            "--rejects", str(tmp_path / f"rejects-{pooler}.jsonl"),
            "--report", str(tmp_path / f"report-{pooler}.json"),
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_migrate_with_8_writers_through_pgbouncer_writes_what_a_direct_run_writes(
    docstore_pgbouncer: LocalPgBouncer,
    docstore_postgres_url: str,
    docstore_template_database: str,
    docstore_redis_url: str,
    tmp_path: Path,
) -> None:
    _seed_legacy_tasks(docstore_redis_url, 400)
    names = [create_database(docstore_postgres_url, docstore_template_database) for _ in "ab"]
    try:
        bounced = docstore_pgbouncer.url(names[0])
        direct = with_database(docstore_postgres_url, names[1])
        # The pooled sessions are not in UTC (docstore sends no TimeZone through the pooler).
        set_database_timezone(with_database(docstore_postgres_url, names[0]), "America/New_York")
        _migrate(bounced, docstore_redis_url, tmp_path, pooler="transaction")
        _migrate(direct, docstore_redis_url, tmp_path, pooler="none")
        via_bouncer = migrated_table_contents(with_database(docstore_postgres_url, names[0]))
        assert len(via_bouncer[0]) == 400
        assert via_bouncer == migrated_table_contents(direct)
    finally:
        for name in names:
            drop_database(docstore_postgres_url, name)


def test_schema_commands_work_through_the_pooler_and_a_confirmed_rollback_asks_for_direct(
    docstore_pgbouncer_settings: Settings,
) -> None:
    settings = docstore_pgbouncer_settings
    for _ in range(3):  # yoyo repeats its queries: unprepared, they never clash on a server
        assert apply_schema(settings) == []
        assert all(status.applied for status in schema_status(settings))
    with pytest.raises(ConfigurationError, match="needs a direct connection"):
        rollback_schema(settings, confirm_destroy=True)
    assert all(status.applied for status in schema_status(settings))

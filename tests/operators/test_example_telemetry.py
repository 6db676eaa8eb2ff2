"""The example service traced end to end (request -> SQL -> Redis -> S3 -> worker) and its
metrics at /metrics in the Prometheus format. It runs in a process of its own: it sets the
global tracer and meter providers, which a process can do once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from docstore import Settings

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from docstore import Docstore, Settings, extract_text
from docstore.observability import setup

spans = InMemorySpanExporter()
assert setup.configure("example-test", span_exporter=spans)
from examples.fastapi_service import create_app

with TestClient(create_app()) as client:
    created = client.post("/users", json={"email": "metrics@example.com"}).json()
    headers = {"X-API-Key": created["api_key"]}
    upload = client.post("/documents", headers=headers, files={"file": ("a.txt", b"words")})
    assert upload.status_code == 201, upload.text
    with Docstore.connect(Settings()) as store:  # the worker
        outcome = store.process_next("worker-1", extract_text, block_ms=0)
        assert outcome.action == "completed", outcome
    text = client.get("/metrics").text
setup._configured["tracer_provider"].force_flush()
found = [
    {"name": s.name, "kind": s.kind.name, "id": s.context.span_id,
     "parent": s.parent.span_id if s.parent else None,
     "links": [link.context.span_id for link in s.links]}
    for s in spans.get_finished_spans()
]
print(json.dumps({"spans": found, "metrics": text}))
"""


@pytest.mark.slow
def test_the_example_service_is_traced_and_serves_prometheus_metrics(
    docstore_settings: Settings, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": docstore_settings.database_url,
        "REDIS_URL": docstore_settings.redis_url,
        "BLOB_BACKEND": "local",
        "BLOB_DIR": str(tmp_path / "blobs"),
        "TELEMETRY": "true",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    spans = found["spans"]
    by_id = {s["id"]: s for s in spans}

    (request,) = [s for s in spans if s["name"] == "POST /documents"]
    assert request["kind"] == "SERVER"
    (send,) = [s for s in spans if s["name"] == "send documents"]
    # The request's span is an ancestor (FastAPI adds its endpoint span between them).
    ancestors = []
    node = by_id.get(send["parent"])
    while node is not None:
        ancestors.append(node["id"])
        node = by_id.get(node["parent"])
    assert request["id"] in ancestors
    under_send = {s["name"] for s in spans if s["parent"] == send["id"]}
    assert {"blob put", "insert_document", "XADD"} <= under_send, under_send
    (process,) = [s for s in spans if s["name"] == "process documents"]
    assert process["links"] == [send["id"]]
    under_process = {s["name"] for s in spans if s["parent"] == process["id"]}
    assert {"blob get", "complete_document"} <= under_process, under_process
    assert any(s["name"] == "insert_user" for s in spans)

    metrics = found["metrics"]
    for name in (
        "db_client_operation_duration_seconds_bucket",
        "db_client_connection_count",
        "docstore_documents_submitted_total",
        "docstore_queue_depth",
        "docstore_rate_limit_decisions_total",
    ):
        assert name in metrics, name
    assert 'docstore_query_name="insert_document"' in metrics

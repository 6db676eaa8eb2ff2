"""The example service and worker, driven through HTTP and signals against the real servers."""

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from docstore import Docstore, Settings, UserCreate
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import extract_text
from docstore.quickstart import make_pdf
from docstore.testing import free_port
from docstore.testing.plugin import S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY
from examples.fastapi_service import create_app
from examples.worker import run_worker

ROOT = Path(__file__).resolve().parents[2]


class Api:
    def __init__(self, base_url: str, store: Docstore) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=10)
        self.store = store

    def new_user(self, email: str) -> dict[str, str]:
        response = self.http.post("/users", json={"email": email})
        assert response.status_code == 201, response.text
        return {"X-API-Key": response.json()["api_key"]}

    def drain(self) -> None:
        """Process queued documents until the queue is empty."""
        while self.store.process_next("test-worker", extract_text, block_ms=0) is not None:
            pass


@pytest.fixture
def api(docstore_settings: Settings, docstore_blob_store: S3BlobStore) -> Iterator[Api]:
    settings = docstore_settings.model_copy(
        update={"rate_limit": 30, "rate_limit_period": 60.0, "max_upload_bytes": 100_000}
    )
    app = create_app(lambda: Docstore.connect(settings, blobs=docstore_blob_store))
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    client = Api(f"http://127.0.0.1:{port}", app.state.store)
    yield client
    client.http.close()
    server.should_exit = True
    thread.join(10)


def test_upload_process_fetch_progress_and_search(api: Api) -> None:
    headers = api.new_user("reader@example.com")
    pdf = make_pdf(["Quarterly invoice for boiler maintenance", "Signed by the caretaker"])
    upload = api.http.post(
        "/documents", headers=headers, files={"file": ("invoice.pdf", pdf, "application/pdf")}
    )
    assert upload.status_code == 201, upload.text
    document = upload.json()
    assert document["status"] == "PENDING"
    assert "RateLimit" in upload.headers and "RateLimit-Policy" in upload.headers

    pending = api.http.get(f"/documents/{document['id']}/progress", headers=headers).json()
    assert pending["status"] == "PENDING" and pending["percent"] == 0

    api.drain()

    fetched = api.http.get(f"/documents/{document['id']}", headers=headers)
    assert fetched.status_code == 200
    assert fetched.json()["status"] == "COMPLETED"
    assert fetched.json()["page_count"] == 2
    progress = api.http.get(f"/documents/{document['id']}/progress", headers=headers).json()
    assert progress == {
        "document_id": document["id"],
        "status": "COMPLETED",
        "percent": 100.0,
        "stage": "completed",
    }
    listing = api.http.get("/documents", params={"status": "COMPLETED"}, headers=headers).json()
    assert [item["id"] for item in listing["items"]] == [document["id"]]
    found = api.http.get("/documents/search", params={"q": "boiler invoice"}, headers=headers)
    assert found.status_code == 200
    (hit,) = found.json()["items"]
    assert hit["id"] == document["id"]
    assert "<b>" in hit["snippet"].lower() or "boiler" in hit["snippet"].lower()


def test_missing_or_wrong_key_is_401(api: Api) -> None:
    assert api.http.get("/documents").status_code == 401
    assert api.http.get("/documents", headers={"X-API-Key": "dsk_nonsense"}).status_code == 401


def test_other_users_documents_are_404(api: Api) -> None:
    owner = api.new_user("owner@example.com")
    other = api.new_user("other@example.com")
    upload = api.http.post("/documents", headers=owner, files={"file": ("a.txt", b"mine")})
    document_id = upload.json()["id"]
    assert api.http.get(f"/documents/{document_id}", headers=other).status_code == 404
    assert api.http.get(f"/documents/{document_id}/progress", headers=other).status_code == 404
    assert api.http.get("/documents/999999", headers=owner).status_code == 404
    assert api.http.get("/documents", headers=other).json()["items"] == []


def test_bad_input_is_413_or_422(api: Api) -> None:
    headers = api.new_user("sloppy@example.com")
    too_big = api.http.post(
        "/documents", headers=headers, files={"file": ("big.txt", b"x" * 100_001)}
    )
    assert too_big.status_code == 413
    assert api.http.get("/documents", params={"status": "DONE"}, headers=headers).status_code == 422
    bad_cursor = api.http.get("/documents", params={"cursor": "garbage"}, headers=headers)
    assert bad_cursor.status_code == 422
    assert api.http.post("/users", json={"email": "not-an-email"}).status_code == 422
    assert api.http.post("/users", json={"email": "reader@example.com"}).status_code == 201
    duplicate = api.http.post("/users", json={"email": "READER@example.com"})
    assert duplicate.status_code == 409


def test_an_upload_declaring_more_than_the_limit_is_refused_before_its_body_is_sent(
    api: Api,
) -> None:
    headers = api.new_user("declared@example.com")
    url = api.http.base_url
    connection = http.client.HTTPConnection(url.host, url.port, timeout=10)
    connection.putrequest("POST", "/documents")
    for name, value in {
        **headers,
        "Content-Type": "multipart/form-data; boundary=b",
        "Content-Length": str(500 * 1024 * 1024),
    }.items():
        connection.putheader(name, value)
    connection.endheaders()  # the headers only: not one byte of the body is ever sent
    response = connection.getresponse()
    assert response.status == 413
    assert json.loads(response.read()) == {"detail": "request body is larger than 100000 bytes"}
    connection.close()


def test_rate_limit_answers_429_with_the_limiters_headers(api: Api) -> None:
    headers = api.new_user("burst@example.com")
    statuses = [api.http.get("/documents", headers=headers) for _ in range(35)]
    codes = [r.status_code for r in statuses]
    assert codes[:30] == [200] * 30
    assert set(codes[30:]) == {429}
    refused = statuses[-1]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Policy"] == '"api";q=30;w=60'
    assert refused.headers["RateLimit"].startswith('"api";r=0;')


def test_worker_process_finishes_and_stops_on_sigterm(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore, docstore_s3_endpoint: str
) -> None:
    with Docstore.connect(docstore_settings, blobs=docstore_blob_store) as store:
        user = store.users.create(UserCreate(email="batch@example.com")).user
        ids = [
            store.submit_document(user, f"page{i}.pdf", make_pdf([f"Document {i}"])).id
            for i in range(3)
        ]
        env = {
            **os.environ,
            "DATABASE_URL": docstore_settings.database_url,
            "REDIS_URL": docstore_settings.redis_url,
            "BLOB_BACKEND": "s3",
            "S3_BUCKET": docstore_blob_store.bucket,
            "S3_ENDPOINT_URL": docstore_s3_endpoint,
            "S3_REGION": "us-east-1",
            "S3_ACCESS_KEY": S3_TEST_ACCESS_KEY,
            "S3_SECRET_KEY": S3_TEST_SECRET_KEY,
            "POOL_MIN_SIZE": "1",
        }
        worker = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "worker.py"), "--worker-id", "w-sub"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while {store.documents.get(i).status for i in ids} != {"COMPLETED"}:
                assert worker.poll() is None, worker.stdout.read() if worker.stdout else ""
                assert time.monotonic() < deadline, "worker did not finish the documents"
                time.sleep(0.1)
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=30)
        finally:
            if worker.poll() is None:
                worker.kill()
        assert worker.returncode == 0, output
        assert "stopped after 3 document(s)" in output
        assert {store.documents.get(i).page_count for i in ids} == {1}


def test_run_worker_stops_when_asked(docstore_store: Docstore) -> None:
    stop = threading.Event()
    stop.set()
    assert run_worker(docstore_store, "idle", stop) == 0

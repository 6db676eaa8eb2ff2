"""The example service and worker, driven through HTTP and signals against the real servers."""

import asyncio
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import psycopg
import pytest
from helpers import serving, store_env
from starlette.requests import Request

from docstore import AsyncDocstore, Docstore, Settings, UserCreate
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import Extraction, ProgressCallback, extract_text
from docstore.intake.flow_async import INTERRUPTED
from docstore.postgres.schema import apply_schema
from docstore.quickstart import make_pdf
from docstore.testing import free_port
from examples.fastapi_service import client_address, create_app
from examples.worker import run_worker

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
GATED_EXTRACTOR = "gated_extractor:gated_extract"  # tests/service/gated_extractor.py


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Api:
    """A client of the running service, and a store of its own on the same servers."""

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
    app = create_app(lambda: AsyncDocstore.connect(settings, blobs=docstore_blob_store))
    with (
        serving(app, free_port()) as url,
        Docstore.connect(settings, blobs=docstore_blob_store) as store,
    ):
        client = Api(url, store)
        yield client
        client.http.close()


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


def start_worker(env: dict[str, str], *args: str) -> "subprocess.Popen[str]":
    return subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "worker.py"), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_until(stream: IO[str], text: str) -> str:
    """The lines `stream` gives until one contains `text` (all of it if the stream ends)."""
    lines = []
    for line in stream:
        lines.append(line)
        if text in line:
            break
    return "".join(lines)


def test_the_worker_says_which_setting_is_wrong_without_a_traceback() -> None:
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "worker.py")],
        env={**os.environ, "POOL_MIN_SIZE": "several", "LEASE_SECONDS": "-1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert "POOL_MIN_SIZE" in run.stderr and "LEASE_SECONDS" in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--requeue-every", "0"], "--requeue-every: must be a positive number"),
        (["--requeue-every", "nan"], "--requeue-every: must be a positive number"),
        (["--extractor", "docstore.intake.extractors:logger"], "is not a function"),
        (["--extractor", "no_such_module:extract"], "cannot load"),
        (["--extractor", "extract_text"], "must be module:function"),
        # Each connected, then failed every turn, once a second, for good:
        (["--extractor", "asyncio:sleep"], "async def"),
        (["--worker-id", "w" * 300], "--worker-id"),
        (["--worker-id", "w" * 254, "--concurrency", "2"], "--worker-id"),  # w...w-1: 256
    ],
)
def test_the_worker_refuses_bad_options_before_it_connects(args: list[str], said: str) -> None:
    # Each was accepted: 0 ran requeue_stuck flat out, a non-function failed every document
    # it claimed, a bad path raised a traceback after connecting.
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "worker.py"), *args],
        env={**os.environ, "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2, run.stderr
    assert said in run.stderr


def test_worker_process_finishes_and_stops_on_sigterm(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore, docstore_s3_endpoint: str
) -> None:
    with Docstore.connect(docstore_settings, blobs=docstore_blob_store) as store:
        user = store.users.create(UserCreate(email="batch@example.com")).user
        ids = [
            store.submit_document(user, f"page{i}.pdf", make_pdf([f"Document {i}"])).id
            for i in range(3)
        ]
        env = store_env(docstore_settings, docstore_blob_store, docstore_s3_endpoint)
        worker = start_worker(env, "--worker-id", "w-sub")
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


def test_a_worker_with_concurrency_3_holds_three_documents_and_finishes_them_on_sigterm(
    docstore_settings: Settings,
    docstore_blob_store: S3BlobStore,
    docstore_s3_endpoint: str,
    tmp_path: Path,
) -> None:
    with Docstore.connect(docstore_settings, blobs=docstore_blob_store) as store:
        user = store.users.create(UserCreate(email="many@example.com")).user
        documents = [
            store.submit_document(user, f"doc{i}.txt", f"words of document {i}".encode())
            for i in range(7)
        ]
        env = store_env(
            docstore_settings,
            docstore_blob_store,
            docstore_s3_endpoint,
            GATE_DIR=str(tmp_path),
            PYTHONPATH=os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        )
        worker = start_worker(
            env, "--worker-id", "w", "--concurrency", "3", "--extractor", GATED_EXTRACTOR
        )
        assert worker.stdout is not None
        try:
            deadline = time.monotonic() + 60
            while len(list(tmp_path.glob("started-*"))) < 3:
                assert worker.poll() is None, worker.stdout.read()
                assert time.monotonic() < deadline, "the worker did not take three documents"
                time.sleep(0.05)
            # Three documents in hand at once, each held by the gate.
            statuses = [store.documents.get(d.id).status for d in documents]
            assert statuses.count("PROCESSING") == 3
            worker.send_signal(signal.SIGTERM)
            output = read_until(worker.stdout, "finishing the documents in hand")
            (tmp_path / "open").touch()  # only now may the three finish
            rest, _ = worker.communicate(timeout=30)
            output += rest
        finally:
            if worker.poll() is None:
                worker.kill()
        assert worker.returncode == 0, output
        final = {d.filename: store.documents.get(d.id).status for d in documents}
        started = sorted(p.name.removeprefix("started-") for p in tmp_path.glob("started-*"))
        assert "PROCESSING" not in final.values()
        assert sorted(name for name, status in final.items() if status == "COMPLETED") == started
        assert list(final.values()).count("PENDING") == 4  # none taken after the signal
        assert "stopped after 3 document(s)" in output
        for task in range(3):  # one document each, by worker ids w-0, w-1, w-2
            assert output.count(f"w-{task}: document") == 1, output


@pytest.mark.anyio
async def test_run_worker_stops_when_asked(docstore_settings: Settings) -> None:
    stop = asyncio.Event()
    stop.set()
    async with await AsyncDocstore.connect(docstore_settings) as store:
        assert await run_worker(store, "idle", stop, concurrency=3) == 0


@pytest.mark.anyio
async def test_run_worker_starts_every_document_it_claims_at_once(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    # Ten at once need ten extractor threads: more than asyncio's default pool (cores + 4) has.
    concurrency = 10
    together = threading.Barrier(concurrency, timeout=30)

    def extract_together(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        together.wait()  # every claimed document has started
        return extract_text(data, filename, report)

    stop = asyncio.Event()
    async with await AsyncDocstore.connect(docstore_settings, blobs=docstore_blob_store) as store:
        user = (await store.users.create(UserCreate(email="ten@example.com"))).user
        documents = [
            await store.submit_document(user, f"{n}.txt", b"ten at once") for n in range(10)
        ]
        worker = asyncio.create_task(
            run_worker(store, "ten", stop, concurrency=concurrency, extract=extract_together)
        )
        try:
            for _ in range(600):
                statuses = [(await store.documents.get(d.id)).status for d in documents]
                if "PENDING" not in statuses and "PROCESSING" not in statuses:
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            await worker
    assert statuses == ["COMPLETED"] * 10


@pytest.mark.anyio
async def test_run_worker_claims_nothing_after_stop_even_in_a_task_waiting_on_the_queue(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    stop = asyncio.Event()
    async with await AsyncDocstore.connect(docstore_settings, blobs=docstore_blob_store) as store:
        user = (await store.users.create(UserCreate(email="late@example.com"))).user
        worker = asyncio.create_task(
            run_worker(store, "late", stop, concurrency=2, idle_block_ms=3000)
        )
        await asyncio.sleep(1)  # both tasks idle, each waiting up to 3 s for a message
        stop.set()  # what SIGTERM does
        late = await store.submit_document(user, "late.txt", b"submitted after the signal")
        handled = await worker
        assert handled == 0
        assert (await store.documents.get(late.id)).status == "PENDING"


@pytest.mark.anyio
async def test_run_worker_hands_back_what_it_holds_when_the_shutdown_grace_runs_out(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    started = threading.Event()

    def endless(data: bytes, filename: str, report: ProgressCallback) -> Extraction:
        started.set()
        for _ in range(3000):  # a minute, reporting progress: a hung OCR job, say
            time.sleep(0.02)
            report(1, "reading")
        return extract_text(data, filename, report)

    stop = asyncio.Event()
    async with await AsyncDocstore.connect(docstore_settings, blobs=docstore_blob_store) as store:
        user = (await store.users.create(UserCreate(email="grace@example.com"))).user
        document = await store.submit_document(user, "slow.txt", b"never finished in time")
        worker = asyncio.create_task(
            run_worker(store, "grace", stop, concurrency=1, extract=endless, shutdown_grace=0.5)
        )
        assert await asyncio.to_thread(started.wait, 30)
        stop.set()  # what SIGTERM does
        began = time.monotonic()
        handled = await asyncio.wait_for(worker, 30)
        waited = time.monotonic() - began
        handed_back = await store.documents.get(document.id)
        (attempt,) = await store.lifecycle.attempts(document.id)
    assert handled == 0 and waited < 30
    assert (handed_back.status, handed_back.worker_id) == ("PENDING", None)
    assert attempt.worker_id == "grace-0" and attempt.error_message == INTERRUPTED


@pytest.mark.anyio
async def test_the_shutdown_grace_also_bounds_the_requeue_loop(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    # The grace cancelled the document tasks, then waited for requeue_stuck, however long it
    # took (a PostgreSQL that does not answer, an S3 that black-holes the blob purge).
    stop = asyncio.Event()
    async with (
        await AsyncDocstore.connect(docstore_settings, blobs=docstore_blob_store) as store,
        await psycopg.AsyncConnection.connect(docstore_settings.database_url) as locker,
    ):
        await locker.execute("LOCK TABLE documents IN ACCESS EXCLUSIVE MODE")  # all must wait
        worker = asyncio.create_task(
            run_worker(store, "bounded", stop, concurrency=1, shutdown_grace=0.5, idle_block_ms=50)
        )
        await asyncio.sleep(0.5)  # requeue_stuck (run at once) and the task's claim now wait
        stop.set()
        try:
            await asyncio.wait_for(worker, 10)
        finally:
            await locker.rollback()


@pytest.mark.anyio
async def test_the_shutdown_grace_bounds_a_requeue_still_running_when_the_tasks_are_done(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    """Before, the grace was called off once the document tasks had finished, and the worker
    then waited for requeue_stuck however long it took (here, until the statement timeout)."""
    stop = asyncio.Event()
    async with (
        await AsyncDocstore.connect(docstore_settings, blobs=docstore_blob_store) as store,
        await psycopg.AsyncConnection.connect(docstore_settings.database_url) as locker,
    ):
        # Only requeue_stuck's blob purge waits; the idle document task stops at once.
        await locker.execute("LOCK TABLE blob_deletions IN ACCESS EXCLUSIVE MODE")
        worker = asyncio.create_task(
            run_worker(store, "purging", stop, concurrency=1, shutdown_grace=0.5, idle_block_ms=50)
        )
        await asyncio.sleep(0.5)
        stop.set()
        try:
            await asyncio.wait_for(worker, 10)
        finally:
            await locker.rollback()


def test_uploads_keep_their_limit_under_a_root_path(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    # Behind a proxy serving the app under a prefix (uvicorn --root-path), the body limit
    # compared the full path with "/documents": every upload got the 16 KiB limit.
    settings = docstore_settings.model_copy(update={"max_upload_bytes": 1_000_000})
    app = create_app(lambda: AsyncDocstore.connect(settings, blobs=docstore_blob_store))
    with (
        serving(app, free_port(), root_path="/api") as url,
        Docstore.connect(settings, blobs=docstore_blob_store) as store,
    ):
        key = store.users.create(UserCreate(email="prefixed@example.com")).api_key
        upload = httpx.post(
            f"{url}/documents",  # as the proxy forwards it: uvicorn puts the prefix back
            headers={"X-API-Key": key},
            files={"file": ("big.txt", b"words " * 20_000, "text/plain")},
            timeout=30,
        )
    assert upload.status_code == 201, upload.text


def test_a_redis_that_refuses_writes_leaves_what_needs_only_postgresql_answering(
    api: Api,
) -> None:
    # A full Redis (noeviction) refuses the limiters' script: that was a bare 500 on every
    # request, then a 503 on every route. The limiters' failure policy decides instead, as
    # in an outage, and what needs only PostgreSQL answers.
    headers = api.new_user("full@example.com")
    api.store.redis.config_set("maxmemory", 1)
    try:
        answer = api.http.get("/documents", headers=headers)
        signup = api.http.post("/users", json={"email": "new@example.com"})
    finally:
        api.store.redis.config_set("maxmemory", 0)
    assert answer.status_code == 200, answer.text
    assert answer.json()["items"] == []
    assert signup.status_code == 429, signup.text  # signups: the policy is deny


def test_a_small_body_past_16_kib_is_refused_with_413(api: Api) -> None:
    # The framing allowance of uploads applied to every route: 32 KiB were read and parsed
    # where the service says 16.
    answer = api.http.post("/users", json={"email": "a@example.com", "pad": "x" * 20_000})
    assert answer.status_code == 413 and "16384" in answer.json()["detail"]


def test_metrics_without_telemetry_is_not_served(api: Api) -> None:
    # It answered 200 with nothing, to anyone, after three Redis round trips.
    assert api.http.get("/metrics").status_code == 404


@pytest.mark.parametrize(
    ("peer", "counted_as"),
    [
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("192.0.2.7", "192.0.2.7"),
        ("testclient", "not-an-address"),  # no address: one shared budget
    ],
)
def test_an_ipv6_client_is_limited_as_its_64(peer: str, counted_as: str) -> None:
    # Keyed by the exact address, a client with an IPv6 /64 had 2**64 signup and failed-key
    # budgets.
    request = Request({"type": "http", "client": (peer, 1234), "headers": []})
    assert client_address(request) == counted_as


def test_an_upload_the_client_abandons_is_no_server_error(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    # request.form() raised ClientDisconnect, which no handler took: a 500 and an
    # "Exception in ASGI application" traceback in the log for every abandoned upload.
    key = api.new_user("leaver@example.com")["X-API-Key"]
    host, port = api.http.base_url.host, api.http.base_url.port
    head = (
        "POST /documents HTTP/1.1\r\nHost: x\r\nX-API-Key: " + key + "\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 50000\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="a.txt"\r\n\r\nsome'
    )
    with caplog.at_level(logging.ERROR):
        with socket.create_connection((host, port)) as sock:
            sock.sendall(head.encode())
            time.sleep(0.3)  # the service is reading the body
        time.sleep(0.5)  # and finds the client gone
        assert api.http.get("/documents", headers={"X-API-Key": key}).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


@pytest.mark.anyio
async def test_a_worker_turn_that_fails_on_a_database_error_does_not_end_the_worker(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> None:
    # The first claim fails with an error that is no outage (a trigger on the real server; the
    # sequence keeps count, since the failed statement's own writes are rolled back).
    fail_once = """
        CREATE SEQUENCE claim_failures;
        CREATE FUNCTION fail_first_claim() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('claim_failures') = 1 THEN
                RAISE EXCEPTION 'a trigger of the operator''s failed';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER fail_first_claim BEFORE UPDATE OF status ON documents
        FOR EACH ROW WHEN (NEW.status = 'PROCESSING') EXECUTE FUNCTION fail_first_claim();
    """
    stop = asyncio.Event()
    async with await AsyncDocstore.connect(docstore_settings, blobs=docstore_blob_store) as store:
        user = (await store.users.create(UserCreate(email="dl@example.com"))).user
        document = await store.submit_document(user, "a.txt", b"after a failed turn")
        async with store.pool.connection() as conn:
            await conn.execute(fail_once)
        worker = asyncio.create_task(run_worker(store, "dl", stop, concurrency=1))
        try:
            for _ in range(300):
                if worker.done() or (await store.documents.get(document.id)).status == "COMPLETED":
                    break
                await asyncio.sleep(0.1)
        finally:
            stop.set()
            handled = await worker
        assert (await store.documents.get(document.id)).status == "COMPLETED"
        assert handled == 1


def test_an_encoded_slash_never_reaches_another_route_and_no_redirect_is_made(api: Api) -> None:
    headers = api.new_user("slash@example.com")
    for method, path in [
        ("GET", "/documents/1%2Fprogress"),  # was a 200 with a progress body
        ("DELETE", "/documents/1%2fprogress"),  # was a 405
        ("GET", "/documents/1%2F"),  # was a 307 built from the Host header
    ]:
        answer = api.http.request(method, path, headers={**headers, "Host": "evil.example"})
        assert (answer.status_code, answer.json()) == (404, {"detail": "Not Found"}), path
    answer = api.http.get("/documents/1/", headers=headers)
    assert answer.status_code == 404 and "location" not in answer.headers


def test_a_forwarded_client_name_that_is_no_address_shares_one_budget(api: Api) -> None:
    def request_from(host: str) -> Request:
        return Request({"type": "http", "client": (host, 1), "headers": [], "method": "GET"})

    assert client_address(request_from("a" * 600)) == client_address(request_from("b"))
    assert client_address(request_from("203.0.113.7")) == "203.0.113.7"


def test_a_key_whose_lookup_fails_still_gets_its_rate_limit_headers(
    local_postgres_factory: Any, docstore_redis_url: str, tmp_path: Path
) -> None:
    server = local_postgres_factory()
    settings = Settings.model_validate(
        {
            "DATABASE_URL": server.url,
            "REDIS_URL": docstore_redis_url,
            "pool_min_size": 1,
            "pool_timeout": 2,
            "connect_timeout": 1,
            "blob_backend": "local",
            "blob_dir": str(tmp_path),
        }
    )
    apply_schema(settings)
    app = create_app(lambda: AsyncDocstore.connect(settings))
    with serving(app, free_port()) as url, httpx.Client(base_url=url, timeout=30) as http:
        created = http.post("/users", json={"email": "outage@example.com"})
        key = {"X-API-Key": created.json()["api_key"]}
        assert "ratelimit" in http.get("/documents", headers=key).headers
        server.stop()
        try:
            answer = http.get("/documents", headers=key)
        finally:
            server.start()
    assert answer.status_code == 503, answer.text
    assert "ratelimit" in answer.headers  # the key's unit was spent: its budget is shown

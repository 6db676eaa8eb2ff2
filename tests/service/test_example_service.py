"""The example service's defences: body limits, rate limits by address, and what responses show.

Requests go through httpx's ASGI transport, which pulls the request body from the test one chunk
at a time as the app asks for it: so a test can see how much of a body the service read, and can
choose the client address the service sees.
"""

import asyncio
import gc
import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from docstore import AsyncDocstore, DocumentCreate, Settings
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import extract_text
from docstore.quickstart import make_pdf
from docstore.repositories.api_keys import new_api_key
from docstore.testing.servers import LocalRedis
from examples.fastapi_service import (
    HIDDEN_FAILURE,
    DocumentPageOut,
    InFlightLimit,
    RequestGate,
    SearchPageOut,
    ServiceSettings,
    create_app,
)

pytestmark = pytest.mark.anyio

SqlLog = Callable[[], list[str]]

UPLOAD_LIMIT = 100_000
IP_LIMIT = 5
SIGNUP_LIMIT = 3
API_LIMIT = 30
CHUNK = 64 * 1024
BOUNDARY = "docstore-test-boundary"
MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
INTERNAL_FIELDS = ("s3_key", "worker_id", "legacy_task_id")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Service:
    """The app with its lifespan running, and clients that connect from a chosen address."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.store: AsyncDocstore = app.state.store

    def client(self, address: str = "198.51.100.7") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://service", timeout=30)

    async def new_key(self, email: str, address: str = "198.51.100.250") -> dict[str, str]:
        async with self.client(address) as http:
            response = await http.post("/users", json={"email": email})
        assert response.status_code == 201, response.text
        return {"X-API-Key": response.json()["api_key"]}


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's own limits come from the environment, like in a deployment."""
    monkeypatch.setenv("IP_RATE_LIMIT", str(IP_LIMIT))
    monkeypatch.setenv("IP_RATE_LIMIT_PERIOD", "3600")
    monkeypatch.setenv("SIGNUP_RATE_LIMIT", str(SIGNUP_LIMIT))
    monkeypatch.setenv("SIGNUP_RATE_LIMIT_PERIOD", "3600")


@asynccontextmanager
async def running_service(settings: Settings, blobs: S3BlobStore) -> AsyncIterator[Service]:
    settings = settings.model_copy(
        update={
            "rate_limit": API_LIMIT,
            "rate_limit_period": 3600.0,
            "max_upload_bytes": UPLOAD_LIMIT,
            "debug_sql": True,
        }
    )
    app = create_app(lambda: AsyncDocstore.connect(settings, blobs=blobs))
    async with app.router.lifespan_context(app):
        yield Service(app)


@pytest.fixture
async def service(
    service_env: None, docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> AsyncIterator[Service]:
    async with running_service(docstore_settings, docstore_blob_store) as service:
        yield service


@pytest.fixture
async def one_connection_service(
    service_env: None, docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> AsyncIterator[Service]:
    """A service whose pool holds one connection and waits half a second for it."""
    tight = docstore_settings.model_copy(
        update={"pool_min_size": 1, "pool_max_overflow": 0, "pool_timeout": 0.5}
    )
    async with running_service(tight, docstore_blob_store) as service:
        yield service


class StreamedBody:
    """A body made on demand: `head`, `filler` bytes, `tail`; `sent` counts what was read."""

    def __init__(self, head: bytes, filler: int, tail: bytes = b"") -> None:
        self.head = head
        self.filler = filler
        self.tail = tail
        self.sent = 0

    @property
    def size(self) -> int:
        return len(self.head) + self.filler + len(self.tail)

    def pieces(self) -> Iterator[bytes]:
        yield self.head
        left = self.filler
        while left > 0:
            yield b"x" * min(CHUNK, left)
            left -= CHUNK
        yield self.tail

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self.pieces():
            self.sent += len(piece)
            yield piece


def part_head(name: str, filename: str | None = None, first: bool = True) -> bytes:
    """The framing that opens one multipart part (`first=False` closes the previous one)."""
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    opening = "" if first else "\r\n"
    return (
        f"{opening}--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n"
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


MULTIPART_END = f"\r\n--{BOUNDARY}--\r\n".encode()


# -- 5. uploads: refused while they stream ---------------------------------------------------


async def test_an_upload_streaming_past_the_limit_is_refused_before_the_rest_is_read(
    service: Service,
) -> None:
    headers = await service.new_key("streamer@example.com")
    body = StreamedBody(part_head("file", "huge.bin"), 20 * 1024 * 1024, MULTIPART_END)
    async with service.client() as http:
        response = await http.post("/documents", headers={**headers, **MULTIPART}, content=body)
    assert response.status_code == 413, response.text
    assert response.json() == {"detail": f"request body is larger than {UPLOAD_LIMIT} bytes"}
    # Stopped within a chunk of the limit (plus the framing allowance), not at 20 MiB.
    assert body.sent < UPLOAD_LIMIT + 64 * 1024 + CHUNK < body.size


async def test_a_declared_content_length_over_the_limit_is_refused_before_any_body_byte(
    service: Service,
) -> None:
    headers = await service.new_key("declared@example.com")
    body = StreamedBody(part_head("file", "huge.bin"), 8 * 1024 * 1024, MULTIPART_END)
    declared = {**headers, **MULTIPART, "Content-Length": str(body.size)}
    async with service.client() as http:
        response = await http.post("/documents", headers=declared, content=body)
    assert response.status_code == 413, response.text
    assert body.sent == 0


async def test_a_large_json_body_is_refused_while_it_streams(service: Service) -> None:
    body = StreamedBody(b'{"email": "', 20 * 1024 * 1024, b'@example.com"}')
    async with service.client() as http:
        response = await http.post(
            "/users", headers={"Content-Type": "application/json"}, content=body
        )
    assert response.status_code == 413, response.text
    assert body.sent < 2 * CHUNK + len(body.head)


async def test_an_extra_part_after_a_small_file_is_refused_at_its_headers(
    service: Service,
) -> None:
    headers = await service.new_key("sneaky@example.com")
    head = part_head("file", "tiny.txt") + b"x" + part_head("padding", "big.bin", first=False)
    body = StreamedBody(head, 20 * 1024 * 1024, MULTIPART_END)
    async with service.client() as http:
        response = await http.post("/documents", headers={**headers, **MULTIPART}, content=body)
        listing = await http.get("/documents", headers=headers)
    assert response.status_code == 422, response.text
    assert body.sent <= len(head) + CHUNK
    assert listing.json()["items"] == []


@pytest.mark.parametrize(
    ("files", "data", "unexpected"),
    [
        ({"file": ("a.txt", b"one"), "other": ("b.txt", b"two")}, {}, None),
        ({"file": ("a.txt", b"one")}, {"note": "hello"}, None),
        ({"document": ("a.txt", b"one")}, {}, "document"),
    ],
    ids=["second-file", "extra-field", "wrong-name"],
)
async def test_form_parts_other_than_one_file_are_422(
    service: Service,
    files: dict[str, tuple[str, bytes]],
    data: dict[str, str],
    unexpected: str | None,
) -> None:
    headers = await service.new_key("parts@example.com")
    async with service.client() as http:
        response = await http.post("/documents", headers=headers, files=files, data=data)
        listing = await http.get("/documents", headers=headers)
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]
    assert errors and all(set(error) == {"loc", "msg", "type"} for error in errors)
    if unexpected is not None:
        assert ["body", unexpected] in [error["loc"] for error in errors]
    assert listing.json()["items"] == []


# -- 6. rate limits by client address --------------------------------------------------------


async def test_signups_from_one_address_are_limited(service: Service) -> None:
    async with service.client("203.0.113.10") as http:
        for n in range(SIGNUP_LIMIT):
            created = await http.post("/users", json={"email": f"user{n}@example.com"})
            assert created.status_code == 201, created.text
        refused = await http.post("/users", json={"email": "one-more@example.com"})
    assert refused.status_code == 429, refused.text
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Policy"] == f'"signup";q={SIGNUP_LIMIT};w=3600'
    assert await service.store.users.get_by_email("one-more@example.com") is None
    async with service.client("203.0.113.11") as http:
        elsewhere = await http.post("/users", json={"email": "one-more@example.com"})
    assert elsewhere.status_code == 201, elsewhere.text


async def test_random_well_formed_keys_from_one_address_stop_reaching_the_database(
    service: Service, sql_log: SqlLog
) -> None:
    valid = await service.new_key("honest@example.com", address="203.0.113.21")
    lookups_before = sql_log().count("authenticate_user")
    async with service.client("203.0.113.20") as http:
        statuses = [
            (await http.get("/documents", headers={"X-API-Key": new_api_key()})).status_code
            for _ in range(IP_LIMIT + 20)
        ]
        refused = await http.get("/documents", headers={"X-API-Key": new_api_key()})
    assert statuses == [401] * IP_LIMIT + [429] * 20
    assert sql_log().count("authenticate_user") - lookups_before == IP_LIMIT
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Policy"] == f'"ip";q={IP_LIMIT};w=3600'
    async with service.client("203.0.113.21") as http:
        assert (await http.get("/documents", headers=valid)).status_code == 200


async def test_requests_without_a_key_are_limited_by_address(service: Service) -> None:
    async with service.client("203.0.113.30") as http:
        statuses = [(await http.get("/documents")).status_code for _ in range(IP_LIMIT + 3)]
        garbage = await http.get("/documents", headers={"X-API-Key": "dsk_nonsense"})
    assert statuses == [401] * IP_LIMIT + [429] * 3
    assert garbage.status_code == 429


async def test_authenticated_requests_spend_their_keys_budget_not_the_addresss(
    service: Service,
) -> None:
    headers = await service.new_key("busy@example.com", address="203.0.113.40")
    async with service.client("203.0.113.40") as http:
        statuses = [
            (await http.get("/documents", headers=headers)).status_code
            for _ in range(API_LIMIT + 2)
        ]
        refused = await http.get("/documents", headers=headers)
        anonymous = await http.get("/documents")
    assert statuses == [200] * API_LIMIT + [429] * 2
    assert refused.headers["RateLimit-Policy"] == f'"api";q={API_LIMIT};w=3600'
    assert anonymous.status_code == 401


async def test_a_key_past_its_limit_is_refused_before_it_costs_a_database_lookup(
    service: Service, sql_log: SqlLog
) -> None:
    headers = await service.new_key("eager@example.com", address="203.0.113.50")
    async with service.client("203.0.113.50") as http:
        for _ in range(API_LIMIT):
            assert (await http.get("/documents", headers=headers)).status_code == 200
        lookups_before = sql_log().count("authenticate_user")
        refused = [await http.get("/documents", headers=headers) for _ in range(5)]
        lookups_after = sql_log().count("authenticate_user")
        unknown = await http.get("/documents", headers={"X-API-Key": new_api_key()})
    assert [r.status_code for r in refused] == [429] * 5
    assert lookups_after == lookups_before
    assert refused[0].headers["RateLimit"].startswith('"api";r=0;')
    # A key nobody owns is looked up (and answered 401) with no key's RateLimit headers.
    assert unknown.status_code == 401 and "RateLimit" not in unknown.headers
    assert sql_log().count("authenticate_user") == lookups_before + 1


# -- 7. responses show what a client needs, nothing internal --------------------------------


async def test_no_response_shows_blob_keys_worker_ids_or_legacy_task_ids(
    service: Service,
) -> None:
    headers = await service.new_key("private@example.com")
    pdf = make_pdf(["Boiler maintenance invoice"])
    async with service.client() as http:
        upload = await http.post(
            "/documents", headers=headers, files={"file": ("invoice.pdf", pdf, "application/pdf")}
        )
        assert upload.status_code == 201, upload.text
        document_id = upload.json()["id"]
        while await service.store.process_next("host-7.internal:4242", extract_text, block_ms=0):
            pass
        stored = await service.store.documents.get(document_id)
        migrated = await service.store.documents.create(
            DocumentCreate(
                user_id=stored.user_id,
                filename="old.pdf",
                s3_key="legacy/secret-path.pdf",
                legacy_task_id="celery-task-0042",
            )
        )
        # Its blob is missing: the attempt fails, recording the key (for the operators).
        while await service.store.process_next("host-7.internal:4242", extract_text, block_ms=0):
            pass
        recorded = (await service.store.documents.get(migrated.id)).error_message
        assert recorded is not None and "legacy/secret-path" in recorded
        responses = [
            upload,
            await http.get(f"/documents/{document_id}", headers=headers),
            await http.get(f"/documents/{document_id}", headers=headers),  # from the cache
            await http.get(f"/documents/{migrated.id}", headers=headers),
            await http.get(f"/documents/{document_id}/progress", headers=headers),
            await http.get("/documents", headers=headers),
            await http.get("/documents/search", params={"q": "boiler"}, headers=headers),
        ]
    assert [r.status_code for r in responses] == [201] + [200] * 6
    assert len(responses[5].json()["items"]) == 2
    secrets = (*INTERNAL_FIELDS, stored.s3_key, "host-7.internal", "legacy/secret-path", "celery")
    for response in responses:
        for secret in secrets:
            assert secret not in response.text, (response.url, secret)
    # The pages, serialized in one pass, say what the service's own models would.
    page = await service.store.documents.list_for_user(stored.user_id)
    assert responses[5].json() == DocumentPageOut.model_validate(page).model_dump(mode="json")
    hits = await service.store.documents.search(stored.user_id, "boiler")
    assert responses[6].json() == SearchPageOut.model_validate(hits).model_dump(mode="json")
    assert responses[6].json()["items"][0]["snippet"]
    assert responses[3].json()["error_message"] == HIDDEN_FAILURE


async def test_validation_errors_name_the_field_but_never_echo_the_value(
    service: Service,
) -> None:
    headers = await service.new_key("careful@example.com")
    async with service.client() as http:
        responses = [
            await http.post("/users", json={"email": "hunter2-not-an-email"}),
            await http.post("/users", json={"email": "a@example.com", "password": "hunter2"}),
            await http.get("/documents", params={"limit": "hunter2"}, headers=headers),
            await http.get("/documents", params={"status": "hunter2"}, headers=headers),
            await http.get("/documents", params={"cursor": "hunter2"}, headers=headers),
            await http.post(
                "/users",
                content=b'{"email": "hunter2',
                headers={"Content-Type": "application/json"},
            ),
        ]
    for response in responses:
        assert response.status_code == 422, response.text
        assert "hunter2" not in response.text
        errors = response.json()["detail"]
        assert errors and all(set(error) == {"loc", "msg", "type"} for error in errors)
    assert responses[1].json()["detail"][0]["loc"] == ["body", "password"]


async def test_an_outage_is_503_without_naming_the_server(
    one_connection_service: Service,
) -> None:
    store = one_connection_service.store
    address = store.settings.database_address
    held = await store.pool.getconn()  # the pool's only connection: the next request waits in vain
    try:
        async with one_connection_service.client() as http:
            response = await http.post("/users", json={"email": "patient@example.com"})
    finally:
        await store.pool.putconn(held)
    assert response.status_code == 503, response.text
    assert address not in response.text and "PostgreSQL" not in response.text
    assert set(response.json()) == {"detail"}


async def test_the_openapi_document_gives_every_status_with_the_services_own_models(
    service: Service,
) -> None:
    async with service.client() as http:
        spec = (await http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    for name, schema in schemas.items():
        for field in (*INTERNAL_FIELDS, "input", "ctx"):
            assert field not in schema.get("properties", {}), (name, field)
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            ref = responses["422"]["content"]["application/json"]["schema"]["$ref"]
            assert ref == "#/components/schemas/ValidationErrorOut", (method, path)
            for status in ("429", "503"):
                assert status in responses, (method, path, status)
            if path != "/users":
                assert "401" in responses, (method, path)
            for status, response in responses.items():
                assert "application/json" in response.get("content", {}), (method, path, status)
    assert "413" in spec["paths"]["/documents"]["post"]["responses"]
    assert "404" in spec["paths"]["/documents/{document_id}"]["get"]["responses"]
    assert "409" in spec["paths"]["/users"]["post"]["responses"]


# -- 8. the loop does the work: no thread hops, a bounded number of requests at once ----------


def dependencies(dependant: Dependant) -> Iterator[Dependant]:
    for sub in dependant.dependencies:
        yield sub
        yield from dependencies(sub)


def test_every_dependency_runs_on_the_loop(service_env: None) -> None:
    """FastAPI runs a plain `def` dependency on its threadpool: a thread hop per request."""
    app = create_app()
    on_threads = {
        f"{route.path}: {sub.call.__name__}"
        for route in app.routes
        if isinstance(route, APIRoute)
        for sub in dependencies(route.dependant)
        if sub.call is not None and not inspect.iscoroutinefunction(sub.call)
    }
    assert on_threads == set()


async def test_requests_past_max_in_flight_wait_their_turn(
    service_env: None,
    monkeypatch: pytest.MonkeyPatch,
    docstore_settings: Settings,
    docstore_blob_store: S3BlobStore,
) -> None:
    monkeypatch.setenv("MAX_IN_FLIGHT", "2")
    async with running_service(docstore_settings, docstore_blob_store) as service:
        headers = await service.new_key("crowd@example.com")
        gate = service.app.state.request_gate
        gate.most = 0
        async with service.client() as http:
            answers = await asyncio.gather(
                *(http.get("/documents", headers=headers) for _ in range(12))
            )
    assert [answer.status_code for answer in answers] == [200] * 12
    assert (gate.limit, gate.most, gate.now) == (2, 2, 0)


async def test_a_started_service_freezes_what_startup_made(
    service_env: None,
    monkeypatch: pytest.MonkeyPatch,
    docstore_settings: Settings,
    docstore_blob_store: S3BlobStore,
) -> None:
    """By default (the suite turns it off: tests/conftest.py) the objects alive once the store
    is connected leave the collector's passes, so a full pass no longer scans them all."""
    monkeypatch.delenv("FREEZE_GC")
    assert ServiceSettings().freeze_gc
    before = gc.get_freeze_count()
    try:
        async with running_service(docstore_settings, docstore_blob_store) as service:
            frozen = gc.get_freeze_count()
            store = service.app.state.store
        assert frozen > before
        assert gc.is_tracked(store) and not any(store is o for o in gc.get_objects())
    finally:
        gc.unfreeze()  # the test process goes on collecting as before


async def test_the_suite_runs_its_services_unfrozen(service: Service) -> None:
    assert not ServiceSettings().freeze_gc
    assert gc.get_freeze_count() == 0


async def test_the_default_bound_is_the_connections_the_pool_keeps_open(service: Service) -> None:
    gate = service.app.state.request_gate
    assert gate.limit == service.store.settings.pool_min_size
    async with service.client() as http:
        assert (await http.get("/documents")).status_code == 401
    assert gate.most == 1


async def test_a_client_sending_its_body_slowly_holds_no_place_meanwhile(
    service_env: None,
    monkeypatch: pytest.MonkeyPatch,
    docstore_settings: Settings,
    docstore_blob_store: S3BlobStore,
) -> None:
    # Reading a request's body was part of its turn: with every place held by uploads that
    # trickle in, nothing else was served.
    monkeypatch.setenv("MAX_IN_FLIGHT", "1")
    async with running_service(docstore_settings, docstore_blob_store) as service:
        headers = await service.new_key("trickle@example.com")
        gate = service.app.state.request_gate
        rest = asyncio.Event()

        async def trickling() -> AsyncIterator[bytes]:
            yield part_head("file", "slow.txt") + b"the first words"
            await rest.wait()
            yield b", and the last" + MULTIPART_END

        async with service.client() as http:
            upload = asyncio.ensure_future(
                http.post("/documents", headers={**headers, **MULTIPART}, content=trickling())
            )
            while gate.most == 0:  # the upload is in, waiting on its body
                await asyncio.sleep(0.01)
            listing = await asyncio.wait_for(http.get("/documents", headers=headers), 10)
            assert listing.status_code == 200 and listing.json()["items"] == []
            rest.set()
            uploaded = await upload
        assert uploaded.status_code == 201, uploaded.text
        assert (gate.limit, gate.most, gate.now) == (1, 1, 0)
        assert gate.waits_off_turn == 1
        # A body already received costs no place in line: each part of it went to the back
        # of the line (a large upload waited a full round per 64 KiB under load).
        body = StreamedBody(part_head("file", "whole.txt"), 90_000, MULTIPART_END)  # 3 parts
        async with service.client() as http:
            whole = await http.post("/documents", headers={**headers, **MULTIPART}, content=body)
        assert whole.status_code == 201, whole.text
        assert gate.waits_off_turn == 1


async def test_a_request_behind_the_gate_still_sees_that_its_client_left() -> None:
    # Starlette's is_disconnected() asks receive() under a cancelled scope: the gate's wait
    # for the client was a checkpoint there, cancelled before receive() ran (always False).
    gate = RequestGate()
    gate.open(1)
    seen: list[bool] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(await Request(scope, receive).is_disconnected())

    async def client_gone() -> dict[str, str]:
        return {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        pass

    await InFlightLimit(app, gate)({"type": "http"}, client_gone, send)
    assert seen == [True] and gate.now == 0


async def test_with_redis_down_a_finished_documents_progress_comes_from_postgres(
    service_env: None,
    docstore_settings: Settings,
    docstore_blob_store: S3BlobStore,
    local_redis_factory: Callable[[], LocalRedis],
) -> None:
    server = local_redis_factory()
    own_redis = docstore_settings.redis_url_secret.__class__(server.url)
    settings = docstore_settings.model_copy(update={"redis_url_secret": own_redis})
    async with running_service(settings, docstore_blob_store) as service:
        headers = await service.new_key("progress@example.com")
        async with service.client() as http:
            upload = await http.post(
                "/documents", headers=headers, files={"file": ("a.txt", b"words", "text/plain")}
            )
            document_id = upload.json()["id"]
            assert await service.store.process_next("w", extract_text, block_ms=0)
            server.stop()
            answer = await http.get(f"/documents/{document_id}/progress", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "document_id": document_id,
        "status": "COMPLETED",
        "percent": 100.0,
        "stage": "completed",
    }

"""The example service in a shared deployment: Idempotency-Key on uploads, cancel, and a delete
after which no endpoint (the cache-first GET included) returns the document."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from docstore import AsyncDocstore, Settings
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import extract_text
from examples.fastapi_service import create_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def app(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> AsyncIterator[FastAPI]:
    settings = docstore_settings.model_copy(update={"rate_limit": 1000})
    service = create_app(lambda: AsyncDocstore.connect(settings, blobs=docstore_blob_store))
    async with service.router.lifespan_context(service):
        yield service


@pytest.fixture
async def http(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        created = await client.post("/users", json={"email": "svc@example.com"})
        assert created.status_code == 201, created.text
        client.headers["X-API-Key"] = created.json()["api_key"]
        yield client


def upload(body: bytes, name: str = "a.txt") -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, body, "text/plain")}


async def test_an_upload_retried_with_its_idempotency_key_is_one_document(
    http: httpx.AsyncClient, app: FastAPI
) -> None:
    key = {"Idempotency-Key": "upload-7"}
    first = await http.post("/documents", files=upload(b"hello"), headers=key)
    again = await http.post("/documents", files=upload(b"hello"), headers=key)
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    other = await http.post("/documents", files=upload(b"other bytes"), headers=key)
    assert other.status_code == 409
    listed = await http.get("/documents")
    assert [d["id"] for d in listed.json()["items"]] == [first.json()["id"]]


async def test_cancel_then_finished_documents_answer_409(
    http: httpx.AsyncClient, app: FastAPI
) -> None:
    store: AsyncDocstore = app.state.store
    doc = (await http.post("/documents", files=upload(b"to cancel"))).json()
    cancelled = await http.post(f"/documents/{doc['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELLED"
    progress = await http.get(f"/documents/{doc['id']}/progress")
    assert progress.json()["status"] == "CANCELLED" and progress.json()["percent"] == 100
    done = (await http.post("/documents", files=upload(b"finished"))).json()
    outcome = await store.process_next("w1", extract_text, block_ms=0)
    assert outcome is not None and outcome.document_id == done["id"]
    assert (await http.post(f"/documents/{done['id']}/cancel")).status_code == 409
    assert (await http.post("/documents/999999/cancel")).status_code == 404


async def test_after_delete_no_endpoint_returns_the_document(
    http: httpx.AsyncClient, app: FastAPI
) -> None:
    store: AsyncDocstore = app.state.store
    doc = (await http.post("/documents", files=upload(b"quarterly secret"))).json()
    await store.process_next("w1", extract_text, block_ms=0)
    read = await http.get(f"/documents/{doc['id']}")  # fills the cache
    assert read.json()["result_text"] == "quarterly secret"

    deleted = await http.delete(f"/documents/{doc['id']}")

    assert deleted.status_code == 200 and deleted.json() == {"id": doc["id"], "deleted": True}
    assert (await http.get(f"/documents/{doc['id']}")).status_code == 404
    assert (await http.get(f"/documents/{doc['id']}/progress")).status_code == 404
    assert (await http.get("/documents")).json()["items"] == []
    assert (await http.get("/documents/search", params={"q": "secret"})).json()["items"] == []
    assert (await http.delete(f"/documents/{doc['id']}")).status_code == 404

"""The example service's OpenAPI document tells the truth, for whatever a fuzzer sends.

Every answer is a status the document lists for the operation (never a 5xx, never an undocumented
400), with the documented content type, headers and body schema. Schemathesis generates requests
from the document the running service serves: valid ones (positive) and ones the document refuses
(negative: wrong types, missing or extra fields, odd unicode, bodies that are not the media type);
a hand-made strategy adds raw multipart uploads (broken framing, odd boundaries and part headers,
empty and oversized parts). The service runs under uvicorn, so requests cross a real socket as any
client's would. Runs are deterministic (derandomized Hypothesis) and bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from helpers import serving
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from docstore import AsyncDocstore, Settings
from docstore.intake.blobs import S3BlobStore
from docstore.testing import free_port
from examples.fastapi_service import ServiceSettings, create_app

UPLOAD_LIMIT = 2_000  # small, so generated files cross it
EXAMPLES = 150  # per operation and mode: about a minute for the whole file

# What the document promises about every answer.
CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
OPERATIONS = [
    ("POST", "/users"),
    ("POST", "/documents"),
    ("GET", "/documents"),
    ("GET", "/documents/search"),
    ("GET", "/documents/{document_id}"),
    ("GET", "/documents/{document_id}/progress"),
    ("POST", "/documents/{document_id}/cancel"),
    ("DELETE", "/documents/{document_id}"),
]
# Which key a request carries: mostly the valid one, so requests get past authentication.
CREDENTIALS = st.sampled_from(["valid", "valid", "valid", "none", "unknown"])

FUZZING = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # One service per test, shared by its examples; large generated bodies are the point.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)


class RunningService:
    """The example service on a local port, its OpenAPI document, and one user's key."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()
        document = self.http.get(f"{base_url}/openapi.json", timeout=10).json()
        self.schema = schemathesis.openapi.from_dict(document)
        created = self.http.post(
            f"{base_url}/users", json={"email": "fuzz@example.com"}, timeout=10
        )
        assert created.status_code == 201, created.text
        self.key: str = created.json()["api_key"]

    def headers(self, credentials: str) -> dict[str, str]:
        if credentials == "valid":
            return {"X-API-Key": self.key}
        if credentials == "unknown":
            return {"X-API-Key": "dsk_" + "0" * 43}
        return {}


@pytest.fixture
def service(
    docstore_settings: Settings, docstore_blob_store: S3BlobStore
) -> Iterator[RunningService]:
    # Limits no fuzzing run reaches: a 429 is documented, but it would hide what lies behind.
    store_settings = docstore_settings.model_copy(
        update={"rate_limit": 10**6, "max_upload_bytes": UPLOAD_LIMIT}
    )
    limits = ServiceSettings(ip_rate_limit=10**6, signup_rate_limit=10**6)
    app = create_app(
        lambda: AsyncDocstore.connect(store_settings, blobs=docstore_blob_store), limits
    )
    with serving(app, free_port()) as url:
        running = RunningService(url)
        yield running
        running.http.close()


def test_the_fuzzed_operations_are_all_the_documented_ones(service: RunningService) -> None:
    documented = {
        (operation.method.upper(), operation.path)
        for result in service.schema.get_all_operations()
        for operation in [result.ok()]
    }
    assert documented == set(OPERATIONS)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
@pytest.mark.parametrize(
    ("method", "path"), [pytest.param(*op, id=" ".join(op)) for op in OPERATIONS]
)
def test_every_answer_is_documented_and_matches_its_schema(
    service: RunningService, method: str, path: str, mode: GenerationMode
) -> None:
    operation = service.schema[path][method]
    checks = list(CONFORMANCE)
    if mode is GenerationMode.NEGATIVE and path != "/documents":
        # Requests the document refuses are refused. Not for the upload: the fuzzer sends some
        # of its "negative" forms as one valid `file` part, which is rightly accepted.
        checks.append(negative_data_rejection)
    statuses: set[int] = set()

    @FUZZING
    @given(case=operation.as_strategy(generation_mode=mode), credentials=CREDENTIALS)
    def answers_as_documented(case: schemathesis.Case, credentials: str) -> None:
        response = case.call_and_validate(
            base_url=service.base_url,
            session=service.http,
            headers=service.headers(credentials),
            checks=checks,
            timeout=30,
        )
        statuses.add(response.status_code)

    answers_as_documented()
    # The run went past authentication, not only into the 401 wall.
    assert statuses - {401}, statuses


# -- raw multipart: what no schema-driven generator sends ------------------------------------

BOUNDARY_CHARS = st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters='"')
HEADER_TEXT = st.text(max_size=300)  # any unicode, encoded as UTF-8 in the part headers
# Empty, at the limit, just past it, and past it by more than the multipart framing allowance.
PART_SIZES = st.sampled_from([0, UPLOAD_LIMIT, UPLOAD_LIMIT + 1, 20 * UPLOAD_LIMIT])


@st.composite
def multipart_part(draw: st.DrawFn, boundary: str, name: st.SearchStrategy[str]) -> bytes:
    """One part: odd names and filenames, extra headers, empty to oversized content."""
    disposition = f'form-data; name="{draw(name)}"'
    filename = draw(st.one_of(st.none(), HEADER_TEXT))
    if filename is not None:
        disposition += f'; filename="{filename}"'
    extra = draw(st.lists(st.tuples(HEADER_TEXT, HEADER_TEXT), max_size=2))
    headers = [f"Content-Disposition: {disposition}", *(f"{k}: {v}" for k, v in extra)]
    content = draw(st.one_of(st.binary(max_size=300), st.builds(b"x".__mul__, PART_SIZES)))
    head = "\r\n".join([f"--{boundary}", *headers, "", ""]).encode("utf-8", "surrogatepass")
    return head + content + b"\r\n"


Upload = tuple[str | None, bytes]  # the Content-Type header (None: not sent) and the body


@st.composite
def well_framed_upload(draw: st.DrawFn) -> Upload:
    """A correct form around one part named `file`: its headers and content are the variables."""
    boundary = draw(st.text(BOUNDARY_CHARS, min_size=1, max_size=70))
    part = draw(multipart_part(boundary, st.just("file")))
    return f"multipart/form-data; boundary={boundary}", part + f"--{boundary}--\r\n".encode()


@st.composite
def broken_upload(draw: st.DrawFn) -> Upload:
    """Anything else: other parts, odd or missing boundaries, truncated framing, noise."""
    boundary = draw(st.text(BOUNDARY_CHARS, min_size=1, max_size=70))
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                "multipart/form-data",
                "multipart/form-data; boundary=",
                "multipart/mixed; boundary=x",
                "application/json",
                None,
            ]
        )
    )
    name = st.one_of(st.just("file"), HEADER_TEXT)
    parts = draw(st.lists(multipart_part(boundary, name), max_size=3))
    ending = draw(st.sampled_from([f"--{boundary}--\r\n".encode(), b"", f"--{boundary}".encode()]))
    framed = b"".join(parts) + ending
    body = draw(
        st.one_of(st.just(framed), st.binary(max_size=500), st.just(framed[: len(framed) // 2]))
    )
    return content_type, body


def test_raw_multipart_uploads_get_documented_answers(service: RunningService) -> None:
    operation = service.schema["/documents"]["POST"]

    @FUZZING
    @given(request=st.one_of(well_framed_upload(), broken_upload()), credentials=CREDENTIALS)
    def answers_as_documented(request: Upload, credentials: str) -> None:
        content_type, body = request
        headers: dict[str, Any] = service.headers(credentials)
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = service.http.post(
            f"{service.base_url}/documents", data=body, headers=headers, timeout=30
        )
        case = operation.Case(media_type="multipart/form-data", headers=headers)
        case.validate_response(response, checks=CONFORMANCE)
        statuses.add(response.status_code)

    statuses: set[int] = set()
    answers_as_documented()
    # Accepted, refused as too large, refused as malformed, unauthenticated: all were reached.
    assert {201, 401, 413, 422} <= statuses, statuses

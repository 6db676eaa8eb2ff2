"""A document-processing API on docstore (FastAPI).

Run:  pip install -e ".[examples]"
      docstore schema apply                  (once per database)
      uvicorn examples.fastapi_service:app --port 8000      (settings from the environment)

The service runs on `AsyncDocstore`: every endpoint is `async def` and awaits the store, which is
connected when the app starts (its lifespan) and closed when it stops.

Every route but POST /users (and /metrics, with TELEMETRY=true: keep it for scrapers) needs an
`X-API-Key` header. Three `AsyncRateLimiter` policies
answer 429 with `Retry-After`:

- ``api``: per key, RATE_LIMIT per RATE_LIMIT_PERIOD; every answer carries its RateLimit headers.
- ``ip``: per client address, spent by each request without a valid key (IP_RATE_LIMIT per
  IP_RATE_LIMIT_PERIOD). Once spent, the address is refused before its keys are looked up.
- ``signup``: accounts one address may create (SIGNUP_RATE_LIMIT per SIGNUP_RATE_LIMIT_PERIOD).

A request body is refused with 413 as soon as it passes its limit (MAX_UPLOAD_BYTES for
POST /documents, 16 KiB elsewhere), before the rest is read; a declared Content-Length over the
limit is refused before the body is read at all. Responses use the service's own models (`...Out`):
no blob keys, worker ids or legacy task ids, and a 422 names fields without echoing their values.

A real deployment should also:

- Put POST /users behind an admin token or an invitation flow (it is open here so the example
  can be tried); the signup limit then stays as a second line.
- Take the client address from trusted proxies only: behind a reverse proxy run uvicorn with
  ``--proxy-headers --forwarded-allow-ips=<proxy address>``, so X-Forwarded-For is believed from
  that proxy and nobody else. Without it, every client behind the proxy shares one address.
  uvicorn trusts 127.0.0.1 by default: with no proxy on the host, pass
  ``--forwarded-allow-ips=""`` so that a local client cannot pick its own address.
- Cap body sizes at the proxy too (nginx ``client_max_body_size``).
"""

import asyncio
import gc
import importlib.util
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Annotated, Any, get_args, get_origin

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import FormData, Headers, MutableHeaders, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from docstore import (
    AsyncDocstore,
    AsyncRateLimiter,
    Conflict,
    DocstoreError,
    DocumentResponse,
    DocumentStatus,
    FailurePolicy,
    InvalidInput,
    InvalidTransition,
    LimitCheck,
    NotFound,
    Progress,
    RateLimitResult,
    ServiceUnavailable,
    UserCreate,
    UserResponse,
)
from docstore.models import FINISHED_STATUSES
from docstore.observability import record_queue_state
from docstore.observability import setup as telemetry
from docstore.repositories.api_keys import api_key_digest, is_well_formed

logger = logging.getLogger("examples.fastapi_service")

SMALL_BODY_LIMIT = 16 * 1024  # every route but the upload takes a little JSON at most
FRAMING_ALLOWANCE = 16 * 1024  # multipart boundaries and part headers around the file's bytes


class ServiceSettings(BaseSettings):
    """The service's own limits, from the environment (the store's come from `Settings`)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    ip_rate_limit: int = Field(30, ge=1, description="Requests without a valid key per address.")
    ip_rate_limit_period: float = Field(60.0, gt=0, description="Seconds of IP_RATE_LIMIT.")
    signup_rate_limit: int = Field(5, ge=1, description="Accounts one address may create.")
    signup_rate_limit_period: float = Field(3600.0, gt=0, description="Seconds of the above.")
    max_in_flight: int | None = Field(
        None,
        ge=1,
        description="Requests worked on at once; the others wait their turn. Default: the "
        "connections the store's pool keeps open (POOL_MIN_SIZE; without any, the pool's size).",
    )
    telemetry: bool = Field(
        False, description="OpenTelemetry SDK and /metrics (Prometheus); needs docstore[otel-sdk]."
    )
    freeze_gc: bool = Field(
        True,
        description="Once started, keep what startup made out of the cyclic garbage "
        "collector's passes (`gc.freeze`): its full passes then scan a few thousand objects, "
        "not ~150,000. Off in a process that starts and drops many apps (tests): what was "
        "alive at a freeze is never collected as a cycle.",
    )


# -- what clients see ------------------------------------------------------------------------

_OUT = ConfigDict(from_attributes=True)


class UserOut(BaseModel):
    """A user, as its owner sees it."""

    model_config = _OUT

    id: int
    email: str
    created_at: datetime


class CreatedUserOut(BaseModel):
    """The new user and its API key: shown this once, never again."""

    model_config = _OUT

    user: UserOut
    api_key: str


# Failures whose recorded text is about the client's own file, or says only that the work
# stopped: shown as recorded. Any other (a blob key, a server's address, an extractor's
# internals) is for the log and the operators' `error_message`, not for clients.
CLIENT_FAILURES = ("UnsupportedDocument: ", "Interrupted: ")
HIDDEN_FAILURE = "processing failed on the service's side (the attempt is logged)"


def shown_failure(recorded: str | None) -> str | None:
    """What a client is shown of a document's recorded failure."""
    if recorded is None or recorded.startswith(CLIENT_FAILURES):
        return recorded
    return HIDDEN_FAILURE


class DocumentSummaryOut(BaseModel):
    """A document without its text, as listings show it."""

    model_config = _OUT

    id: int
    filename: str
    status: DocumentStatus
    error_message: str | None
    page_count: int | None
    extraction_time_seconds: float | None
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None

    @field_validator("error_message")
    @classmethod
    def _for_clients(cls, recorded: str | None) -> str | None:
        return shown_failure(recorded)


class DocumentOut(DocumentSummaryOut):
    """A document and its extracted text."""

    result_text: str | None


class DeletedOut(BaseModel):
    """A deleted document: nothing of it is kept (row, bytes, cached copy, progress)."""

    id: int
    deleted: bool = True


class DocumentPageOut(BaseModel):
    """One page of documents, newest first, and the cursor of the next (None on the last)."""

    model_config = _OUT

    items: list[DocumentSummaryOut]
    next_cursor: str | None


class SearchHitOut(DocumentSummaryOut):
    """A matching document; `snippet` wraps matches in <mark></mark> and is not HTML-escaped."""

    rank: float
    snippet: str


class SearchPageOut(BaseModel):
    """One page of search hits, best first, and the cursor of the next."""

    model_config = _OUT

    items: list[SearchHitOut]
    next_cursor: str | None


class ProgressOut(BaseModel):
    """Where a document's processing stands."""

    document_id: int
    status: DocumentStatus
    percent: float
    stage: str


class ErrorOut(BaseModel):
    """Every error but 422: what went wrong, in words."""

    detail: str


class FieldErrorOut(BaseModel):
    """One refused field: where it is and why, never the value sent."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorOut(BaseModel):
    """422: the refused fields."""

    detail: list[FieldErrorOut]


@cache
def shown_fields(model: type[BaseModel]) -> dict[str, Any]:
    """pydantic's `include` for what `model` shows: its fields, and those of the models in them
    (one or a list)."""
    include: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        inner, many = field.annotation, get_origin(field.annotation) is list
        if many:
            (inner,) = get_args(inner)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            include[name] = {"__all__": shown_fields(inner)} if many else shown_fields(inner)
        else:
            include[name] = True
    return include


def with_failures_shown(value: BaseModel) -> BaseModel:
    """`value` (a document, or a page of them), each recorded failure as clients see it
    (`shown_failure`); copied only where that differs."""
    items = value.__dict__.get("items")
    if isinstance(items, list):
        shown = [with_failures_shown(item) for item in items]
        changed = any(a is not b for a, b in zip(shown, items, strict=True))
        return value.model_copy(update={"items": shown}) if changed else value
    recorded = value.__dict__.get("error_message")
    if shown_failure(recorded) == recorded:
        return value
    return value.model_copy(update={"error_message": shown_failure(recorded)})


def shown_as(model: type[BaseModel], value: BaseModel) -> Response:
    """`value`, one of the store's models, as `model` shows it (no blob keys, worker ids,
    internal failures...), serialized by pydantic in one pass. Building a page's 50 `...Out`
    objects first took a tenth of a listing's CPU; the route's `response_model` still
    documents it."""
    body = with_failures_shown(value).model_dump_json(include=shown_fields(model))
    return Response(body, media_type="application/json")


def _error(description: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": description}


Responses = dict[int | str, dict[str, Any]]
INVALID: Responses = {
    422: {"model": ValidationErrorOut, "description": "refused fields (names, never values)"}
}
LIMITED: Responses = {429: _error("rate limited: try again after `Retry-After` seconds")}
UNAVAILABLE: Responses = {503: _error("a server the service depends on is unavailable")}
TOO_LARGE: Responses = {413: _error("the request body is larger than its limit")}
PROTECTED: Responses = {
    401: _error("missing or invalid X-API-Key"),
    **LIMITED,
    **INVALID,
    **UNAVAILABLE,
    **TOO_LARGE,  # a body past 16 KiB is refused on every route, before authentication
}
NOT_FOUND: Responses = {404: _error("no such document among yours")}
IDEMPOTENCY_CONFLICT = "this Idempotency-Key was used for another file"

# The upload form is read by hand (after authentication), so its schema is given here.
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                    "additionalProperties": False,
                }
            }
        },
    }
}


# -- request bodies: refused while they stream -----------------------------------------------


def too_large(limit: int) -> str:
    return f"request body is larger than {limit} bytes"


class BodySizeLimit:
    """ASGI middleware: 413 as soon as a request body passes its limit.

    `limit_for(scope)` gives the limit the answer states and the bytes let through (more for
    an upload: its multipart framing, so the stated limit can be the file's). A declared
    Content-Length over it is answered before the app runs; a body without one is counted as
    the app reads it.
    """

    def __init__(self, app: ASGIApp, limit_for: Callable[[Scope], tuple[int, int]]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, allowed = self.limit_for(scope)
        declared = Headers(scope=scope).get("content-length", "")
        # ASCII digits only ("²" is a digit to str.isdigit), and no int() of thousands of them.
        if (
            declared.isascii()
            and declared.isdigit()
            and (len(declared) > 18 or int(declared) > allowed)
        ):
            response = JSONResponse(ErrorOut(detail=too_large(limit)).model_dump(), 413)
            await response(scope, receive, send)
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > allowed:
                raise HTTPException(413, too_large(limit))
            return message

        await self.app(scope, counting_receive, send)


async def read_upload_form(request: Request) -> FormData:
    """The form, one file part at most: a second part is refused at its headers, unread."""
    try:
        return await request.form(max_files=1, max_fields=0)
    except ClientDisconnect as exc:  # nobody to answer: no 500 and traceback in the log either
        msg = "the client left before sending the whole body"
        raise RequestValidationError(
            [{"loc": ["body"], "msg": msg, "type": "body_incomplete"}]
        ) from exc
    except StarletteHTTPException as exc:
        if exc.status_code != 400:  # e.g. the body limit's 413
            raise
        msg = f"{exc.detail} Send one part: the file, named 'file'."
        raise RequestValidationError(
            [{"loc": ["body"], "msg": msg, "type": "form_invalid"}]
        ) from exc


def only_file_part(form: FormData) -> UploadFile:
    """The form's `file` part; 422 naming any other part."""
    errors = [
        {"loc": ["body", name], "msg": "unexpected form part", "type": "extra_forbidden"}
        for name in sorted(set(form.keys()) - {"file"})
    ]
    upload = form.get("file")
    if isinstance(upload, UploadFile) and not errors:
        return upload
    if not isinstance(upload, UploadFile):
        errors.append({"loc": ["body", "file"], "msg": "a file is required", "type": "missing"})
    raise RequestValidationError(errors)


# -- requests at once ------------------------------------------------------------------------


# How long a request may wait on its client while it holds its place in the gate.
CLIENT_WAIT_IN_TURN = 0.05


class RequestGate:
    """At most `limit` requests worked on at once; the others wait their turn, first come
    first served, before any of their work starts.

    One event loop serving many requests at once interleaves them, and each then costs more
    CPU: a 429 took 0.53 ms of CPU with 16 clients and 0.70 ms with 64, all 64 in flight and
    34 of them waiting inside the pool for one of its 30 connections. Bounded at the
    connections the pool keeps open, every admitted request finds one ready (the sync example
    is bounded by FastAPI's 40 threads). `now` and `most` count the requests in flight.
    """

    def __init__(self) -> None:
        self.limit = 0
        self.now = 0
        self.most = 0
        self.waits_off_turn = 0  # waits on a client that gave the place to another request
        self._slots: asyncio.Semaphore | None = None

    def open(self, limit: int) -> None:
        """Start admitting `limit` requests at once (when the store is connected)."""
        self.limit = limit
        self._slots = asyncio.Semaphore(limit)

    async def enter(self) -> None:
        """Wait for a place (a cancel meanwhile takes none)."""
        if self._slots is not None:
            await self._slots.acquire()
        self.now += 1
        self.most = max(self.most, self.now)

    def leave(self) -> None:
        """Free a place taken by `enter`."""
        self.now -= 1
        if self._slots is not None:
            self._slots.release()

    def turn(self) -> "Turn":
        """One request's place in the gate (taken, given back while it waits on its client)."""
        return Turn(self)


class Turn:
    """A request's place in a `RequestGate`: `take` waits for it, `give_back` frees it (once)."""

    def __init__(self, gate: RequestGate) -> None:
        self.gate = gate
        self.held = False

    async def take(self) -> None:
        await self.gate.enter()
        self.held = True

    def give_back(self) -> bool:
        """Free the place if held; whether it was."""
        if not self.held:
            return False
        self.held = False
        self.gate.leave()
        return True


class EncodedSlashes:
    """ASGI middleware: 404 for a path holding an encoded "/" (``%2F``). The server decodes it
    before routing, so ``/documents/1%2Fprogress`` would reach another route than the one its
    client named (a progress body where a document was asked for)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and b"%2f" in scope.get("raw_path", b"").lower():
            await JSONResponse({"detail": "Not Found"}, status_code=404)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class InFlightLimit:
    """ASGI middleware: every HTTP request passes through `gate` (a `RequestGate`)."""

    def __init__(self, app: ASGIApp, gate: RequestGate) -> None:
        self.app = app
        self.gate = gate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        turn = self.gate.turn()

        async def receive_off_turn() -> Message:
            # Waiting on the client (its body, or its disconnect) is no work: past a short
            # wait the place serves another request, or a client sending slowly would hold
            # it. A part already received comes at once, keeping the place. `receive` is
            # awaited directly: Starlette's `is_disconnected` asks it under a cancelled scope.
            handed_over = False

            def hand_over() -> None:
                nonlocal handed_over
                handed_over = turn.give_back()
                self.gate.waits_off_turn += handed_over

            timer = asyncio.get_running_loop().call_later(CLIENT_WAIT_IN_TURN, hand_over)
            try:
                message = await receive()
            finally:
                timer.cancel()
            if handed_over:  # taken back for the work after (not after an error: it ends)
                await turn.take()
            return message

        await turn.take()
        try:
            await self.app(scope, receive_off_turn, send)
        finally:
            turn.give_back()


# -- rate limits -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Limiters:
    """The service's rate limits, one `AsyncRateLimiter` policy each, on the store's Redis core."""

    api: AsyncRateLimiter  # per API key (`key_limit_name`)
    ip: AsyncRateLimiter  # per client address, spent by requests without a valid key
    signup: AsyncRateLimiter  # per client address, spent by account creation

    @classmethod
    def build(cls, store: AsyncDocstore, service: ServiceSettings) -> "Limiters":
        settings = store.settings
        on_outage = FailurePolicy(settings.rate_limit_failure_policy)
        return cls(
            api=AsyncRateLimiter(
                store.redis_core,
                limit=settings.rate_limit,
                period=settings.rate_limit_period,
                policy="api",
                failure_policy=on_outage,
            ),
            ip=AsyncRateLimiter(
                store.redis_core,
                limit=service.ip_rate_limit,
                period=service.ip_rate_limit_period,
                policy="ip",
                failure_policy=on_outage,
            ),
            # No burst of new accounts while Redis cannot count them.
            signup=AsyncRateLimiter(
                store.redis_core,
                limit=service.signup_rate_limit,
                period=service.signup_rate_limit_period,
                policy="signup",
                failure_policy=FailurePolicy.DENY,
            ),
        )


class RateLimitHeaders:
    """ASGI middleware: every answer, errors too, gets the RateLimit headers of its key.

    `current_user` leaves them in ``request.state.rate_limit_headers``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope.setdefault("state", {})  # shared with every Request made from this scope

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in state.get("rate_limit_headers", {}).items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def route_path(scope: Scope) -> str:
    """The path the app routes on: uvicorn's `path` includes its --root-path (a proxy's
    prefix), which routing leaves out."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


def key_limit_name(api_key: str) -> str:
    """What the `api` limit counts a key under: a digest of it, never the key itself."""
    return "key-" + api_key_digest(api_key)[:16].hex()


def client_address(request: Request) -> str:
    """What the per-address limits count: the TCP peer, or what uvicorn's --proxy-headers took
    from a trusted proxy. An IPv6 peer counts as its /64, which one client usually holds
    whole: 2**64 addresses would otherwise be as many fresh budgets."""
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        # No address (a forwarded header a trusted proxy let through holds anything): one
        # shared budget, never a fresh one per made-up name.
        return "not-an-address"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network((address, 64), strict=False))
    return host


def refuse_if_limited(decision: RateLimitResult) -> None:
    """429 with `Retry-After` and the RateLimit headers when `decision` refuses."""
    if not decision.allowed:
        raise HTTPException(429, "rate limit exceeded", headers=decision.headers())


def only_if_owned(document: DocumentResponse, user: UserResponse) -> DocumentResponse:
    """`document` when `user` owns it, else the NotFound a missing one gets (no probing)."""
    if document.user_id != user.id:
        raise NotFound(f"document {document.id} does not exist")
    return document


# -- the application -------------------------------------------------------------------------


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, routes, models, the store) out of the collector's
    reach, after collecting what is already garbage. They live as long as the process, yet
    each full pass of the collector scanned all of them: at 64 clients ~1 s of CPU per 10 s of
    requests and pauses up to 80 ms, against ~0.3 s and 30 ms once frozen."""
    gc.collect()
    gc.freeze()


def create_app(
    open_store: Callable[[], Awaitable[AsyncDocstore]] | None = None,
    service: ServiceSettings | None = None,
) -> FastAPI:
    """The application; `open_store` connects the AsyncDocstore it serves (default: Settings)."""

    gate = RequestGate()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        # Without settings, connect reads the environment (a bad value: ConfigurationError).
        store = await (open_store() if open_store else AsyncDocstore.connect())
        limits = service or ServiceSettings()
        app.state.store = store
        app.state.limiters = Limiters.build(store, limits)
        app.state.telemetry = limits.telemetry
        pool = store.settings
        gate.open(limits.max_in_flight or pool.pool_min_size or pool.pool_max_size)
        if limits.telemetry:
            telemetry.configure("docstore-example")  # traces, and metrics at /metrics
        if limits.freeze_gc:
            freeze_startup_objects()
        try:
            yield
        finally:
            await store.close()

    # No redirect for a trailing "/": its Location would be built from the client's Host header.
    app = FastAPI(title="docstore example service", lifespan=lifespan, redirect_slashes=False)
    app.state.request_gate = gate

    async def get_store(request: Request) -> AsyncDocstore:
        """The store, handed out like the old design's `get_db`.

        `async def` although it awaits nothing: FastAPI runs a plain `def` dependency on its
        threadpool, which costs every request a hop to a thread and back."""
        store: AsyncDocstore = request.app.state.store
        return store

    StoreDep = Annotated[AsyncDocstore, Depends(get_store)]

    async def current_user(
        request: Request,
        store: StoreDep,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> UserResponse:
        """The user owning `X-API-Key`, after the address and per-key rate limits."""
        limiters: Limiters = request.app.state.limiters
        address = client_address(request)
        user = None
        if x_api_key is not None and is_well_formed(x_api_key):
            # An address that keeps failing, and a key past its limit, are refused before the
            # key costs a database lookup; both limits are asked in one round trip. (A key sent
            # from a refused address still spends a unit: the two keys may sit on two cluster
            # nodes, so no script can make one depend on the other.)
            address_turn, key_turn = await AsyncRateLimiter.decide_together(
                [
                    LimitCheck(limiters.ip, address, consume=False),
                    LimitCheck(limiters.api, key_limit_name(x_api_key)),
                ]
            )
            refuse_if_limited(address_turn)
            refuse_if_limited(key_turn)
            # The key's unit is spent: its headers go on every answer, a 503 too.
            request.state.rate_limit_headers = key_turn.headers()
            user = await store.users.authenticate(x_api_key)
            if user is None:
                del request.state.rate_limit_headers  # an unknown key's 401 shows no budget
        else:
            refuse_if_limited(await limiters.ip.peek(address))
        if user is None:
            refuse_if_limited(await limiters.ip.hit(address))
            raise HTTPException(401, "missing or invalid X-API-Key")
        return user

    UserDep = Annotated[UserResponse, Depends(current_user)]

    app.add_middleware(RateLimitHeaders)

    def body_limit(scope: Scope) -> tuple[int, int]:
        """The limit an answer states, and the bytes let through."""
        if scope["method"] == "POST" and route_path(scope) == "/documents":
            limit: int = app.state.store.settings.max_upload_bytes
            return limit, limit + FRAMING_ALLOWANCE
        return SMALL_BODY_LIMIT, SMALL_BODY_LIMIT

    app.add_middleware(BodySizeLimit, limit_for=body_limit)
    # Outside the others (tracing aside): a request waiting its turn has done no work yet.
    app.add_middleware(InFlightLimit, gate=gate)
    app.add_middleware(EncodedSlashes)
    if importlib.util.find_spec("fastapi.telemetry") is None:
        # FastAPI from 0.165 makes each request a SERVER span itself; older ones get ours
        # (outermost; a pass-through while nothing is traced).
        app.add_middleware(telemetry.TracingMiddleware)

    @app.exception_handler(RequestValidationError)
    async def validation_failed(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming the fields and why; FastAPI's own answer would echo the values sent."""
        fields = [
            FieldErrorOut(loc=list(error["loc"]), msg=error["msg"], type=error["type"])
            for error in exc.errors()
        ]
        return JSONResponse(ValidationErrorOut(detail=fields).model_dump(), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        """FastAPI answers a body it cannot parse at all (JSON that is not UTF-8, say) with 400,
        a status outside the contract: it is refused input like any other, so 422."""
        if exc.status_code == 400:
            field = FieldErrorOut(loc=["body"], msg="unreadable body", type="body_invalid")
            return JSONResponse(ValidationErrorOut(detail=[field]).model_dump(), status_code=422)
        return await http_exception_handler(request, exc)

    @app.exception_handler(InvalidInput)
    async def invalid_input(request: Request, exc: InvalidInput) -> JSONResponse:
        field = FieldErrorOut(loc=[exc.field] if exc.field else [], msg=exc.message, type="invalid")
        return JSONResponse(ValidationErrorOut(detail=[field]).model_dump(), status_code=422)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse(ErrorOut(detail=exc.message).model_dump(), status_code=404)

    @app.exception_handler(ServiceUnavailable)
    async def unavailable(request: Request, exc: ServiceUnavailable) -> JSONResponse:
        # The message names the server's address: for the log, not for clients.
        logger.warning("503: %s", exc.message)
        detail = "a server the service depends on is unavailable; try again later"
        return JSONResponse(ErrorOut(detail=detail).model_dump(), status_code=503)

    @app.exception_handler(DocstoreError)
    async def refused(request: Request, exc: DocstoreError) -> JSONResponse:
        """Any other store error (Redis refusing a command, a blob store refusing a call, a
        database error): the documented 503, with the cause in the log, not in the answer."""
        logger.error("503: %s: %s", type(exc).__name__, exc.message)
        detail = "a server the service depends on refused the request; try again later"
        return JSONResponse(ErrorOut(detail=detail).model_dump(), status_code=503)

    async def owned_document(
        store: AsyncDocstore, user: UserResponse, document_id: int
    ) -> DocumentResponse:
        return only_if_owned(await store.documents.get(document_id), user)

    @app.post(
        "/users",
        status_code=201,
        responses={
            409: _error("a user with this email exists"),
            **TOO_LARGE,
            **LIMITED,
            **INVALID,
            **UNAVAILABLE,
        },
    )
    async def create_user(body: UserCreate, request: Request, store: StoreDep) -> CreatedUserOut:
        """Create a user and its API key (open here; see the module docstring for deployments)."""
        limiters: Limiters = request.app.state.limiters
        refuse_if_limited(await limiters.signup.hit(client_address(request)))
        try:
            created = await store.users.create(body)
        except Conflict as exc:
            raise HTTPException(409, "a user with this email exists") from exc
        return CreatedUserOut(user=UserOut.model_validate(created.user), api_key=created.api_key)

    async def submit(
        store: AsyncDocstore, user: UserResponse, upload: UploadFile, idempotency_key: str | None
    ) -> DocumentResponse:
        try:
            # The store reads the spooled file on a thread: the loop is not blocked.
            return await store.submit_document(
                user, upload.filename or "upload", upload.file, idempotency_key=idempotency_key
            )
        except InvalidInput as exc:
            if exc.field == "data":  # the file ran past MAX_UPLOAD_BYTES
                raise HTTPException(413, exc.message) from exc
            raise
        except Conflict as exc:
            raise HTTPException(409, IDEMPOTENCY_CONFLICT) from exc

    @app.post(
        "/documents",
        status_code=201,
        responses={**PROTECTED, **TOO_LARGE, 409: _error(IDEMPOTENCY_CONFLICT)},
        openapi_extra=UPLOAD_BODY,
    )
    async def upload_document(
        request: Request,
        user: UserDep,
        store: StoreDep,
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
        ] = None,
    ) -> DocumentOut:
        """Upload one file, the multipart part `file`; a worker processes it later.

        A retry with the same `Idempotency-Key` and the same file returns the first document.
        """
        # Read here rather than as a File() parameter, which FastAPI would read before
        # authentication.
        form = await read_upload_form(request)
        try:
            upload = only_file_part(form)
            limit = store.settings.max_upload_bytes
            if upload.size is not None and upload.size > limit:
                raise HTTPException(413, too_large(limit))
            document = await submit(store, user, upload, idempotency_key)
        finally:
            await form.close()
        return DocumentOut.model_validate(document)

    @app.get("/documents", responses=PROTECTED, response_model=DocumentPageOut)
    async def list_documents(
        user: UserDep,
        store: StoreDep,
        status: DocumentStatus | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> Response:
        page = await store.documents.list_for_user(
            user.id, status=status, limit=limit, cursor=cursor
        )
        return shown_as(DocumentPageOut, page)

    @app.get("/documents/search", responses=PROTECTED, response_model=SearchPageOut)
    async def search_documents(
        user: UserDep,
        store: StoreDep,
        q: Annotated[str, Query(min_length=1, max_length=1000)],
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> Response:
        hits = await store.documents.search(user.id, q, limit=limit, cursor=cursor)
        return shown_as(SearchPageOut, hits)

    @app.get(
        "/documents/{document_id}",
        responses={**PROTECTED, **NOT_FOUND},
        response_model=DocumentOut,
    )
    async def get_document(document_id: int, user: UserDep, store: StoreDep) -> Response:
        # Cache first; the store drops a cached copy once any change to it is committed.
        document = only_if_owned(await store.get_document(document_id), user)
        return shown_as(DocumentOut, document)

    @app.post(
        "/documents/{document_id}/cancel",
        responses={**PROTECTED, **NOT_FOUND, 409: _error("the document is already finished")},
    )
    async def cancel_document(document_id: int, user: UserDep, store: StoreDep) -> DocumentOut:
        """Cancel the document: never processed, or stopped at its worker's next report."""
        await owned_document(store, user, document_id)
        try:
            return DocumentOut.model_validate(await store.cancel_document(document_id))
        except InvalidTransition as exc:
            raise HTTPException(409, "the document is already finished") from exc

    @app.delete("/documents/{document_id}", responses={**PROTECTED, **NOT_FOUND})
    async def delete_document(document_id: int, user: UserDep, store: StoreDep) -> DeletedOut:
        """Delete the document: its row, bytes, cached copy and progress."""
        await owned_document(store, user, document_id)
        await store.delete_document(document_id)
        return DeletedOut(id=document_id)

    @app.get("/documents/{document_id}/progress", responses={**PROTECTED, **NOT_FOUND})
    async def get_progress(document_id: int, user: UserDep, store: StoreDep) -> ProgressOut:
        document = await owned_document(store, user, document_id)
        if document.status in FINISHED_STATUSES:  # PostgreSQL alone answers: no Redis needed
            return ProgressOut(
                document_id=document_id,
                status=document.status,
                percent=100.0,
                stage=document.status.lower(),
            )
        progress: Progress | None = await store.progress.get(document_id)
        return ProgressOut(
            document_id=document_id,
            status=document.status,
            percent=progress.percent if progress else 0.0,
            stage=progress.stage if progress else document.status.lower(),
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics(request: Request, store: StoreDep) -> Response:
        """Every metric in the Prometheus text format (with TELEMETRY=true), queue gauges fresh.
        It needs no key, as scrapers expect: keep it off the public network (a proxy rule)."""
        if not request.app.state.telemetry:
            raise HTTPException(404, "Not Found")  # nothing to serve, and no Redis work done
        stats = await store.queue.stats()
        oldest = await store.queue.oldest_enqueued_at()
        record_queue_state(
            store.queue.stream, stats.length, stats.pending, stats.dead_letters, oldest
        )
        return Response(telemetry.prometheus_text(), media_type=telemetry.PROMETHEUS_CONTENT_TYPE)

    return app


app = create_app()

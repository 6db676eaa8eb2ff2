"""A document-processing API on docstore (FastAPI).

Run:  pip install -e ".[examples]"
      uvicorn examples.fastapi_service:app --port 8000      (settings from the environment)

Every route but POST /users needs an `X-API-Key` header; each key is rate limited and every
answer carries the limiter's `RateLimit` headers (429 with `Retry-After` when refused).
"""

from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Header, HTTPException, Query, Request, UploadFile
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from docstore import (
    Conflict,
    Docstore,
    DocumentListResponse,
    DocumentResponse,
    DocumentStatus,
    InvalidInput,
    NotFound,
    Progress,
    RateLimiter,
    SearchResponse,
    ServiceUnavailable,
    Settings,
    UserCreate,
    UserResponse,
)


class CreatedUser(BaseModel):
    """The new user and its API key: shown this once, never again."""

    user: UserResponse
    api_key: str


class ProgressResponse(BaseModel):
    """Where a document's processing stands."""

    document_id: int
    status: DocumentStatus
    percent: float
    stage: str


def create_app(open_store: Callable[[], Docstore] | None = None) -> FastAPI:
    """The application; `open_store` makes the Docstore it serves (default: from Settings)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        store = open_store() if open_store else Docstore.connect(Settings())
        app.state.store = store
        app.state.limiter = RateLimiter(
            store.redis,
            limit=store.settings.rate_limit,
            period=store.settings.rate_limit_period,
            policy="api",
        )
        try:
            yield
        finally:
            store.close()

    app = FastAPI(title="docstore example service", lifespan=lifespan)

    def get_store(request: Request) -> Docstore:
        """The store, handed out like the old design's `get_db`."""
        store: Docstore = request.app.state.store
        return store

    StoreDep = Annotated[Docstore, Depends(get_store)]

    def current_user(
        request: Request,
        store: StoreDep,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> UserResponse:
        """The user owning `X-API-Key`, after the per-key rate limit."""
        user = store.users.authenticate(x_api_key) if x_api_key else None
        if user is None:
            raise HTTPException(401, "missing or invalid X-API-Key")
        decision = request.app.state.limiter.hit(f"user-{user.id}")
        request.state.rate_limit_headers = decision.headers()
        if not decision.allowed:
            raise HTTPException(429, "rate limit exceeded", headers=decision.headers())
        return user

    UserDep = Annotated[UserResponse, Depends(current_user)]

    @app.middleware("http")
    async def rate_limit_headers(request: Request, call_next: Any) -> Any:
        response = await call_next(request)
        for name, value in getattr(request.state, "rate_limit_headers", {}).items():
            response.headers.setdefault(name, value)
        return response

    def error(status: int) -> Callable[[Request, Exception], JSONResponse]:
        def handler(request: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc)}, status_code=status)

        return handler

    app.add_exception_handler(InvalidInput, error(422))
    app.add_exception_handler(NotFound, error(404))
    app.add_exception_handler(Conflict, error(409))
    app.add_exception_handler(ServiceUnavailable, error(503))

    def owned_document(store: Docstore, user: UserResponse, document_id: int) -> DocumentResponse:
        document = store.documents.get(document_id)
        if document.user_id != user.id:  # same answer as a missing one: no probing
            raise NotFound(f"document {document_id} does not exist")
        return document

    @app.post("/users", status_code=201)
    def create_user(body: UserCreate, store: StoreDep) -> CreatedUser:
        created = store.users.create(body)
        return CreatedUser(user=created.user, api_key=created.api_key)

    @app.post("/documents", status_code=201)
    def upload_document(
        user: UserDep, store: StoreDep, file: Annotated[UploadFile, File()]
    ) -> DocumentResponse:
        limit = store.settings.max_upload_bytes
        if file.size is not None and file.size > limit:
            raise HTTPException(413, f"upload is larger than {limit} bytes")
        try:
            return store.submit_document(user, file.filename or "upload", file.file)
        except InvalidInput as exc:
            if exc.field == "data":
                raise HTTPException(413, str(exc)) from exc
            raise

    @app.get("/documents")
    def list_documents(
        user: UserDep,
        store: StoreDep,
        status: DocumentStatus | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=200)] = 50,
    ) -> DocumentListResponse:
        return store.documents.list_for_user(user.id, status=status, limit=limit, cursor=cursor)

    @app.get("/documents/search")
    def search_documents(
        user: UserDep,
        store: StoreDep,
        q: Annotated[str, Query(min_length=1, max_length=1000)],
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> SearchResponse:
        return store.documents.search(user.id, q, limit=limit, cursor=cursor)

    @app.get("/documents/{document_id}")
    def get_document(document_id: int, user: UserDep, store: StoreDep) -> DocumentResponse:
        cached = store.cache.get_document_result(document_id, DocumentResponse)
        if cached is not None and cached.user_id == user.id:
            return cached
        return owned_document(store, user, document_id)

    @app.get("/documents/{document_id}/progress")
    def get_progress(document_id: int, user: UserDep, store: StoreDep) -> ProgressResponse:
        document = owned_document(store, user, document_id)
        progress: Progress | None = store.progress.get(document_id)
        done = document.status in ("COMPLETED", "FAILED")
        return ProgressResponse(
            document_id=document_id,
            status=document.status,
            percent=100.0 if done else (progress.percent if progress else 0.0),
            stage=progress.stage if progress else document.status.lower(),
        )

    return app


app = create_app()

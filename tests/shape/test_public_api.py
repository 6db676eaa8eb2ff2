"""The public API: every type a public method takes, returns or raises comes from `docstore`."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator

import docstore
from docstore import (
    AsyncDocstore,
    AsyncDocumentLifecycle,
    AsyncDocumentRepo,
    AsyncProgressTracker,
    AsyncRateLimiter,
    AsyncRedisCache,
    AsyncTaskQueue,
    AsyncUserRepo,
    Docstore,
    DocumentLifecycle,
    DocumentRepo,
    LocalBlobStore,
    ProgressTracker,
    RateLimiter,
    RedisCache,
    S3BlobStore,
    TaskQueue,
    UserRepo,
)
from docstore.errors import DocstoreError

PUBLIC_CLASSES = (
    Docstore,
    AsyncDocstore,
    AsyncUserRepo,
    AsyncDocumentRepo,
    AsyncDocumentLifecycle,
    AsyncRedisCache,
    AsyncRateLimiter,
    AsyncTaskQueue,
    AsyncProgressTracker,
    UserRepo,
    DocumentRepo,
    DocumentLifecycle,
    RedisCache,
    RateLimiter,
    TaskQueue,
    ProgressTracker,
    LocalBlobStore,
    S3BlobStore,
)


def _docstore_types(hint: object) -> Iterator[type]:
    """docstore's own classes inside a type hint (through unions, generics and callables)."""
    if isinstance(hint, type) and hint.__module__.startswith("docstore"):
        yield hint
    for arg in typing.get_args(hint):
        yield from _docstore_types(arg)


def _public_methods(cls: type) -> Iterator[tuple[str, typing.Any]]:
    """Methods, and properties' getters (`store.blobs`)."""
    for name, member in inspect.getmembers(cls):
        if name.startswith("_") and name not in ("__init__", "__enter__"):
            continue
        if inspect.isfunction(member) or inspect.ismethod(member):
            yield name, member
        elif isinstance(member, property) and member.fget is not None:
            yield name, member.fget


def test_every_type_in_a_public_signature_is_exported() -> None:
    exported = {getattr(docstore, name) for name in docstore.__all__}
    seen: set[str] = set()
    missing: set[str] = set()
    for cls in PUBLIC_CLASSES:
        for name, method in _public_methods(cls):
            for hint in typing.get_type_hints(method).values():
                for found in _docstore_types(hint):
                    seen.add(found.__name__)
                    if found not in exported:
                        missing.add(f"{found.__name__} (in {cls.__name__}.{name})")
    assert missing == set()
    # The scan reads real signatures (so this test can fail).
    assert {"Outcome", "StuckReport", "HealthReport", "DocumentResponse"} <= seen


def test_every_docstore_error_is_exported() -> None:
    def subclasses(cls: type) -> Iterator[type]:
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    errors = {DocstoreError, *subclasses(DocstoreError)}
    assert {e.__name__ for e in errors} - set(docstore.__all__) == set()
    assert len(errors) >= 10


def test_nothing_private_is_exported() -> None:
    names = [name for name in docstore.__all__ if name != "__version__"]
    assert [name for name in names if name.startswith("_")] == []
    for name in names:
        value = getattr(docstore, name)
        module = getattr(value, "__module__", "docstore")
        if isinstance(value, type):  # defined in a public docstore module
            assert module.startswith("docstore"), name
            assert not any(part.startswith("_") for part in module.split(".")), name


def test_the_store_has_one_way_to_run_the_document_flow() -> None:
    # submit_document / process_next / requeue_stuck are the store's; no public `intake` beside.
    public = {name for name, _ in inspect.getmembers(Docstore) if not name.startswith("_")}
    assert {"submit_document", "process_next", "requeue_stuck"} <= public
    assert "intake" not in public and "intake" not in vars(Docstore.__init__)

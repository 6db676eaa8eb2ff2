"""Hostile input to the PostgreSQL repositories (property-based, with hypothesis).

Every text field and key of `store.users` and `store.documents` gets arbitrary unicode (NUL,
lone surrogates, right-to-left marks, 1 MB strings), SQL fragments and Lua-looking strings; every
number gets negatives, values beyond int64, NaN/inf, bools and strings. The property: each call
either stores the value exactly (NUL bytes stripped, as the README says) and reads it back
identical, or raises a typed `InvalidInput` (`NotFound`, `Conflict`, `InvalidTransition` where
that is the meaning). A raw driver error (psycopg, pydantic, UnicodeEncodeError, TypeError, ...)
fails the test, and every call is checked to leave every other row of the database untouched.

Each test opens one store and runs its property inside (a nested `@given`), so a database is
created once per test, not once per example. The strategies are in `tests/hostile.py`,
shared by the other `test_hostile_*.py` files.
"""

from __future__ import annotations

import base64
import json
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import psycopg_pool
import pytest
import redis
import redis.asyncio
from hostile import (
    BIG_HOSTILE,
    BIG_PLAIN,
    BIG_SURROGATE,
    assert_only_changed,
    attempt,
    encodable,
    hostile_number,
    hostile_text,
    mostly,
    property_settings,
    snapshot,
    stored_form,
)
from hypothesis import example, given
from hypothesis import strategies as st
from sides import Side, side_fixture, side_store_fixture  # noqa: F401 (fixtures)

from docstore import Docstore, Settings
from docstore.ephemeral.rate_limit import RateLimiter
from docstore.errors import Conflict, InvalidInput, InvalidTransition, NotFound
from docstore.models import DocumentCreate, UserCreate, UserResponse
from docstore.redis.client import new_redis

T = TypeVar("T")


@dataclass
class World:
    """An owner to act as, and a bystander whose rows must never change."""

    owner: UserResponse
    owner_key: str
    bystander: UserResponse
    bystander_documents: list[int]


def seed(store: Docstore) -> World:
    """Two users; the bystander has a PROCESSING, a COMPLETED and a FAILED document (none
    PENDING, so `claim_next` can only take what a test creates)."""
    owner = store.users.create({"email": "owner@example.com"})  # type: ignore[arg-type]
    bystander = store.users.create({"email": "bystander@example.com"})  # type: ignore[arg-type]
    docs = store.documents.create_many(
        [
            {"user_id": bystander.user.id, "filename": f"b{i}.pdf", "s3_key": f"uploads/b{i}"}
            for i in range(3)
        ]  # type: ignore[misc]
    )
    for i, doc in enumerate(docs):
        store.lifecycle.claim(doc.id, "bystander-worker", lease_seconds=3600)
        if i == 1:
            store.lifecycle.mark_completed(doc.id, "bystander-worker", "bystander words", 1, 0.5)
        elif i == 2:
            store.lifecycle.mark_failed(doc.id, "bystander-worker", "bystander error", retry=False)
    return World(owner.user, owner.api_key, bystander.user, [d.id for d in docs])


# -- users -------------------------------------------------------------------------------------

nonempty_text = hostile_text.filter(bool)
emails = st.one_of(
    hostile_text,
    st.builds(lambda a, b, c: f"{a}@{b}.{c}", nonempty_text, nonempty_text, nonempty_text),
    st.builds(lambda a: f"{a}@example.com", nonempty_text),
)


def test_user_emails_are_stored_exactly_or_refused(side_store: Docstore) -> None:
    store = side_store
    seed(store)
    tally: Counter[str] = Counter()

    @property_settings(75)
    @given(email=emails, new_email=emails)
    @example(email=BIG_PLAIN + "@example.com", new_email="ok@example.com")
    @example(email="a\x00b@example.com", new_email=BIG_SURROGATE)
    @example(email="'; DROP TABLE users; --@x.io", new_email="%(email)s@x.io")
    @example(email="\u202eevil@example.com", new_email="a@b.c\ud800")
    def check(email: str, new_email: str) -> None:
        before = snapshot(store)
        created, error = attempt(
            lambda: store.users.create({"email": email}), InvalidInput, Conflict
        )
        if created is None:
            tally["refused"] += 1
            assert stored_form(email) is not None or isinstance(error, InvalidInput)
            assert_only_changed(before, store)
        else:
            tally["stored"] += 1
            user_id = created.user.id
            expected = stored_form(email)
            assert expected is not None
            assert created.user.email == expected.strip()
            assert store.users.get(user_id).email == expected.strip()
            found = store.users.get_by_email(expected.strip())
            assert found is not None and found.id == user_id
            assert store.users.authenticate(created.api_key).id == user_id  # type: ignore[union-attr]
            assert_only_changed(before, store, users={user_id})
            before = snapshot(store)
            changes = {"email": new_email}
            updated, _ = attempt(
                lambda: store.users.update(user_id, changes), InvalidInput, Conflict
            )
            if updated is None:
                assert_only_changed(before, store)
            else:
                new_expected = stored_form(new_email)
                assert new_expected is not None
                assert updated.email == new_expected.strip()
                assert store.users.get(user_id).email == new_expected.strip()
                assert_only_changed(before, store, users={user_id})
        # A lookup never changes anything and never raises anything but InvalidInput.
        before = snapshot(store)
        found, error = attempt(lambda: store.users.get_by_email(email))
        if not encodable(email):
            assert isinstance(error, InvalidInput)
        assert_only_changed(before, store)

    check()
    assert tally["stored"] >= 5 and tally["refused"] >= 5, tally


api_key_variants = st.one_of(
    hostile_text,
    st.builds(lambda prefix, piece: ("dsk_" + prefix)[:50] + piece, hostile_text, hostile_text),
)
cursor_payloads = st.fixed_dictionaries(
    {
        "kind": st.one_of(st.sampled_from(["users", "documents", "search"]), hostile_text),
        "id": hostile_number,
        "created_at": st.one_of(
            st.sampled_from(
                [
                    "2024-01-01T00:00:00+00:00",
                    "0001-01-01T00:00:00+23:59",
                    "9999-12-31T23:59:59-23:59",
                    "2024-01-01T00:00:00",
                ]
            ),
            hostile_text,
        ),
        "rank": hostile_number,
    }
)


def _encode_payload(payload: dict[str, Any], drop: list[str]) -> str:
    data = {k: v for k, v in payload.items() if k not in drop}
    raw = json.dumps(data, allow_nan=True).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


hostile_cursors = st.one_of(
    st.none(),
    hostile_text,
    hostile_number,
    st.builds(
        _encode_payload,
        cursor_payloads,
        st.lists(st.sampled_from(["kind", "id", "created_at", "rank"]), max_size=2),
    ),
)


def test_keys_cursors_ids_and_limits_never_reach_the_driver_raw(side_store: Docstore) -> None:
    store = side_store
    world = seed(store)
    existing_users = {world.owner.id, world.bystander.id}
    existing_documents = set(world.bystander_documents)
    tally: Counter[str] = Counter()

    @property_settings(75)
    @given(
        key=api_key_variants,
        number=hostile_number,
        limit=st.one_of(st.just(2), hostile_number),
        cursor=hostile_cursors,
    )
    @example(key=BIG_HOSTILE, number=10**400, limit=float("nan"), cursor=BIG_PLAIN)
    def check(key: Any, number: Any, limit: Any, cursor: Any) -> None:
        before = snapshot(store)
        assert store.users.authenticate(key) is None
        _, error = attempt(lambda: store.users.list(limit=limit, cursor=cursor))
        tally["pages" if error is None else "refused"] += 1
        for call in (
            lambda: store.users.get(number),
            lambda: store.users.get_with_documents(number),
            lambda: store.users.get_with_documents(world.owner.id, documents_limit=limit),
            lambda: store.documents.get(number),
            lambda: store.documents.get_with_user(number),
            lambda: store.documents.count_by_status(number),
            lambda: store.lifecycle.requeue_expired(limit=limit),
        ):
            attempt(call, InvalidInput, NotFound)
        if number not in existing_users:
            for call in (
                lambda: store.users.delete(number),
                lambda: store.users.rotate_api_key(number),
                lambda: store.users.revoke_api_key(number),
                lambda: store.users.update(number, {"email": "new@example.com"}),
            ):
                _, error = attempt(call, InvalidInput, NotFound)
                assert error is not None
        if number not in existing_documents:
            for call in (
                lambda: store.documents.delete(number),
                lambda: store.documents.update(number, {"filename": "x.pdf"}),
                lambda: store.lifecycle.claim(number, "w"),
                lambda: store.lifecycle.heartbeat(number, "w"),
                lambda: store.lifecycle.mark_completed(number, "w", "text"),
                lambda: store.lifecycle.mark_failed(number, "w", "error"),
            ):
                _, error = attempt(call, InvalidInput, NotFound)
                assert error is not None
        assert_only_changed(before, store)

    check()
    assert store.users.authenticate(world.owner_key) is not None  # the real key still works
    assert tally["pages"] >= 1 and tally["refused"] >= 10, tally


# -- documents ---------------------------------------------------------------------------------

task_ids = st.one_of(st.none(), hostile_text)
attempt_counts = mostly(st.integers(min_value=1, max_value=100), hostile_number)


def _check_stored_document(store: Docstore, document: Any, fields: dict[str, Any]) -> None:
    for name in ("filename", "s3_key", "legacy_task_id"):
        value = fields.get(name)
        expected = None if value is None else stored_form(value)
        assert getattr(document, name) == expected, name
    assert document.max_attempts == fields.get("max_attempts", 3)
    assert document.status == "PENDING"
    again = store.documents.get(document.id)
    assert again == document
    if document.legacy_task_id is not None:
        by_task = store.documents.get_by_task_id(document.legacy_task_id)
        assert by_task is not None and by_task.id == document.id


@st.composite
def document_fields(draw: st.DrawFn, user_id: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "user_id": draw(mostly(st.just(user_id), hostile_number)),
        # Mostly non-empty, so hostile content is stored (and read back) as often as refused.
        "filename": draw(mostly(nonempty_text, hostile_text)),
        "s3_key": draw(mostly(nonempty_text, hostile_text)),
    }
    task = draw(task_ids)
    if task is not None:
        fields["legacy_task_id"] = task
    if draw(st.booleans()):
        fields["max_attempts"] = draw(attempt_counts)
    return fields


def test_documents_are_stored_exactly_or_refused(side_store: Docstore) -> None:
    store = side_store
    world = seed(store)
    tally: Counter[str] = Counter()
    owner = world.owner.id

    @property_settings(75)
    @given(fields=document_fields(owner), new_filename=hostile_text, lookup=hostile_text)
    @example(
        fields={"user_id": owner, "filename": BIG_PLAIN, "s3_key": "k"},
        new_filename="ok.pdf",
        lookup=BIG_PLAIN,
    )
    @example(
        fields={"user_id": owner, "filename": "a\x00.pdf", "s3_key": BIG_HOSTILE},
        new_filename=BIG_SURROGATE,
        lookup=BIG_SURROGATE,
    )
    @example(
        fields={"user_id": owner, "filename": "\u202efdp.exe", "s3_key": "%(s3_key)s"},
        new_filename="'; DROP TABLE documents; --",
        lookup="$1",
    )
    @example(
        fields={"user_id": True, "filename": "a", "s3_key": "b", "max_attempts": True},
        new_filename="",
        lookup="",
    )
    def check(fields: dict[str, Any], new_filename: str, lookup: str) -> None:
        before = snapshot(store)
        created, error = attempt(lambda: store.documents.create(fields), InvalidInput, Conflict)
        if created is None:
            tally["refused"] += 1
            texts = [v for k, v in fields.items() if isinstance(v, str)]
            if not all(encodable(t) for t in texts):
                assert isinstance(error, InvalidInput)
            assert_only_changed(before, store)
        else:
            tally["stored"] += 1
            assert created.user_id == fields["user_id"]  # the owner, or another real user
            _check_stored_document(store, created, fields)
            assert_only_changed(before, store, documents={created.id})
            before = snapshot(store)
            changes = {"filename": new_filename}
            updated, _ = attempt(lambda: store.documents.update(created.id, changes))
            if updated is None:
                assert_only_changed(before, store)
            else:
                assert updated.filename == stored_form(new_filename)
                assert store.documents.get(created.id).filename == stored_form(new_filename)
                assert_only_changed(before, store, documents={created.id})
        before = snapshot(store)
        found, error = attempt(lambda: store.documents.get_by_task_id(lookup))
        if error is None and found is not None:
            assert found.legacy_task_id == stored_form(lookup)
        if not encodable(lookup):
            assert isinstance(error, InvalidInput)
        assert_only_changed(before, store)

    check()
    assert tally["stored"] >= 5 and tally["refused"] >= 5, tally


def test_create_many_stores_every_item_exactly_or_nothing(side_store: Docstore) -> None:
    store = side_store
    world = seed(store)
    owner = world.owner.id
    tally: Counter[str] = Counter()

    valid_items = st.fixed_dictionaries(
        {"user_id": st.just(owner), "filename": nonempty_text, "s3_key": nonempty_text}
    )

    @property_settings(50)
    @given(
        items=mostly(
            st.lists(valid_items, min_size=1, max_size=4),
            st.lists(document_fields(owner), max_size=4),
        )
    )
    def check(items: list[dict[str, Any]]) -> None:
        before = snapshot(store)
        created, _ = attempt(lambda: store.documents.create_many(items), InvalidInput, Conflict)
        if created is None:
            tally["refused"] += 1
            assert_only_changed(before, store)
            return
        tally["stored"] += 1
        assert len(created) == len(items)
        for document, fields in zip(created, items, strict=True):
            _check_stored_document(store, document, fields)
        assert_only_changed(before, store, documents={d.id for d in created})

    check()
    for bad in (None, 42, "abc", [None], [{"user_id": owner}], [b"\xff"]):
        before = snapshot(store)
        _, error = attempt(lambda: store.documents.create_many(bad))  # noqa: B023
        assert isinstance(error, InvalidInput), bad
        assert_only_changed(before, store)
    assert tally["stored"] >= 3 and tally["refused"] >= 3, tally


statuses = st.one_of(
    st.none(), st.sampled_from(["PENDING", "PROCESSING", "COMPLETED", "FAILED"]), hostile_text
)


def test_listing_and_search_take_hostile_statuses_queries_cursors_and_limits(
    side_store: Docstore,
) -> None:
    store = side_store
    world = seed(store)
    owner = world.owner.id
    # The owner's own documents, some completed with hostile text worth searching.
    texts = ["annual report 2024", "'; DROP TABLE users; -- report", "{*} redis.call report"]
    for i, text in enumerate(texts):
        doc = store.documents.create(
            {"user_id": owner, "filename": f"o{i}.pdf", "s3_key": f"uploads/o{i}"}  # type: ignore[arg-type]
        )
        store.lifecycle.claim(doc.id, "owner-worker")
        store.lifecycle.mark_completed(doc.id, "owner-worker", text)
    store.documents.create({"user_id": owner, "filename": "p.pdf", "s3_key": "uploads/p"})  # type: ignore[arg-type]
    tally: Counter[str] = Counter()

    @property_settings(75)
    @given(
        status=mostly(st.sampled_from([None, "PENDING", "COMPLETED"]), statuses),
        limit=mostly(st.integers(1, 3), hostile_number),
        cursor=mostly(st.none(), hostile_cursors),
        query=mostly(st.sampled_from(["report", "annual report", "redis"]), hostile_text),
    )
    @example(status="PENDING", limit=2, cursor=None, query=BIG_PLAIN)
    @example(status=BIG_HOSTILE, limit=True, cursor=BIG_HOSTILE, query=BIG_SURROGATE)
    @example(status=None, limit=2, cursor=None, query='"annual report" -draft or 2024')
    @example(status=None, limit=2, cursor=None, query="!!! & | : * ( ) '")
    def check(status: Any, limit: Any, cursor: Any, query: Any) -> None:
        before = snapshot(store)
        page, _ = attempt(
            lambda: store.documents.list_for_user(owner, status=status, limit=limit, cursor=cursor)
        )
        if page is not None:
            tally["listed"] += 1
            assert all(item.user_id == owner for item in page.items)
            if status is not None:
                assert all(item.status == status for item in page.items)
        hits, error = attempt(
            lambda: store.documents.search(owner, query, limit=limit, cursor=cursor)
        )
        if hits is not None:
            tally["searched"] += 1
            tally["hits"] += len(hits.items)
            assert all(hit.user_id == owner for hit in hits.items)
        elif isinstance(query, str) and not encodable(query):
            assert isinstance(error, InvalidInput)
        counts = store.documents.count_by_status(owner)
        assert sum(counts.values()) == 4
        assert_only_changed(before, store)

    check()
    assert tally["listed"] >= 5 and tally["searched"] >= 5 and tally["hits"] >= 1, tally


def test_models_built_without_validation_still_get_a_typed_error(side_store: Docstore) -> None:
    store = side_store
    world = seed(store)
    before = snapshot(store)
    unchecked = DocumentCreate.model_construct(
        user_id=world.owner.id, filename="a\ud800", s3_key="k", max_attempts=3, legacy_task_id=None
    )
    for call in (
        lambda: store.documents.create(unchecked),
        lambda: store.documents.create_many([unchecked]),
        lambda: store.users.create(UserCreate.model_construct(email="\udfff@example.com")),
    ):
        _, error = attempt(call)
        assert isinstance(error, InvalidInput)
    assert_only_changed(before, store)


# -- the lifecycle -----------------------------------------------------------------------------

leases = mostly(st.one_of(st.just(300), st.floats(1, 3600)), hostile_number)
optional_numbers = mostly(
    st.one_of(st.none(), st.integers(0, 1000), st.floats(0, 1e6)), hostile_number
)


def test_lifecycle_stores_worker_ids_results_and_errors_exactly_or_refuses(
    side_store: Docstore,
) -> None:
    store = side_store
    world = seed(store)
    owner = world.owner.id
    tally: Counter[str] = Counter()
    lifecycle_errors = (InvalidInput, InvalidTransition)

    @property_settings(75)
    @given(
        worker=mostly(st.one_of(st.just("worker-1"), nonempty_text), hostile_text),
        lease=leases,
        claim_next=st.booleans(),
        complete=st.booleans(),
        text=hostile_text,
        pages=optional_numbers,
        seconds=optional_numbers,
        retry=st.one_of(st.booleans(), hostile_number),
    )
    @example(
        worker="w",
        lease=300,
        claim_next=False,
        complete=True,
        text=BIG_HOSTILE,
        pages=1,
        seconds=0.5,
        retry=True,
    )
    @example(
        worker="w",
        lease=300,
        claim_next=False,
        complete=False,
        text=BIG_HOSTILE,
        pages=None,
        seconds=None,
        retry=False,
    )
    @example(
        worker=BIG_PLAIN,
        lease=300,
        claim_next=True,
        complete=True,
        text="x",
        pages=None,
        seconds=None,
        retry=True,
    )
    @example(
        worker="w\x00\u202e%s",
        lease=300,
        claim_next=False,
        complete=True,
        text=BIG_SURROGATE,
        pages=True,
        seconds=True,
        retry=True,
    )
    def check(
        worker: str,
        lease: Any,
        claim_next: bool,
        complete: bool,
        text: str,
        pages: Any,
        seconds: Any,
        retry: Any,
    ) -> None:
        doc = store.documents.create(
            {"user_id": owner, "filename": "l.pdf", "s3_key": "uploads/l"}  # type: ignore[arg-type]
        )
        try:
            exercise(doc.id, worker, lease, claim_next, complete, text, pages, seconds, retry)
        finally:
            store.documents.delete(doc.id)  # claim_next must find nothing else next time

    def exercise(
        doc_id: int,
        worker: str,
        lease: Any,
        claim_next: bool,
        complete: bool,
        text: str,
        pages: Any,
        seconds: Any,
        retry: Any,
    ) -> None:
        before = snapshot(store)
        if claim_next:
            claimed, error = attempt(lambda: store.lifecycle.claim_next(worker, lease))
        else:
            claimed, error = attempt(lambda: store.lifecycle.claim(doc_id, worker, lease))
        if claimed is None:
            tally["claim refused"] += 1
            assert isinstance(error, InvalidInput)
            assert_only_changed(before, store)
            return
        # Numbers arrive as numbers: a bool or a string is refused, never coerced.
        assert not isinstance(lease, bool | str), lease
        assert claimed.id == doc_id and claimed.status == "PROCESSING"
        assert claimed.worker_id == stored_form(worker)
        assert store.documents.get(doc_id).worker_id == stored_form(worker)
        assert_only_changed(before, store, documents={doc_id})
        tally["claimed"] += 1

        before = snapshot(store)
        other = worker + "-other"
        _, error = attempt(
            lambda: store.lifecycle.heartbeat(doc_id, other, lease), *lifecycle_errors
        )
        assert error is not None
        assert_only_changed(before, store)

        state = store.documents.get(doc_id)
        if complete:
            done, error = attempt(
                lambda: store.lifecycle.mark_completed(doc_id, worker, text, pages, seconds),
                *lifecycle_errors,
            )
        else:
            done, error = attempt(
                lambda: store.lifecycle.mark_failed(doc_id, worker, text, retry=retry),
                *lifecycle_errors,
            )
        if done is None:
            tally["finish refused"] += 1
            if not encodable(text):
                assert isinstance(error, InvalidInput)
            assert store.documents.get(doc_id) == state
            assert_only_changed(before, store)
            return
        tally["finished"] += 1
        stored = store.documents.get(doc_id)
        if complete:
            assert not isinstance(pages, bool | str) and not isinstance(seconds, bool | str)
            assert done.result_text == stored_form(text) == stored.result_text
            assert stored.status == "COMPLETED"
            assert stored.page_count == pages
            assert stored.extraction_time_seconds == seconds
        else:
            assert done.error_message == stored_form(text) == stored.error_message
            assert stored.status in {"PENDING", "FAILED"}
        assert_only_changed(before, store, documents={doc_id})

    check()
    assert tally["claimed"] >= 5 and tally["finished"] >= 5, tally
    assert tally["claim refused"] >= 3 and tally["finish refused"] >= 3, tally


def refused(call: Any, field: str) -> None:
    """`call()` raises InvalidInput naming `field`."""
    _, error = attempt(call, InvalidInput)
    assert isinstance(error, InvalidInput) and error.field == field, (field, error)


def test_blob_list_lifecycle_and_cursor_arguments_are_checked_not_coerced(
    side_store: Docstore,
) -> None:
    store = side_store
    world = seed(store)
    owner = world.owner.id
    doc = store.documents.create(DocumentCreate(user_id=owner, filename="a", s3_key="k/a"))

    # No stored key holds a NUL: a lookup with one is refused, never stripped into another key.
    refused(lambda: store.documents.blob_is_recorded("k/\x00a"), "s3_key")
    refused(lambda: store.documents.finish_blob_deletion("k/\x00a"), "s3_key")
    assert store.documents.blob_is_recorded("k/a") is True
    refused(lambda: store.documents.note_blob_deletion_error("k/a", "bad \ud800"), "error")
    for retry_in in ("abc", float("nan"), float("inf"), -1.0, 0, True):
        refused(lambda r=retry_in: store.documents.take_due_blob_deletions(1, r), "retry_in")
    # A key no blob store can delete is refused when the document is made.
    for key in ("k/line\nbreak", "k/\x7f", "k/\x85", "k/\x00a", b"k/bytes"):
        refused(
            lambda k=key: store.documents.create({"user_id": owner, "filename": "b", "s3_key": k}),
            "s3_key",
        )
    claimed = store.lifecycle.claim(doc.id, "w")
    assert claimed.status == "PROCESSING"
    refused(lambda: store.lifecycle.mark_failed(doc.id, "w", "e", retry="false"), "retry")
    assert store.documents.get(doc.id).status == "PROCESSING"  # nothing written
    refused(lambda: store.lifecycle.take_unqueued_pending(1.0, 5), "queued_before")
    naive = datetime(2026, 1, 1)  # the point: no time zone
    refused(lambda: store.lifecycle.take_unqueued_pending(1.0, naive), "queued_before")
    late = datetime.max.replace(tzinfo=timezone(timedelta(hours=-5)))  # past 9999 in UTC
    refused(lambda: store.lifecycle.take_unqueued_pending(1.0, late), "queued_before")
    # An edited search cursor is the cursor's fault, not the query's.
    for rank in (1e300, 1e-50):
        token = base64.urlsafe_b64encode(
            json.dumps({"kind": "search", "rank": rank, "id": 1}).encode()
        ).decode()
        refused(lambda t=token: store.documents.search(owner, "boiler", cursor=t), "cursor")


def test_a_foreign_conn_and_lone_ids_are_refused_typed(side_store: Docstore) -> None:
    store = side_store

    for conn in ("x", 5, object()):  # an AttributeError from inside psycopg before
        refused(lambda c=conn: store.users.get(1, conn=c), "conn")
        refused(lambda c=conn: store.documents.count_blob_deletions(c), "conn")
        # The store's transaction asked the cache's change tracker first: an AttributeError.
        refused(lambda c=conn: store.transaction(c).__enter__(), "conn")
    for ids in (None, 5, "12"):  # a raw TypeError, or "12" read as ids 1 and 2
        refused(lambda i=ids: store.queue.enqueue_many(i), "document_ids")
        refused(lambda i=ids: store.progress.clear_many(i), "document_ids")
        refused(lambda i=ids: store.cache.invalidate_documents(i), "document_ids")
    assert store.queue.stats().length == 0


def test_parts_of_the_wrong_kind_are_refused_as_the_store_is_made(
    side: Side, docstore_settings: Settings, tmp_path: Path
) -> None:
    # Each failed later with a raw error: AttributeError for a URL as settings or a path as
    # the blobs (at the first submit), TypeError or AttributeError for a pool of the other side.
    other_side_pool = (
        psycopg_pool.ConnectionPool(docstore_settings.database_url, open=False)
        if side.is_async
        else psycopg_pool.AsyncConnectionPool(docstore_settings.database_url, open=False)
    )
    for options, field in (
        ({"settings": docstore_settings.database_url}, "settings"),
        ({"settings": {"DATABASE_URL": docstore_settings.database_url}}, "settings"),
        ({"pool": object()}, "pool"),
        ({"pool": other_side_pool}, "pool"),
        ({"blobs": str(tmp_path)}, "blobs"),
        ({"redis_client": redis.Redis() if side.is_async else redis.asyncio.Redis()}, "redis"),
    ):
        settings = options.pop("settings", docstore_settings)
        with pytest.raises(InvalidInput) as refused:
            side.connect(settings, **options)
        assert refused.value.field == field, refused.value
    client = side.make(new_redis, docstore_settings)
    for policy in ("x", None):  # a raw ValueError
        with pytest.raises(InvalidInput, match="failure_policy"):
            side.make(RateLimiter, client, limit=1, period=1, failure_policy=policy)
    side.close_redis(client)

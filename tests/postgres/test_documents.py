"""DocumentRepo against a real PostgreSQL: creation, reads, updates, keyset listing, input rules."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta, timezone
from typing import Any

import psycopg
import psycopg_pool
import pytest

from docstore import Docstore, Settings
from docstore.errors import Conflict, DatabaseError, InvalidInput, InvalidTransition, NotFound
from docstore.models import DocumentCreate, DocumentUpdate, UserCreate

SqlLog = Callable[[], list[str]]


@pytest.fixture
def user_id(store: Docstore) -> int:
    return store.users.create(UserCreate(email="owner@example.com")).user.id


def _new(user_id: int, n: int = 0, **fields: object) -> DocumentCreate:
    return DocumentCreate.model_validate(
        {"user_id": user_id, "filename": f"doc{n}.pdf", "s3_key": f"uploads/{n}.pdf", **fields}
    )


def _count(store: Docstore) -> int:
    with store.pool.connection() as conn:
        row = conn.execute("SELECT count(*) FROM documents").fetchone()
    assert row is not None
    return int(row[0])


def test_create_makes_a_pending_document_with_utc_timestamps(store: Docstore, user_id: int) -> None:
    doc = store.documents.create(_new(user_id, legacy_task_id="task-1"))
    assert doc.status == "PENDING"
    assert (doc.user_id, doc.filename, doc.s3_key) == (user_id, "doc0.pdf", "uploads/0.pdf")
    assert (doc.attempts, doc.max_attempts, doc.legacy_task_id) == (0, 3, "task-1")
    assert doc.result_text is None and doc.worker_id is None and doc.started_at is None
    assert doc.created_at.utcoffset() == timedelta(0)
    assert store.documents.get(doc.id) == doc


def test_timestamps_are_utc_whatever_the_session_time_zone(store: Docstore, user_id: int) -> None:
    doc = store.documents.create(_new(user_id))
    with store.db.transaction() as conn:
        conn.execute("SET LOCAL TimeZone = 'Asia/Tokyo'")
        read = store.documents.get(doc.id, conn=conn)
        with_user = store.documents.get_with_user(doc.id, conn=conn)
    assert read.created_at.tzinfo is timezone.utc and read.created_at == doc.created_at
    assert with_user.user.created_at.tzinfo is timezone.utc


def test_calls_share_the_callers_transaction(store: Docstore) -> None:
    with pytest.raises(RuntimeError), store.db.transaction() as conn:
        user = store.users.create(UserCreate(email="tx@example.com"), conn=conn).user
        store.documents.create(_new(user.id), conn=conn)
        assert store.documents.list_for_user(user.id, conn=conn).items != []
        raise RuntimeError("roll it all back")
    assert store.users.get_by_email("tx@example.com") is None
    assert _count(store) == 0


def test_get_by_task_id_finds_migrated_documents(store: Docstore, user_id: int) -> None:
    doc = store.documents.create(_new(user_id, legacy_task_id="abc-123"))
    found = store.documents.get_by_task_id("abc-123")
    assert found is not None and found.id == doc.id and found.legacy_task_id == "abc-123"
    assert store.documents.get_by_task_id("missing") is None
    with pytest.raises(Conflict) as caught:
        store.documents.create(_new(user_id, 1, legacy_task_id="abc-123"))
    assert caught.value.constraint_name == "documents_legacy_task_id_key"


def test_get_with_user_reads_both_in_one_query(
    store: Docstore, user_id: int, sql_log: SqlLog
) -> None:
    doc = store.documents.create(_new(user_id))
    before = len(sql_log())
    found = store.documents.get_with_user(doc.id)
    assert sql_log()[before:] == ["get_document_with_user"]
    assert found.id == doc.id and found.user == store.users.get(user_id)
    with pytest.raises(NotFound):
        store.documents.get_with_user(doc.id + 1)


def test_update_changes_only_client_fields_and_delete_removes(
    store: Docstore, user_id: int
) -> None:
    doc = store.documents.create(_new(user_id))
    assert store.documents.update(doc.id, DocumentUpdate()).filename == "doc0.pdf"
    renamed = store.documents.update(doc.id, DocumentUpdate(filename="renamed.pdf"))
    assert renamed.filename == "renamed.pdf" and renamed.s3_key == doc.s3_key
    with pytest.raises(InvalidInput):
        store.documents.update(doc.id, {"status": "COMPLETED"})  # type: ignore[arg-type]
    assert store.documents.get(doc.id).status == "PENDING"

    store.documents.delete(doc.id)
    for call in (store.documents.get, store.documents.delete):
        with pytest.raises(NotFound):
            call(doc.id)
    with pytest.raises(NotFound):
        store.documents.update(doc.id, DocumentUpdate(filename="x"))


def test_create_for_an_unknown_user_is_invalid_input(store: Docstore) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.documents.create(_new(999))
    assert caught.value.field == "user_id"


INVALID_DOCUMENTS: list[tuple[dict[str, object], str]] = [
    ({"filename": ""}, "filename"),
    ({"filename": "\x00\x00"}, "filename"),
    ({"filename": "x" * 256}, "filename"),
    ({"filename": "bad\ud800name"}, "filename"),
    ({"s3_key": "k" * 513}, "s3_key"),
    ({"s3_key": 5}, "s3_key"),
    ({"max_attempts": 0}, "max_attempts"),
    ({"legacy_task_id": ""}, "legacy_task_id"),
    ({"user_id": 0}, "user_id"),
    ({"status": "COMPLETED"}, "status"),
]


def test_invalid_documents_are_refused_with_a_typed_error(store: Docstore, user_id: int) -> None:
    for fields, field in INVALID_DOCUMENTS:
        data = {"user_id": user_id, "filename": "a.pdf", "s3_key": "k/a.pdf", **fields}
        with pytest.raises(InvalidInput) as caught:
            store.documents.create(data)  # type: ignore[arg-type]
        assert caught.value.field == field, fields
    assert _count(store) == 0


def test_nul_bytes_are_stripped_and_lengths_count_characters(store: Docstore, user_id: int) -> None:
    doc = store.documents.create(_new(user_id, filename="re\x00port.pdf", s3_key="é" * 512))
    assert doc.filename == "report.pdf" and doc.s3_key == "é" * 512


def test_create_many_keeps_input_order_in_one_statement_per_thousand(
    store: Docstore, user_id: int, sql_log: SqlLog
) -> None:
    items = [_new(user_id, n) for n in range(2500)]
    before = len(sql_log())
    created = store.documents.create_many(items)
    assert sql_log()[before:] == ["insert_documents"] * 3
    assert [d.filename for d in created] == [item.filename for item in items]
    assert [d.id for d in created] == sorted(d.id for d in created)
    assert _count(store) == 2500
    assert store.documents.create_many([]) == []


def test_create_many_with_one_bad_item_writes_nothing(store: Docstore, user_id: int) -> None:
    items: list[object] = [_new(user_id, n) for n in range(1500)]
    items[700] = {"user_id": user_id, "filename": "", "s3_key": "k"}
    with pytest.raises(InvalidInput) as caught:
        store.documents.create_many(items)  # type: ignore[arg-type]
    assert caught.value.field == "filename"
    assert _count(store) == 0

    # Refused by the database in the second batch: the first batch is rolled back too.
    items[700] = _new(user_id, 700)
    items[1400] = _new(user_id + 1000, 1400)
    with pytest.raises(InvalidInput) as caught:
        store.documents.create_many(items)  # type: ignore[arg-type]
    assert caught.value.field == "user_id"
    assert _count(store) == 0


def test_list_for_user_pages_newest_first_with_a_status_filter(
    store: Docstore, user_id: int
) -> None:
    other = store.users.create(UserCreate(email="other@example.com")).user.id
    mine = [store.documents.create(_new(user_id, n)) for n in range(5)]
    store.documents.create(_new(other))
    store.lifecycle.claim(mine[1].id, "w1")

    page = store.documents.list_for_user(user_id, limit=3)
    assert [d.id for d in page.items] == [mine[4].id, mine[3].id, mine[2].id]
    assert page.next_cursor is not None
    last = store.documents.list_for_user(user_id, limit=3, cursor=page.next_cursor)
    assert [d.id for d in last.items] == [mine[1].id, mine[0].id]
    assert last.next_cursor is None
    assert not hasattr(last.items[0], "result_text")

    processing = store.documents.list_for_user(user_id, status="PROCESSING")
    assert [d.id for d in processing.items] == [mine[1].id]
    assert store.documents.count_by_status(user_id) == {
        "PENDING": 4,
        "PROCESSING": 1,
        "COMPLETED": 0,
        "FAILED": 0,
        "CANCELLED": 0,
    }

    for bad in ({"status": "DONE"}, {"limit": 0}, {"limit": 501}, {"cursor": "%%%"}):
        with pytest.raises(InvalidInput):
            store.documents.list_for_user(user_id, **bad)  # type: ignore[arg-type]


def test_pagination_over_concurrent_inserts_returns_every_row_once(
    store: Docstore, user_id: int
) -> None:
    # Many rows share one created_at (one transaction): ties are broken by id.
    existing = {d.id for d in store.documents.create_many([_new(user_id, n) for n in range(300)])}
    existing |= {store.documents.create(_new(user_id, n)).id for n in range(300, 320)}
    stop = threading.Event()
    inserted: list[int] = []

    def insert_while_paging() -> None:
        n = 1000
        while not stop.is_set():
            inserted.append(store.documents.create(_new(user_id, n)).id)
            n += 1

    inserter = threading.Thread(target=insert_while_paging)
    inserter.start()
    seen: list[int] = []
    try:
        cursor = None
        while True:
            page = store.documents.list_for_user(user_id, limit=7, cursor=cursor)
            seen.extend(d.id for d in page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    finally:
        stop.set()
        inserter.join()
    assert inserted, "the inserter never ran"
    assert len(seen) == len(set(seen))
    assert existing <= set(seen)
    assert set(seen) <= existing | set(inserted)


def test_a_twenty_megabyte_result_is_stored_whole(store: Docstore, user_id: int) -> None:
    doc = store.documents.create(_new(user_id))
    store.lifecycle.claim(doc.id, "w1")
    words = " ".join(f"word{n % 50000}" for n in range(2_300_000))
    text = words[: 20 * 1024 * 1024] + "\x00tail"
    done = store.lifecycle.mark_completed(doc.id, "w1", text, page_count=9000)
    assert done.status == "COMPLETED"
    stored = store.documents.get(doc.id).result_text
    assert stored is not None and len(stored) == len(text) - 1 and stored.endswith("tail")


def test_rows_built_without_validation_must_match_the_model(store: Docstore, user_id: int) -> None:
    from docstore.models import DocumentSummary, UserResponse

    with pytest.raises(DatabaseError, match="do not match the fields of DocumentSummary"):
        store.db.one("get_user", {"user_id": user_id}, DocumentSummary)
    user = store.db.one("get_user", {"user_id": user_id}, UserResponse)
    assert user == store.users.get(user_id)
    assert user is not None and user.model_dump()["email"] == "owner@example.com"


def test_input_models_validate_assignments() -> None:
    item = _new(1)
    with pytest.raises(ValueError, match="lone surrogate"):
        item.filename = "bad\ud800"


def test_pooled_connections_go_back_to_the_pool_with_transactions_on(
    store: Docstore, user_id: int
) -> None:
    # Single statements run in autocommit; afterwards, even after errors, a pooled connection
    # must again group statements into a transaction.
    doc = store.documents.create(_new(user_id))
    with pytest.raises(Conflict):
        store.users.create(UserCreate(email="OWNER@example.com"))
    with pytest.raises(NotFound):
        store.lifecycle.claim(doc.id + 100, "w")
    store.lifecycle.claim(doc.id, "w")
    with pytest.raises(InvalidTransition):
        store.lifecycle.claim(doc.id, "w2")
    store.documents.delete(doc.id)

    for _ in range(3):
        with pytest.raises(RuntimeError), store.db.connection() as conn:
            assert conn.autocommit is False
            store.documents.create(_new(user_id), conn=conn)
            raise RuntimeError("roll back")
    assert _count(store) == 0


def test_models_built_from_rows_behave_like_validated_ones(store: Docstore, user_id: int) -> None:
    for n in range(2):
        store.documents.create(_new(user_id, n))
    newest, oldest = store.documents.list_for_user(user_id).items
    all_fields = set(type(newest).model_fields)
    assert newest.model_fields_set == oldest.model_fields_set == all_fields
    newest.filename = "changed locally"
    copy = oldest.model_copy(update={"filename": "copied"})
    assert (copy.filename, oldest.filename) == ("copied", "doc0.pdf")
    assert oldest.model_fields_set == all_fields
    assert store.documents.get(newest.id).filename == "doc1.pdf"
    assert oldest == type(oldest).model_validate(oldest.model_dump())


def test_a_callers_autocommit_pool_is_left_as_configured(
    docstore_settings: Settings, docstore_database_url: str
) -> None:
    def autocommit(conn: psycopg.Connection[Any]) -> None:
        conn.autocommit = True

    pool = psycopg_pool.ConnectionPool(
        docstore_database_url, min_size=1, max_size=1, configure=autocommit, open=False
    )
    pool.open(wait=True)
    try:
        with Docstore(docstore_settings, pool=pool) as store:
            user = store.users.create(UserCreate(email="pool@example.com")).user
            store.documents.create(_new(user.id))
            assert store.documents.list_for_user(user.id).items
        with pool.connection() as conn:
            assert conn.autocommit is True
    finally:
        pool.close()

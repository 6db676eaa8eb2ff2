"""The one executor: verbs, the autocommit rule, row building chosen by the model, COPY logged."""

from __future__ import annotations

import logging
from datetime import timezone

import psycopg
import pytest
from helpers import SqlLog

from docstore import Docstore, DocumentCreate, UserCreate, UserResponse, UserWithDocuments
from docstore.errors import DatabaseError, InvalidInput
from docstore.models import DocumentSummary
from docstore.postgres.rows import model_row


def test_every_statement_copy_included_is_logged_by_name(store: Docstore, sql_log: SqlLog) -> None:
    md5 = bytes(16)
    rows = [(t, "a@example.com", "a.pdf", "k", "PENDING", *[None] * 7, md5, md5) for t in "12"]
    with store.db.transaction() as conn:
        store.db.execute("migrate_create_staging", {}, conn)
        assert store.db.copy("migrate_copy_staging", rows, conn) == 2
    assert sql_log() == ["migrate_create_staging", "migrate_copy_staging"]


def test_copy_errors_are_typed_and_write_nothing(store: Docstore) -> None:
    bad = ("t-1", "a@example.com", "a.pdf", "k", "PENDING", None, None, "not a number")
    bad += (None, None, None, None, bytes(16), bytes(16))
    with pytest.raises(InvalidInput), store.db.transaction() as conn:
        store.db.execute("migrate_create_staging", {}, conn)
        store.db.copy("migrate_copy_staging", [bad], conn)
    assert store.documents.get_by_task_id("t-1") is None


def test_without_conn_a_write_is_committed_with_conn_it_joins_the_callers_transaction(
    store: Docstore, docstore_database_url: str
) -> None:
    user = store.users.create(UserCreate(email="t@example.com")).user

    def seen_elsewhere() -> int:
        with psycopg.connect(docstore_database_url) as other:
            row = other.execute("SELECT count(*) FROM documents").fetchone()
        assert row is not None
        return int(row[0])

    store.documents.create(DocumentCreate(user_id=user.id, filename="a", s3_key="k"))
    assert seen_elsewhere() == 1  # committed when the call returned
    with pytest.raises(RuntimeError), store.db.transaction() as conn:
        store.documents.create(DocumentCreate(user_id=user.id, filename="b", s3_key="k"), conn)
        assert seen_elsewhere() == 1  # not yet: it is the caller's transaction
        raise RuntimeError("roll the caller's transaction back")
    assert [d.filename for d in store.documents.list_for_user(user.id).items] == ["a"]


def test_flat_models_are_built_from_rows_nested_ones_are_validated(store: Docstore) -> None:
    user = store.users.create(UserCreate(email="n@example.com")).user
    store.documents.create(DocumentCreate(user_id=user.id, filename="a.pdf", s3_key="k"))
    nested = store.db.one(
        "get_user_with_documents", {"user_id": user.id, "documents_limit": 5}, UserWithDocuments
    )
    assert nested is not None and nested.documents[0].filename == "a.pdf"
    # JSON carries timestamps as strings: validation turned them back into aware datetimes.
    assert nested.documents[0].created_at.tzinfo is not None
    assert nested.documents[0].created_at.utcoffset() == timezone.utc.utcoffset(None)


def test_rows_without_a_model_are_tuples(store: Docstore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="docstore.sql"):
        rows = store.db.all("server_version", {})
    assert len(rows) == 1 and isinstance(rows[0], tuple) and str(rows[0][0])[0].isdigit()


def _as_many_other_columns(model: type[UserResponse]) -> str:
    return "SELECT " + ", ".join(f"{n} AS other_{n}" for n in range(len(model.model_fields)))


def test_rows_of_another_query_never_become_the_model_the_builder_was_made_for(
    store: Docstore, docstore_database_url: str
) -> None:
    # What a pooler crossing two clients' prepared statements does: the cursor of `get_user`
    # receives another query's rows, with as many columns as a user has.
    user = store.users.create(UserCreate(email="r@example.com")).user
    assert store.db.one("get_user", {"user_id": user.id}, UserResponse) == user  # builder cached
    factory = model_row(UserResponse, "get_user")
    with (
        psycopg.connect(docstore_database_url, options="-c TimeZone=UTC") as conn,
        conn.cursor(row_factory=factory) as cur,
    ):
        with pytest.raises(DatabaseError, match="columns of query get_user"):
            cur.execute(_as_many_other_columns(UserResponse))
            cur.fetchone()
        cur.execute(store.db.queries["get_user"].sql, {"user_id": user.id})
        assert cur.fetchone() == user  # its own columns again: a user


def test_rows_of_another_shape_raise_database_error_for_validated_models_too(
    store: Docstore,
) -> None:
    user = store.users.create(UserCreate(email="v@example.com")).user
    with pytest.raises(DatabaseError, match="get_user is not a UserWithDocuments"):
        store.db.one("get_user", {"user_id": user.id}, UserWithDocuments)
    with pytest.raises(DatabaseError, match="do not match the fields of DocumentSummary"):
        store.db.one("get_user", {"user_id": user.id}, DocumentSummary)


def test_rows_in_another_order_and_zone_build_the_same_model(
    store: Docstore, docstore_database_url: str
) -> None:
    # A builder is generated per column order and zone: columns reversed, in a session whose
    # TimeZone is not UTC, still give the same document, timestamps at UTC and NULLs as None.
    user = store.users.create(UserCreate(email="o@example.com")).user
    created = store.documents.create(DocumentCreate(user_id=user.id, filename="o", s3_key="k"))
    columns = ", ".join(reversed(DocumentSummary.model_fields))
    factory = model_row(DocumentSummary, "reversed_document_summary")
    with (
        psycopg.connect(docstore_database_url, options="-c TimeZone=Asia/Kolkata") as conn,
        conn.cursor(row_factory=factory) as cur,
    ):
        cur.execute(f"SELECT {columns} FROM documents WHERE id = %s", (created.id,))
        row = cur.fetchone()
    assert row is not None
    assert (
        row.created_at == created.created_at
        and row.created_at.utcoffset() == timezone.utc.utcoffset(None)
    )
    assert row.completed_at is None and row.filename == "o" and row.user_id == user.id
    assert row.model_dump() == DocumentSummary.model_validate(created.model_dump()).model_dump()


def test_the_public_database_answers_a_wrong_name_params_or_level_with_invalid_input(
    store: Docstore,
) -> None:
    # A KeyError, a TypeError, an AttributeError and a ValueError from inside docstore before.
    with pytest.raises(InvalidInput, match="no query is named 'nope'"):
        store.db.one("nope", {})
    with pytest.raises(InvalidInput, match=r"missing \['user_id'\]"):
        store.db.one("get_user", {})
    with pytest.raises(InvalidInput, match="params must be a mapping"):
        store.db.one("get_user", None)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="consistency"), store.db.consistency("bogus"):  # type: ignore[arg-type]
        pass

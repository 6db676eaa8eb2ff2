"""The Python input rules and the database's constraints agree at every boundary.

Each stored domain value is probed both ways: `docstore.rules` (what every public method checks)
and a raw UPDATE against the real schema. A rule that is looser than its column would let the
database refuse what Python accepted; a stricter one would refuse what the column can hold.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from pydantic import TypeAdapter, ValidationError

from docstore import Docstore, DocumentCreate, DocumentResponse, InvalidInput, UserCreate
from docstore.rules import (
    EMAIL_LENGTH,
    FILENAME_LENGTH,
    IDEMPOTENCY_KEY_LENGTH,
    INT4_MAX,
    S3_KEY_LENGTH,
    TASK_ID_LENGTH,
    Email,
    Filename,
    IdempotencyKey,
    NonNegativeFloat,
    NonNegativeInt,
    S3Key,
    TaskId,
)


def email_of_length(n: int) -> str:
    return "a" * (n - len("@b.io")) + "@b.io" if n >= 6 else "a@b.io"[:n]


def around(maximum: int, minimum: int = 1) -> list[int]:
    return [minimum - 1, minimum, maximum, maximum + 1]


# (table, column, rule, probe values)
PROBES: list[tuple[str, str, Any, list[Any]]] = [
    ("users", "email", Email, [email_of_length(n) for n in around(EMAIL_LENGTH.maximum, 6)]),
    ("documents", "filename", Filename, ["x" * n for n in around(FILENAME_LENGTH.maximum)]),
    ("documents", "s3_key", S3Key, ["k" * n for n in around(S3_KEY_LENGTH.maximum)]),
    ("documents", "legacy_task_id", TaskId, ["t" * n for n in around(TASK_ID_LENGTH.maximum)]),
    (
        "documents",
        "idempotency_key",
        IdempotencyKey,
        ["i" * n for n in around(IDEMPOTENCY_KEY_LENGTH.maximum)],
    ),
    ("documents", "page_count", NonNegativeInt, [-1, 0, INT4_MAX]),
    ("documents", "extraction_time_seconds", NonNegativeFloat, [-0.001, 0.0, 1e300]),
]


def python_accepts(rule: Any, value: Any) -> bool:
    try:
        TypeAdapter(rule).validate_python(value)
    except ValidationError:
        return False
    return True


def database_accepts(url: str, table: str, column: str, value: Any) -> bool:
    # Identifiers come from the table above, never from input.
    statement = f"UPDATE {table} SET {column} = %s"
    with psycopg.connect(url) as conn:
        try:
            conn.execute(statement, [value])  # type: ignore[arg-type]
        except (psycopg.errors.CheckViolation, psycopg.errors.StringDataRightTruncation):
            return False
        finally:
            conn.rollback()
    return True


@pytest.mark.parametrize(("table", "column", "rule", "values"), PROBES)
def test_the_rule_and_the_column_accept_the_same_values(
    docstore_store: Docstore,
    docstore_database_url: str,
    table: str,
    column: str,
    rule: Any,
    values: list[Any],
) -> None:
    user = docstore_store.users.create(UserCreate(email="probe@example.com")).user
    docstore_store.documents.create(DocumentCreate(user_id=user.id, filename="p", s3_key="k"))
    verdicts = [
        (
            value if not isinstance(value, str) else len(value),
            python_accepts(rule, value),
            database_accepts(docstore_database_url, table, column, value),
        )
        for value in values
    ]
    assert [(v, py) for v, py, _ in verdicts] == [(v, db) for v, _, db in verdicts]
    # Both sides refuse something and accept something: the probes straddle the boundary.
    assert {py for _, py, _ in verdicts} == {True, False}


def test_a_database_refusal_names_the_field_and_the_constraint_apart(
    docstore_store: Docstore,
) -> None:
    user = docstore_store.users.create(UserCreate(email="c@example.com")).user
    doc = docstore_store.documents.create(DocumentCreate(user_id=user.id, filename="p", s3_key="k"))
    with pytest.raises(InvalidInput) as caught:  # the named query run past the Python rules
        docstore_store.db.one(
            "update_document", {"document_id": doc.id, "filename": ""}, DocumentResponse
        )
    assert (caught.value.field, caught.value.constraint) == ("filename", "documents_filename_check")
    with pytest.raises(InvalidInput) as unknown:
        docstore_store.documents.create(
            DocumentCreate(user_id=user.id + 99, filename="a", s3_key="k")
        )
    assert (unknown.value.field, unknown.value.constraint) == ("user_id", "documents_user_id_fkey")
    with pytest.raises(InvalidInput) as in_python:
        docstore_store.documents.create({"user_id": user.id, "filename": "", "s3_key": "k"})  # type: ignore[arg-type]
    assert (in_python.value.field, in_python.value.constraint) == ("filename", None)

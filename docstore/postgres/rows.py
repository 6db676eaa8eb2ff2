"""Build output models from rows of our own SQL without re-validating them.

`psycopg.rows.class_row(Model)` runs pydantic validation on every row (3 µs or more for a
document: on a page of 50 that costs as much as the query). Rows of docstore's named queries are
already typed by PostgreSQL (bigint → int, text → str, timestamptz → aware datetime, ...), so
the executor (`docstore.postgres.executor`) builds flat models directly, the way
`BaseModel.model_construct` does, several times faster. What they still guarantee:

- the columns are exactly the model's fields: checked in full when a builder is made, and on
  every later result by comparing its column names with the builder's (a tuple of a few
  bytes objects, well under a microsecond). So rows of another query (a pooler that crossed
  two clients' prepared statements, SQL drifting from its model) never become a model: they
  raise `DatabaseError`;
- timestamps are in UTC: psycopg returns them in the session's TimeZone, so when that zone is
  not UTC they are converted.

Models with nested JSON (`UserWithDocuments`, `DocumentWithUser`) keep full validation, since
JSON carries timestamps as strings: `trusts_rows` tells which is which.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timezone
from functools import cache
from typing import Any, TypeVar, cast, get_args, get_origin

from psycopg.rows import BaseRowFactory, RowMaker, class_row, tuple_row
from pydantic import BaseModel, ValidationError

from docstore.errors import DatabaseError

Model = TypeVar("Model", bound=BaseModel)

_TIMESTAMPTZ_OID = 1184
_UTC = timezone.utc
# Session TimeZone settings in which psycopg returns timestamps already at offset zero.
_UTC_SETTINGS = frozenset(
    {b"UTC", b"Etc/UTC", b"Etc/UCT", b"UCT", b"Universal", b"Etc/Universal", b"GMT", b"Etc/GMT"}
)

RowBuilder = Callable[[Sequence[Any]], Any]


def _slot_setter(name: str) -> Callable[[Any, Any], None]:
    """A fast setter of one of BaseModel's slots (its descriptor's `__set__`: a fifth faster
    than `object.__setattr__` per call); `object.__setattr__` if pydantic has no such slot."""
    slot = BaseModel.__dict__.get(name)
    if slot is not None and hasattr(slot, "__set__"):
        return cast(Callable[[Any, Any], None], slot.__set__)
    return lambda instance, value: object.__setattr__(instance, name, value)


_set_fields_set = _slot_setter("__pydantic_fields_set__")
_set_extra = _slot_setter("__pydantic_extra__")
_set_private = _slot_setter("__pydantic_private__")
# (model, query name, session in UTC) -> (column names as the server sent them, row builder);
# built on first use.
_builders: dict[tuple[type[BaseModel], str, bool], tuple[tuple[bytes, ...], RowBuilder]] = {}


def _column_names(result: Any) -> tuple[bytes, ...]:
    if result is None:
        return ()
    return tuple(map(result.fname, range(result.nfields)))


def _check_columns(model: type[BaseModel], query_name: str, names: tuple[str, ...]) -> None:
    expected = model.model_fields.keys()
    if len(names) != len(expected) or set(names) != expected:
        raise DatabaseError(
            f"the columns of query {query_name} {sorted(names)} do not match the fields of "
            f"{model.__name__}: {sorted(expected)}"
        )


def _new_builder(
    model: type[Model], query_name: str, result: Any, session_in_utc: bool
) -> tuple[tuple[bytes, ...], RowBuilder]:
    raw_names = _column_names(result)
    count = len(raw_names)
    names = tuple(name.decode() for name in raw_names)
    _check_columns(model, query_name, names)
    stamps = (
        ()
        if session_in_utc
        else tuple(i for i in range(count) if result.ftype(i) == _TIMESTAMPTZ_OID)
    )
    return raw_names, _compiled_builder(model, names, frozenset(stamps))


def _compiled_builder(model: type[Model], names: tuple[str, ...], stamps: frozenset[int]) -> Any:
    """The row builder of `model` for columns `names`, as one generated function.

    What BaseModel.model_construct sets, without its per-field Python loop: the row unpacked
    into locals and the instance's `__dict__` written as one dict display with constant keys
    (which CPython builds presized), 1.3 µs for a document's 18 columns where `dict(zip(...))`
    and a loop took 2.2. The source holds only `repr` of the model's own field names (checked
    against the columns before) and column positions.
    """
    values = [f"_{i}" for i in range(len(names))]
    for i in stamps:
        values[i] = f"(None if _{i} is None else _{i}.astimezone(utc))"
    entries = ", ".join(f"{name!r}: {value}" for name, value in zip(names, values, strict=True))
    source = (
        "def build(row):\n"
        f"    ({''.join(f'_{i}, ' for i in range(len(names)))}) = row\n"
        "    instance = new(model)\n"
        f"    set_dict(instance, '__dict__', {{{entries}}})\n"
        # Shared by the rows: it holds every field, and pydantic only ever adds field names to
        # it in place (model_copy copies it first), so it never changes.
        "    set_fields_set(instance, fields_set)\n"
        "    set_extra(instance, None)\n"
        "    set_private(instance, None)\n"
        "    return instance\n"
    )
    namespace: dict[str, Any] = {
        "model": model,
        "new": model.__new__,
        "set_dict": object.__setattr__,
        "set_fields_set": _set_fields_set,
        "set_extra": _set_extra,
        "set_private": _set_private,
        "fields_set": set(names),
        "utc": _UTC,
    }
    exec(compile(source, f"<row builder of {model.__name__}>", "exec"), namespace)  # noqa: S102
    return namespace["build"]


def model_row(model: type[Model], query_name: str) -> BaseRowFactory[Model]:
    """A psycopg row factory making `model` instances from rows of the named query."""

    def for_cursor(cursor: Any) -> RowMaker[Model]:  # any psycopg cursor
        result = cursor.pgresult
        in_utc = cursor.connection.pgconn.parameter_status(b"TimeZone") in _UTC_SETTINGS
        key = (model, query_name, in_utc)
        cached = _builders.get(key)
        if cached is None:
            cached = _builders[key] = _new_builder(model, query_name, result, in_utc)
        elif _column_names(result) != cached[0]:
            # Not the columns this query returned before: check them in full (raises unless
            # they are the model's fields in another order, which gets its own builder).
            cached = _builders[key] = _new_builder(model, query_name, result, in_utc)
        return cached[1]

    return for_cursor


def validated_row(model: type[Model], query_name: str) -> BaseRowFactory[Model]:
    """A psycopg row factory validating each row of the named query into `model` (nested JSON);
    a row that is not one of `model` raises `DatabaseError`, never pydantic's error."""

    def for_cursor(cursor: Any) -> RowMaker[Model]:
        make = class_row(model)(cursor)

        def build(values: Sequence[Any]) -> Model:
            try:
                return make(values)
            except (TypeError, ValidationError) as exc:
                raise DatabaseError(
                    f"a row of query {query_name} is not a {model.__name__}: {type(exc).__name__}"
                ) from exc

        return build

    return for_cursor


def trusts_rows(model: type[BaseModel]) -> bool:
    """True when rows can build `model` directly: every field is a scalar PostgreSQL type.

    Models with nested models or lists (`UserWithDocuments`, `DocumentWithUser`) get their rows
    as JSON, which carries timestamps as strings: those are validated in full.
    """
    return _trusts_rows(model)


@cache
def _trusts_rows(model: type[BaseModel]) -> bool:
    return not any(_is_nested(info.annotation) for info in model.model_fields.values())


def _is_nested(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    origin = get_origin(annotation)
    if origin in (list, dict, tuple, set, frozenset):
        return True
    return any(_is_nested(arg) for arg in get_args(annotation))


def row_factory(model: type[BaseModel] | None, name: str) -> BaseRowFactory[Any]:
    """Rows as tuples, as `model` built straight from them (flat), or validated (nested)."""
    if model is None:
        return tuple_row
    if trusts_rows(model):
        return model_row(model, name)
    return validated_row(model, name)


__all__ = ["model_row", "row_factory", "trusts_rows", "validated_row"]

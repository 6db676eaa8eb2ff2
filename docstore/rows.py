"""Build output models from rows of our own SQL without re-validating them.

`psycopg.rows.class_row(Model)` runs pydantic validation on every row (3 µs or more for a
document: on a page of 50 that costs as much as the query). Rows of docstore's named queries are
already typed by PostgreSQL (bigint → int, text → str, timestamptz → aware datetime, ...), so
`fetch_model` / `fetch_models` build the models directly, the way `BaseModel.model_construct`
does, several times faster. What they still guarantee:

- the columns are exactly the model's fields (checked on the first run of each query, so SQL
  and model cannot drift apart silently);
- timestamps are in UTC: psycopg returns them in the session's TimeZone, so when that zone is
  not UTC they are converted.

Models with nested JSON (`UserWithDocuments`, `DocumentWithUser`) keep full validation, since
JSON carries timestamps as strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timezone
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg.rows import BaseRowFactory, RowMaker
from pydantic import BaseModel

from docstore.database import Database

Model = TypeVar("Model", bound=BaseModel)

_TIMESTAMPTZ_OID = 1184
_UTC = timezone.utc
_UTC_ZONE_NAMES = frozenset(
    {"UTC", "Etc/UTC", "Etc/UCT", "UCT", "Etc/Universal", "Universal", "Etc/Zulu", "Zulu", "GMT"}
)
_ZONES_WITHOUT_OFFSET: dict[object, bool] = {}


class _Layout(NamedTuple):
    names: tuple[str, ...]
    timestamps: tuple[int, ...]


_layouts: dict[tuple[type[BaseModel], str], _Layout] = {}


def _layout(model: type[BaseModel], result: Any) -> _Layout:
    count = result.nfields if result is not None else 0
    names = tuple(result.fname(i).decode() for i in range(count))
    expected = model.model_fields.keys()
    if len(names) != len(expected) or set(names) != expected:
        raise TypeError(
            f"columns {sorted(names)} do not match the fields of {model.__name__}: "
            f"{sorted(expected)}"
        )
    return _Layout(names, tuple(i for i in range(count) if result.ftype(i) == _TIMESTAMPTZ_OID))


def _zone_is_utc(zone: object) -> bool:
    """True for timezone.utc and zones such as Etc/UTC that never leave offset zero."""
    known = _ZONES_WITHOUT_OFFSET.get(zone)
    if known is None:
        key = getattr(zone, "key", None)
        known = zone is _UTC or key in _UTC_ZONE_NAMES
        _ZONES_WITHOUT_OFFSET[zone] = known
    return known


def model_row(model: type[Model], query_name: str) -> BaseRowFactory[Model]:
    """A psycopg row factory making `model` instances from rows of the named query."""

    def for_cursor(cursor: Any) -> RowMaker[Model]:  # any psycopg cursor
        result = cursor.pgresult
        layout = _layouts.get((model, query_name))
        if layout is None or result is None or result.nfields != len(layout.names):
            layout = _layouts[(model, query_name)] = _layout(model, result)
        names = layout.names
        stamps = () if _zone_is_utc(cursor.connection.info.timezone) else layout.timestamps
        fields_set = frozenset(names)
        new = model.__new__
        setattr_ = object.__setattr__

        def make(values: Sequence[Any]) -> Model:
            if stamps:
                values = list(values)
                for i in stamps:
                    if values[i] is not None:
                        values[i] = values[i].astimezone(_UTC)
            instance = new(model)
            # What BaseModel.model_construct sets, without its per-field Python loop.
            setattr_(instance, "__dict__", dict(zip(names, values, strict=False)))
            setattr_(instance, "__pydantic_fields_set__", set(fields_set))
            setattr_(instance, "__pydantic_extra__", None)
            setattr_(instance, "__pydantic_private__", None)
            return instance

        return make

    return for_cursor


def fetch_models(
    db: Database,
    name: str,
    params: Mapping[str, Any],
    model: type[Model],
    conn: psycopg.Connection[Any] | None = None,
) -> list[Model]:
    """All rows of the named query as `model`, built by `model_row`."""
    query = db.query(name, params)
    with db.connection(conn) as c, c.cursor(row_factory=model_row(model, name)) as cur:
        # Database._run runs the statement and logs it under DEBUG_SQL like every other query.
        db._run(cur, query, params)
        return cur.fetchall()


def fetch_model(
    db: Database,
    name: str,
    params: Mapping[str, Any],
    model: type[Model],
    conn: psycopg.Connection[Any] | None = None,
) -> Model | None:
    """The first row of the named query as `model`, or None."""
    query = db.query(name, params)
    with db.connection(conn) as c, c.cursor(row_factory=model_row(model, name)) as cur:
        db._run(cur, query, params)
        return cur.fetchone()


__all__ = ["fetch_model", "fetch_models", "model_row"]

"""Opaque keyset cursors: the last row's sort key as URL-safe base64 of JSON.

A cursor is not signed: it only carries a position, every value goes into SQL as a parameter, and
decoding validates it fully, so a tampered cursor raises `InvalidInput` (never a database error).
The `kind` field keeps a cursor of one listing from being used for another.
"""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Callable, Sequence
from typing import Annotated, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from docstore.errors import InvalidInput
from docstore.rules import MAX_BIGINT

_MAX_CURSOR_LENGTH = 512


class Cursor(BaseModel):
    """Base of the cursor payloads: strict, closed, immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class DocumentPageCursor(Cursor):
    """Position after a document in `list_for_user` (newest first)."""

    kind: Literal["documents"] = "documents"
    created_at: AwareDatetime = Field(strict=False)  # JSON carries it as an ISO-8601 string
    id: int = Field(ge=1, le=MAX_BIGINT)


_REAL_MAX = 3.4028234663852886e38


def _a_real(value: float) -> float:
    """`value` if PostgreSQL's `real` holds it (no underflow to zero either)."""
    if value and not struct.unpack("f", struct.pack("f", value))[0]:
        raise ValueError("rank is too small for a real")
    return value


class SearchPageCursor(Cursor):
    """Position after a hit in `search` (best rank first)."""

    kind: Literal["search"] = "search"
    # A `real` in SQL: what a float4 cannot hold would fail there, not here.
    rank: Annotated[float, AfterValidator(_a_real)] = Field(
        ge=0, le=_REAL_MAX, allow_inf_nan=False, strict=False
    )
    id: int = Field(ge=1, le=MAX_BIGINT)


class UserPageCursor(Cursor):
    """Position after a user in `users.list` (by id)."""

    kind: Literal["users"] = "users"
    id: int = Field(ge=1, le=MAX_BIGINT)


AnyCursor = TypeVar("AnyCursor", bound=Cursor)


def encode_cursor(cursor: Cursor) -> str:
    """The opaque token for `cursor`."""
    return base64.urlsafe_b64encode(cursor.model_dump_json().encode()).rstrip(b"=").decode()


def decode_cursor(token: object, model: type[AnyCursor]) -> AnyCursor:
    """The cursor inside `token`; `InvalidInput` when it is not one `encode_cursor` made."""
    if not isinstance(token, str) or not 0 < len(token) <= _MAX_CURSOR_LENGTH:
        raise InvalidInput("cursor is not a cursor returned by this listing", field="cursor")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        return model.model_validate_json(raw)
    except (binascii.Error, ValueError, ValidationError):
        raise InvalidInput(
            "cursor is not a cursor returned by this listing", field="cursor"
        ) from None


Row = TypeVar("Row")


def keyset_page(
    rows: Sequence[Row], page_size: int, position: Callable[[Row], Cursor]
) -> tuple[list[Row], str | None]:
    """The page and the cursor after it, from up to `page_size + 1` rows fetched in order.

    Queries fetch one row more than a page: when it is there, another page follows, and the
    cursor holds the position of the page's last row.
    """
    page = list(rows[:page_size])
    if len(rows) <= page_size:
        return page, None
    return page, encode_cursor(position(page[-1]))


__all__ = [
    "DocumentPageCursor",
    "SearchPageCursor",
    "UserPageCursor",
    "decode_cursor",
    "encode_cursor",
    "keyset_page",
]

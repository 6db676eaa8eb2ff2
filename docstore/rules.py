"""Input rules shared by the models and the repositories, and their translation to `InvalidInput`.

PostgreSQL text cannot hold NUL bytes and UTF-8 cannot encode lone surrogates: NULs are stripped
(extracted PDF text often has them), lone surrogates are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, ValidationError

from docstore.errors import InvalidInput

T = TypeVar("T")
InputModel = TypeVar("InputModel", bound=BaseModel)

MAX_BIGINT = 2**63 - 1


def clean_text(value: str) -> str:
    """`value` without NUL bytes; `ValueError` when it holds a lone surrogate."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text holds a lone surrogate, which UTF-8 cannot encode") from None
    return value


def length_between(min_length: int, max_length: int) -> Callable[[str], str]:
    """A validator refusing strings (already cleaned) outside the length bounds."""

    def check(value: str) -> str:
        if not min_length <= len(value) <= max_length:
            raise ValueError(
                f"must be {min_length} to {max_length} characters (after removing NUL bytes), "
                f"not {len(value)}"
            )
        return value

    return check


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC (rows follow the session's TimeZone, which may differ)."""
    if value.tzinfo is timezone.utc:
        return value
    if value.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return value.astimezone(timezone.utc)


# Types used by models and repository arguments.
RowId = Annotated[int, Field(strict=True, ge=1, le=MAX_BIGINT)]
Text = Annotated[str, AfterValidator(clean_text)]
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
WorkerId = Annotated[str, AfterValidator(clean_text), AfterValidator(length_between(1, 255))]
# Strict: an int or a float, never a bool or a numeric string coerced behind the caller's back.
LeaseSeconds = Annotated[float, Field(strict=True, gt=0, le=7 * 24 * 3600, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0, le=2**31 - 1)]
NonNegativeFloat = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]


def invalid_input(exc: ValidationError, prefix: str = "") -> InvalidInput:
    """The `InvalidInput` for pydantic's first complaint, naming the field."""
    error = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
    message = error["msg"]
    return InvalidInput(f"{location}: {message}" if location else message, field=location or None)


class Checker(Generic[T]):
    """Validates one argument with a `TypeAdapter` built once."""

    def __init__(self, type_: Any, field: str) -> None:
        self.adapter: TypeAdapter[T] = TypeAdapter(type_)
        self.field = field

    def __call__(self, value: Any) -> T:
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise invalid_input(exc, self.field) from None


def parse_input(model: type[InputModel], data: InputModel | Any) -> InputModel:
    """`data` (a model or a mapping) validated as `model`; `InvalidInput` otherwise."""
    if type(data) is model:  # built by validation (and assignments are validated too)
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def checked_limit(value: Any, maximum: int) -> int:
    """A page size between 1 and `maximum`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}", field="limit")
    return value

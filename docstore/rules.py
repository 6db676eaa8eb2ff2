"""The input rules: every domain value defined once, and its translation to `InvalidInput`.

The models, the repositories, the Redis side, intake and the migration all take their rules from
here, and the database's CHECKs say the same (tests/test_rules_match_the_database.py compares
them). PostgreSQL text cannot hold NUL bytes and UTF-8 cannot encode lone surrogates: NULs are
stripped (extracted PDF text often has them), lone surrogates are refused.

To add a rule: define it here as an `Annotated` type (or a constant bound), use it in the model
or through a `Checker`, and, when a column stores it, add the column to the comparison test.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, Field, TypeAdapter, ValidationError

from docstore.errors import InvalidInput

T = TypeVar("T")
InputModel = TypeVar("InputModel", bound=BaseModel)

MAX_BIGINT = 2**63 - 1  # BIGINT ids
INT4_MAX = 2**31 - 1  # INTEGER counts
TEN_YEARS = 10 * 365 * 24 * 3600  # seconds: the longest duration any argument may name
MAX_LEASE_SECONDS = 7 * 24 * 3600  # the longest a worker may hold a document
ONE_DAY_MS = 24 * 3600 * 1000
REDIS_NAME_LENGTH = 512  # a cache or limiter key, a queue stream or group, a limiter policy
PROGRESS_STAGE_LENGTH = 100
QUEUE_BATCH_SIZE = 1000  # messages one consume/reclaim hands out


def clean_text(value: str) -> str:
    """`value` without NUL bytes (PostgreSQL text cannot hold them); `ValueError` when it holds
    a lone surrogate."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    return encodable(value)


@dataclass(frozen=True, slots=True)
class Length:
    """A validator refusing strings (already cleaned) outside `minimum`..`maximum` characters."""

    minimum: int
    maximum: int

    def __call__(self, value: str) -> str:
        if not self.minimum <= len(value) <= self.maximum:
            raise ValueError(
                f"must be {self.minimum} to {self.maximum} characters (after removing NUL bytes), "
                f"not {len(value)}"
            )
        return value


# C0 and C1 control characters: no blob key holds one (S3 and the local store read them apart).
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def no_nul(value: str) -> str:
    """`value`; `ValueError` when it holds a NUL byte."""
    if "\x00" in value:
        raise ValueError("must not hold a NUL byte")
    return value


def no_control_characters(value: str) -> str:
    """`value`; `ValueError` when it holds a control character."""
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("must not hold control characters")
    return value


def encodable(value: str) -> str:
    """`value` as given (NUL kept: Redis is binary-safe); `ValueError` for a lone surrogate."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("text holds a lone surrogate, which UTF-8 cannot encode") from None
    return value


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC (rows follow the session's TimeZone, which may differ)."""
    if value.tzinfo is timezone.utc:
        return value
    if value.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    try:
        return value.astimezone(timezone.utc)
    except OverflowError:  # datetime.max at UTC-5 is past year 9999 in UTC
        raise ValueError("timestamp is out of range once in UTC") from None


# Deliberately simple: one @, no spaces, a dot in the domain. Deliverability is the mail
# server's business; this catches typos and garbage without a DNS-aware dependency.
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
EMAIL_LENGTH = Length(3, 320)  # users_email_check; RFC 5321 allows 64 + 1 + 255
FILENAME_LENGTH = Length(1, 255)  # documents.filename VARCHAR(255)
S3_KEY_LENGTH = Length(1, 512)  # documents.s3_key VARCHAR(512)
TASK_ID_LENGTH = Length(1, 512)  # documents_legacy_task_id_check
WORKER_ID_LENGTH = Length(1, 255)  # documents.worker_id (the schema has no CHECK for it yet)
SEARCH_QUERY_LENGTH = Length(1, 1000)  # a web-search query, after cleaning
ERROR_MESSAGE_LENGTH = Length(1, 100_000)  # documents.error_message
IDEMPOTENCY_KEY_LENGTH = Length(1, 255)  # documents_idempotency_key_check
MAX_PAGE_SIZE = 500  # rows of one page of a listing (documents, users)
MAX_SEARCH_PAGE_SIZE = 100  # hits of one page of a search (each computes a snippet)


def check_email(value: str) -> str:
    """`value` without surrounding white space, if it looks like an email address."""
    value = value.strip()
    if not EMAIL_LENGTH.minimum <= len(value) <= EMAIL_LENGTH.maximum or not (
        EMAIL_PATTERN.fullmatch(value)
    ):
        raise ValueError(
            "must be an email address like name@example.com "
            f"(at most {EMAIL_LENGTH.maximum} characters)"
        )
    return value


# Types used by the models and the arguments of every public method.
RowId = Annotated[int, Field(strict=True, ge=1, le=MAX_BIGINT)]  # a user or document id
# Text rules are strict: a str, never bytes decoded behind the caller's back.
StrictStr = Annotated[str, Field(strict=True)]
Text = Annotated[StrictStr, AfterValidator(clean_text)]
UtcDatetime = Annotated[datetime, AfterValidator(as_utc)]
# An argument that is a moment: a datetime object with its time zone, never a number or text.
Instant = Annotated[datetime, Field(strict=True), AfterValidator(as_utc)]
Email = Annotated[StrictStr, AfterValidator(clean_text), AfterValidator(check_email)]
Filename = Annotated[StrictStr, AfterValidator(clean_text), AfterValidator(FILENAME_LENGTH)]
# No control character, NUL included: a key is never changed (stripped) on its way in, or the
# row would name another blob than the one written.
S3Key = Annotated[
    StrictStr,
    AfterValidator(no_control_characters),
    AfterValidator(encodable),
    AfterValidator(S3_KEY_LENGTH),
]
# A key as stored, looked up: anything PostgreSQL can hold (legacy keys may have other
# control characters), never a NUL (no stored key has one).
StoredKey = Annotated[StrictStr, AfterValidator(no_nul), AfterValidator(encodable)]
TaskId = Annotated[StrictStr, AfterValidator(clean_text), AfterValidator(TASK_ID_LENGTH)]
# A client's key for one submission (the same key from the same user is the same document).
IdempotencyKey = Annotated[
    StrictStr, AfterValidator(clean_text), AfterValidator(IDEMPOTENCY_KEY_LENGTH)
]
# A SHA-256 digest as 64 lowercase hex digits (documents.content_sha256 holds its 32 bytes).
Sha256Hex = Annotated[str, Field(strict=True, pattern=r"^[0-9a-f]{64}$")]
# The same cleaned id is the queue's consumer name and documents.worker_id.
WorkerId = Annotated[StrictStr, AfterValidator(clean_text), AfterValidator(WORKER_ID_LENGTH)]
# Strict: an int or a float, never a bool or a numeric string coerced behind the caller's back.
LeaseSeconds = Annotated[float, Field(strict=True, gt=0, le=MAX_LEASE_SECONDS, allow_inf_nan=False)]
Seconds = Annotated[float, Field(strict=True, ge=0, le=TEN_YEARS, allow_inf_nan=False)]
NonNegativeInt = Annotated[int, Field(strict=True, ge=0, le=INT4_MAX)]
NonNegativeFloat = Annotated[float, Field(strict=True, ge=0, allow_inf_nan=False)]
PositiveInt = Annotated[int, Field(strict=True, ge=1)]
Flag = Annotated[bool, Field(strict=True)]  # True or False, never a truthy "false"

# The Redis side: names and labels are kept byte for byte (NUL included); only what UTF-8 cannot
# encode is refused.
RedisName = Annotated[
    str, Field(strict=True, min_length=1, max_length=REDIS_NAME_LENGTH), AfterValidator(encodable)
]
ProgressStage = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=PROGRESS_STAGE_LENGTH),
    AfterValidator(encodable),
]
Percent = Annotated[float, Field(strict=True, ge=0, le=100, allow_inf_nan=False)]
# A TTL, timeout or period: more than 0, at most ten years.
PositiveSeconds = Annotated[float, Field(strict=True, gt=0, le=TEN_YEARS, allow_inf_nan=False)]
# The longest wait of one `consume` is a day: longer is a caller's mistake, not a timeout.
BlockMs = Annotated[int, Field(strict=True, ge=0, le=ONE_DAY_MS)]
MessageCount = Annotated[int, Field(strict=True, ge=1, le=QUEUE_BATCH_SIZE)]


def invalid_input(exc: ValidationError, prefix: str = "") -> InvalidInput:
    """The `InvalidInput` for pydantic's first complaint, naming the field."""
    error = exc.errors(include_url=False)[0]
    location = ".".join(str(part) for part in (prefix, *error["loc"]) if part != "")
    message = error["msg"]
    return InvalidInput(f"{location}: {message}" if location else message, field=location or None)


class Checker(Generic[T]):
    """Validates one argument with a `TypeAdapter` built once: `Checker(WorkerId, "worker_id")`."""

    def __init__(self, type_: Any, field: str) -> None:
        self.adapter: TypeAdapter[T] = TypeAdapter(type_)
        self.field = field

    def __call__(self, value: Any) -> T:
        try:
            return self.adapter.validate_python(value)
        except ValidationError as exc:
            raise invalid_input(exc, self.field) from None


_adapters: dict[int, TypeAdapter[Any]] = {}


def check(rule: Any, value: Any, field: str) -> Any:
    """`value` validated by `rule` (one of the types above), or `InvalidInput` naming `field`.

    For arguments whose field name varies; a fixed argument uses a `Checker`.
    """
    adapter = _adapters.get(id(rule))  # rules are module constants: their ids never change
    if adapter is None:
        adapter = _adapters.setdefault(id(rule), TypeAdapter(rule))
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        raise invalid_input(exc, field) from None


def parse_input(model: type[InputModel], data: InputModel | Any) -> InputModel:
    """`data` (a model or a mapping) validated as `model`; `InvalidInput` otherwise."""
    if type(data) is model:  # built by validation (and assignments are validated too)
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_input(exc) from None


def check_function(
    value: Any, field: str, what: str, *, optional: bool = False, plain: bool = False
) -> Any:
    """`value` if it can be called (or is None, when `optional`); `InvalidInput` saying that
    `field` must be `what` otherwise: a caller's callback checked before any write. With
    `plain`, an `async def` function is refused too (it is run on a thread, never awaited)."""
    if value is None and optional:
        return value
    if not callable(value):
        raise InvalidInput(f"{field} must be {what}", field=field)
    if plain and (
        inspect.iscoroutinefunction(value)
        or inspect.iscoroutinefunction(getattr(value, "__call__", None))  # noqa: B004
    ):
        raise InvalidInput(f"{field} must be {what}, not an async def function", field=field)
    return value


def checked_limit(value: Any, maximum: int) -> int:
    """A page size between 1 and `maximum`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInput(f"limit must be an integer from 1 to {maximum}", field="limit")
    return value

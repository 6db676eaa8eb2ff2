"""The legacy record contract: turn one `task:{id}` (+ its `result:{id}`) into a document row.

`parse_task` returns a `LegacyDocument` ready to write, or a `Reject` saying why it cannot be
migrated. See the README section "Migrating legacy Redis data" for the contract.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from docstore.errors import InvalidInput
from docstore.intake.blobs import check_key
from docstore.migrate.legacy_values import (
    LegacyValueError,
    TextCleaner,
    is_missing,
    parse_count,
    parse_seconds,
    parse_status,
    parse_text,
    parse_timestamp,
)
from docstore.rules import (
    EMAIL_LENGTH,
    EMAIL_PATTERN,
    FILENAME_LENGTH,
    S3_KEY_LENGTH,
    TASK_ID_LENGTH,
)

DEFAULT_USER_EMAIL = "migrated@system.local"
RESULT_PREFIX = b"result:"

TaskPayload = dict[bytes, bytes] | bytes


@dataclass(frozen=True, slots=True)
class Reject:
    """A key that cannot be migrated, and why."""

    key: str
    reason: str
    # The task this record belongs to, when the key names one (verify compares its document).
    task_id: str | None = field(default=None, compare=False)


@dataclass(slots=True)
class LegacyDocument:
    """One task as it will be written to `documents` (and `notes` on what was sanitized)."""

    key: str
    task_id: str
    user_email: str
    filename: str
    s3_key: str
    status: str
    result_text: str | None
    error_message: str | None
    page_count: int | None
    extraction_time_seconds: float | None
    created_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    notes: list[str] = field(default_factory=list)
    # MD5 of the task's bytes as read (docstore.migrate.fingerprint.raw_fingerprint).
    raw_md5: bytes | None = None


def display_key(key: bytes) -> str:
    """A Redis key as printable text (invalid UTF-8 shown as backslash escapes)."""
    return key.decode("utf-8", errors="backslashreplace")


def result_key(task_id: str) -> bytes:
    """The key of a task's extracted result."""
    return RESULT_PREFIX + task_id.encode("utf-8")


def task_id_of(key: bytes, prefix: bytes) -> str | Reject:
    """The task id in a task key, or a Reject when PostgreSQL could not keep it exactly."""
    raw = key[len(prefix) :]
    try:
        task_id = raw.decode("utf-8")
    except UnicodeDecodeError:
        return Reject(display_key(key), "task id is not valid UTF-8")
    if "\x00" in task_id:
        return Reject(display_key(key), "task id contains a NUL byte")
    low, high = TASK_ID_LENGTH.minimum, TASK_ID_LENGTH.maximum
    if not low <= len(task_id) <= high:
        return Reject(display_key(key), f"task id must be {low} to {high} characters")
    return task_id


# Every task field the parser reads; a task's other fields are ignored (and not cleaned).
_FIELDS = (
    "filename", "s3_key", "status", "created_at", "started_at", "completed_at",
    "error_message", "error", "page_count", "extraction_time_seconds", "extraction_time",
    "user_email",
)  # fmt: skip
_HASH_FIELDS = tuple((name, name.encode()) for name in _FIELDS)
# Control characters inside strings allowed, as the legacy service wrote them. One decoder for
# every task: json.loads with an option builds a new decoder per call.
_JSON = json.JSONDecoder(strict=False)


def _present(value: Any) -> Any:
    """`value`, or None for a spelling of "no value"."""
    return None if is_missing(value) else value


def _task_fields(payload: TaskPayload, cleaner: TextCleaner) -> dict[str, Any]:
    """The fields the parser reads of a hash (bytes values) or a JSON string: cleaned, the
    missing ones (absent or spelled as "no value") left out."""
    if isinstance(payload, dict):
        # A field name that is not valid UTF-8 can never be one of these ASCII names.
        read = [(name, payload.get(raw_name)) for name, raw_name in _HASH_FIELDS]
    else:
        try:
            document = _JSON.decode(cleaner.from_bytes(payload, "task JSON"))
        except (ValueError, RecursionError) as exc:  # RecursionError: nested too deep
            raise LegacyValueError("task string is not valid JSON") from exc
        if not isinstance(document, dict):
            raise LegacyValueError("task string is JSON but not an object")
        if "task JSON" in cleaner.changed and _key_was_cleaned(payload, document.get("s3_key")):
            cleaner.changed.add("s3_key")  # the cleaning of the whole text changed the key
        read = [(name, document.get(name)) for name in _FIELDS]
    fields: dict[str, Any] = {}
    for name, value in read:
        if value is not None:  # absent: nothing to clean
            value = _present(_cleaned(value, name, cleaner))
            if value is not None:
                fields[name] = value
    return fields


def _key_was_cleaned(payload: bytes, key: object) -> bool:
    """Whether cleaning a JSON task's whole text changed its `s3_key` (`key`, as parsed from
    the cleaned text): compared with the key its bytes hold (NULs kept, bad UTF-8 as lone
    surrogates). Bytes that only parse cleaned (a NUL between tokens) are searched for the
    key as JSON writes it instead."""
    try:
        document = _JSON.decode(payload.decode("utf-8", errors="surrogateescape"))
    except (ValueError, RecursionError):
        if not isinstance(key, str):
            return False
        written = json.dumps(key, ensure_ascii=False)[1:-1].encode("utf-8", "surrogatepass")
        return written not in payload
    return not isinstance(document, dict) or document.get("s3_key") != key


def _cleaned(value: Any, name: str, cleaner: TextCleaner) -> Any:
    """A hash field's bytes or a JSON string as clean text; other JSON values as they are."""
    if isinstance(value, bytes):
        return cleaner.from_bytes(value, name)
    if isinstance(value, str):
        return cleaner.from_str(value, name)
    return value


def _first(fields: dict[str, Any], *names: str) -> Any:
    """The first of `names` that has a value."""
    for name in names:
        value = fields.get(name)
        if not is_missing(value):
            return value
    return None


def _required(fields: dict[str, Any], name: str, max_length: int) -> str:
    value = parse_text(fields.get(name), name, max_length=max_length)
    if value is None:
        raise LegacyValueError(f"missing required field {name!r}")
    return value


def _blob_key(fields: dict[str, Any], cleaner: TextCleaner) -> str:
    """The task's blob key, as it is: a key cleaned (a NUL stripped, bad UTF-8 replaced) would
    name another blob, which deleting the document would then delete; a key docstore cannot
    read or delete (control characters) would leave a document no worker can process."""
    key = _required(fields, "s3_key", S3_KEY_LENGTH.maximum)
    if "s3_key" in cleaner.changed:
        raise LegacyValueError(
            "s3_key is not UTF-8 text without NUL characters: cleaned, it would name another blob"
        )
    try:
        return check_key(key)
    except InvalidInput as exc:
        raise LegacyValueError(f"s3_key {key[:50]!r}: {exc.message}") from None


def _user_email(value: Any) -> str:
    # Lower case: emails match case-insensitively (users_email_lower_key), and the user a run
    # creates must not depend on which spelling SCAN happens to return first.
    email = parse_text(value, "user_email", max_length=EMAIL_LENGTH.maximum)
    if email is None:
        return DEFAULT_USER_EMAIL
    email = email.strip().lower()
    if not EMAIL_PATTERN.fullmatch(email):
        raise LegacyValueError(f"user_email is not an email address: {email[:50]!r}")
    return email


@dataclass(slots=True)
class _Result:
    text: str | None = None
    page_count: int | None = None
    extraction_time_seconds: float | None = None


def parse_result(raw: bytes, cleaner: TextCleaner) -> _Result:
    """A `result:{id}` value: a JSON object with `text`, or else the raw extracted text."""
    text = cleaner.from_bytes(raw, "result")
    if not text.lstrip().startswith("{"):
        return _Result(text=text)
    try:
        document = _JSON.decode(text)
    except (ValueError, RecursionError):  # not JSON (or nested too deep): the raw text
        return _Result(text=text)
    if not isinstance(document, dict) or "text" not in document:
        return _Result(text=text)
    body = document["text"]
    if body is not None and not isinstance(body, str):
        raise LegacyValueError(f"result text must be text, got {type(body).__name__}")
    return _Result(
        text=None if body is None else cleaner.from_str(body, "result text"),
        page_count=parse_count(document.get("page_count"), "result page_count"),
        extraction_time_seconds=parse_seconds(
            _first(document, "extraction_time_seconds", "extraction_time"),
            "result extraction_time_seconds",
        ),
    )


def parse_record(
    key: bytes, task_id: str, payload: TaskPayload, result: bytes | None
) -> LegacyDocument | Reject:
    """`parse_task` for a run: whatever one record raises becomes its reject, not the run's end.

    Only `Exception`: an interrupt (KeyboardInterrupt, SystemExit) still stops the run.
    """
    try:
        return parse_task(key, task_id, payload, result)
    except Exception as exc:  # noqa: BLE001 - a parser bug: listed with its type, run goes on
        return Reject(display_key(key), internal_error_reason(exc), task_id)


def internal_error_reason(exc: Exception) -> str:
    """The reject reason of a record the parser failed on (type and start of the message)."""
    try:
        message = str(exc)
    except Exception:  # noqa: BLE001 - an exception whose __str__ fails still gets a reason
        message = "(no message)"
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")[:200]
    return f"internal error parsing record: {type(exc).__name__}: {message}"


def parse_task(
    key: bytes, task_id: str, payload: TaskPayload, result: bytes | None
) -> LegacyDocument | Reject:
    """Validate one task and its result; never raises for bad data, returns a Reject instead."""
    cleaner = TextCleaner()
    try:
        fields = _task_fields(payload, cleaner)
        get = fields.get
        filename = _required(fields, "filename", FILENAME_LENGTH.maximum)
        s3_key = _blob_key(fields, cleaner)
        raw_status = get("status")
        if raw_status is None:
            raise LegacyValueError("missing required field 'status'")
        status = parse_status(raw_status)
        created_at = parse_timestamp(get("created_at"), "created_at")
        started_at = parse_timestamp(get("started_at"), "started_at")
        completed_at = parse_timestamp(get("completed_at"), "completed_at")
        error = parse_text(_first(fields, "error_message", "error"), "error_message")
        page_count = parse_count(get("page_count"), "page_count")
        seconds = parse_seconds(
            _first(fields, "extraction_time_seconds", "extraction_time"),
            "extraction_time_seconds",
        )
        user_email = _user_email(get("user_email"))
    except LegacyValueError as exc:
        return Reject(display_key(key), str(exc), task_id)
    try:
        extracted = _Result() if result is None else parse_result(result, cleaner)
    except LegacyValueError as exc:
        return Reject(display_key(result_key(task_id)), str(exc), task_id)
    if created_at is None:
        # Keep migrations reproducible: the earliest known time, else the database's now().
        known = [t for t in (started_at, completed_at) if t is not None]
        created_at = min(known) if known else None
    return LegacyDocument(
        key=display_key(key),
        task_id=task_id,
        user_email=user_email,
        filename=filename,
        s3_key=s3_key,
        status=status,
        result_text=extracted.text,
        error_message=error,
        page_count=extracted.page_count if page_count is None else page_count,
        extraction_time_seconds=extracted.extraction_time_seconds if seconds is None else seconds,
        created_at=created_at,
        started_at=started_at,
        completed_at=completed_at,
        notes=cleaner.notes,
    )

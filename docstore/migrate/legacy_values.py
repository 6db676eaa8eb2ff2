"""Scalar values of the legacy Redis records: text cleaning, timestamps, numbers, statuses.

Every parser raises `LegacyValueError` with a message naming the field; the record parser turns
it into a reject. Hash fields arrive as bytes, JSON fields as str, int, float, bool or None.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

from docstore.rules import INT4_MAX

# What the legacy service wrote for "no value": empty, or Python's / JSON's null spelled out.
MISSING_TEXT = frozenset({"", "none", "null"})

STATUS_ALIASES: dict[str, str] = {
    "pending": "PENDING",
    "queued": "PENDING",
    "processing": "PROCESSING",
    "running": "PROCESSING",
    "started": "PROCESSING",
    "completed": "COMPLETED",
    "done": "COMPLETED",
    "success": "COMPLETED",
    "succeeded": "COMPLETED",
    "failed": "FAILED",
    "error": "FAILED",
    # Docstore's own finished status (migration 0005): a task a user withdrew is not work.
    "cancelled": "CANCELLED",
    "canceled": "CANCELLED",
}

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Epoch seconds beyond any datetime (year 9999 is ~2.5e11 s): refused before they are turned
# into an integer, since "1e1000000000" would otherwise build a billion-digit int (minutes of CPU).
_MAX_EPOCH_SECONDS = Decimal("1e12")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class LegacyValueError(ValueError):
    """A legacy value that cannot be migrated; the message says which field and why."""


class TextCleaner:
    """Make text storable in PostgreSQL, noting every change for the sanitized list.

    PostgreSQL text holds neither NUL characters nor invalid UTF-8 (nor lone surrogates, which
    JSON escapes can produce): NULs are stripped, the rest replaced with U+FFFD.
    """

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.changed: set[str] = set()  # the `where` of every value changed

    def from_bytes(self, raw: bytes, where: str) -> str:
        """Decode `raw` as UTF-8 (invalid sequences replaced), then strip NULs."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            self.notes.append(f"{where}: invalid UTF-8 replaced with U+FFFD")
            self.changed.add(where)
        return self._strip_nul(text, where)

    def from_str(self, text: str, where: str) -> str:
        """Replace lone surrogates, then strip NULs."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
            self.notes.append(f"{where}: invalid UTF-8 (lone surrogate) replaced with U+FFFD")
            self.changed.add(where)
        return self._strip_nul(text, where)

    def _strip_nul(self, text: str, where: str) -> str:
        if "\x00" in text:
            self.notes.append(f"{where}: stripped {text.count(chr(0))} NUL character(s)")
            self.changed.add(where)
            text = text.replace("\x00", "")
        return text


def _excerpt(value: object) -> str:
    """The start of a value for a reject reason (also of an int too long for `str`)."""
    try:
        return str(value)[:50]
    except ValueError:  # int beyond sys.get_int_max_str_digits()
        return f"<{type(value).__name__} too long to show>"


def is_missing(value: object) -> bool:
    """True for the spellings of "no value" (None, "", "None", "null")."""
    return value is None or (isinstance(value, str) and value.strip().lower() in MISSING_TEXT)


def parse_status(value: object) -> str:
    """The canonical status for a legacy status or alias, case-insensitive."""
    if not isinstance(value, str):
        raise LegacyValueError(f"status must be text, got {type(value).__name__}")
    status = STATUS_ALIASES.get(value.strip().lower())
    if status is None:
        raise LegacyValueError(f"unknown status {value[:50]!r}")
    return status


def parse_timestamp(value: object, field: str) -> datetime | None:
    """An aware UTC datetime from ISO-8601 (naive means UTC) or Unix epoch seconds.

    Refused: text that is no timestamp, and timestamps outside years 1 to 9999 once in UTC
    (datetime's range; PostgreSQL's is wider, so whatever passes can be written).
    """
    if is_missing(value):
        return None
    shown = _excerpt(value)
    try:
        return _read_timestamp(value).astimezone(timezone.utc)
    except OverflowError as exc:
        raise LegacyValueError(f"{field} is out of range (UTC years 1 to 9999): {shown!r}") from exc
    except (TypeError, ValueError) as exc:
        raise LegacyValueError(f"{field} is not a timestamp: {shown!r}") from exc


def _read_timestamp(value: object) -> datetime:
    """An aware datetime in its own offset; OverflowError when beyond datetime's years."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not a timestamp")
    if isinstance(value, int):
        return _epoch_decimal(Decimal(value))
    if isinstance(value, float):
        return _epoch_float(value)
    if not isinstance(value, str):
        raise TypeError(f"{type(value).__name__} is not a timestamp")
    text = value.strip()
    if _NUMBER.fullmatch(text):
        return _epoch_decimal(Decimal(text))
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _epoch_float(seconds: float) -> datetime:
    if math.isnan(seconds):
        raise ValueError("NaN is not a timestamp")
    try:
        return datetime.fromtimestamp(seconds, tz=timezone.utc)
    except (ValueError, OSError) as exc:  # a finite number beyond the years (message varies)
        raise OverflowError("epoch seconds out of range") from exc


def _epoch_decimal(seconds: Decimal) -> datetime:
    # Decimal keeps the microseconds a float would round away.
    if seconds.copy_abs() > _MAX_EPOCH_SECONDS:  # copy_abs: no context, so no Overflow
        raise OverflowError("epoch seconds out of range")
    whole = int(seconds.to_integral_value(rounding="ROUND_FLOOR"))
    micros = int(((seconds - whole) * 1_000_000).to_integral_value())
    return _EPOCH + timedelta(seconds=whole, microseconds=micros)


def parse_count(value: object, field: str) -> int | None:
    """A non-negative integer that fits PostgreSQL's INTEGER (``"3"`` and ``3.0`` accepted)."""
    if is_missing(value):
        return None
    number = _number(value, field)
    # No float() of an int: one beyond 1e308 would raise OverflowError.
    whole = number.is_integer() if isinstance(number, float) else True
    if not whole or not 0 <= number <= INT4_MAX:
        raise LegacyValueError(
            f"{field} must be a whole number from 0 to {INT4_MAX}: {_excerpt(value)!r}"
        )
    return int(number)


def parse_seconds(value: object, field: str) -> float | None:
    """A finite, non-negative duration in seconds."""
    if is_missing(value):
        return None
    try:
        number = float(_number(value, field))
    except OverflowError:  # an int beyond 1e308
        number = math.inf
    if not math.isfinite(number) or number < 0:
        raise LegacyValueError(f"{field} must be a finite number >= 0: {_excerpt(value)!r}")
    return number


def _number(value: object, field: str) -> int | float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            return float(text)
    raise LegacyValueError(f"{field} is not a number: {_excerpt(value)!r}")


def parse_text(value: object, field: str, *, max_length: int | None = None) -> str | None:
    """A text value (already cleaned), None when missing; too long is refused."""
    if is_missing(value):
        return None
    if not isinstance(value, str):
        raise LegacyValueError(f"{field} must be text, got {type(value).__name__}")
    if max_length is not None and len(value) > max_length:
        raise LegacyValueError(f"{field} is longer than {max_length} characters")
    return value

"""Scalar values of the legacy Redis records: text cleaning, timestamps, numbers, statuses.

Every parser raises `LegacyValueError` with a message naming the field; the record parser turns
it into a reject. Hash fields arrive as bytes, JSON fields as str, int, float, bool or None.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

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
}

INT4_MAX = 2**31 - 1
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

    def from_bytes(self, raw: bytes, where: str) -> str:
        """Decode `raw` as UTF-8 (invalid sequences replaced), then strip NULs."""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            self.notes.append(f"{where}: invalid UTF-8 replaced with U+FFFD")
        return self._strip_nul(text, where)

    def from_str(self, text: str, where: str) -> str:
        """Replace lone surrogates, then strip NULs."""
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = "".join("\ufffd" if "\ud800" <= ch <= "\udfff" else ch for ch in text)
            self.notes.append(f"{where}: invalid UTF-8 (lone surrogate) replaced with U+FFFD")
        return self._strip_nul(text, where)

    def _strip_nul(self, text: str, where: str) -> str:
        if "\x00" in text:
            self.notes.append(f"{where}: stripped {text.count(chr(0))} NUL character(s)")
            text = text.replace("\x00", "")
        return text


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
    """An aware UTC datetime from ISO-8601 (naive means UTC) or Unix epoch seconds."""
    if is_missing(value):
        return None
    try:
        if isinstance(value, bool):
            raise TypeError
        if isinstance(value, int):
            return _EPOCH + timedelta(seconds=value)
        if isinstance(value, float):
            return datetime.fromtimestamp(value, tz=timezone.utc)
        if not isinstance(value, str):
            raise TypeError
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return _epoch_decimal(Decimal(text))
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        parsed = datetime.fromisoformat(text)
    except (TypeError, ValueError, OverflowError, OSError, InvalidOperation) as exc:
        raise LegacyValueError(f"{field} is not a timestamp: {str(value)[:50]!r}") from exc
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


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
            f"{field} must be a whole number from 0 to {INT4_MAX}: {str(value)[:50]!r}"
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
        raise LegacyValueError(f"{field} must be a finite number >= 0: {str(value)[:50]!r}")
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
    raise LegacyValueError(f"{field} is not a number: {str(value)[:50]!r}")


def parse_text(value: object, field: str, *, max_length: int | None = None) -> str | None:
    """A text value (already cleaned), None when missing; too long is refused."""
    if is_missing(value):
        return None
    if not isinstance(value, str):
        raise LegacyValueError(f"{field} must be text, got {type(value).__name__}")
    if max_length is not None and len(value) > max_length:
        raise LegacyValueError(f"{field} is longer than {max_length} characters")
    return value

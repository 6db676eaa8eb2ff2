"""The legacy record contract, value by value (parsing only; the end-to-end runs are elsewhere)."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

import pytest

from docstore.migrate import DEFAULT_USER_EMAIL, LegacyDocument, Reject, parse_task
from docstore.migrate.legacy_values import (
    LegacyValueError,
    TextCleaner,
    parse_count,
    parse_seconds,
    parse_status,
    parse_timestamp,
)

UTC = timezone.utc
T = datetime(2024, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2024-03-01T12:00:00", T),
        ("2024-03-01 12:00:00", T),
        ("2024-03-01T12:00:00Z", T),
        ("2024-03-01T14:00:00+02:00", T),
        ("2024-03-01T12:00:00.123456", T.replace(microsecond=123456)),
        (" 2024-03-01T12:00:00 ", T),
        ("2024-03-01", T.replace(hour=0)),
        (1709294400, T),
        (1709294400.5, T.replace(microsecond=500000)),
        ("1709294400", T),
        ("1709294400.000001", T.replace(microsecond=1)),
        ("1.7092944e9", T),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        ("", None),
        ("None", None),
        ("null", None),
        (None, None),
    ],
)
def test_timestamps_iso_or_epoch_become_aware_utc(raw: object, expected: datetime | None) -> None:
    assert parse_timestamp(raw, "created_at") == expected


@pytest.mark.parametrize("raw", ["yesterday", "2024-13-01", True, [1], "12:00", "nan", math.nan])
def test_unparsable_timestamps_are_refused(raw: object) -> None:
    with pytest.raises(LegacyValueError, match="created_at is not a timestamp"):
        parse_timestamp(raw, "created_at")


@pytest.mark.parametrize(
    "raw",
    [
        "0001-01-01T00:00:00+01:00",  # valid in its own offset, year 0 in UTC
        "0001-01-01T00:59:59.999999+01:00",
        "9999-12-31T23:30:00-01:00",  # year 10000 in UTC
        "9999-12-31T23:59:59.999999-00:01",
        "1e20",
        10**12 * 1000,
        pytest.param(10**400, id="10**400"),
        1e300,
        math.inf,
        -math.inf,
        "253402300800",  # 10000-01-01 in epoch seconds
        253402300800,
        253402300800.0,
        "-62135596801",  # one second before year 1
        -62135596801,
        -62135596801.0,
        "9224318016000",  # PostgreSQL's upper limit (294276 AD), far beyond datetime's
        "-210866803200",  # PostgreSQL's lower limit (4713 BC)
    ],
)
def test_timestamps_beyond_years_1_to_9999_in_utc_are_refused_naming_the_field(
    raw: object,
) -> None:
    with pytest.raises(LegacyValueError, match=r"^completed_at is out of range \(UTC years 1"):
        parse_timestamp(raw, "completed_at")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("0001-01-01T00:00:00-01:00", datetime(1, 1, 1, 1, tzinfo=UTC)),
        ("0001-01-01T00:00:00+00:00", datetime(1, 1, 1, tzinfo=UTC)),
        ("0001-01-01T00:00:00", datetime(1, 1, 1, tzinfo=UTC)),
        ("0001-01-01T01:00:00+01:00", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:30:00+01:00", datetime(9999, 12, 31, 22, 30, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime.max.replace(tzinfo=UTC)),
        ("-62135596800", datetime(1, 1, 1, tzinfo=UTC)),
        (-62135596800, datetime(1, 1, 1, tzinfo=UTC)),
        (253402300799, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        (253402300799.0, datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("253402300799.999999", datetime.max.replace(tzinfo=UTC)),
    ],
)
def test_timestamps_at_the_limits_of_datetime_are_kept(raw: object, expected: datetime) -> None:
    assert parse_timestamp(raw, "created_at") == expected


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("PENDING", "PENDING"),
        ("queued", "PENDING"),
        ("Queued", "PENDING"),
        ("processing", "PROCESSING"),
        ("running", "PROCESSING"),
        ("STARTED", "PROCESSING"),
        ("completed", "COMPLETED"),
        ("done", "COMPLETED"),
        ("success", "COMPLETED"),
        ("Succeeded", "COMPLETED"),
        ("failed", "FAILED"),
        ("error", "FAILED"),
        (" done ", "COMPLETED"),
        ("cancelled", "CANCELLED"),
        ("Canceled", "CANCELLED"),
    ],
)
def test_statuses_and_their_aliases_are_case_insensitive(raw: str, status: str) -> None:
    assert parse_status(raw) == status


@pytest.mark.parametrize("raw", ["exploded", "", 3, None, "complete d"])
def test_unknown_statuses_are_refused(raw: object) -> None:
    with pytest.raises(LegacyValueError):
        parse_status(raw)


def test_counts_and_seconds_accept_numbers_and_numeric_text() -> None:
    assert [parse_count(v, "page_count") for v in (3, "3", 3.0, "3.0", "", None)] == [
        3,
        3,
        3,
        3,
        None,
        None,
    ]
    assert [parse_seconds(v, "t") for v in (1.5, "1.5", 2, "2", "1e-3")] == [
        1.5,
        1.5,
        2.0,
        2.0,
        0.001,
    ]
    for bad in (-1, "2.5", "many", True, 2**31, [3]):
        with pytest.raises(LegacyValueError):
            parse_count(bad, "page_count")
    for bad in (-0.1, "inf", float("nan"), "fast", False):
        with pytest.raises(LegacyValueError):
            parse_seconds(bad, "t")


def test_text_cleaner_strips_nul_and_replaces_invalid_utf8_with_notes() -> None:
    cleaner = TextCleaner()
    assert cleaner.from_bytes(b"a\x00b\xffc", "x") == "ab\ufffdc"
    assert cleaner.from_str("d\ud83de\x00", "y") == "d\ufffde"
    assert cleaner.from_bytes("plain é".encode(), "z") == "plain é"
    assert cleaner.notes == [
        "x: invalid UTF-8 replaced with U+FFFD",
        "x: stripped 1 NUL character(s)",
        "y: invalid UTF-8 (lone surrogate) replaced with U+FFFD",
        "y: stripped 1 NUL character(s)",
    ]


def _hash(**fields: str) -> dict[bytes, bytes]:
    return {name.encode(): value.encode() for name, value in fields.items()}


def test_hash_and_json_tasks_with_the_same_data_give_the_same_document() -> None:
    fields = {
        "filename": "a.pdf",
        "s3_key": "k",
        "status": "done",
        "page_count": "2",
        "created_at": "1709294400",
        "error": "e",
        "user_email": "u@x.org",
    }
    from_hash = parse_task(b"task:1", "1", _hash(**fields), None)
    from_json = parse_task(b"task:1", "1", json.dumps(fields).encode(), None)
    assert isinstance(from_hash, LegacyDocument)
    assert from_hash == from_json
    assert (from_hash.status, from_hash.page_count, from_hash.created_at) == ("COMPLETED", 2, T)
    assert (from_hash.error_message, from_hash.user_email) == ("e", "u@x.org")


def test_canonical_field_names_win_over_their_aliases() -> None:
    doc = parse_task(
        b"task:1",
        "1",
        _hash(
            filename="f",
            s3_key="k",
            status="failed",
            error="short",
            error_message="long",
            extraction_time="1",
            extraction_time_seconds="2",
        ),
        None,
    )
    assert isinstance(doc, LegacyDocument)
    assert (doc.error_message, doc.extraction_time_seconds) == ("long", 2.0)


def test_missing_created_at_falls_back_to_the_earliest_known_time() -> None:
    doc = parse_task(
        b"task:1",
        "1",
        _hash(
            filename="f",
            s3_key="k",
            status="done",
            started_at="1709294400",
            completed_at="1709294460",
        ),
        None,
    )
    assert isinstance(doc, LegacyDocument)
    assert doc.created_at == T and doc.completed_at == T + timedelta(minutes=1)
    bare = parse_task(b"task:2", "2", _hash(filename="f", s3_key="k", status="queued"), None)
    assert isinstance(bare, LegacyDocument) and bare.created_at is None
    assert bare.user_email == DEFAULT_USER_EMAIL


@pytest.mark.parametrize(
    ("result", "text", "pages", "seconds"),
    [
        (b"just text", "just text", None, None),
        (b'{"text": "t", "page_count": 2, "extraction_time_seconds": 0.5}', "t", 2, 0.5),
        (b'{"text": "t", "extraction_time": "0.5"}', "t", None, 0.5),
        (b'{"text": null}', None, None, None),
        # A JSON object without "text" is extracted text that happens to be JSON.
        (b'{"invoice": 12}', '{"invoice": 12}', None, None),
        (b'["a", "b"]', '["a", "b"]', None, None),
        (b"{broken", "{broken", None, None),
        (b"", "", None, None),
    ],
)
def test_results_are_json_objects_with_text_or_raw_text(
    result: bytes, text: str | None, pages: int | None, seconds: float | None
) -> None:
    doc = parse_task(b"task:1", "1", _hash(filename="f", s3_key="k", status="done"), result)
    assert isinstance(doc, LegacyDocument)
    assert (doc.result_text, doc.page_count, doc.extraction_time_seconds) == (text, pages, seconds)


def test_a_bad_number_in_the_result_rejects_the_task_under_the_result_key() -> None:
    parsed = parse_task(
        b"task:1",
        "1",
        _hash(filename="f", s3_key="k", status="done"),
        b'{"text": "t", "page_count": "lots"}',
    )
    assert parsed == Reject("result:1", "result page_count is not a number: 'lots'")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("created_at", "0001-01-01T00:00:00+01:00"),
        ("started_at", "0001-01-01T00:00:00+23:59"),
        ("completed_at", "9999-12-31T23:30:00-01:00"),
        ("completed_at", "1e15"),
    ],
)
def test_an_out_of_range_timestamp_rejects_the_task_naming_the_field(
    field: str, value: str
) -> None:
    fields = {"filename": "f", "s3_key": "k", "status": "done", field: value}
    for payload in (_hash(**fields), json.dumps(fields).encode()):
        parsed = parse_task(b"task:1", "1", payload, None)
        assert parsed == Reject(
            "task:1", f"{field} is out of range (UTC years 1 to 9999): {value!r}"
        )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        # Cleaned, these named another blob: deleting the document deleted that one.
        (b"legacy/a\x00b.txt", "cleaned, it would name another blob"),
        (b"legacy/\xffscan.pdf", "cleaned, it would name another blob"),
        # Kept, docstore could neither read nor delete the blob: the document failed every
        # attempt and its blob deletion never ended.
        (b"legacy/scan\t2024.txt", "must not hold control characters"),
    ],
)
def test_a_blob_key_is_taken_as_it_is_or_the_task_is_rejected(raw: bytes, reason: str) -> None:
    as_json = b'{"filename": "f", "status": "done", "s3_key": "' + raw + b'"}'
    as_hash = {b"filename": b"f", b"s3_key": raw, b"status": b"done"}
    for payload in (as_hash, as_json):  # the JSON text was cleaned whole: its key slipped by
        parsed = parse_task(b"task:1", "1", payload, None)
        assert isinstance(parsed, Reject) and parsed.key == "task:1", parsed
        assert parsed.reason.startswith("s3_key") and reason in parsed.reason
    kept = parse_task(
        b"task:1", "1", _hash(filename="f", s3_key="legacy/ü scan.pdf", status="done"), None
    )
    assert isinstance(kept, LegacyDocument) and kept.s3_key == "legacy/ü scan.pdf"
    # A NUL outside the key (after the object, between tokens) is sanitized, as ever.
    for stray in (
        b'{"filename": "f", "status": "done", "s3_key": "legacy/a.pdf"}\x00',
        b'{"filename": "f",\x00 "status": "done", "s3_key": "legacy/a.pdf"}',
    ):
        sanitized = parse_task(b"task:1", "1", stray, None)
        assert isinstance(sanitized, LegacyDocument), sanitized
        assert sanitized.s3_key == "legacy/a.pdf" and sanitized.notes

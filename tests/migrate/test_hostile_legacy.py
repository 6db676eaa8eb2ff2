"""Hostile legacy records: the `task:{id}` / `result:{id}` parser and a migration run (hypothesis).

Property of `parse_task`: it never raises and never hangs; it returns a `LegacyDocument` whose
values PostgreSQL can hold (no NUL, valid UTF-8, lengths and ranges of the schema, aware UTC
timestamps) or a `Reject` saying why. Timestamps are drawn near the limits of `datetime` and of
PostgreSQL, with offsets that carry them across. A migration of hostile records writes exactly
the documents the parser accepts, each as parsed, raises nothing, and `verify` then finds every
one of them and counts the same rejects.
"""

from __future__ import annotations

import io
import json
import math
from collections import Counter
from datetime import datetime, timedelta, timezone
from typing import Any

from hostile import hostile_number, hostile_text, property_settings
from hypothesis import example, given
from hypothesis import strategies as st

from docstore import Docstore
from docstore.migrate import migrate, verify
from docstore.migrate.legacy_records import (
    LegacyDocument,
    Reject,
    parse_task,
    task_id_of,
)

FIELDS = (
    "filename",
    "s3_key",
    "status",
    "created_at",
    "started_at",
    "completed_at",
    "error_message",
    "error",
    "page_count",
    "extraction_time_seconds",
    "extraction_time",
    "user_email",
)
STATUSES = ("PENDING", "queued", "Running", "done", "error", "FAILED", "bogus", " success ")
SPECIAL_VALUES = (
    "1e1000000000",  # an exponent whose integer has a billion digits
    "-1e999999",
    "1e400",
    "1" * 400,
    "-" + "9" * 5000,
    "NaN",
    "inf",
    "-1",
    "0",
    "2147483648",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "2024-02-30T00:00:00",
    "2024-01-01T00:00:00Z",
    "1700000000.123456",
    "None",
    "null",
    "",
    "a@b.co",
    "Ann@Example.COM",
    "\x00",
    "x" * 600,
)
TIMESTAMP_FIELDS = ("created_at", "started_at", "completed_at")
# Epoch seconds of the limits: datetime holds years 1 to 9999, PostgreSQL 4713 BC to 294276 AD.
EPOCH_LIMITS = (-62_135_596_800, 253_402_300_799, -210_866_803_200, 9_224_318_015_999)
_DAY = timedelta(days=1) - timedelta(microseconds=1)  # the largest offset there is
offsets = st.one_of(
    st.none(),
    st.just(timezone.utc),
    st.timedeltas(min_value=-_DAY, max_value=_DAY).map(timezone),
    st.sampled_from([timezone(t) for t in (-_DAY, _DAY, timedelta(hours=-1), timedelta(hours=1))]),
)
near_the_limits = st.one_of(
    st.datetimes(max_value=datetime(1, 1, 2)), st.datetimes(min_value=datetime(9999, 12, 30))
)


def _iso(stamp: datetime, sep: str) -> str:
    text = stamp.isoformat(sep)
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def iso_text(stamps: st.SearchStrategy[datetime]) -> st.SearchStrategy[str]:
    """ISO-8601 text of `stamps` in any offset (or none), with "T" or " " between."""
    return st.builds(
        lambda stamp, tz, sep: _iso(stamp.replace(tzinfo=tz), sep),
        stamps,
        offsets,
        st.sampled_from("T "),
    )


def _across_a_limit(low: bool, offset: timedelta, nudge: timedelta, sep: str) -> str:
    # A local time whose UTC instant is `nudge` from the first (or last) instant datetime holds:
    # valid where it was written, outside the range once converted when `nudge` points out.
    limit = datetime.min if low else datetime.max
    shift = offset if low else -offset
    try:
        local = limit + shift + (nudge if low else -nudge)
    except OverflowError:
        local = limit + shift
    return _iso(local.replace(tzinfo=timezone(shift)), sep)


across_the_limits = st.builds(
    _across_a_limit,
    st.booleans(),
    st.timedeltas(min_value=timedelta(0), max_value=_DAY),
    st.timedeltas(min_value=timedelta(seconds=-2), max_value=timedelta(seconds=2)),
    st.sampled_from("T "),
)
iso_timestamps = st.one_of(across_the_limits, iso_text(st.one_of(near_the_limits, st.datetimes())))
epoch_numbers = st.one_of(
    *(st.integers(at - 200_000, at + 200_000) for at in EPOCH_LIMITS),
    *(st.floats(at - 200_000.0, at + 200_000.0) for at in EPOCH_LIMITS),
    st.floats(allow_nan=False),
    st.integers(),
)
# Timestamps as the legacy service could have written them: ISO text with or without offset,
# epoch seconds as numbers or text (a hash holds text; JSON keeps the numbers).
timestamps: st.SearchStrategy[Any] = st.one_of(
    iso_timestamps, epoch_numbers, epoch_numbers.map(str)
)
values = st.one_of(
    hostile_text,
    st.sampled_from(SPECIAL_VALUES),
    st.sampled_from(STATUSES),
    hostile_number.map(str),
    timestamps.map(str),
)


def _bytes(value: str) -> bytes:
    return value.encode("utf-8", "surrogatepass")


hash_payloads = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS).map(str.encode), st.binary(max_size=8)),
    st.one_of(values.map(_bytes), st.binary(max_size=40)),
    max_size=14,
)
json_values = st.one_of(
    values,
    hostile_number,
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
json_payloads = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), json_values, max_size=12).map(
        lambda d: _bytes(json.dumps(d))
    ),
    st.sampled_from(
        [
            b"[" * 100_000,
            b'{"a":' * 100_000,
            b"not json",
            b"[1, 2]",
            b'"string"',
            b"\xff\xfe",
            b'{"filename": "a", "s3_key": "b", "status": "done", "page_count": ' + b"9" * 5000,
        ]
    ),
)
results = st.one_of(
    st.none(),
    st.binary(max_size=60),
    values.map(_bytes),
    st.fixed_dictionaries(
        {"text": st.one_of(st.none(), hostile_text, hostile_number)},
        optional={"page_count": json_values, "extraction_time_seconds": json_values},
    ).map(lambda d: _bytes(json.dumps(d))),
    st.sampled_from([b"{" * 100_000, b'{"text": ' * 50_000, b'{"text": "\\ud800\\u0000"}']),
)
task_keys = st.one_of(
    st.just(b"task:t1"),
    st.binary(max_size=20).map(lambda b: b"task:" + b),
    values.map(lambda v: b"task:" + _bytes(v)),
)


VALID_HASH = {b"filename": b"f.pdf", b"s3_key": b"uploads/f", b"status": b"done"}


def _valid_text(value: str | None, max_length: int | None = None) -> bool:
    if value is None:
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in value and (max_length is None or len(value) <= max_length)


def check_document(document: LegacyDocument) -> None:
    """Every value fits the documents table and its constraints."""
    assert _valid_text(document.task_id, 512) and document.task_id
    assert _valid_text(document.filename, 255) and document.filename
    assert _valid_text(document.s3_key, 512) and document.s3_key
    assert _valid_text(document.user_email, 320)
    assert _valid_text(document.error_message) and _valid_text(document.result_text)
    assert document.status in {"PENDING", "PROCESSING", "COMPLETED", "FAILED"}
    if document.page_count is not None:
        assert type(document.page_count) is int and 0 <= document.page_count <= 2**31 - 1
    if document.extraction_time_seconds is not None:
        seconds = document.extraction_time_seconds
        assert type(seconds) is float and math.isfinite(seconds) and seconds >= 0
    for stamp in (document.created_at, document.started_at, document.completed_at):
        assert stamp is None or (isinstance(stamp, datetime) and stamp.tzinfo is timezone.utc)


def test_parse_task_returns_a_storable_document_or_a_reject() -> None:
    tally: Counter[str] = Counter()

    @property_settings(300)
    @given(
        key=task_keys,
        payload=st.one_of(hash_payloads, json_payloads),
        result=results,
        overrides=st.dictionaries(st.sampled_from(FIELDS), values, max_size=4),
    )
    @example(
        key=b"task:t1",
        payload={b"filename": b"a", b"s3_key": b"b", b"status": b"done"},
        result=None,
        overrides={"created_at": "1e1000000000"},
    )
    @example(
        key=b"task:t1",
        payload={b"filename": b"a", b"s3_key": b"b", b"status": b"done"},
        result=None,
        overrides={"page_count": "1" * 400, "extraction_time": "9" * 400},
    )
    @example(
        key=b"task:t1",
        payload=b'{"filename": "a", "s3_key": "b", "status": "done", "page_count": 1e999}',
        result=b'{"text": "t", "page_count": ' + b"1" * 400 + b"}",
        overrides={},
    )
    @example(
        key=b"task:t1",
        payload=b"[" * 100_000,
        result=b"{" * 100_000,
        overrides={},
    )
    @example(
        key=b"task:t1",
        payload={b"filename": b"a", b"s3_key": b"b", b"status": b"done"},
        result=b'{"text": "x", "extraction_time_seconds": ' + b"9" * 400 + b"}",
        overrides={},
    )
    def check(
        key: bytes, payload: dict[bytes, bytes] | bytes, result: bytes | None, overrides: Any
    ) -> None:
        task_id = task_id_of(key, b"task:")
        if isinstance(task_id, Reject):
            tally["bad task id"] += 1
            return
        assert _valid_text(task_id, 512) and task_id
        if isinstance(payload, dict):
            # Mostly on top of a valid record, so the other fields decide its fate.
            payload = {
                **VALID_HASH,
                **payload,
                **{k.encode(): _bytes(v) for k, v in overrides.items()},
            }
        parsed = parse_task(key, task_id, payload, result)
        if isinstance(parsed, Reject):
            tally["rejected"] += 1
            assert parsed.reason
            return
        tally["parsed"] += 1
        check_document(parsed)

    check()
    assert tally["parsed"] >= 10 and tally["rejected"] >= 10, tally


def test_any_timestamp_becomes_utc_within_datetime_or_a_reject_naming_its_field() -> None:
    tally: Counter[str] = Counter()

    @property_settings(400)
    @given(
        stamps=st.dictionaries(
            st.sampled_from(TIMESTAMP_FIELDS),
            st.one_of(across_the_limits, timestamps),
            min_size=1,
        )
    )
    @example(stamps={"created_at": "0001-01-01T00:00:00+01:00"})
    @example(stamps={"completed_at": "9999-12-31T23:30:00-01:00"})
    @example(stamps={"started_at": 253_402_300_800})
    def check(stamps: dict[str, Any]) -> None:
        fields = {"filename": "f", "s3_key": "k", "status": "done", **stamps}
        as_hash = {name.encode(): str(value).encode() for name, value in fields.items()}
        for payload in (as_hash, json.dumps(fields).encode()):
            parsed = parse_task(b"task:t", "t", payload, None)
            if isinstance(parsed, Reject):
                tally["rejected"] += 1
                field, _, _ = parsed.reason.partition(" ")
                assert field in stamps, parsed.reason  # the reason names the field
                continue
            tally["parsed"] += 1
            check_document(parsed)
            extremes = (parsed.created_at, parsed.started_at, parsed.completed_at)
            if any(s is not None and s.year in (1, 9999) for s in extremes):
                tally["year 1 or 9999"] += 1

    check()
    assert min(tally["parsed"], tally["rejected"], tally["year 1 or 9999"]) >= 30, tally


record_lists = st.lists(
    st.tuples(
        st.one_of(st.integers(0, 10**6).map(str), hostile_text.filter(bool)),
        st.tuples(
            # Half the records differ from a valid one in their timestamps alone, so that
            # timestamps near the limits reach PostgreSQL.
            st.one_of(hash_payloads, st.just({})),
            st.dictionaries(
                st.sampled_from(TIMESTAMP_FIELDS).map(str.encode),
                st.one_of(across_the_limits, timestamps).map(lambda t: str(t).encode()),
                max_size=3,
            ),
        ).map(lambda parts: {**VALID_HASH, **parts[0], **parts[1]}),
        results,
    ),
    max_size=8,
    unique_by=lambda record: record[0],
)


def test_migration_of_hostile_records_writes_exactly_what_the_parser_accepts(
    docstore_store: Docstore,
) -> None:
    store = docstore_store
    tally: Counter[str] = Counter()

    @property_settings(30)
    @given(records=record_lists)
    @example(
        records=[
            (
                "limits",
                {
                    **VALID_HASH,
                    b"created_at": b"0001-01-01T00:00:00-23:59",
                    b"started_at": b"-62135596800",
                    b"completed_at": b"9999-12-31T23:59:59.999999+00:00",
                },
                None,
            ),
            ("beyond", {**VALID_HASH, b"created_at": b"0001-01-01T00:00:00+00:01"}, None),
        ]
    )
    def check(records: list[tuple[str, dict[bytes, bytes], bytes | None]]) -> None:
        store.redis.flushdb()
        with store.pool.connection() as conn:
            conn.execute("DELETE FROM documents")
            conn.execute("DELETE FROM users")
            # The ledger too: a task id an earlier example migrated, whose document is gone
            # now, would be a conflict ("deleted in docstore"), not a new task (CI, once).
            conn.execute("DELETE FROM legacy_migrations")
        expected: dict[str, LegacyDocument] = {}
        for task_id, payload, result in records:
            key = b"task:" + _bytes(task_id)
            store.redis.hset(key, mapping=payload)
            if result is not None:
                store.redis.set(b"result:" + _bytes(task_id), result)
            parsed_id = task_id_of(key, b"task:")
            if isinstance(parsed_id, str):
                parsed = parse_task(key, parsed_id, payload, result)
                if isinstance(parsed, LegacyDocument):
                    expected[parsed_id] = parsed
        rejects = io.StringIO()
        summary = migrate(store.redis, store.db, rejects=rejects, batch_size=3)
        assert summary.migrated == len(expected)
        assert summary.rejected >= len(records) - len(expected)
        for line in rejects.getvalue().splitlines():
            json.loads(line)  # every reject line is valid JSON
        for task_id, parsed in expected.items():
            row = store.documents.get_by_task_id(task_id)
            assert row is not None
            assert (row.filename, row.s3_key, row.status) == (
                parsed.filename,
                parsed.s3_key,
                parsed.status,
            )
            assert (row.result_text, row.error_message) == (
                parsed.result_text,
                parsed.error_message,
            )
            assert row.page_count == parsed.page_count
            assert row.extraction_time_seconds == parsed.extraction_time_seconds
            assert (row.started_at, row.completed_at) == (parsed.started_at, parsed.completed_at)
            if parsed.created_at is not None:
                assert row.created_at == parsed.created_at
            stamps = (parsed.created_at, parsed.started_at, parsed.completed_at)
            if any(s is not None and s.year in (1, 9999) for s in stamps):
                tally["year 1 or 9999 written"] += 1
            owner = store.users.get(row.user_id)
            assert owner.email == parsed.user_email
        report = verify(store.redis, store.db, batch_size=3)
        assert report.ok and report.checked == len(expected)
        assert report.unmigratable == summary.rejected  # verify and migrate agree
        tally["migrated"] += summary.migrated
        tally["rejected"] += summary.rejected

    check()
    assert tally["migrated"] >= 5 and tally["rejected"] >= 1, tally
    assert tally["year 1 or 9999 written"] >= 2, tally

"""Strategies and checks shared by the hostile-input tests (property-based, with hypothesis).

Arbitrary unicode (NUL, lone surrogates, right-to-left marks, 1 MB strings), SQL fragments and
Lua-looking strings for text; negatives, values beyond int64, NaN/inf, bools and strings for
numbers; and the snapshot that proves a call left every other row untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from docstore import Docstore
from docstore.errors import DocstoreError, InvalidInput

T = TypeVar("T")


FRAGMENTS = (
    "\x00",
    "\x00\x00",
    "\ud800",  # lone surrogates: not encodable as UTF-8
    "\udfff",
    "\udbff\udc00",  # a surrogate "pair" as two code points, still not UTF-8
    "\u202e",  # right-to-left override
    "\u200f",  # right-to-left mark
    "\u2066",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "\U0001f600",
    "é",
    "İ",
    "ß",
    "ﬀ",
    "'; DROP TABLE users; --",
    "' OR '1'='1",
    "%(x)s",
    "%(email)s",
    "%s",
    "%%",
    "$1",
    "$$",
    "\\",
    "'",
    '"',
    "--",
    "/*",
    ";",
    "redis.call('FLUSHALL')",
    "{",
    "}",
    "{documents}",
    "*",
    "\r\n",
    "\n",
    "\t",
    " ",
    ":",
    "@",
    "<mark>",
    "&",
    "|",
    "!",
    "-",
    " or ",
    "\x1b[31m",
)

hostile_text: st.SearchStrategy[str] = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(st.characters(exclude_categories=()), max_size=10),
    ),
    max_size=6,
).map("".join)
"""Short strings made of hostile fragments and arbitrary code points (surrogates included)."""

hostile_number: st.SearchStrategy[Any] = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from(
        [0, -1, 1, 2, 255, 2**31 - 1, 2**31, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 10**400]
    ),
    st.booleans(),
    st.floats(),
    st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0, 1e-300, 1e300]),
    st.none(),
    st.sampled_from(["1", "1.5", "", "NaN", "%s", "1; DROP TABLE users"]),
)
"""Anything a number argument might be given: huge, negative, NaN, bool, None, text."""


def mostly(
    valid: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """`valid` about three times in four, else `hostile`: with several arguments per call, a
    plain `one_of` would make nearly every call fail on one of them and store nothing."""
    return st.tuples(st.booleans(), st.booleans()).flatmap(
        lambda coins: hostile if coins[0] and coins[1] else valid
    )


MEGABYTE = 1 << 20
# 1 MB strings, only ever used in explicit examples.
BIG_PLAIN = "x" * MEGABYTE
BIG_HOSTILE = ("'; DROP TABLE users; --\x00\u202e{*}\r\n%(x)s" + "é" * 100) * (MEGABYTE // 136)
BIG_SURROGATE = "x" * (MEGABYTE - 1) + "\ud800"


def stored_form(value: str) -> str | None:
    """What PostgreSQL must hold for `value`: NULs stripped; None when it must be refused."""
    cleaned = value.replace("\x00", "")
    try:
        cleaned.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return cleaned


def encodable(value: str) -> bool:
    """True when UTF-8 can encode `value` (no lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def attempt(
    call: Callable[[], T], *allowed: type[DocstoreError]
) -> tuple[T | None, DocstoreError | None]:
    """(result, None), or (None, error) for an allowed typed error; anything else propagates."""
    expected = allowed or (InvalidInput,)
    try:
        return call(), None
    except expected as exc:
        return None, exc


def property_settings(max_examples: int) -> settings:
    """Modest, deterministic runs: the store is opened once per test, not per example."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


# -- the database around each call -------------------------------------------------------------

Snapshot = dict[str, dict[int, str]]


def snapshot(store: Docstore) -> Snapshot:
    """A checksum of every row of every table, by id."""
    with store.pool.connection() as conn:
        users = conn.execute("SELECT id, md5(u::text) FROM users AS u").fetchall()
        documents = conn.execute("SELECT id, md5(d::text) FROM documents AS d").fetchall()
    return {"users": dict(users), "documents": dict(documents)}  # type: ignore[arg-type]


def assert_only_changed(
    before: Snapshot,
    store: Docstore,
    users: set[int] = frozenset(),
    documents: set[int] = frozenset(),
) -> None:
    """Every row but those named is exactly as before, and no other row appeared."""
    after = snapshot(store)
    for table, allowed in (("users", users), ("documents", documents)):
        kept_before = {k: v for k, v in before[table].items() if k not in allowed}
        kept_after = {k: v for k, v in after[table].items() if k not in allowed}
        assert kept_after == kept_before, f"{table} changed outside {sorted(allowed)}"

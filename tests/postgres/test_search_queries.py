"""Search queries that PostgreSQL's tsquery parser chokes on, against a real PostgreSQL.

`websearch_to_tsquery` turns each `-` it reads where an operand may start into a NOT and keeps
consecutive NOTs on a fixed 32-entry operator stack, after the AND and OR already there: 31, 32
or 33 of them in a row (spaces and the skipped operator characters `! & | ( ) <` in between
count for nothing) raised the internal error `tsquery stack too small`, which reached callers as
`DatabaseError`. Property: every query
within the 1,000-character limit gives results (the same results PostgreSQL gives for it
whenever PostgreSQL can take it), and every other query `InvalidInput`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hostile import encodable, property_settings
from hypothesis import example, given
from hypothesis import strategies as st

import docstore.errors
import docstore.repositories.documents
from docstore import Docstore
from docstore.errors import InvalidInput
from docstore.models import DocumentCreate, SearchHit, UserCreate
from docstore.repositories.documents import collapse_negation_runs
from docstore.rules import MAX_BIGINT

TEXTS = {
    "fox": "The quick brown fox jumps over the lazy dog.",
    "apple": "A quick red apple on the table, next to a green apple.",
    "pear": "One pear alone, no fox, no dog: x-ray e-mail 1-2-3.",
    "unicode": "Café résumé naïve 日本語のテキスト and a fox.",
}


@pytest.fixture
def owner(docstore_store: Docstore) -> int:
    """A user owning one COMPLETED document per text in TEXTS."""
    store = docstore_store
    user_id = store.users.create(UserCreate(email="searcher@example.com")).user.id
    for name, text in TEXTS.items():
        doc = store.documents.create(
            DocumentCreate(user_id=user_id, filename=f"{name}.txt", s3_key=f"k/{name}")
        )
        store.lifecycle.claim(doc.id, "indexer")
        store.lifecycle.mark_completed(doc.id, "indexer", text)
    return user_id


def ids_by_name(store: Docstore, user_id: int) -> dict[int, str]:
    return {
        d.id: d.filename.removesuffix(".txt") for d in store.documents.list_for_user(user_id).items
    }


def names(store: Docstore, user_id: int, query: str) -> set[str]:
    by_id = ids_by_name(store, user_id)
    return {by_id[hit.id] for hit in store.documents.search(user_id, query, limit=100).items}


def hits_as_postgresql_gives_them(store: Docstore, user_id: int, query: str) -> list[Any]:
    """The search statement run on `query` exactly as given, without docstore's normalisation."""
    params = {
        "user_id": user_id,
        "query": query,
        "after_rank": float("inf"),
        "after_id": MAX_BIGINT,
        "limit": 101,
    }
    hits = store.db.all("search_documents", params, SearchHit)
    return [(hit.id, hit.rank, hit.snippet) for hit in hits]


def negations(count: int, between: str = "") -> str:
    return between.join("-" * count)


@pytest.mark.parametrize("between", ["", " ", "! ", "(", " \t<"])
@pytest.mark.parametrize("count", [1, 2, 3, 4, 31, 32, 33, 34, 200, 201])
def test_a_run_of_negations_means_what_one_or_two_of_them_mean(
    docstore_store: Docstore, owner: int, count: int, between: str
) -> None:
    query = f"quick {negations(count, between)}dog"
    # "quick -dog": the apple; "quick --dog" (not not dog): the fox.
    expected = {"apple"} if count % 2 else {"fox"}
    assert names(docstore_store, owner, query) == expected


@pytest.mark.parametrize(
    "query",
    [
        negations(33),
        negations(33, " "),
        negations(1000),
        negations(500, " "),
        "!-" * 500,
        "(-" * 500,
    ],
)
def test_the_reported_queries_give_no_hits_instead_of_a_database_error(
    docstore_store: Docstore, owner: int, query: str
) -> None:
    # Only negations and no word: like a query of stop words, nothing matches.
    assert docstore_store.documents.search(owner, query).items == []


@pytest.mark.parametrize(
    ("query", "normalized"),
    [
        ("quick " + negations(33) + "dog", "quick -dog"),
        ("quick " + negations(34, " ! ") + "dog", "quick --dog"),
        (negations(3) + "a " + negations(5) + '"b c"', '-a -"b c"'),
        ("a or " + negations(3, " ") + " b", "a or - b"),
        ("a -b --c", "a -b --c"),  # two or fewer: the query PostgreSQL gets is the one given
        ("fox" + "-" * 40 + "dog", "fox" + "-" * 40 + "dog"),  # inside a word
        ("x:" + "-" * 40 + "y", "x:" + "-" * 40 + "y"),  # ':' starts the next word
        ('"' + negations(40, " ") + ' fox"', '"' + negations(40, " ") + ' fox"'),  # a phrase
        ('"a' + negations(40), '"a' + negations(40)),  # a phrase to the end
        ("x> " + negations(3) + "y", "x> -y"),
    ],
)
def test_runs_of_negations_are_collapsed_and_nothing_else_changes(
    query: str, normalized: str
) -> None:
    assert collapse_negation_runs(query) == normalized


def test_a_query_postgresql_still_cannot_parse_is_invalid_input(
    docstore_store: Docstore, owner: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The last line of defence, should a query slip past the normalisation.
    monkeypatch.setattr(
        docstore.repositories.documents, "collapse_negation_runs", lambda query: query
    )
    with pytest.raises(InvalidInput, match="tsquery stack too small") as caught:
        docstore_store.documents.search(owner, negations(40))
    assert caught.value.field == "query"


@pytest.mark.parametrize("query", ["x" * 1000, "ḁ" * 700, "😀" * 600, '"' + "é" * 999])
def test_a_word_longer_than_postgresql_indexes_matches_nothing(
    docstore_store: Docstore, owner: int, query: str
) -> None:
    # PostgreSQL drops words of 2,047 bytes or more from queries, as from documents.
    assert docstore_store.documents.search(owner, query).items == []


def test_a_too_long_word_is_dropped_like_a_stop_word(docstore_store: Docstore, owner: int) -> None:
    assert names(docstore_store, owner, "fox " + "日" * 995) == names(docstore_store, owner, "fox")


# -- the property ----------------------------------------------------------------------------

# Operators, quotes and what websearch_to_tsquery skips; the words of the documents.
syntax = st.one_of(
    st.sampled_from(["-", "- ", "--", '"', " ", "  ", " or ", "or-", "<->", "<2>", ":*", "or"]),
    st.sampled_from([*"!&|()<>:*',._\\", *"\t\n\v\f\r"]),
)
words = st.sampled_from(sorted({word for text in TEXTS.values() for word in text.split()}))
odd_characters = st.one_of(
    st.sampled_from(
        [*"\u3000\u00a0\u2003\u2028\u0085\x1c\u200b\ufeff\u202e\x00\x7féİßﬀ\U0001f600"]
    ),
    st.text(min_size=1, max_size=3),
)
negation_runs = st.builds(
    negations, st.integers(1, 80), st.sampled_from(["", " ", "!", "( ", " \t", "<", "\u3000", "&|"])
)
long_words = st.sampled_from(["x" * 700, "ḁ" * 700, "😀" * 520, "é" * 1030])
web_search_queries = st.lists(
    st.one_of(syntax, words, words, odd_characters, negation_runs, long_words),
    min_size=1,
    max_size=40,
).map("".join)


def within_the_limit(query: str) -> bool:
    return encodable(query) and 1 <= len(query.replace("\x00", "").strip()) <= 1000


def server_major_version(store: Docstore) -> int:
    return int(str(store.db.value("server_version", {})).split(".")[0])


def test_every_query_within_the_limit_gives_the_results_postgresql_gives_or_invalid_input(
    docstore_store: Docstore, owner: int
) -> None:
    store = docstore_store
    # docstore reads queries the way PostgreSQL 18 does; older servers in a non-C locale also
    # split words at Unicode white space, and a run of NOTs split by it may reach the fallback.
    exact = server_major_version(store) >= 18
    tally: Counter[str] = Counter()

    @property_settings(300)
    @given(
        query=st.one_of(web_search_queries.map(lambda q: q[:1000]), web_search_queries, st.text())
    )
    @example(query=negations(33))
    @example(query=negations(33, " "))
    @example(query="fox or red " + negations(31) + "dog")
    @example(query='"quick fox" ' + negations(45, "! ") + '"red apple" or pear')
    @example(query="x\u3000 " + negations(40) + "dog")
    @example(query="\u3000" + negations(40) + "dog fox")
    @example(query="-" * 1001)
    def check(query: str) -> None:
        try:
            hits = store.documents.search(owner, query, limit=100).items
        except InvalidInput as exc:
            tally["refused"] += 1
            if within_the_limit(query):
                assert not exact and "cannot parse it" in exc.message, query
            return
        assert within_the_limit(query), query
        tally["searched"] += 1
        tally["hits"] += len(hits)
        given = query.replace("\x00", "").strip()
        try:
            expected = hits_as_postgresql_gives_them(store, owner, given)
        except InvalidInput as exc:  # the executor maps the parser's refusal for every query
            assert "tsquery stack too small" in str(exc)
            tally["postgresql refused"] += 1
            return
        tally["compared"] += 1
        tally["normalized"] += collapse_negation_runs(given) != given
        assert [(hit.id, hit.rank, hit.snippet) for hit in hits] == expected, query

    check()
    assert tally["compared"] >= 100 and tally["normalized"] >= 10 and tally["hits"] >= 10, tally
    assert tally["postgresql refused"] >= 10 and tally["refused"] >= 3, tally

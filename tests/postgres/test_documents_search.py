"""Full-text search against a real PostgreSQL: web-search syntax, ranking, snippets, paging."""

from __future__ import annotations

import pytest

from docstore import Docstore
from docstore.errors import InvalidInput
from docstore.models import DocumentCreate, UserCreate


def _completed(store: Docstore, user_id: int, text: str, name: str = "doc.pdf") -> int:
    doc = store.documents.create(DocumentCreate(user_id=user_id, filename=name, s3_key="k"))
    store.lifecycle.claim(doc.id, "indexer")
    store.lifecycle.mark_completed(doc.id, "indexer", text)
    return doc.id


@pytest.fixture
def user_id(docstore_store: Docstore) -> int:
    return docstore_store.users.create(UserCreate(email="reader@example.com")).user.id


def test_hits_are_ranked_and_carry_highlighted_snippets(
    docstore_store: Docstore, user_id: int
) -> None:
    store = docstore_store
    once = _completed(store, user_id, "The invoice mentions a fox once, among many other words.")
    often = _completed(store, user_id, "Fox reports: the fox, the foxes and a fox den. Fox!")
    _completed(store, user_id, "Nothing to see here: a cat and a dog.")
    other = store.users.create(UserCreate(email="someone@example.com")).user.id
    _completed(store, other, "fox fox fox fox fox fox")

    result = store.documents.search(user_id, "fox")
    assert [hit.id for hit in result.items] == [often, once]
    assert result.items[0].rank > result.items[1].rank > 0
    assert "<mark>fox</mark>" in result.items[1].snippet
    assert "<mark>Fox</mark>" in result.items[0].snippet
    assert result.next_cursor is None


def test_web_search_syntax_phrases_exclusions_and_or(
    docstore_store: Docstore, user_id: int
) -> None:
    store = docstore_store
    red = _completed(store, user_id, "a red apple on the table")
    green = _completed(store, user_id, "a green apple, and the red table")
    pear = _completed(store, user_id, "one pear alone")

    def ids(query: str) -> set[int]:
        return {hit.id for hit in store.documents.search(user_id, query).items}

    assert ids('"red apple"') == {red}
    assert ids("apple -green") == {red}
    assert ids("pear or green") == {green, pear}
    assert ids("apples") == {red, green}  # English stemming
    assert ids("the and") == set()  # only stop words: no lexemes, no hits


def test_exclusions_match_only_documents_with_extracted_text(
    docstore_store: Docstore, user_id: int
) -> None:
    # A document not processed yet has no text: nothing is known to be absent from it.
    store = docstore_store
    pear = _completed(store, user_id, "one pear alone")
    store.documents.create(DocumentCreate(user_id=user_id, filename="new.pdf", s3_key="k"))
    claimed = store.documents.create(DocumentCreate(user_id=user_id, filename="p.pdf", s3_key="k"))
    store.lifecycle.claim(claimed.id, "indexer")

    for query in ("-apple", "apple or -green"):
        assert [hit.id for hit in store.documents.search(user_id, query).items] == [pear], query


def test_search_pages_through_every_hit_once(docstore_store: Docstore, user_id: int) -> None:
    store = docstore_store
    # Equal ranks for some (same text), different for others: ties are broken by id.
    expected = {_completed(store, user_id, "report " * (1 + n % 4)) for n in range(13)}
    seen: list[int] = []
    cursor = None
    while True:
        page = store.documents.search(user_id, "report", limit=4, cursor=cursor)
        seen.extend(hit.id for hit in page.items)
        ranks = [hit.rank for hit in page.items]
        assert ranks == sorted(ranks, reverse=True)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert len(seen) == len(set(seen)) and set(seen) == expected

    listing_cursor = store.documents.list_for_user(user_id, limit=1).next_cursor
    for bad in (listing_cursor, "x", ""):
        with pytest.raises(InvalidInput):
            store.documents.search(user_id, "report", cursor=bad)


def test_only_the_first_200000_characters_are_indexed(
    docstore_store: Docstore, user_id: int
) -> None:
    store = docstore_store
    filler = "lorem " * 40_000  # 240,000 characters
    doc_id = _completed(store, user_id, "aardvark " + filler + " zebra")
    assert [hit.id for hit in store.documents.search(user_id, "aardvark").items] == [doc_id]
    assert store.documents.search(user_id, "zebra").items == []


def test_invalid_queries_are_refused(docstore_store: Docstore, user_id: int) -> None:
    for query in ("", "   ", "\x00", "bad\ud800", "x" * 1001, None):
        with pytest.raises(InvalidInput) as caught:
            docstore_store.documents.search(user_id, query)  # type: ignore[arg-type]
        assert caught.value.field == "query", query

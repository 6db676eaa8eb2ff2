"""`extract_text` on plain text: UTF-8, byte order marks, and binary content that is not text.

A binary file named `.txt` used to be COMPLETED as U+FFFD garbage and indexed, and UTF-16 text
with a byte order mark was stored as mojibake. Text is UTF-8, or UTF-8/UTF-16/UTF-32 with a
byte order mark; anything else is refused with `InvalidInput`, which fails the document at once.
"""

from __future__ import annotations

import codecs
import gzip
from collections.abc import Iterator

import pytest

from docstore import Docstore, Settings
from docstore.errors import InvalidInput
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import extract_text
from docstore.models import UserCreate, UserResponse

TEXT = "Grüße, naïve café: 日本語のテキスト 😀\n\ttab, form feed \f, CRLF\r\n"
PNG_HEAD = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x10\x00\x00\x00\x10\x08\x06"


@pytest.mark.parametrize(
    "data",
    [
        bytes(range(256)) * 4,
        PNG_HEAD + b"\x00" * 64,
        gzip.compress(b"a compressed text " * 100),
        b"text with one NUL\x00 byte in it",
        b"text with a bell\x07? no: a \x01 start-of-heading control",
        b"\x7fELF\x02\x01\x01" + b"\x00" * 9,
        "UTF-16 without a byte order mark".encode("utf-16-le"),
        "café in Latin-1".encode("latin-1"),
    ],
    ids=["all bytes", "png", "gzip", "nul", "control", "elf", "utf-16 no bom", "latin-1"],
)
def test_binary_content_named_txt_is_refused_as_not_text(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="is not text"):
        extract_text(data, "file.txt")


@pytest.mark.parametrize(
    "encoded",
    [
        codecs.BOM_UTF16_LE + TEXT.encode("utf-16-le"),
        codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"),
        codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"),
        codecs.BOM_UTF32_BE + TEXT.encode("utf-32-be"),
        codecs.BOM_UTF8 + TEXT.encode(),
        TEXT.encode(),
    ],
    ids=["utf-16 le", "utf-16 be", "utf-32 le", "utf-32 be", "utf-8 bom", "utf-8"],
)
def test_text_with_a_byte_order_mark_is_decoded_without_it(encoded: bytes) -> None:
    extraction = extract_text(encoded, "notes.txt")
    assert extraction.text == TEXT
    assert extraction.page_count == 1


def test_a_terminal_log_with_escape_sequences_and_backspaces_is_text() -> None:
    log = "\x1b[31mERROR\x1b[0m disk full\n\x07bell, over\bstrike, vertical\vtab\n"
    assert extract_text(log.encode(), "run.log").text == log


def test_a_few_stray_bytes_in_long_utf8_text_become_replacement_characters() -> None:
    # A file cut in the middle of a character, or one Latin-1 byte in a long UTF-8 log.
    data = ("ok line\n" * 500).encode() + b"caf\xe9\n" + "終".encode()[:2]
    text = extract_text(data, "cut.log").text
    assert text == "ok line\n" * 500 + "caf\ufffd\n\ufffd"


def test_replacement_characters_already_in_valid_utf8_count_for_nothing() -> None:
    assert extract_text(("\ufffd" * 10).encode(), "x.txt").text == "\ufffd" * 10


def test_utf16_text_holding_nul_characters_is_refused() -> None:
    data = codecs.BOM_UTF16_LE + "a\x00b".encode("utf-16-le")
    with pytest.raises(InvalidInput, match="is not text"):
        extract_text(data, "x.txt")


def test_empty_files_and_a_lone_byte_order_mark_give_no_text() -> None:
    for data in (b"", codecs.BOM_UTF8, codecs.BOM_UTF16_LE):
        extraction = extract_text(data, "empty.txt")
        assert (extraction.text, extraction.page_count) == ("", 0), data


# -- through the document flow -----------------------------------------------------------------


@pytest.fixture
def store(docstore_settings: Settings, docstore_blob_store: S3BlobStore) -> Iterator[Docstore]:
    with Docstore.connect(docstore_settings, blobs=docstore_blob_store) as opened:
        yield opened


@pytest.fixture
def user(store: Docstore) -> UserResponse:
    return store.users.create(UserCreate(email="extractor-test@example.com")).user


def test_a_binary_txt_document_fails_at_once_and_is_not_searchable(
    store: Docstore, user: UserResponse
) -> None:
    payload = b"confidential quarterly numbers\n" + bytes(range(256)) * 8
    document = store.submit_document(user, "dump.txt", payload)

    outcome = store.process_next("worker-1", extract_text, block_ms=0)

    assert outcome is not None and outcome.action == "failed"
    failed = store.documents.get(document.id)
    assert failed.status == "FAILED" and failed.attempts == 1  # no retry: it will not get better
    assert failed.error_message is not None and "'dump.txt' is not text" in failed.error_message
    assert failed.result_text is None
    assert store.documents.search(user.id, "confidential quarterly").items == []


def test_a_utf16_txt_document_is_completed_with_its_text_and_searchable(
    store: Docstore, user: UserResponse
) -> None:
    document = store.submit_document(user, "notes.txt", "Überraschung im Lager".encode("utf-16"))

    outcome = store.process_next("worker-1", extract_text, block_ms=0)

    assert outcome is not None and outcome.action == "completed"
    assert store.documents.get(document.id).result_text == "Überraschung im Lager"
    assert [hit.id for hit in store.documents.search(user.id, "Lager").items] == [document.id]

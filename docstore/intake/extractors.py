"""A ready-made text extractor: PDFs with pypdf, plain text decoded.

Workers may pass `extract_text` to `store.process_next`; it reports progress once per page.
pypdf is an optional dependency (``pip install docstore[embedded]`` or ``pypdf``). Plain text
is UTF-8, or UTF-8, UTF-16 or UTF-32 after a byte order mark; binary content refused as
`UnsupportedDocument` (an `InvalidInput`, so the document fails without a retry).
"""

from __future__ import annotations

import codecs
import io
import logging
import re
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from docstore.errors import UnsupportedDocument

ProgressCallback = Callable[[float, str], None]

_TEXT_SUFFIXES = (".txt", ".md", ".csv", ".json", ".log")
# The codec each byte order mark declares (UTF-32 LE's begins with UTF-16 LE's: it goes first).
_BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32-LE"),
    (codecs.BOM_UTF32_BE, "UTF-32-BE"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16-LE"),
    (codecs.BOM_UTF16_BE, "UTF-16-BE"),
)
# Control characters no text holds, as `file` decides: bell, backspace, tab, line feed, vertical
# tab, form feed, carriage return and escape (terminal logs) are text; NUL and the rest mean
# binary content.
_BINARY_CHARACTERS = re.compile("[\x00-\x06\x0e-\x1a\x1c-\x1f\x7f]")
# Invalid sequences tolerated per decoded character: a file cut inside a character, a stray
# byte of another encoding in a long log. More means the content is not in that encoding.
_MAX_INVALID_FRACTION = 0.001
logger = logging.getLogger("docstore.extractors")


class Extraction(BaseModel):
    """What an extractor returns for one document."""

    model_config = ConfigDict(frozen=True)

    text: str
    page_count: int = Field(ge=0)


def _no_progress(percent: float, stage: str) -> None:
    return None


def extract_pdf(data: bytes, report: ProgressCallback = _no_progress) -> Extraction:
    """Text of every page of a PDF, reporting progress after each page."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        pages = reader.pages
        total = len(pages)
        texts: list[str] = []
        for number, page in enumerate(pages, start=1):
            texts.append(page.extract_text() or "")
            report(100.0 * number / total, f"page {number}/{total}")
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise UnsupportedDocument(f"unreadable PDF: {type(exc).__name__}: {exc}") from exc
    return Extraction(text="\n\n".join(texts), page_count=total)


def _declared_codec(data: bytes) -> tuple[str, bytes]:
    """The codec a byte order mark declares (UTF-8 without one) and the bytes after the mark."""
    for mark, codec in _BYTE_ORDER_MARKS:
        if data.startswith(mark):
            return codec, data[len(mark) :]
    return "UTF-8", data


def decode_text(data: bytes, filename: str) -> str:
    """The text of a plain-text file, without its byte order mark.

    `UnsupportedDocument` when it holds NUL or other control characters (binary content), or
    more than one invalid sequence per 1,000 characters (invalid ones become U+FFFD).
    """
    codec, body = _declared_codec(data)
    try:
        text = body.decode(codec)
        invalid = 0
    except UnicodeDecodeError:
        text = body.decode(codec, errors="replace")
        # The replacement characters decoding added, not those the text already held.
        invalid = text.count("\ufffd") - body.decode(codec, errors="ignore").count("\ufffd")
    if _BINARY_CHARACTERS.search(text):
        raise UnsupportedDocument(
            f"{filename!r} is not text: it holds NUL or other control characters (binary content)"
        )
    if invalid > len(text) * _MAX_INVALID_FRACTION:
        raise UnsupportedDocument(
            f"{filename!r} is not text: {invalid} of its {len(text)} characters are not valid"
            f" {codec} (text must be UTF-8, or UTF-16 or UTF-32 after a byte order mark)"
        )
    return text


def extract_text(data: bytes, filename: str, report: ProgressCallback = _no_progress) -> Extraction:
    """Extract by content: `%PDF` files with pypdf, text files with `decode_text`."""
    if data.startswith(b"%PDF"):
        return extract_pdf(data, report)
    if filename.lower().endswith(_TEXT_SUFFIXES) or not data:
        text = decode_text(data, filename)
        report(100.0, "text")
        return Extraction(text=text, page_count=1 if text else 0)
    raise UnsupportedDocument(f"{filename!r} is neither a PDF nor a text file")

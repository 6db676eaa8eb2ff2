"""A ready-made text extractor: PDFs with pypdf, plain text as is.

Workers may pass `extract_text` to `store.process_next`; it reports progress once per page.
pypdf is an optional dependency (``pip install docstore[embedded]`` or ``pypdf``).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from docstore.errors import InvalidInput

ProgressCallback = Callable[[float, str], None]

_TEXT_SUFFIXES = (".txt", ".md", ".csv", ".json", ".log")
logger = logging.getLogger("docstore.extractors")


class Extraction(BaseModel):
    """What an extractor returns for one document."""

    model_config = ConfigDict(frozen=True)

    text: str
    page_count: int = Field(ge=0)


class UnsupportedDocument(InvalidInput):
    """The document is neither a PDF nor plain text."""


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


def extract_text(data: bytes, filename: str, report: ProgressCallback = _no_progress) -> Extraction:
    """Extract by content: `%PDF` files with pypdf, text files decoded as UTF-8."""
    if data.startswith(b"%PDF"):
        return extract_pdf(data, report)
    if filename.lower().endswith(_TEXT_SUFFIXES) or not data:
        text = data.decode("utf-8", errors="replace")
        report(100.0, "text")
        return Extraction(text=text, page_count=1 if text else 0)
    raise UnsupportedDocument(f"{filename!r} is neither a PDF nor a text file")

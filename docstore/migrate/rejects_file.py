"""The rejects file of `python -m docstore.migrate`: written whole or not at all.

It is the only list of what a run rejected or sanitized, so a run that is refused (a bad
option, a database without the schema) or interrupted leaves the last one as it was, and a
finished run that replaces a non-empty list keeps that one as ``<name>.previous``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def previous_of(path: Path) -> Path:
    """Where a finished run keeps the list it replaced."""
    return path.with_name(path.name + ".previous")


@contextmanager
def rejects_file(path: Path) -> Iterator[TextIO]:
    """A new file, in `path`'s folder, that takes `path`'s place once the block ends without
    an error; removed, and `path` untouched, when it raises."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as file:
        try:
            yield file
        except BaseException:
            file.close()
            partial.unlink(missing_ok=True)
            raise
    if path.exists() and path.stat().st_size > 0:
        os.replace(path, previous_of(path))
    os.replace(partial, path)


__all__ = ["previous_of", "rejects_file"]

"""The rejects file of `python -m docstore.migrate`: written whole or not at all.

It is the only list of what a run rejected or sanitized, so a run that is refused (a bad
option, a database without the schema) or interrupted leaves the last one as it was, and a
finished run that replaces a non-empty list keeps that one as ``<name>.previous``. What an
interrupted run listed is added to ``<name>.interrupted``: its committed batches are not read
again by the next run, which therefore does not list their records again.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO


def interrupted_of(path: Path) -> Path:
    """Where a run that ended early keeps what it listed."""
    return path.with_name(path.name + ".interrupted")


def previous_of(path: Path) -> Path:
    """Where a finished run keeps the list it replaced."""
    return path.with_name(path.name + ".previous")


@contextmanager
def rejects_file(path: Path) -> Iterator[TextIO]:
    """A new file, in `path`'s folder, that takes `path`'s place once the block ends without
    an error (a non-empty list it replaces is kept, and said so); when it raises, `path` is
    untouched and what was listed is added to `interrupted_of(path)` (if anything was)."""
    partial = path.with_name(path.name + ".partial")
    with partial.open("w", encoding="utf-8") as file:
        try:
            yield file
        except BaseException:
            file.close()
            _keep_interrupted(partial, interrupted_of(path))
            raise
    if path.exists() and path.stat().st_size > 0:
        os.replace(path, previous_of(path))
        print(f"the list of the run before is kept in {previous_of(path)}")
    os.replace(partial, path)


def _keep_interrupted(partial: Path, kept: Path) -> None:
    """Add what `partial` lists to `kept` (an earlier interrupted run's list stays), then
    remove it. A failure here is told, never raised over the run's own error."""
    try:
        if partial.stat().st_size > 0:
            with partial.open("rb") as listed, kept.open("ab") as into:
                shutil.copyfileobj(listed, into)
            print(f"listed before the end: {kept}", file=sys.stderr)
        partial.unlink()
    except OSError as exc:
        print(f"the list of this run stays in {partial}: {exc}", file=sys.stderr)


__all__ = ["interrupted_of", "previous_of", "rejects_file"]

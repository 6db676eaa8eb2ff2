"""Progress of a run: a tqdm bar on a terminal, plain periodic log lines otherwise."""

from __future__ import annotations

import logging
import time
from typing import TextIO

from tqdm import tqdm
from typing_extensions import Never

from docstore.migrate.summary import MigrationSummary

logger = logging.getLogger("docstore.migrate")


class BarProgress:
    """A progress bar over the keys scanned (DBSIZE at the start is the total)."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar: tqdm[Never] | None = None

    def __call__(self, summary: MigrationSummary) -> None:
        bar = self._bar
        if bar is None:
            bar = self._bar = tqdm(
                total=summary.total_keys or None, unit="key", file=self._stream, dynamic_ncols=True
            )
        bar.update(summary.scanned_keys - bar.n)
        bar.set_postfix(
            migrated=summary.migrated,
            present=summary.already_present,
            rejected=summary.rejected,
            refresh=False,
        )

    def close(self) -> None:
        """Finish the bar (leaves it on screen)."""
        if self._bar is not None:
            self._bar.close()


class LogProgress:
    """One log line every `interval` seconds (for logs, CI, pipes)."""

    def __init__(self, interval: float = 5.0) -> None:
        self.interval = interval
        self._last = time.monotonic()

    def __call__(self, summary: MigrationSummary) -> None:
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        self._last = now
        total = f"/{summary.total_keys}" if summary.total_keys else ""
        logger.info(
            "scanned %d%s keys: %s %d, already present %d, rejected %d (%.0f rows/s)",
            summary.scanned_keys,
            total,
            "would migrate" if summary.dry_run else "migrated",
            summary.migrated,
            summary.already_present,
            summary.rejected,
            summary.rows_per_second,
        )

    def close(self) -> None:
        """Nothing to finish."""

"""Progress of a run: a tqdm bar on a terminal, plain periodic log lines otherwise."""

from __future__ import annotations

import logging
import time
from typing import TextIO

from tqdm import tqdm
from typing_extensions import Never

from docstore.migrate.summary import MigrationSummary, format_duration

logger = logging.getLogger("docstore.migrate")


def _eta(summary: MigrationSummary) -> str:
    """ ", ETA ..." from the keys scanned so far and the total, or nothing."""
    total, scanned = summary.total_keys, summary.scanned_keys
    if not total or not scanned or summary.duration_seconds <= 0 or scanned >= total:
        return ""
    remaining = (total - scanned) * summary.duration_seconds / scanned
    return f", ETA {format_duration(remaining)}"


class BarProgress:
    """A progress bar over the keys scanned (DBSIZE at the start is the total): rate, ETA."""

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
        counts = {
            "migrated": summary.migrated,
            "updated": summary.updated,
            "present": summary.already_present,
            "conflicts": summary.conflicts,
            "rejected": summary.rejected,
        }
        if summary.not_updated:  # only an insert-only run (--no-update) leaves changed tasks
            counts["not_updated"] = summary.not_updated
        bar.set_postfix(counts, refresh=False)

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
        not_updated = f", not updated {summary.not_updated}" if summary.not_updated else ""
        logger.info(
            "scanned %d%s keys: %s %d, already present %d, rejected %d, updated %d%s, "
            "conflicts %d (%.0f rows/s%s)",
            summary.scanned_keys,
            total,
            "would migrate" if summary.dry_run else "migrated",
            summary.migrated,
            summary.already_present,
            summary.rejected,
            summary.updated,
            not_updated,
            summary.conflicts,
            summary.rows_per_second,
            _eta(summary),
        )

    def close(self) -> None:
        """Nothing to finish."""

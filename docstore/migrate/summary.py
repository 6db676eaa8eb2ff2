"""Counters of a migration run, the rejects file (JSON lines) and the JSON report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from docstore.migrate.compare import MigrationConflict
from docstore.migrate.legacy_records import LegacyDocument, Reject

_Row = tuple[int, str, int | str, str]  # depth, label, value, note: one line of the text
_MAX_LABEL_WIDTH = 60
_VALUE_WIDTH = 8


@dataclass(slots=True)
class MigrationSummary:
    """What a run saw and did; `dry_run` runs count `migrated` as "would migrate" (and so on).

    The counts add up: scanned = task + result + skipped + repeated keys; task keys = migrated +
    updated + not updated + already present + conflicts + tasks rejected + vanished; result
    keys = with their task + orphans; rejected = tasks rejected + orphan results.
    `already_present` tasks are unchanged since the run that wrote them (no write); `updated`
    ones changed in Redis since and were brought up to date (`not_updated`: left as they are
    by an insert-only run); `conflicts` changed in Redis and in docstore: left alone.
    """

    dry_run: bool = False
    total_keys: int | None = None  # DBSIZE at the start: the progress bar's total
    scanned_keys: int = 0
    task_keys: int = 0
    result_keys: int = 0
    migrated: int = 0
    already_present: int = 0
    updated: int = 0
    not_updated: int = 0
    conflicts: int = 0
    skipped: int = 0
    repeated_keys: int = 0  # returned again by SCAN within a batch
    vanished: int = 0
    rejected: int = 0
    orphan_results: int = 0  # result:* without its task (counted in `rejected` too)
    sanitized: int = 0
    users_created: int = 0
    # Updated documents whose cached result was dropped from docstore's cache (None: the run
    # had no cache), and those it could not drop (docstore's Redis did not answer).
    cache_dropped: int | None = None
    cache_not_dropped: int = 0
    duration_seconds: float = 0.0
    reject_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        """Tasks written, found up to date, or found in conflict."""
        return (
            self.migrated + self.updated + self.not_updated + self.already_present + self.conflicts
        )

    @property
    def wrote_nothing(self) -> bool:
        """No document or user was written (or, in a dry run, would be)."""
        return self.migrated == self.updated == self.users_created == 0

    @property
    def tasks_rejected(self) -> int:
        """Task keys rejected (the other rejects are orphan results)."""
        return self.rejected - self.orphan_results

    @property
    def results_with_task(self) -> int:
        """Result keys whose task exists (migrated or rejected together with it)."""
        return self.result_keys - self.orphan_results

    @property
    def rows_per_second(self) -> float:
        """Processed tasks per second of the run."""
        return self.processed / self.duration_seconds if self.duration_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values (the `--report` file)."""
        data = asdict(self)
        data["tasks_rejected"] = self.tasks_rejected
        data["results_with_task"] = self.results_with_task
        data["reject_reasons"] = dict(self.reject_reasons.most_common())
        data["duration_seconds"] = round(self.duration_seconds, 3)
        data["rows_per_second"] = round(self.rows_per_second, 1)
        return data

    def text(self) -> str:
        """The summary for people, one count a line; an indented count is part of the one above."""
        verb = "would migrate" if self.dry_run else "migrated"
        users = "(not counted in a dry run)" if self.dry_run else self.users_created
        rows: list[_Row] = [
            (0, "scanned keys", self.scanned_keys, ""),
            (1, "task keys", self.task_keys, ""),
            (2, verb, self.migrated, ""),
            (
                2,
                "would update" if self.dry_run else "updated",
                self.updated,
                "changed in Redis since the run that wrote them",
            ),
            (2, "already present", self.already_present, "unchanged: not written"),
            (2, "conflicts", self.conflicts, "changed in docstore too: left alone, listed"),
            (2, "rejected", self.tasks_rejected, ""),
            (2, "vanished", self.vanished, "deleted while the migration ran"),
            (1, "result keys", self.result_keys, ""),
            (2, "with their task", self.results_with_task, "migrated or rejected with it"),
            (2, "without a task", self.orphan_results, "rejected"),
            (1, "other keys", self.skipped, "skipped, e.g. progress:*"),
        ]
        if self.not_updated:  # only an insert-only run (--no-update) leaves changed tasks
            at = next(i for i, row in enumerate(rows) if row[1] == "already present") + 1
            rows.insert(at, (2, "not updated", self.not_updated, "changed in Redis: left as is"))
        if self.repeated_keys:
            rows.append((1, "repeated by SCAN", self.repeated_keys, "read once"))
        rows.append((0, "rejected", self.rejected, ""))
        rows += [(1, reason, n, "") for reason, n in self.reject_reasons.most_common()]
        rows += [
            (0, "sanitized", self.sanitized, "NUL stripped or invalid UTF-8 replaced"),
            (0, "users created", users, ""),
            (0, "duration", format_duration(self.duration_seconds), self._rate()),
        ]
        width = min(max(2 * depth + len(label) for depth, label, _, _ in rows), _MAX_LABEL_WIDTH)
        lines = [_line(row, width) for row in rows]
        if self.updated and not self.dry_run:
            lines.extend(self._cache_lines())
        if self.wrote_nothing and self.task_keys and not self.dry_run:
            if self.not_updated:
                others = f" and {self.conflicts} conflicts (listed)" if self.conflicts else ""
                lines.append(
                    f"nothing written: {self.not_updated} changed task(s) left as is{others}"
                )
            else:
                others = f" but the {self.conflicts} conflicts (listed)" if self.conflicts else ""
                lines.append(f"nothing written: every task is up to date{others}")
        return "\n".join(lines)

    def _cache_lines(self) -> list[str]:
        if self.cache_dropped is None:
            return [
                "updated documents keep any copy in docstore's cache until it expires "
                "(CACHE_TTL): pass --cache-redis-url to drop them"
            ]
        if self.cache_not_dropped:
            return [
                f"{self.cache_not_dropped} updated documents may still be cached: docstore's "
                "Redis did not answer; their copies expire after CACHE_TTL"
            ]
        return []

    def _rate(self) -> str:
        if self.processed == 0 or self.duration_seconds <= 0:
            return "no rows"
        rate = self.rows_per_second
        return f"{rate:,.1f} rows/s" if rate < 10 else f"{rate:,.0f} rows/s"


def _line(row: _Row, label_width: int) -> str:
    depth, label, value, note = row
    text = f"{'  ' * depth + label:<{label_width}}  {value:>{_VALUE_WIDTH}}"
    return f"{text}  ({note})" if note else text


def format_duration(seconds: float) -> str:
    """A duration in the unit that reads best: ``0.4 ms``, ``28 ms``, ``2.0 s``, ``1 min 15 s``."""
    if seconds < 0.01:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


# Line breaks to `str.splitlines` (and to JavaScript) that JSON leaves unescaped.
_LINE_BREAKS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def json_line(value: dict[str, Any]) -> str:
    """One JSON line, readable text kept, but no character that any reader takes as a line end."""
    text = json.dumps(value, ensure_ascii=False).translate(_LINE_BREAKS)
    # A lone surrogate would make the file's UTF-8 encoder raise: written as its escape.
    return text.encode("utf-8", "backslashreplace").decode("utf-8") + "\n"


def reason_class(reason: str) -> str:
    """A reject reason without its quoted value, so that counters stay few."""
    return reason.split(":", 1)[0]


class RejectsWriter:
    """Counts rejects and sanitized records and writes each as a JSON line (if a stream is set)."""

    def __init__(self, summary: MigrationSummary, stream: TextIO | None = None) -> None:
        self.summary = summary
        self.stream = stream

    def reject(self, reject: Reject) -> None:
        """Count and list a record that was not migrated."""
        self.summary.rejected += 1
        self.summary.reject_reasons[reason_class(reject.reason)] += 1
        self._write({"key": reject.key, "reason": reject.reason, "outcome": "rejected"})

    def conflict(self, conflict: MigrationConflict) -> None:
        """Count and list a task left alone: changed in Redis and in docstore since migrated."""
        self.summary.conflicts += 1
        self._write(
            {
                "key": conflict.key,
                "reason": conflict.reason,
                "outcome": "conflict",
                "legacy": conflict.legacy,
                "docstore": conflict.docstore,
            }
        )

    def sanitized(self, doc: LegacyDocument) -> None:
        """Count and list a record migrated with NULs stripped or invalid UTF-8 replaced."""
        self.summary.sanitized += 1
        self._write({"key": doc.key, "reason": "; ".join(doc.notes), "outcome": "sanitized"})

    def _write(self, line: dict[str, Any]) -> None:
        if self.stream is not None:
            self.stream.write(json_line(line))

    def flush(self) -> None:
        """Push what was written to the file (once per batch)."""
        if self.stream is not None:
            self.stream.flush()


def write_report(summary: MigrationSummary, path: Path) -> None:
    """Write the summary as JSON to `path`."""
    path.write_text(json.dumps(summary.as_dict(), indent=2) + "\n", encoding="utf-8")

"""Counters of a migration run, the rejects file (JSON lines) and the JSON report."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from docstore.migrate.legacy_records import LegacyDocument, Reject


@dataclass(slots=True)
class MigrationSummary:
    """What a run saw and did; `dry_run` runs count `migrated` as "would migrate"."""

    dry_run: bool = False
    total_keys: int | None = None  # DBSIZE at the start: the progress bar's total
    scanned_keys: int = 0
    task_keys: int = 0
    result_keys: int = 0
    migrated: int = 0
    already_present: int = 0
    skipped: int = 0
    vanished: int = 0
    rejected: int = 0
    sanitized: int = 0
    users_created: int = 0
    duration_seconds: float = 0.0
    reject_reasons: Counter[str] = field(default_factory=Counter)

    @property
    def processed(self) -> int:
        """Tasks written or found already written."""
        return self.migrated + self.already_present

    @property
    def rows_per_second(self) -> float:
        """Processed tasks per second of the run."""
        return self.processed / self.duration_seconds if self.duration_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values (the `--report` file)."""
        data = asdict(self)
        data["reject_reasons"] = dict(self.reject_reasons.most_common())
        data["duration_seconds"] = round(self.duration_seconds, 3)
        data["rows_per_second"] = round(self.rows_per_second, 1)
        return data

    def text(self) -> str:
        """The summary for people, one counter a line."""
        verb = "would migrate" if self.dry_run else "migrated"
        users = "(not counted in a dry run)" if self.dry_run else str(self.users_created)
        lines = [
            f"scanned keys     {self.scanned_keys}",
            f"task keys        {self.task_keys}",
            f"{verb:<16} {self.migrated}",
            f"already present  {self.already_present}",
            f"skipped          {self.skipped} (other keys, e.g. progress:*)",
            f"vanished         {self.vanished} (deleted while the migration ran)",
            f"rejected         {self.rejected}",
            f"sanitized        {self.sanitized} (NUL stripped or invalid UTF-8 replaced)",
            f"users created    {users}",
            f"duration         {self.duration_seconds:.1f} s ({self.rows_per_second:.0f} rows/s)",
        ]
        lines += [f"  {count:>6}  {reason}" for reason, count in self.reject_reasons.most_common()]
        return "\n".join(lines)


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

    def sanitized(self, doc: LegacyDocument) -> None:
        """Count and list a record migrated with NULs stripped or invalid UTF-8 replaced."""
        self.summary.sanitized += 1
        self._write({"key": doc.key, "reason": "; ".join(doc.notes), "outcome": "sanitized"})

    def _write(self, line: dict[str, str]) -> None:
        if self.stream is not None:
            self.stream.write(json.dumps(line, ensure_ascii=False) + "\n")

    def flush(self) -> None:
        """Push what was written to the file (once per batch)."""
        if self.stream is not None:
            self.stream.flush()


def write_report(summary: MigrationSummary, path: Path) -> None:
    """Write the summary as JSON to `path`."""
    path.write_text(json.dumps(summary.as_dict(), indent=2) + "\n", encoding="utf-8")

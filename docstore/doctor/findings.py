"""What `docstore doctor` finds and did: one `Finding` per broken invariant, one `DoctorReport`
per run (shared by the async doctor and its generated sync twin)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

FindingKind = Literal[
    "lease_expired",
    "stale_message",
    "dead_letter",
    "pending_unqueued",
    "blob_orphaned",
    "blob_missing",
    "cache_stale",
    "progress_stale",
]
# In the order the audits run (the summary lists them so).
FINDING_KINDS: tuple[FindingKind, ...] = (
    "lease_expired",
    "stale_message",
    "dead_letter",
    "pending_unqueued",
    "blob_orphaned",
    "blob_missing",
    "cache_stale",
    "progress_stale",
)
# How many findings a report keeps (the rest are counted and were handed to `on_finding`).
SAMPLE_SIZE = 100


class Finding(BaseModel):
    """One broken invariant: what, where, and what `--repair` did about it (None: nothing)."""

    model_config = ConfigDict(frozen=True)

    kind: FindingKind
    subject: str
    document_id: int | None = None
    detail: str
    repair: str | None = None


class DoctorReport(BaseModel):
    """Counts per kind of what was found and repaired, the first findings, and audits skipped."""

    repair: bool
    found: dict[str, int] = Field(default_factory=dict)
    repaired: dict[str, int] = Field(default_factory=dict)
    sample: list[Finding] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    # Audits left out because a server they need did not answer (Redis): the run is incomplete.
    unavailable: list[str] = Field(default_factory=list)

    @property
    def clean(self) -> bool:
        """True when every audit ran and none found anything."""
        return not self.unavailable and not any(self.found.values())

    @property
    def total(self) -> int:
        """Findings of every kind."""
        return sum(self.found.values())

    def summary(self) -> str:
        """One line: clean, or the counts per kind (and how many were repaired); a run that
        left audits out says so first."""
        if self.unavailable:
            left_out = f"incomplete: {len(self.unavailable)} audit(s) not run"
            return left_out + ("" if not any(self.found.values()) else f"; {self._counts()}")
        if self.clean:
            return "clean: no findings"
        return self._counts()

    def _counts(self) -> str:
        parts = []
        for kind in FINDING_KINDS:
            if self.found.get(kind):
                fixed = self.repaired.get(kind, 0)
                repaired_part = f" ({fixed} repaired)" if fixed else ""
                parts.append(f"{kind} {self.found[kind]}{repaired_part}")
        repaired = sum(self.repaired.values())
        if self.repair:
            head = f"{self.total} finding(s), {repaired} repaired"
        else:
            head = f"{self.total} finding(s), nothing changed (--repair fixes what is safe)"
        return f"{head}: " + ", ".join(parts)


class FindingLog:
    """Counts findings into a report and hands each to the caller's `on_finding` as it comes."""

    def __init__(self, report: DoctorReport, on_finding: Callable[[Finding], None] | None) -> None:
        self.report = report
        self.on_finding = on_finding

    def add(self, finding: Finding) -> None:
        report = self.report
        report.found[finding.kind] = report.found.get(finding.kind, 0) + 1
        if finding.repair is not None:
            report.repaired[finding.kind] = report.repaired.get(finding.kind, 0) + 1
        if len(report.sample) < SAMPLE_SIZE:
            report.sample.append(finding)
        if self.on_finding is not None:
            self.on_finding(finding)


__all__ = ["FINDING_KINDS", "SAMPLE_SIZE", "DoctorReport", "Finding", "FindingKind", "FindingLog"]

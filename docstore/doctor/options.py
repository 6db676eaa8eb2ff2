"""The doctor's options and their rules: one definition for both doctors and the command line
(which checks them before it connects)."""

from __future__ import annotations

from typing import Any

from docstore.rules import Checker, Flag, Seconds, checked_limit

DEFAULT_GRACE = 300.0
DEFAULT_BATCH_SIZE = 1000
MAX_BATCH_SIZE = 10_000

check_grace: Checker[float] = Checker(Seconds, "grace")
# True or False only: a truthy "false" must never switch destructive repairs on.
check_repair: Checker[bool] = Checker(Flag, "repair")


def check_batch_size(value: Any) -> int:
    """Rows, keys or blobs read at a time: 1 to `MAX_BATCH_SIZE`."""
    return checked_limit(value, MAX_BATCH_SIZE)


__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_GRACE",
    "MAX_BATCH_SIZE",
    "check_batch_size",
    "check_grace",
    "check_repair",
]

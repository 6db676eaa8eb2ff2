"""The sync twins of `docstore._async_runtime`: the same names, doing the blocking thing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def sleep(seconds: float) -> None:
    """Wait (the calling thread)."""
    time.sleep(seconds)


def in_thread(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `function` here: the sync side is already on its caller's thread."""
    return function(*args, **kwargs)


__all__ = ["in_thread", "sleep"]

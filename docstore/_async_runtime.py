"""What differs between the async and the sync side beyond `async`/`await`: waiting and threads.

Async sources import these names from here; `tools/async_to_sync.py` points the generated sync
modules at `docstore._sync_runtime`, which has the same names doing the blocking thing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


async def sleep(seconds: float) -> None:
    """Wait without blocking the event loop."""
    await asyncio.sleep(seconds)


async def in_thread(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run blocking or CPU-bound `function` (boto3, yoyo, an extractor) off the event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


__all__ = ["in_thread", "sleep"]

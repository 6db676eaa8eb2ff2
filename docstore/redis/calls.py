"""The zero-argument calls the Redis core and the Redis side pass around, async and sync.

An async source annotates with `AsyncCall[R]` (a coroutine function); `tools/async_to_sync.py`
renames it to `Call[R]` (a plain function) in the generated sync module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

R = TypeVar("R")

AsyncCall: TypeAlias = Callable[[], Awaitable[R]]
Call: TypeAlias = Callable[[], R]

__all__ = ["AsyncCall", "Call"]

"""The sync twins of `docstore._async_runtime`: the same names, doing the blocking thing."""

from __future__ import annotations

import contextvars
import inspect
import threading
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeAlias, TypeVar

from docstore.errors import InvalidInput

A = TypeVar("A")
P = ParamSpec("P")
R = TypeVar("R")

# A zero-argument function (the async side's twin is a coroutine function, `AsyncCall`).
Call: TypeAlias = Callable[[], R]
# A one-argument function (the async side's twin is `AsyncCallWith`).
CallWith: TypeAlias = Callable[[A], R]
# One holder at a time (the async side's: an asyncio lock).
Lock = threading.Lock


def sleep(seconds: float) -> None:
    """Wait (the calling thread)."""
    time.sleep(seconds)


def awaited(value: R, field: str) -> R:
    """`value`, which a caller's function returned; `InvalidInput` naming `field` when it is
    awaitable (an async function was given where a plain one is asked for)."""
    if inspect.isawaitable(value):
        if inspect.iscoroutine(value):
            value.close()  # never awaited: no warning about it
        raise InvalidInput(f"{field} must be a plain function, not an async one", field=field)
    return value


def in_thread(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `function` here: the sync side is already on its caller's thread."""
    return stop_as_error(function, *args, **kwargs)


def in_thread_or_undone(
    undo: Callable[[R], object],
    stop: Callable[[], object],
    function: Callable[P, R],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """`function(*args)`: an interrupt stops it where it runs, leaving no result to undo."""
    return in_thread(function, *args, **kwargs)


def stop_as_error(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """`function(*args)`, with a `StopIteration` it raises (`next()` on an empty iterator in an
    extractor or a stream's `read`) turned into a `RuntimeError`: an asyncio future cannot
    carry a StopIteration, and the awaiting task would wait for good. Both sides raise the same."""
    try:
        return function(*args, **kwargs)
    except StopIteration as exc:
        name = getattr(function, "__qualname__", repr(function))
        raise RuntimeError(f"{name} raised StopIteration") from exc


def while_beating(work: Call[R], every: float, beat: Call[object]) -> R:
    """`work()`, and `beat()` every `every` seconds meanwhile, on a thread of its own that
    runs in a copy of the caller's context (its trace, as a task does on the async side). An
    error of `beat` ends the beating, not the work. The beating stops with the work (after
    a beat in flight)."""
    done = threading.Event()

    def beating() -> None:
        while not done.wait(every):
            try:
                beat()
            except Exception:  # noqa: BLE001 - see the docstring
                return

    context = contextvars.copy_context()
    beater = threading.Thread(
        target=context.run, args=(beating,), name="docstore-heartbeat", daemon=True
    )
    beater.start()
    try:
        return work()
    finally:
        done.set()
        beater.join()


def finish(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Call `function`: nothing cancels a call on the sync side."""
    return function(*args, **kwargs)


def blocking_caller() -> Callable[..., Any]:
    """A function that runs one of our functions with its arguments (the sync side has no
    loop to hand calls to)."""

    def call(function: Callable[..., R], *args: Any) -> R:
        return function(*args)

    return call


def cancels_asked() -> int:
    """0: nothing cancels a call on the sync side."""
    return 0


def cancel_was_dropped(asked: int) -> bool:
    """False: nothing cancels a call on the sync side."""
    return False


def cancelled_once(call: Call[R]) -> R:
    """`call()`: nothing cancels a call on the sync side."""
    return call()


def take_or_cancel(take: Call[R], give_back: Callable[[R], object]) -> R:
    """`take()`: nothing cancels a call on the sync side."""
    return take()


__all__ = [
    "Call",
    "CallWith",
    "Lock",
    "awaited",
    "blocking_caller",
    "cancel_was_dropped",
    "cancelled_once",
    "cancels_asked",
    "finish",
    "in_thread",
    "in_thread_or_undone",
    "sleep",
    "stop_as_error",
    "take_or_cancel",
    "while_beating",
]

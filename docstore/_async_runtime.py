"""What differs between the async and the sync side beyond `async`/`await`: waiting and threads.

Async sources import these names from here; `tools/async_to_sync.py` points the generated sync
modules at `docstore._sync_runtime`, which has the same names doing the blocking thing.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, NoReturn, ParamSpec, TypeAlias, TypeVar, cast

P = ParamSpec("P")
R = TypeVar("R")

# A zero-argument coroutine function (the sync side's twin is a plain function, `Call`).
AsyncCall: TypeAlias = Callable[[], Awaitable[R]]


async def sleep(seconds: float) -> None:
    """Wait without blocking the event loop."""
    await asyncio.sleep(seconds)


async def in_thread(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run blocking or CPU-bound `function` (boto3, yoyo, an extractor) off the event loop."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def finish(
    function: Callable[P, Coroutine[Any, Any, R]], /, *args: P.args, **kwargs: P.kwargs
) -> R:
    """Await `function(*args)` to its end even when the calling task is cancelled meanwhile (the
    cancel is raised once it ended): for steps that must not be cut off, such as giving a
    connection back to its pool or releasing a lock."""
    step = function(*args, **kwargs)
    try:
        waiting_on = step.send(None)  # its first part here: most such steps never wait at all
    except StopIteration as done:
        return cast(R, done.value)
    return await _finish_task(asyncio.ensure_future(_resume(step, waiting_on)))


async def _resume(step: Coroutine[Any, Any, R], waiting_on: Any) -> R:
    """Drive `step` on from where it first waited (on `waiting_on`, the future it yielded)."""
    while True:
        if waiting_on is None:  # a bare yield (sleep(0)): one turn of the loop
            await asyncio.sleep(0)
        else:
            # What a Task does with a future its coroutine yielded: wait for it to be done;
            # `step` reads its outcome (result or error) when resumed.
            waiting_on._asyncio_future_blocking = False
            await asyncio.wait([waiting_on])
        try:
            waiting_on = step.send(None)
        except StopIteration as done:
            return cast(R, done.value)


async def _finish_task(task: asyncio.Future[R]) -> R:
    cancel: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            # Also when the step ended just as the cancel came: raised below. The first one
            # itself, so that anyio's cancel scopes still know it as theirs.
            cancel = cancel or exc
    if cancel is not None:
        task.result()  # its own error first, if it failed
        raise cancel
    return task.result()


def blocking_caller() -> Callable[..., Any]:
    """A function that code on another thread (an extractor run by `in_thread`) calls to run
    one of our coroutine functions on this event loop, waiting for its result."""
    loop = asyncio.get_running_loop()

    def call(function: Callable[..., Coroutine[Any, Any, R]], *args: Any) -> R:
        return asyncio.run_coroutine_threadsafe(function(*args), loop).result()

    return call


def cancels_asked() -> int:
    """How many cancels of the running task are pending (asked for, not yet taken back); 0
    outside a task, and on Python 3.10, which cannot tell (no `Task.cancelling()`)."""
    task = asyncio.current_task()
    if sys.version_info >= (3, 11) and task is not None:
        return task.cancelling()
    return 0


def cancel_was_dropped(asked: int) -> bool:
    """Whether a cancel was asked for since `cancels_asked()` returned `asked`, yet the awaited
    call returned or raised something else: some wait inside dropped it (`asyncio.wait_for`
    before Python 3.12 returns a result that arrives with the cancel, CPython gh-86296)."""
    return cancels_asked() > asked


async def raise_dropped_cancel() -> NoReturn:
    """Raise the cancel a wait dropped. One turn of the loop first: an anyio cancel scope asks
    again on every turn, with the message by which it knows the cancel as its own (a bare
    `CancelledError` would leave the scope); `asyncio.timeout` takes either."""
    await asyncio.sleep(0)
    raise asyncio.CancelledError


async def take_or_cancel(
    take: AsyncCall[R], give_back: Callable[[R], Coroutine[Any, Any, object]]
) -> R:
    """`await take()` (a pool's checkout); if its wait dropped a cancel, give what it took
    back (to its end, see `finish`) and raise the cancel, also in place of an error."""
    asked = cancels_asked()
    try:
        taken = await take()
    except Exception:
        if cancel_was_dropped(asked):
            await raise_dropped_cancel()
        raise
    if cancel_was_dropped(asked):
        await finish(give_back, taken)
        await raise_dropped_cancel()
    return taken


__all__ = [
    "AsyncCall",
    "blocking_caller",
    "cancel_was_dropped",
    "cancels_asked",
    "finish",
    "in_thread",
    "raise_dropped_cancel",
    "sleep",
    "take_or_cancel",
]

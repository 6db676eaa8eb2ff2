"""What differs between the async and the sync side beyond `async`/`await`: waiting and threads.

Async sources import these names from here; `tools/async_to_sync.py` points the generated sync
modules at `docstore._sync_runtime`, which has the same names doing the blocking thing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from typing import Any, NoReturn, ParamSpec, TypeAlias, TypeVar, cast

from docstore._sync_runtime import stop_as_error
from docstore.errors import InvalidInput

logger = logging.getLogger("docstore")

A = TypeVar("A")
P = ParamSpec("P")
R = TypeVar("R")

# A zero-argument coroutine function (the sync side's twin is a plain function, `Call`).
AsyncCall: TypeAlias = Callable[[], Awaitable[R]]
# A one-argument coroutine function (the sync side's twin is `CallWith`).
AsyncCallWith: TypeAlias = Callable[[A], Awaitable[R]]
# One holder at a time, waiting without blocking the loop (the sync side's: a thread lock).
Lock = asyncio.Lock


async def sleep(seconds: float) -> None:
    """Wait without blocking the event loop."""
    await asyncio.sleep(seconds)


async def awaited(value: Awaitable[R], field: str) -> R:
    """The result of `value`, which a caller's function returned where an async one is asked
    for; `InvalidInput` naming `field` when it is no awaitable (a plain function was given)."""
    if not inspect.isawaitable(value):
        message = f"{field} must be an async function (its result is awaited)"
        raise InvalidInput(message, field=field)
    return await value


async def in_thread(function: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
    """Run blocking or CPU-bound `function` (boto3, yoyo, an extractor) off the event loop."""
    return await asyncio.to_thread(stop_as_error, function, *args, **kwargs)


async def in_thread_or_undone(
    undo: Callable[[R], object],
    stop: Callable[[], object],
    function: Callable[P, R],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """`in_thread(function, *args)`, for a function whose result must not outlive a cancelled
    caller (a blob no row will name). A thread cannot be stopped: on a cancel, `stop()` asks
    the function to end early (no I/O), its thread is waited for, and what it returned all the
    same goes to `undo` (on a thread too) before the cancel is raised."""
    work = asyncio.ensure_future(in_thread(function, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        # Neither step may replace the cancel, nor stop the wait for the thread.
        try:
            stop()
        except Exception:
            logger.warning("could not stop %r early", function, exc_info=True)

        async def undone() -> None:
            try:
                result = await work
            except Exception:  # noqa: BLE001 - it ended without a result: nothing to undo
                return
            try:
                await in_thread(undo, result)
            except Exception:
                logger.warning("could not undo what %r made", function, exc_info=True)

        await finish(undone)
        raise


async def while_beating(work: AsyncCall[R], every: float, beat: AsyncCall[object]) -> R:
    """`await work()`, and `await beat()` every `every` seconds meanwhile (a lease's heartbeat
    while an extractor runs). An error of `beat` ends the beating, not the work: `beat` tells
    what it found its own way. The beating stops with the work."""

    async def beating() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await beat()
            except Exception:  # noqa: BLE001 - see the docstring
                return

    beater = asyncio.ensure_future(beating())
    try:
        return await work()
    finally:
        beater.cancel()
        await finish(asyncio.wait, [beater])  # a beat in flight ends first (also if cancelled)


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
    task, cancel = await _through(step, waiting_on)
    if cancel is not None:
        task.result()  # its own error first, if it failed
        raise cancel
    return task.result()


async def _through(
    step: Coroutine[Any, Any, R], waiting_on: Any
) -> tuple[asyncio.Future[R], asyncio.CancelledError | None]:
    """Go on with `step` (it first waited on `waiting_on`) in a task of its own, which the
    caller's cancels do not cut short. Returns that task, done (its value or error are read
    from it), and the first cancel (None if none): the first itself, so that an anyio cancel
    scope still knows it as its own. Also a cancel that came just as the step ended."""
    task = asyncio.ensure_future(resumed(step, waiting_on))
    cancel: asyncio.CancelledError | None = None
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError as exc:
            if cancel is None:
                cancel = exc
        except Exception:  # noqa: BLE001, S110 - the task's own error: the caller reads it there
            pass
    return task, cancel


@types.coroutine
def _continue(step: Coroutine[Any, Any, R], waiting_on: Any) -> Generator[Any, Any, R]:
    """Go on with `step` from where it first waited (on `waiting_on`, what it yielded), as if it
    were awaited here: the task running this runs `step`, and a cancel of that task reaches
    `step` where it waits, as it would in a task of its own."""
    while True:
        try:
            sent = yield waiting_on
        except BaseException as exc:  # noqa: BLE001 - handed on to `step`, as a task would
            try:
                waiting_on = step.throw(exc)
            except StopIteration as done:
                return cast(R, done.value)
        else:
            try:
                waiting_on = step.send(sent)
            except StopIteration as done:
                return cast(R, done.value)


async def resumed(step: Coroutine[Any, Any, R], waiting_on: Any) -> R:
    """Await `step`, a coroutine already started that now waits on `waiting_on` (what its first
    `send(None)` returned), in the calling task: as if it had been awaited here from its start."""
    return await _continue(step, waiting_on)


async def cancelled_once(call: Callable[[], Coroutine[Any, Any, R]]) -> R:
    """`await call()` (a statement, a COMMIT), cancelled once at most: the first cancel of the
    caller reaches it where it waits, and the caller's later cancels wait until its reaction
    has run to its end; then the first is raised. An anyio cancel scope asks again on every
    turn of the loop: psycopg answers a first cancel by cancelling the statement on the server
    and reading its outcome, and a second one made it close the socket instead, leaving the
    statement to run on (and commit) after the caller was told it was cancelled. No task is
    made unless a cancel comes."""
    step = call()
    ended, outcome, cancel = await _in_place_until_cancelled(step)
    if cancel is None:
        return cast(R, outcome)
    if not ended:
        task, _ = await _through(step, outcome)
        if not task.cancelled():
            task.exception()  # retrieved: the cancel is what the caller gets
    raise cancel


class _Failed:
    """What a step raised (an error in answer to a cancel), kept as its outcome."""

    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


@types.coroutine
def _in_place_until_cancelled(
    step: Coroutine[Any, Any, R],
) -> Generator[Any, Any, tuple[bool, Any, asyncio.CancelledError | None]]:
    """Run `step` as if awaited here until it ends, (True, its value, None), or a cancel comes:
    the cancel is handed to `step`, and then (False, what `step` now waits on, the cancel) is
    returned, or (True, its value, the cancel) if it ended at once: an error it answered the
    cancel with at once is returned as its value, `_Failed(error)`."""
    try:
        waiting_on = step.send(None)
    except StopIteration as done:
        return True, done.value, None
    while True:
        try:
            sent = yield waiting_on
        except asyncio.CancelledError as cancel:
            try:
                return False, step.throw(cancel), cancel
            except StopIteration as done:
                return True, done.value, cancel
            except Exception as error:  # noqa: BLE001 - kept: the cancel is raised in its place
                return True, _Failed(error), cancel
        except BaseException as exc:  # noqa: BLE001 - handed on to `step`, as a task would
            try:
                waiting_on = step.throw(exc)
            except StopIteration as done:
                return True, done.value, None
        else:
            try:
                waiting_on = step.send(sent)
            except StopIteration as done:
                return True, done.value, None


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
    take: Callable[[], Coroutine[Any, Any, R]],
    give_back: Callable[[R], Coroutine[Any, Any, object]],
) -> R:
    """`await take()` (a pool's checkout), cancelled once at most: a cancel of the caller cancels
    the checkout once and waits for its own clean-up. An anyio cancel scope asks again on every
    turn of the loop, which would cut that clean-up short (psycopg_pool gives back a connection
    it was checking with an `await`, and lost it). What the checkout took anyway, or took
    while a wait inside dropped the cancel, is given back (to its end, see `finish`), and the
    cancel raised, also in place of an error.

    The checkout runs in place, as `cancelled_once` runs a statement: a task of its own is
    made only for the clean-up after a cancel. (A task and a shield for every checkout that
    waits, as before, cost 7.7 µs of CPU where this costs 3.0, on uvloop with 64 tasks.) Its
    waits then share the caller's task: a cancel its own timeout scope made and took back
    (psycopg_pool's `wait_for` from Python 3.12) is not the caller's, and its outcome stands."""
    asked = cancels_asked()
    step = take()
    try:
        ended, outcome, cancel = await _in_place_until_cancelled(step)
    except Exception as error:  # noqa: BLE001 - no cancel came: handled below as after one
        ended, outcome, cancel = True, _Failed(error), None
    if cancel is not None and not ended:  # its clean-up, to its end whatever else comes
        outcome = await _cleaned_up(step, outcome)
    if cancel is not None and _asked_by_the_caller(asked):
        if not isinstance(outcome, _Failed):  # it took a connection all the same
            await finish(give_back, outcome)
        raise cancel
    if isinstance(outcome, _Failed):
        if cancel_was_dropped(asked):
            await raise_dropped_cancel()
        raise outcome.error
    if cancel_was_dropped(asked):
        await finish(give_back, outcome)
        await raise_dropped_cancel()
    return cast(R, outcome)


async def _cleaned_up(step: Coroutine[Any, Any, R], waiting_on: Any) -> Any:
    """What `step` came to after it took a cancel (its value, or `_Failed`), once its clean-up,
    which later cancels do not cut short, has ended."""
    checkout, _ = await _through(step, waiting_on)
    if checkout.cancelled():
        return _Failed(asyncio.CancelledError())
    failure = checkout.exception()
    return checkout.result() if failure is None else _Failed(failure)


def _asked_by_the_caller(asked: int) -> bool:
    """Whether a cancel that reached a step in place came from the caller (its count of
    pending cancels still above `asked`); always, on Python 3.10, which cannot tell."""
    return sys.version_info < (3, 11) or cancels_asked() > asked


__all__ = [
    "AsyncCall",
    "AsyncCallWith",
    "Lock",
    "awaited",
    "blocking_caller",
    "cancel_was_dropped",
    "cancelled_once",
    "cancels_asked",
    "finish",
    "in_thread",
    "in_thread_or_undone",
    "raise_dropped_cancel",
    "resumed",
    "sleep",
    "take_or_cancel",
    "while_beating",
]

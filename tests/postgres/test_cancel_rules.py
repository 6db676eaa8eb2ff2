"""The cancel rules of a pool checkout (`take_or_cancel`) and a statement (`cancelled_once`), on
steps written to misbehave.

Both run their step in the caller's task until a cancel comes, so what the step does with that
cancel, and what its own waits do with theirs, meets the caller's own cancels. (The crowded-pool
and anyio-scope tests in tests/service/test_async_store.py run the same rules against psycopg
and psycopg_pool themselves.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from docstore._async_runtime import cancelled_once, take_or_cancel

Step = Callable[[], Coroutine[Any, Any, str]]


class CheckoutTimedOut(Exception):
    """What a pool raises when its own wait for a connection runs out."""


def _never() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def _as_checkout(step: Step, given_back: list[Any]) -> Coroutine[Any, Any, str]:
    async def give_back(connection: Any) -> None:
        given_back.append(connection)

    return take_or_cancel(step, give_back)


def _as_statement(step: Step, given_back: list[Any]) -> Coroutine[Any, Any, str]:
    return cancelled_once(step)


def _failing_when_cancelled(clean_up_waits: bool) -> Step:
    """A step that answers a cancel with an error, at once or after its clean-up waited."""

    async def step() -> str:
        try:
            await _never()
        except asyncio.CancelledError:
            if clean_up_waits:
                await asyncio.sleep(0)
            raise RuntimeError("the step broke while giving up") from None
        return "never"

    return step


async def _cancelled(run: Coroutine[Any, Any, str]) -> asyncio.Task[str]:
    """Run `run` in a task, cancel it once it waits (with a message, as anyio's scopes do), and
    return the task, done."""
    task = asyncio.ensure_future(run)
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel("the caller's own")
    await asyncio.wait([task])
    return task


@pytest.mark.parametrize("clean_up_waits", [False, True], ids=["at once", "after a wait"])
@pytest.mark.parametrize("wrap", [_as_checkout, _as_statement], ids=["checkout", "statement"])
def test_a_step_answering_the_cancel_with_an_error_raises_that_same_cancel(
    wrap: Callable[[Step, list[Any]], Coroutine[Any, Any, str]], clean_up_waits: bool
) -> None:
    # The caller's cancel scope knows its cancel by the object (anyio: by its message); an
    # error raised in its place must not replace it, nor become a cancel without its message.
    async def main() -> None:
        given_back: list[Any] = []
        task = await _cancelled(wrap(_failing_when_cancelled(clean_up_waits), given_back))
        with pytest.raises(asyncio.CancelledError) as raised:
            task.result()
        assert raised.value.args == ("the caller's own",)
        assert given_back == []

    asyncio.run(main())


def test_a_timeout_inside_the_checkout_is_its_own_error_not_a_cancel() -> None:
    # From Python 3.12 psycopg_pool's wait for a connection is a timeout scope in the caller's
    # task: its cancel, taken back by the scope, is not the caller's, even when the checkout's
    # clean-up after it waits.
    async def take() -> str:
        try:
            async with asyncio.timeout(0.01):
                await _never()
        except TimeoutError:
            await asyncio.sleep(0)  # its clean-up waits a turn
            raise CheckoutTimedOut("no connection within 0.01 s") from None
        return "connection"

    async def main() -> None:
        with pytest.raises(CheckoutTimedOut):
            await _as_checkout(take, [])
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    asyncio.run(main())


def test_a_connection_taken_despite_the_cancel_is_given_back() -> None:
    # The checkout finishes its clean-up after the cancel and returns a connection anyway (as
    # `asyncio.wait_for` before 3.12 can): it goes back, and the cancel is raised.
    async def take() -> str:
        try:
            await _never()
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            return "connection"
        return "never"

    async def main() -> None:
        given_back: list[Any] = []
        task = await _cancelled(_as_checkout(take, given_back))
        with pytest.raises(asyncio.CancelledError):
            task.result()
        assert given_back == ["connection"]

    asyncio.run(main())

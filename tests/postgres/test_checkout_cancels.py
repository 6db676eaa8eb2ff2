"""`take_or_cancel`, the pool checkout's cancel rule, on checkouts written to misbehave.

The checkout runs in the caller's task until a cancel comes, so what it does with that cancel,
and what its own waits do with theirs, meets the caller's own cancels. (The crowded-pool tests
in tests/service/test_async_store.py run the same rule against psycopg_pool itself.)
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from docstore._async_runtime import take_or_cancel


class CheckoutTimedOut(Exception):
    """What a pool raises when its own wait for a connection runs out."""


async def _run_cancelled(take: Any, given_back: list[Any]) -> asyncio.Task[Any]:
    """Run `take_or_cancel(take, ...)` in a task, cancel it once it waits (with a message, as
    anyio's scopes do), and return the task, done."""

    async def give_back(connection: Any) -> None:
        given_back.append(connection)

    task = asyncio.ensure_future(take_or_cancel(take, give_back))
    for _ in range(3):
        await asyncio.sleep(0)
    task.cancel("the caller's own")
    await asyncio.wait([task])
    return task


def test_a_checkout_answering_the_cancel_with_an_error_raises_that_same_cancel() -> None:
    # The caller's cancel scope knows its cancel by the object (anyio: by its message); an
    # error raised in its place must not replace it, nor become a cancel without its message.
    async def take() -> str:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            raise RuntimeError("the checkout broke while giving up") from None
        return "connection"

    async def main() -> None:
        given_back: list[Any] = []
        task = await _run_cancelled(take, given_back)
        with pytest.raises(asyncio.CancelledError) as raised:
            task.result()
        assert raised.value.args == ("the caller's own",)
        assert given_back == []

    asyncio.run(main())


def test_a_checkout_failing_in_its_clean_up_after_the_cancel_raises_that_same_cancel() -> None:
    # The same when the error comes after the clean-up waited: the shield around the clean-up
    # handed its error on in place of the cancel.
    async def take() -> str:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            raise RuntimeError("the checkout broke while giving up") from None
        return "connection"

    async def main() -> None:
        given_back: list[Any] = []
        task = await _run_cancelled(take, given_back)
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
                await asyncio.get_running_loop().create_future()
        except TimeoutError:
            await asyncio.sleep(0)  # its clean-up waits a turn
            raise CheckoutTimedOut("no connection within 0.01 s") from None
        return "connection"

    async def main() -> None:
        async def give_back(connection: Any) -> None:
            raise AssertionError("nothing was taken")

        with pytest.raises(CheckoutTimedOut):
            await take_or_cancel(take, give_back)
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    asyncio.run(main())


def test_a_connection_taken_despite_the_cancel_is_given_back() -> None:
    # The checkout finishes its clean-up after the cancel and returns a connection anyway (as
    # `asyncio.wait_for` before 3.12 can): it goes back, and the cancel is raised.
    async def take() -> str:
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            await asyncio.sleep(0)
            return "connection"
        return "never"

    async def main() -> None:
        given_back: list[Any] = []
        task = await _run_cancelled(take, given_back)
        with pytest.raises(asyncio.CancelledError):
            task.result()
        assert given_back == ["connection"]

    asyncio.run(main())

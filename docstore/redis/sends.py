"""Send each command of an asyncio client under a timeout scope, not under `asyncio.wait_for`.

With a socket timeout (docstore always sets one), redis-py's asyncio connection sends every
command as ``await asyncio.wait_for(send, socket_timeout)``. Before Python 3.12, `wait_for`
makes a task of the send: one more task and two more turns of the event loop per command, which
measured 35-40 us of CPU per command here (60 us -> 100 us for a GET), a third of its cost.

`send_under_timeout(client)` gives the client's pool a connection class that sends under a
timeout scope instead (`asyncio.timeout`, what redis-py reads under): the same limit, and the
same `redis.exceptions.TimeoutError` when it passes, without the task. The scope is set only
when the send has to wait (the socket's buffer is full, say with a frozen Redis): a send the
socket takes at once has nothing to cut short, and setting and cancelling the scope's timer
cost about 5 us per command (`benchmarks/bench_held.py`, GET with 32 tasks: 31.4 and 34.8 ->
28.2 and 28.5 us of CPU). Only docstore's own
clients (`new_redis`) get it, before their first connection; a sync client, a cluster client
(its nodes make their connections themselves) and Python 3.12 or later are left as they are.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from typing import Any

import redis.asyncio
from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)

# The timeout scope redis-py reads under: `asyncio.timeout`, or the async-timeout package that
# redis-py depends on before Python 3.11.3.
from redis.asyncio.connection import async_timeout as time_limit  # type: ignore[attr-defined]
from redis.exceptions import TimeoutError as RedisTimeoutError

from docstore._async_runtime import resumed

# 3.12 and later: `wait_for` makes no task (it is built on `asyncio.timeout`).
_WAIT_FOR_MAKES_A_TASK = sys.version_info < (3, 12)


class _SendsUnderTimeout(AbstractConnection):
    """A connection whose sends wait at most `socket_timeout` without a task of their own."""

    async def send_packed_command(
        self, command: str | bytes | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        if not timeout:
            await super().send_packed_command(command, check_health)
            return
        # Connecting and the health check (a PING and its reply) keep their own timeouts.
        if not self.is_connected:
            await self.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        if check_health:
            await self.check_health()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
        # Without socket_timeout the send is not wrapped in wait_for; only this task uses the
        # connection meanwhile (a pool hands it to one caller at a time).
        self.socket_timeout = None
        try:
            send = super().send_packed_command(command, check_health=False)
            try:
                waiting_on = send.send(None)
            except StopIteration:
                # Written without a wait (the socket took it): no timer to set and cancel.
                return
            async with time_limit(timeout):  # the socket is full: the rest of it, limited
                await resumed(send, waiting_on)
        except asyncio.TimeoutError:  # the builtin TimeoutError from 3.11
            # The send was cut off: redis-py has closed the connection. As redis-py says it.
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = timeout


class _Connection(_SendsUnderTimeout, Connection):
    pass


class _SSLConnection(_SendsUnderTimeout, SSLConnection):
    pass


class _UnixDomainSocketConnection(_SendsUnderTimeout, UnixDomainSocketConnection):
    pass


_UNDER_TIMEOUT: dict[type[Any], type[AbstractConnection]] = {
    Connection: _Connection,
    SSLConnection: _SSLConnection,
    UnixDomainSocketConnection: _UnixDomainSocketConnection,
}


def send_under_timeout(client: Any) -> None:
    """Make the asyncio `client`'s connections send under a timeout scope (see the module's
    docstring); anything else is left as it is. Call it before the client's first command."""
    if not _WAIT_FOR_MAKES_A_TASK or not isinstance(client, redis.asyncio.Redis):
        return
    pool = client.connection_pool
    replacement = _UNDER_TIMEOUT.get(pool.connection_class)
    if replacement is not None:
        pool.connection_class = replacement


def sends_without_wait_for(client: Any) -> bool:
    """Whether the asyncio `client` sends its commands without `asyncio.wait_for`: on Python 3.12
    and later, or once `send_under_timeout` changed it."""
    if not _WAIT_FOR_MAKES_A_TASK:
        return True
    pool = getattr(client, "connection_pool", None)
    return pool is not None and issubclass(pool.connection_class, _SendsUnderTimeout)


__all__ = ["send_under_timeout", "sends_without_wait_for"]

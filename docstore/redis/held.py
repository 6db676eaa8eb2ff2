# Generated from docstore/redis/held_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""Run a client's commands and pipelines on connections docstore holds between calls.

redis-py wraps every command in more than the command: a connection checked out of its pool and
back in (a lock each way, a readiness check, metrics hooks), a retry wrapper docstore's clients
never use (they make one attempt), and for a pipeline the same again around its round trip.
That came to a fifth to a quarter of a cache hit's CPU on either side
(`benchmarks/bench_held.py`: 57-64 → 45-47 µs with 32 asyncio tasks, 33-36 → 24-26 µs on the
sync client).

`hold_connections(client)` gives docstore's own clients (`new_redis`) a shorter way, the same
on both sides:

- single commands (`execute_command`) and pipelines without MULTI (`pipeline(transaction=
  False)`, what docstore uses) go out on a connection from a list the client keeps, and it goes
  back on that list after the reply (at most half the pool's `max_connections` are kept idle:
  what still checks one out of the pool, MULTI, WATCH, pub/sub, finds room: threads sharing a
  sync client may hold a few more);
- the commands, their encoding and the parsing of their replies are redis-py's own
  (`send_command`, `pack_commands`, `parse_response`), on connections of the client's pool: its
  timeouts, health checks and `max_connections` apply, and closing the client closes them;
- a held connection is checked before each use as the pool checks one: with data waiting, or
  its server gone, it goes back to the pool, which reconnects it;
- a call that fails other than by Redis refusing a command (that reply was read in full), or is
  cancelled, closes its connection and gives it back to the pool: replies nobody will read may
  be on their way;
- after a fork the list starts empty: the parent's sockets are not the child's.

A pipeline with MULTI (`transaction=True` or `multi()`), WATCH, a script registered on it or a
connection of its own, and HIMPORT (whose wire form depends on its connection), go through
redis-py as before.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection
from redis.exceptions import RedisError, ResponseError

# The pool's own readiness check: `can_read` (redis-py 8; the sync client's in every version),
# else `can_read_destructive` (the asyncio client's before 8, deprecated since).
_PENDING = "can_read" if hasattr(AbstractConnection, "can_read") else "can_read_destructive"
# What the check raises for a connection that cannot be used as it stands (closed, or its
# server gone).
_NOT_READY = (RedisError, OSError)
# Idle connections held at most: half the pool's `max_connections` (100 by default in redis-py
# 8, 2**31 before), so what still checks one out of the pool (MULTI, WATCH, pub/sub) always
# finds room (threads sharing a sync client may hold a few more), and no more than a busy
# process reuses.
_MOST_HELD = 128
# Commands whose wire form depends on their connection's state (redis-py 8 prepares HIMPORT's
# field sets per connection): redis-py's own way.
_OWN_WAY = ("HIMPORT",)


@functools.lru_cache(maxsize=512)
def _own_way(name: str | bytes) -> bool:
    """Whether the command named `name` goes through redis-py's own way (`_OWN_WAY`); kept
    per name, as a client uses a few dozen."""
    text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return text.upper().startswith(_OWN_WAY)


class HeldConnections:
    """The connections one client holds between calls (see the module's docstring)."""

    __slots__ = ("_idle", "_most", "_pid", "client", "plain_execute", "pool")

    def __init__(self, client: redis.Redis) -> None:
        # redis-py's annotations of its connections differ between its two sides: Any here.
        self.client: Any = client
        self.plain_execute: Any = client.execute_command  # redis-py's own way
        self.pool: Any = client.connection_pool
        self._idle: list[Any] = []
        self._most = min(self.pool.max_connections // 2, _MOST_HELD)
        self._pid = os.getpid()

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """One command and its parsed reply, as `Redis.execute_command` returns it."""
        if _own_way(args[0]):
            return self.plain_execute(*args, **options)
        conn = self._take()
        try:
            conn.send_command(*args)
            reply = self.client.parse_response(conn, args[0], **options)
        except ResponseError:
            self._put_back(conn)  # Redis refused it: its whole reply was read
            raise
        except BaseException:
            self._drop(conn)
            raise
        self._put_back(conn)
        return reply

    def execute_pipeline(
        self, commands: Sequence[tuple[Sequence[Any], Mapping[str, Any]]], raise_on_error: bool
    ) -> list[Any]:
        """The parsed replies of `commands` (a pipeline's `command_stack`) sent in one round
        trip; a command Redis refused has its error in its place, or raised after every reply
        was read when `raise_on_error`."""
        if not commands:
            return []
        conn = self._take()
        try:
            conn.send_packed_command(conn.pack_commands([args for args, _ in commands]))
            replies: list[Any] = []
            for args, options in commands:
                try:
                    replies.append(self.client.parse_response(conn, args[0], **options))
                except ResponseError as error:
                    replies.append(error)
        except BaseException:
            self._drop(conn)
            raise
        self._put_back(conn)
        if raise_on_error:
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply
        return replies

    def execute_pipe(
        self, pipe: Any, run: Callable[[bool], Any], raise_on_error: bool = True
    ) -> list[Any]:
        """The `execute` of a pipeline without MULTI: its commands on a held connection, or
        `run` (redis-py's own `execute`) when it needs redis-py's way."""
        if _needs_redis_py(pipe):
            replies: list[Any] = run(raise_on_error)
            return replies
        try:
            return self.execute_pipeline(pipe.command_stack, raise_on_error)
        finally:
            pipe.command_stack = []  # as redis-py's `reset` leaves it

    def _take(self) -> Any:
        """A held connection ready for a command, else one from the pool."""
        if self._pid != os.getpid():
            self._idle, self._pid = [], os.getpid()
        while True:
            try:
                conn = self._idle.pop()  # not `while self._idle`: threads share a sync client
            except IndexError:
                return self.pool.get_connection()
            try:
                if not getattr(conn, _PENDING)():
                    return conn
            except _NOT_READY:
                pass
            except BaseException:  # a cancel (redis-py 5-7 waits a turn of the loop here)
                self._drop(conn)
                raise
            self._drop(conn)

    def _put_back(self, conn: Any) -> None:
        """Hold `conn` for the next call, or give it back to the pool when enough are held."""
        if len(self._idle) < self._most:
            self._idle.append(conn)
        else:
            self.pool.release(conn)

    def _drop(self, conn: Any) -> None:
        """Close `conn` (replies nobody will read may be on their way) and give it back to the
        pool, which reconnects it when it hands it out again."""
        try:
            # nowait: no wait for the server's goodbye. A connection that fails even to close
            # is given back all the same, and the call's own error is the one raised.
            with contextlib.suppress(Exception):
                conn.disconnect(True)
        finally:
            self.pool.release(conn)


def hold_connections(client: redis.Redis) -> None:
    """Make `client` (one of docstore's own, with no retries) send its commands and its
    pipelines without MULTI on held connections. Call it before the client's first command."""
    held = HeldConnections(client)
    make_pipeline = client.pipeline

    def pipeline(transaction: bool = True, shard_hint: str | None = None) -> Any:
        pipe: Any = make_pipeline(transaction, shard_hint)
        if not transaction:
            run = pipe.execute

            def execute(raise_on_error: bool = True) -> list[Any]:
                return held.execute_pipe(pipe, run, raise_on_error)

            pipe.execute = execute
        return pipe

    shell: Any = client  # its methods are replaced on this instance
    shell.execute_command = held.execute_command
    shell.pipeline = pipeline


def _needs_redis_py(pipe: Any) -> bool:
    """Whether a pipeline without MULTI needs redis-py's own `execute`: scripts to load, WATCH,
    MULTI asked for after all, a connection of its own, or HIMPORT."""
    if pipe.scripts or pipe.watching or pipe.explicit_transaction or pipe.connection:
        return True
    return any(_own_way(args[0]) for args, _ in pipe.command_stack)


__all__ = ["HeldConnections", "hold_connections"]

"""The shipped Lua scripts (`docstore/redis/lua/*.lua`): read once per process;
`AsyncRedisCore.script` registers each once per core."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError
from redis.typing import EncodableT

from docstore.errors import ConfigurationError
from docstore.observability.redis_commands import name_script
from docstore.redis.client_async import RedisClient

# One call of a script: its keys (one cluster slot) and its arguments.
ScriptCall = tuple[Sequence[str], Sequence[EncodableT]]


@cache
def lua_source(name: str) -> str:
    """Text of the shipped script ``docstore/redis/lua/<name>.lua`` (read once per process)."""
    path = resources.files("docstore.redis") / "lua" / f"{name}.lua"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"docstore is installed without lua/{name}.lua") from exc


class AsyncLuaScript:
    """A shipped script registered on a client; calls are a bare EVALSHA.

    On NOSCRIPT (Redis restarted or its script cache was flushed) the call goes through
    redis-py's `AsyncScript`, which loads the source again and retries once.
    """

    __slots__ = ("client", "script")

    def __init__(self, client: RedisClient, name: str) -> None:
        self.client = client
        self.script: AsyncScript = client.register_script(lua_source(name))
        name_script(self.script.sha, name)  # its spans say which script ran

    async def __call__(self, keys: Sequence[str], *args: EncodableT) -> Any:
        """Run the script with `keys` (one cluster slot) and `args`; the raw reply."""
        try:
            return await self.client.evalsha(self.script.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.script(keys=keys, args=args)

    async def run_many(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Run the script once per `(keys, args)` of `calls` in one pipeline (one round trip; on
        a cluster, one per node); the raw replies in order. A call Redis refuses raises its
        error. On NOSCRIPT the source is loaded and only the calls that did not run run again."""
        replies = await self._pipelined(calls)
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            await self.client.script_load(self.script.script)
            again = await self._pipelined([calls[i] for i in missing])
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _pipelined(self, calls: Sequence[ScriptCall]) -> list[Any]:
        pipe: Any = self.client.pipeline(transaction=False)  # a cluster's too: untyped here
        for keys, args in calls:
            pipe.evalsha(self.script.sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        return replies


__all__ = ["AsyncLuaScript", "ScriptCall", "lua_source"]

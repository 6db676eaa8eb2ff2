# Generated from docstore/redis/scripts_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""The shipped Lua scripts (`docstore/redis/lua/*.lua`): read once per process;
`RedisCore.script` registers each once per core."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any

import redis.exceptions
from redis.commands.core import Script
from redis.typing import EncodableT

from docstore.errors import ConfigurationError
from docstore.observability.redis_commands import name_script
from docstore.redis.client import RedisClient


@cache
def lua_source(name: str) -> str:
    """Text of the shipped script ``docstore/redis/lua/<name>.lua`` (read once per process)."""
    path = resources.files("docstore.redis") / "lua" / f"{name}.lua"
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigurationError(f"docstore is installed without lua/{name}.lua") from exc


class LuaScript:
    """A shipped script registered on a client; calls are a bare EVALSHA.

    On NOSCRIPT (Redis restarted or its script cache was flushed) the call goes through
    redis-py's `Script`, which loads the source again and retries once.
    """

    __slots__ = ("client", "script")

    def __init__(self, client: RedisClient, name: str) -> None:
        self.client = client
        self.script: Script = client.register_script(lua_source(name))
        name_script(self.script.sha, name)  # its spans say which script ran

    def __call__(self, keys: Sequence[str], *args: EncodableT) -> Any:
        """Run the script with `keys` (one cluster slot) and `args`; the raw reply."""
        try:
            return self.client.evalsha(self.script.sha, len(keys), *keys, *args)
        except redis.exceptions.NoScriptError:
            return self.script(keys=keys, args=args)


__all__ = ["LuaScript", "lua_source"]

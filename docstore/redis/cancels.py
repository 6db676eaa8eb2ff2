"""Give back the cancels that redis-py's asyncio client loses on Python before 3.12.

With a socket timeout, redis-py sends each command under `asyncio.wait_for` (docstore's own
clients send under a timeout scope instead, see `sends`, and need nothing here; a client the
caller brings, and a cluster client, still use `wait_for`). Before Python 3.12, `wait_for`
returns the send's result when the caller's cancel lands just as the send finished (CPython
gh-86296): the cancel is lost, so `asyncio.timeout` around a docstore call never fires and a
cancelled request runs on. On a loopback Redis most cancels that land during a command's send
were lost this way.

`keep_cancels(client)` wraps the client's `execute_command` and its pipelines' `execute` (every
command, script and pipeline goes out through them): when the task's count of cancel requests
(`Task.cancelling()`) rose during a call that returned (or raised something else), the cancel
is raised once the reply has been read, so the connection goes back to its pool clean. Python
3.10 has no `Task.cancelling()`: there the client is left as it is.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from docstore._async_runtime import cancel_was_dropped, cancels_asked, raise_dropped_cancel
from docstore.redis.sends import sends_without_wait_for

R = TypeVar("R")

_MARK = "_docstore_keeps_cancels"
# 3.10 cannot tell a dropped cancel (no Task.cancelling()); 3.12 and later drop none.
_LOSES_CANCELS = (3, 11) <= sys.version_info < (3, 12)


def keep_cancels(client: Any) -> None:
    """Make the asyncio `client` raise the cancels redis-py dropped (once per client; nothing
    for a sync client, where `wait_for` keeps them, or where no `wait_for` runs: docstore's own
    clients, see `sends`)."""
    if not _LOSES_CANCELS or getattr(client, _MARK, False) or sends_without_wait_for(client):
        return
    execute = client.execute_command
    if not inspect.iscoroutinefunction(execute):
        return
    make_pipeline = client.pipeline

    def pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        pipe.execute = functools.partial(_keeping_cancel, pipe.execute)
        return pipe

    client.execute_command = functools.partial(_keeping_cancel, execute)
    client.pipeline = pipeline
    setattr(client, _MARK, True)


async def _keeping_cancel(function: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any) -> R:
    """`await function(...)`; a cancel it dropped is raised in place of its reply or error (an
    error after the drop: NOSCRIPT, a socket timeout)."""
    asked = cancels_asked()
    try:
        reply = await function(*args, **kwargs)
    except Exception:
        if cancel_was_dropped(asked):
            await raise_dropped_cancel()
        raise
    if cancel_was_dropped(asked):
        await raise_dropped_cancel()
    return reply


__all__ = ["keep_cancels"]

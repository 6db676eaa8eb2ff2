# Generated from docstore/ephemeral/progress_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""`ProgressTracker`: how far a document's processing has got, kept in Redis for a while."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, cast

from docstore.ephemeral.values import Progress
from docstore.errors import RedisCommandError, ServiceUnavailable
from docstore.redis.client import RedisClient, as_text
from docstore.redis.core import RedisCore
from docstore.redis.keys import check_document_id, check_document_ids, progress_key
from docstore.rules import Checker, Percent, PositiveSeconds, ProgressStage

logger = logging.getLogger("docstore.progress")

_ttl: Checker[float] = Checker(PositiveSeconds, "ttl")
_percent: Checker[float] = Checker(Percent, "percent")
_stage: Checker[str] = Checker(ProgressStage, "stage")


class ProgressTracker:
    """`set` / `get` / `clear` / `restart` a document's progress; entries expire `ttl` seconds
    after the last update, and the percentage never goes backwards (a late, stale update is
    ignored; `restart` starts a new attempt from 0).

    `set` is best effort, so a worker never fails a document because Redis blinked: it returns
    None when Redis is unreachable (a command Redis refuses raises `RedisCommandError`). `get`
    and `clear` raise `ServiceUnavailable`. `client` is a core (`RedisCore`) or a plain
    client.
    """

    def __init__(
        self,
        client: RedisClient | RedisCore,
        *,
        ttl: float = 3600.0,
    ) -> None:
        ttl = _ttl(ttl)
        self.core = RedisCore.of(client)
        self.ttl = ttl
        self._ttl_ms = max(1, math.ceil(ttl * 1000))
        self._set = self.core.script("progress_set")
        self._restart = self.core.script("progress_restart")

    def set(self, document_id: int, percent: float, stage: str) -> Progress | None:
        """Record progress; returns what is stored now (higher earlier percent wins)."""
        check_document_id(document_id)
        percent = _percent(percent)
        stage = _stage(stage)
        keys, value = [progress_key(document_id)], repr(float(percent))
        reply = self.core.fail_open(
            lambda: self._set(keys, value, stage, self._ttl_ms), _not_recorded(document_id)
        )
        return None if reply is None else _progress(document_id, reply)

    def restart(self, document_id: int, stage: str, *, unless_stage: str) -> Progress | None:
        """Start the progress again at 0% and `stage` (a new attempt starts from 0), unless it
        shows `unless_stage`, a mark that must outlive the reset (a cancel's): returns what is
        stored now. Best effort, as `set`; one round trip."""
        check_document_id(document_id)
        stage, kept = _stage(stage), _stage(unless_stage)
        keys = [progress_key(document_id)]
        reply = self.core.fail_open(
            lambda: self._restart(keys, stage, self._ttl_ms, kept), _not_recorded(document_id)
        )
        return None if reply is None else _progress(document_id, reply)

    def get(self, document_id: int) -> Progress | None:
        """The last progress reported, or None when there is none (or it expired)."""
        check_document_id(document_id)
        with self.core.errors():
            reply = self.core.client.hmget(
                progress_key(document_id), ["percent", "stage", "updated_at_ms"]
            )
        values = cast("list[bytes | None]", reply)
        if values[0] is None:
            return None
        return _progress(document_id, values)

    def clear(self, document_id: int) -> None:
        """Forget a document's progress (e.g. before it is processed again)."""
        check_document_id(document_id)
        with self.core.errors():
            self.core.client.delete(progress_key(document_id))

    def clear_many(self, document_ids: list[int]) -> None:
        """Forget the progress of several documents (deleted ones), a few hundred per trip."""
        ids = check_document_ids(document_ids)
        for start in range(0, len(ids), 500):
            pipe = self.core.client.pipeline(transaction=False)
            for document_id in ids[start : start + 500]:
                pipe.delete(progress_key(document_id))
            with self.core.errors():
                pipe.execute()


def _not_recorded(document_id: int) -> Callable[[ServiceUnavailable | RedisCommandError], None]:
    """What `set` and `restart` do when Redis cannot take the update: log it."""

    def log(error: ServiceUnavailable | RedisCommandError) -> None:
        logger.warning("progress of document %s not recorded: %s", document_id, error.message)

    return log


def _progress(document_id: int, values: Any) -> Progress:
    percent, stage, updated_at_ms = (as_text(value) for value in values)
    return Progress(
        document_id=document_id,
        percent=float(percent),
        stage=stage,
        updated_at=datetime.fromtimestamp(int(updated_at_ms) / 1000, tz=timezone.utc),
    )


__all__ = ["Progress", "ProgressTracker"]

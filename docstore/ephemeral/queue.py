# Generated from docstore/ephemeral/queue_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""`TaskQueue`: document ids on a Redis stream, read by a consumer group (at-least-once).

A worker `consume`s messages and `ack`s each one when its document is done. A message whose
worker died stays pending; after `reclaim_idle` seconds the next `consume` (or `reclaim`) hands it
to another worker. Every hand-out counts as a delivery, and a message that reaches
`max_deliveries` without an ack moves to the dead-letter stream ``docstore:queue:{<stream>}:dead``
for an operator to look at. Pair it with `DocumentRepo.claim` so a document delivered twice is
processed once.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Any, TypeVar, cast

import redis.exceptions

from docstore._sync_runtime import Call
from docstore.ephemeral.stream_entries import (
    dead_letter,
    entry_fields,
    id_time,
    is_message_id,
    queue_message,
)
from docstore.ephemeral.values import DeadLetter, QueueMessage, QueueStats
from docstore.errors import InvalidInput
from docstore.observability.messaging import trace_fields
from docstore.redis.client import RedisClient, as_text
from docstore.redis.core import RedisCore
from docstore.redis.keys import (
    check_document_id,
    check_document_ids,
    check_name,
    dead_letter_key,
    queue_key,
)
from docstore.rules import (
    BlockMs,
    Checker,
    MessageCount,
    PositiveInt,
    PositiveSeconds,
    Seconds,
    WorkerId,
    check,
)

R = TypeVar("R")

logger = logging.getLogger("docstore.queue")

_worker_id: Checker[str] = Checker(WorkerId, "worker_id")
_count: Checker[int] = Checker(MessageCount, "count")
_block_ms: Checker[int] = Checker(BlockMs, "block_ms")
_min_idle: Checker[float] = Checker(Seconds, "min_idle")
# Message ids per ack script call: Lua's unpack() refuses some 8,000 values.
_ACK_BATCH = 1000
# A consumer holding no message and idle this long is a worker that is gone (a live one reads
# at least every `block_ms`): requeue_stuck deletes it from the group.
CONSUMER_IDLE_SECONDS = 3600.0


class TaskQueue:
    """Redis Streams queue of document ids for one consumer group.

    `socket_timeout` (seconds, taken from the client when omitted) bounds each blocking read, so
    a long `block_ms` is served by several short reads and never trips the client's timeout.
    Every call raises `ServiceUnavailable` when Redis is unreachable. `client` is a core
    (`RedisCore`) or a plain client.
    """

    def __init__(
        self,
        client: RedisClient | RedisCore,
        *,
        stream: str = "documents",
        group: str = "workers",
        max_deliveries: int = 5,
        reclaim_idle: float = 60.0,
        dead_letter_maxlen: int = 10_000,
        socket_timeout: float | None = None,
    ) -> None:
        check_name(stream, "stream")
        check_name(group, "group")
        max_deliveries = check(PositiveInt, max_deliveries, "max_deliveries")
        reclaim_idle = check(PositiveSeconds, reclaim_idle, "reclaim_idle")
        self.core = RedisCore.of(client)
        self.stream = stream
        self.group = group
        self.max_deliveries = max_deliveries
        self.reclaim_idle = reclaim_idle
        self.dead_letter_maxlen = check(PositiveInt, dead_letter_maxlen, "dead_letter_maxlen")
        self.key = queue_key(stream)
        self.dead_letter_key = dead_letter_key(stream)
        timeout = socket_timeout if socket_timeout is not None else self.core.socket_timeout
        # Each blocking read stays well inside the socket timeout.
        self._block_chunk_ms = max(1, int(timeout * 1000 * 0.6)) if timeout else 1000
        self._reclaim = self.core.script("queue_reclaim")
        self._ack = self.core.script("queue_ack")
        self._forget = self.core.script("queue_forget_consumers")
        self._group_ready = False

    # -- producing ----------------------------------------------------------------------------

    def enqueue(self, document_id: int) -> str:
        """Add a document id to the queue; returns the message id."""
        document_id = check_document_id(document_id)
        message_id = self._run(
            # The submitting span's trace context rides along, when OpenTelemetry traces.
            lambda: self.core.client.xadd(self.key, {"document_id": document_id, **trace_fields()})
        )
        return as_text(message_id)

    def enqueue_many(self, document_ids: Iterable[int]) -> list[str]:
        """Add several document ids in one round trip (a pipeline); returns the message ids."""
        ids = check_document_ids(document_ids)
        if not ids:
            return []

        def add_all() -> list[Any]:
            pipe = self.core.client.pipeline(transaction=False)
            context = trace_fields()
            for document_id in ids:
                pipe.xadd(self.key, {"document_id": document_id, **context})
            return list(pipe.execute())

        return [as_text(message_id) for message_id in self._run(add_all)]

    # -- consuming ----------------------------------------------------------------------------

    def consume(self, worker_id: str, count: int = 1, block_ms: int = 0) -> list[QueueMessage]:
        """Up to `count` messages for `worker_id`: first ones a dead worker left behind (idle
        longer than `reclaim_idle`), then new ones, waiting up to `block_ms` for new ones (0: do
        not wait). Ack each message when its document is done.
        """
        worker_id, count, block_ms = _worker_id(worker_id), _count(count), _block_ms(block_ms)
        messages = self.reclaim(worker_id, count)
        if messages:
            block_ms = 0
        wanted = count - len(messages)
        deadline = time.monotonic() + block_ms / 1000
        while wanted > 0:
            remaining_ms = math.ceil((deadline - time.monotonic()) * 1000)
            block = min(remaining_ms, self._block_chunk_ms) if remaining_ms > 0 else None
            fresh = self._read_new(worker_id, wanted, block)
            messages.extend(fresh)
            wanted -= len(fresh)
            if fresh or block is None:
                break
        return messages

    def _read_new(self, worker_id: str, count: int, block: int | None) -> list[QueueMessage]:
        reply: Any = self._run(
            lambda: self.core.client.xreadgroup(
                self.group, worker_id, {self.key: ">"}, count=count, block=block
            )
        )
        if not reply:
            return []
        entries: list[Any]
        if isinstance(reply, dict):  # RESP3: {stream: [[entry, ...]]}
            (value,) = reply.values()
            entries = value[0] if value and isinstance(value[0], list) else value
        else:  # RESP2: [[stream, [entry, ...]]]
            entries = reply[0][1]
        return self._readable(worker_id, [(i, fields, 1) for i, fields in entries])

    def reclaim(
        self, worker_id: str, count: int = 100, min_idle: float | None = None
    ) -> list[QueueMessage]:
        """Take over up to `count` messages idle for `min_idle` seconds (default `reclaim_idle`);
        those already delivered `max_deliveries` times go to the dead-letter stream instead.
        """
        worker_id, count = _worker_id(worker_id), _count(count)
        if min_idle is not None:
            min_idle = _min_idle(min_idle)
        idle_ms = math.ceil((self.reclaim_idle if min_idle is None else min_idle) * 1000)
        handed, _dead = self._run(
            lambda: self._reclaim(
                [self.key, self.dead_letter_key],
                self.group,
                worker_id,
                idle_ms,
                count,
                self.max_deliveries,
                self.dead_letter_maxlen,
            )
        )
        return self._readable(
            worker_id, [(i, fields, int(deliveries)) for i, fields, deliveries in handed]
        )

    def ack(self, *messages: str | QueueMessage) -> int:
        """Mark messages done (and delete them); returns how many were still pending."""
        ids = [m.message_id if isinstance(m, QueueMessage) else m for m in messages]
        if not ids:
            return 0
        if not all(is_message_id(i) for i in ids):
            raise InvalidInput(
                "message ids must be stream ids like '1700000000000-0'", field="messages"
            )
        acked = 0
        for start in range(0, len(ids), _ACK_BATCH):
            batch = ids[start : start + _ACK_BATCH]
            acked += int(self._run(partial(self._ack, [self.key], self.group, *batch)))
        return acked

    def forget_idle_consumers(self, idle: float = CONSUMER_IDLE_SECONDS) -> int:
        """Delete the group's consumers that hold no message and have been idle for `idle`
        seconds: workers that are gone (a worker id per process and task, say, would otherwise
        pile up in the group for good). Returns how many were deleted."""
        idle_ms = math.ceil(_min_idle(idle) * 1000)
        return int(self._run(lambda: self._forget([self.key], self.group, idle_ms)))

    # -- operators ----------------------------------------------------------------------------

    def dead_letters(self, count: int = 100) -> list[DeadLetter]:
        """The oldest `count` dead letters."""
        count = _count(count)
        with self.core.errors():
            entries = self.core.client.xrange(self.dead_letter_key, count=count)
        return [dead_letter(as_text(i), raw) for i, raw in cast("list[tuple[bytes, Any]]", entries)]

    def oldest_enqueued_at(self) -> datetime | None:
        """When the oldest message still in the queue was added (Redis server time), or None
        when the queue is empty. Acked messages are deleted, so a document enqueued before that
        has no message left."""
        with self.core.errors():
            entries = self.core.client.xrange(self.key, count=1)
        if not entries:
            return None
        entry_id, _ = cast("list[tuple[bytes, Any]]", entries)[0]
        return id_time(as_text(entry_id))

    def stats(self) -> QueueStats:
        """Stream length, messages delivered but not acked, and dead letters."""
        with self.core.errors():
            length = int(self.core.client.xlen(self.key))
            dead = int(self.core.client.xlen(self.dead_letter_key))
            pending = 0
            if length:
                summary = self._run(lambda: self.core.client.xpending(self.key, self.group))
                pending = int(summary["pending"])
        return QueueStats(length=length, pending=pending, dead_letters=dead)

    # -- plumbing -----------------------------------------------------------------------------

    def _readable(self, worker_id: str, entries: list[tuple[Any, Any, int]]) -> list[QueueMessage]:
        """The entries as messages; one that names no document (foreign, damaged) goes to the
        dead-letter stream with the reason, and the rest of its batch is handed out."""
        messages = []
        for entry_id, raw, deliveries in entries:
            try:
                messages.append(queue_message(as_text(entry_id), raw, deliveries))
            except (KeyError, ValueError, OverflowError, InvalidInput) as exc:
                self._bury(worker_id, entry_id, raw, deliveries, exc)
        return messages

    def _bury(
        self, worker_id: str, entry_id: Any, raw: Any, deliveries: int, exc: Exception
    ) -> None:
        """Move an unreadable entry to the dead-letter stream (same slot: one transaction)."""
        reason = f"unreadable entry: {type(exc).__name__}: {exc}"[:1000]
        logger.warning("queue %s: message %r dead-lettered: %s", self.stream, entry_id, reason)
        fields = entry_fields(raw, errors="replace")
        record: dict[Any, Any] = {f"original:{k}": v for k, v in fields.items()}
        record.update(
            source_id=entry_id,
            deliveries=deliveries,
            last_consumer=worker_id,
            reason=reason,
        )

        def bury() -> None:
            pipe = self.core.client.pipeline(transaction=True)
            pipe.xadd(
                self.dead_letter_key, record, maxlen=self.dead_letter_maxlen, approximate=True
            )
            pipe.xack(self.key, self.group, entry_id)
            pipe.xdel(self.key, entry_id)
            pipe.execute()

        self._run(bury)

    def _run(self, call: Call[R]) -> R:
        """Run a command; create the consumer group once, or again after Redis lost it."""
        with self.core.errors():
            if not self._group_ready:
                self._create_group()
            try:
                return call()
            except redis.exceptions.ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._create_group()
                return call()

    def _create_group(self) -> None:
        try:
            self.core.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True


__all__ = ["DeadLetter", "QueueMessage", "QueueStats", "TaskQueue"]

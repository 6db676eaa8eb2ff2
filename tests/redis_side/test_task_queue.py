"""TaskQueue on a real Redis: at-least-once delivery, reclaim, dead letters, long blocking reads."""

from __future__ import annotations

import threading
import time

import pytest
import redis

from docstore import InvalidInput
from docstore.ephemeral.queue import TaskQueue


@pytest.fixture
def queue(client: redis.Redis) -> TaskQueue:
    return TaskQueue(client, max_deliveries=3, reclaim_idle=0.1)


def test_enqueued_documents_are_consumed_and_acked(queue: TaskQueue) -> None:
    first = queue.enqueue(1)
    queue.enqueue(2)
    messages = queue.consume("worker-a", count=10)
    assert [(m.document_id, m.deliveries) for m in messages] == [(1, 1), (2, 1)]
    assert messages[0].message_id == first
    assert messages[0].enqueued_at.tzinfo is not None
    assert queue.stats().pending == 2
    assert queue.ack(*messages) == 2
    assert queue.ack(first) == 0  # already done
    stats = queue.stats()
    assert (stats.length, stats.pending, stats.dead_letters) == (0, 0, 0)


def test_each_message_goes_to_one_worker(queue: TaskQueue) -> None:
    for document_id in range(1, 11):
        queue.enqueue(document_id)
    a = queue.consume("worker-a", count=4)
    b = queue.consume("worker-b", count=10)
    assert sorted(m.document_id for m in a + b) == list(range(1, 11))
    assert not {m.message_id for m in a} & {m.message_id for m in b}


def test_a_dead_workers_message_is_redelivered_after_reclaim_idle(client: redis.Redis) -> None:
    queue = TaskQueue(client, reclaim_idle=0.5)
    queue.enqueue(1)
    queue.enqueue(2)
    taken = queue.consume("worker-a", count=2)
    queue.ack(taken[1])  # worker-a finished document 2, then died while on document 1
    assert queue.consume("worker-b") == []  # not idle long enough yet
    time.sleep(0.6)
    again = queue.consume("worker-b")
    assert [(m.document_id, m.deliveries) for m in again] == [(1, 2)]
    assert again[0].message_id == taken[0].message_id
    queue.ack(*again)
    time.sleep(0.6)
    assert queue.consume("worker-c") == []


def test_reclaim_can_be_called_on_its_own(queue: TaskQueue) -> None:
    queue.enqueue(5)
    queue.consume("worker-a")
    assert queue.reclaim("worker-b", min_idle=60) == []
    taken = queue.reclaim("worker-b", min_idle=0)
    assert [(m.document_id, m.deliveries) for m in taken] == [(5, 2)]


def test_a_message_delivered_too_often_becomes_a_dead_letter(queue: TaskQueue) -> None:
    queue.enqueue(7)
    deliveries = []
    for worker in ("a", "b", "c", "d"):
        messages = queue.consume(worker)
        deliveries.extend(m.deliveries for m in messages)
        time.sleep(0.15)  # never acked: each worker "dies"
    assert deliveries == [1, 2, 3]
    letters = queue.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    # "c" held it last; "d" found it delivered too often and never got it.
    assert (letter.document_id, letter.deliveries, letter.last_consumer) == (7, 3, "c")
    stats = queue.stats()
    assert (stats.length, stats.pending, stats.dead_letters) == (0, 0, 1)


def test_a_long_block_outlasts_the_socket_timeout(queue: TaskQueue) -> None:
    # The client's socket timeout is 0.5 s; the read waits longer in several short reads.
    timer = threading.Timer(0.8, queue.enqueue, args=(3,))
    timer.start()
    try:
        messages = queue.consume("worker-a", block_ms=5000)
    finally:
        timer.cancel()
    assert [m.document_id for m in messages] == [3]


def test_a_lost_consumer_group_is_created_again(queue: TaskQueue, client: redis.Redis) -> None:
    queue.enqueue(1)
    client.flushdb()  # what a restart without persistence leaves behind
    queue.enqueue(2)
    assert [m.document_id for m in queue.consume("worker-a", count=5)] == [2]


def test_bad_arguments_are_refused(queue: TaskQueue, client: redis.Redis) -> None:
    with pytest.raises(InvalidInput):
        queue.enqueue(0)
    with pytest.raises(InvalidInput):
        queue.consume("")
    with pytest.raises(InvalidInput):
        queue.consume("w", count=0)
    with pytest.raises(InvalidInput):
        queue.consume("w", block_ms=-1)
    with pytest.raises(InvalidInput):
        TaskQueue(client, max_deliveries=0)


def test_enqueue_many_adds_every_id_in_order(queue: TaskQueue) -> None:
    assert queue.enqueue_many([]) == []
    message_ids = queue.enqueue_many([5, 6, 7])
    assert len(set(message_ids)) == 3
    messages = queue.consume("worker-1", count=10)
    assert [(m.message_id, m.document_id) for m in messages] == list(
        zip(message_ids, [5, 6, 7], strict=True)
    )
    with pytest.raises(InvalidInput):
        queue.enqueue_many([8, 0])
    assert queue.consume("worker-1", count=10) == []  # a bad id enqueues nothing


def test_a_pending_message_deleted_from_the_stream_is_dropped_by_reclaim(
    queue: TaskQueue, client: redis.Redis
) -> None:
    # Redis 6.2's XAUTOCLAIM answers nil for a pending entry deleted from the stream (an
    # operator's XDEL or XTRIM): the reclaim script failed on it at every call after.
    queue.enqueue(1)
    (taken,) = queue.consume("worker-a")
    client.xdel(queue.key, taken.message_id)
    queue.enqueue(2)
    time.sleep(0.2)
    assert [m.document_id for m in queue.consume("worker-b", count=10)] == [2]
    assert queue.stats().pending == 1  # the deleted one is no longer pending


def test_an_entry_naming_no_document_goes_to_the_dead_letters_and_spares_its_batch(
    queue: TaskQueue, client: redis.Redis
) -> None:
    # A foreign or damaged entry made consume raise a bare KeyError or ValueError after
    # Redis had handed the whole batch over: the good ones went down with it, were
    # reclaimed together again and again, and were dead-lettered without ever being seen.
    queue.enqueue(1)
    client.xadd(queue.key, {"document_id": "not a number"})
    client.xadd(queue.key, {"something": "else"})
    queue.enqueue(2)
    assert [m.document_id for m in queue.consume("worker-a", count=10)] == [1, 2]
    letters = queue.dead_letters()
    assert [(d.document_id, d.reason is not None) for d in letters] == [(None, True)] * 2
    assert queue.stats().pending == 2  # 1 and 2, handed out


@pytest.mark.parametrize("maxlen", [0, -1, 1.5, None, True])
def test_a_dead_letter_cap_that_is_no_positive_count_is_refused(
    client: redis.Redis, maxlen: object
) -> None:
    # It was kept as given, and broke every reclaim once a message died.
    with pytest.raises(InvalidInput):
        TaskQueue(client, dead_letter_maxlen=maxlen)  # type: ignore[arg-type]


def test_thousands_of_messages_are_acked_in_one_call(client: redis.Redis) -> None:
    # One script call unpacked every id: Lua refuses that past about 8,000 (the doctor acks
    # up to 10,000 stale messages at once).
    queue = TaskQueue(client, reclaim_idle=3600)
    taken = []
    for start in range(0, 10_000, 1_000):
        queue.enqueue_many(range(start + 1, start + 1_001))
        taken += queue.consume("w", count=1_000)
    assert len(taken) == 10_000
    assert queue.ack(*taken) == 10_000
    assert queue.stats().pending == 0


def test_consumers_of_workers_gone_are_forgotten_and_those_holding_messages_kept(
    queue: TaskQueue, client: redis.Redis
) -> None:
    def consumers() -> set[bytes]:
        return {c["name"] for c in client.xinfo_consumers(queue.key, queue.group)}

    queue.enqueue_many([1, 2])
    [held] = queue.consume("holding", count=1)  # keeps its message: never forgotten
    [done] = queue.consume("finished", count=1)
    queue.ack(done)
    assert consumers() == {b"holding", b"finished"}
    assert queue.forget_idle_consumers(idle=3600) == 0  # both active moments ago
    time.sleep(0.2)
    assert queue.forget_idle_consumers(idle=0.1) == 1
    assert consumers() == {b"holding"}
    assert [m.message_id for m in queue.reclaim("other", min_idle=0)] == [held.message_id]
    queue.enqueue(3)
    assert [m.document_id for m in queue.consume("finished", count=1)] == [3]  # back: reads on

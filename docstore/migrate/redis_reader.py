"""Read the legacy keys from Redis in batches: SCAN, then pipelined reads. Never writes.

One SCAN pass over the whole keyspace classifies every key: task keys are read in batches
(HGETALL per key and one MGET of their results in one pipeline, then GET for the tasks stored
as JSON strings), `result:*` keys are checked in batches for a task (EXISTS), anything else is
skipped. Only the current batch is held in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions
from redis.cluster import ClusterNode, RedisCluster

from docstore.migrate.fingerprint import raw_fingerprint
from docstore.migrate.legacy_records import (
    RESULT_PREFIX,
    LegacyDocument,
    Reject,
    TaskPayload,
    display_key,
    parse_record,
    result_key,
    task_id_of,
)
from docstore.redis.client import RedisClient

ORPHAN_RESULT = "result without a task"
# Given task ids and the raw digests of their bytes as just read, the ids whose digest is the
# one recorded by the run that wrote them (`pg_writer.unchanged_tasks`): they need no parsing.
UnchangedCheck = Callable[[list[str], list[bytes]], set[str]]


@dataclass(slots=True)
class ReadBatch:
    """What one step of the scan produced, with counters since the previous batch.

    Every key scanned is counted once: as a task key, a result key, skipped, or repeated (SCAN
    returned it again within the batch). Every task key ends as a document, a reject or
    vanished; every result key belongs to its task or is an orphan (also a reject).
    """

    scanned: int = 0
    skipped: int = 0
    repeated: int = 0
    vanished: int = 0
    task_keys: int = 0
    result_keys: int = 0
    orphan_results: int = 0
    unchanged: int = 0  # tasks whose bytes are those the run that wrote them read: not parsed
    documents: list[LegacyDocument] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)


def count_keys(client: RedisClient) -> int:
    """How many keys the database holds (on a cluster: all its primaries together)."""
    if isinstance(client, RedisCluster):
        primaries: list[ClusterNode] = client.get_primaries()  # type: ignore[no-untyped-call]
        return sum(int(client.dbsize(target_nodes=node)) for node in primaries)
    return int(client.dbsize())


def scan_keys(client: RedisClient, count: int) -> Iterator[list[bytes]]:
    """Every key of the database, chunk by chunk as SCAN returns them (duplicates possible).

    On a Redis Cluster every primary is scanned in turn, and only the primaries: a replica holds
    copies of its primary's keys.
    """
    if isinstance(client, RedisCluster):
        primaries: list[ClusterNode] = client.get_primaries()  # type: ignore[no-untyped-call]
        for node in primaries:
            cursor = 0
            while True:
                # Aimed at one node, SCAN answers ({node name: cursor}, keys).
                reply: Any = client.scan(cursor=cursor, count=count, target_nodes=node)
                cursors, keys = reply
                yield [key for key in keys if isinstance(key, bytes)]
                cursor = cursors[node.name]
                if cursor == 0:
                    break
        return
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, count=count)
        yield [key for key in keys if isinstance(key, bytes)]
        if cursor == 0:
            return


def read_task_batch(
    client: RedisClient,
    keys: list[tuple[bytes, str]],
    batch: ReadBatch,
    unchanged: UnchangedCheck | None = None,
) -> None:
    """Read and parse the tasks `keys` (key, task id) into `batch` (documents or rejects); with
    `unchanged`, the tasks it names are only counted (`batch.unchanged`), not parsed."""
    replies, results = _read_tasks_and_results(client, keys)
    payloads: dict[bytes, TaskPayload] = {}
    not_hashes: list[tuple[bytes, str]] = []
    for (key, task_id), reply in zip(keys, replies, strict=True):
        if isinstance(reply, redis.exceptions.ResponseError):
            not_hashes.append((key, task_id))  # WRONGTYPE: most likely a JSON string
        elif reply:
            payloads[key] = reply
        else:
            # SCAN listed it, but it is gone: the legacy service deleted it meanwhile.
            batch.vanished += 1
    if not_hashes:
        _read_non_hashes(client, not_hashes, payloads, batch)
    read: list[tuple[bytes, str, TaskPayload, bytes | None, bytes]] = []
    for (key, task_id), result in zip(keys, results, strict=True):
        payload = payloads.get(key)
        if payload is None:
            continue
        if isinstance(result, redis.exceptions.ResponseError):
            batch.rejects.append(
                Reject(
                    display_key(result_key(task_id)),
                    f"result key is not a string: {result}",
                    task_id,
                )
            )
            continue
        read.append((key, task_id, payload, result, raw_fingerprint(payload, result)))
    skip: set[str] = set()
    if unchanged is not None and read:
        skip = unchanged([entry[1] for entry in read], [entry[4] for entry in read])
        batch.unchanged += len(skip)
    for key, task_id, payload, result, raw_md5 in read:
        if task_id in skip:
            continue
        parsed = parse_record(key, task_id, payload, result)
        if isinstance(parsed, Reject):
            batch.rejects.append(parsed)
        else:
            parsed.raw_md5 = raw_md5
            batch.documents.append(parsed)


def _read_tasks_and_results(
    client: RedisClient, keys: list[tuple[bytes, str]]
) -> tuple[list[Any], list[Any]]:
    """HGETALL of every task key and the value of its result key, in one round trip (a second
    for the results MGET cannot tell from missing): the replies to HGETALL (a ResponseError for
    a key that is no hash) and the results (bytes, None, or a ResponseError for a result key
    that is no string)."""
    pipe = client.pipeline(transaction=False)
    for key, _ in keys:
        pipe.hgetall(key)
    result_keys = [result_key(task_id) for _, task_id in keys]
    if isinstance(client, RedisCluster):  # the result keys of a batch sit on many slots
        for name in result_keys:
            pipe.get(name)
        replies = pipe.execute(raise_on_error=False)
        return replies[: len(keys)], replies[len(keys) :]
    # One MGET instead of a GET per task: each command costs redis-py more than its bytes.
    pipe.mget(result_keys)
    replies = pipe.execute(raise_on_error=False)
    results = replies[-1]
    if isinstance(results, Exception):  # refused whole (an ACL, say): as a GET would be
        raise results
    # MGET answers None for a key that is missing or is no string; GET tells them apart.
    absent = [i for i, result in enumerate(results) if result is None]
    if absent:
        pipe = client.pipeline(transaction=False)
        for i in absent:
            pipe.get(result_keys[i])
        for i, result in zip(absent, pipe.execute(raise_on_error=False), strict=True):
            results[i] = result
    return replies[:-1], results


def _read_non_hashes(
    client: RedisClient,
    keys: list[tuple[bytes, str]],
    payloads: dict[bytes, TaskPayload],
    batch: ReadBatch,
) -> None:
    pipe = client.pipeline(transaction=False)
    for key, _ in keys:
        pipe.type(key)
        pipe.get(key)
    replies = pipe.execute(raise_on_error=False)
    for (key, task_id), kind, value in zip(keys, replies[::2], replies[1::2], strict=True):
        kind_name = kind.decode() if isinstance(kind, bytes) else str(kind)
        if isinstance(value, bytes):
            payloads[key] = value
        elif kind_name in ("none", "string", "hash"):
            batch.vanished += 1  # deleted or replaced between the two reads
        else:
            batch.rejects.append(
                Reject(
                    display_key(key),
                    f"task key is a {kind_name}, expected a hash or a string",
                    task_id,
                )
            )


def find_orphan_results(client: RedisClient, keys: list[bytes], prefix: bytes) -> list[Reject]:
    """Rejects for the `result:*` keys among `keys` whose task key does not exist."""
    task_keys = [prefix + key[len(RESULT_PREFIX) :] for key in keys]
    # One EXISTS of them all (distinct keys: it counts each once) answers the usual case, no
    # orphan, at the cost of one command; only a batch that has one asks key by key.
    if not task_keys or int(client.exists(*task_keys)) == len(task_keys):
        return []
    pipe = client.pipeline(transaction=False)
    for task_key in task_keys:
        pipe.exists(task_key)
    replies = pipe.execute()
    return [
        Reject(display_key(key), ORPHAN_RESULT)
        for key, exists in zip(keys, replies, strict=True)
        if not exists
    ]


def read_batches(
    client: RedisClient,
    prefix: bytes,
    batch_size: int,
    unchanged: UnchangedCheck | None = None,
) -> Iterator[ReadBatch]:
    """Scan the database once and yield parsed batches of at most `batch_size` tasks (those
    `unchanged` names only counted: see `read_task_batch`)."""
    batch = ReadBatch()
    tasks: dict[bytes, str] = {}  # insertion-ordered; drops SCAN's duplicates within a batch
    results: set[bytes] = set()
    for chunk in scan_keys(client, batch_size):
        batch.scanned += len(chunk)
        for key in chunk:
            if key in tasks or key in results:
                batch.repeated += 1  # SCAN may return a key twice
                continue
            if key.startswith(prefix):
                batch.task_keys += 1
                task_id = task_id_of(key, prefix)
                if isinstance(task_id, Reject):
                    batch.rejects.append(task_id)
                    continue
                tasks[key] = task_id
            elif key.startswith(RESULT_PREFIX):
                batch.result_keys += 1
                results.add(key)
            else:
                batch.skipped += 1
                continue
            if len(tasks) >= batch_size or len(results) >= batch_size:
                _flush(client, prefix, batch, tasks, results, unchanged)
                yield batch
                batch = ReadBatch()
    _flush(client, prefix, batch, tasks, results, unchanged)
    yield batch


def _flush(
    client: RedisClient,
    prefix: bytes,
    batch: ReadBatch,
    tasks: dict[bytes, str],
    results: set[bytes],
    unchanged: UnchangedCheck | None,
) -> None:
    if tasks:
        read_task_batch(client, list(tasks.items()), batch, unchanged)
        tasks.clear()
    if results:
        orphans = find_orphan_results(client, sorted(results), prefix)
        batch.orphan_results += len(orphans)
        batch.rejects.extend(orphans)
        results.clear()

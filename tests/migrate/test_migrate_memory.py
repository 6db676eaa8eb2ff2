"""Peak memory of a migration does not grow with the number of keys (a ratio, not a time)."""

from __future__ import annotations

import io
import tracemalloc

import redis

from docstore import Docstore
from docstore.migrate import migrate

# Small batches: a batch's share of the peak stays small next to what a leak would add.
BATCH = 50


def seed(r: redis.Redis, prefix: str, count: int) -> None:
    r.flushdb()
    pipe = r.pipeline(transaction=False)
    for i in range(count):
        pipe.hset(f"task:{prefix}-{i}", mapping={"filename": f"{i}.pdf", "s3_key": f"k/{i}",
                                                "status": "done", "page_count": "1"})  # fmt: skip
        pipe.set(f"result:{prefix}-{i}", f"extracted text {i} " * 5)  # ~100 bytes
        pipe.set(f"progress:{prefix}-{i}", "100")
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()


def peak_bytes(store: Docstore, prefix: str, count: int) -> int:
    seed(store.redis, prefix, count)
    tracemalloc.start()
    try:
        summary = migrate(store.redis, store.db, batch_size=BATCH, rejects=io.StringIO())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary.migrated == count
    return peak


def test_peak_memory_is_flat_from_1k_to_8k_keys(docstore_store: Docstore) -> None:
    peak_bytes(docstore_store, "warm", 50)  # first-use caches (queries, adapters) out of the way
    small = peak_bytes(docstore_store, "s", 1_000)
    large = peak_bytes(docstore_store, "l", 8_000)
    # Eight times the keys. The batches in flight at the peak add a bounded amount that varies
    # (at 4x: 1.03-1.13 on a quiet machine, up to 1.57 under a load of 7); keeping just the task
    # ids of every batch grows with the keys (2.8 here, 2.2 at 4x).
    assert large < small * 2, (small, large)

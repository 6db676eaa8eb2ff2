"""ProgressTracker on a real Redis: monotonic percent, expiry, clear."""

from __future__ import annotations

import random
import threading
import time

import pytest
import redis

from docstore import InvalidInput
from docstore.ephemeral.progress import ProgressTracker


@pytest.fixture
def tracker(client: redis.Redis) -> ProgressTracker:
    return ProgressTracker(client, ttl=60)


def test_progress_round_trips(tracker: ProgressTracker) -> None:
    assert tracker.get(1) is None
    stored = tracker.set(1, 25, "ocr")
    assert stored is not None
    read = tracker.get(1)
    assert read == stored
    assert (read.document_id, read.percent, read.stage) == (1, 25.0, "ocr")
    assert read.updated_at.tzinfo is not None


def test_percent_never_goes_backwards(tracker: ProgressTracker) -> None:
    tracker.set(1, 50, "ocr")
    late = tracker.set(1, 30, "download")
    assert late is not None and (late.percent, late.stage) == (50.0, "ocr")
    same = tracker.set(1, 50, "layout")
    assert same is not None and same.stage == "layout"
    tracker.set(1, 100, "done")
    current = tracker.get(1)
    assert current is not None and (current.percent, current.stage) == (100.0, "done")


def test_concurrent_updates_keep_the_highest_percent(tracker: ProgressTracker) -> None:
    seen: list[float] = []

    def report(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            result = tracker.set(9, rng.randint(0, 99), f"step-{seed}")
            assert result is not None
            seen.append(result.percent)

    threads = [threading.Thread(target=report, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    final = tracker.get(9)
    assert final is not None and final.percent == max(seen)


def test_progress_expires_on_its_own(client: redis.Redis) -> None:
    tracker = ProgressTracker(client, ttl=0.3)
    tracker.set(1, 10, "ocr")
    assert 0 < client.pttl("docstore:progress:{1}") <= 300
    time.sleep(0.45)
    assert tracker.get(1) is None


def test_clear_forgets_progress(tracker: ProgressTracker) -> None:
    tracker.set(1, 80, "ocr")
    tracker.clear(1)
    assert tracker.get(1) is None
    restarted = tracker.set(1, 5, "download")
    assert restarted is not None and restarted.percent == 5.0


def test_restart_starts_again_from_zero_unless_a_mark_must_outlive_it(
    tracker: ProgressTracker, client: redis.Redis
) -> None:
    assert tracker.restart(1, "started", unless_stage="cancelled") is not None  # nothing before
    tracker.set(1, 80, "retrying")  # an attempt that failed
    again = tracker.restart(1, "started", unless_stage="cancelled")
    assert again is not None and (again.percent, again.stage) == (0.0, "started")
    assert tracker.get(1) == again
    assert 0 < client.pttl("docstore:progress:{1}") <= 60_000
    tracker.set(2, 100, "cancelled")  # a cancel's mark, made since the claim
    kept = tracker.restart(2, "started", unless_stage="cancelled")
    assert kept is not None and (kept.percent, kept.stage) == (100.0, "cancelled")
    assert tracker.get(2) == kept
    with pytest.raises(InvalidInput):
        tracker.restart(0, "started", unless_stage="cancelled")
    with pytest.raises(InvalidInput):
        tracker.restart(1, "", unless_stage="cancelled")


@pytest.mark.parametrize(
    ("document_id", "percent", "stage"),
    [(0, 10, "ocr"), (1, -1, "ocr"), (1, 101, "ocr"), (1, 10, ""), (1, 10, "x" * 101)],
)
def test_bad_arguments_are_refused(
    tracker: ProgressTracker, document_id: int, percent: float, stage: str
) -> None:
    with pytest.raises(InvalidInput):
        tracker.set(document_id, percent, stage)

"""Unfinished legacy work, migrated by `python -m docstore.migrate`, is finished by a worker
started right after the migration with default arguments: its blobs sit under the legacy
service's keys, and none of it has a queue message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from docstore import Docstore, Settings
from docstore.intake.blobs import S3BlobStore
from docstore.intake.extractors import extract_text
from docstore.migrate import migrate
from docstore.migrate.cli import main as migrate_main
from docstore.quickstart import make_pdf

# Legacy task id → (status in the old service, S3 key, filename, bytes, expected text).
LEGACY_TASKS = {
    "queued-plain": ("queued", "uploads/legacy/scan.txt", "scan.txt", b"plain legacy text", None),
    "queued-dated": (
        "pending",
        "legacy/2023/07/scan-0001.txt",
        "scan-0001.txt",
        b"dated folder text",
        None,
    ),
    "queued-deep": (
        "queued",
        "legacy/Scans (2023)/client files/deep/er/still deeper/report final (1).pdf",
        "report final (1).pdf",
        make_pdf(["Deep page one", "Deep page two"]),
        "Deep page one",
    ),
    "running-spaces": (
        "running",
        "uploads/legacy/My Documents/invoice (copy).txt",
        "invoice (copy).txt",
        b"invoice that was in flight",
        None,
    ),
    "running-pdf": (
        "processing",
        "legacy/2022/12/31/batch 7/(draft) scan.pdf",
        "(draft) scan.pdf",
        make_pdf(["In flight page"]),
        "In flight page",
    ),
}


@pytest.fixture
def store(docstore_settings: Settings, docstore_blob_store: S3BlobStore) -> Iterator[Docstore]:
    # Default worker settings (lease, queue): only the servers are the test's own.
    with Docstore.connect(docstore_settings, blobs=docstore_blob_store) as opened:
        yield opened


def seed_legacy_service(legacy: redis.Redis, blobs: S3BlobStore) -> None:
    """What the old service left behind: task hashes in Redis, bytes under its own keys."""
    for task_id, (status, key, filename, data, _) in LEGACY_TASKS.items():
        blobs.client.put_object(Bucket=blobs.bucket, Key=key, Body=data)
        task = {
            "filename": filename,
            "s3_key": key,
            "status": status,
            "created_at": "2024-03-01T12:00:00Z",
            "user_email": "legacy-owner@example.com",
        }
        if status in {"running", "processing"}:
            task["started_at"] = "2024-03-01T12:00:05Z"
        legacy.set(f"task:{task_id}", json.dumps(task))


def test_migrated_queued_and_running_tasks_under_legacy_keys_are_all_completed(
    store: Docstore, docstore_blob_store: S3BlobStore, tmp_path: Path
) -> None:
    seed_legacy_service(store.redis, docstore_blob_store)
    code = migrate_main(
        [
            "--redis-url",
            store.settings.redis_url,
            "--database-url",
            store.settings.database_url,
            "--rejects",
            str(tmp_path / "rejects.jsonl"),
        ]
    )
    assert code == 0
    migrated = {t: store.documents.get_by_task_id(t) for t in LEGACY_TASKS}
    assert {t: d.status for t, d in migrated.items()} == {
        "queued-plain": "PENDING",
        "queued-dated": "PENDING",
        "queued-deep": "PENDING",
        "running-spaces": "PROCESSING",
        "running-pdf": "PROCESSING",
    }
    assert store.queue.stats().length == 0  # the migration enqueues nothing

    # A worker started now, with default arguments, until it reports nothing to do.
    outcomes = []
    while (outcome := store.process_next("fresh-worker", extract_text)) is not None:
        outcomes.append(outcome)

    assert [o.action for o in outcomes] == ["completed"] * len(LEGACY_TASKS), [
        (o.action, o.detail) for o in outcomes
    ]
    assert sorted(o.document_id for o in outcomes) == sorted(d.id for d in migrated.values())
    for task_id, (status, key, _, data, expected) in LEGACY_TASKS.items():
        done = store.documents.get_by_task_id(task_id)
        assert done.status == "COMPLETED", (task_id, done.error_message)
        assert done.s3_key == key and done.worker_id == "fresh-worker"
        text = expected if expected is not None else data.decode()
        assert text in (done.result_text or ""), (task_id, done.result_text)
        # The in-flight task had its one legacy attempt; the worker's was the second.
        assert done.attempts == (2 if status in {"running", "processing"} else 1)


def queued(name: str, created_at: str, email: str) -> dict[str, str]:
    """A legacy task still waiting in the old service."""
    return {"filename": f"{name}.txt", "s3_key": f"legacy/{name}.txt", "status": "queued",
            "created_at": created_at, "user_email": email}  # fmt: skip


def test_a_migrated_backlog_is_handed_out_in_fair_turns(store: Docstore) -> None:
    """One legacy user's 300 queued tasks do not starve another's 10 queued after them: the
    migration gives waiting documents their owners' turns, as a submit does (before: all turn 0,
    handed out in the order the run wrote them)."""
    legacy = store.redis
    for i in range(300):
        created = f"2024-03-01T12:{i // 60:02d}:{i % 60:02d}Z"
        legacy.set(f"task:a-{i:04d}", json.dumps(queued(f"a{i}", created, "bulk@example.com")))
    for i in range(10):
        created = f"2024-03-02T12:00:{i:02d}Z"
        legacy.set(f"task:b-{i:02d}", json.dumps(queued(f"b{i}", created, "small@example.com")))
    assert migrate(legacy, store.db, batch_size=50).migrated == 310

    claimed = []
    for _ in range(40):
        document = store.lifecycle.claim_next("w1")
        assert document is not None
        claimed.append(document.legacy_task_id or "")
        store.lifecycle.mark_completed(document.id, "w1", "text", 1, 0.1)
    assert sorted(t for t in claimed if t.startswith("b-")) == [f"b-{i:02d}" for i in range(10)]

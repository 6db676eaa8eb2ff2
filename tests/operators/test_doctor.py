"""`docstore doctor` on real PostgreSQL, Redis and S3: each invariant broken by hand is found,
nothing changes without `repair`, and `repair` fixes what is safe (on both sides)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, cast

import psycopg
import pytest
import redis
from pydantic import SecretStr
from sides import Side, side_fixture  # noqa: F401

from docstore import Docstore, Settings
from docstore.cli import main as cli_main
from docstore.doctor import Doctor, DoctorReport, Finding
from docstore.ephemeral.cache import NOT_KEPT
from docstore.errors import BlobStoreError, InvalidInput
from docstore.intake.blobs import BlobStore, LocalBlobStore, S3BlobStore
from docstore.intake.extractors import extract_text
from docstore.models import DocumentResponse, UserCreate
from docstore.redis.keys import cache_key, progress_key
from docstore.testing import free_port


@pytest.fixture
def blob_store(docstore_blob_store: S3BlobStore) -> BlobStore:
    return docstore_blob_store


@pytest.fixture
def store(side: Side, docstore_settings: Settings, blob_store: BlobStore) -> Iterator[Docstore]:
    opened = side.connect(docstore_settings, blobs=blob_store)
    with cast(AbstractContextManager[Docstore], opened) as entered:
        yield entered


@pytest.fixture
def sql(docstore_settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    """A plain connection, autocommit, to break rows by hand."""
    with psycopg.connect(docstore_settings.database_url, autocommit=True) as conn:
        yield conn


def doctor(side: Side, store: Docstore, *, repair: bool = False, grace: float = 0) -> DoctorReport:
    seen: list[Finding] = []
    report = side.make(Doctor, store, repair=repair, grace=grace, on_finding=seen.append).run()
    assert seen == report.sample  # few findings here: the sample holds them all
    return report


def kinds(report: DoctorReport) -> dict[str, int]:
    return {kind: count for kind, count in report.found.items() if count}


def submit(store: Docstore, name: str = "a.txt", text: bytes = b"hello doctor") -> DocumentResponse:
    user = (
        store.users.get_by_email("doc@example.com")
        or store.users.create(UserCreate(email="doc@example.com")).user
    )
    return store.submit_document(user, name, text)


def completed(store: Docstore) -> DocumentResponse:
    document = submit(store, "done.txt")
    outcome = store.process_next("worker-1", extract_text, block_ms=0)
    assert outcome is not None and outcome.action == "completed"
    return store.documents.get(document.id)


def redis_state(client: redis.Redis) -> dict[bytes, Any]:
    """Every key with its type and content, to prove a run without repair changed nothing."""
    state: dict[bytes, Any] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        if kind == b"stream":
            state[key] = client.xrange(key)
        elif kind == b"hash":
            state[key] = client.hgetall(key)
        else:
            state[key] = client.dump(key)
    return state


def rows(sql: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return sql.execute("SELECT * FROM documents ORDER BY id").fetchall()


def test_a_healthy_store_is_clean(side: Side, store: Docstore) -> None:
    completed(store)
    submit(store, "waiting.txt")
    report = doctor(side, store)
    assert report.clean, report.sample
    assert report.summary() == "clean: no findings"


def test_pending_without_a_queue_message_is_found_then_re_enqueued(
    side: Side, store: Docstore, client: redis.Redis
) -> None:
    lost = submit(store, "lost.txt")
    kept = submit(store, "kept.txt")
    # The message of `lost` is gone (a Redis restart without persistence, a failed XADD).
    (first, _), _ = client.xrange(store.queue.key)
    client.xdel(store.queue.key, first)

    report = doctor(side, store)
    assert kinds(report) == {"pending_unqueued": 1}
    assert report.sample[0].document_id == lost.id and report.sample[0].repair is None
    assert store.queue.stats().length == 1

    repaired = doctor(side, store, repair=True)
    assert repaired.repaired == {"pending_unqueued": 1}
    assert repaired.sample[0].repair == "re-enqueued"
    queued = sorted(int(f[b"document_id"]) for _, f in client.xrange(store.queue.key))
    assert queued == sorted([lost.id, kept.id])
    assert doctor(side, store).clean


def test_a_document_changed_within_the_grace_period_is_left_alone(
    side: Side, store: Docstore, client: redis.Redis
) -> None:
    submit(store, "young.txt")
    client.delete(store.queue.key)
    assert doctor(side, store, grace=3600).clean
    assert kinds(doctor(side, store, grace=0)) == {"pending_unqueued": 1}


def test_messages_for_missing_or_finished_documents_are_found_then_dropped(
    side: Side, store: Docstore, client: redis.Redis
) -> None:
    done = completed(store)
    waiting = submit(store, "waiting.txt")
    client.xadd(store.queue.key, {"document_id": done.id})
    client.xadd(store.queue.key, {"document_id": 999_999})
    client.xadd(store.queue.key, {"something": "else"})

    report = doctor(side, store)
    assert kinds(report) == {"stale_message": 3}
    details = " | ".join(f.detail for f in report.sample)
    assert "is COMPLETED" in details and "999999 has no row" in details
    assert "names no document" in details
    assert client.xlen(store.queue.key) == 4

    doctor(side, store, repair=True)
    left = [int(f[b"document_id"]) for _, f in client.xrange(store.queue.key)]
    assert left == [waiting.id]
    assert doctor(side, store).clean


def test_dead_letters_are_reported_and_only_those_of_finished_documents_dropped(
    side: Side, store: Docstore, client: redis.Redis
) -> None:
    done = completed(store)
    poison = submit(store, "poison.txt")
    for document in (done, poison):
        client.xadd(
            store.queue.dead_letter_key,
            {"source_id": "1-0", "document_id": document.id, "deliveries": 5,
             "last_consumer": "worker-9"},
        )  # fmt: skip
    before = client.xrange(store.queue.dead_letter_key)

    report = doctor(side, store)
    assert kinds(report) == {"dead_letter": 2}
    assert "worker-9" in report.sample[0].detail
    assert client.xrange(store.queue.dead_letter_key) == before

    repaired = doctor(side, store, repair=True)
    assert repaired.repaired == {"dead_letter": 1}
    (letter,) = client.xrange(store.queue.dead_letter_key)
    assert int(letter[1][b"document_id"]) == poison.id
    # The poison document still has its queue message: it is not also "unqueued".
    assert kinds(doctor(side, store)) == {"dead_letter": 1}


def test_processing_past_its_lease_is_found_then_requeued(
    side: Side, store: Docstore, client: redis.Redis, sql: psycopg.Connection[Any]
) -> None:
    document = submit(store, "stuck.txt")
    client.delete(store.queue.key)
    store.lifecycle.claim(document.id, "worker-dead", 60)
    sql.execute(
        "UPDATE documents SET lease_expires_at = now() - interval '1 minute' WHERE id = %s",
        [document.id],
    )

    report = doctor(side, store)
    assert kinds(report) == {"lease_expired": 1}
    assert "worker-dead" in report.sample[0].detail
    assert store.documents.get(document.id).status == "PROCESSING"

    repaired = doctor(side, store, repair=True)
    assert repaired.repaired == {"lease_expired": 1}
    # As requeue_expired does: PENDING again after a backoff, which brings it back by itself.
    assert (repaired.sample[0].repair or "").startswith("back to PENDING, retry due ")
    back = store.documents.get(document.id)
    assert back.status == "PENDING" and back.next_attempt_at is not None
    assert client.xlen(store.queue.key) == 0
    assert doctor(side, store).clean


def test_a_scheduled_retry_is_a_way_to_reach_a_worker_until_it_is_due(
    side: Side, store: Docstore, client: redis.Redis, sql: psycopg.Connection[Any]
) -> None:
    document = submit(store, "retry.txt")
    client.delete(store.queue.key)
    sql.execute(
        "UPDATE documents SET next_attempt_at = now() + interval '1 hour' WHERE id = %s",
        [document.id],
    )
    assert doctor(side, store).clean
    sql.execute(
        "UPDATE documents SET next_attempt_at = now() - interval '1 minute' WHERE id = %s",
        [document.id],
    )
    assert kinds(doctor(side, store)) == {"pending_unqueued": 1}
    assert doctor(side, store, repair=True).repaired == {"pending_unqueued": 1}
    assert [int(f[b"document_id"]) for _, f in client.xrange(store.queue.key)] == [document.id]


def test_blobs_without_a_row_and_rows_without_a_blob(
    side: Side, store: Docstore, blob_store: BlobStore, sql: psycopg.Connection[Any]
) -> None:
    kept = submit(store, "kept.txt")
    lost = submit(store, "lost.txt")
    blob_store.delete(lost.s3_key)
    orphan = blob_store.put(1, "orphan.txt", b"nobody's")
    deleted = submit(store, "deleted.txt")
    store.delete_document(deleted.id)  # its blob may wait on the deletion list: not an orphan
    listed = blob_store.put(1, "listed.txt", b"row deleted")
    sql.execute("INSERT INTO blob_deletions (s3_key) VALUES (%s)", [listed.key])

    # All of it is young but the message of the deleted document (a worker would skip it).
    assert kinds(doctor(side, store, grace=3600)) == {"stale_message": 1}
    report = doctor(side, store)
    assert kinds(report) == {"blob_orphaned": 1, "blob_missing": 1, "stale_message": 1}
    by_kind = {f.kind: f for f in report.sample}
    assert orphan.key in by_kind["blob_orphaned"].detail
    assert by_kind["blob_missing"].document_id == lost.id
    assert blob_store.get(orphan.key) == b"nobody's"

    repaired = doctor(side, store, repair=True)
    # A missing blob cannot be made up.
    assert repaired.repaired == {"blob_orphaned": 1, "stale_message": 1}
    with pytest.raises(Exception, match="not found"):
        blob_store.get(orphan.key)
    assert blob_store.get(kept.s3_key) == b"hello doctor"
    assert kinds(doctor(side, store)) == {"blob_missing": 1}


def test_a_repair_never_deletes_blobs_docstore_did_not_make(
    side: Side, store: Docstore, docstore_blob_store: S3BlobStore
) -> None:
    # The bucket may hold the legacy service's blobs (migrated documents keep their keys, and
    # tasks not migrated yet have none), or another application's: a repair deleted every
    # one of them that no row named.
    client, bucket = docstore_blob_store.client, docstore_blob_store.bucket
    for key in ("legacy/2023/07/scan-0001.pdf", "reports/q3.xlsx", "uploads/1/not-ours.bin"):
        client.put_object(Bucket=bucket, Key=key, Body=b"someone else's")
    ours = docstore_blob_store.put(1, "orphan.txt", b"docstore's, no row")
    report = doctor(side, store, repair=True)
    assert kinds(report) == {"blob_orphaned": 4}
    assert report.repaired == {"blob_orphaned": 1}
    left = {o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]}
    assert left == {"legacy/2023/07/scan-0001.pdf", "reports/q3.xlsx", "uploads/1/not-ours.bin"}
    assert ours.key not in left


def test_blob_listing_of_the_local_store_follows_byte_order(
    side: Side, docstore_settings: Settings, tmp_path: Any, sql: psycopg.Connection[Any]
) -> None:
    local = LocalBlobStore(tmp_path)
    opened = side.connect(docstore_settings, blobs=local)
    with cast(AbstractContextManager[Docstore], opened) as store:
        user = store.users.create(UserCreate(email="local@example.com")).user
        # "a.txt" sorts before "a/b" in bytes ('.' < '/'), but after the folder name "a".
        for key in ("a.txt", "a/b", "a-c", "a/b.txt"):
            path = tmp_path.joinpath(*key.split("/"))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"x")
            sql.execute(
                "INSERT INTO documents (user_id, filename, s3_key) VALUES (%s, 'x', %s)",
                [user.id, key],
            )
        sql.execute("UPDATE documents SET status = 'COMPLETED'")
        assert kinds(doctor(side, store)) == {}
        (tmp_path / "a" / "b").unlink()
        (tmp_path / "zz").write_bytes(b"orphan")
        # A file name that is not UTF-8 is no key: before, it stopped the whole audit with
        # InvalidInput ("lone surrogate") and the findings after it were never reported.
        with open(os.path.join(os.fsencode(tmp_path), b"caf\xe9.pdf"), "wb") as odd:
            odd.write(b"someone else's")
        report = doctor(side, store)
        assert kinds(report) == {"blob_missing": 1, "blob_orphaned": 1}


def test_cached_results_older_than_their_row_are_found_then_deleted(
    side: Side, store: Docstore, client: redis.Redis, sql: psycopg.Connection[Any]
) -> None:
    fresh = completed(store)
    changed = completed(store)
    naive = completed(store)
    for document in (fresh, changed):  # as a reader fills the cache
        store.cache.cache_document_result(document.id, store.documents.get(document.id))
    sql.execute("UPDATE documents SET updated_at = now() WHERE id = %s", [changed.id])
    client.set(cache_key("document:424242:result"), b'{"id": 424242}')
    # A time without an offset is read as UTC (it raised TypeError).
    client.set(cache_key(f"document:{naive.id}:result"), b'{"updated_at": "2000-01-01T00:00"}')
    client.set(cache_key("document:unrelated:result"), b"{}")  # not a document key: ignored
    # An unfinished document is read, not cached: the mark left in its place is no finding.
    pending = submit(store, "pending.txt")
    assert store.get_document(pending.id).status == "PENDING"
    assert client.get(cache_key(f"document:{pending.id}:result")) == NOT_KEPT
    # A copy of one, as an older docstore cached them, is: nothing drops it as the row moves on.
    opened = submit(store, "opened.txt")
    store.cache.cache_document_result(opened.id, store.documents.get(opened.id))

    report = doctor(side, store)
    assert kinds(report) == {"cache_stale": 4}
    assert {f.document_id for f in report.sample} == {changed.id, naive.id, 424242, opened.id}
    (why,) = [f.detail for f in report.sample if f.document_id == opened.id]
    assert why == "cached copy of a PENDING document (only finished ones are cached)"
    assert client.exists(cache_key(f"document:{changed.id}:result"))

    doctor(side, store, repair=True)
    assert not client.exists(cache_key(f"document:{changed.id}:result"))
    assert not client.exists(cache_key("document:424242:result"))
    assert client.exists(cache_key(f"document:{fresh.id}:result"))
    assert doctor(side, store).clean


@pytest.mark.parametrize("percent", ["forty", "nan", "\xff"])
def test_a_progress_key_that_holds_no_percent_is_a_finding_not_a_traceback(
    side: Side, store: Docstore, client: redis.Redis, percent: str
) -> None:
    # float() of it raised ValueError, which the command does not catch: a traceback.
    done = completed(store)
    client.hset(progress_key(done.id), mapping={"percent": percent, "stage": "page 4"})
    report = doctor(side, store)
    assert kinds(report) == {"progress_stale": 1}
    assert "not a percent" in report.sample[0].detail
    doctor(side, store, repair=True)
    assert not client.exists(progress_key(done.id))


def test_progress_keys_of_finished_or_missing_documents_are_found_then_deleted(
    side: Side, store: Docstore, client: redis.Redis
) -> None:
    done = completed(store)  # progress: 100%, expiring: fine
    stale = completed(store)
    forever = completed(store)
    waiting = submit(store, "waiting.txt")
    client.hset(progress_key(stale.id), mapping={"percent": "40.0", "stage": "page 4"})
    cancelled = submit(store, "cancelled.txt")
    store.cancel_document(cancelled.id)  # its progress may say "cancelled" at any percent
    client.hset(progress_key(cancelled.id), mapping={"percent": "30", "stage": "cancelled"})
    client.persist(progress_key(forever.id))
    client.hset(progress_key(777_777), mapping={"percent": "10", "stage": "x"})
    client.hset(progress_key(waiting.id), mapping={"percent": "10", "stage": "x"})

    report = doctor(side, store)
    # The cancelled document's message is left for a worker to skip: stale too.
    assert kinds(report) == {"progress_stale": 3, "stale_message": 1}
    progress = {f.document_id for f in report.sample if f.kind == "progress_stale"}
    assert progress == {stale.id, forever.id, 777_777}
    assert any("never expires" in f.detail for f in report.sample)

    doctor(side, store, repair=True)
    ids = (done.id, stale.id, forever.id, 777_777, waiting.id, cancelled.id)
    assert {k for k in map(progress_key, ids) if client.exists(k)} == {
        progress_key(done.id),
        progress_key(waiting.id),
        progress_key(cancelled.id),
    }
    assert doctor(side, store).clean


def test_without_repair_nothing_changes_anywhere(
    side: Side,
    store: Docstore,
    client: redis.Redis,
    sql: psycopg.Connection[Any],
    blob_store: S3BlobStore,
) -> None:
    done = completed(store)
    store.cache.cache_document_result(done.id, done)
    submit(store, "lost.txt")
    client.delete(store.queue.key)
    client.xadd(store.queue.key, {"document_id": done.id})
    client.xadd(store.queue.dead_letter_key, {"source_id": "1-0", "document_id": done.id})
    client.hset(progress_key(done.id), mapping={"percent": "5", "stage": "page 1"})
    sql.execute("UPDATE documents SET updated_at = now() WHERE id = %s", [done.id])
    blob_store.put(1, "orphan.txt", b"x")
    blob_store.delete(done.s3_key)
    before = (redis_state(client), rows(sql), sorted(b.key for b in _listing(blob_store)))

    report = doctor(side, store)

    assert set(kinds(report)) == {
        "stale_message",
        "dead_letter",
        "pending_unqueued",
        "blob_orphaned",
        "blob_missing",
        "cache_stale",
        "progress_stale",
    }
    assert report.repaired == {}
    after = (redis_state(client), rows(sql), sorted(b.key for b in _listing(blob_store)))
    assert after == before  # the scratch set of queued ids is gone too


def test_findings_beyond_the_sample_are_counted_and_streamed(
    side: Side, store: Docstore, client: redis.Redis
) -> None:
    for i in range(130):
        client.xadd(store.queue.key, {"document_id": 500_000 + i})
    seen: list[Finding] = []
    report = side.make(Doctor, store, grace=0, batch_size=50, on_finding=seen.append).run()
    assert report.found == {"stale_message": 130}
    assert len(seen) == 130 and len(report.sample) == 100
    assert len({f.detail for f in seen}) == 130  # pages did not overlap


def _listing(blob_store: S3BlobStore) -> list[Any]:
    from docstore.doctor.blob_listing import blobs_in_order

    return list(blobs_in_order(blob_store, 2))


def test_with_redis_down_the_other_audits_run_and_the_report_names_what_was_left_out(
    side: Side,
    store: Docstore,
    blob_store: BlobStore,
    docstore_settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    sql: psycopg.Connection[Any],
) -> None:
    lost = submit(store, "lost.txt")
    blob_store.delete(lost.s3_key)
    stuck = submit(store, "stuck.txt")
    store.lifecycle.claim(stuck.id, "worker-dead", 60)
    sql.execute(
        "UPDATE documents SET lease_expires_at = now() - interval '1 minute' WHERE id = %s",
        [stuck.id],
    )
    down = docstore_settings.model_copy(
        update={
            "redis_url_secret": SecretStr(f"redis://127.0.0.1:{free_port()}/0"),
            "retry_backoff_base": 0.0,  # the requeued document is due at once: enqueued
        }
    )
    with cast(AbstractContextManager[Docstore], side.connect(down, blobs=blob_store)) as cut_off:
        report = doctor(side, cut_off, repair=True)
    # PostgreSQL and the bucket: still audited, and the lease repaired in PostgreSQL is told.
    assert kinds(report) == {"blob_missing": 1, "lease_expired": 1}
    lease = next(f for f in report.sample if f.kind == "lease_expired")
    assert lease.repair == (
        "back to PENDING, not enqueued (Redis failed): a worker claims it from PostgreSQL"
    )
    assert store.documents.get(stuck.id).status == "PENDING"
    assert not report.clean and report.summary().startswith("incomplete: 6 audit(s) not run")
    assert [line.split(":")[0] for line in report.unavailable] == [
        "expired_leases",
        "queue_messages",
        "dead_letters",
        "unqueued_pending",
        "cached_results",
        "progress_keys",
    ]
    assert "is unavailable" in report.unavailable[0]
    # The command line says so and exits 2, after what it found.
    capsys.readouterr()
    monkeypatch.setenv("DATABASE_URL", down.database_url)
    monkeypatch.setenv("REDIS_URL", down.redis_url)
    monkeypatch.setenv("BLOB_BACKEND", "local")
    monkeypatch.setenv("BLOB_DIR", str(tmp_path))
    assert cli_main(["doctor"]) == 2
    out = capsys.readouterr().out
    assert "not audited: queue_messages" in out
    assert out.rstrip().endswith("incomplete: 5 audit(s) not run")  # nothing to repair now


def test_repair_takes_only_true(side: Side, store: Docstore, blob_store: BlobStore) -> None:
    orphan = blob_store.put(1, "orphan.txt", b"nobody's")
    for repair in ("false", "no", 1):  # truthy: it used to repair
        with pytest.raises(InvalidInput, match="repair"):
            side.make(Doctor, store, repair=repair, grace=0)
    assert blob_store.get(orphan.key) == b"nobody's"


class OneRefused(LocalBlobStore):
    """The local store, refusing to delete one key (as S3 does under an object lock or a
    bucket policy: AccessDenied)."""

    refused = ""

    def delete(self, key: str) -> None:
        if key == self.refused:
            raise BlobStoreError(f"the blob store refused to delete {key}: AccessDenied")
        super().delete(key)


def test_a_blob_the_store_refuses_to_delete_is_reported_and_the_repair_goes_on(
    side: Side, docstore_settings: Settings, tmp_path: Path
) -> None:
    blobs = OneRefused(tmp_path / "blobs")
    orphans = sorted(blobs.put(1, f"orphan-{i}.txt", b"nobody's").key for i in range(3))
    blobs.refused = orphans[0]  # the first listed: it used to end the run there
    with cast(
        AbstractContextManager[Docstore], side.connect(docstore_settings, blobs=blobs)
    ) as store:
        store.redis.set(cache_key("document:999999:result"), b"{}")  # a later audit's finding
        report = doctor(side, store, repair=True)
    assert kinds(report) == {"blob_orphaned": 3, "cache_stale": 1}
    assert report.repaired == {"blob_orphaned": 2, "cache_stale": 1}
    refused = next(f for f in report.sample if f.subject == orphans[0])
    assert refused.repair is None and "could not delete it" in refused.detail
    assert "AccessDenied" in refused.detail
    left = {p.relative_to(blobs.root).as_posix() for p in blobs.root.rglob("*") if p.is_file()}
    assert left == {orphans[0]}


def test_with_redis_refusing_writes_the_repair_goes_on_and_says_what_was_left_out(
    side: Side,
    docstore_settings: Settings,
    blob_store: BlobStore,
    sql: psycopg.Connection[Any],
) -> None:
    """Redis out of memory (noeviction) or refusing writes after a failed snapshot (MISCONF):
    as with Redis down, the audits that need only PostgreSQL and the bucket run, and the
    repaired lease is told."""
    settings = docstore_settings.model_copy(update={"retry_backoff_base": 0.0})
    with cast(AbstractContextManager[Docstore], side.connect(settings, blobs=blob_store)) as store:
        stuck = submit(store, "stuck.txt")
        store.lifecycle.claim(stuck.id, "worker-dead", 60)
        sql.execute(
            "UPDATE documents SET lease_expires_at = now() - interval '1 minute' WHERE id = %s",
            [stuck.id],
        )
        orphan = blob_store.put(1, "orphan.txt", b"nobody's")
        full = redis.Redis.from_url(settings.redis_url)
        full.config_set("maxmemory", 1)  # noeviction: every write that needs memory is refused
        try:
            report = doctor(side, store, repair=True)
        finally:
            full.config_set("maxmemory", 0)
            full.close()
        assert store.documents.get(stuck.id).status == "PENDING"
    assert report.repaired.get("lease_expired") == 1 and report.repaired.get("blob_orphaned") == 1
    lease = next(f for f in report.sample if f.kind == "lease_expired")
    assert lease.repair is not None and "not enqueued (Redis failed)" in lease.repair
    with pytest.raises(Exception, match="not found"):
        blob_store.get(orphan.key)
    assert not report.clean
    assert any("refused" in line for line in report.unavailable), report.unavailable


def test_a_finding_callback_that_cannot_be_called_is_refused_before_any_repair(
    side: Side, store: Docstore, sql: psycopg.Connection[Any]
) -> None:
    stuck = submit(store, "stuck.txt")
    store.lifecycle.claim(stuck.id, "worker-dead", 60)
    sql.execute("UPDATE documents SET lease_expires_at = now() - interval '1 minute'")
    with pytest.raises(InvalidInput, match="on_finding"):
        side.make(Doctor, store, repair=True, on_finding="print")
    assert store.documents.get(stuck.id).status == "PROCESSING"


def test_a_reader_that_stops_early_ends_the_command_with_a_line_not_a_traceback(
    docstore_settings: Settings, tmp_path: Path
) -> None:
    # `docstore doctor | head -1`: a BrokenPipeError traceback, exit 1 (as if it found things).
    client = redis.Redis.from_url(docstore_settings.redis_url)
    for document_id in range(900_001, 902_001):  # progress of documents that do not exist
        client.hset(progress_key(document_id), mapping={"percent": "5", "stage": "ocr"})
    env = {
        **os.environ,
        "DATABASE_URL": docstore_settings.database_url,
        "REDIS_URL": docstore_settings.redis_url,
        "BLOB_BACKEND": "local",
        "BLOB_DIR": str(tmp_path),
    }

    def doctor_read_once(stderr: int) -> tuple[subprocess.Popen[bytes], bytes]:
        """The command, its first line read, then its output closed (the reader is gone)."""
        doctor = subprocess.Popen(
            [sys.executable, "-m", "docstore", "doctor", "--grace", "0"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=tmp_path,
        )
        assert doctor.stdout is not None
        first = doctor.stdout.readline()
        doctor.stdout.close()
        return doctor, first

    doctor, first = doctor_read_once(subprocess.PIPE)
    assert doctor.stderr is not None
    err = doctor.stderr.read().decode()
    assert doctor.wait(timeout=60) == 2, err
    assert first.startswith(b"progress_stale")
    assert "Traceback" not in err and "broken pipe" in err
    # `2>&1 | head`: the complaint itself met the closed pipe and escaped (exit 1).
    merged, _ = doctor_read_once(subprocess.STDOUT)
    assert merged.wait(timeout=60) == 2


def test_a_redis_that_refuses_every_delete_still_gets_the_report(
    side: Side, docstore_settings: Settings, blob_store: BlobStore
) -> None:
    # MISCONF (a failed snapshot) refuses every write, a DEL too: the scratch set's clean-up
    # raised RedisCommandError in place of the report. An ACL denying DEL answers the same way.
    admin = redis.Redis.from_url(docstore_settings.redis_url)
    admin.acl_setuser(
        "no-delete", enabled=True, passwords=["+pw"], keys=["*"], channels=["*"],
        commands=["+@all", "-del", "-unlink"],
    )  # fmt: skip
    url = docstore_settings.redis_url.replace("redis://", "redis://no-delete:pw@", 1)
    limited = docstore_settings.model_copy(update={"redis_url_secret": SecretStr(url)})
    try:
        with cast(
            AbstractContextManager[Docstore], side.connect(limited, blobs=blob_store)
        ) as store:
            report = doctor(side, store)
    finally:
        admin.acl_deluser("no-delete")
        admin.close()
    assert report.clean, report.summary()

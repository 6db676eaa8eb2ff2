"""UserRepo against a real PostgreSQL: keys shown once and stored hashed, authentication, CRUD."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from docstore import Docstore
from docstore.errors import Conflict, DocstoreError, InvalidInput, NotFound
from docstore.models import DocumentCreate, UserCreate, UserUpdate
from docstore.repositories.api_keys import API_KEY_PREFIX, is_well_formed, new_api_key

SqlLog = Callable[[], list[str]]


def _scalar(store: Docstore, sql: str, *params: object) -> object:
    with store.pool.connection() as conn:
        row = conn.execute(sql, params).fetchone()  # type: ignore[arg-type]
    return None if row is None else row[0]


def test_new_api_keys_are_prefixed_checksummed_and_distinct() -> None:
    keys = {new_api_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        assert key.startswith(API_KEY_PREFIX)
        assert is_well_formed(key)
    key = next(iter(keys))
    # Any single changed character breaks the checksum.
    for position in (len(API_KEY_PREFIX), len(key) // 2, len(key) - 1):
        changed = "A" if key[position] != "A" else "B"
        assert not is_well_formed(key[:position] + changed + key[position + 1 :])
    for bad in ("", key[:-1], key + "A", key.replace(API_KEY_PREFIX, "xyz_"), None, 42, b"dsk_"):
        assert not is_well_formed(bad)


def test_create_shows_the_key_once_and_stores_only_its_digest(store: Docstore) -> None:
    created = store.users.create(UserCreate(email="Ada@Example.com"))
    key = created.api_key
    assert is_well_formed(key)
    assert created.user.email == "Ada@Example.com"
    assert created.user.has_api_key
    assert key not in repr(created)

    # The whole users table, as text: no trace of the key.
    table = _scalar(store, "SELECT string_agg(u::text, '|') FROM users AS u")
    assert isinstance(table, str) and created.user.email in table
    assert key not in table
    assert key.encode().hex() not in table
    stored = _scalar(store, "SELECT api_key_hash FROM users WHERE id = %s", created.user.id)
    assert bytes(stored) == hashlib.sha256(key.encode()).digest()  # type: ignore[arg-type]

    # Reading the user back never shows a key again.
    again = store.users.get(created.user.id)
    assert again == created.user
    assert key not in again.model_dump_json()


def test_authenticate_finds_the_user_and_refuses_unknown_and_revoked_keys(
    store: Docstore,
) -> None:
    created = store.users.create(UserCreate(email="bob@example.com"))
    user = store.users.authenticate(created.api_key)
    assert user is not None and user.id == created.user.id

    assert store.users.authenticate(new_api_key()) is None  # well formed, unknown

    store.users.revoke_api_key(created.user.id)
    assert store.users.authenticate(created.api_key) is None
    assert store.users.get(created.user.id).has_api_key is False


def test_a_malformed_key_never_reaches_the_database(store: Docstore, sql_log: SqlLog) -> None:
    created = store.users.create(UserCreate(email="carol@example.com"))
    key = created.api_key
    malformed = [
        "",
        "secret",
        key[:-1] + ("x" if key[-1] != "x" else "y"),  # checksum mismatch
        key.upper(),
        key + " ",
        "dsk_" + "é" * (len(key) - 4),
        "x" * 10_000,
    ]
    before = sql_log()
    for candidate in malformed:
        assert store.users.authenticate(candidate) is None
    assert sql_log() == before

    # Even with the pool closed, a malformed key is refused quietly: no connection was asked for.
    store.pool.close()
    assert store.users.authenticate(malformed[2]) is None


def test_last_use_is_recorded_at_most_once_a_minute(store: Docstore, sql_log: SqlLog) -> None:
    created = store.users.create(UserCreate(email="dan@example.com"))
    assert created.user.api_key_last_used_at is None

    def row_version() -> object:  # xmin changes whenever the row is written
        return _scalar(store, "SELECT xmin::text FROM users WHERE id = %s", created.user.id)

    first = store.users.authenticate(created.api_key)
    assert first is not None and first.api_key_last_used_at is not None
    written = row_version()
    for _ in range(3):
        again = store.users.authenticate(created.api_key)
        assert again is not None and again.api_key_last_used_at == first.api_key_last_used_at
    assert row_version() == written  # nothing written within the minute
    assert sql_log().count("authenticate_user") == 4  # one statement per call

    with store.pool.connection() as conn:
        conn.execute(
            "UPDATE users SET api_key_last_used_at = now() - interval '61 seconds' WHERE id = %s",
            (created.user.id,),
        )
    later = store.users.authenticate(created.api_key)
    assert later is not None and later.api_key_last_used_at is not None
    assert later.api_key_last_used_at > first.api_key_last_used_at
    assert store.users.get(created.user.id).api_key_last_used_at == later.api_key_last_used_at


def test_concurrent_calls_at_the_minute_boundary_record_the_use_once(
    store: Docstore, docstore_database_url: str
) -> None:
    created = store.users.create(UserCreate(email="eve@example.com"))
    with store.pool.connection() as conn:  # count the writes to users (test database only)
        conn.execute("CREATE TABLE user_writes (n integer NOT NULL)")
        conn.execute(
            "CREATE FUNCTION count_user_write() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN INSERT INTO user_writes VALUES (1); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER users_written AFTER UPDATE ON users "
            "FOR EACH ROW EXECUTE FUNCTION count_user_write()"
        )
    callers = 4
    with psycopg.connect(docstore_database_url) as blocker, ThreadPoolExecutor(callers) as pool:
        # Hold the row so that every caller reads "never used", then queues for the row lock.
        blocker.execute("SELECT 1 FROM users WHERE id = %s FOR UPDATE", (created.user.id,))
        results = [pool.submit(store.users.authenticate, created.api_key) for _ in range(callers)]
        while _scalar(store, WAITING_FOR_A_LOCK) != callers:
            time.sleep(0.01)
        blocker.commit()
        assert all(result.result() is not None for result in results)
    assert _scalar(store, "SELECT count(*) FROM user_writes") == 1
    assert store.users.get(created.user.id).api_key_last_used_at is not None


def test_a_call_that_waited_for_a_revoke_does_not_stamp_the_revoked_key_as_used(
    store: Docstore, docstore_database_url: str
) -> None:
    created = store.users.create(UserCreate(email="late@example.com"))
    with psycopg.connect(docstore_database_url) as revoker, ThreadPoolExecutor(1) as pool:
        revoker.execute(
            "UPDATE users SET api_key_hash = NULL, api_key_last_used_at = NULL WHERE id = %s",
            (created.user.id,),
        )  # as revoke_api_key does, not committed yet
        late = pool.submit(store.users.authenticate, created.api_key)
        while _scalar(store, WAITING_FOR_A_LOCK) != 1:
            time.sleep(0.01)
        revoker.commit()
        late.result()  # it read the row before the revoke: answered as of then
    user = store.users.get(created.user.id)
    assert (user.has_api_key, user.api_key_last_used_at) == (False, None)
    assert store.users.authenticate(created.api_key) is None


WAITING_FOR_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity "
    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


def test_rotating_the_key_shows_a_new_one_and_the_old_one_stops_working(store: Docstore) -> None:
    created = store.users.create(UserCreate(email="erin@example.com"))
    assert store.users.authenticate(created.api_key) is not None

    rotated = store.users.rotate_api_key(created.user.id)
    assert rotated.api_key != created.api_key and is_well_formed(rotated.api_key)
    assert rotated.user.api_key_last_used_at is None
    assert store.users.authenticate(created.api_key) is None
    user = store.users.authenticate(rotated.api_key)
    assert user is not None and user.id == created.user.id

    with pytest.raises(NotFound):
        store.users.rotate_api_key(created.user.id + 1000)


def test_emails_are_unique_and_found_whatever_their_case(store: Docstore) -> None:
    created = store.users.create(UserCreate(email="Fay@Example.com"))
    found = store.users.get_by_email("fay@EXAMPLE.COM")
    assert found is not None and found.id == created.user.id
    assert store.users.get_by_email("nobody@example.com") is None

    with pytest.raises(Conflict) as caught:
        store.users.create(UserCreate(email="FAY@example.com"))
    assert caught.value.constraint_name == "users_email_lower_key"


def test_update_changes_the_email_and_leaves_omitted_fields(store: Docstore) -> None:
    first = store.users.create(UserCreate(email="gus@example.com")).user
    other = store.users.create(UserCreate(email="hal@example.com")).user

    unchanged = store.users.update(first.id, UserUpdate())
    assert unchanged.email == "gus@example.com"
    updated = store.users.update(first.id, UserUpdate(email="gus@example.org"))
    assert updated.email == "gus@example.org"
    assert updated.updated_at >= first.updated_at
    assert store.users.get(first.id).email == "gus@example.org"

    with pytest.raises(Conflict):
        store.users.update(first.id, UserUpdate(email=other.email.upper()))
    with pytest.raises(NotFound):
        store.users.update(other.id + 1000, UserUpdate(email="x@example.com"))


INVALID_EMAILS = [
    "",
    "no-at-sign",
    "two@@example.com",
    "a b@example.com",
    "x@nodot",
    "\ud800@example.com",
    "a" * 310 + "@example.com",  # 322 characters: one more than users_email_check allows
    42,
]


def test_invalid_emails_are_refused_with_a_typed_error(store: Docstore) -> None:
    for email in INVALID_EMAILS:
        with pytest.raises(InvalidInput) as caught:
            store.users.create({"email": email})  # type: ignore[arg-type]
        assert caught.value.field == "email", email
    assert _scalar(store, "SELECT count(*) FROM users") == 0


def test_nul_bytes_are_stripped_from_emails(store: Docstore) -> None:
    created = store.users.create(UserCreate(email="ivy\x00@example.com"))
    assert created.user.email == "ivy@example.com"


def test_invalid_ids_are_refused_before_any_query(store: Docstore, sql_log: SqlLog) -> None:
    for user_id in (0, -1, True, "1", 1.0, 2**63, None):
        with pytest.raises(InvalidInput) as caught:
            store.users.get(user_id)  # type: ignore[arg-type]
        assert caught.value.field == "user_id", user_id
    assert sql_log() == []


def test_get_and_delete_of_a_missing_user_raise_not_found(store: Docstore) -> None:
    with pytest.raises(NotFound):
        store.users.get(12345)
    with pytest.raises(NotFound):
        store.users.delete(12345)


def test_deleting_a_user_deletes_its_documents(store: Docstore) -> None:
    doomed = store.users.create(UserCreate(email="jo@example.com")).user
    kept = store.users.create(UserCreate(email="kim@example.com")).user
    for user in (doomed, doomed, kept):
        store.documents.create(DocumentCreate(user_id=user.id, filename="a.pdf", s3_key="k/a"))

    store.users.delete(doomed.id)
    with pytest.raises(NotFound):
        store.users.get(doomed.id)
    assert _scalar(store, "SELECT count(*) FROM documents WHERE user_id = %s", doomed.id) == 0
    assert _scalar(store, "SELECT count(*) FROM documents WHERE user_id = %s", kept.id) == 1


def test_get_with_documents_reads_the_user_and_its_documents_in_one_query(
    store: Docstore, sql_log: SqlLog
) -> None:
    user = store.users.create(UserCreate(email="lee@example.com")).user
    other = store.users.create(UserCreate(email="max@example.com")).user
    created = store.documents.create_many(
        [DocumentCreate(user_id=user.id, filename=f"{n}.pdf", s3_key=f"k/{n}") for n in range(5)]
    )
    store.documents.create(DocumentCreate(user_id=other.id, filename="x.pdf", s3_key="k/x"))

    before = len(sql_log())
    found = store.users.get_with_documents(user.id)
    assert sql_log()[before:] == ["get_user_with_documents"]
    assert found.id == user.id and found.email == user.email
    assert [d.id for d in found.documents] == [d.id for d in reversed(created)]  # newest first
    assert found.documents[0].created_at.utcoffset() is not None

    assert len(store.users.get_with_documents(user.id, documents_limit=2).documents) == 2
    lonely = store.users.create(UserCreate(email="ned@example.com")).user
    assert store.users.get_with_documents(lonely.id).documents == []
    with pytest.raises(NotFound):
        store.users.get_with_documents(lonely.id + 100)


def test_list_pages_through_every_user_once(store: Docstore) -> None:
    ids = [store.users.create(UserCreate(email=f"u{n}@example.com")).user.id for n in range(7)]
    seen: list[int] = []
    cursor = None
    while True:
        page = store.users.list(limit=3, cursor=cursor)
        seen.extend(user.id for user in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == ids

    for tampered in ("garbage", cursor_of_other_kind(store), "eyJraW5kIjoidXNlcnMiLCJpZCI6LTF9"):
        with pytest.raises(InvalidInput):
            store.users.list(cursor=tampered)
    with pytest.raises(InvalidInput):
        store.users.list(limit=0)


def cursor_of_other_kind(store: Docstore) -> str:
    user = store.users.create(UserCreate(email="cursor@example.com")).user
    for n in range(2):
        store.documents.create(DocumentCreate(user_id=user.id, filename=f"{n}", s3_key="k"))
    cursor = store.documents.list_for_user(user.id, limit=1).next_cursor
    assert cursor is not None
    return cursor


def test_a_document_added_while_its_user_is_deleted_is_never_dropped_unlisted(
    store: Docstore, docstore_database_url: str
) -> None:
    user = store.users.create(UserCreate(email="gone@example.com")).user
    store.documents.create(DocumentCreate(user_id=user.id, filename="a", s3_key="k/first"))
    with psycopg.connect(docstore_database_url, autocommit=True) as conn:
        # The delete pauses after each statement on documents: room for an insert to commit.
        conn.execute(
            "CREATE FUNCTION pause() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$"
        )
        conn.execute(
            "CREATE TRIGGER pause_after_delete AFTER DELETE ON documents "
            "FOR EACH STATEMENT EXECUTE FUNCTION pause()"
        )
    with ThreadPoolExecutor(1) as pool:
        deleting = pool.submit(store.users.delete, user.id)
        paused = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
        while _scalar(store, paused) == 0:
            time.sleep(0.01)
        try:  # while the first batch is deleted, before the user row goes
            store.documents.create(DocumentCreate(user_id=user.id, filename="b", s3_key="k/racer"))
            racer_committed = True
        except DocstoreError:
            racer_committed = False
        removed = deleting.result()
    listed = _scalar(store, "SELECT count(*) FROM blob_deletions WHERE s3_key = 'k/racer'")
    # Either the racer waited and failed (the user is gone), or its blob is listed too.
    assert not racer_committed or (listed == 1 and len(removed) == 2), (removed, listed)
    assert _scalar(store, "SELECT count(*) FROM documents") == 0

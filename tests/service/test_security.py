"""Security checks: API keys never stored or logged in plaintext, passwords never printed, keys
and documents never cross from one user to another."""

from __future__ import annotations

import base64
import hashlib
import inspect
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
from psycopg import sql
from pydantic import ValidationError
from sides import Side, side_fixture, side_store_fixture  # noqa: F401 (fixtures)

from docstore import Docstore, Settings
from docstore.errors import DocstoreError, ServiceUnavailable
from docstore.models import DocumentCreate, UserCreate
from docstore.repositories.documents import DocumentRepo
from docstore.repositories.lifecycle import DocumentLifecycle
from docstore.repositories.users import UserRepo
from docstore.testing.servers import free_port

# Passwords with characters URLs must escape, so both spellings can be looked for.
DB_PASSWORD = "Db-s3cret/p@ss:w0rd%zz"
REDIS_PASSWORD = "Redis-s3cret@pw#1"
S3_SECRET = "S3-s3cret-key-value"
SECRETS = (DB_PASSWORD, REDIS_PASSWORD, S3_SECRET)


def secret_forms(secret: str) -> list[str]:
    """The ways a secret could show up: as is, URL-quoted, and as base64 or hex of its bytes."""
    raw = secret.encode()
    return [
        secret,
        quote(secret, safe=""),
        quote(secret),
        raw.hex(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
    ]


def assert_no_secret(text: str, secrets: tuple[str, ...] | list[str], where: str) -> None:
    for secret in secrets:
        for form in secret_forms(secret):
            assert form not in text, f"{where} shows a secret ({form[:6]}...)"


def full_text(exc: BaseException) -> str:
    """Everything printing the error could show: str, repr and the chained traceback."""
    return "\n".join([str(exc), repr(exc), *traceback.format_exception(exc)])


# -- API keys: only the digest is stored, nothing logs the key ---------------------------------


def _database_text(store: Docstore) -> str:
    """Every row of every table (all schemas but the catalogs), as text; bytea shows as hex."""
    parts: list[str] = []
    with store.pool.connection() as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert any(name == "users" for _, name in tables)
        for schema, table in tables:
            query = sql.SQL("SELECT t::text FROM {}.{} AS t").format(
                sql.Identifier(schema), sql.Identifier(table)
            )
            parts.extend(row[0] for row in conn.execute(query))
        # What the server is running or ran last on every connection.
        parts.extend(
            str(row[0]) for row in conn.execute("SELECT query FROM pg_stat_activity").fetchall()
        )
    return "\n".join(parts)


def _redis_text(store: Docstore) -> str:
    parts: list[str] = []
    for key in store.redis.scan_iter(count=1000):
        parts.append(repr(key))
        parts.append(repr(store.redis.dump(key)))
    return "\n".join(parts)


def _exercise_keys(store: Docstore) -> tuple[list[str], list[str]]:
    """Create users, authenticate, rotate and revoke; return (all keys ever issued, live keys)."""
    issued: list[str] = []
    live: dict[int, str] = {}
    for i in range(3):
        created = store.users.create(UserCreate(email=f"user{i}@example.com"))
        issued.append(created.api_key)
        live[created.user.id] = created.api_key
    for user_id, key in list(live.items()):
        assert store.users.authenticate(key) is not None
        rotated = store.users.rotate_api_key(user_id)
        issued.append(rotated.api_key)
        live[user_id] = rotated.api_key
        assert store.users.authenticate(key) is None
        assert store.users.authenticate(rotated.api_key) is not None
    revoked = next(iter(live))
    store.users.revoke_api_key(revoked)
    del live[revoked]
    # Everyday use: rate limiting and caching by user, as the README shows.
    for key in live.values():
        user = store.users.authenticate(key)
        assert user is not None
        store.limiter.hit(f"user-{user.id}")
        store.cache.set(f"user:{user.id}", user, ttl=60)
    return issued, list(live.values())


def test_no_api_key_is_stored_anywhere_only_its_sha256(side_store: Docstore) -> None:
    store = side_store
    issued, live = _exercise_keys(store)
    database = _database_text(store)
    everywhere = database + _redis_text(store)
    for key in issued:
        body = key[len("dsk_") : len("dsk_") + 40]  # the random part alone
        assert_no_secret(everywhere, [key, body], "the database or Redis")
    # The digests are what is stored, and only those of live keys.
    for key in issued:
        digest = hashlib.sha256(key.encode()).hexdigest()
        assert (digest in database) == (key in live)


@pytest.fixture
def sql_logging_store(side: Side, docstore_settings: Settings) -> Iterator[Docstore]:
    settings = docstore_settings.model_copy(update={"debug_sql": True})
    with side.connect(settings) as store:
        yield store


def test_no_api_key_is_ever_logged(
    sql_logging_store: Docstore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger: docstore, psycopg, psycopg.pool, redis
    store = sql_logging_store
    issued, live = _exercise_keys(store)
    # Failing paths log too: a taken email, a wrong key, a malformed key.
    with pytest.raises(DocstoreError):
        store.users.create(UserCreate(email="user1@example.com"))
    wrong_checksum = live[0][:-1] + ("x" if live[0][-1] != "x" else "y")
    assert store.users.authenticate(wrong_checksum) is None
    assert store.users.authenticate(live[0] + " ") is None
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    logged = "\n".join(
        formatter.format(record) + repr(record.args) + repr(record.__dict__)
        for record in caplog.records
    )
    # DEBUG_SQL logged every statement (by query name, never with its parameters).
    assert sum(r.name == "docstore.sql" for r in caplog.records) >= 10 and "insert_user" in logged
    for key in issued:
        assert_no_secret(logged, [key, key[len("dsk_") : len("dsk_") + 40]], "the log")


def test_a_key_is_shown_once_and_never_by_repr(side_store: Docstore) -> None:
    created = side_store.users.create(UserCreate(email="ann@example.com"))
    for text in (repr(created), str(created), repr(created.user), f"{created!r}"):
        assert created.api_key not in text
    assert created.model_dump()["api_key"] == created.api_key  # the one deliberate way out


def test_keys_of_one_user_never_authenticate_another(side_store: Docstore) -> None:
    users = side_store.users
    created = [users.create(UserCreate(email=f"k{i}@example.com")) for i in range(6)]
    keys = {c.user.id: c.api_key for c in created}
    dead: list[str] = []

    def check() -> None:
        for user_id, key in keys.items():
            found = users.authenticate(key)
            assert found is not None and found.id == user_id
        for key in dead:
            assert users.authenticate(key) is None

    check()
    first, second, third = (c.user.id for c in created[:3])
    dead.append(keys[first])
    keys[first] = users.rotate_api_key(first).api_key
    check()
    dead.append(keys.pop(second))
    users.revoke_api_key(second)
    check()
    assert users.get(second).has_api_key is False
    # A revoked user gets a working key back only by rotation, and only for itself.
    keys[second] = users.rotate_api_key(second).api_key
    check()
    # Rotating one user twice leaves every other key working.
    dead.append(keys[third])
    keys[third] = users.rotate_api_key(third).api_key
    dead.append(keys[third])
    keys[third] = users.rotate_api_key(third).api_key
    check()
    # Deleting a user kills its key and nobody else's.
    dead.append(keys.pop(first))
    users.delete(first)
    check()


# -- passwords: never in settings, errors or command output ------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """An environment (and working directory) without docstore settings or a .env file."""
    for name in list(os.environ):
        if name.startswith(("POSTGRES_", "DATABASE_", "REDIS_", "S3_", "DOCSTORE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return dict(os.environ)


def _unreachable_settings(**extra: Any) -> Settings:
    values = {
        "DATABASE_URL": f"postgresql://docuser:{quote(DB_PASSWORD, safe='')}@127.0.0.1:"
        f"{free_port()}/document_processor",
        "REDIS_URL": f"redis://:{quote(REDIS_PASSWORD, safe='')}@127.0.0.1:{free_port()}/0",
        "S3_SECRET_KEY": S3_SECRET,
        "connect_timeout": 1,
        "redis_connect_timeout": 0.2,
        "redis_socket_timeout": 0.2,
        **extra,
    }
    return Settings.model_validate(values)


def test_settings_never_show_a_password(
    clean_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", DB_PASSWORD)
    monkeypatch.setenv("S3_SECRET_KEY", S3_SECRET)
    from_parts = Settings()
    assert quote(DB_PASSWORD, safe="") in from_parts.database_url  # there for libpq only
    for settings in (from_parts, _unreachable_settings()):
        shown = "\n".join(
            [
                repr(settings),
                str(settings),
                settings.model_dump_json(),
                str(settings.model_dump()),
                settings.database_address,
                settings.redis_address,
            ]
        )
        assert_no_secret(shown, SECRETS, "Settings")


def test_invalid_settings_never_echo_a_password(clean_env: dict[str, str]) -> None:
    for values in (
        {"DATABASE_URL": f"mysql://u:{DB_PASSWORD}@h/d"},
        {"REDIS_URL": f"http://:{REDIS_PASSWORD}@h:1/0"},
        {"POSTGRES_PASSWORD": DB_PASSWORD, "POSTGRES_PORT": "not-a-port"},
    ):
        with pytest.raises(ValidationError) as info:
            Settings.model_validate(values)
        assert_no_secret(full_text(info.value), SECRETS, "a settings error")


def test_connection_errors_never_show_a_password(
    side: Side,
    clean_env: dict[str, str],
    docstore_postgres_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    # PostgreSQL refuses the connection.
    with pytest.raises(ServiceUnavailable) as refused:
        side.connect(_unreachable_settings())
    assert "127.0.0.1:" in refused.value.message
    assert_no_secret(full_text(refused.value), SECRETS, "a refused connection's error")
    # PostgreSQL answers, but the role does not exist (or the password is wrong).
    server = psycopg.conninfo.conninfo_to_dict(docstore_postgres_url)
    wrong_role = (
        f"postgresql://nobody_here:{quote(DB_PASSWORD, safe='')}@{server.get('host')}:"
        f"{server.get('port', 5432)}/postgres"
    )
    with pytest.raises(DocstoreError) as denied:
        side.connect(_unreachable_settings(DATABASE_URL=wrong_role))
    assert_no_secret(full_text(denied.value), SECRETS, "an authentication error")
    # Redis refuses: the queue raises, the cache fails open (and logs), health reports.
    store = side.make(Docstore, _unreachable_settings(DATABASE_URL=docstore_postgres_url))
    try:
        with pytest.raises(ServiceUnavailable) as redis_down:
            store.queue.enqueue(1)
        assert_no_secret(full_text(redis_down.value), SECRETS, "a Redis error")
        assert store.cache.set("k", 1) is False
        assert store.limiter.hit("k").degraded
        assert store.progress.set(1, 10, "ocr") is None
        report = store.health()
        assert report.redis_error is not None
        assert_no_secret(repr(report), SECRETS, "the health report")
    finally:
        store.close()
    logged = "\n".join(
        logging.Formatter("%(message)s").format(r) + repr(r.args) for r in caplog.records
    )
    assert "failed open" in logged
    assert_no_secret(logged, SECRETS, "the log")


def _run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


@pytest.mark.slow
def test_command_line_errors_never_show_a_password(
    clean_env: dict[str, str], tmp_path: Path, docstore_database_url: str
) -> None:
    settings = _unreachable_settings()
    database_url, redis_url = settings.database_url, settings.redis_url
    # The test server accepts any password here, so PostgreSQL answers and Redis fails.
    parts = psycopg.conninfo.conninfo_to_dict(docstore_database_url)
    reachable_db = (
        f"postgresql://{parts.get('user', 'postgres')}:{quote(DB_PASSWORD, safe='')}@"
        f"{parts.get('host')}:{parts.get('port', 5432)}/{parts.get('dbname')}"
    )
    runs: list[tuple[list[str], dict[str, str]]] = [
        (["-m", "docstore", "--database-url", database_url, "schema", "status"], clean_env),
        (["-m", "docstore", "schema", "apply"], {**clean_env, "DATABASE_URL": database_url}),
        (
            ["-m", "docstore", "schema", "status"],
            {**clean_env, "POSTGRES_PASSWORD": DB_PASSWORD, "POSTGRES_PORT": str(free_port())},
        ),
        (
            ["-m", "docstore.migrate", "--database-url", database_url, "--redis-url", redis_url],
            clean_env,
        ),
        (
            ["-m", "docstore.migrate", "--dry-run"],
            {**clean_env, "DATABASE_URL": reachable_db, "REDIS_URL": redis_url},
        ),
    ]
    for args, env in runs:
        result = _run_cli(args, env, tmp_path)
        assert result.returncode == 2, (args, result.stderr[-500:])
        assert "error:" in result.stderr
        assert "Traceback" not in result.stderr
        assert_no_secret(result.stdout + result.stderr, SECRETS, f"`{' '.join(args[:2])}`")


# -- documents: a user sees only its own ---------------------------------------------------------


def _user_id_methods(repo: type) -> set[str]:
    return {
        name
        for name, function in inspect.getmembers(repo, inspect.isfunction)
        if not name.startswith("_") and "user_id" in inspect.signature(function).parameters
    }


def _all_pages(fetch: Callable[[str | None], Any]) -> list[Any]:
    items: list[Any] = []
    cursor: str | None = None
    while True:
        page = fetch(cursor)
        items.extend(page.items)
        cursor = page.next_cursor
        if cursor is None:
            return items


def test_a_user_sees_only_its_own_documents_through_every_method_taking_a_user_id(
    side: Side, side_store: Docstore
) -> None:
    store = side_store
    users = [store.users.create(UserCreate(email=f"{n}@example.com")).user for n in ("a", "b")]
    keys = {}
    owned: dict[int, dict[str, set[int]]] = {u.id: {} for u in users}
    # Interleaved, same names and texts, so only the owner can tell them apart.
    for round_ in range(3):
        for user in users:
            for status in ("PENDING", "PROCESSING", "COMPLETED", "FAILED"):
                doc = store.documents.create(
                    DocumentCreate(user_id=user.id, filename="same.pdf", s3_key=f"k{round_}")
                )
                if status != "PENDING":
                    worker = f"w-{doc.id}"
                    store.lifecycle.claim(doc.id, worker)
                    if status == "COMPLETED":
                        store.lifecycle.mark_completed(doc.id, worker, "quarterly invoice shared")
                    elif status == "FAILED":
                        store.lifecycle.mark_failed(doc.id, worker, "boom", retry=False)
                owned[user.id].setdefault(status, set()).add(doc.id)
    for user in users:
        keys[user.id] = store.users.rotate_api_key(user.id).api_key

    def all_ids(user_id: int) -> set[int]:
        return set().union(*owned[user_id].values())

    def check_list_for_user(me: int, other: int) -> None:
        for status in (None, "PENDING", "PROCESSING", "COMPLETED", "FAILED"):
            items = _all_pages(
                lambda c, s=status: store.documents.list_for_user(me, status=s, limit=2, cursor=c)
            )
            expected = all_ids(me) if status is None else owned[me][status]
            assert {d.id for d in items} == expected and len(items) == len(expected)
        # A cursor from the other user's listing still lists only my documents.
        theirs = store.documents.list_for_user(other, limit=1).next_cursor
        page = store.documents.list_for_user(me, limit=500, cursor=theirs)
        assert {d.id for d in page.items} <= all_ids(me)

    def check_count_by_status(me: int, other: int) -> None:
        counts = store.documents.count_by_status(me)
        expected = {status: len(ids) for status, ids in owned[me].items()}
        assert counts == {**expected, "CANCELLED": 0}

    def check_get_by_idempotency_key(me: int, other: int) -> None:
        for user_id in (me, other):
            store.documents.create(
                DocumentCreate(user_id=user_id, filename="k.pdf", s3_key="k", idempotency_key="k1")
            )
        found = store.documents.get_by_idempotency_key(me, "k1")
        assert found is not None and found.user_id == me
        store.documents.delete(found.id)
        assert store.documents.get_by_idempotency_key(me, "k1") is None
        theirs = store.documents.get_by_idempotency_key(other, "k1")
        assert theirs is not None and theirs.user_id == other
        store.documents.delete(theirs.id)

    def check_search(me: int, other: int) -> None:
        for query in ("quarterly invoice", "shared", "same", '"quarterly invoice" -nothing'):
            hits = _all_pages(lambda c, q=query: store.documents.search(me, q, limit=1, cursor=c))
            assert {h.id for h in hits} <= owned[me]["COMPLETED"]
            if query != "same":
                assert {h.id for h in hits} == owned[me]["COMPLETED"]
        theirs = store.documents.search(other, "invoice", limit=1).next_cursor
        page = store.documents.search(me, "invoice", limit=100, cursor=theirs)
        assert {h.id for h in page.items} <= owned[me]["COMPLETED"]

    def check_get_with_documents(me: int, other: int) -> None:
        user = store.users.get_with_documents(me, documents_limit=1000)
        assert user.id == me and {d.id for d in user.documents} == all_ids(me)
        assert all(d.user_id == me for d in user.documents)

    def check_get(me: int, other: int) -> None:
        assert store.users.get(me).id == me

    def check_update(me: int, other: int) -> None:
        before = store.users.get(other)
        store.users.update(me, {"email": f"renamed-{me}@example.com"})  # type: ignore[arg-type]
        assert store.users.get(me).email == f"renamed-{me}@example.com"
        assert store.users.get(other) == before

    def check_rotate_api_key(me: int, other: int) -> None:
        old = keys[me]
        keys[me] = store.users.rotate_api_key(me).api_key
        assert store.users.authenticate(old) is None
        assert store.users.authenticate(keys[me]).id == me  # type: ignore[union-attr]
        assert store.users.authenticate(keys[other]).id == other  # type: ignore[union-attr]

    def check_revoke_api_key(me: int, other: int) -> None:
        store.users.revoke_api_key(me)
        assert store.users.authenticate(keys[me]) is None
        assert store.users.authenticate(keys[other]).id == other  # type: ignore[union-attr]
        keys[me] = store.users.rotate_api_key(me).api_key

    def check_delete(me: int, other: int) -> None:
        store.users.delete(me)
        for document_id in all_ids(other):
            assert store.documents.get(document_id).user_id == other
        assert store.documents.count_by_status(me) == dict.fromkeys([*owned[other], "CANCELLED"], 0)
        assert store.documents.list_for_user(me).items == []

    checks: dict[str, Callable[[int, int], None]] = {
        "list_for_user": check_list_for_user,
        "count_by_status": check_count_by_status,
        "get_by_idempotency_key": check_get_by_idempotency_key,
        "search": check_search,
        "get_with_documents": check_get_with_documents,
        "get": check_get,
        "update": check_update,
        "rotate_api_key": check_rotate_api_key,
        "revoke_api_key": check_revoke_api_key,
        "delete": check_delete,
    }
    # A new method taking a user_id must be added here to be checked.
    repositories = tuple(side.twin(repo) for repo in (UserRepo, DocumentRepo, DocumentLifecycle))
    assert set().union(*(_user_id_methods(repo) for repo in repositories)) == set(checks)
    a, b = (u.id for u in users)
    for name, check in checks.items():
        if name != "delete":
            check(a, b)
            check(b, a)
    checks["delete"](a, b)
    # B's documents, key and listings are intact after A is gone.
    check_list_for_user(b, b)
    check_search(b, b)
    assert store.users.authenticate(keys[b]).id == b  # type: ignore[union-attr]

"""Schema by yoyo: apply, roll back everything, apply again; CLI and the yoyo command."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from docstore.cli import main as cli_main
from docstore.errors import InvalidInput, SchemaError
from docstore.postgres import schema
from docstore.postgres.schema import (
    MigrationStatus,
    apply_schema,
    rollback_schema,
    schema_status,
)
from docstore.resources import migrations_dir
from docstore.settings import Settings

SCHEMA_SNAPSHOT = """
SELECT 'column', table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable
       || ' ' || coalesce(column_default, '') || ' ' || coalesce(character_maximum_length::text, '')
FROM information_schema.columns
WHERE table_schema = 'public' AND table_name NOT LIKE '%%yoyo%%'
UNION ALL
SELECT 'constraint', conrelid::regclass::text || ' ' || conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint
WHERE connamespace = 'public'::regnamespace AND conrelid::regclass::text NOT LIKE '%%yoyo%%'
UNION ALL
SELECT 'index', indexdef
FROM pg_indexes
WHERE schemaname = 'public' AND tablename NOT LIKE '%%yoyo%%'
UNION ALL
SELECT 'function', oid::regprocedure::text || ' strict=' || proisstrict || ' '
       || provolatile::text || ' ' || md5(prosrc)
FROM pg_proc
WHERE pronamespace = 'public'::regnamespace
ORDER BY 1, 2
"""


def snapshot(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [(kind, text) for kind, text in conn.execute(SCHEMA_SNAPSHOT)]


def settings_for(url: str) -> Settings:
    return Settings.model_validate({"DATABASE_URL": url})


def migration_ids() -> list[str]:
    return sorted(
        p.name.removesuffix(".sql")
        for p in migrations_dir().glob("*.sql")
        if not p.name.endswith(".rollback.sql")
    )


def test_every_migration_has_a_rollback() -> None:
    for migration in migration_ids():
        assert (migrations_dir() / f"{migration}.rollback.sql").is_file(), migration


def test_apply_rollback_all_apply_again_gives_the_same_schema(
    docstore_empty_database_url: str,
) -> None:
    settings = settings_for(docstore_empty_database_url)
    assert apply_schema(settings) == migration_ids()
    first = snapshot(docstore_empty_database_url)
    assert apply_schema(settings) == []  # idempotent

    assert rollback_schema(settings, count=None) == list(reversed(migration_ids()))
    assert snapshot(docstore_empty_database_url) == []
    assert all(not status.applied for status in schema_status(settings))

    apply_schema(settings)
    assert snapshot(docstore_empty_database_url) == first
    assert all(status.applied for status in schema_status(settings))


def test_each_rollback_undoes_exactly_its_migration(docstore_empty_database_url: str) -> None:
    settings = settings_for(docstore_empty_database_url)
    snapshots = [snapshot(docstore_empty_database_url)]
    apply_schema(settings)
    for migration in reversed(migration_ids()):
        before = snapshot(docstore_empty_database_url)
        assert rollback_schema(settings, count=1) == [migration]
        after = snapshot(docstore_empty_database_url)
        assert after != before, f"rolling back {migration} changed nothing"
        snapshots.append(after)
    assert snapshots[-1] == snapshots[0] == []


def test_the_document_fingerprint_is_inlined_with_the_digests_of_0004(
    docstore_database_url: str,
) -> None:
    """Migration 0008: PostgreSQL inlines legacy_document_fingerprint into the calling query
    (a STRICT one is called row by row), and the digests stay those of 0004."""
    explain = "EXPLAIN (VERBOSE) SELECT legacy_document_fingerprint(d) FROM documents AS d"
    digest = "SELECT legacy_document_fingerprint(d) FROM documents AS d"
    with psycopg.connect(docstore_database_url, autocommit=True) as conn:
        user_id = conn.execute(
            "INSERT INTO users (email) VALUES ('ann@example.com') RETURNING id"
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO documents (user_id, filename, s3_key, status, result_text, page_count,"
            " extraction_time_seconds, completed_at) VALUES (%s, 'a.pdf', 'k', 'COMPLETED',"
            " 'text', 3, 0.1, now())",
            (user_id,),
        )
        plan = "\n".join(row[0] for row in conn.execute(explain))
        assert "legacy_document_fingerprint" not in plan, plan
        assert "md5(" in plan, plan
        inlined = conn.execute(digest).fetchone()
    later = migration_ids()[migration_ids().index("0008_inline_document_fingerprint") :]
    assert rollback_schema(settings_for(docstore_database_url), count=len(later)) == later[::-1]
    with psycopg.connect(docstore_database_url) as conn:
        assert "legacy_document_fingerprint" in "\n".join(row[0] for row in conn.execute(explain))
        assert conn.execute(digest).fetchone() == inlined


def test_schema_has_the_old_design_tables_with_database_enforced_rules(
    docstore_database_url: str,
) -> None:
    with psycopg.connect(docstore_database_url) as conn:
        user_id = conn.execute(
            "INSERT INTO users (email) VALUES ('Ann@Example.com') RETURNING id"
        ).fetchone()[0]
        with pytest.raises(psycopg.errors.UniqueViolation), conn.transaction():
            conn.execute("INSERT INTO users (email) VALUES ('ann@example.COM')")

        def insert_document(columns: str, values: str, *params: object) -> None:
            with conn.transaction():
                conn.execute(
                    f"INSERT INTO documents (user_id, filename, {columns})"  # type: ignore[arg-type]
                    f" VALUES (%s, 'a.pdf', {values})",
                    (user_id, *params),
                )

        with pytest.raises(psycopg.errors.CheckViolation, match="documents_status_check"):
            insert_document("s3_key, status", "'k', 'DONE'")
        with pytest.raises(psycopg.errors.CheckViolation, match="documents_page_count_check"):
            insert_document("s3_key, page_count", "'k', -1")
        with pytest.raises(psycopg.errors.CheckViolation, match="extraction_time_seconds_check"):
            insert_document("s3_key, extraction_time_seconds", "'k', -0.5")
        with pytest.raises(psycopg.errors.StringDataRightTruncation):
            insert_document("s3_key", "%s", "k" * 513)
        status, created = conn.execute(
            "INSERT INTO documents (user_id, filename, s3_key) VALUES (%s, 'a.pdf', 'k')"
            " RETURNING status, created_at",
            (user_id,),
        ).fetchone()
        assert status == "PENDING"
        assert created.tzinfo is not None
        conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
        assert conn.execute("SELECT count(*) FROM documents").fetchone()[0] == 0  # cascade


def test_cli_apply_status_rollback(
    docstore_empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = docstore_empty_database_url
    assert cli_main(["--database-url", url, "schema", "apply"]) == 0
    assert f"applied {len(migration_ids())} migration(s)" in capsys.readouterr().out
    assert cli_main(["--database-url", url, "schema", "status"]) == 0
    assert capsys.readouterr().out.count("applied  ") == len(migration_ids())
    assert cli_main(["--database-url", url, "schema", "rollback"]) == 0
    assert f"rolled back 1 migration(s)\n  {migration_ids()[-1]}" in capsys.readouterr().out
    assert cli_main(["--database-url", url, "schema", "rollback", "--all"]) == 0
    assert cli_main(["--database-url", url, "schema", "status"]) == 0
    assert capsys.readouterr().out.count("pending  ") == len(migration_ids())


def test_cli_unreachable_database_exits_2_without_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli_main(
        ["--database-url", "postgresql://u:hunter2-secret@127.0.0.1:1/d", "schema", "apply"]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "127.0.0.1:1" in err
    assert "hunter2-secret" not in err


def test_python_dash_m_docstore_runs_from_another_directory(
    docstore_empty_database_url: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "docstore", "schema", "apply"],
        cwd=tmp_path,
        env={**os.environ, "DATABASE_URL": docstore_empty_database_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "0001_users_and_documents" in result.stdout


def test_yoyo_command_applies_the_migrations_folder(docstore_empty_database_url: str) -> None:
    yoyo_url = settings_for(docstore_empty_database_url).yoyo_url
    assert yoyo_url.startswith("postgresql+psycopg://")
    yoyo = Path(sys.executable).with_name("yoyo")
    result = subprocess.run(
        [str(yoyo), "apply", "--batch", "--database", yoyo_url, str(migrations_dir())],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert all(s.applied for s in schema_status(settings_for(docstore_empty_database_url)))


def test_a_lock_left_by_a_killed_command_is_named_and_can_be_broken(
    docstore_empty_database_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = docstore_empty_database_url
    assert cli_main(["--database-url", url, "schema", "apply"]) == 0
    with psycopg.connect(url) as conn:  # what an applier killed mid-way leaves
        conn.execute("INSERT INTO yoyo_lock (locked, ctime, pid) VALUES (1, now(), 999999)")
    monkeypatch.setattr(schema, "_LOCK_TIMEOUT_SECONDS", 1)
    with pytest.raises(SchemaError, match="docstore schema break-lock") as caught:
        apply_schema(settings_for(url))
    assert "Process 999999" in caught.value.message
    capsys.readouterr()
    assert cli_main(["--database-url", url, "schema", "break-lock"]) == 0
    assert "removed 1 lock(s)" in capsys.readouterr().out
    assert apply_schema(settings_for(url)) == []
    assert cli_main(["--database-url", url, "schema", "break-lock"]) == 0
    assert "no lock was held" in capsys.readouterr().out


def test_migrations_a_newer_docstore_applied_are_listed_and_stop_a_rollback(
    docstore_empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = docstore_empty_database_url
    settings = settings_for(url)
    apply_schema(settings)
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO _yoyo_migration (migration_hash, migration_id, applied_at_utc) "
            "VALUES ('f00d', '0099_from_a_newer_docstore', now() AT TIME ZONE 'UTC')"
        )
    assert schema_status(settings)[-1] == MigrationStatus(
        "0099_from_a_newer_docstore", True, shipped=False
    )
    assert cli_main(["--database-url", url, "schema", "status"]) == 0
    assert "0099_from_a_newer_docstore  (not shipped" in capsys.readouterr().out
    with pytest.raises(SchemaError, match="0099_from_a_newer_docstore"):
        rollback_schema(settings, confirm_destroy=True)
    assert all(status.applied for status in schema_status(settings))


def test_a_server_that_never_answers_fails_within_the_connect_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        code = cli_main(
            ["--database-url", f"postgresql://u@127.0.0.1:{port}/d", "schema", "status"]
        )
    assert code == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


def test_a_wrong_role_is_named_not_hidden_behind_a_type_name(
    docstore_empty_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = docstore_empty_database_url.replace("postgres@", "no_such_role@", 1)
    assert cli_main(["--database-url", wrong, "schema", "status"]) == 2
    assert 'role "no_such_role" does not exist' in capsys.readouterr().err


def test_a_rollback_takes_only_true_as_a_confirmation_and_a_whole_count(
    docstore_empty_database_url: str,
) -> None:
    settings = settings_for(docstore_empty_database_url)
    apply_schema(settings)
    with psycopg.connect(docstore_empty_database_url) as conn:
        conn.execute("INSERT INTO users (email) VALUES ('kept@example.com')")
    for confirm in ("no", "false", 1):  # truthy, and never a yes
        with pytest.raises(InvalidInput, match="confirm_destroy"):
            rollback_schema(settings, count=None, confirm_destroy=confirm)  # type: ignore[arg-type]
    for count in (True, 0, "1", 1.0, float("nan")):
        with pytest.raises(InvalidInput, match="count"):
            rollback_schema(settings, count=count)  # type: ignore[arg-type]
    assert all(status.applied for status in schema_status(settings))
    with psycopg.connect(docstore_empty_database_url) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone() == (1,)

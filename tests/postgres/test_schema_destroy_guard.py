"""No rollback, ours or the yoyo command's, destroys stored rows without an explicit confirmation.

The guard is a `DO` block at the top of each rollback file, so it holds for every tool that runs
the files: it raises while the tables the rollback drops or alters hold rows, unless the session
setting `docstore.confirm_destroy` is `'yes'`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from docstore.cli import main as cli_main
from docstore.errors import RollbackRefused
from docstore.postgres.schema import apply_schema, rollback_schema, schema_status
from docstore.resources import migrations_dir
from docstore.settings import Settings

MIGRATIONS = [
    "0001_users_and_documents",
    "0002_document_lifecycle_and_search",
    "0003_legacy_task_id",
    "0004_legacy_migration_ledger",
    "0005_shared_service",
    "0006_legacy_raw_digest",
    "0007_legacy_kept_docstore",
    "0008_inline_document_fingerprint",
]
# Rollbacks that drop nothing (they change how a function runs) go ahead without confirmation.
DESTROYS_NOTHING = {"0008_inline_document_fingerprint"}


def settings_for(url: str) -> Settings:
    return Settings.model_validate({"DATABASE_URL": url})


def add_user(url: str, *, with_document: bool) -> None:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "INSERT INTO users (email) VALUES ('keep@example.com') RETURNING id"
        ).fetchone()
        assert row is not None
        if with_document:
            conn.execute(
                "INSERT INTO documents (user_id, filename, s3_key, result_text)"
                " VALUES (%s, 'keep.pdf', 'uploads/keep.pdf', 'the only copy')",
                [row[0]],
            )


def stored_rows(url: str) -> tuple[int, int]:
    """(users, documents) as they stand, read on a new connection."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM users), (SELECT count(*) FROM documents)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def applied(url: str) -> list[str]:
    return [s.id for s in schema_status(settings_for(url)) if s.applied]


def run_yoyo(
    url: str, *args: str, tmp_path: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real yoyo command on the shipped migrations folder, away from any yoyo.ini."""
    yoyo = Path(sys.executable).with_name("yoyo")
    return subprocess.run(
        [str(yoyo), *args, "--batch", "--database", settings_for(url).yoyo_url,
         str(migrations_dir())],
        cwd=tmp_path,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


# `reapply --batch` without -r rolls back every migration (0001 drops the tables) and applies
# them again; `rollback --batch` rolls back the last one. Each goes as far as 0008 (it destroys
# nothing) and refuses at 0007, which drops a column of the ledger.
@pytest.mark.parametrize("command", [["reapply"], ["rollback"], ["rollback", "--all"]])
def test_yoyo_command_without_revision_refuses_and_keeps_the_rows(
    command: list[str], docstore_database_url: str, tmp_path: Path
) -> None:
    url = docstore_database_url
    add_user(url, with_document=True)
    if command == ["rollback"]:
        result = run_yoyo(url, *command, tmp_path=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert applied(url) == MIGRATIONS[:-1]
    result = run_yoyo(url, *command, tmp_path=tmp_path)
    assert result.returncode != 0, result.stdout + result.stderr
    assert "docstore.confirm_destroy" in result.stderr
    assert stored_rows(url) == (1, 1)
    assert applied(url) == MIGRATIONS[:-1]  # 0008 rolled back, 0007 refused


def test_yoyo_force_which_skips_failing_statements_still_keeps_the_rows(
    docstore_database_url: str, tmp_path: Path
) -> None:
    url = docstore_database_url
    add_user(url, with_document=True)
    result = run_yoyo(url, "rollback", "--all", "--force", tmp_path=tmp_path)
    assert "docstore.confirm_destroy" in result.stderr
    # yoyo records the rollbacks it forced through, but each check and its drops are one
    # statement: nothing was dropped.
    assert stored_rows(url) == (1, 1)
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(legacy_task_id) FROM documents").fetchone() == (0,)
    assert applied(url) == []
    assert run_yoyo(url, "mark", tmp_path=tmp_path).returncode == 0  # the README's repair
    assert applied(url) == MIGRATIONS


def test_yoyo_rollback_confirmed_with_pgoptions_drops_the_tables(
    docstore_database_url: str, tmp_path: Path
) -> None:
    url = docstore_database_url
    add_user(url, with_document=True)
    confirmed = {"PGOPTIONS": "-c docstore.confirm_destroy=yes"}
    result = run_yoyo(url, "rollback", "--all", tmp_path=tmp_path, env=confirmed)
    assert result.returncode == 0, result.stderr
    assert applied(url) == []
    with pytest.raises(psycopg.errors.UndefinedTable):
        stored_rows(url)


def test_every_rollback_refuses_while_its_tables_hold_rows(docstore_database_url: str) -> None:
    url = docstore_database_url
    settings = settings_for(url)
    add_user(url, with_document=True)
    for migration in reversed(MIGRATIONS):
        if migration in DESTROYS_NOTHING:
            assert rollback_schema(settings, count=1) == [migration]
            assert stored_rows(url) == (1, 1)
            continue
        before = applied(url)
        with pytest.raises(RollbackRefused, match=migration) as refused:
            rollback_schema(settings, count=1)
        assert refused.value.rolled_back == []
        assert applied(url) == before
        assert stored_rows(url) == (1, 1)
        assert rollback_schema(settings, count=1, confirm_destroy=True) == [migration]
    assert applied(url) == []


def test_rollback_of_users_only_refuses_at_the_first_migration_that_alters_users(
    docstore_database_url: str,
) -> None:
    url = docstore_database_url
    add_user(url, with_document=False)
    with pytest.raises(RollbackRefused, match=MIGRATIONS[1]) as refused:
        rollback_schema(settings_for(url), count=None)
    # Dropping the empty documents.legacy_task_id (and later ones) destroyed nothing: went ahead.
    assert refused.value.rolled_back == MIGRATIONS[:1:-1]
    assert f"rolled back before refusing: {', '.join(MIGRATIONS[:1:-1])}" in refused.value.message
    assert applied(url) == MIGRATIONS[:2]
    assert stored_rows(url) == (1, 0)


def test_cli_rollback_refuses_with_exit_2_then_the_flag_confirms(
    docstore_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    url = docstore_database_url
    add_user(url, with_document=True)
    assert cli_main(["--database-url", url, "schema", "rollback", "--all"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("error: ") and "--yes-destroy-data" in err
    assert "rolled back before refusing: 0008_inline_document_fingerprint" in err
    assert stored_rows(url) == (1, 1)
    assert applied(url) == MIGRATIONS[:-1]

    code = cli_main(["--database-url", url, "schema", "rollback", "--all", "--yes-destroy-data"])
    assert code == 0
    assert f"rolled back {len(MIGRATIONS) - 1} migration(s)" in capsys.readouterr().out
    assert applied(url) == []


def test_empty_tables_roll_back_without_confirmation(
    docstore_database_url: str, tmp_path: Path
) -> None:
    url = docstore_database_url
    assert rollback_schema(settings_for(url), count=1) == [MIGRATIONS[-1]]
    result = run_yoyo(url, "reapply", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert applied(url) == MIGRATIONS[:-1]  # reapply re-applied what was applied
    assert rollback_schema(settings_for(url), count=None) == list(reversed(MIGRATIONS[:-1]))
    assert applied(url) == []


def test_apply_after_a_confirmed_full_rollback_starts_empty(docstore_database_url: str) -> None:
    url = docstore_database_url
    add_user(url, with_document=True)
    rollback_schema(settings_for(url), count=None, confirm_destroy=True)
    assert apply_schema(settings_for(url)) == MIGRATIONS
    assert stored_rows(url) == (0, 0)


def test_store_rollback_refuses_then_confirm_destroy_drops(docstore_database_url: str) -> None:
    from docstore.store import Docstore

    add_user(docstore_database_url, with_document=True)
    with Docstore.connect(settings_for(docstore_database_url)) as store:
        with pytest.raises(RollbackRefused):
            store.rollback_schema(count=None)
        assert stored_rows(docstore_database_url) == (1, 1)
        assert store.rollback_schema(count=None, confirm_destroy=True) == MIGRATIONS[-2::-1]
    assert applied(docstore_database_url) == []


def test_a_confirmed_rollback_of_0005_keeps_cancelled_documents_as_failed_ones(
    docstore_database_url: str,
) -> None:
    url = docstore_database_url
    add_user(url, with_document=True)
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE documents SET status = 'CANCELLED'")
    settings = settings_for(url)
    assert rollback_schema(settings, count=3, confirm_destroy=True) == [
        "0008_inline_document_fingerprint",
        "0007_legacy_kept_docstore",
        "0006_legacy_raw_digest",
    ]
    with pytest.raises(RollbackRefused, match="0005_shared_service"):
        rollback_schema(settings, count=1)
    assert rollback_schema(settings, count=1, confirm_destroy=True) == ["0005_shared_service"]
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status, error_message, result_text FROM documents").fetchone()
    assert row == ("FAILED", "cancelled", "the only copy")
    assert apply_schema(settings) == MIGRATIONS[4:]
    assert stored_rows(url) == (1, 1)

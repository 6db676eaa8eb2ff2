"""The `docstore` console script: `schema` and `migrate` subcommands behind one entry point."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from docstore import Docstore, Settings
from docstore.cli import main
from docstore.migrate.cli import main as migrate_main


def _without_timings(text: str) -> str:
    # Durations and rates differ between two runs.
    return re.sub(r"duration.*", "duration", text)


def test_docstore_migrate_takes_the_options_and_exit_codes_of_python_m_docstore_migrate(
    docstore_store: Docstore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings: Settings = docstore_store.settings
    docstore_store.redis.hset(
        "task:1", mapping={"filename": "a.pdf", "s3_key": "k", "status": "done"}
    )
    docstore_store.redis.hset("task:2", mapping={"filename": "b.pdf", "status": "done"})  # reject
    options = [
        "--redis-url",
        settings.redis_url,
        "--rejects",
        str(tmp_path / "r.jsonl"),
        "--dry-run",
    ]
    assert migrate_main(["--database-url", settings.database_url, *options]) == 1
    direct = capsys.readouterr().out
    # The database URL may come before the subcommand, like for `schema`.
    assert main(["--database-url", settings.database_url, "migrate", *options]) == 1
    assert _without_timings(capsys.readouterr().out) == _without_timings(direct)
    assert "would migrate" in direct


def test_docstore_migrate_passes_usage_errors_through(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--batch-size", "lots"])
    assert exited.value.code == 2
    assert "--batch-size" in capsys.readouterr().err


def test_unknown_options_of_schema_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["schema", "status", "--bogus"])
    assert exited.value.code == 2
    assert "--bogus" in capsys.readouterr().err

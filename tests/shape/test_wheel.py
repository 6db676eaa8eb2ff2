"""The built wheel carries the SQL and migrations: installed in a fresh venv, it works anywhere."""

import os
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import docstore, pathlib
from docstore import Docstore, Settings
assert "site-packages" in docstore.__file__, docstore.__file__
with Docstore.connect(Settings()) as store:
    print("applied", store.apply_schema())
    print("pending", [m.id for m in store.schema_status() if not m.applied])
    print("version", store.health().postgres_version)
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("docstore-*.whl")
    return built


def test_wheel_contains_sql_migrations_and_py_typed(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    shipped_sql = {p.name for p in (ROOT / "sql").glob("*.sql")}
    shipped_migrations = {p.name for p in (ROOT / "migrations").glob("*.sql")}
    assert {Path(n).name for n in names if n.startswith("docstore/sql/")} == shipped_sql
    assert {
        Path(n).name for n in names if n.startswith("docstore/migrations/")
    } == shipped_migrations
    assert "docstore/py.typed" in names
    shipped_lua = {p.name for p in (ROOT / "docstore" / "redis" / "lua").glob("*.lua")}
    assert (
        shipped_lua
        and {Path(n).name for n in names if n.startswith("docstore/redis/lua/")} == shipped_lua
    )


def test_a_plain_install_brings_what_the_default_extractor_needs(wheel: Path) -> None:
    # `extract_text` (exported by `docstore`, the README's first example) reads PDFs with pypdf:
    # as an extra's dependency, a plain install failed every PDF with ModuleNotFoundError.
    (metadata,) = [n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("/METADATA")]
    lines = zipfile.ZipFile(wheel).read(metadata).decode().splitlines()
    required = [
        line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")
    ]
    core = {
        re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower() for r in required if "extra ==" not in r
    }
    assert "pypdf" in core


@pytest.mark.slow
def test_installed_wheel_applies_the_schema_from_outside_the_repo(
    wheel: Path, tmp_path: Path, docstore_empty_database_url: str
) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", str(wheel)], check=True, timeout=600
    )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["DATABASE_URL"] = docstore_empty_database_url
    result = subprocess.run(
        [str(python), "-c", SCRIPT],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "applied ['0001_users_and_documents'" in result.stdout
    assert "pending []" in result.stdout
    cli = subprocess.run(
        [str(python), "-m", "docstore", "schema", "status"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0, cli.stderr
    assert "pending" not in cli.stdout

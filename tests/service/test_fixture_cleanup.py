"""The fixtures leave no server behind, even when the tests using them fail."""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import psycopg
import pytest

from docstore.testing import LocalPostgres, LocalRedis
from docstore.testing.plugin import S3_TEST_ACCESS_KEY, S3_TEST_SECRET_KEY

FAILING_TESTS = """
pytest_plugins = ["docstore.testing.plugin"]


def test_that_fails(docstore_store, docstore_s3_endpoint):
    print("PG", docstore_store.settings.database_address)
    print("REDIS", docstore_store.settings.redis_address)
    print("S3", docstore_s3_endpoint.removeprefix("http://"))
    assert False, "this test fails on purpose"
"""


def run_pytest(folder: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """pytest on the tests written in `folder`, in a process of its own. Its temporary folders
    go under `folder`: a pytest starting takes the group and other bits off the shared one
    (/tmp/pytest-of-<user>), which locks PostgreSQL's service user (under root) out of the
    folders the running suite gave it (seen: initdb 'Permission denied' in a quickstart test,
    with another pytest started beside the suite)."""
    return subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider"),
            *("--basetemp", str(folder / "tmp"), str(folder)),
        ],
        cwd=folder,
        env={k: v for k, v in env.items() if k != "PYTEST_ADDOPTS"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def listening(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def test_servers_are_stopped_after_a_failing_run(tmp_path: Path) -> None:
    (tmp_path / "test_fails.py").write_text(FAILING_TESTS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCSTORE_TEST_")}
    result = run_pytest(tmp_path, env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "this test fails on purpose" in result.stdout
    addresses = {
        line.split()[0]: line.split()[1]
        for line in result.stdout.splitlines()
        if line.split()[:1] in (["PG"], ["REDIS"], ["S3"])
    }
    assert set(addresses) == {"PG", "REDIS", "S3"}, result.stdout
    for name, address in addresses.items():
        assert urlsplit(f"//{address}").port
        assert not listening(address), f"{name} server at {address} outlived the test run"


def test_a_server_left_by_a_killed_owner_is_replaced_on_the_next_start(tmp_path: Path) -> None:
    from docstore.testing import LocalPostgres

    data = tmp_path / "pg"
    owner = (
        "import os, signal\n"
        "from docstore.testing import LocalPostgres\n"
        f"server = LocalPostgres(base_dir={str(data)!r})\n"
        "server.start()\n"
        "print(server.port, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", owner], capture_output=True, text=True, timeout=120
    )
    old_port = int(killed.stdout.strip())
    assert listening(f"127.0.0.1:{old_port}")  # the orphan still runs

    server = LocalPostgres(base_dir=data)
    server.start()
    try:
        assert listening(f"127.0.0.1:{server.port}")
        assert not listening(f"127.0.0.1:{old_port}")
    finally:
        server.close()
    assert not listening(f"127.0.0.1:{server.port}")
    assert (data / "data" / "PG_VERSION").exists()  # a durable folder is kept


def test_a_local_server_takes_server_settings() -> None:
    server = LocalPostgres(server_settings={"shared_buffers": "48MB", "work_mem": "5MB"})
    server.start()
    try:
        with psycopg.connect(server.url) as conn:
            names = ("shared_buffers", "work_mem")
            shown = [conn.execute(f"SHOW {name}").fetchone() for name in names]
        assert shown == [("48MB",), ("5MB",)]
    finally:
        server.close()
    with pytest.raises(ValueError, match="not a PostgreSQL setting"):
        LocalPostgres(server_settings={"work_mem": "1MB -c fsync=on"})


def test_a_local_server_opens_the_folders_above_it_for_passing_through_only(
    tmp_path: Path,
) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    private.chmod(0o700)
    server = LocalPostgres(base_dir=private / "pg")
    server.start()
    try:
        assert listening(f"127.0.0.1:{server.port}")
    finally:
        server.close()
    # As root the server runs as a service user, who must pass through (x) but never list or
    # read the folders above its own: a home folder stays unreadable to other users.
    assert private.stat().st_mode & 0o777 in (0o700, 0o711)


def test_a_local_redis_whose_port_is_taken_fails_to_start_rather_than_use_another() -> None:
    """Before, start() only waited for something to listen on the port: with the port taken
    (the gap after free_port, a server stopped by an outage test), redis-server exited and
    the tests, and the plugin's FLUSHDB, went to whatever held the port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = LocalRedis(taken.getsockname()[1])
        try:
            with pytest.raises(RuntimeError, match="is the port taken"):
                server.start()
        finally:
            server.stop()


BUCKET_TESTS = """
pytest_plugins = ["docstore.testing.plugin"]


def test_one(docstore_blob_store):
    print("BUCKET", docstore_blob_store.bucket)
    docstore_blob_store.put(1, "a.txt", b"kept by nobody")


def test_two(docstore_blob_store):
    print("BUCKET", docstore_blob_store.bucket)
    docstore_blob_store.put(1, "b.txt", b"kept by nobody")
"""


def test_the_blob_store_fixture_leaves_no_bucket_on_a_shared_s3(
    tmp_path: Path, docstore_s3_endpoint: str
) -> None:
    """Before, every test's bucket and its objects stayed on the S3 server named by
    DOCSTORE_TEST_S3_ENDPOINT (a long-lived MinIO piled them up)."""
    (tmp_path / "test_buckets.py").write_text(BUCKET_TESTS)
    result = run_pytest(tmp_path, {**os.environ, "DOCSTORE_TEST_S3_ENDPOINT": docstore_s3_endpoint})
    assert result.returncode == 0, result.stdout + result.stderr
    used = set(re.findall(r"BUCKET (\S+)", result.stdout))
    assert len(used) == 2, result.stdout
    s3 = boto3.client(
        "s3",
        endpoint_url=docstore_s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_TEST_ACCESS_KEY,
        aws_secret_access_key=S3_TEST_SECRET_KEY,
    )
    left = {bucket["Name"] for bucket in s3.list_buckets()["Buckets"]}
    assert used.isdisjoint(left)

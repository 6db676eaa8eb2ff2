"""A throwaway PgBouncer in transaction mode in front of a PostgreSQL server (Debian's
`pgbouncer` package: ``apt-get install -y pgbouncer``, or the binary that `DOCSTORE_PGBOUNCER`
names, e.g. a PgBouncer 1.21+ built from source for prepared statements).

Clients log in with a user and password from its auth_file; every database of the server is
reachable under its own name (``* =``), and PgBouncer logs in to PostgreSQL as that user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from docstore.testing.servers import _service_user, _wait_for_port, free_port

PGBOUNCER_PASSWORD = "pgbouncer-test"  # noqa: S105 - a throwaway test server's password


# The first release that keeps protocol-level prepared statements in transaction mode.
PREPARED_STATEMENTS_SINCE = (1, 21)


def pgbouncer_version(binary: str) -> tuple[int, int]:
    """(major, minor) of the PgBouncer `binary` (its `--version`)."""
    out = subprocess.run(  # noqa: S603 - a pgbouncer binary found below
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    if found is None:
        raise RuntimeError(f"{binary} --version printed no PgBouncer version: {out!r}")
    return int(found.group(1)), int(found.group(2))


def pgbouncer_binary(min_version: tuple[int, int] = (1, 0)) -> str | None:
    """Path of a `pgbouncer` executable at least `min_version`, or None: the system's
    (`pgbouncer` on PATH, /usr/sbin/pgbouncer) first, then the one `DOCSTORE_PGBOUNCER` names."""
    system = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    for candidate in (system, os.environ.get("DOCSTORE_PGBOUNCER")):
        if candidate and Path(candidate).exists() and pgbouncer_version(candidate) >= min_version:
            return candidate
    return None


class LocalPgBouncer:
    """PgBouncer in transaction mode on loopback, pooling connections to `server_url`'s server.

    `server_url` is an admin URL of the PostgreSQL server (its user logs in through PgBouncer
    with `PGBOUNCER_PASSWORD`; PgBouncer reaches PostgreSQL with the URL's own credentials).
    """

    def __init__(
        self,
        server_url: str,
        *,
        pool_size: int = 20,
        port: int | None = None,
        prepared_statements: int = 0,
    ) -> None:
        """`prepared_statements` > 0: `max_prepared_statements` (needs PgBouncer 1.21+)."""
        needed = PREPARED_STATEMENTS_SINCE if prepared_statements else (1, 0)
        binary = pgbouncer_binary(needed)
        if binary is None:
            raise RuntimeError(
                f"no pgbouncer {'.'.join(map(str, needed))}+ found: apt-get install -y pgbouncer"
                + (", or set DOCSTORE_PGBOUNCER to a newer build" if prepared_statements else "")
            )
        self.binary = binary
        self.prepared_statements = prepared_statements
        self.server = urlsplit(server_url)
        self.user = self.server.username or "postgres"
        self.port = port or free_port()
        self.pool_size = pool_size
        self.base_dir = Path(tempfile.mkdtemp(prefix="docstore-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as: dict[str, Any] = {}

    def url(self, dbname: str = "postgres") -> str:
        """URL of `dbname` through PgBouncer."""
        netloc = f"{quote(self.user, safe='')}:{PGBOUNCER_PASSWORD}@127.0.0.1:{self.port}"
        return urlunsplit(("postgresql", netloc, f"/{dbname}", "", ""))

    def through(self, database_url: str) -> str:
        """The database of `database_url` (a database of the same server), through PgBouncer."""
        return self.url(urlsplit(database_url).path.lstrip("/") or "postgres")

    def _write_config(self) -> Path:
        target = f"host={self.server.hostname or '127.0.0.1'} port={self.server.port or 5432}"
        if self.server.password:
            target += f" user={self.user} password={self.server.password}"
        (self.base_dir / "users.txt").write_text(f'"{self.user}" "{PGBOUNCER_PASSWORD}"\n')
        config = self.base_dir / "pgbouncer.ini"
        config.write_text(
            "\n".join(
                [
                    "[databases]",
                    f"* = {target}",
                    "[pgbouncer]",
                    "listen_addr = 127.0.0.1",
                    f"listen_port = {self.port}",
                    "unix_socket_dir =",
                    "auth_type = md5",
                    f"auth_file = {self.base_dir / 'users.txt'}",
                    "pool_mode = transaction",
                    f"default_pool_size = {self.pool_size}",
                    "max_client_conn = 1000",
                    "max_db_connections = 0",
                    # What the test databases come and go with: closing idle server connections
                    # soon lets DROP DATABASE go through.
                    "server_idle_timeout = 5",
                    # 0 (the default before 1.21, and here unless asked): no prepared statements.
                    *(
                        [f"max_prepared_statements = {self.prepared_statements}"]
                        if self.prepared_statements
                        else []
                    ),
                    f"logfile = {self.base_dir / 'pgbouncer.log'}",
                    f"pidfile = {self.base_dir / 'pgbouncer.pid'}",
                    f"admin_users = {self.user}",
                    "",
                ]
            )
        )
        return config

    def start(self) -> None:
        """Start PgBouncer (as an unprivileged user when we are root) and wait until it listens."""
        if self.process is not None and self.process.poll() is None:
            return
        config = self._write_config()
        if os.geteuid() == 0:  # PgBouncer refuses to run as root
            entry = _service_user()
            for path in [self.base_dir, *self.base_dir.iterdir()]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self._run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        self.process = subprocess.Popen(  # noqa: S603 - the system's pgbouncer binary
            [self.binary, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **self._run_as,
        )
        try:
            _wait_for_port(self.port, 10)
        except TimeoutError:
            log = self.base_dir / "pgbouncer.log"
            raise RuntimeError(
                f"pgbouncer did not start: {log.read_text() if log.exists() else ''}"
            ) from None

    def stop(self) -> None:
        """Kill PgBouncer at once."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def close(self) -> None:
        """Stop PgBouncer and delete its directory."""
        self.stop()
        shutil.rmtree(self.base_dir, ignore_errors=True)


__all__ = [
    "PGBOUNCER_PASSWORD",
    "PREPARED_STATEMENTS_SINCE",
    "LocalPgBouncer",
    "pgbouncer_binary",
    "pgbouncer_version",
]

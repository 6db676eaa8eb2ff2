"""The migration summary: its counts add up to the keys scanned, and its duration reads right."""

from __future__ import annotations

import io
import json
import re
from typing import Any

import pytest

from docstore import Docstore
from docstore.migrate import MigrationSummary, migrate

GOOD = {"filename": "f.pdf", "s3_key": "k", "status": "done"}
# "  label   12" or "  label   12  (a note)"; other lines (duration, users in a dry run) hold
# no count.
COUNT_LINE = re.compile(r"^(?P<indent> *)(?P<label>\S.*?)\s+(?P<value>\d+)(?:\s+\(.*\))?$")

Tree = dict[str, Any]  # label -> {"value": int, "children": Tree}


def count_tree(text: str) -> Tree:
    """The summary's count lines as a tree, by indentation."""
    root: Tree = {}
    path: list[tuple[int, Tree]] = [(-1, root)]
    for line in text.splitlines():
        match = COUNT_LINE.match(line)
        if match is None:
            continue
        indent = len(match["indent"])
        while path[-1][0] >= indent:
            path.pop()
        node: Tree = {"value": int(match["value"]), "children": {}}
        path[-1][1][match["label"]] = node
        path.append((indent, node["children"]))
    return root


def assert_parents_are_the_sums_of_their_children(tree: Tree, where: str = "") -> None:
    for label, node in tree.items():
        if node["children"]:
            total = sum(child["value"] for child in node["children"].values())
            assert node["value"] == total, f"{where}{label}: {node['value']} != {total}"
            assert_parents_are_the_sums_of_their_children(node["children"], f"{where}{label}/")


def seed_mixed_keyspace(store: Docstore) -> int:
    """Tasks of every fate, results with and without a task, other keys; returns the key count."""
    r = store.redis
    r.hset("task:old", mapping=GOOD)
    migrate(r, store.db)  # already present in the run under test
    for i in range(4):
        r.hset(f"task:t{i}", mapping=GOOD)
        r.set(f"result:t{i}", f"text {i}")
        r.set(f"progress:t{i}", "100")
    r.hset("task:bad-status", mapping={**GOOD, "status": "lost"})
    r.hset(b"task:\xff", mapping=GOOD)  # a task id PostgreSQL cannot keep
    r.rpush("task:a-list", "x")
    r.hset("task:bad-result", mapping=GOOD)
    r.set("result:bad-result", json.dumps({"text": 42}))  # rejects its task
    r.set("result:orphan-1", "no task")
    r.set("result:orphan-2", "no task")
    r.set("session:abc", "x")
    r.hset("task:refused.exe", mapping={**GOOD, "filename": "refused.exe"})
    with store.db.connection() as conn:
        conn.execute(
            "ALTER TABLE documents ADD CONSTRAINT no_exe CHECK (filename NOT LIKE '%.exe')"
        )
    return int(r.dbsize())


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_summary_counts_add_up_to_the_keys_scanned_on_a_mixed_keyspace(
    docstore_store: Docstore, dry_run: bool
) -> None:
    keys = seed_mixed_keyspace(docstore_store)
    summary = migrate(docstore_store.redis, docstore_store.db, batch_size=3, dry_run=dry_run)
    tree = count_tree(summary.text())
    assert_parents_are_the_sums_of_their_children(tree)
    scanned = tree["scanned keys"]
    assert scanned["value"] == keys == 22
    parts = scanned["children"]
    assert {label: node["value"] for label, node in parts.items()} == {
        "task keys": 10,
        "result keys": 7,
        "other keys": 5,
    }
    tasks = {label: node["value"] for label, node in parts["task keys"]["children"].items()}
    verb = "would migrate" if dry_run else "migrated"
    # A dry run writes nothing, so the row PostgreSQL refuses counts as one it would migrate.
    assert tasks == {
        verb: 5 if dry_run else 4,
        "would update" if dry_run else "updated": 0,
        "already present": 1,
        "conflicts": 0,
        "rejected": 4 if dry_run else 5,
        "vanished": 0,
    }
    results = parts["result keys"]["children"]
    assert (results["with their task"]["value"], results["without a task"]["value"]) == (5, 2)
    assert tree["rejected"]["value"] == summary.rejected == tasks["rejected"] + 2

    report = summary.as_dict()
    assert report["scanned_keys"] == (
        report["task_keys"] + report["result_keys"] + report["skipped"] + report["repeated_keys"]
    )
    assert report["task_keys"] == (
        report["migrated"] + report["updated"] + report["not_updated"] + report["already_present"]
        + report["conflicts"] + report["tasks_rejected"] + report["vanished"]
    )  # fmt: skip
    assert report["result_keys"] == report["results_with_task"] + report["orphan_results"]
    assert report["rejected"] == report["tasks_rejected"] + report["orphan_results"]


def test_a_rejects_file_lists_every_rejected_key_once(docstore_store: Docstore) -> None:
    seed_mixed_keyspace(docstore_store)
    stream = io.StringIO()
    summary = migrate(docstore_store.redis, docstore_store.db, batch_size=3, rejects=stream)
    keys = [json.loads(line)["key"] for line in stream.getvalue().splitlines()]
    assert len(keys) == len(set(keys)) == summary.rejected == 7


@pytest.mark.parametrize(
    ("processed", "seconds", "shown"),
    [
        (6, 0.028, "28 ms  (214 rows/s)"),
        (1, 0.0004, "0.4 ms  (2,500 rows/s)"),
        (0, 0.0021, "2.1 ms  (no rows)"),
        (3, 2.0, "2.0 s  (1.5 rows/s)"),
        (100_000, 75.4, "1 min 15 s  (1,326 rows/s)"),
        (1_000_000, 7384.0, "2 h 03 min  (135 rows/s)"),
    ],
)
def test_the_duration_reads_in_a_sensible_unit_and_the_rate_matches_it(
    processed: int, seconds: float, shown: str
) -> None:
    summary = MigrationSummary(migrated=processed, duration_seconds=seconds)
    [line] = [line for line in summary.text().splitlines() if line.startswith("duration")]
    assert line.split(None, 1)[1] == shown

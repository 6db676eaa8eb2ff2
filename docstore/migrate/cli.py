"""Command line of `python -m docstore.migrate`: options, clients, progress, exit codes.

Exit codes: 0 everything migrated (or verified, or decided), 1 finished with rejects or
conflicts (or verify found problems, or a task given to --keep-docstore / --take-legacy was
refused), 2 usage or connection error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

from docstore.ephemeral.cache import RedisCache
from docstore.errors import ConfigurationError, DocstoreError, RedisCommandError
from docstore.intake.blobs import BlobStore
from docstore.migrate.progress import BarProgress, LogProgress
from docstore.migrate.rejects_file import rejects_file
from docstore.migrate.resolve import keep_docstore, take_legacy
from docstore.migrate.runner import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_PREFIX,
    DEFAULT_WRITERS,
    MAX_BATCH_SIZE,
    migrate,
)
from docstore.migrate.summary import write_report
from docstore.migrate.verify import VerifyProblem, verify
from docstore.redis.client import RedisClient
from docstore.redis.core import RedisCore
from docstore.settings import Settings, check_redis_url, settings_from_environment
from docstore.store import Docstore
from docstore.terminal import WholeOptionsParser, output_closed

logger = logging.getLogger("docstore.migrate")

DEFAULT_REJECTS = "migrate-rejects.jsonl"
# A dry run lists what a run would reject beside, not over, the last real run's list.
DEFAULT_DRY_RUN_REJECTS = "migrate-rejects.dry-run.jsonl"
# Reads of large results and writes of large batches take longer than a cache call.
REDIS_SOCKET_TIMEOUT = 60.0
# Batches written at once: each is a thread, a connection and a batch held in memory.
MAX_WRITERS = 32


def _count_from_1_to(most: int) -> Callable[[str], int]:
    """An argparse type: a whole number from 1 to `most` (a usage error otherwise)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if not 1 <= value <= most:
            raise argparse.ArgumentTypeError(f"must be 1 to {most}, not {value}")
        return value

    return parse


def _writable_path(text: str) -> Path:
    """An argparse type: a file path whose folder exists and can be written, and which is no
    folder or other non-file (checked before the run, not after it: a folder given as the
    rejects file was renamed aside)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("needs a file name")
    path = Path(text)
    if path.exists() and not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write in {str(folder)!r}")
    return path


def _redis_url(text: str) -> str:
    """An argparse type: a Redis URL redis-py can use (refused before connecting anything)."""
    try:
        check_redis_url(text, "the URL")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _parser() -> argparse.ArgumentParser:
    parser = WholeOptionsParser(
        prog="python -m docstore.migrate",
        description="Move the legacy Redis tasks (task:*, result:*) into PostgreSQL. "
        "Safe to run again: unchanged tasks are skipped, tasks changed in Redis since are "
        "updated unless docstore changed their document too (a conflict: left alone, listed). "
        "Never writes to Redis.",
    )
    parser.add_argument("--dry-run", action="store_true", help="read and validate, write nothing")
    parser.add_argument(
        "--no-update",
        dest="update",
        action="store_false",
        help="only insert new tasks: leave migrated documents as they are, even if stale",
    )
    parser.add_argument(
        "--verify", action="store_true", help="compare Redis with PostgreSQL instead of migrating"
    )
    parser.add_argument(
        "--keep-docstore",
        nargs="+",
        metavar="TASK_ID",
        help="instead of migrating: keep docstore's version of these tasks in conflict; runs and "
        "--verify then accept it until the task changes in Redis again",
    )
    parser.add_argument(
        "--take-legacy",
        nargs="+",
        metavar="TASK_ID",
        help="instead of migrating: the next run writes the legacy version of these tasks in "
        "conflict, overwriting docstore's (needs --yes-destroy-data)",
    )
    parser.add_argument(
        "--yes-destroy-data",
        action="store_true",
        help="confirm --take-legacy: docstore's versions of those documents are lost",
    )
    parser.add_argument(
        "--rejects",
        type=_writable_path,
        help="JSON lines of rejected, sanitized and conflicting records, written when the run "
        f"ends (default: {DEFAULT_REJECTS}; {DEFAULT_DRY_RUN_REJECTS} for a dry run)",
    )
    parser.add_argument(
        "--report", type=_writable_path, help="write the final summary as JSON here"
    )
    parser.add_argument(
        "--batch-size",
        type=_count_from_1_to(MAX_BATCH_SIZE),
        default=DEFAULT_BATCH_SIZE,
        help=f"keys a batch (1 to {MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--writers",
        type=_count_from_1_to(MAX_WRITERS),
        default=DEFAULT_WRITERS,
        help=f"batches written at once (1 to {MAX_WRITERS}), each on its own connection",
    )
    parser.add_argument("--prefix", default=DEFAULT_PREFIX, help="task key prefix (task:)")
    parser.add_argument("--redis-url", help="legacy Redis (default: REDIS_URL from Settings)")
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="the legacy Redis is a Redis Cluster and --redis-url one of its nodes (detected "
        "without this flag too: a cluster node is always read as its whole cluster)",
    )
    parser.add_argument(
        "--cache-redis-url",
        type=_redis_url,
        help="docstore's Redis (its REDIS_URL), where the cached results of documents a "
        "catch-up run updates are dropped (without it they expire after CACHE_TTL)",
    )
    parser.add_argument("--database-url", help="PostgreSQL (default: from Settings)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    # A connection per writer; batches are bounded, so no statement timeout.
    values: dict[str, Any] = {
        "pool_min_size": 1,
        "pool_max_overflow": max(args.writers - 1, 0),
        "statement_timeout_ms": 0,
    }
    if args.database_url:
        values["DATABASE_URL"] = args.database_url
    if args.redis_url:
        values["REDIS_URL"] = args.redis_url
    return settings_from_environment(**values)


def _redis(settings: Settings) -> RedisCore:
    # docstore's client, with room for a pipeline of a whole batch per round trip.
    return RedisCore.from_settings(
        settings,
        socket_timeout=max(settings.redis_socket_timeout, REDIS_SOCKET_TIMEOUT),
        connect_timeout=max(settings.redis_connect_timeout, 2.0),
    )


def _cluster(settings: Settings) -> RedisCluster:
    try:
        return RedisCluster.from_url(
            settings.redis_url,
            socket_timeout=max(settings.redis_socket_timeout, REDIS_SOCKET_TIMEOUT),
            socket_connect_timeout=max(settings.redis_connect_timeout, 2.0),
        )
    except RedisClusterException as exc:  # not a cluster node, or no node answers
        raise ConfigurationError(
            f"Redis at {settings.redis_address} is not a reachable Redis Cluster: {exc}"
        ) from exc


def _legacy_redis(settings: Settings, cluster: bool) -> RedisClient:
    """The legacy Redis: a cluster client when asked, or when the server is a cluster node
    (reading one node of a cluster would silently miss the keys of the others)."""
    if cluster:
        return _cluster(settings)
    core = _redis(settings)
    try:
        with core.errors():
            enabled = core.client.info("cluster").get("cluster_enabled")
    except RedisCommandError:  # INFO refused (an ACL): take the server as it is
        logger.warning("INFO refused by Redis: pass --redis-cluster if it is a Redis Cluster")
        return core.client
    except BaseException:
        core.client.close()
        raise
    if not enabled:
        return core.client
    core.client.close()
    logger.info("Redis at %s is a cluster node: reading every primary", settings.redis_address)
    return _cluster(settings)


def _docstore_cache(settings: Settings, url: str | None) -> RedisCache | None:
    """docstore's cache on `url` (its own Redis, not the legacy one), or None."""
    if url is None:
        return None
    checked = Settings.model_validate({"DATABASE_URL": settings.database_url, "REDIS_URL": url})
    own = settings.model_copy(
        update={"redis_url_secret": checked.redis_url_secret, "redis_cluster": False}
    )
    return RedisCache(RedisCore.from_settings(own), default_ttl=own.cache_ttl)


def _run_migrate(args: argparse.Namespace, store: Docstore, source: RedisCore) -> int:
    progress = BarProgress(sys.stderr) if sys.stderr.isatty() else LogProgress()
    path = args.rejects or Path(DEFAULT_DRY_RUN_REJECTS if args.dry_run else DEFAULT_REJECTS)
    with ExitStack() as stack:
        # Written whole or not at all: a refused run leaves the last list as it was.
        rejects: TextIO = stack.enter_context(rejects_file(path))
        stack.callback(progress.close)
        cache = _docstore_cache(store.settings, args.cache_redis_url)
        if cache is not None:
            stack.callback(cache.core.client.close)
        summary = migrate(
            source,
            store.db,
            prefix=args.prefix,
            batch_size=args.batch_size,
            writers=args.writers,
            dry_run=args.dry_run,
            update=args.update,
            rejects=rejects,
            progress=progress,
            cache=cache,
        )
    print(("dry run: nothing written\n" if args.dry_run else "") + summary.text())
    if summary.rejected or summary.sanitized or summary.conflicts:
        print(f"rejected, sanitized and conflicting records are listed in {path}")
    if args.report:
        write_report(summary, args.report)
    return 1 if summary.rejected or summary.conflicts else 0


def _run_verify(args: argparse.Namespace, store: Docstore, source: RedisCore) -> int:
    def show(problem: VerifyProblem) -> None:
        print(problem.text())

    report = verify(
        source, store.db, prefix=args.prefix, batch_size=args.batch_size, on_problem=show
    )
    print(report.text())
    if args.report:
        text = json.dumps(asdict(report), indent=2) + "\n"
        args.report.write_text(text, encoding="utf-8")
    return 0 if report.ok else 1


def _run_decision(args: argparse.Namespace, store: Docstore, source: RedisCore) -> int:
    if args.keep_docstore:
        decisions = keep_docstore(source, store.db, args.keep_docstore, prefix=args.prefix)
        what = "kept docstore's version of"
    else:
        try:
            blobs: BlobStore | None = store.blobs  # to look for a new key's blob
        except ConfigurationError as exc:  # settings that make none: decided without
            logger.warning("no blob store to look in: %s", exc.message)
            blobs = None
        decisions = take_legacy(source, store.db, args.take_legacy, prefix=args.prefix, blobs=blobs)
        what = "the next run writes the legacy version of"
    for decision in decisions:
        print(decision.text())
    done = sum(decision.done for decision in decisions)
    print(f"{what} {done} of {len(decisions)} tasks")
    return 0 if done == len(decisions) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    deciding = bool(args.keep_docstore or args.take_legacy)
    if deciding and (args.verify or args.dry_run or (args.keep_docstore and args.take_legacy)):
        parser.error("--keep-docstore, --take-legacy and --verify or --dry-run go alone")
    if args.take_legacy and not args.yes_destroy_data:
        parser.error("--take-legacy overwrites docstore's documents: add --yes-destroy-data")
    if args.yes_destroy_data and not args.take_legacy:
        parser.error("--yes-destroy-data confirms --take-legacy, and nothing else")
    if args.verify and args.dry_run:
        parser.error("--verify only reads: --dry-run has nothing to leave out")
    if not sys.stderr.isatty():
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        settings = _settings(args)
        with (
            closing(_legacy_redis(settings, args.redis_cluster)) as client,
            Docstore.connect(settings, redis_client=client) as store,
        ):
            if args.verify:
                return _run_verify(args, store, store.redis_core)
            if deciding:
                return _run_decision(args, store, store.redis_core)
            return _run_migrate(args, store, store.redis_core)
    except DocstoreError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
    except BrokenPipeError:  # `... --verify | head`: the reader is gone, and so is our output
        output_closed()
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: committed batches are kept; run again to finish", file=sys.stderr)
        return 130
    return 2

"""Command line: `docstore schema apply|rollback|status|break-lock`, `docstore migrate ...` and
`docstore doctor` (also as `python -m docstore ...`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

from docstore.doctor.findings import Finding
from docstore.doctor.options import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_GRACE,
    MAX_BATCH_SIZE,
    check_batch_size,
    check_grace,
)
from docstore.errors import DocstoreError, InvalidInput, RollbackRefused
from docstore.postgres import schema
from docstore.settings import Settings, settings_from_environment
from docstore.terminal import WholeOptionsParser, output_closed

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = WholeOptionsParser(prog="docstore", description=__doc__)
    parser.add_argument("--database-url", help="PostgreSQL URL (default: from the environment)")
    commands = parser.add_subparsers(dest="command", required=True)
    schema_cmd = commands.add_parser("schema", help="manage the database schema (yoyo)")
    actions = schema_cmd.add_subparsers(dest="action", required=True)
    actions.add_parser("apply", help="apply pending migrations (idempotent)")
    rollback = actions.add_parser("rollback", help="roll back applied migrations")
    group = rollback.add_mutually_exclusive_group()
    group.add_argument("--count", type=int, default=1, help="how many (default 1)")
    group.add_argument("--all", action="store_true", help="roll back every migration")
    rollback.add_argument(
        "--yes-destroy-data",
        action="store_true",
        help="confirm dropping tables and columns that hold rows (refused without it)",
    )
    actions.add_parser("status", help="list migrations and whether they are applied")
    actions.add_parser(
        "break-lock",
        help="remove the migration lock a killed schema command left (only when none runs)",
    )
    doctor = commands.add_parser(
        "doctor",
        help="audit PostgreSQL, Redis and the blob store against each other "
        "(exit 0 clean, 1 findings, 2 could not run)",
    )
    doctor.add_argument("--json", action="store_true", help="one JSON object per line")
    doctor.add_argument(
        "--repair", action="store_true", help="fix what is safe to fix (without it nothing changes)"
    )
    doctor.add_argument(
        "--grace",
        type=_checked(float, check_grace),
        default=DEFAULT_GRACE,
        metavar="SECONDS",
        help="leave alone what changed this recently: work in flight (default 300)",
    )
    doctor.add_argument(
        "--batch-size",
        type=_checked(int, check_batch_size),
        default=DEFAULT_BATCH_SIZE,
        help=f"rows, keys or blobs read at a time (1 to {MAX_BATCH_SIZE})",
    )
    commands.add_parser(
        "migrate",
        help="move the legacy Redis tasks into PostgreSQL (options of python -m docstore.migrate)",
        add_help=False,
    )
    return parser


def _checked(convert: Callable[[str], T], check: Callable[[T], T]) -> Callable[[str], T]:
    """An argparse type: `text` converted, then checked by the library's own rule."""

    def parse(text: str) -> T:
        try:
            return check(convert(text))
        except InvalidInput as exc:
            raise argparse.ArgumentTypeError(exc.message) from None
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None

    return parse


def _settings(database_url: str | None) -> Settings:
    if database_url:
        return settings_from_environment(DATABASE_URL=database_url)
    return settings_from_environment()


def run_schema(
    action: str, settings: Settings, *, count: int | None = 1, confirm_destroy: bool = False
) -> None:
    """Carry out one `schema` action and print what it did."""
    if action == "apply":
        applied = schema.apply_schema(settings)
        print(f"applied {len(applied)} migration(s)" + "".join(f"\n  {m}" for m in applied))
    elif action == "rollback":
        undone = schema.rollback_schema(settings, count=count, confirm_destroy=confirm_destroy)
        print(f"rolled back {len(undone)} migration(s)" + "".join(f"\n  {m}" for m in undone))
    elif action == "break-lock":
        removed = schema.break_schema_lock(settings)
        print(f"removed {removed} lock(s)" if removed else "no lock was held")
    else:
        for status in schema.schema_status(settings):
            state = "applied" if status.applied else "pending"
            newer = "" if status.shipped else "  (not shipped with this docstore: a newer one?)"
            print(f"{state}  {status.id}{newer}")


def _run_migrate(options: list[str], database_url: str | None) -> int:
    # The migration's own command line, so both spellings take the same options and exit codes.
    from docstore.migrate.cli import main as migrate_main

    if database_url and "--database-url" not in options:
        options = ["--database-url", database_url, *options]
    return migrate_main(options)


def run_doctor(
    settings: Settings, *, repair: bool, grace: float, batch_size: int, as_json: bool
) -> int:
    """Audit the store of `settings`, printing each finding as it comes, then a summary;
    returns 0 when clean, 1 when anything was found (repaired or not), 2 when audits were left
    out because Redis did not answer (what the others found and repaired is printed first)."""
    from docstore.doctor import run
    from docstore.store import Docstore

    def show(finding: Finding) -> None:
        if as_json:
            print(finding.model_dump_json(), flush=True)
        else:
            done = f"  [{finding.repair}]" if finding.repair else ""
            print(f"{finding.kind:<17} {finding.subject}: {finding.detail}{done}", flush=True)

    with Docstore.connect(settings) as store:
        report = run(store, repair=repair, grace=grace, batch_size=batch_size, on_finding=show)
    if as_json:
        summary = report.model_dump(exclude={"sample"})
        print(json.dumps({"summary": {**summary, "clean": report.clean}}))
    else:
        for skipped in report.skipped:
            print(f"skipped: {skipped}")
        for left_out in report.unavailable:
            print(f"not audited: {left_out}")
        print(report.summary())
    if report.unavailable:
        return 2
    return 0 if report.clean else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 2 usage or connection error;
    `doctor`: 1 when it found something)."""
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "migrate":
        return _run_migrate(rest, args.database_url)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        settings = _settings(args.database_url)
        if args.command == "doctor":
            return run_doctor(
                settings,
                repair=args.repair,
                grace=args.grace,
                batch_size=args.batch_size,
                as_json=args.json,
            )
        count = None if getattr(args, "all", False) else getattr(args, "count", 1)
        confirm = getattr(args, "yes_destroy_data", False)
        run_schema(args.action, settings, count=count, confirm_destroy=confirm)
    except RollbackRefused as exc:
        print(f"error: {exc.message}; to confirm, add --yes-destroy-data", file=sys.stderr)
        return 2
    except DocstoreError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `docstore doctor | head`: the reader is gone, and so is our output
        output_closed()
        return 2
    return 0

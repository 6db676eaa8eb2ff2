"""The sync modules generated from the async sources are up to date (written once, async)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import async_to_sync  # noqa: E402


def test_every_generated_sync_module_matches_its_async_source() -> None:
    sources = async_to_sync.sources()
    assert len(sources) >= 2  # the scan finds the async sources
    stale = [
        str(async_to_sync.target_of(source).relative_to(ROOT))
        for source in sources
        if async_to_sync.generate(source) != async_to_sync.target_of(source).read_text()
    ]
    assert stale == [], "run python tools/async_to_sync.py"


def test_the_generator_drops_async_and_renames_the_async_names() -> None:
    code = async_to_sync.convert(
        "from docstore.postgres.executor_async import AsyncDatabase\n"
        "import redis.asyncio\n"
        "async def f(db: AsyncDatabase) -> None:\n"
        "    '''Await AsyncDatabase.one.'''\n"
        "    async with db.connection() as c:\n"
        "        await c.aclose()\n"
    )
    assert code == (
        "from docstore.postgres.executor import Database\n"
        "import redis\n"
        "def f(db: Database) -> None:\n"
        "    '''Await Database.one.'''\n"
        "    with db.connection() as c:\n"
        "        c.close()\n"
    )

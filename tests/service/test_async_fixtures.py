"""docstore.testing gives async tests an opened AsyncDocstore on the same throwaway servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from docstore import AsyncDocstore, Docstore, Settings, UserCreate

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_the_async_store_fixture_is_open_on_the_test_servers(
    docstore_async_store: AsyncDocstore, docstore_store: Docstore
) -> None:
    created = await docstore_async_store.users.create(UserCreate(email="fixture@example.com"))
    # The same database as the sync fixture's: what one writes the other reads.
    assert docstore_store.users.get(created.user.id).email == "fixture@example.com"
    assert (await docstore_async_store.health()).ok


@pytest.fixture
def developer_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """What a developer's shell and `.env` may hold: none of it may reach a test."""
    monkeypatch.setenv("DATABASE_REPLICA_URL", "postgresql://dev@127.0.0.1:1/replica")
    monkeypatch.setenv("POOL_MIN_SIZE", "7")
    monkeypatch.setenv("BLOB_BACKEND", "s3")
    (tmp_path / ".env").write_text("REDIS_CLUSTER=true\nDATABASE_POOLER=transaction\n")
    monkeypatch.chdir(tmp_path)


def test_the_fixture_settings_ignore_the_environment_and_keep_blobs_local(
    developer_environment: None, docstore_settings: Settings
) -> None:
    s = docstore_settings
    assert s.database_replica_url is None and s.pool_min_size == 1
    assert (s.redis_cluster, s.database_pooler) == (False, "none")
    assert s.blob_backend == "local"

"""docstore.testing gives async tests an opened AsyncDocstore on the same throwaway servers."""

from __future__ import annotations

import pytest

from docstore import AsyncDocstore, Docstore, UserCreate

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

"""Fixtures shared by the test files (servers come from docstore's own pytest plugin)."""

import logging
import os
from collections.abc import Iterator

import pytest
import redis
from helpers import SqlLog

from docstore import Docstore, Settings
from docstore.redis.client import new_redis

pytest_plugins = ["docstore.testing.plugin"]

# The example service freezes what its startup made (`gc.freeze`); in this process, which starts
# and drops many services, that would keep every test's leftovers from being collected.
os.environ.setdefault("FREEZE_GC", "false")


@pytest.fixture
def client(docstore_redis_url: str) -> Iterator[redis.Redis]:
    """A Redis client configured like docstore's own (short timeouts, no retries)."""
    client = new_redis(Settings.model_validate({"REDIS_URL": docstore_redis_url}))
    yield client
    client.close()


@pytest.fixture
def store(docstore_settings: Settings) -> Iterator[Docstore]:
    """A store that logs every statement by name (DEBUG_SQL)."""
    settings = docstore_settings.model_copy(update={"debug_sql": True})
    with Docstore.connect(settings) as store:
        yield store


@pytest.fixture
def sql_log(caplog: pytest.LogCaptureFixture) -> SqlLog:
    """Names of the statements run so far, in order."""
    caplog.set_level(logging.INFO, logger="docstore.sql")
    return lambda: [r.getMessage().split()[0] for r in caplog.records if r.name == "docstore.sql"]

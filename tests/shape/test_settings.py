"""Settings from the environment; secrets never shown."""

import asyncio
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from docstore import AsyncDocstore, Docstore
from docstore.errors import ConfigurationError
from docstore.settings import Settings, redact_url, url_address

PASSWORD = "pa55-w0rd/with:odd@chars"


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: pytest.TempPathFactory) -> None:
    for name in (
        "DATABASE_URL",
        "REDIS_URL",
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "POSTGRES_DB",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "DEBUG_SQL",
        "POOL_MIN_SIZE",
        "POOL_CHECK_IDLE_AFTER",
        "DATABASE_POOLER",
        "DATABASE_REPLICA_URL",
        "REDIS_CLUSTER",
        "LEASE_SECONDS",
        "CACHE_TTL",
        "QUEUE_RECLAIM_IDLE",
        "RETRY_BACKOFF_CAP",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env


def test_parts_build_the_database_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "db.internal")
    monkeypatch.setenv("POSTGRES_PORT", "6543")
    monkeypatch.setenv("POSTGRES_DB", "docs")
    monkeypatch.setenv("POSTGRES_USER", "svc")
    monkeypatch.setenv("POSTGRES_PASSWORD", PASSWORD)
    settings = Settings()
    assert settings.database_url == (
        "postgresql://svc:pa55-w0rd%2Fwith%3Aodd%40chars@db.internal:6543/docs"
    )
    assert settings.database_address == "db.internal:6543"


def test_database_url_wins_over_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_HOST", "ignored")
    monkeypatch.setenv("DATABASE_URL", "postgres://u:p@h:1/d")
    settings = Settings()
    assert settings.database_url == "postgresql://u:p@h:1/d"
    assert settings.yoyo_url == "postgresql+psycopg://u:p@h:1/d"


def test_defaults_match_compose_and_old_design() -> None:
    settings = Settings()
    assert settings.database_url.endswith("@127.0.0.1:5433/document_processor")
    assert settings.pool_min_size == 10
    assert settings.pool_max_size == 30
    assert settings.debug_sql is False


def test_env_file_is_read(tmp_path: pytest.TempPathFactory) -> None:
    with open(".env", "w") as env:
        env.write("DEBUG_SQL=true\nREDIS_URL=redis://cache:6380/2\n")
    settings = Settings()
    assert settings.debug_sql is True
    assert settings.redis_address == "cache:6380"


def test_password_never_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTGRES_PASSWORD", PASSWORD)
    monkeypatch.setenv("REDIS_URL", f"redis://:{quote(PASSWORD, safe='')}@cache:6379/0")
    settings = Settings()
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert PASSWORD not in text
        assert quote(PASSWORD, safe="") not in text


def test_invalid_url_scheme_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", f"mysql://u:{PASSWORD}@h/d")
    with pytest.raises(ValidationError) as info:
        Settings()
    assert "postgresql://" in str(info.value)
    assert PASSWORD not in str(info.value)


def test_redact_url_hides_only_the_password() -> None:
    assert redact_url("postgresql://u:secret@h:5/d") == "postgresql://u:***@h:5/d"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"


def test_pooler_and_replica_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Settings().database_pooler == "none" and Settings().database_replica_url is None
    assert Settings().redis_cluster is False
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    assert Settings().redis_cluster is True
    monkeypatch.setenv("DATABASE_POOLER", "transaction")
    # Encoded whole: libpq ends the credentials at the first '@' (a raw one names host "chars@r").
    monkeypatch.setenv("DATABASE_REPLICA_URL", f"postgres://u:{quote(PASSWORD, safe='')}@r:6/d")
    settings = Settings()
    assert settings.database_pooler == "transaction"
    assert settings.database_replica_url is not None
    assert settings.database_replica_url.startswith("postgresql://u:")
    assert settings.database_replica_address == "r:6"
    assert "pa55" not in repr(settings)
    monkeypatch.setenv("DATABASE_POOLER", "session")
    with pytest.raises(ValidationError):
        Settings()
    monkeypatch.setenv("DATABASE_POOLER", "transaction")
    monkeypatch.setenv("DATABASE_REPLICA_URL", "mysql://r/d")
    with pytest.raises(ValidationError, match="DATABASE_REPLICA_URL"):
        Settings()


def test_pool_check_idle_after_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().pool_check_idle_after == 2.0
    monkeypatch.setenv("POOL_CHECK_IDLE_AFTER", "0")
    assert Settings().pool_check_idle_after == 0.0


def test_a_store_made_from_bad_environment_settings_raises_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://u:{PASSWORD}@h/d")
    monkeypatch.setenv("POOL_MIN_SIZE", "-1")
    with pytest.raises(ConfigurationError) as sync_error:
        Docstore.connect()
    with pytest.raises(ConfigurationError) as async_error:
        asyncio.run(AsyncDocstore.connect())
    for info in (sync_error, async_error):
        message = info.value.message
        assert "POOL_MIN_SIZE" in message, message
        assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/1", "unix:///run/redis.sock", "redis://127.0.0.1:6379/2"]
)
def test_a_cluster_url_that_names_another_database_or_a_socket_is_refused(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("REDIS_CLUSTER", "true")
    monkeypatch.setenv("REDIS_URL", url)
    with pytest.raises(ValidationError, match="REDIS_CLUSTER needs a redis:// or rediss:// URL"):
        Settings()
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert Settings().redis_cluster is True


def test_a_misspelt_keyword_argument_is_refused_not_ignored(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Settings(pool_min_sise=0, databse_url=...) kept the defaults: a typo connected elsewhere.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("SOMEONE_ELSES_VARIABLE=1\nPOOL_MIN_SIZE=3\n")
    with pytest.raises(ValidationError) as refused:
        Settings(pool_min_sise=0, databse_url="postgresql://a@h:1/d")
    assert [error["loc"] for error in refused.value.errors()] == [
        ("pool_min_sise",),
        ("databse_url",),
    ]
    assert "postgresql://a@h" not in str(refused.value)  # never the value
    # Fields, their aliases in any case, and the environment's other variables still work.
    taken = Settings(pool_min_size=1, database_url="postgresql://a@h:1/d", REDIS_URL="redis://r/0")
    assert (taken.pool_min_size, taken.database_url) == (1, "postgresql://a@h:1/d")
    assert Settings().pool_min_size == 3
    # pydantic-settings' own arguments pass (CliApp and the like use more than _env_file).
    assert Settings(_env_file=None, _env_ignore_empty=True).pool_min_size == 10


def test_an_empty_database_url_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # DATABASE_URL= was "must start with postgresql://", not the POSTGRES_* parts.
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("DATABASE_REPLICA_URL", " ")
    monkeypatch.setenv("POSTGRES_HOST", "db.internal")
    settings = Settings()
    assert settings.database_url.startswith("postgresql://docuser:")
    assert "@db.internal:5433/" in settings.database_url
    assert settings.database_replica_url is None
    # Only those two: an empty REDIS_URL or POOL_MIN_SIZE is still refused, not a default.
    for name, said in (("REDIS_URL", "REDIS_URL"), ("POOL_MIN_SIZE", "pool_min_size")):
        monkeypatch.setenv(name, "")
        with pytest.raises(ValidationError, match=said):
            Settings()
        monkeypatch.delenv(name)


def test_an_empty_database_url_leaves_the_env_files_in_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It counted as "not given", but took the POSTGRES_* parts over .env's DATABASE_URL.
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "DATABASE_URL=postgresql://app@db.env-file:6543/docs\n"
        "DATABASE_REPLICA_URL=postgresql://app@replica.env-file:6543/docs\n"
    )
    monkeypatch.setenv("DATABASE_URL", "")
    monkeypatch.setenv("DATABASE_REPLICA_URL", "")
    settings = Settings()
    assert settings.database_url == "postgresql://app@db.env-file:6543/docs"
    assert settings.database_replica_url == "postgresql://app@replica.env-file:6543/docs"
    # So does an empty keyword (a caller passing on an unset option).
    assert Settings(DATABASE_URL="").database_url == "postgresql://app@db.env-file:6543/docs"
    assert Settings(database_url=" ").database_url == "postgresql://app@db.env-file:6543/docs"
    # A value set in the environment still wins over .env's.
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db.environment:5432/docs")
    assert Settings().database_url == "postgresql://app@db.environment:5432/docs"


def connect_errors() -> list[ConfigurationError]:
    """What `connect()` raises on each side with the environment as it stands (it must raise
    `ConfigurationError` on both)."""
    with pytest.raises(ConfigurationError) as sync_error:
        Docstore.connect()
    with pytest.raises(ConfigurationError) as async_error:
        asyncio.run(AsyncDocstore.connect())
    return [sync_error.value, async_error.value]


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("REDIS_URL", f"redis://:{quote(PASSWORD, safe='')}@127.0.0.1:abc/0"),
        ("REDIS_URL", "redis://[::1]:99999/0"),
        ("REDIS_URL", "redis://127.0.0.1:0/0"),
        # redis-py cuts this one's credentials at the '/': it reads the port 'pa55-w0rd'.
        ("REDIS_URL", f"redis://:{PASSWORD}@127.0.0.1:6379/0"),
        ("DATABASE_URL", f"postgresql://u:{quote(PASSWORD, safe='')}@h:5o43/d"),
        ("DATABASE_URL", "postgresql://u:pa?ss@h:5o43/d"),
        ("DATABASE_REPLICA_URL", "postgresql://u@h:70000/d"),
    ],
)
def test_a_url_with_a_bad_port_is_refused_by_connect(
    monkeypatch: pytest.MonkeyPatch, name: str, url: str
) -> None:
    """Before, redis-py raised a raw ValueError from connect(), and libpq's error named another
    port (url_address fell back to 5432)."""
    monkeypatch.setenv(name, url)
    for error in connect_errors():
        assert f"{name}'s port" in error.message, error.message
        assert "percent-encode" in error.message
        assert PASSWORD not in str(error) and "pa?ss" not in str(error)


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("DATABASE_URL", "postgresql://u@h1:5432,h2/d"),  # libpq's several hosts
        ("DATABASE_URL", "postgresql:///d?host=/run/postgresql"),
        # libpq ends the credentials at the '@': a '?' or '#' may stand in a password.
        ("DATABASE_URL", "postgresql://u:pa?ss@h:5432/d"),
        ("DATABASE_URL", "postgresql://u:pa#ss@h/d"),
        ("REDIS_URL", "redis://u:pa:ss@127.0.0.1:6379/0"),
        ("REDIS_URL", f"redis://:{quote(PASSWORD, safe='')}@[::1]:6380/0"),
        ("REDIS_URL", "unix:///run/redis.sock"),
    ],
)
def test_urls_with_good_ports_or_none_are_taken(
    monkeypatch: pytest.MonkeyPatch, name: str, url: str
) -> None:
    monkeypatch.setenv(name, url)
    settings = Settings()
    assert url in (settings.redis_url, settings.database_url)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LEASE_SECONDS", str(8 * 24 * 3600)),  # the lifecycle takes at most 7 days
        ("CACHE_TTL", "inf"),
        ("QUEUE_RECLAIM_IDLE", str(11 * 365 * 24 * 3600)),
        ("RETRY_BACKOFF_CAP", "1e12"),
    ],
)
def test_a_duration_the_parts_would_refuse_is_refused_by_connect(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """Before, LEASE_SECONDS over 7 days connected, and every process_next then took a message,
    failed with InvalidInput and left it to be dead-lettered; the others failed connect() with
    InvalidInput naming an argument, not the variable."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/d")
    monkeypatch.setenv(name, value)
    for error in connect_errors():
        assert name in error.message, error.message


@pytest.mark.parametrize(
    ("name", "url", "said"),
    [
        ("DATABASE_URL", "postgresql://u:50%off@h/d", "percent-encode a '%'"),
        ("DATABASE_URL", f"postgresql://u:{quote(PASSWORD, safe='')}@[::1]x/d", "libpq"),
        ("DATABASE_REPLICA_URL", "postgresql://u:Secr%00et@h/d", "libpq"),
        ("REDIS_URL", "redis://127.0.0.1:6379/0?socket_timeout=abc", "'socket_timeout'"),
        ("REDIS_URL", "redis://127.0.0.1:6379/1?db=zz", "'db'"),
    ],
)
def test_a_url_its_driver_cannot_read_is_refused_without_echoing_it(
    monkeypatch: pytest.MonkeyPatch, name: str, url: str, said: str
) -> None:
    """Before, libpq's own error reached the commands' output quoting the password or the
    whole URL, and redis-py's ValueError came out of connect() raw (a traceback, exit 1)."""
    monkeypatch.setenv(name, url)
    for error in connect_errors():
        assert name in error.message and said in error.message, error.message
        for secret in (PASSWORD, quote(PASSWORD, safe=""), "Secr%00et", "50%off"):
            assert secret not in str(error)


def test_an_address_in_a_message_is_where_the_driver_goes() -> None:
    """A unix:// REDIS_URL was named localhost:6379 in outage messages, as was a libpq URL
    that gives its host as an option."""
    assert url_address("unix:///run/redis.sock?db=1", 6379) == "/run/redis.sock"
    assert url_address("postgresql:///d?host=/run/postgresql", 5432) == "/run/postgresql:5432"
    assert url_address(f"postgresql://u:{quote(PASSWORD, safe='')}@h:5433/d", 5432) == "h:5433"
    assert url_address("redis://h/0", 6379) == "h:6379"
    # libpq reads '?' and '#' as part of a password; urllib took the user name for the host
    # and the password's start for the port ('alice:12' in spans, metrics and errors).
    assert url_address("postgresql://alice:12?secret@db.example:6543/app", 5432) == (
        "db.example:6543"
    )
    settings = Settings(DATABASE_URL="postgresql://alice:55#x@db.example/app")
    assert settings.database_address == "db.example:5432"

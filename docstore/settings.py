"""Configuration read from the environment (and a `.env` file) with pydantic-settings."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from redis.connection import parse_url

from docstore.errors import ConfigurationError
from docstore.rules import MAX_LEASE_SECONDS, TEN_YEARS


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:***@{netloc[-1]}"))


def _check_port(name: str, port: str, encode: str) -> None:
    """Refuse a URL whose `port` (as its driver reads it; empty: none given) is not a whole
    number from 1 to 65535, never echoing the URL (it may hold a password): the driver would
    raise an error of its own when connecting, or quietly use another port. `encode`: what
    must be percent-encoded in the credentials for the driver to find the port where this did."""
    if port and not (port.isascii() and port.isdigit() and 1 <= int(port) <= 65535):
        raise ValueError(
            f"{name}'s port must be a whole number from 1 to 65535 (percent-encode {encode} "
            "in the user name or password)"
        )


def _check_libpq_url(name: str, url: str) -> None:
    """Refuse a URL libpq cannot read, before connecting (libpq's own message quotes the part
    it stopped at, the password or the whole URL), or whose port is none. libpq's own parser
    reads it: a '?' or '#' may stand in a password; several hosts ('h1,h2:5433') name no one
    port."""
    try:
        port = str(conninfo_to_dict(url).get("port") or "")
    except psycopg.Error:
        raise ValueError(
            f"{name} is not a URL libpq can read (percent-encode a '%', '/' or '@' in the user "
            "name or password)"
        ) from None
    if "," not in port:
        _check_port(name, port, "a '/' or '@'")


def check_redis_url(url: str, name: str = "REDIS_URL") -> None:
    """Refuse (`ValueError`, naming `name`, never the URL) a Redis URL redis-py cannot use:
    another scheme, a port that is none, a query option with a bad value."""
    parts = urlsplit(url)
    if parts.scheme not in {"redis", "rediss", "unix"}:
        raise ValueError(f"{name} must start with redis://, rediss:// or unix://")
    # redis-py reads its URL with urllib: the credentials end at the first '/', '?' or '#'.
    host_port = parts.netloc.rpartition("@")[2].rpartition("]")[2]  # past an IPv6 address
    port = host_port.rpartition(":")[2] if ":" in host_port else ""
    _check_port(name, port, "'/', '?', '#' or '@'")
    try:
        parse_url(url)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
    except ValueError as exc:
        said = str(exc)
        reason = said if said.startswith("Invalid value for '") else "redis-py cannot read it"
        raise ValueError(f"{name}: {reason}") from None


def url_address(url: str, default_port: int) -> str:
    """Return ``host:port`` of a URL, for error messages (never the credentials): the socket's
    path for a ``unix://`` URL, the ``host=`` of a URL that gives it as an option."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    if parts.scheme.startswith("postgres"):
        # libpq's reading, not urllib's: a '?' or '#' may stand in a password, where urllib
        # would find the host and port in the user name and the password.
        try:
            found = conninfo_to_dict(_libpq_url(url))
        except psycopg.Error:
            found = {}
        return f"{found.get('host') or 'localhost'}:{found.get('port') or default_port}"
    option = parse_qs(parts.query).get("host")
    host = parts.hostname or (option[0] if option else "localhost")
    try:
        port = parts.port or default_port
    except ValueError:
        port = default_port
    return f"{host}:{port}"


def _libpq_url(url: str) -> str:
    """`url` with the scheme libpq understands (``postgresql://``)."""
    for prefix in ("postgresql+psycopg://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql://" + url[len(prefix) :]
    return url


@cache  # one class, one answer: not worked out again for every Settings()
def _accepted_names(settings: type[BaseSettings]) -> frozenset[str]:
    """The lower-case names of a settings class's fields and their aliases."""
    names: set[str] = set()
    for name, field in settings.model_fields.items():
        names.add(name)
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                names.add(alias)
            elif isinstance(alias, AliasChoices):
                names.update(choice for choice in alias.choices if isinstance(choice, str))
    return frozenset(name.lower() for name in names)


# The settings whose empty value means "not given" (the POSTGRES_* parts, or `.env`, apply).
_EMPTY_IS_UNSET = frozenset({"DATABASE_URL", "DATABASE_REPLICA_URL"})


def _is_blank(value: Any) -> bool:
    return isinstance(value, str) and not value.strip()


class _WithoutBlankUrls(PydanticBaseSettingsSource):
    """A settings source without the blank values of `_EMPTY_IS_UNSET`."""

    def __init__(self, settings_cls: type[BaseSettings], source: PydanticBaseSettingsSource):
        super().__init__(settings_cls)
        self.source = source

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.source.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        return {
            name: value
            for name, value in self.source().items()
            if name.upper() not in _EMPTY_IS_UNSET or not _is_blank(value)
        }


class Settings(BaseSettings):
    """Everything docstore needs to reach its servers.

    `DATABASE_URL`, when given, wins over the `POSTGRES_*` parts. Secrets are `SecretStr`, so
    they never show in `repr`, logs or error messages.
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        populate_by_name=True,
        # Validation errors must not echo a URL or password back.
        hide_input_in_errors=True,
    )

    def __init__(self, **values: Any) -> None:
        """Keyword arguments must name settings: a misspelt one (`pool_min_sise=0`) raises
        pydantic's `ValidationError` instead of leaving the default in force. Unknown names
        in the environment and `.env` stay ignored (they may belong to other programs)."""
        accepted = _accepted_names(type(self))
        # pydantic-settings' own arguments (`_env_file`, `_cli_parse_args`...) start with "_".
        unknown = [n for n in values if not n.startswith("_") and n.lower() not in accepted]
        if unknown:
            raise ValidationError.from_exception_data(
                type(self).__name__,
                [{"type": "extra_forbidden", "loc": (name,), "input": "..."} for name in unknown],
            )
        super().__init__(**values)

    postgres_host: str = "127.0.0.1"
    postgres_port: int = Field(5433, ge=1, le=65535)
    postgres_db: str = "document_processor"
    postgres_user: str = "docuser"
    postgres_password: SecretStr = SecretStr("docpass_dev_2026")
    database_url_override: SecretStr | None = Field(
        None, validation_alias="DATABASE_URL", description="Full PostgreSQL URL; wins when given."
    )
    redis_url_secret: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), validation_alias="REDIS_URL"
    )
    redis_cluster: bool = Field(
        False, description="REDIS_URL names one node of a Redis Cluster (redis-py's RedisCluster)."
    )
    database_pooler: Literal["none", "transaction"] = Field(
        "none",
        description="'transaction' behind PgBouncer / RDS Proxy in transaction mode: no startup "
        "options, no server-side prepared statements, no session state.",
    )
    database_pooler_prepared: bool = Field(
        False,
        description="With DATABASE_POOLER=transaction: the pooler keeps protocol-level prepared "
        "statements (PgBouncer >= 1.21 with max_prepared_statements > 0), so psycopg prepares "
        "them as on a direct connection.",
    )
    database_replica_url_secret: SecretStr | None = Field(
        None,
        validation_alias="DATABASE_REPLICA_URL",
        description="A streaming replica: lag-tolerant reads (listings, search, counts) go there.",
    )
    replica_max_lag: float = Field(
        5.0,
        gt=0,
        le=TEN_YEARS,
        description="Seconds of replay lag past which replica reads go to the primary.",
    )
    replica_check_interval: float = Field(
        1.0,
        gt=0,
        le=TEN_YEARS,
        description="Seconds between checks of the replica's lag (retries when down).",
    )
    replica_timeout: float = Field(
        1.0,
        gt=0,
        le=TEN_YEARS,
        description="Seconds to wait for a replica connection before using the primary.",
    )

    debug_sql: bool = False
    pool_min_size: int = Field(10, ge=0, description="Connections kept open.")
    pool_max_overflow: int = Field(20, ge=0, description="Extra connections opened under load.")
    pool_timeout: float = Field(
        10.0, gt=0, le=TEN_YEARS, description="Seconds to wait for a free connection."
    )
    pool_check_idle_after: float = Field(
        2.0,
        ge=0,
        le=TEN_YEARS,
        description="Seconds in the pool after which a connection is checked by a round trip "
        "before use (0: every checkout).",
    )
    connect_timeout: float = Field(
        5.0, gt=0, le=TEN_YEARS, description="Seconds to wait for a new connection."
    )
    statement_timeout_ms: int = Field(30_000, ge=0, description="0 disables the server limit.")
    redis_socket_timeout: float = Field(
        0.5, gt=0, le=TEN_YEARS, description="Seconds per Redis call."
    )
    redis_connect_timeout: float = Field(
        0.5, gt=0, le=TEN_YEARS, description="Seconds to open a Redis socket."
    )
    rate_limit: int = Field(100, ge=1, description="Units per RATE_LIMIT_PERIOD (store.limiter).")
    rate_limit_period: float = Field(
        60.0, gt=0, le=TEN_YEARS, description="Seconds of the default rate limit."
    )
    rate_limit_failure_policy: Literal["allow", "deny"] = Field(
        "allow", description="What store.limiter decides when Redis is unreachable."
    )
    cache_ttl: float = Field(
        300.0, gt=0, le=TEN_YEARS, description="Default seconds a cached value lives."
    )
    queue_max_deliveries: int = Field(5, ge=1, description="Deliveries before a dead letter.")
    queue_reclaim_idle: float = Field(
        60.0,
        gt=0,
        le=TEN_YEARS,
        description="Seconds a message stays unacked before another worker gets it.",
    )

    blob_backend: Literal["s3", "local"] = Field(
        "s3", description="Where document bytes go: S3 (or compatible) or a local directory."
    )
    blob_dir: str = Field(".docstore/blobs", description="Folder of the local blob store.")
    s3_bucket: str = Field("documents", min_length=3, max_length=63)
    s3_endpoint_url: str | None = Field(None, description="For S3-compatible servers (MinIO).")
    s3_region: str | None = None
    s3_access_key: str | None = Field(None, description="Default: the usual AWS chain.")
    s3_secret_key: SecretStr | None = None
    max_upload_bytes: int = Field(50 * 1024 * 1024, ge=1, description="Largest accepted upload.")
    lease_seconds: float = Field(
        300.0, gt=0, le=MAX_LEASE_SECONDS, description="How long a worker holds a document."
    )
    retry_backoff_base: float = Field(
        10.0,
        ge=0,
        le=TEN_YEARS,
        description="Seconds before a failed document's first retry (then doubled).",
    )
    retry_backoff_cap: float = Field(
        3600.0,
        gt=0,
        le=TEN_YEARS,
        description="Longest wait before a retry, in seconds (jitter: 50-100%).",
    )
    max_processing_per_user: int | None = Field(
        None, ge=1, description="Documents of one user PROCESSING at once (None: no cap)."
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The usual sources in the usual order; an empty `DATABASE_URL` given as a keyword or
        in the environment leaves `.env`'s value in force, as one not given would."""
        given = _WithoutBlankUrls(settings_cls, init_settings)
        environment = _WithoutBlankUrls(settings_cls, env_settings)
        return given, environment, dotenv_settings, file_secret_settings

    @field_validator("database_url_override", "database_replica_url_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """`DATABASE_URL=` (as compose files and CI set it) means no URL, not a bad one."""
        return None if _is_blank(value) else value

    @model_validator(mode="after")
    def _check_urls(self) -> Settings:
        if self.database_url_override is not None:
            scheme = urlsplit(self.database_url_override.get_secret_value()).scheme
            if scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
                raise ValueError("DATABASE_URL must start with postgresql://")
        if self.database_replica_url_secret is not None:
            scheme = urlsplit(self.database_replica_url_secret.get_secret_value()).scheme
            if scheme not in {"postgresql", "postgres", "postgresql+psycopg"}:
                raise ValueError("DATABASE_REPLICA_URL must start with postgresql://")
        check_redis_url(self.redis_url)
        redis_url = urlsplit(self.redis_url)
        for name, secret in (
            ("DATABASE_URL", self.database_url_override),
            ("DATABASE_REPLICA_URL", self.database_replica_url_secret),
        ):
            if secret is not None:
                _check_libpq_url(name, _libpq_url(secret.get_secret_value()))
        if self.redis_cluster and (
            redis_url.scheme == "unix" or redis_url.path.strip("/") not in ("", "0")
        ):
            raise ValueError(
                "REDIS_CLUSTER needs a redis:// or rediss:// URL of database 0 (a cluster has "
                "no other database)"
            )
        return self

    @property
    def database_url(self) -> str:
        """The libpq URL (``postgresql://...``), password included: never log it."""
        if self.database_url_override is not None:
            return _libpq_url(self.database_url_override.get_secret_value())
        password = quote(self.postgres_password.get_secret_value(), safe="")
        user = quote(self.postgres_user, safe="")
        return (
            f"postgresql://{user}:{password}@{self.postgres_host}:{self.postgres_port}"
            f"/{quote(self.postgres_db, safe='')}"
        )

    @property
    def database_replica_url(self) -> str | None:
        """The libpq URL of the replica, password included (never log it), or None."""
        if self.database_replica_url_secret is None:
            return None
        return _libpq_url(self.database_replica_url_secret.get_secret_value())

    @property
    def database_replica_address(self) -> str | None:
        """``host:port`` of the replica, safe to print, or None."""
        url = self.database_replica_url
        return None if url is None else url_address(url, 5432)

    @property
    def yoyo_url(self) -> str:
        """The same URL with the scheme yoyo needs for psycopg 3."""
        return "postgresql+psycopg://" + self.database_url[len("postgresql://") :]

    @property
    def redis_url(self) -> str:
        """The Redis URL, password included: never log it."""
        return self.redis_url_secret.get_secret_value()

    @property
    def database_address(self) -> str:
        """``host:port`` of PostgreSQL, safe to print."""
        return url_address(self.database_url, 5432)

    @property
    def redis_address(self) -> str:
        """``host:port`` of Redis, safe to print."""
        return url_address(self.redis_url, 6379)

    @property
    def pool_max_size(self) -> int:
        """Most connections the pool may hold."""
        return max(self.pool_min_size + self.pool_max_overflow, 1)


def settings_from_environment(**values: Any) -> Settings:
    """`Settings(**values)` (`values` win over the environment), with bad or missing values
    raised as one `ConfigurationError` naming each (never their values, which may hold a
    password)."""
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']).upper() or 'settings'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigurationError(f"invalid settings: {problems}") from None

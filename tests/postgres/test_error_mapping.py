"""Driver errors from real servers become typed docstore errors, chained to the original."""

import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from docstore.errors import (
    Conflict,
    DatabaseError,
    InvalidInput,
    RedisCommandError,
    ServiceUnavailable,
)
from docstore.postgres.errors import wrap_database_errors
from docstore.redis.errors import redis_errors
from docstore.testing import free_port


@pytest.fixture
def conn(docstore_database_url: str) -> psycopg.Connection[tuple[object, ...]]:
    with psycopg.connect(docstore_database_url, autocommit=True) as connection:
        connection.execute("INSERT INTO users (email) VALUES ('a@example.com')")
        yield connection


def run(conn: psycopg.Connection[tuple[object, ...]], statement: str) -> None:
    with wrap_database_errors("db:5432"):
        conn.execute(statement)  # type: ignore[arg-type]


def test_unique_violation_is_a_conflict_naming_the_constraint(conn: psycopg.Connection) -> None:
    with pytest.raises(Conflict) as info:
        run(conn, "INSERT INTO users (email) VALUES ('A@EXAMPLE.COM')")
    assert info.value.constraint_name == "users_email_lower_key"
    assert isinstance(info.value.__cause__, psycopg.errors.UniqueViolation)


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO documents (user_id, filename, s3_key, status) "
        "SELECT id, 'a', 'k', 'BOGUS' FROM users",  # check
        "INSERT INTO documents (user_id, filename, s3_key) VALUES (999999, 'a', 'k')",  # fk
        "INSERT INTO documents (user_id, filename, s3_key) SELECT id, NULL, 'k' FROM users",
        "SELECT 'abc'::integer",  # invalid text representation
        "SELECT 2147483647::integer + 1",  # out of range
    ],
)
def test_bad_data_is_invalid_input(conn: psycopg.Connection, statement: str) -> None:
    with pytest.raises(InvalidInput):
        run(conn, statement)


def test_other_sql_errors_are_database_errors(conn: psycopg.Connection) -> None:
    with pytest.raises(DatabaseError, match="42P01"):
        run(conn, "SELECT * FROM no_such_table")


def test_statement_timeout_is_service_unavailable(conn: psycopg.Connection) -> None:
    conn.execute("SET statement_timeout = 50")
    with pytest.raises(ServiceUnavailable, match="db:5432"):
        run(conn, "SELECT pg_sleep(2)")


def test_redis_refused_connection_is_service_unavailable() -> None:
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    with pytest.raises(ServiceUnavailable) as info, redis_errors("cache:6379"):
        client.ping()
    assert info.value.address == "cache:6379"
    assert info.value.service == "redis"


def test_redis_command_error_is_typed(docstore_redis_url: str) -> None:
    client = redis.Redis.from_url(docstore_redis_url)
    client.set("k", "not a list")
    with pytest.raises(RedisCommandError, match="WRONGTYPE"), redis_errors("cache:6379"):
        client.lpush("k", "x")
    client.close()


def test_a_missing_prepared_statement_names_the_pooler_setting(conn: psycopg.Connection) -> None:
    # What a transaction pooler does to psycopg's prepared statements (SQLSTATE 26000).
    with pytest.raises(DatabaseError, match="DATABASE_POOLER=transaction"):
        run(conn, "DEALLOCATE docstore_never_prepared")


def test_a_value_psycopg_refuses_to_send_is_invalid_input(conn: psycopg.Connection) -> None:
    with pytest.raises(InvalidInput, match="cannot take this value"), wrap_database_errors("db"):
        conn.execute("SELECT %s::text", ("a\x00b",))


def test_a_text_too_long_for_the_search_index_says_so_not_web_search(
    conn: psycopg.Connection,
) -> None:
    words = " ".join(f"w{i:07d}" for i in range(200_000))  # ~1.8 MB of distinct lexemes
    too_long = "too long for the full-text search index"
    with pytest.raises(InvalidInput, match=too_long) as info, wrap_database_errors("db"):
        conn.execute("SELECT to_tsvector('simple', %s)", (words,))
    assert info.value.field == "text"
    with pytest.raises(InvalidInput, match="web search") as info:  # a query's refusal: still so
        run(conn, "SELECT websearch_to_tsquery('simple', repeat('a ', 200000))")
    assert info.value.field == "query"

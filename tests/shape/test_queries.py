"""The SQL loader: named queries parsed once, with errors that name file and line."""

from pathlib import Path

import pytest

from docstore.errors import ConfigurationError, InvalidInput
from docstore.postgres.queries import load_queries, parse_sql, queries


def test_parse_reads_name_description_sql_and_parameters() -> None:
    text = """
-- name: get_thing
-- Fetch one thing.
SELECT *
FROM things
WHERE id = %(id)s::bigint AND owner = %(owner)s AND note LIKE 'x%%';

-- name: count_things
-- How many things there are.
SELECT count(*) FROM things;
"""
    first, second = parse_sql(text, "things.sql")
    assert first.name == "get_thing"
    assert first.description == "Fetch one thing."
    assert first.params == frozenset({"id", "owner"})
    assert first.sql.startswith("-- Fetch one thing.\nSELECT *")
    assert first.source == "things.sql:2"
    assert second.name == "count_things"
    assert second.params == frozenset()
    assert second.source == "things.sql:8"


def test_query_without_sql_fails_with_file_and_line() -> None:
    text = "-- name: a\n-- Does a.\nSELECT 1;\n\n-- name: empty\n-- Nothing here.\n\n"
    with pytest.raises(ConfigurationError, match=r"x\.sql:5: query 'empty' has no SQL"):
        parse_sql(text, "x.sql")


def test_empty_name_fails_with_file_and_line() -> None:
    with pytest.raises(ConfigurationError, match=r"x\.sql:3: query name '' is empty"):
        parse_sql("-- leading comment\n\n-- name:\n-- Does a.\nSELECT 1;\n", "x.sql")


def test_missing_description_fails() -> None:
    with pytest.raises(ConfigurationError, match="needs a one-line -- description"):
        parse_sql("-- name: a\nSELECT 1;\n", "x.sql")


def test_sql_before_any_header_fails() -> None:
    with pytest.raises(ConfigurationError, match=r"x\.sql:1: SQL before the first"):
        parse_sql("SELECT 1;\n-- name: a\n-- A.\nSELECT 2;\n", "x.sql")


def test_duplicate_names_across_files_fail_with_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("-- name: same\n-- First.\nSELECT 1;\n")
    (tmp_path / "b.sql").write_text("\n-- name: same\n-- Second.\nSELECT 2;\n")
    with pytest.raises(
        ConfigurationError, match=r"b\.sql:2: query 'same' already defined at a\.sql:1"
    ):
        load_queries(tmp_path)


def test_call_with_missing_or_extra_parameters_fails_before_the_database() -> None:
    (query,) = parse_sql("-- name: q\n-- Q.\nSELECT %(a)s, %(b)s;\n", "q.sql")
    query.check_params({"a": 1, "b": 2})
    with pytest.raises(InvalidInput, match=r"missing \['b'\], extra \['c'\]"):
        query.check_params({"a": 1, "c": 3})
    with pytest.raises(InvalidInput, match="params must be a mapping"):
        query.check_params(None)  # type: ignore[arg-type]


def test_binary_placeholders_are_parameters_too() -> None:
    (query,) = parse_sql("-- name: q\n-- Q.\nSELECT %(ids)b::bigint[], %(a)s, 100%%;\n", "q.sql")
    assert query.params == frozenset({"ids", "a"})


def test_shipped_queries_load_and_are_parsed_once() -> None:
    shipped = queries()
    assert "server_version" in shipped
    assert queries() is shipped
    for query in shipped.values():
        assert query.description

"""Search queries made safe for `websearch_to_tsquery`: runs of NOT operators cut short.

Shared by the async and the generated sync `DocumentRepo` (no I/O here).
"""

from __future__ import annotations

import re

# How websearch_to_tsquery reads a query, as far as its NOT operators go (PostgreSQL 18): a '-'
# where an operand may start is a NOT, and ASCII white space and the characters ! & | ( ) <
# around it are skipped; inside a word (up to one of those, '"' or ':') or a "phrase" a '-' is
# text. Older servers in a non-C locale also end words at Unicode white space: a run of NOTs
# split by it is not seen here whole (cutting the rest keeps its parity, so its meaning) and may
# meet the repository's unparsable-query check.
_SKIPPED = r" \t\n\v\f\r!&|()<"
_WEB_SEARCH_TOKEN = re.compile(
    rf"""
    (?P<negations>-(?:[{_SKIPPED}]*-)*)  # NOTs, and what is skipped between them
    | "[^"]*"?                           # a phrase, to the closing quote or the end
    | [{_SKIPPED}]+
    | [^{_SKIPPED}"-][^{_SKIPPED}":]*    # a word
    """,
    re.VERBOSE,
)
# PostgreSQL keeps consecutive NOTs on an operator stack of 32 entries: 31 to 33 of them in a row
# raise "tsquery stack too small". A NOT of a NOT means the operand itself.
_MAX_NEGATIONS = 2


def _collapsed(token: re.Match[str]) -> str:
    run = token["negations"]
    if run is None or run.count("-") <= _MAX_NEGATIONS:
        return token[0]
    return "-" if run.count("-") % 2 else "--"


def collapse_negation_runs(query: str) -> str:
    """`query` with every run of three or more NOT operators cut to one or two of the same
    parity: the same matches, ranks and snippets, and no operator stack PostgreSQL cannot hold.
    Queries without such a run are returned unchanged."""
    return _WEB_SEARCH_TOKEN.sub(_collapsed, query)


__all__ = ["collapse_negation_runs"]

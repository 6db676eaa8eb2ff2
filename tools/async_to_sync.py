"""Generate docstore's sync modules from their async sources, as psycopg does for its own.

Every `docstore/**/*_async.py` is the one place its logic is written; this script writes the sync
module beside it (`executor_async.py` -> `executor.py`) by dropping `async`/`await` and renaming
the async names to their sync twins. The output is formatted with ruff and starts with a header
saying where it came from. `--check` exits 1 when a generated file is stale (CI runs it).

Renames, applied to names (and, for documentation, to docstrings and comments):

- `AsyncX` -> `X` (`AsyncConnectionPool`, `AsyncDatabase`, `AsyncIterator`, ...);
- `name_async` -> `name` (modules: `executor_async` -> `executor`);
- `redis.asyncio` -> `redis`; and the few in `RENAMES` below.

Usage: python tools/async_to_sync.py [--check] [FILE_async.py ...]
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = (
    "# Generated from {source} by tools/async_to_sync.py:\n"
    "# edit that file, then run the script (CI fails when this file is stale).\n"
)
RENAMES = {
    "asynccontextmanager": "contextmanager",
    "AbstractAsyncContextManager": "AbstractContextManager",
    "aclose": "close",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "StopAsyncIteration": "StopIteration",
    "_async_runtime": "_sync_runtime",  # docstore's own: sleep, in_thread
}
_ASYNC_CLASS = re.compile(r"^Async(?=[A-Z])")
_TEXT_RULES = [
    (re.compile(r"\bawait "), ""),
    (re.compile(r"\basync (?=def |with |for )"), ""),
    (re.compile(r"\bAsync(?=[A-Z])"), ""),
    (re.compile(r"\b(\w+)_async\b"), r"\1"),
    (re.compile(r"\bredis\.asyncio\b"), "redis"),
    (re.compile(r"\basynccontextmanager\b"), "contextmanager"),
    (re.compile(r"\baclose\b"), "close"),
    (re.compile(r"\b_async_runtime\b"), "_sync_runtime"),
]


def sync_name(name: str) -> str:
    """The sync twin of one identifier."""
    if name in RENAMES:
        return RENAMES[name]
    if name.endswith("_async") and len(name) > len("_async"):
        return name[: -len("_async")]
    return _ASYNC_CLASS.sub("", name)


def sync_text(text: str) -> str:
    """A docstring or comment as the sync side would say it."""
    for pattern, replacement in _TEXT_RULES:
        text = pattern.sub(replacement, text)
    return text


def convert(source: str) -> str:
    """The sync module for an async one (not yet formatted)."""
    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    # (start, end, replacement) edits on (row, col) positions, applied from the end.
    edits: list[tuple[tuple[int, int], tuple[int, int], str]] = []
    for i, tok in enumerate(tokens):
        following = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.type == tokenize.NAME and tok.string in ("async", "await"):
            if tok.string == "async" and (
                following is None or following.string not in ("def", "with", "for")
            ):
                continue
            end = following.start if following is not None else tok.end
            edits.append((tok.start, end, ""))
        elif tok.type == tokenize.NAME:
            previous = tokens[i - 1] if i else None
            before = tokens[i - 2] if i > 1 else None
            if (
                tok.string == "asyncio"
                and previous is not None
                and previous.string == "."
                and before is not None
                and before.string == "redis"
            ):
                edits.append((previous.start, tok.end, ""))
                continue
            renamed = sync_name(tok.string)
            if renamed != tok.string:
                edits.append((tok.start, tok.end, renamed))
        elif tok.type in (tokenize.STRING, tokenize.COMMENT):
            renamed = sync_text(tok.string)
            if renamed != tok.string:
                edits.append((tok.start, tok.end, renamed))
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def at(position: tuple[int, int]) -> int:
        return offsets[position[0] - 1] + position[1]

    result = source
    for start, end, replacement in sorted(edits, key=lambda edit: at(edit[0]), reverse=True):
        result = result[: at(start)] + replacement + result[at(end) :]
    return result


def _ruff(arguments: list[str], code: str, path: Path) -> str:
    """What ruff writes for `code` (run from the repository, so its settings apply)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", *arguments, "--stdin-filename", str(path), "-"],
        input=code,
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    if done.returncode > 1:  # 2: ruff could not read or parse the code
        raise RuntimeError(f"ruff {arguments[0]} failed on {path}: {done.stderr.strip()}")
    # `ruff check --fix-only` prints nothing when it has nothing to fix.
    return done.stdout or code


def formatted(code: str, path: Path) -> str:
    """`code` formatted by ruff, with imports sorted, unused ones dropped and `with` merged."""
    fixes = ["check", "--select", "I,F401,RUF022,SIM117", "--fix-only", "--unsafe-fixes", "-q"]
    code = _ruff(["format"], code, path)
    # Merging `with` blocks (the async source nests a sync one in an async one) can take passes.
    for _ in range(3):
        fixed = _ruff(fixes, code, path)
        if fixed == code:
            break
        code = fixed
    return _ruff(["format"], code, path)


def target_of(source: Path) -> Path:
    """Where the sync module of `source` goes."""
    return source.with_name(source.name[: -len("_async.py")] + ".py")


def generate(source: Path) -> str:
    """The whole sync module for `source`, header included."""
    relative = source.resolve().relative_to(ROOT)
    code = convert(source.read_text(encoding="utf-8"))
    return HEADER.format(source=relative) + formatted(code, target_of(source))


def sources() -> list[Path]:
    """Every async source in the package."""
    return sorted((ROOT / "docstore").rglob("*_async.py"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    parser.add_argument("files", nargs="*", type=Path, help="async sources (default: all)")
    args = parser.parse_args(argv)
    stale = []
    for source in [path.resolve() for path in args.files] or sources():
        target = target_of(source)
        code = generate(source)
        current = target.read_text(encoding="utf-8") if target.exists() else None
        if code == current:
            continue
        if args.check:
            stale.append(str(target.relative_to(ROOT)))
        else:
            target.write_text(code, encoding="utf-8")
            print(f"wrote {target.relative_to(ROOT)}")
    if stale:
        print("stale generated files (run python tools/async_to_sync.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

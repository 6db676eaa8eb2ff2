"""Where the shipped SQL files, migrations and Lua scripts are on disk."""

from __future__ import annotations

from pathlib import Path

from docstore.errors import ConfigurationError

_PACKAGE_DIR = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    # In a wheel the folder sits inside the package; in a source checkout (editable install)
    # it is the top-level folder beside the package.
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise ConfigurationError(f"docstore is installed without its {name}/ folder")


def sql_dir() -> Path:
    """Folder of the named-query `.sql` files."""
    return _find("sql")


def migrations_dir() -> Path:
    """Folder of the yoyo migrations."""
    return _find("migrations")


def lua_dir() -> Path:
    """Folder of the Redis Lua scripts (always inside the package)."""
    return _PACKAGE_DIR / "redis" / "lua"

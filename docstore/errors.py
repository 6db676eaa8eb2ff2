"""Typed errors raised by docstore's public methods.

Every error derives from `DocstoreError`; the docstring of each class is its default message.
Driver errors (psycopg, psycopg_pool, redis) are translated at the boundary by
`docstore.postgres.errors` and chained with ``raise ... from exc``.
"""

from __future__ import annotations


class DocstoreError(Exception):
    """Something went wrong in docstore.

    `before_sending` is True when the call failed before anything was sent (no connection, or
    no open pool): it wrote nothing."""

    before_sending = False

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else ""


class InvalidInput(DocstoreError):
    """The input was refused before or by the database: it breaks a rule of the data model.

    `field` names the argument or column at fault (when known); `constraint` the database
    constraint that refused it (None when refused in Python).
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        field: str | None = None,
        constraint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.constraint = constraint


class UnsupportedDocument(InvalidInput):
    """The document is neither a PDF nor text (binary content named .txt, for example)."""


class NotFound(DocstoreError):
    """The requested row does not exist."""


class Conflict(DocstoreError):
    """The write conflicts with a row that already exists."""

    def __init__(self, message: str | None = None, *, constraint_name: str | None = None) -> None:
        super().__init__(message)
        self.constraint_name = constraint_name


class InvalidTransition(DocstoreError):
    """The document is not in a state that allows this change (or another worker holds it)."""


class Cancelled(InvalidTransition):
    """The document was cancelled: its worker must stop, and its result is refused."""


class ServiceUnavailable(DocstoreError):
    """A server docstore depends on could not be reached in time."""

    def __init__(
        self,
        message: str | None = None,
        *,
        service: str = "",
        address: str = "",
        before_sending: bool = False,
    ) -> None:
        super().__init__(message)
        self.service = service
        self.address = address
        self.before_sending = before_sending


class PoolExhausted(ServiceUnavailable):
    """No database connection became free within the pool timeout."""


class DatabaseError(DocstoreError):
    """PostgreSQL refused the statement for a reason docstore does not classify further."""


class RedisCommandError(DocstoreError):
    """Redis refused a command for a reason other than being unreachable."""


# What a best-effort Redis step (an enqueue, an ack, a progress mark) can meet: Redis away, or
# Redis refusing the write (`maxmemory` with noeviction, MISCONF after a failed snapshot). Work
# that needs only PostgreSQL goes on past either.
REDIS_FAILURES = (ServiceUnavailable, RedisCommandError)


class ConfigurationError(DocstoreError):
    """The settings or the installation are incomplete or inconsistent."""


class BlobStoreError(DocstoreError):
    """The blob store refused the operation."""


class SchemaError(DocstoreError):
    """Applying or rolling back the schema failed."""


class RollbackRefused(SchemaError):
    """The rollback would destroy stored rows and was not confirmed; no row was destroyed."""

    def __init__(self, message: str | None = None, *, rolled_back: list[str]) -> None:
        super().__init__(message)
        self.rolled_back = rolled_back


__all__ = [
    "REDIS_FAILURES",
    "BlobStoreError",
    "Cancelled",
    "ConfigurationError",
    "Conflict",
    "DatabaseError",
    "DocstoreError",
    "InvalidInput",
    "InvalidTransition",
    "NotFound",
    "PoolExhausted",
    "RedisCommandError",
    "RollbackRefused",
    "SchemaError",
    "ServiceUnavailable",
    "UnsupportedDocument",
]

"""docstore: the data layer of the document-processing service.

PostgreSQL (raw SQL through a psycopg 3 pool) for what must last, Redis for what is fast and
temporary.
"""

from docstore.errors import (
    Conflict,
    DocstoreError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    ServiceUnavailable,
)
from docstore.settings import Settings
from docstore.store import Docstore

__version__ = "0.1.0"

__all__ = [
    "Conflict",
    "Docstore",
    "DocstoreError",
    "InvalidInput",
    "InvalidTransition",
    "NotFound",
    "ServiceUnavailable",
    "Settings",
    "__version__",
]

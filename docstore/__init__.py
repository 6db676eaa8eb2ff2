"""docstore: the data layer of the document-processing service.

PostgreSQL (raw SQL through a psycopg 3 pool) for what must last, Redis for what is fast and
temporary.
"""

from docstore.documents import DocumentRepo
from docstore.errors import (
    Conflict,
    DocstoreError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    ServiceUnavailable,
)
from docstore.models import (
    DocumentCreate,
    DocumentListResponse,
    DocumentResponse,
    DocumentStatus,
    DocumentSummary,
    DocumentUpdate,
    DocumentWithUser,
    SearchHit,
    SearchResponse,
    UserCreate,
    UserListResponse,
    UserResponse,
    UserUpdate,
    UserWithApiKey,
    UserWithDocuments,
)
from docstore.settings import Settings
from docstore.store import Docstore
from docstore.users import UserRepo

__version__ = "0.1.0"

__all__ = [
    "Conflict",
    "Docstore",
    "DocstoreError",
    "DocumentCreate",
    "DocumentListResponse",
    "DocumentRepo",
    "DocumentResponse",
    "DocumentStatus",
    "DocumentSummary",
    "DocumentUpdate",
    "DocumentWithUser",
    "InvalidInput",
    "InvalidTransition",
    "NotFound",
    "SearchHit",
    "SearchResponse",
    "ServiceUnavailable",
    "Settings",
    "UserCreate",
    "UserListResponse",
    "UserRepo",
    "UserResponse",
    "UserUpdate",
    "UserWithApiKey",
    "UserWithDocuments",
    "__version__",
]

"""docstore: the data layer of the document-processing service.

PostgreSQL (raw SQL through a psycopg 3 pool) for what must last, Redis for what is fast and
temporary.
"""

from docstore.ephemeral.cache import CacheStats, RedisCache
from docstore.ephemeral.progress import Progress, ProgressTracker
from docstore.ephemeral.queue import DeadLetter, QueueMessage, QueueStats, TaskQueue
from docstore.ephemeral.rate_limit import DecidedBy, FailurePolicy, RateLimiter, RateLimitResult
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
from docstore.repositories.documents import DocumentRepo
from docstore.repositories.users import UserRepo
from docstore.settings import Settings
from docstore.store import Docstore

__version__ = "0.1.0"

__all__ = [
    "CacheStats",
    "Conflict",
    "DeadLetter",
    "DecidedBy",
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
    "FailurePolicy",
    "InvalidInput",
    "InvalidTransition",
    "NotFound",
    "Progress",
    "ProgressTracker",
    "QueueMessage",
    "QueueStats",
    "RateLimitResult",
    "RateLimiter",
    "RedisCache",
    "SearchHit",
    "SearchResponse",
    "ServiceUnavailable",
    "Settings",
    "TaskQueue",
    "UserCreate",
    "UserListResponse",
    "UserRepo",
    "UserResponse",
    "UserUpdate",
    "UserWithApiKey",
    "UserWithDocuments",
    "__version__",
]

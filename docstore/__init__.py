"""docstore: the data layer of the document-processing service.

PostgreSQL (raw SQL through a psycopg 3 pool) for what must last, Redis for what is fast and
temporary, S3 for the document bytes. Everything a public method takes, returns or raises is
importable from here.
"""

from docstore.ephemeral.cache import CacheStats, RedisCache
from docstore.ephemeral.progress import Progress, ProgressTracker
from docstore.ephemeral.queue import DeadLetter, QueueMessage, QueueStats, TaskQueue
from docstore.ephemeral.rate_limit import DecidedBy, FailurePolicy, RateLimiter, RateLimitResult
from docstore.errors import (
    BlobStoreError,
    ConfigurationError,
    Conflict,
    DatabaseError,
    DocstoreError,
    InvalidInput,
    InvalidTransition,
    NotFound,
    PoolExhausted,
    RedisCommandError,
    RollbackRefused,
    SchemaError,
    ServiceUnavailable,
    UnsupportedDocument,
)
from docstore.health import HealthReport, PoolStats
from docstore.intake.blobs import BlobStore, LocalBlobStore, S3BlobStore, StoredBlob
from docstore.intake.extractors import Extraction, ProgressCallback, extract_text
from docstore.intake.flow import Extractor, Outcome, StuckReport
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
from docstore.postgres.executor import Database
from docstore.postgres.schema import MigrationStatus
from docstore.redis.core import RedisCore
from docstore.repositories.documents import DocumentRepo
from docstore.repositories.lifecycle import DocumentLifecycle
from docstore.repositories.users import UserRepo
from docstore.settings import Settings
from docstore.store import Docstore

__version__ = "0.1.0"

__all__ = [
    "BlobStore",
    "BlobStoreError",
    "CacheStats",
    "ConfigurationError",
    "Conflict",
    "Database",
    "DatabaseError",
    "DeadLetter",
    "DecidedBy",
    "Docstore",
    "DocstoreError",
    "DocumentCreate",
    "DocumentLifecycle",
    "DocumentListResponse",
    "DocumentRepo",
    "DocumentResponse",
    "DocumentStatus",
    "DocumentSummary",
    "DocumentUpdate",
    "DocumentWithUser",
    "Extraction",
    "Extractor",
    "FailurePolicy",
    "HealthReport",
    "InvalidInput",
    "InvalidTransition",
    "LocalBlobStore",
    "MigrationStatus",
    "NotFound",
    "Outcome",
    "PoolExhausted",
    "PoolStats",
    "Progress",
    "ProgressCallback",
    "ProgressTracker",
    "QueueMessage",
    "QueueStats",
    "RateLimitResult",
    "RateLimiter",
    "RedisCache",
    "RedisCommandError",
    "RedisCore",
    "RollbackRefused",
    "S3BlobStore",
    "SchemaError",
    "SearchHit",
    "SearchResponse",
    "ServiceUnavailable",
    "Settings",
    "StoredBlob",
    "StuckReport",
    "TaskQueue",
    "UnsupportedDocument",
    "UserCreate",
    "UserListResponse",
    "UserRepo",
    "UserResponse",
    "UserUpdate",
    "UserWithApiKey",
    "UserWithDocuments",
    "__version__",
    "extract_text",
]

"""docstore: the data layer of the document-processing service.

PostgreSQL (raw SQL through a psycopg 3 pool) for what must last, Redis for what is fast and
temporary, S3 for the document bytes. `Docstore` for scripts, Django and Celery tasks,
`AsyncDocstore` for asyncio services: the same methods, awaited. Everything a public method takes,
returns or raises is importable from here.
"""

from docstore.ephemeral.cache import RedisCache
from docstore.ephemeral.cache_async import AsyncRedisCache
from docstore.ephemeral.progress import ProgressTracker
from docstore.ephemeral.progress_async import AsyncProgressTracker
from docstore.ephemeral.queue import TaskQueue
from docstore.ephemeral.queue_async import AsyncTaskQueue
from docstore.ephemeral.rate_limit import RateLimiter
from docstore.ephemeral.rate_limit_async import AsyncRateLimiter
from docstore.ephemeral.values import (
    CacheStats,
    DeadLetter,
    DecidedBy,
    FailurePolicy,
    LimitCheck,
    Progress,
    QueueMessage,
    QueueStats,
    RateLimitResult,
)
from docstore.errors import (
    BlobStoreError,
    Cancelled,
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
from docstore.health import HealthReport, PoolStats, ReplicaHealth
from docstore.intake.blob_access import Blobs
from docstore.intake.blob_access_async import AsyncBlobs
from docstore.intake.blobs import BlobStore, LocalBlobStore, S3BlobStore, StoredBlob
from docstore.intake.extractors import Extraction, ProgressCallback, extract_text
from docstore.intake.outcomes import BlobPurgeReport, Extractor, Outcome, StuckReport
from docstore.models import (
    DocumentAttempt,
    DocumentCreate,
    DocumentListResponse,
    DocumentResponse,
    DocumentStatus,
    DocumentSummary,
    DocumentUpdate,
    DocumentWithUser,
    SearchHit,
    SearchResponse,
    SubmittedDocument,
    UserCreate,
    UserListResponse,
    UserResponse,
    UserUpdate,
    UserWithApiKey,
    UserWithDocuments,
)
from docstore.postgres.executor import Database
from docstore.postgres.executor_async import AsyncDatabase
from docstore.postgres.schema import MigrationStatus
from docstore.redis.core import RedisCore
from docstore.redis.core_async import AsyncRedisCore
from docstore.repositories.changes import ChangeListener, DocumentChanges
from docstore.repositories.changes_async import AsyncChangeListener, AsyncDocumentChanges
from docstore.repositories.documents import DocumentRepo
from docstore.repositories.documents_async import AsyncDocumentRepo
from docstore.repositories.lifecycle import DocumentLifecycle
from docstore.repositories.lifecycle_async import AsyncDocumentLifecycle
from docstore.repositories.users import UserRepo
from docstore.repositories.users_async import AsyncUserRepo
from docstore.settings import Settings
from docstore.store import Docstore
from docstore.store_async import AsyncDocstore

__version__ = "0.1.0"

__all__ = [
    "AsyncBlobs",
    "AsyncChangeListener",
    "AsyncDatabase",
    "AsyncDocstore",
    "AsyncDocumentChanges",
    "AsyncDocumentLifecycle",
    "AsyncDocumentRepo",
    "AsyncProgressTracker",
    "AsyncRateLimiter",
    "AsyncRedisCache",
    "AsyncRedisCore",
    "AsyncTaskQueue",
    "AsyncUserRepo",
    "BlobPurgeReport",
    "BlobStore",
    "BlobStoreError",
    "Blobs",
    "CacheStats",
    "Cancelled",
    "ChangeListener",
    "ConfigurationError",
    "Conflict",
    "Database",
    "DatabaseError",
    "DeadLetter",
    "DecidedBy",
    "Docstore",
    "DocstoreError",
    "DocumentAttempt",
    "DocumentChanges",
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
    "LimitCheck",
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
    "ReplicaHealth",
    "RollbackRefused",
    "S3BlobStore",
    "SchemaError",
    "SearchHit",
    "SearchResponse",
    "ServiceUnavailable",
    "Settings",
    "StoredBlob",
    "StuckReport",
    "SubmittedDocument",
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

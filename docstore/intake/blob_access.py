# Generated from docstore/intake/blob_access_async.py by tools/async_to_sync.py:
# edit that file, then run the script (CI fails when this file is stale).
"""`store.blobs`: the blob store as the store's callers use it.

On the asyncio side every call runs on a thread (boto3 and the file system block), so reading or
writing bytes never blocks the event loop; on the sync side (generated from this file) the calls
go straight through. Any other attribute is the underlying store's (`store.blobs.store` is it).
"""

from __future__ import annotations

from typing import IO, Any

from docstore._sync_runtime import in_thread
from docstore.intake.blobs import BlobStore, StoredBlob
from docstore.observability.blob_ops import instrument_blob_store


class Blobs:
    """The store's blob store (`store.blobs`); on the asyncio side its calls run on threads."""

    def __init__(self, store: BlobStore) -> None:
        self.store = instrument_blob_store(store)  # spans, when OpenTelemetry is on

    def put(self, user_id: int, filename: str, data: bytes | IO[bytes]) -> StoredBlob:
        """Store the bytes under a new key; large files are streamed, never read whole."""
        return in_thread(self.store.put, user_id, filename, data)

    def get(self, key: str) -> bytes:
        """All bytes of a blob (small blobs only; use `open` for large ones)."""
        return in_thread(self.store.get, key)

    def open(self, key: str) -> IO[bytes]:
        """A readable stream of the blob (its reads block: read it on a thread); close it."""
        return in_thread(self.store.open, key)

    def delete(self, key: str) -> None:
        """Remove the blob; removing a missing blob is not an error."""
        in_thread(self.store.delete, key)

    def presigned_url(self, key: str, expires_in: int = 3600) -> str:
        """A URL that downloads the blob without credentials until it expires."""
        return in_thread(self.store.presigned_url, key, expires_in)

    def __getattr__(self, name: str) -> Any:
        # Store-specific attributes (a local store's `root`, an S3 store's `bucket`).
        return getattr(self.store, name)


__all__ = ["Blobs"]

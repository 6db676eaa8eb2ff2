"""Every blob of a blob store in byte order of its key, one page at a time (never loaded whole).

S3 lists keys in UTF-8 byte order, 1,000 per request; the local store is walked in the same
order, one folder at a time. The doctor merges this listing with the documents' keys read from
PostgreSQL in the same order, so both sides stream.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path

from docstore.intake.blobs import BlobStore, LocalBlobStore, S3BlobStore
from docstore.rules import encodable

logger = logging.getLogger("docstore.doctor")


@dataclass(frozen=True, slots=True)
class ListedBlob:
    """A blob's key and when it was last written."""

    key: str
    modified: datetime


def can_list(store: BlobStore) -> bool:
    """True for the stores this module can list (S3 and the local folder)."""
    return isinstance(store, S3BlobStore | LocalBlobStore)


def blobs_in_order(store: BlobStore, page_size: int = 1000) -> Iterator[ListedBlob]:
    """Every blob of `store`, by key in byte order (`can_list` must be True)."""
    if isinstance(store, S3BlobStore):
        return _s3_blobs(store, page_size)
    if isinstance(store, LocalBlobStore):
        return _local_blobs(store.root, "")
    raise TypeError(f"cannot list the blobs of {type(store).__name__}")


def take(blobs: Iterator[ListedBlob], count: int) -> list[ListedBlob]:
    """The next `count` blobs (fewer at the end); it blocks: the async side runs it on a thread."""
    return list(islice(blobs, count))


def _s3_blobs(store: S3BlobStore, page_size: int) -> Iterator[ListedBlob]:
    after = ""
    while True:
        # The store's own mapping of S3 errors (outage, refusal) to docstore errors.
        with store._errors("(listing)"):
            reply = store.client.list_objects_v2(
                Bucket=store.bucket, MaxKeys=page_size, StartAfter=after
            )
        contents = reply.get("Contents", [])
        for item in contents:
            yield ListedBlob(key=item["Key"], modified=item["LastModified"])
        if not contents or not reply.get("IsTruncated"):
            return
        after = contents[-1]["Key"]


def _local_blobs(folder: Path, prefix: str) -> Iterator[ListedBlob]:
    # A folder "a" sorts as "a/" so that "a.txt" comes before "a/b", as in byte order of keys.
    with os.scandir(folder) as scan:
        entries = sorted(
            (entry.name + ("/" if entry.is_dir(follow_symlinks=False) else ""), entry.path)
            for entry in scan
        )
    for name, path in entries:
        if name.endswith("/"):
            yield from _local_blobs(Path(path), prefix + name)
        elif not name.startswith("."):  # a blob's file name never starts with a dot
            try:
                encodable(name)
            except ValueError:
                # No key names it (keys are UTF-8 text), and asking PostgreSQL about it would
                # stop the whole audit: told, and left alone.
                logger.warning("left alone: %r is not a UTF-8 file name, so no blob's", path)
                continue
            # An upload in flight (a temporary file) is young: the grace period covers it.
            modified = datetime.fromtimestamp(os.stat(path).st_mtime, tz=timezone.utc)
            yield ListedBlob(key=prefix + name, modified=modified)



__all__ = ["ListedBlob", "blobs_in_order", "can_list", "take"]

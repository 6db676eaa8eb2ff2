"""Document bytes: S3 (boto3) in production, a local directory for development.

Both stores share one interface. Keys of new blobs are made by `make_blob_key`, so a filename
can never steer where the bytes land. Reading takes any key S3 itself takes (`check_key`), so
blobs the legacy service wrote under its own keys stay readable; the local store also refuses
keys that would leave or bend its folder.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import unicodedata
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Protocol, cast

from pydantic import BaseModel, ConfigDict

from docstore.errors import (
    BlobStoreError,
    ConfigurationError,
    DocstoreError,
    InvalidInput,
    NotFound,
    ServiceUnavailable,
)
from docstore.rules import CONTROL_CHARACTERS, RowId, check
from docstore.settings import Settings

MAX_KEY_BYTES = 1024  # S3's limit, in UTF-8 bytes
MAX_NAME_BYTES = 255  # one file name on the usual file systems (the local store)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# C0, DEL and C1: S3 stores them, but they hide in logs and listings and break XML replies.
_CHUNK = 1024 * 1024
_ITER_CHUNK = 64 * 1024  # what iterating an opened S3 blob yields at a time


class StoredBlob(BaseModel):
    """Where an upload went and what it was."""

    model_config = ConfigDict(frozen=True)

    key: str
    size: int
    sha256: str


def safe_filename(filename: str) -> str:
    """The last path part of `filename`, reduced to ``[A-Za-z0-9._-]`` (at most 200 chars).

    A name of which nothing survives but its extension becomes ``file.<extension>``.
    """
    if not isinstance(filename, str):
        raise InvalidInput("filename must be a string", field="filename")
    name = unicodedata.normalize("NFKC", filename).replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    if not stem.strip("."):  # ".hidden", "....": no extension to keep
        stem, dot, extension = name, "", ""
    stem = _UNSAFE.sub("_", stem).lstrip("._") or ("file" if extension else "")
    name = (stem + dot + _UNSAFE.sub("_", extension))[-200:].lstrip("._")
    return name or "file"


def check_expires_in(expires_in: object) -> int:
    """A presigned URL's lifetime: whole seconds, from 1 s to 7 days (S3's own bounds)."""
    if (
        isinstance(expires_in, bool)
        or not isinstance(expires_in, int)
        or not 1 <= expires_in <= 7 * 24 * 3600
    ):
        raise InvalidInput(
            "expires_in must be whole seconds between 1 s and 7 days", field="expires_in"
        )
    return expires_in


def make_blob_key(user_id: int, filename: str, now: datetime | None = None) -> str:
    """A unique key ``uploads/{user}/{yyyy}/{mm}/{uuid}/{safe name}`` for a new upload."""
    user_id = int(check(RowId, user_id, "user_id"))
    moment = now or datetime.now(timezone.utc)
    return f"uploads/{user_id}/{moment:%Y}/{moment:%m}/{uuid.uuid4().hex}/{safe_filename(filename)}"


# The keys `make_blob_key` makes (and no others).
_DOCSTORE_KEY = re.compile(
    r"uploads/[1-9][0-9]*/[0-9]{4}/[0-9]{2}/[0-9a-f]{32}/[A-Za-z0-9._-]{1,200}"
)


def is_docstore_key(key: str) -> bool:
    """Whether `key` has the shape of the keys docstore makes for uploads (`make_blob_key`)."""
    return _DOCSTORE_KEY.fullmatch(key) is not None


def check_key(key: str) -> str:
    """`key` if a blob may be read, opened, signed or deleted under it: `InvalidInput` otherwise.

    Any key S3 takes (a non-empty string of at most 1024 bytes UTF-8, so no lone surrogate)
    without control characters; the local store adds its own rules (`LocalBlobStore`).
    """
    if not isinstance(key, str) or not key:
        raise InvalidInput("a blob key must be a non-empty string", field="s3_key")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput("a blob key must not hold a lone surrogate", field="s3_key") from None
    if size > MAX_KEY_BYTES:
        raise InvalidInput(f"a blob key is at most {MAX_KEY_BYTES} bytes", field="s3_key")
    if CONTROL_CHARACTERS.search(key):
        raise InvalidInput("a blob key must not hold control characters", field="s3_key")
    return key


def _local_key_parts(key: str) -> list[str]:
    """The folders and file name of a key the local store may use: relative, plain steps."""
    parts = check_key(key).split("/")
    if "\\" in key or any(part in {"", ".", ".."} for part in parts):
        raise InvalidInput(
            "a local blob key is relative, with no '.', '..', empty step or backslash",
            field="s3_key",
        )
    if any(len(part.encode("utf-8")) > MAX_NAME_BYTES for part in parts):
        raise InvalidInput(
            f"a step of a local blob key is at most {MAX_NAME_BYTES} bytes", field="s3_key"
        )
    return parts


def _as_stream(data: bytes | IO[bytes]) -> IO[bytes]:
    if isinstance(data, bytes | bytearray | memoryview):
        return io.BytesIO(bytes(data))
    if not hasattr(data, "read"):
        raise InvalidInput("data must be bytes or a binary file object", field="data")
    return data


def read_callers_stream(stream: IO[bytes], size: int) -> bytes:
    """`stream.read(size)` of a caller's file object, whose failures are `InvalidInput` about
    `data` (a closed file, a client gone): never taken for the blob store's own, nor raw."""
    try:
        chunk = stream.read(size)
    except DocstoreError:
        raise  # docstore's own reader's refusal (over the size limit, a cancelled submit)
    except (OSError, ValueError) as exc:
        raise InvalidInput(
            f"the file could not be read: {type(exc).__name__}: {exc}", field="data"
        ) from exc
    if chunk is None:  # a non-blocking stream with nothing ready
        raise InvalidInput("the file object must not be non-blocking", field="data")
    if not isinstance(chunk, bytes):
        raise InvalidInput("the file object must be opened in binary mode", field="data")
    return chunk


class _HashingReader(io.RawIOBase):
    """Wraps a stream, counting and hashing what is read through it (no buffering of its own).

    A read returns all it was asked for unless the stream has ended: a stream may answer with
    less (a socket, a pipe, any raw stream), and boto3 takes a short read for the end of the
    file, which stored a truncated blob (its size and SHA-256 those of the part read)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.size = 0
        self.digest = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size
        while wanted != 0:
            chunk = read_callers_stream(self.stream, wanted)
            if not chunk:
                break
            parts.append(chunk)
            if wanted > 0:
                wanted = max(wanted - len(chunk), 0)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.size += len(data)
        self.digest.update(data)
        return data

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


class _TranslatedBody(io.RawIOBase):
    """An S3 object's body whose read errors (a download cut short, a read timeout) come out
    as docstore's own, through `errors`."""

    def __init__(self, body: Any, errors: Callable[[], AbstractContextManager[None]]) -> None:
        self.body = body
        self.errors = errors
        self.position = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        with self.errors():
            chunk: bytes = self.body.read(None if size is None or size < 0 else size)
        self.position += len(chunk)
        return chunk

    def tell(self) -> int:
        """Bytes read so far (as boto3's body says)."""
        return self.position

    def __next__(self) -> bytes:
        # Chunks, as boto3's body iterates, not lines: a line-less blob read byte by byte.
        chunk = self.read(_ITER_CHUNK)
        if not chunk:
            raise StopIteration
        return chunk

    def iter_chunks(self, chunk_size: int = _ITER_CHUNK) -> Iterator[bytes]:
        """The rest of the body, `chunk_size` bytes at a time."""
        while chunk := self.read(chunk_size):
            yield chunk

    def readall(self) -> bytes:
        return self.read()

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def close(self) -> None:
        if not self.closed:
            self.body.close()
        super().close()


class BlobStore(Protocol):
    """What the document flow needs from a place that keeps bytes."""

    def put(self, user_id: int, filename: str, data: bytes | IO[bytes]) -> StoredBlob:
        """Store the bytes under a new key; large files are streamed, never read whole."""
        ...

    def get(self, key: str) -> bytes:
        """All bytes of a blob (small blobs only; use `open` for large ones)."""
        ...

    def open(self, key: str) -> IO[bytes]:
        """A readable stream of the blob; close it when done."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; removing a missing blob is not an error."""
        ...

    def presigned_url(self, key: str, expires_in: int = 3600) -> str:
        """A URL that downloads the blob without credentials until it expires."""
        ...


class LocalBlobStore:
    """Blobs as files under one directory, for development and the quickstart."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        """Where the blob of `key` lives; `InvalidInput` when that is not inside the root (a
        symbolic link may point out of it)."""
        path = self.root.joinpath(*_local_key_parts(key))
        try:
            inside = path.resolve().is_relative_to(self.root)
        except (OSError, RuntimeError):  # RuntimeError: a loop of symbolic links
            inside = False
        if not inside:
            raise InvalidInput("the blob key leads out of the store's folder", field="s3_key")
        return path

    def put(self, user_id: int, filename: str, data: bytes | IO[bytes]) -> StoredBlob:
        """Copy the stream in chunks to a temporary file, then rename it into place."""
        key = make_blob_key(user_id, filename)
        target = self._path(key)
        reader = _HashingReader(_as_stream(data))
        written: Path | None = None  # the temporary file, until it is renamed into place
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=target.parent, delete=False) as tmp:
                written = Path(tmp.name)
                shutil.copyfileobj(reader, tmp, _CHUNK)
            written.replace(target)
            written = None
        except OSError as exc:  # a full disk, a file where a folder should be...
            raise BlobStoreError(f"blob {key} cannot be written: {exc.strerror}") from exc
        finally:
            # The copy, the last flush (on closing) or the rename failed: no half file stays.
            if written is not None:
                written.unlink(missing_ok=True)
        return StoredBlob(key=key, size=reader.size, sha256=reader.digest.hexdigest())

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> IO[bytes]:
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            # A folder, or a step below a file: no blob has that key.
            raise NotFound(f"blob {key} not found") from exc
        except OSError as exc:
            raise BlobStoreError(f"blob {key} cannot be read: {exc.strerror}") from exc

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except (IsADirectoryError, NotADirectoryError):
            return  # no blob has that key: nothing to remove
        except OSError as exc:
            raise BlobStoreError(f"blob {key} cannot be deleted: {exc.strerror}") from exc

    def presigned_url(self, key: str, expires_in: int = 3600) -> str:
        check_expires_in(expires_in)  # the same argument as S3's, though a file URL never expires
        return self._path(key).as_uri()


class S3BlobStore:
    """Blobs in one S3 bucket (or any S3-compatible server via `endpoint_url`)."""

    def __init__(self, client: Any, bucket: str, *, multipart_threshold: int = 8 * _CHUNK) -> None:
        from boto3.s3.transfer import TransferConfig

        self.client = client
        self.bucket = bucket
        self.transfer = TransferConfig(
            multipart_threshold=multipart_threshold, multipart_chunksize=multipart_threshold
        )
        endpoint = getattr(getattr(client, "meta", None), "endpoint_url", "") or "s3"
        self.address = str(endpoint)

    @classmethod
    def from_settings(
        cls,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        timeout: float = 10.0,
    ) -> S3BlobStore:
        """A store with its own boto3 client; credentials default to the usual AWS chain."""
        import boto3
        from botocore.config import Config

        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": 2, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )
        return cls(client, bucket)

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        from botocore.exceptions import BotoCoreError, ClientError, ConnectionError
        from urllib3.exceptions import HTTPError

        try:
            yield
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise NotFound(f"blob {key} not found") from exc
            raise BlobStoreError(f"S3 refused the request for {key}: {code}") from exc
        except ConnectionError as exc:
            raise ServiceUnavailable(
                f"S3 at {self.address} is unavailable", service="s3", address=self.address
            ) from exc
        except (BotoCoreError, HTTPError) as exc:  # HTTPError: urllib3's, e.g. a body cut short
            raise BlobStoreError(f"S3 request for {key} failed: {type(exc).__name__}") from exc

    def put(self, user_id: int, filename: str, data: bytes | IO[bytes]) -> StoredBlob:
        """Upload with boto3's managed transfer: multipart above the threshold, streamed."""
        key = make_blob_key(user_id, filename)
        reader = _HashingReader(_as_stream(data))
        with self._errors(key):
            self.client.upload_fileobj(reader, self.bucket, key, Config=self.transfer)
        return StoredBlob(key=key, size=reader.size, sha256=reader.digest.hexdigest())

    def get(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def open(self, key: str) -> IO[bytes]:
        with self._errors(check_key(key)):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return cast(IO[bytes], _TranslatedBody(body, lambda: self._errors(key)))

    def delete(self, key: str) -> None:
        with self._errors(check_key(key)):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def presigned_url(self, key: str, expires_in: int = 3600) -> str:
        check_expires_in(expires_in)
        with self._errors(check_key(key)):
            url: str = self.client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
            )
            return url


def blob_store_from_settings(settings: Settings) -> BlobStore:
    """The blob store the settings describe (`BLOB_BACKEND`, `S3_*`, `BLOB_DIR`);
    `ConfigurationError` when they describe one that cannot be made."""
    if settings.blob_backend == "local":
        try:
            return LocalBlobStore(settings.blob_dir)
        except OSError as exc:
            raise ConfigurationError(
                f"BLOB_DIR {settings.blob_dir!r} cannot be the local blob store's folder: "
                f"{exc.strerror}"
            ) from exc
    from botocore.exceptions import BotoCoreError

    secret = settings.s3_secret_key.get_secret_value() if settings.s3_secret_key else None
    try:
        return S3BlobStore.from_settings(
            settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key=settings.s3_access_key,
            secret_key=secret,
        )
    except (BotoCoreError, ValueError) as exc:  # e.g. a malformed endpoint, an unknown profile
        raise ConfigurationError(f"the S3 settings (S3_*) cannot make a client: {exc}") from exc

"""Blob stores against a real S3-speaking HTTP server, and the local-directory twin."""

import hashlib
import io
import urllib.request
from pathlib import Path

import pytest

from docstore.errors import InvalidInput, NotFound, ServiceUnavailable
from docstore.intake.blobs import (
    LocalBlobStore,
    S3BlobStore,
    StoredBlob,
    check_key,
    make_blob_key,
    safe_filename,
)
from docstore.testing import free_port


@pytest.fixture(params=["s3", "local"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> S3BlobStore | LocalBlobStore:
    if request.param == "s3":
        store: S3BlobStore = request.getfixturevalue("docstore_blob_store")
        return store
    return LocalBlobStore(tmp_path / "blobs")


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "passwd"),
        ("..\\..\\windows\\system32\\x.dll", "x.dll"),
        ("/abs/path/a b c.pdf", "a_b_c.pdf"),
        ("....", "file"),
        ("", "file"),
        ("résumé 2024.pdf", "r_sum_2024.pdf"),
        ("a\x00b.pdf", "a_b.pdf"),
    ],
)
def test_safe_filename_keeps_no_path_tricks(filename: str, expected: str) -> None:
    assert safe_filename(filename) == expected


def test_keys_are_unique_and_bounded() -> None:
    keys = {make_blob_key(7, "x" * 1000 + ".pdf") for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith("uploads/7/")
        assert len(key) <= 512
        assert check_key(key) == key


@pytest.mark.parametrize("key", ["../x", "uploads/1/2024/01/abc/x", "/etc/passwd", "", "uploads/"])
def test_foreign_keys_are_refused(key: str) -> None:
    with pytest.raises(InvalidInput):
        check_key(key)


def test_put_get_open_delete_round_trip(blobs: S3BlobStore | LocalBlobStore) -> None:
    data = b"%PDF-1.4 hello\x00world"
    stored = blobs.put(3, "../a.pdf", data)
    assert stored == StoredBlob(
        key=stored.key, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    assert stored.key.endswith("/a.pdf")
    assert blobs.get(stored.key) == data
    with blobs.open(stored.key) as stream:
        assert stream.read(4) == b"%PDF"
    blobs.delete(stored.key)
    with pytest.raises(NotFound):
        blobs.get(stored.key)
    blobs.delete(stored.key)  # idempotent


def test_large_file_streams_in_parts(blobs: S3BlobStore | LocalBlobStore) -> None:
    class CountingReader(io.RawIOBase):
        """A 20 MB file produced on the fly; records the largest read asked of it."""

        def __init__(self, size: int) -> None:
            self.left = size
            self.largest_read = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
            n = min(len(buffer), self.left)
            self.largest_read = max(self.largest_read, len(buffer))
            buffer[:n] = b"x" * n
            self.left -= n
            return n

    size = 20 * 1024 * 1024
    reader = CountingReader(size)
    stored = blobs.put(1, "big.bin", io.BufferedReader(reader, 1024 * 1024))
    assert stored.size == size
    assert stored.sha256 == hashlib.sha256(b"x" * size).hexdigest()
    assert reader.largest_read < size // 2  # never asked for the whole file at once
    with blobs.open(stored.key) as stream:
        total = sum(len(chunk) for chunk in iter(lambda: stream.read(1 << 20), b""))
    assert total == size


def test_presigned_url_downloads_without_credentials(docstore_blob_store: S3BlobStore) -> None:
    stored = docstore_blob_store.put(2, "note.txt", b"plain text")
    url = docstore_blob_store.presigned_url(stored.key, expires_in=60)
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.read() == b"plain text"
    with pytest.raises(InvalidInput):
        docstore_blob_store.presigned_url(stored.key, expires_in=0)


def test_text_mode_file_is_refused(blobs: S3BlobStore | LocalBlobStore) -> None:
    with pytest.raises(InvalidInput):
        blobs.put(1, "a.txt", io.StringIO("text"))  # type: ignore[arg-type]


def test_unreachable_s3_is_service_unavailable() -> None:
    store = S3BlobStore.from_settings(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        region="us-east-1",
        access_key="a",
        secret_key="b",
        timeout=1,
    )
    with pytest.raises(ServiceUnavailable, match=r"127\.0\.0\.1"):
        store.put(1, "a.txt", b"x")

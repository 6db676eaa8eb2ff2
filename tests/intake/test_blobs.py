"""Blob stores against a real S3-speaking HTTP server, and the local-directory twin."""

import hashlib
import http.server
import io
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

import docstore.intake.blobs as blobs_module
from docstore.errors import BlobStoreError, InvalidInput, NotFound, ServiceUnavailable
from docstore.intake.blobs import (
    LocalBlobStore,
    S3BlobStore,
    StoredBlob,
    check_key,
    make_blob_key,
    safe_filename,
)
from docstore.testing import free_port

# What `put` writes: docstore's own key shape.
DOCSTORE_KEY = re.compile(r"uploads/[0-9]+/[0-9]{4}/[0-9]{2}/[0-9a-f]{32}/[A-Za-z0-9._-]{1,200}")
# Keys the legacy service wrote (migrated documents point at them).
LEGACY_KEYS = [
    "uploads/legacy/scan.pdf",
    "legacy/2023/07/scan-0001.txt",
    "legacy/Scans (2023)/deep/er/and/deeper/folder/report final (1).pdf",
    "uploads/1/2024/01/abc/x",
    "ünïcode/ファイル 📄.txt",
    "k?x=1#frag&y=%2e%2e",
]


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
        (".hidden", "hidden"),
    ],
)
def test_safe_filename_keeps_no_path_tricks(filename: str, expected: str) -> None:
    assert safe_filename(filename) == expected


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("📄💥.txt", "file.txt"),
        ("日本語.pdf", "file.pdf"),
        ("../../📄.docx", "file.docx"),
        ("__.csv", "file.csv"),
        ("résumé.pdf", "r_sum_.pdf"),  # something survives: no placeholder,
    ],
)
def test_safe_filename_keeps_the_extension_when_no_letter_of_the_name_survives(
    filename: str, expected: str
) -> None:
    assert safe_filename(filename) == expected
    assert make_blob_key(1, filename).endswith("/" + expected)


def test_keys_are_unique_and_bounded() -> None:
    keys = {make_blob_key(7, "x" * 1000 + ".pdf") for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith("uploads/7/")
        assert len(key) <= 512
        assert DOCSTORE_KEY.fullmatch(key) and check_key(key) == key


@pytest.mark.parametrize("key", LEGACY_KEYS)
def test_any_key_s3_accepts_is_readable(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "a\x00b", "a\nb", "tab\there", "del\x7f", "c1\x85", "lone\ud800", "é" * 513, None, 7],
)
def test_keys_s3_would_refuse_or_that_hide_control_characters_are_refused(key: object) -> None:
    with pytest.raises(InvalidInput):
        check_key(key)  # type: ignore[arg-type]


def put_legacy_blob(blobs: S3BlobStore | LocalBlobStore, key: str, data: bytes) -> None:
    """Write bytes where the legacy service did: straight under `key`, not through `put`."""
    if isinstance(blobs, S3BlobStore):
        blobs.client.put_object(Bucket=blobs.bucket, Key=key, Body=data)
    else:
        path = blobs.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


@pytest.mark.parametrize("key", LEGACY_KEYS)
def test_legacy_keys_are_read_opened_signed_and_deleted(
    blobs: S3BlobStore | LocalBlobStore, key: str
) -> None:
    data = b"legacy bytes of " + key.encode()
    put_legacy_blob(blobs, key, data)
    assert blobs.get(key) == data
    with blobs.open(key) as stream:
        assert stream.read() == data
    assert blobs.presigned_url(key, expires_in=60)
    blobs.delete(key)
    with pytest.raises(NotFound):
        blobs.get(key)


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "/etc/passwd",
        "a/../../x",
        "a/./b",
        "./a",
        "a//b",
        "a/",
        "a\\..\\..\\x",
        "x" * 256 + "/a",  # longer than a file name may be
        "escape/sentinel",  # a symbolic link inside the store pointing out of it
        "escape",
    ],
)
def test_local_store_refuses_keys_that_leave_or_bend_its_folder(tmp_path: Path, key: str) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    (tmp_path / "sentinel").write_bytes(b"outside")
    (blobs.root / "escape").symlink_to(tmp_path)
    for call in (blobs.get, blobs.open, blobs.delete, blobs.presigned_url):
        with pytest.raises(InvalidInput):
            call(key)
    assert (tmp_path / "sentinel").read_bytes() == b"outside"


def test_local_store_folders_are_not_blobs(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    stored = blobs.put(3, "a.txt", b"kept")
    folder = stored.key.rsplit("/", 1)[0]
    with pytest.raises(NotFound):
        blobs.get(folder)
    with pytest.raises(NotFound):
        blobs.get(stored.key + "/below-a-file")
    blobs.delete(folder)  # nothing there to delete: no error, and the blob stays
    blobs.delete(stored.key + "/below-a-file")
    assert blobs.get(stored.key) == b"kept"


def test_put_get_open_delete_round_trip(blobs: S3BlobStore | LocalBlobStore) -> None:
    data = b"%PDF-1.4 hello\x00world"
    stored = blobs.put(3, "../a.pdf", data)
    assert stored == StoredBlob(
        key=stored.key, size=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    assert stored.key.endswith("/a.pdf") and DOCSTORE_KEY.fullmatch(stored.key)
    assert blobs.get(stored.key) == data
    with blobs.open(stored.key) as stream:
        assert stream.read(4) == b"%PDF"
    blobs.delete(stored.key)
    with pytest.raises(NotFound):
        blobs.get(stored.key)
    blobs.delete(stored.key)  # idempotent


def test_an_opened_s3_blob_iterates_in_chunks_and_tells_its_position(
    docstore_blob_store: S3BlobStore,
) -> None:
    # Behind the reader that maps its errors, iterating went line by line: one read(1) per
    # byte of a blob without newlines (2 MB took seconds), where boto3's body gives chunks.
    data = bytes(range(256)).replace(b"\n", b"") * 4096  # ~1 MB, no newline
    stored = docstore_blob_store.put(1, "a.bin", data)
    with docstore_blob_store.open(stored.key) as stream:
        first = next(iter(stream))
        assert len(first) > 1 and stream.tell() == len(first)
        rest = list(stream)
    assert first + b"".join(rest) == data
    assert len(rest) < 1000  # chunks, not bytes


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


class ShortReads(io.RawIOBase):
    """A raw stream (a socket, a pipe) answering each read with at most 1,200 bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        n = 1200 if size < 0 else min(size, 1200)
        chunk, self.data = bytes(self.data[:n]), self.data[n:]
        return chunk


@pytest.mark.parametrize("size", [24_000, 9 * 1024 * 1024 + 5])  # one PUT; parts
def test_a_stream_that_answers_short_reads_is_stored_whole(
    blobs: S3BlobStore | LocalBlobStore, size: int
) -> None:
    """Before, boto3 took the first short read for the end of the file: 2,400 of 24,000 bytes
    were stored, with the size and SHA-256 of what was."""
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    stored = blobs.put(1, "short.bin", ShortReads(data))
    assert (stored.size, stored.sha256) == (size, hashlib.sha256(data).hexdigest())
    assert blobs.get(stored.key) == data


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


class CutShortS3(http.server.BaseHTTPRequestHandler):
    """An S3 endpoint whose every object answer promises more bytes than it sends, then hangs
    up (a connection cut mid-download)."""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.send_header("Content-Type", "binary/octet-stream")
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def cut_short_s3() -> Iterator[S3BlobStore]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutShortS3)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield S3BlobStore.from_settings(
            "bucket",
            endpoint_url=f"http://127.0.0.1:{server.server_port}",
            region="us-east-1",
            access_key="a",
            secret_key="b",
            timeout=2,
        )
    finally:
        server.shutdown()
        server.server_close()


def test_a_download_cut_short_is_a_blob_store_error(cut_short_s3: S3BlobStore) -> None:
    key = make_blob_key(1, "a.txt")
    with pytest.raises(BlobStoreError, match=re.escape(key)):
        cut_short_s3.get(key)
    with cut_short_s3.open(key) as stream, pytest.raises(BlobStoreError, match=re.escape(key)):
        stream.read()


def test_a_local_store_that_cannot_write_raises_a_blob_store_error(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "blobs")
    (blobs.root / "uploads").write_bytes(b"a file where the store wants its folder")
    with pytest.raises(BlobStoreError, match="cannot be written"):
        blobs.put(1, "a.txt", b"data")


def test_a_local_write_that_cannot_be_renamed_into_place_leaves_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    key = "uploads/1/2026/12/taken/a.txt"
    monkeypatch.setattr(blobs_module, "make_blob_key", lambda user_id, filename: key)
    taken = tmp_path / key
    taken.mkdir(parents=True)  # a folder where the file should go: the rename fails
    (taken / "inside").write_bytes(b"x")
    with pytest.raises(BlobStoreError, match="cannot be written"):
        store.put(1, "a.txt", b"bytes that never land")
    assert sorted(p.name for p in taken.parent.iterdir()) == ["a.txt"]  # the folder alone


@pytest.mark.parametrize("expires_in", [None, -1, 0, "60", True, 1.5, float("nan"), 8 * 86400])
def test_a_presigned_url_takes_whole_seconds_up_to_a_week_on_both_stores(
    blobs: S3BlobStore | LocalBlobStore, expires_in: object
) -> None:
    key = blobs.put(1, "a.txt", b"x").key
    with pytest.raises(InvalidInput, match="expires_in"):
        blobs.presigned_url(key, expires_in)  # type: ignore[arg-type]
    assert blobs.presigned_url(key, 60)


def test_a_blob_key_needs_a_user_id_a_row_can_hold(blobs: S3BlobStore | LocalBlobStore) -> None:
    for user_id in (2**63, 0, True, "1"):
        with pytest.raises(InvalidInput, match="user_id"):
            blobs.put(user_id, "a.txt", b"x")  # type: ignore[arg-type]

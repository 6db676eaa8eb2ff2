"""Hostile blob filenames and keys, for the local store and S3 (hypothesis).

Property: `put` stores the bytes under a key `make_blob_key` made, whose last part is the
filename reduced to ``[A-Za-z0-9._-]`` (never a path step), and `get` returns them identical; any
other key given to `get`/`open`/`delete`/`presigned_url` raises `InvalidInput` (or `NotFound`)
and touches no file, inside the store's folder or outside it. No OSError, ValueError or botocore
error escapes.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from test_hostile_input import (
    BIG_HOSTILE,
    BIG_PLAIN,
    attempt,
    hostile_number,
    hostile_text,
    property_settings,
)

from docstore.errors import InvalidInput, NotFound
from docstore.intake.blobs import BlobStore, LocalBlobStore, S3BlobStore, check_key, safe_filename

PATH_TRICKS = (
    "..",
    ".",
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/etc/shadow",
    "a/b/../../c.pdf",
    ".hidden",
    "....",
    "~/.ssh/id_rsa",
    "\u202efdp.exe",
    "report.pdf\x00.exe",
    "CON",
    "nul:",
    "file:///etc/passwd",
    "%2e%2e%2f%2e%2e%2fetc",
    "\uff0e\uff0e\uff0fetc",  # fullwidth "../", which NFKC folds to ASCII
)
filenames = st.one_of(hostile_text, st.sampled_from(PATH_TRICKS))
VALID_KEY = "uploads/7/2024/01/" + "0" * 32 + "/a.pdf"
KEY_TRICKS = (
    VALID_KEY + "\n",
    VALID_KEY + "/..",
    VALID_KEY[: -len("a.pdf")] + "..",
    VALID_KEY[: -len("a.pdf")] + ".",
    VALID_KEY[: -len("a.pdf")] + "../../../../../sentinel",
    "uploads/7/2024/01/" + "0" * 32 + "/a.pdf\x00",
    "/" + VALID_KEY,
    "../" + VALID_KEY,
    VALID_KEY.replace("/", "\\"),
    "uploads/../../sentinel",
    "",
)
keys = st.one_of(
    hostile_text,
    st.sampled_from(KEY_TRICKS),
    hostile_number,
    st.builds(lambda piece: VALID_KEY[: -len("a.pdf")] + piece, hostile_text),
)
_SAFE_NAME = re.compile(r"[A-Za-z0-9-][A-Za-z0-9._-]{0,199}")
# The keys get/delete accept: the shape make_blob_key makes, with any name but "." and "..".
_KEY_SHAPE = re.compile(r"uploads/[0-9]+/[0-9]{4}/[0-9]{2}/[0-9a-f]{32}/[A-Za-z0-9._-]{1,200}")
_PATH_STEPS = {".", ".."}


def check_put(blobs: BlobStore, filename: Any, data: bytes, tally: Counter[str]) -> None:
    """Store, read back, delete: the key is ours and the bytes are identical."""
    stored, error = attempt(lambda: blobs.put(7, filename, data))
    if stored is None:
        tally["refused"] += 1
        assert not isinstance(filename, str), error
        return
    tally["stored"] += 1
    assert check_key(stored.key) == stored.key
    name = stored.key.rsplit("/", 1)[1]
    assert name == safe_filename(filename)
    assert _SAFE_NAME.fullmatch(name), name[:80]
    assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert blobs.get(stored.key) == data
    blobs.delete(stored.key)
    _, error = attempt(lambda: blobs.get(stored.key), NotFound)
    assert isinstance(error, NotFound)


def check_hostile_key(blobs: BlobStore, key: Any) -> None:
    """Only keys of the shape `make_blob_key` makes are accepted; the others are refused by
    every method, and a well-formed key of no blob is `NotFound`."""
    well_formed = (
        isinstance(key, str)
        and _KEY_SHAPE.fullmatch(key) is not None
        and key.rsplit("/", 1)[1] not in _PATH_STEPS
    )
    _, error = attempt(lambda: check_key(key))
    assert (error is None) == well_formed, repr(key)[:120]
    for call in (lambda: blobs.get(key), lambda: blobs.open(key).close()):
        _, error = attempt(call, InvalidInput, NotFound)
        assert isinstance(error, NotFound if well_formed else InvalidInput), repr(key)[:120]
    for call in (lambda: blobs.presigned_url(key), lambda: blobs.delete(key)):
        _, error = attempt(call, InvalidInput)
        assert (error is None) == well_formed, repr(key)[:120]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_local_blob_store_keeps_hostile_filenames_inside_its_folder(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "store" / "blobs")
    (tmp_path / "sentinel").write_bytes(b"outside")
    (tmp_path / "store" / "sentinel").write_bytes(b"next to the root")
    kept = blobs.put(7, "kept.pdf", b"kept bytes")
    before = files_under(tmp_path)
    tally: Counter[str] = Counter()

    @property_settings(75)
    @given(
        filename=st.one_of(filenames, filenames, hostile_number),
        data=st.binary(max_size=512),
        key=keys,
    )
    @example(filename=BIG_HOSTILE, data=b"x", key=BIG_PLAIN)
    @example(filename="../../sentinel", data=b"overwrite?", key=VALID_KEY + "\n")
    @example(filename=None, data=b"", key=None)
    def check(filename: Any, data: bytes, key: Any) -> None:
        check_put(blobs, filename, data, tally)
        check_hostile_key(blobs, key)
        assert files_under(tmp_path) == before

    check()
    assert blobs.get(kept.key) == b"kept bytes"
    assert tally["stored"] >= 10 and tally["refused"] >= 1, tally


def test_s3_blob_store_keeps_hostile_filenames_to_its_key_shape(
    docstore_blob_store: S3BlobStore,
) -> None:
    blobs = docstore_blob_store
    kept = blobs.put(7, "kept.pdf", b"kept bytes")
    tally: Counter[str] = Counter()

    def listing() -> list[str]:
        reply = blobs.client.list_objects_v2(Bucket=blobs.bucket)
        return sorted(item["Key"] for item in reply.get("Contents", []))

    before = listing()

    @property_settings(30)
    @given(
        filename=st.one_of(filenames, filenames, hostile_number),
        data=st.binary(max_size=256),
        key=keys,
    )
    @example(filename=BIG_HOSTILE, data=b"x", key=BIG_PLAIN)
    @example(filename="../../kept.pdf", data=b"overwrite?", key=VALID_KEY + "\n")
    def check(filename: Any, data: bytes, key: Any) -> None:
        check_put(blobs, filename, data, tally)
        check_hostile_key(blobs, key)
        assert listing() == before

    check()
    assert blobs.get(kept.key) == b"kept bytes"
    assert tally["stored"] >= 5, tally

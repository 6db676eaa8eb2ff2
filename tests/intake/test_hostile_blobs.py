"""Hostile blob filenames and keys, for the local store and S3 (hypothesis).

Property: `put` stores the bytes under a key of docstore's own shape, whose last part is the
filename reduced to ``[A-Za-z0-9._-]`` (never a path step), and `get` returns them identical.
`get`/`open`/`delete`/`presigned_url` take any key S3 takes (non-empty, at most 1024 bytes of
UTF-8, no control characters), legacy keys included: a key of no blob is `NotFound` (get, open)
or nothing to do (delete). The local store also refuses, with `InvalidInput`, keys that are
absolute, hold '.', '..', an empty step or a backslash, or lead through a symbolic link out of
its folder. Whatever the key, no file is touched, inside the store's folder or outside it. No
OSError, ValueError or botocore error escapes.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

from hostile import (
    BIG_HOSTILE,
    BIG_PLAIN,
    attempt,
    encodable,
    hostile_number,
    hostile_text,
    property_settings,
)
from hypothesis import example, given
from hypothesis import strategies as st

from docstore.errors import InvalidInput, NotFound
from docstore.intake.blobs import BlobStore, LocalBlobStore, S3BlobStore, safe_filename

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
    # A symbolic link inside the local store, pointing at the folder above it.
    "escape/sentinel",
    "escape",
    # Folders of the local store (holding the kept blob) are not blobs.
    "uploads",
    "uploads/7",
)
_PRINTABLE = st.characters(exclude_categories=("Cc", "Cs"))
LEGACY_KEYS = (
    "uploads/legacy/scan.pdf",
    "legacy/2023/07/scan-0001.txt",
    "legacy/Scans (2023)/deep/er/report final (1).pdf",
    "é" * 512,  # 1024 bytes: S3's limit
    "é" * 512 + "x",
)
keys = st.one_of(
    hostile_text,
    st.sampled_from(KEY_TRICKS),
    st.sampled_from(LEGACY_KEYS),
    hostile_number,
    st.builds(lambda piece: VALID_KEY[: -len("a.pdf")] + piece, hostile_text),
    # Folders of printable text: keys a legacy service may have written, some with empty steps.
    st.builds("/".join, st.lists(st.text(_PRINTABLE, max_size=12), min_size=1, max_size=5)),
    st.builds("/".join, st.lists(st.text(_PRINTABLE, max_size=12), min_size=1, max_size=5)),
)
_SAFE_NAME = re.compile(r"[A-Za-z0-9-][A-Za-z0-9._-]{0,199}")
# The keys put makes.
_KEY_SHAPE = re.compile(r"uploads/[0-9]+/[0-9]{4}/[0-9]{2}/[0-9a-f]{32}/[A-Za-z0-9._-]{1,200}")


def readable(key: Any, local: bool) -> bool:
    """Whether a store may read under `key`: any key S3 takes, bar control characters; for the
    local store only plain relative steps that stay inside its folder (not through 'escape')."""
    if not isinstance(key, str) or not key or not encodable(key):
        return False
    if len(key.encode("utf-8")) > 1024 or any(unicodedata.category(c) == "Cc" for c in key):
        return False
    if not local:
        return True
    steps = key.split("/")
    return (
        "\\" not in key
        and all(step not in {"", ".", ".."} and len(step.encode("utf-8")) <= 255 for step in steps)
        and steps[0] != "escape"
    )


def check_put(blobs: BlobStore, filename: Any, data: bytes, tally: Counter[str]) -> None:
    """Store, read back, delete: the key is ours and the bytes are identical."""
    stored, error = attempt(lambda: blobs.put(7, filename, data))
    if stored is None:
        tally["refused"] += 1
        assert not isinstance(filename, str), error
        return
    tally["stored"] += 1
    assert _KEY_SHAPE.fullmatch(stored.key), stored.key[:120]
    name = stored.key.rsplit("/", 1)[1]
    assert name == safe_filename(filename)
    assert _SAFE_NAME.fullmatch(name), name[:80]
    assert stored.size == len(data) and stored.sha256 == hashlib.sha256(data).hexdigest()
    assert blobs.get(stored.key) == data
    blobs.delete(stored.key)
    _, error = attempt(lambda: blobs.get(stored.key), NotFound)
    assert isinstance(error, NotFound)


def check_hostile_key(blobs: BlobStore, key: Any, tally: Counter[str]) -> None:
    """Readable keys of no blob are `NotFound` (get, open) and fine to sign and delete; the
    others are refused by every method."""
    ok = readable(key, local=isinstance(blobs, LocalBlobStore))
    tally["readable key" if ok else "refused key"] += 1
    for call in (lambda: blobs.get(key), lambda: blobs.open(key).close()):
        _, error = attempt(call, InvalidInput, NotFound)
        assert isinstance(error, NotFound if ok else InvalidInput), repr(key)[:120]
    for call in (lambda: blobs.presigned_url(key), lambda: blobs.delete(key)):
        _, error = attempt(call, InvalidInput)
        assert (error is None) == ok, repr(key)[:120]


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_local_blob_store_keeps_hostile_filenames_inside_its_folder(tmp_path: Path) -> None:
    blobs = LocalBlobStore(tmp_path / "store" / "blobs")
    (tmp_path / "sentinel").write_bytes(b"outside")
    (tmp_path / "store" / "sentinel").write_bytes(b"next to the root")
    (blobs.root / "escape").symlink_to(tmp_path / "store")
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
        check_hostile_key(blobs, key, tally)
        assert files_under(tmp_path) == before

    check()
    assert blobs.get(kept.key) == b"kept bytes"
    assert tally["stored"] >= 10 and tally["refused"] >= 1, tally
    assert tally["readable key"] >= 10 and tally["refused key"] >= 10, tally


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
        check_hostile_key(blobs, key, tally)
        assert listing() == before

    check()
    assert blobs.get(kept.key) == b"kept bytes"
    assert tally["stored"] >= 5 and tally["readable key"] >= 5 and tally["refused key"] >= 1, tally

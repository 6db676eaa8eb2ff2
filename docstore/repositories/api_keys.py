"""API keys: generated here, shown once, stored only as a SHA-256 digest.

A key looks like ``dsk_`` + 40 random base62 characters (about 238 bits) + a 6-character base62
CRC-32 of those 40. The prefix makes leaked keys easy to recognise (secret scanners); the checksum
lets `is_well_formed` refuse typos and garbage without asking the database. A plain SHA-256 is
enough for keys this random: there is nothing to brute-force, so no salt or slow hash is needed,
and the digest can be looked up through a unique index.
"""

from __future__ import annotations

import hashlib
import secrets
import zlib

API_KEY_PREFIX = "dsk_"
_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ALPHABET_SET = frozenset(_ALPHABET)
_RANDOM_LENGTH = 40
_CHECKSUM_LENGTH = 6  # 62**6 > 2**32
API_KEY_LENGTH = len(API_KEY_PREFIX) + _RANDOM_LENGTH + _CHECKSUM_LENGTH


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, remainder = divmod(number, 62)
        digits.append(_ALPHABET[remainder])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode("ascii")), _CHECKSUM_LENGTH)


def new_api_key() -> str:
    """A fresh, high-entropy API key (show it once; store only `api_key_digest`)."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_RANDOM_LENGTH))
    return f"{API_KEY_PREFIX}{body}{_checksum(body)}"


def is_well_formed(api_key: object) -> bool:
    """True when `api_key` has the prefix, the length, the alphabet and a matching checksum."""
    if not isinstance(api_key, str) or len(api_key) != API_KEY_LENGTH:
        return False
    if not api_key.startswith(API_KEY_PREFIX):
        return False
    rest = api_key[len(API_KEY_PREFIX) :]
    if not _ALPHABET_SET.issuperset(rest):
        return False
    body, checksum = rest[:_RANDOM_LENGTH], rest[_RANDOM_LENGTH:]
    return secrets.compare_digest(_checksum(body), checksum)


def api_key_digest(api_key: str) -> bytes:
    """The 32-byte SHA-256 digest stored in `users.api_key_hash`."""
    return hashlib.sha256(api_key.encode("ascii")).digest()


__all__ = ["API_KEY_LENGTH", "API_KEY_PREFIX", "api_key_digest", "is_well_formed", "new_api_key"]

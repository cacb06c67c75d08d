"""Client and device secrets: generation, scrypt hashing and constant-time verification.

Secrets are stored as scrypt hashes (N=2**14, r=8, p=1: 16 MiB, about 45 ms here) and compared in constant time.
That cost alone would cap token issuance near 40/s per core, so each process keeps a short-lived cache of
*successful* verifications, keyed by an HMAC of the presented secret under a per-process random key: a repeat
client pays one HMAC, while every wrong guess still pays the full scrypt cost.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time

SCRYPT_N = 2**14


SCRYPT_R = 8


SCRYPT_P = 1


SCRYPT_MAXMEM = 64 * 1024 * 1024


VERIFIED_CACHE_SECONDS = 300


VERIFIED_CACHE_MAX = 10_000


def generate_secret() -> str:
    """A new client or device secret: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    salt = os.urandom(16)
    digest = hashlib.scrypt(
        secret.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32
    )
    encode = lambda raw: base64.b64encode(raw).decode("ascii")  # noqa: E731
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${encode(salt)}${encode(digest)}"


class _VerifiedSecrets:
    """Process-local memory of secrets recently proven correct for a given stored hash."""

    def __init__(self) -> None:
        self._key = os.urandom(32)
        self._entries: dict[tuple[str, bytes], float] = {}
        self._lock = threading.Lock()

    def _fingerprint(self, stored_hash: str, secret: str) -> tuple[str, bytes]:
        return stored_hash, hmac.new(self._key, secret.encode("utf-8"), hashlib.sha256).digest()

    def seen(self, stored_hash: str, secret: str) -> bool:
        key = self._fingerprint(stored_hash, secret)
        with self._lock:
            expires = self._entries.get(key)
            return expires is not None and expires > time.monotonic()

    def remember(self, stored_hash: str, secret: str) -> None:
        key = self._fingerprint(stored_hash, secret)
        with self._lock:
            if len(self._entries) >= VERIFIED_CACHE_MAX:
                now = time.monotonic()
                self._entries = {k: v for k, v in self._entries.items() if v > now}
                if len(self._entries) >= VERIFIED_CACHE_MAX:
                    self._entries.clear()
            self._entries[key] = time.monotonic() + VERIFIED_CACHE_SECONDS


_verified = _VerifiedSecrets()


# (device_id, secret) pairs this process recently accepted: lets the rate limiter key a device by its id
# without a database round trip or a scrypt check before the view runs.
_recent_device_logins = _VerifiedSecrets()
# (client_id, secret) pairs the token endpoint of this process recently accepted: the same for API clients asking
# for a token, so anonymous traffic from their address cannot make them wait.
_recent_client_logins = _VerifiedSecrets()


def remember_client_login(client_id: str, secret: str) -> None:
    _recent_client_logins.remember(client_id, secret)


def client_login_seen(client_id: str, secret: str) -> bool:
    return _recent_client_logins.seen(client_id, secret)


def verify_secret(stored_hash: str | None, secret: str) -> bool:
    """Constant-time check of `secret` against a stored scrypt hash (False for malformed input)."""
    if not stored_hash:
        # Spend the same time as a real check so a missing client is not distinguishable by timing.
        hashlib.scrypt(b"x", salt=b"0" * 16, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, maxmem=SCRYPT_MAXMEM, dklen=32)
        return False
    if _verified.seen(stored_hash, secret):
        return True
    try:
        scheme, n, r, p, salt_b64, digest_b64 = stored_hash.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest_b64)
        actual = hashlib.scrypt(
            secret.encode("utf-8"), salt=base64.b64decode(salt_b64), n=int(n), r=int(r), p=int(p),
            maxmem=SCRYPT_MAXMEM, dklen=len(expected),
        )
    except (ValueError, TypeError):
        return False
    if hmac.compare_digest(actual, expected):
        _verified.remember(stored_hash, secret)
        return True
    return False

"""Password hashing (argon2id) and the symmetric keys derived from `settings.secret_key`.

argon2-cffi's defaults are RFC 9106's second recommended profile (argon2id, t=3, m=64 MiB, p=4):
about 50 ms of CPU and 64 MiB per hash. Hashing is CPU-bound, so callers on an event loop run
it in a thread (`hash_password_async`, `verify_password_async`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    """True when the hash was made with weaker parameters than today's: rehash at next login."""
    try:
        return _HASHER.check_needs_rehash(stored_hash)
    except InvalidHashError:
        return True


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _HASHER.hash(secrets.token_urlsafe(24))


def dummy_verify(password: str) -> bool:
    """Spend the time a real verification would, for a username that does not exist, so the
    answer time does not tell which usernames do. Always False."""
    verify_password(_dummy_hash(), password)
    return False


async def hash_password_async(password: str) -> str:
    return await asyncio.to_thread(hash_password, password)


async def verify_password_async(stored_hash: str | None, password: str) -> bool:
    if stored_hash is None:
        return await asyncio.to_thread(dummy_verify, password)
    return await asyncio.to_thread(verify_password, stored_hash, password)


def temporary_password() -> str:
    """A generated password for a new or reset operator: 120 random bits, URL-safe."""
    return secrets.token_urlsafe(15)


# --- keys derived from the deployment secret ---------------------------------------------


def derive_key(secret_key: str, purpose: str, length: int = 32) -> bytes:
    """A key for one purpose only (HKDF-SHA256 with the purpose as `info`), so the secret key
    is never used directly and one derived key says nothing about another."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=length, salt=b"pitboss", info=purpose.encode())
    return hkdf.derive(secret_key.encode())


def fernet_for(secret_key: str, purpose: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(derive_key(secret_key, purpose)))


def keyed_digest(key: bytes, text: str) -> str:
    """HMAC-SHA256 of `text` (hex): how high-entropy one-time codes are stored."""
    return hmac.new(key, text.encode(), hashlib.sha256).hexdigest()

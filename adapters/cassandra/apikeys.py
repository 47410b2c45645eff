"""Per-brand API keys of the casino platform. Only a SHA-256 of a key is stored."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID, uuid4

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: UUID
    brand: str
    label: str
    revoked: bool


class ApiKeyStore:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._get = session.prepare("SELECT key_id, brand, label, revoked_at FROM api_keys WHERE key_hash = ?")
        self._put = session.prepare(
            "INSERT INTO api_keys (key_hash, key_id, brand, label, created_at) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._revoke = session.prepare("UPDATE api_keys SET revoked_at = ? WHERE key_hash = ?")

    async def lookup(self, key: str) -> ApiKey | None:
        rows = await aexecute(self.session, self._get, (key_hash(key),), op="api_key_read")
        if not rows:
            return None
        r = rows[0]
        return ApiKey(r["key_id"], r["brand"], r["label"] or "", r["revoked_at"] is not None)

    async def install(self, brand: str, key: str, label: str) -> None:
        """Idempotent: an existing key (even revoked) is left as it is."""
        await aexecute(self.session, self._put, (key_hash(key), uuid4(), brand, label, datetime.now(UTC)))

    def install_blocking(self, brand: str, key: str, label: str) -> None:
        self.session.execute(self._put, (key_hash(key), uuid4(), brand, label, datetime.now(UTC)))

    async def create(self, brand: str, label: str) -> str:
        key = f"pb_{brand}_{secrets.token_urlsafe(32)}"
        await self.install(brand, key, label)
        return key

    async def revoke(self, key: str) -> None:
        await aexecute(self.session, self._revoke, (datetime.now(UTC), key_hash(key)))

"""Per-brand API keys of the casino platform. Only a SHA-256 of a key is stored.

`api_keys` (by hash) is what a request is checked against; `api_keys_by_brand` lists a
brand's keys for the admin pages. A rotated key keeps working until its `revoked_at`, so
the platform can roll the new key out before the old one stops.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute
from domain.errors import Conflict, NotFound

_SCOPE = "all"


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: UUID
    brand: str
    label: str
    revoked: bool


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    key_id: UUID
    brand: str
    label: str
    hint: str
    created_at: datetime | None
    created_by: str
    revoked_at: datetime | None

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None or self.revoked_at > now


def _is_revoked(revoked_at: datetime | None, now: datetime) -> bool:
    if revoked_at is None:
        return False
    if revoked_at.tzinfo is None:
        revoked_at = revoked_at.replace(tzinfo=UTC)
    return revoked_at <= now


class ApiKeyStore:
    def __init__(self, session: Session) -> None:
        self.session = session
        self._get = session.prepare("SELECT key_id, brand, label, revoked_at FROM api_keys WHERE key_hash = ?")
        self._put = session.prepare(
            "INSERT INTO api_keys (key_hash, key_id, brand, label, created_at) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._revoke = session.prepare("UPDATE api_keys SET revoked_at = ? WHERE key_hash = ?")
        self._put_listed = session.prepare(
            "INSERT INTO api_keys_by_brand (brand, key_id, key_hash, label, hint, created_at, created_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._put_brand = session.prepare("INSERT INTO api_key_brands (scope, brand) VALUES (?, ?)")
        self._list = session.prepare(
            "SELECT key_id, brand, key_hash, label, hint, created_at, created_by, revoked_at "
            "FROM api_keys_by_brand WHERE brand = ?"
        )
        self._one = session.prepare(
            "SELECT key_id, brand, key_hash, label, hint, created_at, created_by, revoked_at "
            "FROM api_keys_by_brand WHERE brand = ? AND key_id = ?"
        )
        self._revoke_listed = session.prepare(
            "UPDATE api_keys_by_brand SET revoked_at = ? WHERE brand = ? AND key_id = ?"
        )
        self._brands = session.prepare("SELECT brand FROM api_key_brands WHERE scope = ?")

    async def lookup(self, key: str) -> ApiKey | None:
        rows = await aexecute(self.session, self._get, (key_hash(key),), op="api_key_read")
        if not rows:
            return None
        r = rows[0]
        return ApiKey(r["key_id"], r["brand"], r["label"] or "", _is_revoked(r["revoked_at"], datetime.now(UTC)))

    async def install(self, brand: str, key: str, label: str, created_by: str = "bootstrap") -> UUID:
        """Idempotent: an existing key (even revoked) is left as it is."""
        key_id, params, listed = self._rows(brand, key, label, created_by)
        rows = await aexecute(self.session, self._put, params, op="api_key_write")
        if rows and not rows[0]["[applied]"]:
            return UUID(str(rows[0]["key_id"]))
        await aexecute(self.session, self._put_listed, listed, op="api_key_write")
        await aexecute(self.session, self._put_brand, (_SCOPE, brand), op="api_key_write")
        return key_id

    def install_blocking(self, brand: str, key: str, label: str) -> None:
        _, params, listed = self._rows(brand, key, label, "bootstrap")
        applied = self.session.execute(self._put, params).one()
        if applied is None or applied["[applied]"]:
            self.session.execute(self._put_listed, listed)
            self.session.execute(self._put_brand, (_SCOPE, brand))

    @staticmethod
    def _rows(brand: str, key: str, label: str, created_by: str) -> tuple[UUID, tuple[object, ...], tuple[object, ...]]:
        key_id, now, digest = uuid4(), datetime.now(UTC), key_hash(key)
        return (
            key_id,
            (digest, key_id, brand, label, now),
            (brand, key_id, digest, label, f"…{key[-4:]}", now, created_by),
        )

    async def create(self, brand: str, label: str, created_by: str = "") -> tuple[UUID, str]:
        key = f"pb_{brand}_{secrets.token_urlsafe(32)}"
        return await self.install(brand, key, label, created_by), key

    async def revoke(self, key: str) -> None:
        await aexecute(self.session, self._revoke, (datetime.now(UTC), key_hash(key)))

    async def get(self, brand: str, key_id: UUID) -> ApiKeyInfo:
        rows = await aexecute(self.session, self._one, (brand, key_id), op="api_key_read")
        if not rows:
            raise NotFound("unknown API key", field="key_id")
        return self._info(rows[0])

    async def brands(self) -> list[str]:
        rows = await aexecute(self.session, self._brands, (_SCOPE,), op="api_key_read")
        return [r["brand"] for r in rows]

    async def list(self, brand: str) -> list[ApiKeyInfo]:
        rows = await aexecute(self.session, self._list, (brand,), op="api_key_read")
        return sorted((self._info(r) for r in rows), key=lambda k: k.created_at or datetime.min, reverse=True)

    async def revoke_id(self, brand: str, key_id: UUID, at: datetime | None = None) -> tuple[ApiKeyInfo, ApiKeyInfo]:
        """Revoke at `at` (now by default); returns the key before and after."""
        before = await self.get(brand, key_id)
        now = datetime.now(UTC)
        if before.revoked_at is not None and before.revoked_at.replace(tzinfo=UTC) <= now:
            raise Conflict("the API key is already revoked", field="key_id")
        when = at or now
        rows = await aexecute(self.session, self._one, (brand, key_id), op="api_key_read")
        digest = rows[0]["key_hash"]
        await aexecute(self.session, self._revoke, (when, digest), op="api_key_write")
        await aexecute(self.session, self._revoke_listed, (when, brand, key_id), op="api_key_write")
        return before, await self.get(brand, key_id)

    async def rotate(
        self, brand: str, key_id: UUID, grace: timedelta, created_by: str
    ) -> tuple[ApiKeyInfo, ApiKeyInfo, str]:
        """A new key with the same label; the old one stops after `grace`. Returns (old, new, new key)."""
        old = await self.get(brand, key_id)
        new_id, key = await self.create(brand, old.label, created_by)
        _, old_after = await self.revoke_id(brand, key_id, datetime.now(UTC) + grace)
        return old_after, await self.get(brand, new_id), key

    @staticmethod
    def _info(r: dict[str, object]) -> ApiKeyInfo:
        revoked = r["revoked_at"]
        created = r["created_at"]
        return ApiKeyInfo(
            key_id=r["key_id"],  # type: ignore[arg-type]
            brand=str(r["brand"]),
            label=str(r["label"] or ""),
            hint=str(r["hint"] or ""),
            created_at=created.replace(tzinfo=UTC) if isinstance(created, datetime) else None,
            created_by=str(r["created_by"] or ""),
            revoked_at=revoked.replace(tzinfo=UTC) if isinstance(revoked, datetime) else None,
        )

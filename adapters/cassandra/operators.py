"""Operators in Cassandra: `operators`, `operator_usernames`, `operators_by_name`, `operator_sso_links`.

Unique claims (usernames, SSO subjects) and one-time uses (TOTP steps, recovery codes) are
lightweight transactions at the configured serial consistency (SERIAL: unique across regions).
Everything else is a plain LOCAL_QUORUM write. Secrets arrive here already hashed or encrypted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import builtins
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from cassandra import ConsistencyLevel
from cassandra.cluster import Session

from adapters.cassandra.session import aexecute, utc
from domain.errors import Conflict, InvalidInput
from schemas.operators import OperatorCreate, OperatorUpdate

LIST_LIMIT_MAX = 200
_BUCKET = 0
# A username claim whose operator row never appeared (the creating process died in between)
# may be taken over after this long; a live create finishes in well under a second.
ORPHAN_CLAIM_AGE = timedelta(seconds=60)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    operator_id: UUID
    username: str
    display_name: str
    email: str | None
    roles: list[str]
    brands: list[str]
    jurisdictions: list[str]
    disabled: bool
    password_hash: str | None
    must_change_password: bool
    totp_secret: bytes | None  # Fernet token
    totp_step: int | None
    mfa_enrolled: bool
    recovery_salt: bytes | None
    recovery_codes: frozenset[str] = field(default_factory=frozenset)  # keyed digests of unused codes
    sso_provider: str | None = None
    sso_subject: str | None = None
    created_at: datetime = _EPOCH
    updated_at: datetime = _EPOCH
    last_login_at: datetime | None = None
    password_changed_at: datetime | None = None


def _record(r: dict[str, Any]) -> OperatorRecord:
    return OperatorRecord(
        operator_id=r["operator_id"],
        username=r["username"] or "",
        display_name=r["display_name"] or "",
        email=r["email"],
        roles=list(r["roles"] or []),
        brands=list(r["brands"] or []),
        jurisdictions=list(r["jurisdictions"] or []),
        disabled=bool(r["disabled"]),
        password_hash=r["password_hash"],
        must_change_password=bool(r["must_change_password"]),
        totp_secret=r["totp_secret"],
        totp_step=r["totp_step"],
        mfa_enrolled=bool(r["mfa_enrolled"]),
        recovery_salt=r["recovery_salt"],
        recovery_codes=frozenset(r["recovery_codes"] or ()),
        sso_provider=r["sso_provider"],
        sso_subject=r["sso_subject"],
        created_at=utc(r["created_at"]) or _EPOCH,
        updated_at=utc(r["updated_at"]) or _EPOCH,
        last_login_at=utc(r["last_login_at"]),
        password_changed_at=utc(r["password_changed_at"]),
    )


def encode_cursor(username: str) -> str:
    return base64.urlsafe_b64encode(username.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> str:
    try:
        return base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("malformed cursor", field="cursor") from None


_COLUMNS = (
    "operator_id, username, display_name, email, roles, brands, jurisdictions, disabled, password_hash, "
    "must_change_password, password_changed_at, totp_secret, totp_step, mfa_enrolled, recovery_salt, "
    "recovery_codes, sso_provider, sso_subject, created_at, updated_at, last_login_at"
)


class OperatorStore:
    def __init__(self, session: Session, serial: str = "SERIAL") -> None:
        self.session = session
        serial_cl = ConsistencyLevel.SERIAL if serial.upper() == "SERIAL" else ConsistencyLevel.LOCAL_SERIAL
        p = session.prepare
        self._get = p(f"SELECT {_COLUMNS} FROM operators WHERE operator_id = ?")
        self._insert = p(
            "INSERT INTO operators (operator_id, username, display_name, email, roles, brands, jurisdictions, "
            "disabled, password_hash, must_change_password, password_changed_at, mfa_enrolled, sso_provider, "
            "sso_subject, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, false, ?, ?, ?, false, ?, ?, ?, ?) "
            "IF NOT EXISTS"
        )
        self._claim = p(
            "INSERT INTO operator_usernames (username, operator_id, claimed_at) VALUES (?, ?, ?) IF NOT EXISTS"
        )
        self._take_claim = p(
            "UPDATE operator_usernames SET operator_id = ?, claimed_at = ? WHERE username = ? IF operator_id = ?"
        )
        self._by_username = p("SELECT operator_id, claimed_at FROM operator_usernames WHERE username = ?")
        self._list_add = p("INSERT INTO operators_by_name (bucket, username, operator_id) VALUES (?, ?, ?)")
        self._list = p("SELECT username, operator_id FROM operators_by_name WHERE bucket = ? AND username > ? LIMIT ?")
        self._update = p(
            "UPDATE operators SET display_name = ?, email = ?, roles = ?, brands = ?, jurisdictions = ?, "
            "updated_at = ? WHERE operator_id = ?"
        )
        self._disable = p("UPDATE operators SET disabled = ?, updated_at = ? WHERE operator_id = ?")
        self._password = p(
            "UPDATE operators SET password_hash = ?, must_change_password = ?, password_changed_at = ?, "
            "updated_at = ? WHERE operator_id = ?"
        )
        self._rehash = p("UPDATE operators SET password_hash = ? WHERE operator_id = ?")
        self._totp = p(
            "UPDATE operators SET totp_secret = ?, totp_step = ?, mfa_enrolled = ?, recovery_salt = ?, "
            "recovery_codes = ?, updated_at = ? WHERE operator_id = ?"
        )
        self._reset = p(
            "UPDATE operators SET password_hash = ?, must_change_password = true, password_changed_at = ?, "
            "totp_secret = null, totp_step = null, mfa_enrolled = false, recovery_salt = null, "
            "recovery_codes = null, updated_at = ? WHERE operator_id = ?"
        )
        self._step = p("UPDATE operators SET totp_step = ? WHERE operator_id = ? IF totp_step = ?")
        self._consume = p("DELETE recovery_codes[?] FROM operators WHERE operator_id = ? IF recovery_codes[?] = true")
        self._last_login = p("UPDATE operators SET last_login_at = ? WHERE operator_id = ?")
        self._sso_find = p("SELECT operator_id FROM operator_sso_links WHERE provider = ? AND subject = ?")
        self._sso_link = p(
            "INSERT INTO operator_sso_links (provider, subject, operator_id, linked_at) VALUES (?, ?, ?, ?) "
            "IF NOT EXISTS"
        )
        for stmt in (self._insert, self._claim, self._take_claim, self._step, self._consume, self._sso_link):
            stmt.serial_consistency_level = serial_cl

    # --- reads ---------------------------------------------------------------------------

    async def get(self, operator_id: UUID) -> OperatorRecord | None:
        rows = await aexecute(self.session, self._get, (operator_id,), op="operator_read")
        if not rows or rows[0]["username"] is None:
            return None
        return _record(rows[0])

    async def get_by_username(self, username: str) -> OperatorRecord | None:
        rows = await aexecute(self.session, self._by_username, (username,), op="operator_username_read")
        if not rows:
            return None
        return await self.get(rows[0]["operator_id"])

    async def list(self, cursor: str | None, limit: int) -> tuple[list[OperatorRecord], str | None]:
        """Operators in username order; `cursor` is the opaque value returned with the previous page."""
        limit = max(1, min(limit, LIST_LIMIT_MAX))
        after = decode_cursor(cursor) if cursor else ""
        rows = await aexecute(self.session, self._list, (_BUCKET, after, limit + 1), op="operator_list")
        page = rows[:limit]
        found = await asyncio.gather(*(self.get(r["operator_id"]) for r in page))
        records = [rec for rec in found if rec is not None]
        more = len(rows) > limit
        return records, (encode_cursor(page[-1]["username"]) if more and page else None)

    # --- creation ------------------------------------------------------------------------

    async def create(
        self,
        data: OperatorCreate,
        *,
        password_hash: str | None,
        must_change_password: bool,
        now: datetime,
        operator_id: UUID | None = None,
        sso: tuple[str, str] | None = None,
    ) -> OperatorRecord:
        """Claim the username, then write the operator. Idempotent for a given `operator_id`
        (a retry, or two replicas bootstrapping the same admin, get the same operator)."""
        oid = operator_id or uuid4()
        await self._claim_username(data.username, oid, now)
        provider, subject = sso if sso is not None else (None, None)
        rows = await aexecute(
            self.session,
            self._insert,
            (
                oid,
                data.username,
                data.display_name,
                data.email,
                data.roles,
                data.brands,
                data.jurisdictions,
                password_hash,
                must_change_password,
                now if password_hash else None,
                provider,
                subject,
                now,
                now,
            ),
            op="operator_create",
        )
        await aexecute(self.session, self._list_add, (_BUCKET, data.username, oid), op="operator_create")
        if rows and not rows[0]["[applied]"]:
            existing = await self.get(oid)
            if existing is not None:
                return existing
        return OperatorRecord(
            operator_id=oid,
            username=data.username,
            display_name=data.display_name,
            email=data.email,
            roles=list(data.roles),
            brands=list(data.brands),
            jurisdictions=list(data.jurisdictions),
            disabled=False,
            password_hash=password_hash,
            must_change_password=must_change_password,
            totp_secret=None,
            totp_step=None,
            mfa_enrolled=False,
            recovery_salt=None,
            sso_provider=provider,
            sso_subject=subject,
            created_at=now,
            updated_at=now,
            password_changed_at=now if password_hash else None,
        )

    async def _claim_username(self, username: str, oid: UUID, now: datetime) -> None:
        rows = await aexecute(self.session, self._claim, (username, oid, now), op="operator_claim")
        if rows[0]["[applied]"]:
            return
        holder: UUID = rows[0]["operator_id"]
        if holder == oid:
            return
        claimed_at = utc(rows[0].get("claimed_at")) or now
        if now - claimed_at >= ORPHAN_CLAIM_AGE and await self.get(holder) is None:
            taken = await aexecute(self.session, self._take_claim, (oid, now, username, holder), op="operator_claim")
            if taken[0]["[applied]"]:
                return
        raise Conflict(f"username {username!r} is taken", field="username")

    # --- updates -------------------------------------------------------------------------

    async def update(
        self, operator_id: UUID, data: OperatorUpdate, now: datetime
    ) -> tuple[OperatorRecord, OperatorRecord] | None:
        before = await self.get(operator_id)
        if before is None:
            return None
        changes = data.model_dump(exclude_unset=True)
        after = replace(before, **changes, updated_at=now)
        await aexecute(
            self.session,
            self._update,
            (after.display_name, after.email, after.roles, after.brands, after.jurisdictions, now, operator_id),
            op="operator_update",
        )
        return before, after

    async def set_disabled(
        self, operator_id: UUID, disabled: bool, now: datetime
    ) -> tuple[OperatorRecord, OperatorRecord] | None:
        before = await self.get(operator_id)
        if before is None:
            return None
        await aexecute(self.session, self._disable, (disabled, now, operator_id), op="operator_update")
        return before, replace(before, disabled=disabled, updated_at=now)

    async def set_password(self, operator_id: UUID, password_hash: str, must_change: bool, now: datetime) -> None:
        await aexecute(
            self.session, self._password, (password_hash, must_change, now, now, operator_id), op="operator_update"
        )

    async def rehash_password(self, operator_id: UUID, password_hash: str) -> None:
        """Same password, stronger parameters: not a password change (no timestamps move)."""
        await aexecute(self.session, self._rehash, (password_hash, operator_id), op="operator_update")

    async def set_totp(
        self,
        operator_id: UUID,
        secret: bytes,
        step: int,
        recovery_salt: bytes,
        recovery_hashes: builtins.list[str],
        now: datetime,
    ) -> None:
        """Enrol a second factor: the encrypted secret, the step its confirmation code used
        (so that code cannot be replayed), and fresh recovery codes replacing any earlier ones."""
        codes = {h: True for h in recovery_hashes}
        await aexecute(
            self.session,
            self._totp,
            (secret, step, True, recovery_salt, codes, now, operator_id),
            op="operator_update",
        )

    async def reset(self, operator_id: UUID, password_hash: str, now: datetime) -> None:
        """Temporary password, second factor and recovery codes cleared (re-enrol at next login)."""
        await aexecute(self.session, self._reset, (password_hash, now, now, operator_id), op="operator_update")

    async def advance_totp_step(self, operator_id: UUID, old: int | None, new: int) -> bool:
        """Record `new` as the last accepted step if it still is `old`: False means another
        request accepted a code in between (a replay or a race), and this one must be refused."""
        rows = await aexecute(self.session, self._step, (new, operator_id, old), op="operator_totp_step")
        return bool(rows and rows[0]["[applied]"])

    async def consume_recovery_code(self, operator_id: UUID, code_hash: str) -> bool:
        """Remove one unused recovery code; True for exactly one of any concurrent uses."""
        rows = await aexecute(
            self.session, self._consume, (code_hash, operator_id, code_hash), op="operator_recovery_code"
        )
        return bool(rows and rows[0]["[applied]"])

    async def set_last_login(self, operator_id: UUID, now: datetime) -> None:
        await aexecute(self.session, self._last_login, (now, operator_id), op="operator_update")

    # --- single sign-on ------------------------------------------------------------------

    async def find_sso(self, provider: str, subject: str) -> UUID | None:
        rows = await aexecute(self.session, self._sso_find, (provider, subject), op="operator_sso_read")
        return rows[0]["operator_id"] if rows else None

    async def link_sso(self, provider: str, subject: str, operator_id: UUID, now: datetime) -> UUID:
        """Link (provider, subject) to `operator_id` unless it is linked already; returns the
        operator it is linked to (the earlier one if two first logins raced)."""
        rows = await aexecute(
            self.session, self._sso_link, (provider, subject, operator_id, now), op="operator_sso_link"
        )
        if rows[0]["[applied]"]:
            return operator_id
        linked: UUID = rows[0]["operator_id"]
        return linked

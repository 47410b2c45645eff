"""Operator identity for the back office: sign-in with password and a mandatory second factor
(TOTP, recovery codes), lockout, sessions, operator administration and SSO provisioning.

The HTTP routes call `IdentityService`; it owns no HTTP concepts (cookies, forms). A sign-in
goes through stages kept in the session:

    password ok, no TOTP yet  -> "enrol"  (begin_enrolment / confirm_enrolment -> "full")
    password ok, TOTP enrolled -> "mfa"   (verify_code -> "full")
    SSO                        -> "full"  (the identity provider did the second factor)

The session id changes at every stage change (session fixation), and only a "full" session is
a signed-in operator.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import NAMESPACE_URL, UUID, uuid4, uuid5

import pyotp
import qrcode
import qrcode.image.svg
import redis.asyncio as aioredis
from cassandra.cluster import Session
from cryptography.fernet import Fernet, InvalidToken
from pydantic import ValidationError

from adapters.cassandra.operators import LIST_LIMIT_MAX, OperatorRecord, OperatorStore
from adapters.passwords import (
    fernet_for,
    hash_password_async,
    keyed_digest,
    needs_rehash,
    temporary_password,
    verify_password_async,
)
from adapters.redis_sessions import SessionData, SessionStore, sid_hash
from adapters.settings import Settings
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, RateLimited, Unauthorized
from domain.identity import (
    PASSWORD_MAX,
    check_password,
    check_totp,
    is_totp_code,
    is_trusted_proxy,
    lockout_state,
    new_recovery_codes,
    normalize_recovery_code,
    password_problem,
    retry_after_seconds,
)
from schemas.operators import OperatorCreate, OperatorPublic, OperatorUpdate, SessionPublic

Stage = Literal["mfa", "enrol", "full"]
TOTP_ISSUER = "Pitboss"
# One office behind one address has many operators: an IP is locked after this many times the
# per-username failures.
IP_FAILURE_FACTOR = 4
WRONG_CREDENTIALS = "wrong username or password"


@dataclass(frozen=True)
class SessionInfo:
    sid: str
    csrf: str
    operator: OperatorPublic
    stage: Stage
    handle: str
    expires_at: datetime


@dataclass(frozen=True)
class Enrolment:
    secret: str  # base32, for typing into an authenticator by hand
    otpauth_uri: str
    qr_svg: str  # inline <svg> of the otpauth URI


def public(rec: OperatorRecord) -> OperatorPublic:
    return OperatorPublic(
        operator_id=rec.operator_id,
        username=rec.username,
        display_name=rec.display_name,
        email=rec.email,
        roles=list(rec.roles),
        brands=list(rec.brands),
        jurisdictions=list(rec.jurisdictions),
        disabled=rec.disabled,
        mfa_enrolled=rec.mfa_enrolled,
        sso_provider=rec.sso_provider,
        must_change_password=rec.must_change_password,
        created_at=rec.created_at,
        updated_at=rec.updated_at,
        last_login_at=rec.last_login_at,
    )


def qr_svg(text: str) -> str:
    image = qrcode.make(text, image_factory=qrcode.image.svg.SvgPathImage, border=2)
    svg: str = image.to_string(encoding="unicode")
    return svg


def _sso_username_base(email: str | None, name: str | None) -> str:
    source = (email or "").partition("@")[0] or (name or "")
    base = re.sub(r"[^a-z0-9._-]+", "-", source.lower()).strip("-.")[:48]
    if len(base) >= 3:
        return base
    return f"sso-{base}" if base else "sso"


class IdentityService:
    def __init__(
        self,
        settings: Settings,
        session: Session,
        redis: aioredis.Redis,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.settings = settings
        self.proxies = settings.trusted_networks()
        self.operators = OperatorStore(session, settings.lease_serial_consistency)
        self.sessions = SessionStore(
            redis,
            settings.session_idle_seconds,
            settings.session_absolute_seconds,
            settings.login_failure_window_seconds,
            settings.login_lock_seconds,
        )
        self._totp_box = fernet_for(settings.secret_key, "pitboss/operators/totp-secret/v1")
        self._pending_box = fernet_for(settings.secret_key, "pitboss/sessions/pending-totp/v1")
        self._clock = clock or (lambda: datetime.now(UTC))

    def _now(self) -> datetime:
        return self._clock()

    # --- bootstrap -----------------------------------------------------------------------

    async def bootstrap_admin(self) -> None:
        username, _, password = self.settings.bootstrap_admin.partition(":")
        username = username.strip().lower()
        if not username or not password:
            return
        if await self.operators.get_by_username(username) is not None:
            return
        data = OperatorCreate(
            username=username, display_name="Administrator", roles=["admin"], brands=["*"], jurisdictions=["*"]
        )
        # A fixed id per username: replicas bootstrapping at once create one operator, not a conflict.
        oid = uuid5(NAMESPACE_URL, f"pitboss:bootstrap-admin:{username}")
        await self.operators.create(
            data,
            password_hash=await hash_password_async(password),
            must_change_password=False,
            now=self._now(),
            operator_id=oid,
        )

    # --- lockout -------------------------------------------------------------------------

    def _subjects(self, username: str, ip: str | None) -> list[tuple[str, str, int]]:
        subjects = [("user", username, self.settings.login_max_failures)]
        if ip and not is_trusted_proxy(ip, self.proxies):
            subjects.append(("ip", ip, self.settings.login_max_failures * IP_FAILURE_FACTOR))
        return subjects

    async def _attempt(self, username: str, ip: str | None) -> list[tuple[str, str, str]]:
        """Count this attempt as a failure before checking it, then check the lock against the
        failures recorded so far (this one excepted): concurrent guesses see each other, so a burst
        cannot slip more than `login_max_failures` attempts past the lock. Returns the entries to
        `_forgive` when the attempt succeeds; refused (locked) attempts are not counted."""
        subjects = self._subjects(username, ip)
        now = self._now()
        members = await asyncio.gather(*(self.sessions.record_failure(scope, key, now) for scope, key, _ in subjects))
        tokens = [(scope, key, member) for (scope, key, _), member in zip(subjects, members, strict=True)]
        found = await asyncio.gather(
            *(self.sessions.failures(scope, key, now, exclude=member) for scope, key, member in tokens)
        )
        checked_at = self._now()
        window = timedelta(seconds=self.settings.login_failure_window_seconds)
        lock = timedelta(seconds=self.settings.login_lock_seconds)
        latest: datetime | None = None
        for (_, _, limit), failures in zip(subjects, found, strict=True):
            until = lockout_state(failures, checked_at, limit, window, lock)
            if until is not None and (latest is None or until > latest):
                latest = until
        if latest is not None:
            await self._forgive(tokens)
            raise RateLimited(
                "too many failed attempts; try again later",
                extra={"retry_after": retry_after_seconds(latest, checked_at)},
            )
        return tokens

    async def _forgive(self, tokens: list[tuple[str, str, str]]) -> None:
        await asyncio.gather(*(self.sessions.forget_failure(scope, key, member) for scope, key, member in tokens))

    # --- sessions ------------------------------------------------------------------------

    async def _info(self, sid: str, csrf: str, rec: OperatorRecord) -> SessionInfo:
        data = await self.sessions.get(sid, self._now())
        if data is None:
            raise Unauthorized("the session has ended; sign in again")
        return SessionInfo(sid, csrf, public(rec), data.stage, data.handle, data.expires_at)

    async def _open(self, rec: OperatorRecord, stage: Stage, ip: str | None, user_agent: str | None) -> SessionInfo:
        sid, csrf = await self.sessions.create(rec.operator_id, stage, ip, user_agent, self._now())
        return await self._info(sid, csrf, rec)

    async def _signed_in(self, rec: OperatorRecord, now: datetime) -> OperatorRecord:
        """Bookkeeping of a completed sign-in: last login, and the username's failures forgiven
        (only now, not after the password alone, or password + wrong codes could go on forever)."""
        await asyncio.gather(
            self.operators.set_last_login(rec.operator_id, now),
            self.sessions.clear_failures("user", rec.username),
        )
        return replace(rec, last_login_at=now)

    async def _pending(self, sid: str, stages: tuple[Stage, ...]) -> tuple[SessionData, OperatorRecord]:
        data = await self.sessions.get(sid, self._now())
        if data is None or data.stage not in stages:
            raise Unauthorized("no sign-in in progress; sign in again")
        rec = await self.operators.get(data.operator_id)
        if rec is None or rec.disabled:
            await self.sessions.revoke(sid)
            if rec is None:
                raise Unauthorized("no sign-in in progress; sign in again")
            raise Forbidden("this operator is disabled")
        return data, rec

    async def login_password(self, username: str, password: str, ip: str | None, user_agent: str | None) -> SessionInfo:
        name = username.strip().lower()
        attempt = await self._attempt(name, ip)
        rec = await self.operators.get_by_username(name) if 0 < len(name) <= 64 else None
        stored = rec.password_hash if rec is not None else None
        ok = await verify_password_async(stored, password[: PASSWORD_MAX + 1])
        if not ok or rec is None or stored is None or len(password) > PASSWORD_MAX:
            raise Unauthorized(WRONG_CREDENTIALS)
        await self._forgive(attempt)
        if rec.disabled:
            raise Forbidden("this operator is disabled")
        if needs_rehash(stored):
            await self.operators.rehash_password(rec.operator_id, await hash_password_async(password))
        return await self._open(rec, "mfa" if rec.mfa_enrolled else "enrol", ip, user_agent)

    async def verify_code(self, sid: str, code: str, ip: str | None) -> SessionInfo:
        _, rec = await self._pending(sid, ("mfa",))
        attempt = await self._attempt(rec.username, ip)
        now = self._now()
        typed = "".join(code.split())
        if is_totp_code(typed):
            await self._accept_totp(rec, typed, now)
        else:
            normalized = normalize_recovery_code(typed)
            used = False
            if normalized is not None and rec.recovery_salt is not None:
                digest = keyed_digest(rec.recovery_salt, normalized)
                used = await self.operators.consume_recovery_code(rec.operator_id, digest)
            if not used:
                raise Unauthorized("wrong code")
        await self._forgive(attempt)
        rotated = await self.sessions.upgrade(sid, "full", now)
        if rotated is None:
            raise Unauthorized("the sign-in has expired; sign in again")
        rec = await self._signed_in(rec, now)
        return await self._info(*rotated, rec)

    async def _accept_totp(self, rec: OperatorRecord, code: str, now: datetime) -> None:
        secret = self._decrypt(self._totp_box, rec.totp_secret) if rec.mfa_enrolled else None
        if secret is None:
            raise Unauthorized("wrong code")
        check = check_totp(code, now, rec.totp_step, pyotp.TOTP(secret).generate_otp)
        if check.outcome == "accepted" and check.step is not None:
            # Redis first (cheap, stops concurrent twins), then Cassandra (durable, survives a Redis restart).
            if await self.sessions.claim_totp_step(rec.operator_id, check.step) and (
                await self.operators.advance_totp_step(rec.operator_id, rec.totp_step, check.step)
            ):
                return
            check = replace(check, outcome="replay")
        raise Unauthorized("code already used" if check.outcome == "replay" else "wrong code")

    @staticmethod
    def _decrypt(box: Fernet, token: bytes | str | None) -> str | None:
        if token is None:
            return None
        try:
            return box.decrypt(token).decode()
        except InvalidToken:
            return None  # encrypted under another secret key: the operator must be reset

    async def begin_enrolment(self, sid: str) -> Enrolment:
        _, rec = await self._pending(sid, ("enrol", "full"))
        secret = pyotp.random_base32(32)
        pending = self._pending_box.encrypt(secret.encode()).decode()
        if not await self.sessions.set_pending_totp(sid, pending):
            raise Unauthorized("the session has ended; sign in again")
        uri = pyotp.TOTP(secret).provisioning_uri(name=rec.username, issuer_name=TOTP_ISSUER)
        return Enrolment(secret=secret, otpauth_uri=uri, qr_svg=qr_svg(uri))

    async def confirm_enrolment(self, sid: str, code: str) -> tuple[SessionInfo, list[str]]:
        now = self._now()
        data, rec = await self._pending(sid, ("enrol", "full"))
        secret = self._decrypt(self._pending_box, data.pending_totp)
        if secret is None:
            raise Conflict("no enrolment in progress; start it again")
        attempt = await self._attempt(rec.username, data.ip)
        check = check_totp(code, now, None, pyotp.TOTP(secret).generate_otp)
        if check.outcome != "accepted" or check.step is None:
            raise Unauthorized("wrong code")
        await self._forgive(attempt)
        codes = new_recovery_codes()
        salt = secrets.token_bytes(16)
        await self.operators.set_totp(
            rec.operator_id,
            self._totp_box.encrypt(secret.encode()),
            check.step,
            salt,
            [keyed_digest(salt, c) for c in codes],
            now,
        )
        await self.sessions.claim_totp_step(rec.operator_id, check.step)
        rotated = await self.sessions.upgrade(sid, "full", now)
        if rotated is None:
            raise Unauthorized("the session has ended; sign in again")
        rec = replace(rec, mfa_enrolled=True, totp_step=check.step, updated_at=now)
        if data.stage == "full":
            # A new second factor: sessions opened with the old one end (except this one).
            await self.sessions.revoke_all(rec.operator_id, except_sid=rotated[0])
        else:
            rec = await self._signed_in(rec, now)
        return await self._info(*rotated, rec), codes

    async def session(self, sid: str) -> SessionInfo | None:
        now = self._now()
        data = await self.sessions.get(sid, now)
        if data is None:
            return None
        rec = await self.operators.get(data.operator_id)
        if rec is None or rec.disabled:
            await self.sessions.revoke(sid)
            return None
        await self.sessions.refresh(data, now)
        return SessionInfo(sid, data.csrf, public(rec), data.stage, data.handle, data.expires_at)

    @staticmethod
    def csrf_ok(info: SessionInfo, token: str | None) -> bool:
        """The form's or header's CSRF token matches the session's (constant-time)."""
        return SessionStore.csrf_ok_token(info.csrf, token)

    async def logout(self, sid: str) -> None:
        await self.sessions.revoke(sid)

    async def sessions_of(self, operator_id: UUID, current_sid: str | None) -> list[SessionPublic]:
        current = sid_hash(current_sid) if current_sid else None
        return [
            SessionPublic(
                handle=d.handle,
                created_at=d.created_at,
                last_seen_at=d.last_seen_at,
                expires_at=d.expires_at,
                ip=d.ip,
                user_agent=d.user_agent,
                stage=d.stage,
                current=d.key == current,
            )
            for d in await self.sessions.list(operator_id, self._now())
        ]

    async def end_session(self, operator_id: UUID, handle: str) -> None:
        if not await self.sessions.revoke_handle(operator_id, handle):
            raise NotFound("no such session")

    # --- administration ------------------------------------------------------------------

    async def _get(self, operator_id: UUID) -> OperatorRecord:
        rec = await self.operators.get(operator_id)
        if rec is None:
            raise NotFound("no such operator")
        return rec

    @staticmethod
    def _temporary(username: str) -> str:
        while True:
            password = temporary_password()
            if password_problem(password, username) is None:
                return password

    async def create_operator(self, data: OperatorCreate) -> tuple[OperatorPublic, str]:
        """A new operator with a generated temporary password (shown once to the admin; the
        operator should change it, see `must_change_password`) and no second factor yet."""
        password = self._temporary(data.username)
        rec = await self.operators.create(
            data, password_hash=await hash_password_async(password), must_change_password=True, now=self._now()
        )
        return public(rec), password

    async def get_operator(self, operator_id: UUID) -> OperatorPublic:
        return public(await self._get(operator_id))

    async def list_operators(self, cursor: str | None, limit: int) -> tuple[list[OperatorPublic], str | None]:
        if limit < 1:
            raise InvalidInput("limit must be at least 1", field="limit")
        records, next_cursor = await self.operators.list(cursor, min(limit, LIST_LIMIT_MAX))
        return [public(r) for r in records], next_cursor

    async def update_operator(self, operator_id: UUID, data: OperatorUpdate) -> tuple[OperatorPublic, OperatorPublic]:
        changed = await self.operators.update(operator_id, data, self._now())
        if changed is None:
            raise NotFound("no such operator")
        return public(changed[0]), public(changed[1])

    async def set_disabled(self, operator_id: UUID, disabled: bool) -> tuple[OperatorPublic, OperatorPublic]:
        changed = await self.operators.set_disabled(operator_id, disabled, self._now())
        if changed is None:
            raise NotFound("no such operator")
        if disabled:
            await self.sessions.revoke_all(operator_id)
        return public(changed[0]), public(changed[1])

    async def reset_operator(self, operator_id: UUID) -> tuple[OperatorPublic, str]:
        """New temporary password; second factor and recovery codes cleared (the operator enrols
        again at next sign-in); every session ended; the username's lockout lifted."""
        rec = await self._get(operator_id)
        now = self._now()
        password = self._temporary(rec.username)
        await self.operators.reset(operator_id, await hash_password_async(password), now)
        await asyncio.gather(self.sessions.revoke_all(operator_id), self.sessions.clear_failures("user", rec.username))
        return public(await self._get(operator_id)), password

    async def change_password(self, sid: str, old: str, new: str) -> None:
        now = self._now()
        data, rec = await self._pending(sid, ("full",))
        attempt = await self._attempt(rec.username, data.ip)
        if not await verify_password_async(rec.password_hash, old[: PASSWORD_MAX + 1]):
            raise Unauthorized("wrong password")
        await self._forgive(attempt)
        check_password(new, rec.username, field="new_password")
        if new == old:
            raise InvalidInput("the new password must differ from the old one", field="new_password")
        await self.operators.set_password(rec.operator_id, await hash_password_async(new), False, now)
        # Whoever knew the old password is signed out everywhere but here.
        await self.sessions.revoke_all(rec.operator_id, except_sid=sid)

    # --- single sign-on ------------------------------------------------------------------

    async def sso_login(
        self,
        provider: str,
        subject: str,
        email: str | None,
        name: str | None,
        roles: list[str],
        brands: list[str],
        jurisdictions: list[str],
        ip: str | None,
        user_agent: str | None,
    ) -> SessionInfo:
        """Sign in an operator authenticated by an OpenID Connect provider. The first sign-in
        provisions an operator linked to (provider, subject) - never to an existing local account
        with the same name or email, which would let the provider take it over. Roles and scopes
        come from the provider at every sign-in."""
        if not roles:
            raise Forbidden("the identity provider grants this account no Pitboss role")
        now = self._now()
        oid = await self.operators.find_sso(provider, subject)
        if oid is None:
            oid = await self.operators.link_sso(provider, subject, uuid4(), now)
        rec = await self.operators.get(oid)
        try:
            if rec is None:
                rec = await self._provision(oid, provider, subject, email, name, roles, brands, jurisdictions, now)
            else:
                rec = await self._refresh(rec, email, name, roles, brands, jurisdictions, now)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InvalidInput(f"the identity provider sent an unusable {where}: {err['msg']}", field=where) from None
        if rec.disabled:
            raise Forbidden("this operator is disabled")
        rec = await self._signed_in(rec, now)
        return await self._open(rec, "full", ip, user_agent)

    async def _provision(
        self,
        oid: UUID,
        provider: str,
        subject: str,
        email: str | None,
        name: str | None,
        roles: list[str],
        brands: list[str],
        jurisdictions: list[str],
        now: datetime,
    ) -> OperatorRecord:
        base = _sso_username_base(email, name)
        tag = hashlib.sha256(f"{provider}\0{subject}".encode()).hexdigest()
        # Deterministic candidates, so two racing first sign-ins pick the same username.
        for username in (base, f"{base}-{tag[:6]}", f"sso-{tag[:20]}"):
            data = OperatorCreate(
                username=username,
                display_name=(name or email or username)[:128],
                email=email,
                roles=roles,
                brands=brands,
                jurisdictions=jurisdictions,
            )
            try:
                return await self.operators.create(
                    data,
                    password_hash=None,
                    must_change_password=False,
                    now=now,
                    operator_id=oid,
                    sso=(provider, subject),
                )
            except Conflict:
                continue
        raise Conflict("no free username for this single sign-on account", field="username")

    async def _refresh(
        self,
        rec: OperatorRecord,
        email: str | None,
        name: str | None,
        roles: list[str],
        brands: list[str],
        jurisdictions: list[str],
        now: datetime,
    ) -> OperatorRecord:
        wanted = OperatorUpdate(roles=roles, brands=brands, jurisdictions=jurisdictions)
        fields = wanted.model_dump(exclude_unset=True)
        if email is not None:
            fields["email"] = email
        if name:
            fields["display_name"] = name[:128]
        update = OperatorUpdate.model_validate(fields)
        current = {k: getattr(rec, k) for k in update.model_fields_set}
        if current == update.model_dump(exclude_unset=True):
            return rec
        changed = await self.operators.update(rec.operator_id, update, now)
        return changed[1] if changed is not None else rec

"""Back-office sessions, login attempt counters and the fast TOTP replay guard, in Redis.

Keys (the client may or may not decode responses; both work):
    sess:<sha256(sid)>         hash: one session. TTL = the idle timeout, refreshed on use and
                               never beyond the absolute end (`expires_at`, also checked on read)
    opsess:<operator_id>       set of the operator's session hashes (cleaned of ended ones when listed)
    loginfail:<scope>:<key>    sorted set of failure times (sliding window), scope "user" or "ip"
    totpstep:<operator_id>:<step>  SET NX: a TOTP step claimed once per operator

The session id (sid) is the cookie value, 256 random bits; Redis only holds its SHA-256, so a dump
of Redis cannot be replayed as cookies. The `handle` is a separate random name for a session,
safe to show and to put in forms ("end this session").
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast
from uuid import UUID

import redis.asyncio as aioredis
from redis.typing import EncodableT, FieldT

Stage = Literal["mfa", "enrol", "full"]

SESSION_PREFIX = "sess:"
OPERATOR_PREFIX = "opsess:"
FAIL_PREFIX = "loginfail:"
STEP_PREFIX = "totpstep:"
# A login that stopped at the second factor or at enrolment ends sooner than a full session.
PENDING_STAGE_SECONDS = 10 * 60
# Beyond this many failures in a window, older ones are dropped: bounded memory under attack.
FAILURES_KEPT = 200
# A claimed TOTP step is remembered for longer than the ±1-step acceptance window (90 s).
STEP_CLAIM_SECONDS = 150

# Rotate a session id atomically: the old key disappears and the new one appears with the same
# fields and TTL, or nothing happens (the old one had ended).
_ROTATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], 'stage', ARGV[1], 'csrf', ARGV[2], 'expires_at', ARGV[3], 'last_seen_at', ARGV[4])
redis.call('HDEL', KEYS[2], 'pending_totp')
redis.call('PEXPIRE', KEYS[2], ARGV[5])
redis.call('SREM', KEYS[3], ARGV[6])
redis.call('SADD', KEYS[3], ARGV[7])
redis.call('PEXPIRE', KEYS[3], ARGV[8])
return 1
"""


def sid_hash(sid: str) -> str:
    return hashlib.sha256(sid.encode()).hexdigest()


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ts(value: datetime) -> str:
    return f"{value.timestamp():.6f}"


def _dt(value: str) -> datetime:
    return datetime.fromtimestamp(float(value), UTC)


@dataclass(frozen=True, slots=True)
class SessionData:
    key: str  # sha256 of the sid
    handle: str
    operator_id: UUID
    stage: Stage
    csrf: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    pending_totp: str | None  # encrypted TOTP secret awaiting confirmation (enrolment)


def _session(key: str, raw: dict[Any, Any]) -> SessionData | None:
    h = {_s(k): _s(v) for k, v in raw.items()}
    try:
        stage = h["stage"]
        if stage not in ("mfa", "enrol", "full"):
            return None
        return SessionData(
            key=key,
            handle=h["handle"],
            operator_id=UUID(h["operator_id"]),
            stage=cast(Stage, stage),
            csrf=h["csrf"],
            created_at=_dt(h["created_at"]),
            last_seen_at=_dt(h["last_seen_at"]),
            expires_at=_dt(h["expires_at"]),
            ip=h.get("ip") or None,
            user_agent=h.get("user_agent") or None,
            pending_totp=h.get("pending_totp") or None,
        )
    except (KeyError, ValueError):
        return None  # a half-written or foreign hash is no session


class SessionStore:
    def __init__(
        self,
        redis: aioredis.Redis,
        idle_seconds: int,
        absolute_seconds: int,
        failure_window_seconds: int = 15 * 60,
        lock_seconds: int = 15 * 60,
    ) -> None:
        self.redis = redis
        self.idle = idle_seconds
        self.absolute = absolute_seconds
        self.failure_window = failure_window_seconds
        self.lock = lock_seconds
        self._rotate = redis.register_script(_ROTATE)

    # --- sessions ------------------------------------------------------------------------

    def _lifetime(self, stage: Stage) -> int:
        return self.absolute if stage == "full" else min(self.absolute, PENDING_STAGE_SECONDS)

    def _ttl_ms(self, expires_at: datetime, now: datetime) -> int:
        remaining = (expires_at - now).total_seconds()
        return max(1, int(min(self.idle, remaining) * 1000))

    async def create(
        self,
        operator_id: UUID,
        stage: Stage,
        ip: str | None,
        user_agent: str | None,
        now: datetime | None = None,
    ) -> tuple[str, str]:
        """A new session; returns (sid, csrf_token). Only the sid's hash is stored."""
        now = now or datetime.now(UTC)
        sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        key = sid_hash(sid)
        expires_at = now + timedelta(seconds=self._lifetime(stage))
        fields: dict[FieldT, EncodableT] = {
            "handle": secrets.token_urlsafe(12),
            "operator_id": str(operator_id),
            "stage": stage,
            "csrf": csrf,
            "created_at": _ts(now),
            "last_seen_at": _ts(now),
            "expires_at": _ts(expires_at),
            "ip": (ip or "")[:64],
            "user_agent": (user_agent or "")[:512],
        }
        index = OPERATOR_PREFIX + str(operator_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(SESSION_PREFIX + key, mapping=fields)
            pipe.pexpire(SESSION_PREFIX + key, self._ttl_ms(expires_at, now))
            pipe.sadd(index, key)
            # No session outlives `absolute` from its creation or upgrade: nor does the index then.
            pipe.expire(index, self.absolute)
            await pipe.execute()
        return sid, csrf

    async def _get_key(self, key: str, now: datetime) -> SessionData | None:
        raw = await self.redis.hgetall(SESSION_PREFIX + key)
        if not raw:
            return None
        data = _session(key, raw)
        if data is None or data.expires_at <= now:
            await self._drop(key, data.operator_id if data else None)
            return None
        return data

    async def get(self, sid: str, now: datetime | None = None) -> SessionData | None:
        """The session of a cookie value, or None (unknown, ended, past its absolute end)."""
        if not sid or len(sid) > 128:
            return None
        return await self._get_key(sid_hash(sid), now or datetime.now(UTC))

    async def touch(self, sid: str, now: datetime | None = None) -> None:
        """Mark the session used: its idle timeout starts again (never past its absolute end)."""
        now = now or datetime.now(UTC)
        data = await self.get(sid, now)
        if data is not None:
            await self.refresh(data, now)

    async def refresh(self, data: SessionData, now: datetime | None = None) -> None:
        """`touch` for a session just read with `get` (saves reading it again)."""
        now = now or datetime.now(UTC)
        name = SESSION_PREFIX + data.key
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(name, "last_seen_at", _ts(now))
            pipe.pexpire(name, self._ttl_ms(data.expires_at, now))
            results = await pipe.execute()
        if results and results[0] == 1:
            # hset created the key anew: the session ended between the read and the write.
            await self.redis.delete(name)

    async def set_pending_totp(self, sid: str, encrypted_secret: str | None) -> bool:
        data = await self.get(sid)
        if data is None:
            return False
        name = SESSION_PREFIX + data.key
        if encrypted_secret is None:
            await self.redis.hdel(name, "pending_totp")
        else:
            # HSET with XX semantics: only if the session still exists.
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.exists(name)
                pipe.hset(name, "pending_totp", encrypted_secret)
                exists, _ = await pipe.execute()
            if not exists:
                await self.redis.delete(name)
                return False
        return True

    async def upgrade(self, sid: str, stage: Stage, now: datetime | None = None) -> tuple[str, str] | None:
        """Move the session to `stage` under a new sid (and CSRF token); the old sid stops working.
        Rotating on every privilege change defeats session fixation. None if the session ended."""
        now = now or datetime.now(UTC)
        data = await self.get(sid, now)
        if data is None:
            return None
        new_sid = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        new_key = sid_hash(new_sid)
        # On a stage change, the absolute timeout runs again from now (from the full sign-in).
        expires_at = data.expires_at if stage == data.stage else now + timedelta(seconds=self._lifetime(stage))
        index = OPERATOR_PREFIX + str(data.operator_id)
        done = await self._rotate(
            keys=[SESSION_PREFIX + data.key, SESSION_PREFIX + new_key, index],
            args=[
                stage,
                csrf,
                _ts(expires_at),
                _ts(now),
                self._ttl_ms(expires_at, now),
                data.key,
                new_key,
                self.absolute * 1000,
            ],
        )
        return (new_sid, csrf) if int(done) == 1 else None

    async def _drop(self, key: str, operator_id: UUID | None) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(SESSION_PREFIX + key)
            if operator_id is not None:
                pipe.srem(OPERATOR_PREFIX + str(operator_id), key)
            await pipe.execute()

    async def revoke(self, sid: str) -> None:
        key = sid_hash(sid)
        raw = await self.redis.hget(SESSION_PREFIX + key, "operator_id")
        await self._drop(key, UUID(_s(raw)) if raw else None)

    async def revoke_handle(self, operator_id: UUID, handle: str) -> bool:
        """End the operator's session named `handle`; False if they have no such session."""
        for data in await self.list(operator_id):
            if hmac.compare_digest(data.handle, handle):
                await self._drop(data.key, operator_id)
                return True
        return False

    async def revoke_all(self, operator_id: UUID, except_sid: str | None = None) -> int:
        """End every session of the operator (but `except_sid`); returns how many."""
        index = OPERATOR_PREFIX + str(operator_id)
        keep = sid_hash(except_sid) if except_sid else None
        keys = [_s(k) for k in await self.redis.smembers(index)]
        doomed = [k for k in keys if k != keep]
        if not doomed:
            return 0
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(SESSION_PREFIX + k for k in doomed))
            pipe.srem(index, *doomed)
            deleted, _ = await pipe.execute()
        return int(deleted)

    async def list(self, operator_id: UUID, now: datetime | None = None) -> builtins.list[SessionData]:
        """The operator's live sessions, newest first; ended ones are removed from the index."""
        now = now or datetime.now(UTC)
        index = OPERATOR_PREFIX + str(operator_id)
        keys = [_s(k) for k in await self.redis.smembers(index)]
        if not keys:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for k in keys:
                pipe.hgetall(SESSION_PREFIX + k)
            raws = await pipe.execute()
        live: builtins.list[SessionData] = []
        gone: builtins.list[str] = []
        for k, raw in zip(keys, raws, strict=True):
            data = _session(k, raw) if raw else None
            if data is None or data.expires_at <= now or data.operator_id != operator_id:
                gone.append(k)
            else:
                live.append(data)
        if gone:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.srem(index, *gone)
                for k in gone:
                    # Only those past their absolute end still exist; the rest are already gone.
                    pipe.delete(SESSION_PREFIX + k)
                await pipe.execute()
        live.sort(key=lambda d: d.created_at, reverse=True)
        return live

    @staticmethod
    def csrf_ok_token(expected: str, token: str | None) -> bool:
        return bool(token) and bool(expected) and hmac.compare_digest(expected.encode(), (token or "").encode())

    @classmethod
    def csrf_ok(cls, data: SessionData, token: str | None) -> bool:
        return cls.csrf_ok_token(data.csrf, token)

    async def check_csrf(self, sid: str, token: str | None) -> bool:
        data = await self.get(sid)
        return data is not None and self.csrf_ok(data, token)

    # --- login attempts ------------------------------------------------------------------

    @staticmethod
    def _fail_key(scope: str, subject: str) -> str:
        # Hashed: bounded key length, and no usernames in clear in Redis.
        return f"{FAIL_PREFIX}{scope}:{hashlib.sha256(subject.encode()).hexdigest()[:32]}"

    async def record_failure(self, scope: str, subject: str, now: datetime | None = None) -> str:
        """Count a failure (sliding window); returns its id, for `forget_failure`."""
        now = now or datetime.now(UTC)
        key = self._fail_key(scope, subject)
        stamp = now.timestamp()
        member = f"{stamp:.6f}:{secrets.token_hex(6)}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {member: stamp})
            pipe.zremrangebyscore(key, "-inf", stamp - self.failure_window)
            pipe.zremrangebyrank(key, 0, -FAILURES_KEPT - 1)
            pipe.expire(key, self.failure_window + self.lock)
            await pipe.execute()
        return member

    async def forget_failure(self, scope: str, subject: str, member: str) -> None:
        await self.redis.zrem(self._fail_key(scope, subject), member)

    async def failures(
        self, scope: str, subject: str, now: datetime | None = None, exclude: str | None = None
    ) -> builtins.list[datetime]:
        """Failure times within the window (sliding), oldest first; `exclude` names one to leave out."""
        now = now or datetime.now(UTC)
        stamp = now.timestamp()
        raw = cast(
            builtins.list[tuple[Any, float]],
            await self.redis.zrangebyscore(
                self._fail_key(scope, subject), stamp - self.failure_window, "+inf", withscores=True
            ),
        )
        return [datetime.fromtimestamp(float(score), UTC) for member, score in raw if _s(member) != exclude]

    async def clear_failures(self, scope: str, subject: str) -> None:
        await self.redis.delete(self._fail_key(scope, subject))

    # --- TOTP replay guard ---------------------------------------------------------------

    async def claim_totp_step(self, operator_id: UUID, step: int) -> bool:
        """True the first time a step is claimed for the operator; the durable guard is the
        conditional update of `operators.totp_step` in Cassandra."""
        ok = await self.redis.set(
            f"{STEP_PREFIX}{operator_id}:{step}", str(int(time.time())), nx=True, ex=STEP_CLAIM_SECONDS
        )
        return bool(ok)

"""Operator identity against the real Cassandra (both datacenters) and Redis of the local stack.

Needs only Cassandra and Redis (not Serve): the migrations are applied here, idempotently.
Every test uses its own usernames and client address, so tests share nothing but the tables.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
import redis.asyncio as aioredis
from cassandra.cluster import Session

from adapters.cassandra.migrate import CQL_DIR, migrate, statements
from adapters.cassandra.session import connect
from adapters.redis_sessions import SESSION_PREFIX, sid_hash
from adapters.settings import Settings
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, RateLimited, Unauthorized
from domain.identity import totp_step
from schemas.operators import OperatorCreate, OperatorUpdate
from serve_apps.backoffice.identity import IdentityService, SessionInfo

pytestmark = pytest.mark.stack


class Clock:
    """Real time plus an offset the test moves forward (TOTP steps, absolute timeouts)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    from cluster.local.stack import local_env

    env = local_env(two_dc=True)
    settings = Settings(
        cassandra_contact_points=env["PITBOSS_CASSANDRA_CONTACT_POINTS"],
        cassandra_local_dc=env["PITBOSS_CASSANDRA_LOCAL_DC"],
        cassandra_replication=env.get("PITBOSS_CASSANDRA_REPLICATION", Settings().cassandra_replication),
        redis_url=env["PITBOSS_REDIS_URL"],
    )
    try:
        migrate(settings)
    except Exception:
        # Another migration (not ours) may be half-written by a colleague; ours is idempotent.
        cluster, session = connect(settings, settings.cassandra_keyspace)
        try:
            for stmt in statements((CQL_DIR / "003_operators.cql").read_text()):
                session.execute(stmt)
        finally:
            cluster.shutdown()
    return settings


@pytest.fixture(scope="session")
def cassandra(base_settings: Settings) -> Iterator[Session]:
    cluster, session = connect(base_settings, base_settings.cassandra_keyspace)
    yield session
    cluster.shutdown()


@pytest.fixture
async def redis(base_settings: Settings) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.from_url(base_settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ip() -> str:
    return f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}"


def service(
    settings: Settings, cassandra: Session, redis: aioredis.Redis, clock: Clock, **changes: Any
) -> IdentityService:
    # model_copy skips validation: lets tests use timeouts below the production minimums.
    return IdentityService(settings.model_copy(update=changes), cassandra, redis, clock=clock)


@pytest.fixture
def svc(base_settings: Settings, cassandra: Session, redis: aioredis.Redis, clock: Clock) -> IdentityService:
    return service(base_settings, cassandra, redis, clock)


def unique(prefix: str = "op") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def new_operator(svc: IdentityService, **extra: Any) -> tuple[str, str, uuid.UUID]:
    username = unique()
    body = {"username": username, "display_name": "Test Operator", "roles": ["support"], "brands": ["demo"]}
    op, password = await svc.create_operator(OperatorCreate.model_validate({**body, **extra}))
    return username, password, op.operator_id


async def enrolled_operator(svc: IdentityService, clock: Clock, ip: str) -> tuple[str, str, pyotp.TOTP, list[str]]:
    username, password, _ = await new_operator(svc)
    info = await svc.login_password(username, password, ip, "pytest")
    assert info.stage == "enrol"
    enrolment = await svc.begin_enrolment(info.sid)
    totp = pyotp.TOTP(enrolment.secret)
    full, codes = await svc.confirm_enrolment(info.sid, totp.at(clock()))
    assert full.stage == "full" and full.operator.mfa_enrolled
    await svc.logout(full.sid)
    clock.advance(30)  # the next sign-in uses a later TOTP step than the confirmation did
    return username, password, totp, codes


async def full_session(svc: IdentityService, clock: Clock, ip: str) -> tuple[SessionInfo, str, str, pyotp.TOTP]:
    username, password, totp, _ = await enrolled_operator(svc, clock, ip)
    pending = await svc.login_password(username, password, ip, "pytest")
    full = await svc.verify_code(pending.sid, totp.at(clock()), ip)
    clock.advance(30)
    return full, username, password, totp


def wrong_code(totp: pyotp.TOTP, now: datetime) -> str:
    genuine = {totp.generate_otp(s) for s in range(totp_step(now) - 1, totp_step(now) + 2)}
    return next(c for c in (f"{i:06d}" for i in range(1000)) if c not in genuine)


# --- passwords and lockout ---------------------------------------------------------------


async def test_wrong_password_and_unknown_user_get_the_same_error(svc: IdentityService, ip: str) -> None:
    username, _, _ = await new_operator(svc)
    with pytest.raises(Unauthorized) as wrong:
        await svc.login_password(username, "not the password at all", ip, None)
    with pytest.raises(Unauthorized) as unknown:
        await svc.login_password(unique("ghost"), "not the password at all", ip, None)
    assert wrong.value.detail == unknown.value.detail == "wrong username or password"


async def test_lockout_after_max_failures_then_lifted_after_the_lock(
    base_settings: Settings, cassandra: Session, redis: aioredis.Redis, clock: Clock, ip: str
) -> None:
    svc = service(
        base_settings,
        cassandra,
        redis,
        clock,
        login_max_failures=3,
        login_failure_window_seconds=60,
        login_lock_seconds=5,
    )
    username, password, _ = await new_operator(svc)
    for _ in range(3):
        with pytest.raises(Unauthorized):
            await svc.login_password(username, "wrong password!!", ip, None)
    with pytest.raises(RateLimited) as locked:
        await svc.login_password(username, password, ip, None)  # even the right password waits
    assert 1 <= locked.value.extra["retry_after"] <= 5
    clock.advance(5)
    info = await svc.login_password(username, password, ip, None)
    assert info.stage == "enrol"


async def test_a_burst_of_concurrent_guesses_gets_no_more_than_the_allowed_failures(
    base_settings: Settings, cassandra: Session, redis: aioredis.Redis, clock: Clock, ip: str
) -> None:
    svc = service(base_settings, cassandra, redis, clock, login_max_failures=3, login_lock_seconds=60)
    username, _, _ = await new_operator(svc)
    results = await asyncio.gather(
        *(svc.login_password(username, f"guess number {i:04d}", ip, None) for i in range(12)),
        return_exceptions=True,
    )
    checked = [r for r in results if isinstance(r, Unauthorized)]
    assert len(checked) <= 3  # each attempt sees the others; those over the limit are never checked
    assert all(isinstance(r, (Unauthorized, RateLimited)) for r in results)


async def test_an_address_is_locked_after_failures_across_usernames(
    base_settings: Settings, cassandra: Session, redis: aioredis.Redis, clock: Clock, ip: str
) -> None:
    svc = service(base_settings, cassandra, redis, clock, login_max_failures=1, login_lock_seconds=60)
    for _ in range(4):  # IP_FAILURE_FACTOR x login_max_failures, each on a fresh username
        with pytest.raises(Unauthorized):
            await svc.login_password(unique("spray"), "some password here", ip, None)
    with pytest.raises(RateLimited):
        await svc.login_password(unique("spray"), "some password here", ip, None)
    username, password, _ = await new_operator(svc)
    assert (await svc.login_password(username, password, "192.0.2.1", None)).stage == "enrol"


async def test_disabled_operator_is_refused_only_after_a_correct_password(svc: IdentityService, ip: str) -> None:
    username, password, oid = await new_operator(svc)
    await svc.set_disabled(oid, True)
    with pytest.raises(Unauthorized):
        await svc.login_password(username, "wrong password!!", ip, None)
    with pytest.raises(Forbidden):
        await svc.login_password(username, password, ip, None)


# --- second factor -----------------------------------------------------------------------


async def test_enrolment_then_sign_in_with_totp(svc: IdentityService, clock: Clock, ip: str) -> None:
    username, password, _ = await new_operator(svc)
    info = await svc.login_password(username, password, ip, "pytest")
    assert info.stage == "enrol"
    with pytest.raises(Unauthorized):
        await svc.verify_code(info.sid, "123456", ip)  # no second factor to verify yet
    enrolment = await svc.begin_enrolment(info.sid)
    assert enrolment.qr_svg.startswith("<svg") and enrolment.secret in enrolment.otpauth_uri
    assert enrolment.otpauth_uri.startswith("otpauth://totp/Pitboss:")
    totp = pyotp.TOTP(enrolment.secret)
    with pytest.raises(Unauthorized):
        await svc.confirm_enrolment(info.sid, wrong_code(totp, clock()))
    full, codes = await svc.confirm_enrolment(info.sid, totp.at(clock()))
    assert full.stage == "full" and full.sid != info.sid and len(codes) == 10
    assert full.operator.mfa_enrolled and full.operator.last_login_at is not None

    clock.advance(30)
    pending = await svc.login_password(username, password, ip, "pytest")
    assert pending.stage == "mfa"
    assert (await svc.session(pending.sid)) is not None  # exists, but not signed in: stage "mfa"
    signed_in = await svc.verify_code(pending.sid, totp.at(clock()), ip)
    assert signed_in.stage == "full"
    current = await svc.session(signed_in.sid)
    assert current is not None and current.stage == "full" and current.operator.username == username


async def test_a_totp_code_is_accepted_once(svc: IdentityService, clock: Clock, ip: str) -> None:
    username, password, totp, _ = await enrolled_operator(svc, clock, ip)
    code = totp.at(clock())
    first = await svc.login_password(username, password, ip, None)
    await svc.verify_code(first.sid, code, ip)
    second = await svc.login_password(username, password, ip, None)
    with pytest.raises(Unauthorized) as replay:
        await svc.verify_code(second.sid, code, ip)
    assert replay.value.detail == "code already used"


async def test_the_totp_replay_guard_survives_losing_redis(
    svc: IdentityService, redis: aioredis.Redis, clock: Clock, ip: str
) -> None:
    username, password, totp, _ = await enrolled_operator(svc, clock, ip)
    code = totp.at(clock())
    first = await svc.login_password(username, password, ip, None)
    full = await svc.verify_code(first.sid, code, ip)
    async for key in redis.scan_iter(match=f"totpstep:{full.operator.operator_id}:*"):
        await redis.delete(key)  # as if Redis had restarted empty
    second = await svc.login_password(username, password, ip, None)
    with pytest.raises(Unauthorized, match="code already used"):
        await svc.verify_code(second.sid, code, ip)


async def test_a_wrong_code_is_refused_and_counts_toward_the_lockout(
    base_settings: Settings, cassandra: Session, redis: aioredis.Redis, clock: Clock, ip: str
) -> None:
    svc = service(base_settings, cassandra, redis, clock, login_max_failures=2, login_lock_seconds=60)
    username, password, totp, _ = await enrolled_operator(svc, clock, ip)
    pending = await svc.login_password(username, password, ip, None)
    for _ in range(2):
        with pytest.raises(Unauthorized, match="wrong code"):
            await svc.verify_code(pending.sid, wrong_code(totp, clock()), ip)
    with pytest.raises(RateLimited):
        await svc.verify_code(pending.sid, totp.at(clock()), ip)


async def test_a_recovery_code_works_once(svc: IdentityService, clock: Clock, ip: str) -> None:
    username, password, _, codes = await enrolled_operator(svc, clock, ip)
    first = await svc.login_password(username, password, ip, None)
    full = await svc.verify_code(first.sid, codes[0].upper().replace("-", " "), ip)
    assert full.stage == "full"
    second = await svc.login_password(username, password, ip, None)
    with pytest.raises(Unauthorized):
        await svc.verify_code(second.sid, codes[0], ip)
    assert (await svc.verify_code(second.sid, codes[1], ip)).stage == "full"


async def test_two_concurrent_uses_of_a_recovery_code_admit_one(svc: IdentityService, clock: Clock, ip: str) -> None:
    username, password, _, codes = await enrolled_operator(svc, clock, ip)
    a = await svc.login_password(username, password, ip, None)
    b = await svc.login_password(username, password, ip, None)
    results = await asyncio.gather(
        svc.verify_code(a.sid, codes[2], ip), svc.verify_code(b.sid, codes[2], ip), return_exceptions=True
    )
    assert sorted(type(r).__name__ for r in results) == ["SessionInfo", "Unauthorized"]


# --- sessions ----------------------------------------------------------------------------


async def test_the_session_id_changes_after_the_second_factor(svc: IdentityService, clock: Clock, ip: str) -> None:
    username, password, totp, _ = await enrolled_operator(svc, clock, ip)
    pending = await svc.login_password(username, password, ip, None)
    full = await svc.verify_code(pending.sid, totp.at(clock()), ip)
    assert full.sid != pending.sid and full.csrf != pending.csrf
    assert await svc.session(pending.sid) is None  # a planted (fixated) id is worth nothing
    assert await svc.session(full.sid) is not None
    assert svc.csrf_ok(full, full.csrf) and await svc.sessions.check_csrf(full.sid, full.csrf)
    assert not svc.csrf_ok(full, pending.csrf) and not svc.csrf_ok(full, None) and not svc.csrf_ok(full, "")


async def test_secrets_are_not_stored_in_clear(svc: IdentityService, cassandra: Session, clock: Clock, ip: str) -> None:
    username, password, _ = await new_operator(svc)
    info = await svc.login_password(username, password, ip, None)
    enrolment = await svc.begin_enrolment(info.sid)
    _, codes = await svc.confirm_enrolment(info.sid, pyotp.TOTP(enrolment.secret).at(clock()))
    row = cassandra.execute(
        "SELECT password_hash, totp_secret, recovery_codes FROM operators WHERE operator_id = %s",
        (info.operator.operator_id,),
    ).one()
    assert row["password_hash"].startswith("$argon2id$") and password not in row["password_hash"]
    assert enrolment.secret.encode() not in row["totp_secret"]
    assert len(row["recovery_codes"]) == 10 and not set(codes) & set(row["recovery_codes"])


async def test_a_forged_or_empty_session_id_is_no_session(svc: IdentityService) -> None:
    assert await svc.session("forged-" + uuid.uuid4().hex) is None
    assert await svc.session("") is None
    assert await svc.session("x" * 10_000) is None


async def test_only_a_hash_of_the_session_id_is_in_redis(
    svc: IdentityService, redis: aioredis.Redis, clock: Clock, ip: str
) -> None:
    full, *_ = await full_session(svc, clock, ip)
    assert await redis.exists(SESSION_PREFIX + sid_hash(full.sid)) == 1
    assert await redis.exists(SESSION_PREFIX + full.sid) == 0


async def test_an_idle_session_ends(
    base_settings: Settings, cassandra: Session, redis: aioredis.Redis, clock: Clock, ip: str
) -> None:
    svc = service(base_settings, cassandra, redis, clock, session_idle_seconds=2)
    username, password, _ = await new_operator(svc)
    info = await svc.login_password(username, password, ip, None)
    await asyncio.sleep(1.2)
    assert await svc.session(info.sid) is not None  # used: the idle timeout starts again
    await asyncio.sleep(1.2)
    assert await svc.session(info.sid) is not None
    await asyncio.sleep(2.5)
    assert await svc.session(info.sid) is None


async def test_a_session_ends_at_its_absolute_timeout_even_when_used(
    base_settings: Settings, cassandra: Session, redis: aioredis.Redis, clock: Clock, ip: str
) -> None:
    svc = service(base_settings, cassandra, redis, clock, session_absolute_seconds=600)
    full, *_ = await full_session(svc, clock, ip)
    assert full.expires_at <= clock() + timedelta(seconds=600)
    clock.advance(300)
    assert await svc.session(full.sid) is not None
    clock.advance(301)
    assert await svc.session(full.sid) is None


async def test_disabling_an_operator_ends_all_their_sessions(svc: IdentityService, clock: Clock, ip: str) -> None:
    full, username, password, _ = await full_session(svc, clock, ip)
    other = await svc.login_password(username, password, ip, None)
    oid = full.operator.operator_id
    assert len(await svc.sessions_of(oid, full.sid)) == 2
    before, after = await svc.set_disabled(oid, True)
    assert not before.disabled and after.disabled
    assert await svc.session(full.sid) is None and await svc.session(other.sid) is None
    assert await svc.sessions_of(oid, None) == []
    await svc.set_disabled(oid, False)
    assert (await svc.login_password(username, password, ip, None)).stage == "mfa"


async def test_sessions_are_listed_and_ended_by_handle(svc: IdentityService, clock: Clock, ip: str) -> None:
    full, username, password, _ = await full_session(svc, clock, ip)
    other = await svc.login_password(username, password, ip, "other browser")
    oid = full.operator.operator_id
    listed = await svc.sessions_of(oid, full.sid)
    assert {s.handle for s in listed} == {full.handle, other.handle}
    assert [s.current for s in listed if s.handle == full.handle] == [True]
    assert [s.user_agent for s in listed if s.handle == other.handle] == ["other browser"]
    _, _, stranger = await new_operator(svc)
    with pytest.raises(NotFound):
        await svc.end_session(stranger, other.handle)
    await svc.end_session(oid, other.handle)
    assert await svc.session(other.sid) is None
    assert [s.handle for s in await svc.sessions_of(oid, full.sid)] == [full.handle]
    await svc.logout(full.sid)
    assert await svc.session(full.sid) is None


async def test_reset_clears_the_second_factor_and_ends_sessions(svc: IdentityService, clock: Clock, ip: str) -> None:
    full, username, password, _ = await full_session(svc, clock, ip)
    op, temporary = await svc.reset_operator(full.operator.operator_id)
    assert not op.mfa_enrolled and op.must_change_password
    assert await svc.session(full.sid) is None
    with pytest.raises(Unauthorized):
        await svc.login_password(username, password, ip, None)
    assert (await svc.login_password(username, temporary, ip, None)).stage == "enrol"


async def test_change_password(svc: IdentityService, clock: Clock, ip: str) -> None:
    full, username, password, _ = await full_session(svc, clock, ip)
    other = await svc.login_password(username, password, ip, None)
    with pytest.raises(Unauthorized):
        await svc.change_password(full.sid, "not my password", "a brand new passphrase")
    with pytest.raises(InvalidInput) as weak:
        await svc.change_password(full.sid, password, f"{username}-and-more")
    assert weak.value.field == "new_password"
    await svc.change_password(full.sid, password, "a brand new passphrase")
    assert await svc.session(full.sid) is not None and await svc.session(other.sid) is None
    assert (await svc.login_password(username, "a brand new passphrase", ip, None)).stage == "mfa"
    assert not (await svc.get_operator(full.operator.operator_id)).must_change_password


# --- administration ----------------------------------------------------------------------


async def test_a_duplicate_username_is_a_conflict(svc: IdentityService) -> None:
    username, _, _ = await new_operator(svc)
    with pytest.raises(Conflict) as err:
        await new_operator(svc, username=username)
    assert err.value.field == "username"


async def test_update_returns_before_and_after(svc: IdentityService) -> None:
    _, _, oid = await new_operator(svc)
    before, after = await svc.update_operator(
        oid, OperatorUpdate(roles=["support", "compliance"], jurisdictions=["MT"])
    )
    assert before.roles == ["support"] and after.roles == ["support", "compliance"] and after.jurisdictions == ["MT"]
    assert (await svc.get_operator(oid)).roles == ["support", "compliance"]
    with pytest.raises(NotFound):
        await svc.update_operator(uuid.uuid4(), OperatorUpdate(display_name="x"))
    with pytest.raises(NotFound):
        await svc.get_operator(uuid.uuid4())


async def test_operators_are_listed_by_username_with_a_cursor(svc: IdentityService) -> None:
    mine = {(await new_operator(svc))[0] for _ in range(3)}
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10_000):
        page, cursor = await svc.list_operators(cursor, 200)
        seen += [op.username for op in page]
        if cursor is None:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) and mine <= set(seen)
    page, cursor = await svc.list_operators(None, 2)
    assert len(page) == 2 and cursor is not None
    following, _ = await svc.list_operators(cursor, 2)
    assert following[0].username > page[1].username


async def test_bootstrap_admin_is_created_once(
    base_settings: Settings, cassandra: Session, redis: aioredis.Redis, clock: Clock, ip: str
) -> None:
    name = unique("admin")
    svc = service(base_settings, cassandra, redis, clock, bootstrap_admin=f"{name}:a local test password")
    await asyncio.gather(svc.bootstrap_admin(), svc.bootstrap_admin())
    await svc.bootstrap_admin()
    info = await svc.login_password(name, "a local test password", ip, None)
    assert info.stage == "enrol"
    assert info.operator.roles == ["admin"] and info.operator.brands == ["*"] and info.operator.jurisdictions == ["*"]


# --- single sign-on ----------------------------------------------------------------------


async def test_sso_login_provisions_then_reuses_the_operator(svc: IdentityService, ip: str) -> None:
    subject = uuid.uuid4().hex
    email = f"{unique('jane')}@casino.example"
    first = await svc.sso_login("corp", subject, email, "Jane Doe", ["support"], ["demo"], ["MT"], ip, None)
    assert first.stage == "full" and first.operator.sso_provider == "corp"
    assert first.operator.username == email.partition("@")[0] and not first.operator.mfa_enrolled
    again = await svc.sso_login(
        "corp", subject, email, "Jane Doe", ["support", "compliance"], ["demo", "other"], ["MT"], ip, None
    )
    assert again.operator.operator_id == first.operator.operator_id
    assert again.operator.roles == ["support", "compliance"] and again.operator.brands == ["demo", "other"]
    # Same email, other provider subject: another operator, never the first one taken over.
    other = await svc.sso_login("corp", uuid.uuid4().hex, email, "Jane Doe", ["support"], [], [], ip, None)
    assert other.operator.operator_id != first.operator.operator_id
    await svc.set_disabled(first.operator.operator_id, True)
    with pytest.raises(Forbidden):
        await svc.sso_login("corp", subject, email, "Jane Doe", ["support"], ["demo"], ["MT"], ip, None)
    with pytest.raises(Forbidden):
        await svc.sso_login("corp", uuid.uuid4().hex, email, "Nobody", [], [], [], ip, None)


async def test_concurrent_first_sso_logins_make_one_operator(svc: IdentityService, ip: str) -> None:
    subject = uuid.uuid4().hex
    args = ("corp", subject, f"{unique('sam')}@casino.example", "Sam", ["support"], ["demo"], ["MT"], ip, None)
    a, b = await asyncio.gather(svc.sso_login(*args), svc.sso_login(*args))
    assert a.operator.operator_id == b.operator.operator_id

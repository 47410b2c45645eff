from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import ip_network
from typing import Any

import pyotp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain.errors import InvalidInput
from domain.identity import (
    TOTP_INTERVAL,
    check_password,
    check_totp,
    client_address,
    format_recovery_code,
    is_trusted_proxy,
    lockout_state,
    new_recovery_codes,
    normalize_recovery_code,
    password_problem,
    retry_after_seconds,
    totp_step,
)
from schemas.operators import CodeRequest, LoginRequest, OperatorCreate, OperatorUpdate

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
offsets = st.lists(st.integers(min_value=-3600, max_value=0), max_size=30)
limits = st.integers(min_value=1, max_value=10)
windows = st.integers(min_value=1, max_value=3600)
locks = st.integers(min_value=1, max_value=3600)


def times(seconds: list[int]) -> list[datetime]:
    return [T0 + timedelta(seconds=s) for s in seconds]


# --- lockout -----------------------------------------------------------------------------


@given(failures=offsets, limit=limits, window=windows, lock=locks)
def test_lock_ends_at_most_lock_after_now_and_only_with_enough_recent_failures(
    failures: list[int], limit: int, window: int, lock: int
) -> None:
    until = lockout_state(times(failures), T0, limit, timedelta(seconds=window), timedelta(seconds=lock))
    recent = [s for s in failures if -window < s <= 0]
    if len(recent) < limit:
        assert until is None
    elif until is not None:
        assert T0 < until <= T0 + timedelta(seconds=lock)
        assert until == T0 + timedelta(seconds=max(recent) + lock)
    else:
        assert max(recent) + lock <= 0  # the lock already ran out


@given(failures=offsets, extra=st.integers(min_value=-3600, max_value=0), limit=limits, window=windows, lock=locks)
def test_another_failure_never_shortens_a_lock(
    failures: list[int], extra: int, limit: int, window: int, lock: int
) -> None:
    w, lk = timedelta(seconds=window), timedelta(seconds=lock)
    before = lockout_state(times(failures), T0, limit, w, lk)
    after = lockout_state(times([*failures, extra]), T0, limit, w, lk)
    if before is not None:
        assert after is not None and after >= before


@given(failures=offsets, limit=limits, window=windows, lock=locks)
def test_failures_older_than_the_window_do_not_count(failures: list[int], limit: int, window: int, lock: int) -> None:
    w, lk = timedelta(seconds=window), timedelta(seconds=lock)
    old = [-window - 1 - i for i in range(limit + 5)]
    assert lockout_state(times(failures + old), T0, limit, w, lk) == lockout_state(times(failures), T0, limit, w, lk)


@given(limit=limits, lock=locks, gap=st.integers(min_value=0, max_value=7200))
def test_a_lock_is_lifted_once_its_time_is_over(limit: int, lock: int, gap: int) -> None:
    failures = times([0] * limit)
    w, lk = timedelta(hours=3), timedelta(seconds=lock)
    later = T0 + timedelta(seconds=gap)
    until = lockout_state(failures, later, limit, w, lk)
    assert (until is not None) == (gap < lock)


def test_retry_after_rounds_up_to_whole_seconds() -> None:
    assert retry_after_seconds(T0 + timedelta(seconds=2.1), T0) == 3
    assert retry_after_seconds(T0 + timedelta(seconds=2), T0) == 2
    assert retry_after_seconds(T0 + timedelta(milliseconds=1), T0) == 1


# --- TOTP --------------------------------------------------------------------------------

SECRET = pyotp.random_base32(32)
TOTP = pyotp.TOTP(SECRET)
instants = st.integers(min_value=1_600_000_000, max_value=2_200_000_000).map(lambda s: datetime.fromtimestamp(s, UTC))


@given(now=instants, delta=st.integers(min_value=-3, max_value=3), last=st.none() | st.integers(-4, 4))
def test_totp_accepts_a_step_within_one_of_now_and_only_after_the_last_accepted(
    now: datetime, delta: int, last: int | None
) -> None:
    current = totp_step(now)
    step = current + delta
    last_step = None if last is None else current + last
    result = check_totp(TOTP.generate_otp(step), now, last_step, TOTP.generate_otp)
    if result.outcome == "accepted":
        assert result.step is not None
        assert abs(result.step - current) <= 1
        assert last_step is None or result.step > last_step
    if abs(delta) <= 1 and (last_step is None or step > last_step):
        assert result.outcome == "accepted" and result.step is not None and result.step >= step
    if abs(delta) <= 1 and last_step is not None and step <= last_step:
        # Refused as a replay unless the same digits also belong to a later step of the window.
        assert result.outcome == "replay" or (result.step is not None and result.step > last_step)


@given(now=instants)
def test_an_accepted_totp_code_is_a_replay_the_second_time(now: datetime) -> None:
    code = TOTP.at(now)
    first = check_totp(code, now, None, TOTP.generate_otp)
    assert first.outcome == "accepted" and first.step is not None
    again = check_totp(code, now + timedelta(seconds=TOTP_INTERVAL // 2), first.step, TOTP.generate_otp)
    assert again.outcome == "replay"


@given(now=instants, code=st.text(min_size=0, max_size=10))
def test_totp_never_accepts_what_the_secret_does_not_give(now: datetime, code: str) -> None:
    current = totp_step(now)
    genuine = {TOTP.generate_otp(s) for s in range(current - 1, current + 2)}
    result = check_totp(code, now, None, TOTP.generate_otp)
    assert (result.outcome == "accepted") == ("".join(code.split()) in genuine)


def test_totp_step_is_thirty_seconds_of_unix_time() -> None:
    assert totp_step(datetime.fromtimestamp(59, UTC)) == 1
    assert totp_step(datetime.fromtimestamp(60, UTC)) == 2


# --- recovery codes and passwords --------------------------------------------------------


@given(raw=st.binary(min_size=8, max_size=8))
def test_recovery_codes_survive_case_spaces_and_missing_hyphens(raw: bytes) -> None:
    code = format_recovery_code(raw)
    assert len(code) == 14 and code.count("-") == 2
    typed = code.upper().replace("-", " ")
    assert normalize_recovery_code(typed) == code
    assert normalize_recovery_code(code.replace("-", "")) == code
    CodeRequest(code=typed)  # the request body accepts it too


def test_new_recovery_codes_are_ten_distinct_codes() -> None:
    codes = new_recovery_codes()
    assert len(set(codes)) == 10
    assert all(normalize_recovery_code(c) == c for c in codes)


@given(text=st.text(max_size=20))
def test_normalized_recovery_codes_are_canonical(text: str) -> None:
    code = normalize_recovery_code(text)
    if code is not None:
        assert normalize_recovery_code(code) == code


@given(password=st.text(max_size=300), username=st.from_regex(r"[a-z0-9._-]{3,12}", fullmatch=True))
def test_password_policy(password: str, username: str) -> None:
    problem = password_problem(password, username)
    ok = 12 <= len(password) <= 256 and username not in password.casefold() and bool(password.strip())
    assert (problem is None) == ok


def test_password_policy_names_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        check_password("short", "alice", field="new_password")
    assert err.value.field == "new_password"
    with pytest.raises(InvalidInput):
        check_password("my name is ALICE and more", "alice")


# --- request bodies ----------------------------------------------------------------------


def test_operator_bodies_validate_their_fields() -> None:
    op = OperatorCreate(
        username=" Alice.B ", display_name="Alice", roles=["admin", "admin"], brands=["*"], jurisdictions=["mt", "*"]
    )
    assert op.username == "alice.b" and op.roles == ["admin"] and op.jurisdictions == ["MT", "*"]
    bad: dict[str, Any]
    for bad in (
        {"username": "al"},
        {"username": "al ice"},
        {"roles": []},
        {"jurisdictions": ["XX"]},
        {"brands": ["Bad Brand"]},
        {"extra": 1},
    ):
        body = {"username": "alice", "display_name": "A", "roles": ["admin"], **bad}
        with pytest.raises(ValidationError):
            OperatorCreate.model_validate(body)
    with pytest.raises(ValidationError):
        OperatorUpdate()
    with pytest.raises(ValidationError):
        OperatorUpdate(roles=None)
    assert OperatorUpdate(email=None).model_fields_set == {"email"}
    with pytest.raises(ValidationError):
        LoginRequest(username="a", password="x" * 257)
    for bad_code in ("12345", "1234567", "abcd-efgh-ijk1"):
        with pytest.raises(ValidationError):
            CodeRequest(code=bad_code)
    assert CodeRequest(code="123 456").code == "123456"


NETS = [ip_network("127.0.0.1/32"), ip_network("10.0.0.0/8")]


def test_the_client_address_is_the_peer_unless_the_peer_is_a_trusted_proxy() -> None:
    assert client_address("203.0.113.9", "198.51.100.1", NETS) == "203.0.113.9"
    assert client_address("127.0.0.1", "198.51.100.1", NETS) == "198.51.100.1"
    assert client_address("127.0.0.1", None, NETS) == "127.0.0.1"


def test_a_forged_forwarded_for_entry_left_of_the_real_one_is_ignored() -> None:
    assert client_address("127.0.0.1", "1.2.3.4, 198.51.100.7, 10.1.1.1", NETS) == "198.51.100.7"
    assert client_address("127.0.0.1", "not-an-ip", NETS) == "127.0.0.1"


def test_trusted_proxies_are_recognised() -> None:
    assert is_trusted_proxy("10.9.8.7", NETS) and not is_trusted_proxy("11.0.0.1", NETS)
    assert not is_trusted_proxy("garbage", NETS)

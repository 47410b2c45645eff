"""Operator identity rules: password policy, login lockout, recovery codes, TOTP acceptance.

Rules:
- A password has 12 to 256 characters and does not contain the username (any case). Length is
  what makes a password strong; composition rules only make it harder to remember.
- Lockout: failures are counted in a sliding window. Once the window holds `max_failures`
  failures, the subject (a username, or an IP) is locked for `lock` after the latest failure.
  Attempts refused while locked are not counted, so a lock ends at a predictable time.
- Recovery codes: ten per enrolment, 60 random bits each, written `xxxx-xxxx-xxxx` in
  lowercase base32 (no 0/1/8/9, so nothing to confuse with o, l, b, g). Case, spaces and
  hyphens are ignored when one is typed back. Each is accepted once.
- TOTP (RFC 6238, 30-second steps, 6 digits): a code of the current step or of one step before
  or after (clock drift) is accepted; the matched step is recorded, and any code of a step at or
  before the last accepted one is refused as a replay, even if it would be correct.
"""

from __future__ import annotations

import base64
import hmac
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Literal

from domain.errors import InvalidInput

PASSWORD_MIN = 12
PASSWORD_MAX = 256
RECOVERY_CODES = 10
RECOVERY_GROUPS = 3
RECOVERY_GROUP_LEN = 4
_RECOVERY_LEN = RECOVERY_GROUPS * RECOVERY_GROUP_LEN
_BASE32 = frozenset("abcdefghijklmnopqrstuvwxyz234567")
TOTP_INTERVAL = 30
TOTP_DIGITS = 6
TOTP_WINDOW = 1  # steps accepted either side of the current one


# --- passwords ---------------------------------------------------------------------------


def password_problem(password: str, username: str) -> str | None:
    """Why `password` is not acceptable for `username`, or None if it is."""
    if len(password) < PASSWORD_MIN:
        return f"password must have at least {PASSWORD_MIN} characters"
    if len(password) > PASSWORD_MAX:
        return f"password must have at most {PASSWORD_MAX} characters"
    if username and username.casefold() in password.casefold():
        return "password must not contain the username"
    if not password.strip():
        return "password must not be only spaces"
    return None


def check_password(password: str, username: str, field: str = "password") -> None:
    problem = password_problem(password, username)
    if problem is not None:
        raise InvalidInput(problem, field=field)


# --- lockout -----------------------------------------------------------------------------


def lockout_state(
    failures: Iterable[datetime], now: datetime, max_failures: int, window: timedelta, lock: timedelta
) -> datetime | None:
    """The time the subject is locked until, or None if it may try now.

    `failures` are the recorded failure times (any order); only those in (now - window, now]
    count. Locked when they number at least `max_failures`, until the latest one plus `lock`.
    """
    recent = sorted(t for t in failures if now - window < t <= now)
    if len(recent) < max_failures:
        return None
    until = recent[-1] + lock
    return until if until > now else None


def retry_after_seconds(locked_until: datetime, now: datetime) -> int:
    """Whole seconds to announce in Retry-After (at least 1, rounded up)."""
    seconds = (locked_until - now).total_seconds()
    whole = int(seconds)
    return max(1, whole + (1 if seconds > whole else 0))


# --- recovery codes ----------------------------------------------------------------------


def format_recovery_code(raw: bytes) -> str:
    """A code from at least 8 random bytes: 12 lowercase base32 characters in groups of 4."""
    if len(raw) < 8:
        raise ValueError("a recovery code needs at least 8 random bytes")
    text = base64.b32encode(raw[:8]).decode().lower()[:_RECOVERY_LEN]
    return "-".join(text[i : i + RECOVERY_GROUP_LEN] for i in range(0, _RECOVERY_LEN, RECOVERY_GROUP_LEN))


def new_recovery_codes(
    count: int = RECOVERY_CODES, random_bytes: Callable[[int], bytes] = secrets.token_bytes
) -> list[str]:
    codes: list[str] = []
    while len(codes) < count:
        code = format_recovery_code(random_bytes(8))
        if code not in codes:
            codes.append(code)
    return codes


def normalize_recovery_code(text: str) -> str | None:
    """The canonical form (`xxxx-xxxx-xxxx`) of a typed recovery code, or None if it is not one."""
    bare = "".join(ch for ch in text.lower() if ch not in " -\t")
    if len(bare) != _RECOVERY_LEN or not set(bare) <= _BASE32:
        return None
    return "-".join(bare[i : i + RECOVERY_GROUP_LEN] for i in range(0, _RECOVERY_LEN, RECOVERY_GROUP_LEN))


def is_totp_code(text: str) -> bool:
    bare = "".join(text.split())
    return len(bare) == TOTP_DIGITS and bare.isascii() and bare.isdigit()


# --- TOTP --------------------------------------------------------------------------------


def totp_step(now: datetime, interval: int = TOTP_INTERVAL) -> int:
    return int(now.astimezone(UTC).timestamp()) // interval


@dataclass(frozen=True, slots=True)
class TotpCheck:
    outcome: Literal["accepted", "wrong", "replay"]
    step: int | None = None  # the matched step when accepted (to record as the last accepted one)


def check_totp(
    code: str,
    now: datetime,
    last_step: int | None,
    code_at: Callable[[int], str],
    window: int = TOTP_WINDOW,
    interval: int = TOTP_INTERVAL,
) -> TotpCheck:
    """Decide a TOTP code. `code_at(step)` is the code the secret gives for a step
    (pyotp: `TOTP(secret).generate_otp(step)`); `last_step` the last accepted one, if any.

    When the code matches several steps of the window (one in a million), the latest one is
    taken, so the same digits cannot be accepted twice in one window.
    """
    typed = "".join(code.split())
    if not is_totp_code(typed):
        return TotpCheck("wrong")
    current = totp_step(now, interval)
    matched = [s for s in range(current - window, current + window + 1) if hmac.compare_digest(code_at(s), typed)]
    if not matched:
        return TotpCheck("wrong")
    fresh = [s for s in matched if last_step is None or s > last_step]
    if not fresh:
        return TotpCheck("replay")
    return TotpCheck("accepted", max(fresh))


# --- client addresses --------------------------------------------------------------------

Networks = Sequence[IPv4Network | IPv6Network]


def is_trusted_proxy(address: str, networks: Networks) -> bool:
    try:
        ip = ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def client_address(peer: str | None, forwarded_for: str | None, networks: Networks) -> str | None:
    """The caller's address: the peer, unless the peer is a trusted proxy, then the nearest
    address in X-Forwarded-For that is not one (entries further left are the client's claims)."""
    if peer is None or not is_trusted_proxy(peer, networks) or not forwarded_for:
        return peer
    for hop in reversed([h.strip() for h in forwarded_for.split(",")][:32]):
        if not hop:
            continue
        try:
            ip_address(hop)
        except ValueError:
            return peer
        if not is_trusted_proxy(hop, networks):
            return hop
    return peer

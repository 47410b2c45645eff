"""Running counters from platform events: per UTC day (kept for the longest limit window)
and lifetime. GGR is bets minus wins; it is derived, never stored."""

from __future__ import annotations

from datetime import datetime, timedelta

from domain.errors import InvalidInput
from domain.limits import HISTORY_DAYS
from schemas.events import (
    DepositEvent,
    EventEnvelope,
    GameBet,
    GameWin,
    SessionEnded,
    SessionStarted,
    WithdrawalEvent,
)
from schemas.state import Counters, PlayerState

MAX_OPEN_SESSIONS = 16
MAX_CATEGORIES = 8  # game categories kept per day for the favourite-category feature
CHURN_GAP = timedelta(days=30)  # activity after this long without any is a reactivation
SESSION_MAX_AGE = timedelta(hours=24)
FUTURE_TOLERANCE = timedelta(minutes=5)


def _day(state: PlayerState, at: datetime, now: datetime) -> Counters | None:
    if (now.date() - at.date()).days >= HISTORY_DAYS:
        return None
    key = at.date().isoformat()
    day = state.days.get(key)
    if day is None:
        day = state.days[key] = Counters()
    return day


def _add(state: PlayerState, at: datetime, now: datetime, **amounts: int) -> None:
    targets: list[Counters] = [state.lifetime]
    day = _day(state, at, now)
    if day is not None:
        targets.append(day)
    for target in targets:
        for name, amount in amounts.items():
            setattr(target, name, getattr(target, name) + amount)


def prune(state: PlayerState, now: datetime) -> None:
    """Drop day buckets older than any limit window, expired holds and stale open sessions."""
    oldest = (now.date() - timedelta(days=HISTORY_DAYS - 1)).isoformat()
    for key in [k for k in state.days if k < oldest]:
        del state.days[key]
    for key in [k for k in state.crm.stakes if k < oldest]:
        del state.crm.stakes[key]
    for tx in [tx for tx, h in state.holds.items() if h.expires_at <= now]:
        del state.holds[tx]
    for sid in [s for s, t in state.open_sessions.items() if now - t > SESSION_MAX_AGE]:
        del state.open_sessions[sid]


def check_event(state: PlayerState, env: EventEnvelope, now: datetime) -> None:
    """Raise InvalidInput (and change nothing) for an event this player cannot take."""
    if env.occurred_at > now + FUTURE_TOLERANCE:
        raise InvalidInput("occurred_at is in the future", field="occurred_at")
    currency = getattr(env.payload, "currency", None)
    if currency is not None and currency != state.profile.currency:
        raise InvalidInput(
            f"currency {currency} is not the player's account currency {state.profile.currency}",
            field="payload.currency",
        )


def record(state: PlayerState, env: EventEnvelope, now: datetime) -> None:
    """Add one checked event to the counters (mutates the state the caller owns)."""
    p = env.payload
    at = env.occurred_at
    if isinstance(p, SessionStarted):
        state.crm.device = p.device
        state.open_sessions[p.session_id] = at
        if len(state.open_sessions) > MAX_OPEN_SESSIONS:
            del state.open_sessions[min(state.open_sessions, key=state.open_sessions.__getitem__)]
        _add(state, at, now, sessions=1)
    elif isinstance(p, SessionEnded):
        started = state.open_sessions.pop(p.session_id, None)
        seconds = p.duration_s
        if seconds is None:
            seconds = max(0, int((at - started).total_seconds())) if started else 0
        _add(state, at, now, session_seconds=seconds)
    elif isinstance(p, DepositEvent):
        if p.status in ("completed", "failed", "cancelled"):
            state.holds.pop(p.tx_id, None)
        if p.status == "completed":
            _add(state, at, now, deposits_count=1, deposits_minor=p.amount_minor)
            life = state.lifetime
            if life.first_deposit_at is None or at < life.first_deposit_at:
                life.first_deposit_at = at
            if life.last_deposit_at is None or at > life.last_deposit_at:
                life.last_deposit_at = at
    elif isinstance(p, WithdrawalEvent):
        if p.status == "paid":
            _add(state, at, now, withdrawals_count=1, withdrawals_minor=p.amount_minor)
    elif isinstance(p, GameBet):
        _add(state, at, now, bets_count=1, bets_minor=p.amount_minor)
        _stake(state, at, now, p.game_category, p.amount_minor)
    elif isinstance(p, GameWin):
        _add(state, at, now, wins_count=1, wins_minor=p.amount_minor)
    last = state.lifetime.last_activity_at
    if last is None or at > last:
        if last is not None and at - last >= CHURN_GAP:
            state.crm.reactivated_at = at
        state.lifetime.last_activity_at = at


def _stake(state: PlayerState, at: datetime, now: datetime, category: str, amount: int) -> None:
    if (now.date() - at.date()).days >= HISTORY_DAYS:
        return
    day = state.crm.stakes.setdefault(at.date().isoformat(), {})
    if category in day or len(day) < MAX_CATEGORIES:
        day[category] = day.get(category, 0) + amount

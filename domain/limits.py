"""Responsible-gambling limits.

Rules:
- Limits are per kind (deposit, loss, wager: minor units; session_time: minutes) and period
  (day, week, month). Windows are rolling whole UTC days: today, the last 7 days, the last
  30 days, each including today.
- Several limits may apply to one action (a daily and a monthly deposit limit, a player's
  and an operator's): every one must hold, so the lowest remaining amount wins.
- A decrease (or a new limit) applies at once and cancels a pending increase. An increase
  (or a removal) only applies after a 24-hour cooling-off: until then it is pending with its
  effective time and the old limit stays in force.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from schemas.players import LimitSetting, Remaining
from schemas.state import Counters, Limit, LimitKind, LimitSource, PendingLimit, Period, PlayerState

COOLING_OFF = timedelta(hours=24)
WINDOW_DAYS: dict[Period, int] = {"day": 1, "week": 7, "month": 30}
HISTORY_DAYS = max(WINDOW_DAYS.values())


def _key(kind: LimitKind, period: Period, source: LimitSource) -> tuple[str, str, str]:
    return (kind, period, source)


def set_limits(
    limits: list[Limit],
    pending: list[PendingLimit],
    settings: list[LimitSetting],
    source: LimitSource,
    now: datetime,
) -> tuple[list[Limit], list[PendingLimit], list[dict[str, object]]]:
    """Apply limit settings; returns the new active and pending lists and what changed."""
    active = {_key(lim.kind, lim.period, lim.source): lim for lim in limits}
    waiting = {_key(p.kind, p.period, p.source): p for p in pending}
    changes: list[dict[str, object]] = []
    for s in settings:
        key = _key(s.kind, s.period, source)
        current = active.get(key)
        if current is not None and s.value == current.value:
            if waiting.pop(key, None) is not None:
                changes.append({"kind": s.kind, "period": s.period, "change": "pending_cancelled"})
            continue
        if s.value is not None and (current is None or s.value < current.value):
            active[key] = Limit(kind=s.kind, period=s.period, value=s.value, source=source, set_at=now)
            waiting.pop(key, None)
            changes.append({"kind": s.kind, "period": s.period, "change": "applied", "value": s.value})
        elif current is None:
            # Removing a limit that does not exist: nothing to do, but drop a stale pending one.
            waiting.pop(key, None)
        elif key in waiting and waiting[key].value == s.value:
            # A repeated request must not restart the cooling-off clock.
            continue
        else:
            effective_at = now + COOLING_OFF
            waiting[key] = PendingLimit(
                kind=s.kind,
                period=s.period,
                value=s.value,
                source=source,
                requested_at=now,
                effective_at=effective_at,
            )
            changes.append(
                {
                    "kind": s.kind,
                    "period": s.period,
                    "change": "pending",
                    "value": s.value,
                    "effective_at": effective_at.isoformat(),
                }
            )
    return list(active.values()), list(waiting.values()), changes


def promote_due(
    limits: list[Limit], pending: list[PendingLimit], now: datetime
) -> tuple[list[Limit], list[PendingLimit]]:
    """Pending increases whose cooling-off has passed become the active limits."""
    if not any(p.effective_at <= now for p in pending):
        return limits, pending
    active = {_key(lim.kind, lim.period, lim.source): lim for lim in limits}
    still: list[PendingLimit] = []
    for p in pending:
        if p.effective_at > now:
            still.append(p)
            continue
        key = _key(p.kind, p.period, p.source)
        if p.value is None:
            active.pop(key, None)
        else:
            active[key] = Limit(kind=p.kind, period=p.period, value=p.value, source=p.source, set_at=p.effective_at)
    return list(active.values()), still


def binding_limits(limits: list[Limit]) -> dict[tuple[LimitKind, Period], int]:
    """The lowest value per (kind, period) across sources: the one that binds."""
    out: dict[tuple[LimitKind, Period], int] = {}
    for lim in limits:
        key = (lim.kind, lim.period)
        if key not in out or lim.value < out[key]:
            out[key] = lim.value
    return out


def window(days: dict[str, Counters], period: Period, today: date) -> Counters:
    total = Counters()
    for offset in range(WINDOW_DAYS[period]):
        c = days.get((today - timedelta(days=offset)).isoformat())
        if c is not None:
            for name in Counters.model_fields:
                setattr(total, name, getattr(total, name) + getattr(c, name))
    return total


def usage(state: PlayerState, kind: LimitKind, period: Period, now: datetime) -> int:
    c = window(state.days, period, now.date())
    if kind == "deposit":
        return c.deposits_minor
    if kind == "wager":
        return c.bets_minor
    if kind == "loss":
        return max(0, c.bets_minor - c.wins_minor)
    open_seconds = sum(max(0, int((now - t).total_seconds())) for t in state.open_sessions.values())
    return (c.session_seconds + open_seconds) // 60


def held(state: PlayerState, now: datetime) -> int:
    return sum(h.amount_minor for h in state.holds.values() if h.expires_at > now)


def remaining(state: PlayerState, now: datetime) -> list[Remaining]:
    limits, _ = promote_due(state.limits, state.pending_limits, now)
    holds = held(state, now)
    out = []
    for (kind, period), value in sorted(binding_limits(limits).items()):
        used = usage(state, kind, period, now)
        hold = holds if kind == "deposit" else 0
        out.append(
            Remaining(
                kind=kind,
                period=period,
                limit=value,
                used=used,
                held=hold,
                remaining=max(0, value - used - hold),
            )
        )
    return out


def remaining_by_kind(rows: list[Remaining]) -> dict[str, int | None]:
    """The smallest remaining amount per kind (None: no limit of that kind)."""
    out: dict[str, int | None] = {"deposit": None, "loss": None, "wager": None, "session_time": None}
    for r in rows:
        current = out[r.kind]
        out[r.kind] = r.remaining if current is None else min(current, r.remaining)
    return out


def deposit_limit_reasons(rows: list[Remaining], amount_minor: int) -> list[str]:
    return [f"deposit_limit_{r.period}" for r in rows if r.kind == "deposit" and amount_minor > r.remaining]

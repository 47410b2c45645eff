"""Time-outs and self-exclusions.

A time-out lasts 24 hours to 6 weeks; a self-exclusion at least 6 calendar months or is
indefinite. Neither can be lifted early: a new exclusion is accepted only if it ends no
earlier than the one in force (it may extend it).
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta

from domain.errors import Conflict
from schemas.players import ExclusionCreate
from schemas.state import Exclusion


def add_months(start: datetime, months: int) -> datetime:
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = min(start.day, calendar.monthrange(year, month)[1])
    return start.replace(year=year, month=month, day=day)


def is_active(ex: Exclusion, now: datetime) -> bool:
    return ex.started_at <= now and (ex.ends_at is None or now < ex.ends_at)


def in_force(exclusions: list[Exclusion], now: datetime) -> Exclusion | None:
    """The exclusion that ends last among those active now (indefinite ends last)."""
    active = [e for e in exclusions if is_active(e, now)]
    if not active:
        return None
    return max(active, key=lambda e: (e.ends_at is None, e.ends_at or now))


def start_exclusion(exclusions: list[Exclusion], spec: ExclusionCreate, exclusion_id: str, now: datetime) -> Exclusion:
    if spec.kind == "timeout":
        assert spec.duration_hours is not None
        ends_at: datetime | None = now + timedelta(hours=spec.duration_hours)
    elif spec.indefinite:
        ends_at = None
    else:
        assert spec.duration_months is not None
        ends_at = add_months(now, spec.duration_months)
    current = in_force(exclusions, now)
    if current is not None and (current.ends_at is None or (ends_at is not None and ends_at < current.ends_at)):
        until = "indefinitely" if current.ends_at is None else f"until {current.ends_at.isoformat()}"
        raise Conflict(
            f"an exclusion is in force {until}; it cannot be shortened or lifted early",
            field="kind",
            extra={"current": current.model_dump(mode="json")},
        )
    return Exclusion(exclusion_id=exclusion_id, kind=spec.kind, started_at=now, ends_at=ends_at, reason=spec.reason)

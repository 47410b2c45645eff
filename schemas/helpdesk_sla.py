"""Help-desk SLA configuration as data: business calendars, targets, policies, and clock events.

The rules that use them are in `domain.sla`. Decisions fixed here:

- Times of an `Interval` are local wall-clock times of the calendar's zone, at one-second
  resolution (no microseconds, no UTC offset). An interval never crosses midnight: `end` must be
  later than `start`, and `end` 24:00 (written "24:00" or 00:00) is the end of the day. An
  overnight shift is written as two intervals, e.g. Mon 22:00-24:00 and Tue 00:00-06:00; the two
  touch at midnight, so business time runs through it without a gap.
- Intervals of one weekday (or of one special day) may touch but not overlap.
- `holidays` close the whole local date. `special_days` replace the weekly hours of that local
  date (a short day; an empty list closes it like a holiday). A date may not be both.
- A calendar must be open at least one second per week: otherwise a target would never fall due.
  An always-open policy says `twenty_four_seven` instead of naming a calendar.
- Policy choice (`SlaPolicySet.pick`): the policy of the same priority and exactly the same
  category, else the one of the same priority with no category (any), else the set's
  `default_policy_id` if it has one, else none. Two policies for the same (priority, category)
  are refused at load time, so the choice is always unique.
"""

from __future__ import annotations

import itertools
import zoneinfo
from datetime import date, datetime, time
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, field_validator, model_validator

Weekday = Literal[0, 1, 2, 3, 4, 5, 6]  # Monday = 0, as datetime.weekday()
Priority = Literal["P1", "P2", "P3", "P4"]
Identifier = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")]
Category = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.-]*$")]
# A target of at most one year of business minutes: far above any help desk's promise.
TargetMinutes = Annotated[StrictInt, Field(gt=0, le=366 * 24 * 60)]

DAY_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MIDNIGHT = time(0, 0)
SlaEventKind = Literal["started", "paused", "resumed", "responded", "player_replied", "solved", "reopened"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _seconds(t: time) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


class TimeRange(_Model):
    """Local wall-clock hours [start, end) within one day; `end` 00:00 / "24:00" is midnight at its end."""

    start: time
    end: time

    @field_validator("end", mode="before")
    @classmethod
    def _end_of_day(cls, value: object) -> object:
        return "00:00" if isinstance(value, str) and value.strip() in ("24:00", "24:00:00") else value

    @field_validator("start", "end")
    @classmethod
    def _local_whole_seconds(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("a local wall-clock time without UTC offset (the calendar's zone applies)")
        if value.microsecond:
            raise ValueError("whole seconds only")
        return value

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if self.end_seconds <= self.start_seconds:
            raise ValueError(f"end {self.end} is not after start {self.start}: an overnight shift is written as two "
                             "intervals, e.g. 22:00-24:00 on one day and 00:00-06:00 on the next")
        return self

    @property
    def start_seconds(self) -> int:
        return _seconds(self.start)

    @property
    def end_seconds(self) -> int:
        """Seconds after local midnight; 86400 for an interval ending at midnight."""
        return 86_400 if self.end == MIDNIGHT else _seconds(self.end)


class Interval(TimeRange):
    """Weekly business hours: `weekday` 0-6 (Monday 0) or a day name ("mon", "Monday")."""

    weekday: Weekday

    @field_validator("weekday", mode="before")
    @classmethod
    def _day_name(cls, value: object) -> object:
        if isinstance(value, str):
            name = value.strip().lower()
            for i, day in enumerate(DAY_NAMES):
                if name in (day, day[:3]):
                    return i
            raise ValueError(f"unknown day {value!r}: use 0-6 (Monday 0) or a name such as 'mon' or 'monday'")
        if isinstance(value, bool):
            raise ValueError("a weekday is 0-6 (Monday 0) or a day name")
        return value


def _overlap(ranges: list[TimeRange]) -> str | None:
    ordered = sorted(ranges, key=lambda r: r.start_seconds)
    for a, b in itertools.pairwise(ordered):
        if b.start_seconds < a.end_seconds:
            return f"{a.start}-{a.end} overlaps {b.start}-{b.end}"
    return None


class BusinessCalendar(_Model):
    """A team's business hours in one IANA time zone, with closed days and short days."""

    calendar_id: Identifier
    time_zone: str
    weekly: list[Interval]
    holidays: list[date] = Field(default_factory=list)
    special_days: dict[date, list[TimeRange]] = Field(default_factory=dict)

    @field_validator("time_zone")
    @classmethod
    def _iana(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}: expected an IANA name such as Europe/Malta") from exc
        return value

    @field_validator("weekly")
    @classmethod
    def _weekly(cls, value: list[Interval]) -> list[Interval]:
        if not value:
            raise ValueError("at least one weekly interval (an always-open policy says twenty_four_seven)")
        for day in range(7):
            problem = _overlap([i for i in value if i.weekday == day])
            if problem:
                raise ValueError(f"{DAY_NAMES[day]}: {problem}")
        return value

    @field_validator("special_days")
    @classmethod
    def _special(cls, value: dict[date, list[TimeRange]]) -> dict[date, list[TimeRange]]:
        for day, ranges in value.items():
            problem = _overlap(ranges)
            if problem:
                raise ValueError(f"{day}: {problem}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> BusinessCalendar:
        both = sorted(set(self.holidays) & set(self.special_days))
        if both:
            raise ValueError(f"special_days: {both[0]} is also a holiday; a date is either closed or has special hours")
        return self


class SlaTargets(_Model):
    """Business minutes allowed per target; a target left out is not tracked."""

    first_response: TargetMinutes | None = None
    next_response: TargetMinutes | None = None
    resolution: TargetMinutes | None = None


class SlaPolicy(_Model):
    policy_id: Identifier
    name: Annotated[str, Field(min_length=1, max_length=200)]
    priority: Priority
    category: Category | None = None  # None: any category
    calendar_id: Identifier | None = None
    twenty_four_seven: StrictBool = False
    targets: SlaTargets
    # A warning falls due this many business minutes before each target's deadline.
    warn_before_minutes: Annotated[StrictInt, Field(ge=0, le=366 * 24 * 60)] = 0

    @model_validator(mode="after")
    def _one_clock(self) -> SlaPolicy:
        if self.twenty_four_seven == (self.calendar_id is not None):
            raise ValueError("calendar_id: name a business calendar, or set twenty_four_seven (not both)")
        return self


class SlaPolicySet(_Model):
    """Every policy and calendar of a help desk; `pick` chooses the policy of a ticket."""

    policies: list[SlaPolicy]
    calendars: list[BusinessCalendar] = Field(default_factory=list)
    default_policy_id: Identifier | None = None

    @model_validator(mode="after")
    def _references(self) -> SlaPolicySet:
        ids = [p.policy_id for p in self.policies]
        if len(set(ids)) != len(ids):
            raise ValueError(f"policies: policy_id repeated: {sorted({i for i in ids if ids.count(i) > 1})}")
        keys = [(p.priority, p.category) for p in self.policies]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"policies: two policies for priority {dup[0]} and category {dup[1] or 'any'}")
        cal_ids = [c.calendar_id for c in self.calendars]
        if len(set(cal_ids)) != len(cal_ids):
            raise ValueError("calendars: calendar_id repeated")
        missing = sorted({p.calendar_id for p in self.policies if p.calendar_id and p.calendar_id not in cal_ids})
        if missing:
            raise ValueError(f"policies: unknown calendar_id {missing[0]}")
        if self.default_policy_id is not None and self.default_policy_id not in ids:
            raise ValueError(f"default_policy_id: no policy {self.default_policy_id}")
        return self

    def pick(self, priority: Priority, category: str | None) -> SlaPolicy | None:
        """Exact (priority, category), else (priority, any), else the default policy, else None."""
        exact = any_category = default = None
        for p in self.policies:
            if p.priority == priority:
                if category is not None and p.category == category:
                    exact = p
                elif p.category is None:
                    any_category = p
            if p.policy_id == self.default_policy_id:
                default = p
        return exact or any_category or default

    def calendar(self, calendar_id: str) -> BusinessCalendar | None:
        return next((c for c in self.calendars if c.calendar_id == calendar_id), None)


class SlaEvent(_Model):
    """One fact about a ticket's SLA clock. `event_id` makes a retry harmless (a repeat is ignored)."""

    event_id: Annotated[str, Field(min_length=1, max_length=128)]
    kind: SlaEventKind
    at: datetime

    @field_validator("at")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("timestamp must carry a UTC offset (RFC 3339)")
        return value

"""Bodies of the platform API's player endpoints (XCreate / XUpdate / XPublic families)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from schemas.common import AmountMinor, Country, Currency
from schemas.profile import ProfileFields, TrafficSource
from schemas.state import (
    Block,
    BlockKind,
    Counters,
    Exclusion,
    Lifetime,
    Limit,
    LimitKind,
    PendingLimit,
    Period,
    Profile,
)

IdKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:-]+$")]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PlayerCreate(_Body, ProfileFields):
    player_id: UUID
    currency: Currency
    country: Country
    traffic_source: TrafficSource | None = None


class PlayerUpdate(_Body, ProfileFields):
    country: Country | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> PlayerUpdate:
        if not self.model_fields_set:
            raise ValueError("at least one profile field is required")
        return self


class LimitSetting(_Body):
    kind: LimitKind
    period: Period
    # null removes the limit, which counts as an increase and waits out the cooling-off.
    value: Annotated[StrictInt, Field(gt=0, le=10**15)] | None

    @model_validator(mode="after")
    def _session_time_per_day(self) -> LimitSetting:
        if self.kind == "session_time" and self.period != "day":
            raise ValueError("session_time limits are per day only")
        if self.kind == "session_time" and self.value is not None and self.value > 24 * 60:
            raise ValueError("session_time is in minutes and at most 1440")
        return self


class LimitsUpdate(_Body):
    limits: Annotated[list[LimitSetting], Field(min_length=1, max_length=10)]

    @model_validator(mode="after")
    def _unique(self) -> LimitsUpdate:
        keys = [(s.kind, s.period) for s in self.limits]
        if len(keys) != len(set(keys)):
            raise ValueError("each (kind, period) may appear once")
        return self


class ExclusionCreate(_Body):
    kind: Literal["timeout", "self_exclusion"]
    duration_hours: Annotated[StrictInt, Field(ge=24, le=24 * 7 * 6)] | None = None
    duration_months: Annotated[StrictInt, Field(ge=6, le=1200)] | None = None
    indefinite: StrictBool = False
    reason: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ExclusionCreate:
        if self.kind == "timeout":
            if self.duration_hours is None or self.duration_months is not None or self.indefinite:
                raise ValueError("a timeout takes duration_hours (24 to 1008) only")
        elif self.duration_hours is not None or (self.indefinite == (self.duration_months is not None)):
            raise ValueError("a self_exclusion takes either duration_months (at least 6) or indefinite: true")
        return self


class BlockCreate(_Body):
    kind: BlockKind
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class DepositAuthorizationRequest(_Body):
    tx_id: IdKey
    amount_minor: AmountMinor
    currency: Currency


class Remaining(BaseModel):
    kind: LimitKind
    period: Period
    limit: int
    used: int
    held: int
    remaining: int


class DepositAuthorization(BaseModel):
    tx_id: str
    decision: Literal["allow", "deny"]
    reasons: list[str]
    remaining: dict[str, int | None]
    limits: list[Remaining]


PlayerStatus = Literal["active", "timed_out", "self_excluded", "blocked"]


class ExclusionPublic(Exclusion):
    active: bool


class PlayerPublic(BaseModel):
    player_id: UUID
    brand: str
    home_region: str
    version: int
    registered_at: datetime
    updated_at: datetime
    profile: Profile
    status: PlayerStatus
    limits: list[Limit]
    pending_limits: list[PendingLimit]
    exclusions: list[ExclusionPublic]
    blocks: list[Block]
    holds_minor: int
    remaining: list[Remaining]
    today: Counters
    lifetime: Lifetime
    ggr_today_minor: int
    ggr_lifetime_minor: int


class EventOutcome(BaseModel):
    event_id: str | None
    index: int
    status: Literal["accepted", "duplicate", "rejected"]
    reason: str | None = None


class EventBatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventOutcome]


def public_dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")

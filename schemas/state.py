"""The stored state of one player: the single versioned model a player actor holds.

It is persisted as a snapshot (with the journal sequence number it reflects) and rebuilt
by replaying journal entries after it; nothing else keeps a copy of a profile.
"""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

LimitKind = Literal["deposit", "loss", "wager", "session_time"]
Period = Literal["day", "week", "month"]
LimitSource = Literal["player", "operator"]
ExclusionKind = Literal["timeout", "self_exclusion"]
BlockKind = Literal["fraud", "kyc", "aml"]


class _Stored(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Profile(_Stored):
    currency: str
    country: str
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    birth_date: date | None = None
    language: str | None = None
    traffic_source: str | None = None


class Limit(_Stored):
    kind: LimitKind
    period: Period
    value: int  # minor units of the player's currency; minutes for session_time
    source: LimitSource = "player"
    set_at: datetime


class PendingLimit(_Stored):
    """An increase (or removal, value None) waiting out its cooling-off period."""

    kind: LimitKind
    period: Period
    value: int | None
    source: LimitSource = "player"
    requested_at: datetime
    effective_at: datetime


class Exclusion(_Stored):
    exclusion_id: str
    kind: ExclusionKind
    started_at: datetime
    ends_at: datetime | None  # None: indefinite
    reason: str | None = None


class Block(_Stored):
    kind: BlockKind
    reason: str
    placed_by: str
    placed_at: datetime


class Hold(_Stored):
    amount_minor: int
    created_at: datetime
    expires_at: datetime


class Counters(_Stored):
    deposits_count: int = 0
    deposits_minor: int = 0
    withdrawals_count: int = 0
    withdrawals_minor: int = 0
    bets_count: int = 0
    bets_minor: int = 0
    wins_count: int = 0
    wins_minor: int = 0
    sessions: int = 0
    session_seconds: int = 0


class Lifetime(Counters):
    first_deposit_at: datetime | None = None
    last_deposit_at: datetime | None = None
    last_activity_at: datetime | None = None


class Crm(_Stored):
    """What the CRM features need beyond the counters (domain/counters.py records it)."""

    device: str | None = None  # of the latest session.started
    # Stakes per game category over the days kept in `days` (ISO date -> category -> minor units):
    # the favourite category of the last 30 days. At most MAX_CATEGORIES categories a day.
    stakes: dict[str, dict[str, int]] = Field(default_factory=dict)
    reactivated_at: datetime | None = None  # activity after 30 days without any


class StoredResult(_Stored):
    """The first answer to an idempotent command, returned again to a retry."""

    fingerprint: str
    status: int
    # The answer as JSON text: parsed only when a retry comes, not at every turn of the player.
    body: str | None = None  # None: answer with the player's current view

    @field_validator("body", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        # Snapshots written before answers were kept as text hold them as objects.
        return json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else value


class PlayerState(_Stored):
    player_id: UUID
    brand: str
    home_region: str
    registered_at: datetime
    updated_at: datetime
    profile: Profile
    limits: list[Limit] = Field(default_factory=list)
    pending_limits: list[PendingLimit] = Field(default_factory=list)
    exclusions: list[Exclusion] = Field(default_factory=list)
    blocks: list[Block] = Field(default_factory=list)
    holds: dict[str, Hold] = Field(default_factory=dict)
    open_sessions: dict[str, datetime] = Field(default_factory=dict)
    days: dict[str, Counters] = Field(default_factory=dict)  # ISO date (UTC) -> that day's counters
    lifetime: Lifetime = Field(default_factory=Lifetime)
    results: dict[str, StoredResult] = Field(default_factory=dict)
    crm: Crm = Field(default_factory=Crm)


def encode_state(state: PlayerState) -> bytes:
    """Compact JSON (defaults left out): the form the actor cache and snapshots hold."""
    return state.model_dump_json(exclude_defaults=True).encode()


def decode_state(data: bytes) -> PlayerState:
    return PlayerState.model_validate_json(data)

"""The CRM feature catalogue: what a segment rule can test, one row per player.

The catalogue is data: each `FeatureSpec` names a feature, its kind, unit, description and the
numpy dtype its column is stored in (`domain.segments.FeatureMatrix`). The kinds:

- `int`: counts and money. Money is integer minor units of the brand's reporting currency (the
  feature builder converts); counts are non-negative.
- `float`: ratios and model scores, stored as float32. Rule values are rounded to float32 too, so a
  rule compares exactly what is stored.
- `bool`: flags.
- `category`: a closed vocabulary listed here (codes are the vocabulary index: append only).
- `code`: an open vocabulary (country, language, traffic source...) interned per matrix to small ints.
- `timestamp`: a UTC instant kept at minute resolution (int32 minutes since the Unix epoch).

Every feature may be missing (null): a player who never deposited has no `first_deposit_at`. Nulls
never satisfy a comparison; `is_null` tests them. The sentinel each dtype uses for null is in
`NULL_SENTINEL` (`domain.segments` owns the storage; the values are listed here so that the README
and the storage agree).

`FeatureRow` is one player's values as a pydantic model: the input of `FeatureMatrix.upsert`, the
input of the plain-Python reference evaluator, and what tests generate. This module imports no
numpy: dtypes are named, their sizes and ranges tabulated.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, StrictBool, StrictInt, ValidationInfo, field_validator

FeatureKind = Literal["int", "float", "bool", "category", "code", "timestamp"]
DType = Literal["uint8", "uint16", "uint32", "int32", "int64", "float32"]

DTYPE_BYTES: dict[str, int] = {"uint8": 1, "uint16": 2, "uint32": 4, "int32": 4, "int64": 8, "float32": 4}

# Null sentinels: unsigned ints use their maximum (so a count column's valid range is 0..max-1),
# signed ints their minimum, float32 NaN. bool, category and code columns are uint8/uint16 codes.
NULL_SENTINEL: dict[str, int | float] = {
    "uint8": 2**8 - 1, "uint16": 2**16 - 1, "uint32": 2**32 - 1,
    "int32": -(2**31), "int64": -(2**63), "float32": float("nan"),
}

# Valid (non-null) range of an integer dtype: everything but the sentinel.
INT_RANGE: dict[str, tuple[int, int]] = {
    "uint8": (0, 2**8 - 2), "uint16": (0, 2**16 - 2), "uint32": (0, 2**32 - 2),
    "int32": (-(2**31) + 1, 2**31 - 1), "int64": (-(2**63) + 1, 2**63 - 1),
}

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Timestamps must fit int32 minutes; a narrower, plausible span also catches unit mistakes
# (seconds passed as milliseconds land far outside it).
TIMESTAMP_MIN = EPOCH
TIMESTAMP_MAX = datetime(2200, 1, 1, tzinfo=UTC)

MAX_BYTES_PER_PLAYER = 200
CODE_MAX_LEN = 64


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    name: str
    kind: FeatureKind
    dtype: DType
    unit: str
    description: str
    vocabulary: tuple[str, ...] = ()  # category features only
    nonnegative: bool = True  # int features: counts and one-sided sums cannot be negative

    @property
    def nbytes(self) -> int:
        return DTYPE_BYTES[self.dtype]


def _f(name: str, kind: FeatureKind, dtype: DType, unit: str, description: str, *,
       vocabulary: tuple[str, ...] = (), nonnegative: bool = True) -> FeatureSpec:
    return FeatureSpec(name, kind, dtype, unit, description, vocabulary, nonnegative)


DEVICES = ("desktop", "mobile_web", "ios", "android", "tablet")
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
LIFECYCLE_STAGES = ("new", "first_deposit", "active", "lapsing", "churned", "reactivated")

MINOR = "minor units"

FEATURES: tuple[FeatureSpec, ...] = (
    # -- lifecycle timestamps (recency is a window on these: a stored "days since" would go stale)
    _f("registered_at", "timestamp", "int32", "UTC minute", "When the account was registered."),
    _f("first_deposit_at", "timestamp", "int32", "UTC minute", "First successful deposit; null if none yet."),
    _f("last_deposit_at", "timestamp", "int32", "UTC minute", "Latest successful deposit; null if none yet."),
    _f("last_active_at", "timestamp", "int32", "UTC minute",
       "Latest session, bet or payment: recency is `within`/`not_within` on it."),
    # -- activity
    _f("active_1d", "bool", "uint8", "flag", "Active in the last day (counts towards DAU)."),
    _f("active_7d", "bool", "uint8", "flag", "Active in the last 7 days (WAU)."),
    _f("active_30d", "bool", "uint8", "flag", "Active in the last 30 days (MAU)."),
    _f("active_days_30d", "int", "uint8", "days", "Distinct days with activity in the last 30 days."),
    _f("sessions_1d", "int", "uint16", "sessions", "Sessions started in the last day."),
    _f("sessions_7d", "int", "uint16", "sessions", "Sessions started in the last 7 days."),
    _f("sessions_30d", "int", "uint16", "sessions", "Sessions started in the last 30 days."),
    _f("avg_session_minutes_1d", "float", "float32", "minutes", "Mean session length over the last day."),
    _f("avg_session_minutes_7d", "float", "float32", "minutes", "Mean session length over the last 7 days."),
    _f("avg_session_minutes_30d", "float", "float32", "minutes", "Mean session length over the last 30 days."),
    # -- payments (money: minor units of the brand's reporting currency)
    _f("deposits_count_1d", "int", "uint16", "deposits", "Successful deposits in the last day."),
    _f("deposits_count_7d", "int", "uint16", "deposits", "Successful deposits in the last 7 days."),
    _f("deposits_count_30d", "int", "uint16", "deposits", "Successful deposits in the last 30 days."),
    _f("deposits_count_lifetime", "int", "uint32", "deposits", "Successful deposits since registration."),
    _f("deposits_sum_7d", "int", "int64", MINOR, "Sum of successful deposits in the last 7 days."),
    _f("deposits_sum_30d", "int", "int64", MINOR, "Sum of successful deposits in the last 30 days."),
    _f("deposits_sum_lifetime", "int", "int64", MINOR, "Sum of successful deposits since registration."),
    _f("withdrawals_count_30d", "int", "uint16", "withdrawals", "Paid-out withdrawals in the last 30 days."),
    _f("withdrawals_sum_30d", "int", "int64", MINOR, "Sum of paid-out withdrawals in the last 30 days."),
    _f("withdrawals_sum_lifetime", "int", "int64", MINOR, "Sum of paid-out withdrawals since registration."),
    _f("bets_count_1d", "int", "uint32", "bets", "Bets (spins, hands, bet slips) in the last day."),
    _f("bets_count_7d", "int", "uint32", "bets", "Bets in the last 7 days."),
    _f("bets_count_30d", "int", "uint32", "bets", "Bets in the last 30 days."),
    _f("bets_sum_30d", "int", "int64", MINOR, "Total stakes in the last 30 days."),
    _f("ggr_30d", "int", "int64", MINOR, "Gross gaming revenue (stakes - wins) in the last 30 days; may be negative.",
       nonnegative=False),
    _f("ggr_lifetime", "int", "int64", MINOR, "Gross gaming revenue since registration; may be negative.",
       nonnegative=False),
    _f("ngr_30d", "int", "int64", MINOR, "Net gaming revenue (GGR - bonus cost - taxes) in the last 30 days.",
       nonnegative=False),
    _f("ngr_lifetime", "int", "int64", MINOR, "Net gaming revenue since registration.", nonnegative=False),
    _f("net_loss_30d", "int", "int64", MINOR, "Deposits - withdrawals in the last 30 days; negative: net winner.",
       nonnegative=False),
    _f("net_loss_lifetime", "int", "int64", MINOR, "Deposits - withdrawals since registration.", nonnegative=False),
    _f("bonus_use_ratio", "float", "float32", "ratio 0..1", "Share of stakes placed with bonus money (30 days)."),
    _f("churn_risk", "float", "float32", "score 0..1", "Churn model score: probability of no activity in 30 days."),
    # -- profile and acquisition
    _f("favourite_game_category", "code", "uint8", "code", "Game category with the most stakes (30 days)."),
    _f("device", "category", "uint8", "category", "Device of the latest session.", vocabulary=DEVICES),
    _f("country", "code", "uint8", "ISO 3166-1 alpha-2", "Country of residence (KYC)."),
    _f("region", "code", "uint16", "ISO 3166-2", "Subdivision of residence (state, province)."),
    _f("language", "code", "uint8", "BCP 47", "Preferred language."),
    _f("currency", "code", "uint8", "ISO 4217", "Wallet currency."),
    _f("age_band", "category", "uint8", "category", "Age band from the date of birth.", vocabulary=AGE_BANDS),
    _f("lifecycle_stage", "category", "uint8", "category",
       "new (no deposit), first_deposit (one), active, lapsing (7-30 days idle), churned (>30 days idle), "
       "reactivated (active again after churned).", vocabulary=LIFECYCLE_STAGES),
    _f("traffic_source", "code", "uint16", "code", "Acquisition source (affiliate, campaign, organic...)."),
    _f("marketing_consent", "bool", "uint8", "flag", "Opted in to marketing messages."),
    _f("self_excluded", "bool", "uint8", "flag", "Under an active self-exclusion: campaigns must exclude them."),
)

CATALOGUE: dict[str, FeatureSpec] = {f.name: f for f in FEATURES}


def bytes_per_player(features: tuple[FeatureSpec, ...] = FEATURES) -> int:
    """Bytes the feature columns take per player (without the player-id columns)."""
    return sum(f.nbytes for f in features)


def float32(value: float) -> float:
    """`value` rounded to the nearest float32: what a float32 column stores."""
    return float(struct.unpack("f", struct.pack("f", value))[0])


def to_minute(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(second=0, microsecond=0)


def epoch_minutes(value: datetime) -> int:
    return (value.astimezone(UTC) - EPOCH) // timedelta(minutes=1)


def int_range(spec: FeatureSpec) -> tuple[int, int]:
    lo, hi = INT_RANGE[spec.dtype]
    return (max(lo, 0) if spec.nonnegative else lo), hi


def normalise(spec: FeatureSpec, value: Any) -> Any:
    """A feature value as stored (minute, float32), or ValueError naming what is wrong. None is null."""
    if value is None:
        return None
    kind = spec.kind
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError("expected true or false")
        return value
    if isinstance(value, bool):
        raise ValueError(f"expected {'a number' if kind in ('int', 'float') else 'a string'}, got a boolean")
    if kind == "int":
        if not isinstance(value, int):
            raise ValueError("expected an integer")
        lo, hi = int_range(spec)
        if not lo <= value <= hi:
            raise ValueError(f"out of range {lo}..{hi}")
        return value
    if kind == "float":
        if not isinstance(value, int | float) or value != value or value in (float("inf"), float("-inf")):
            raise ValueError("expected a finite number")
        stored = float32(float(value))
        if stored in (float("inf"), float("-inf")):
            raise ValueError("out of float32 range")
        return stored
    if kind == "timestamp":
        if not isinstance(value, datetime) or value.utcoffset() is None:
            raise ValueError("expected a timezone-aware timestamp")
        if not TIMESTAMP_MIN <= value < TIMESTAMP_MAX:
            raise ValueError(f"outside {TIMESTAMP_MIN.date()}..{TIMESTAMP_MAX.date()}")
        return to_minute(value)
    if not isinstance(value, str):
        raise ValueError("expected a string")
    if kind == "category" and value not in spec.vocabulary:
        raise ValueError(f"not one of {', '.join(spec.vocabulary)}")
    if kind == "code" and not 1 <= len(value) <= CODE_MAX_LEN:
        raise ValueError(f"expected 1..{CODE_MAX_LEN} characters")
    return value


class FeatureRow(BaseModel):
    """One player's features; None is a missing value. Values are normalised on validation to what a
    column stores (timestamps truncated to the minute, floats rounded to float32)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    registered_at: datetime | None = None
    first_deposit_at: datetime | None = None
    last_deposit_at: datetime | None = None
    last_active_at: datetime | None = None
    active_1d: StrictBool | None = None
    active_7d: StrictBool | None = None
    active_30d: StrictBool | None = None
    active_days_30d: StrictInt | None = None
    sessions_1d: StrictInt | None = None
    sessions_7d: StrictInt | None = None
    sessions_30d: StrictInt | None = None
    avg_session_minutes_1d: float | None = None
    avg_session_minutes_7d: float | None = None
    avg_session_minutes_30d: float | None = None
    deposits_count_1d: StrictInt | None = None
    deposits_count_7d: StrictInt | None = None
    deposits_count_30d: StrictInt | None = None
    deposits_count_lifetime: StrictInt | None = None
    deposits_sum_7d: StrictInt | None = None
    deposits_sum_30d: StrictInt | None = None
    deposits_sum_lifetime: StrictInt | None = None
    withdrawals_count_30d: StrictInt | None = None
    withdrawals_sum_30d: StrictInt | None = None
    withdrawals_sum_lifetime: StrictInt | None = None
    bets_count_1d: StrictInt | None = None
    bets_count_7d: StrictInt | None = None
    bets_count_30d: StrictInt | None = None
    bets_sum_30d: StrictInt | None = None
    ggr_30d: StrictInt | None = None
    ggr_lifetime: StrictInt | None = None
    ngr_30d: StrictInt | None = None
    ngr_lifetime: StrictInt | None = None
    net_loss_30d: StrictInt | None = None
    net_loss_lifetime: StrictInt | None = None
    bonus_use_ratio: float | None = None
    churn_risk: float | None = None
    favourite_game_category: str | None = None
    device: str | None = None
    country: str | None = None
    region: str | None = None
    language: str | None = None
    currency: str | None = None
    age_band: str | None = None
    lifecycle_stage: str | None = None
    traffic_source: str | None = None
    marketing_consent: StrictBool | None = None
    self_excluded: StrictBool | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        spec = CATALOGUE[str(info.field_name)]
        if isinstance(value, bool) and spec.kind != "bool":
            raise ValueError("expected a number, got a boolean" if spec.kind in ("int", "float")
                             else "expected a string or timestamp, got a boolean")
        return value

    @field_validator("*")
    @classmethod
    def _normalise(cls, value: Any, info: ValidationInfo) -> Any:
        return normalise(CATALOGUE[str(info.field_name)], value)


# The catalogue and the row model must list the same features in the same order.
assert tuple(FeatureRow.model_fields) == tuple(CATALOGUE), "FeatureRow and FEATURES disagree"

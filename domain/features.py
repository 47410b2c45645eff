"""A player's CRM features from the state its actor holds, and the packed form they are stored and
pushed in.

`features_of(state, now)` fills the catalogue (schemas/features.py) from the player's counters and
profile. Windows are whole UTC days including today, like the limit windows (domain/limits.py):
`_1d` is today, `_7d` the last 7 days, `_30d` the last 30. A day is *active* when the player started
a session, placed a bet or deposited (the churn model's definition). Money is in minor units of the
player's wallet currency (no conversion yet: a rule on amounts should also test `currency`).

Null because the platform does not send the data yet: `ngr_30d`, `ngr_lifetime` (bonus cost and
taxes), `bonus_use_ratio` (bonus stakes), `region` (subdivision of residence), `marketing_consent`.
`device` is null for an app or "other" session (the platform does not say iOS or Android).
`churn_risk` comes from the `churn` scorer if given; the shards pass none and the segment engine
overlays the score of its model (actors/segments.py).

Stored form (`pack`/`unpack_columns`): the non-code features packed little-endian in catalogue order,
each in its storage dtype with its null sentinel (so a row is ~170 bytes and a million rows decode
with one numpy call), and the open-vocabulary (code) features as strings joined by U+001F. The
catalogue only ever appends, so a row written before a feature existed is shorter and decodes with
that feature null.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import numpy as np

from domain import exclusions
from schemas.features import (
    AGE_BANDS,
    EPOCH,
    FEATURES,
    NULL_SENTINEL,
    FeatureRow,
    FeatureSpec,
    epoch_minutes,
)
from schemas.state import Counters, PlayerState

WINDOWS = (1, 7, 30)
LAPSING = timedelta(days=7)
CHURNED = timedelta(days=30)
# Session devices the platform sends -> the catalogue's device vocabulary (None: cannot tell).
DEVICE_OF = {"desktop": "desktop", "mobile": "mobile_web", "tablet": "tablet"}
SEP = "\x1f"


class ChurnScorer(Protocol):
    def __call__(self, state: PlayerState, now: datetime) -> float | None: ...


def _age_band(born: date | None, today: date) -> str | None:
    if born is None:
        return None
    age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if age < 18:
        return None
    for band, upper in zip(AGE_BANDS, (24, 34, 44, 54, 64), strict=False):
        if age <= upper:
            return band
    return AGE_BANDS[-1]


def _active(c: Counters) -> bool:
    return c.sessions > 0 or c.bets_count > 0 or c.deposits_count > 0


def _avg_minutes(sessions: int, seconds: int) -> float | None:
    return seconds / sessions / 60.0 if sessions else None


def _cap(value: int, spec_max: int) -> int:
    return min(value, spec_max)


U16 = 2**16 - 2
U32 = 2**32 - 2


def lifecycle(state: PlayerState, now: datetime) -> str:
    life = state.lifetime
    last = life.last_activity_at
    if last is not None and now - last > CHURNED:
        return "churned"
    if last is not None and now - last > LAPSING:
        return "lapsing"
    reactivated = state.crm.reactivated_at
    if reactivated is not None and now - reactivated <= CHURNED:
        return "reactivated"
    if life.deposits_count == 0:
        return "new"
    if life.deposits_count == 1:
        return "first_deposit"
    return "active"


def features_of(state: PlayerState, now: datetime, churn: ChurnScorer | None = None) -> FeatureRow:
    """The player's feature row at `now` (see the module docstring for windows and nulls)."""
    today = now.date()
    # Sums per window, one pass over the (at most 30) day buckets.
    sums = {w: [0] * 10 for w in WINDOWS}  # sessions, secs, dep n, dep sum, wd n, wd sum, bets n, bets sum, wins, act
    for key, c in state.days.items():
        age = (today - date.fromisoformat(key)).days
        if age < 0:
            age = 0  # an event a few minutes in the future (tolerated at ingestion) counts as today
        active = 1 if _active(c) else 0
        for w in WINDOWS:
            if age < w:
                s = sums[w]
                s[0] += c.sessions
                s[1] += c.session_seconds
                s[2] += c.deposits_count
                s[3] += c.deposits_minor
                s[4] += c.withdrawals_count
                s[5] += c.withdrawals_minor
                s[6] += c.bets_count
                s[7] += c.bets_minor
                s[8] += c.wins_minor
                s[9] += active
    d1, d7, d30 = sums[1], sums[7], sums[30]
    life = state.lifetime
    favourite: dict[str, int] = {}
    for key, cats in state.crm.stakes.items():
        if (today - date.fromisoformat(key)).days < 30:
            for cat, amount in cats.items():
                favourite[cat] = favourite.get(cat, 0) + amount
    fav = min(favourite, key=lambda k: (-favourite[k], k)) if favourite else None
    device = DEVICE_OF.get(state.crm.device or "")
    score = churn(state, now) if churn is not None else None
    return FeatureRow(
        registered_at=state.registered_at,
        first_deposit_at=life.first_deposit_at,
        last_deposit_at=life.last_deposit_at,
        last_active_at=life.last_activity_at,
        active_1d=d1[9] > 0,
        active_7d=d7[9] > 0,
        active_30d=d30[9] > 0,
        active_days_30d=d30[9],
        sessions_1d=_cap(d1[0], U16),
        sessions_7d=_cap(d7[0], U16),
        sessions_30d=_cap(d30[0], U16),
        avg_session_minutes_1d=_avg_minutes(d1[0], d1[1]),
        avg_session_minutes_7d=_avg_minutes(d7[0], d7[1]),
        avg_session_minutes_30d=_avg_minutes(d30[0], d30[1]),
        deposits_count_1d=_cap(d1[2], U16),
        deposits_count_7d=_cap(d7[2], U16),
        deposits_count_30d=_cap(d30[2], U16),
        deposits_count_lifetime=_cap(life.deposits_count, U32),
        deposits_sum_7d=d7[3],
        deposits_sum_30d=d30[3],
        deposits_sum_lifetime=life.deposits_minor,
        withdrawals_count_30d=_cap(d30[4], U16),
        withdrawals_sum_30d=d30[5],
        withdrawals_sum_lifetime=life.withdrawals_minor,
        bets_count_1d=_cap(d1[6], U32),
        bets_count_7d=_cap(d7[6], U32),
        bets_count_30d=_cap(d30[6], U32),
        bets_sum_30d=d30[7],
        ggr_30d=d30[7] - d30[8],
        ggr_lifetime=life.bets_minor - life.wins_minor,
        net_loss_30d=d30[3] - d30[5],
        net_loss_lifetime=life.deposits_minor - life.withdrawals_minor,
        churn_risk=score,
        favourite_game_category=fav,
        device=device,
        country=state.profile.country,
        language=state.profile.language,
        currency=state.profile.currency,
        age_band=_age_band(state.profile.birth_date, today),
        lifecycle_stage=lifecycle(state, now),
        traffic_source=state.profile.traffic_source or None,
        self_excluded=any(e.kind == "self_exclusion" and exclusions.is_active(e, now) for e in state.exclusions),
    )


def day_number(day: date) -> int:
    return (day - date(1970, 1, 1)).days


@dataclass(frozen=True, slots=True)
class Activity:
    """One day of a player's activity, the churn model's history (domain/churn.py History)."""

    day: int  # days since 1970-01-01
    sessions: int
    bets: int
    deposits_minor: int
    net_loss_minor: int  # stakes minus wins


def recent_activity(state: PlayerState, now: datetime, days: int = 2) -> list[Activity]:
    """The player's activity of the last `days` UTC days (today included) that had any counters."""
    today = now.date()
    out = []
    for key, c in state.days.items():
        d = date.fromisoformat(key)
        if 0 <= (today - d).days < days:
            out.append(Activity(day_number(d), c.sessions, c.bets_count, c.deposits_minor,
                                c.bets_minor - c.wins_minor))
    return out


# ---------------------------------------------------------------------------- stored form


NUMERIC: tuple[FeatureSpec, ...] = tuple(f for f in FEATURES if f.kind != "code")
CODES: tuple[FeatureSpec, ...] = tuple(f for f in FEATURES if f.kind == "code")
_CHAR = {"uint8": "B", "uint16": "H", "uint32": "I", "int32": "i", "int64": "q", "float32": "f"}
_STRUCT = struct.Struct("<" + "".join(_CHAR[f.dtype] for f in NUMERIC))
ROW_DTYPE = np.dtype([(f.name, "<" + np.dtype(f.dtype).str[1:]) for f in NUMERIC])
ROW_BYTES = _STRUCT.size
_CATEGORY_CODES = {f.name: {v: i for i, v in enumerate(f.vocabulary)} for f in NUMERIC if f.kind == "category"}


def _sentinel(spec: FeatureSpec) -> int | float:
    return NULL_SENTINEL[spec.dtype]


NULL_ROW = _STRUCT.pack(*(_sentinel(f) for f in NUMERIC))
assert ROW_DTYPE.itemsize == ROW_BYTES


def pack(row: FeatureRow) -> tuple[bytes, str]:
    """(numeric features packed, code features joined): the stored and pushed form of a row."""
    values: list[Any] = []
    for spec in NUMERIC:
        v = getattr(row, spec.name)
        if v is None:
            values.append(_sentinel(spec))
        elif spec.kind == "timestamp":
            values.append(epoch_minutes(v))
        elif spec.kind == "bool":
            values.append(1 if v else 0)
        elif spec.kind == "category":
            values.append(_CATEGORY_CODES[spec.name][v])
        else:
            values.append(v)
    codes = SEP.join(getattr(row, f.name) or "" for f in CODES)
    return _STRUCT.pack(*values), codes


def unpack_columns(blobs: Sequence[bytes], codes: Sequence[str]) -> dict[str, np.ndarray[Any, Any]]:
    """Columns of many packed rows in the form `FeatureMatrix.bulk_load` takes: numbers in their
    storage dtype with sentinels, timestamps as datetime64[m] (NaT: null), category and code features
    as strings (None: null). A row shorter than the current layout gets nulls for the missing tail."""
    n = len(blobs)
    joined = b"".join(b if len(b) == ROW_BYTES else (b + NULL_ROW[len(b):])[:ROW_BYTES] for b in blobs)
    table = np.frombuffer(joined, dtype=ROW_DTYPE, count=n)
    out: dict[str, np.ndarray[Any, Any]] = {}
    for spec in NUMERIC:
        col = table[spec.name]
        if spec.kind == "timestamp":
            minutes = col.astype(np.int64)
            stamps = minutes.view("datetime64[m]").copy()
            stamps[col == _sentinel(spec)] = np.datetime64("NaT")
            out[spec.name] = stamps
        elif spec.kind == "category":
            vocab = np.array([*spec.vocabulary, None], dtype=object)
            idx = col.astype(np.int64)
            idx[idx >= len(spec.vocabulary)] = len(spec.vocabulary)
            out[spec.name] = vocab[idx]
        else:
            out[spec.name] = col.astype(np.dtype(spec.dtype))
    if CODES:
        split = [c.split(SEP) for c in codes]
        for j, spec in enumerate(CODES):
            out[spec.name] = np.array([(parts[j] if j < len(parts) and parts[j] else None) for parts in split],
                                      dtype=object)
    return out


def unpack(blob: bytes, codes: str) -> FeatureRow:
    """One packed row back as a FeatureRow (display, tests)."""
    cols = unpack_columns([blob], [codes])
    values: dict[str, Any] = {}
    for spec in FEATURES:
        v = cols[spec.name][0]
        if spec.kind == "timestamp":
            values[spec.name] = None if np.isnat(v) else EPOCH + timedelta(minutes=int(v.astype(np.int64)))
        elif spec.kind in ("category", "code"):
            values[spec.name] = v
        elif spec.kind == "float":
            values[spec.name] = None if np.isnan(v) else float(v)
        elif v == _sentinel(spec):
            values[spec.name] = None
        elif spec.kind == "bool":
            values[spec.name] = bool(v)
        else:
            values[spec.name] = int(v)
    return FeatureRow.model_validate(values)


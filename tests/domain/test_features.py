"""Player features from the actor's state, and their packed stored form."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from domain.features import (
    NULL_ROW,
    ROW_BYTES,
    features_of,
    lifecycle,
    pack,
    recent_activity,
    unpack,
    unpack_columns,
)
from domain.player import decide
from schemas.features import FEATURES, FeatureRow, to_minute
from schemas.state import PlayerState
from tests.domain.helpers import T0, deposit, event, player

KINDS = ("session", "deposit", "withdrawal", "bet", "win")


def apply(state: PlayerState, cmd: Any, now: datetime) -> PlayerState:
    return decide(state, cmd, now, 1).state


def session(state: PlayerState, at: datetime, device: str = "desktop", seconds: int = 600) -> PlayerState:
    sid = uuid.uuid4().hex
    state = apply(state, event(state, "session.started", {"session_id": sid, "device": device}, at), at)
    return apply(state, event(state, "session.ended", {"session_id": sid, "duration_s": seconds}, at), at)


def money(state: PlayerState, kind: str, amount: int, at: datetime, category: str = "slots") -> PlayerState:
    cur = state.profile.currency
    if kind == "deposit":
        return apply(state, deposit(state, amount, at=at), at)
    if kind == "withdrawal":
        payload = {"tx_id": uuid.uuid4().hex, "status": "paid", "amount_minor": amount, "currency": cur}
        return apply(state, event(state, "payment.withdrawal", payload, at), at)
    type_ = "game.bet" if kind == "bet" else "game.win"
    payload = {"bet_id": uuid.uuid4().hex, "game_id": "g", "game_category": category, "amount_minor": amount,
               "currency": cur}
    return apply(state, event(state, type_, payload, at), at)


events = st.lists(st.tuples(st.sampled_from(KINDS), st.integers(0, 29), st.integers(1, 10_000)), max_size=25)


@settings(max_examples=60, deadline=None)
@given(events)
def test_window_features_equal_sums_over_the_events_of_their_days(evs: list[tuple[str, int, int]]) -> None:
    now = T0
    state = player(at=now - timedelta(days=40))
    for kind, age, amount in evs:
        at = now - timedelta(days=age)
        state = session(state, at, seconds=amount) if kind == "session" else money(state, kind, amount, at)
    row = features_of(state, now)

    def total(kind: str, days: int, count: bool = False) -> int:
        got = [a for k, age, a in evs if k == kind and age < days]
        return len(got) if count else sum(got)

    for w in (1, 7, 30):
        assert getattr(row, f"sessions_{w}d") == total("session", w, True)
        assert getattr(row, f"deposits_count_{w}d") == total("deposit", w, True)
        assert getattr(row, f"bets_count_{w}d") == total("bet", w, True)
        active_days = {age for k, age, _ in evs if k in ("session", "deposit", "bet") and age < w}
        assert getattr(row, f"active_{w}d") is bool(active_days)
        sessions = total("session", w, True)
        expected_avg = total("session", w) / sessions / 60 if sessions else None
        avg = getattr(row, f"avg_session_minutes_{w}d")
        assert (avg is None) == (expected_avg is None)
        if avg is not None and expected_avg is not None:
            assert abs(avg - expected_avg) <= 1e-6 * max(1.0, expected_avg)
    assert row.active_days_30d == len({age for k, age, _ in evs if k in ("session", "deposit", "bet")})
    assert row.deposits_sum_7d == total("deposit", 7)
    assert row.deposits_sum_30d == row.deposits_sum_lifetime == total("deposit", 30)
    assert row.withdrawals_sum_30d == total("withdrawal", 30)
    assert row.ggr_30d == row.ggr_lifetime == total("bet", 30) - total("win", 30)
    assert row.net_loss_30d == total("deposit", 30) - total("withdrawal", 30)
    assert row.bets_sum_30d == total("bet", 30)


def test_a_new_player_has_counts_of_zero_and_nulls_for_what_never_happened() -> None:
    state = player(at=T0)
    row = features_of(state, T0)
    assert row.registered_at == to_minute(T0)
    assert row.first_deposit_at is None and row.last_active_at is None
    assert row.sessions_30d == 0 and row.active_30d is False and row.avg_session_minutes_30d is None
    assert row.lifecycle_stage == "new" and row.country == "MT" and row.currency == "EUR"
    # Not sent by the platform yet:
    assert row.ngr_30d is None and row.bonus_use_ratio is None and row.region is None
    assert row.marketing_consent is None and row.churn_risk is None
    assert row.self_excluded is False


def test_lifecycle_follows_deposits_and_idle_time() -> None:
    state = player(at=T0 - timedelta(days=100))
    state = money(state, "deposit", 100, T0 - timedelta(days=90))
    assert lifecycle(state, T0 - timedelta(days=90)) == "first_deposit"
    state = money(state, "deposit", 100, T0 - timedelta(days=89))
    assert lifecycle(state, T0 - timedelta(days=89)) == "active"
    assert lifecycle(state, T0 - timedelta(days=80)) == "lapsing"
    assert lifecycle(state, T0 - timedelta(days=50)) == "churned"
    state = money(state, "bet", 10, T0 - timedelta(days=5))
    assert state.crm.reactivated_at == T0 - timedelta(days=5)
    assert lifecycle(state, T0 - timedelta(days=5)) == "reactivated"
    assert lifecycle(state, T0 + timedelta(days=20)) == "lapsing"  # idle again for 25 days


def test_favourite_category_is_the_most_staked_in_30_days_and_device_the_latest_session() -> None:
    state = player(at=T0 - timedelta(days=60))
    state = money(state, "bet", 5000, T0 - timedelta(days=29), "live")  # old enough to be pruned below
    state = money(state, "bet", 300, T0 - timedelta(days=2), "slots")
    state = money(state, "bet", 200, T0 - timedelta(days=1), "table")
    state = money(state, "bet", 200, T0, "table")
    assert features_of(state, T0 + timedelta(days=1)).favourite_game_category == "table"
    assert features_of(state, T0).favourite_game_category == "live"
    state = session(state, T0, device="mobile")
    assert features_of(state, T0).device == "mobile_web"
    state = session(state, T0, device="app")
    assert features_of(state, T0).device is None  # iOS or Android: the platform does not say


def test_age_band_from_the_birth_date() -> None:
    state = player(at=T0)
    for born, band in ((date(2008, 3, 2), None), (date(2008, 3, 1), "18-24"), (date(1991, 3, 2), "25-34"),
                       (date(1961, 3, 1), "65+"), (date(1962, 3, 2), "55-64")):
        state.profile.birth_date = born
        assert features_of(state, T0).age_band == band, born


def test_a_churn_scorer_fills_churn_risk() -> None:
    state = player(at=T0)
    assert features_of(state, T0, lambda s, now: 0.25).churn_risk == 0.25


def test_recent_activity_reports_today_and_yesterday() -> None:
    state = player(at=T0 - timedelta(days=10))
    state = money(state, "bet", 50, T0 - timedelta(days=3))
    state = money(state, "bet", 70, T0 - timedelta(days=1))
    state = money(state, "win", 20, T0 - timedelta(days=1))
    state = money(state, "deposit", 900, T0)
    got = {a.day: a for a in recent_activity(state, T0)}
    assert len(got) == 2
    yesterday = (T0.date() - timedelta(days=1) - date(1970, 1, 1)).days
    assert got[yesterday].bets == 1 and got[yesterday].net_loss_minor == 50
    assert got[yesterday + 1].deposits_minor == 900


def _value(spec_kind: str, vocabulary: tuple[str, ...], name: str) -> st.SearchStrategy[Any]:
    spec = next(f for f in FEATURES if f.name == name)
    if spec_kind == "timestamp":
        return st.datetimes(datetime(1990, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC))
    if spec_kind == "bool":
        return st.booleans()
    if spec_kind == "category":
        return st.sampled_from(vocabulary)
    if spec_kind == "code":
        return st.text("ABCDEFGHabc-_ 0123456789", min_size=1, max_size=12)
    if spec_kind == "float":
        return st.floats(-1e6, 1e6, allow_nan=False)
    from schemas.features import int_range

    lo, hi = int_range(spec)
    return st.integers(lo, hi)


rows = st.fixed_dictionaries({}, optional={f.name: st.none() | _value(f.kind, f.vocabulary, f.name) for f in FEATURES})


@settings(max_examples=150, deadline=None)
@given(rows)
def test_a_packed_row_unpacks_to_the_same_row(values: dict[str, Any]) -> None:
    row = FeatureRow.model_validate(values)
    blob, codes = pack(row)
    assert len(blob) == ROW_BYTES
    assert unpack(blob, codes) == row


def test_a_row_written_before_later_features_existed_reads_them_as_null() -> None:
    row = features_of(money(player(at=T0), "deposit", 500, T0), T0)
    blob, codes = pack(row)
    short = blob[: ROW_BYTES - 20]
    got = unpack(short, codes)
    assert got.deposits_sum_lifetime == 500
    assert got.self_excluded is None and got.marketing_consent is None


def test_columns_of_many_rows_match_the_rows() -> None:
    a = features_of(money(player(at=T0), "deposit", 500, T0), T0)
    b = FeatureRow()
    cols = unpack_columns([pack(a)[0], NULL_ROW, pack(b)[0]], [pack(a)[1], "", pack(b)[1]])
    assert cols["deposits_sum_lifetime"].tolist()[0] == 500
    assert cols["country"].tolist() == ["MT", None, None]
    assert cols["lifecycle_stage"].tolist() == ["first_deposit", None, None]

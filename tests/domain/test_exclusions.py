from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from domain import exclusions
from domain.errors import Conflict
from domain.player import decide, status_of
from schemas.commands import AuthorizeDeposit, StartExclusion
from schemas.players import DepositAuthorizationRequest, ExclusionCreate
from tests.domain.helpers import T0, player


@given(hours=st.integers(24, 1008))
def test_a_timeout_lasts_exactly_its_hours(hours: int) -> None:
    ex = exclusions.start_exclusion([], ExclusionCreate(kind="timeout", duration_hours=hours), "x", T0)
    assert ex.ends_at == T0 + timedelta(hours=hours)


@pytest.mark.parametrize("hours", [0, 23, 1009, -5])
def test_a_timeout_outside_24_hours_to_6_weeks_is_refused(hours: int) -> None:
    with pytest.raises(ValidationError) as exc:
        ExclusionCreate(kind="timeout", duration_hours=hours)
    assert exc.value.errors()[0]["loc"] == ("duration_hours",)


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "self_exclusion", "duration_months": 5},
        {"kind": "self_exclusion"},
        {"kind": "self_exclusion", "duration_months": 6, "indefinite": True},
        {"kind": "self_exclusion", "duration_hours": 48},
    ],
)
def test_a_self_exclusion_needs_six_months_or_indefinite(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ExclusionCreate.model_validate(body)


def test_six_months_are_calendar_months() -> None:
    start = T0.replace(month=8, day=31)
    ex = exclusions.start_exclusion([], ExclusionCreate(kind="self_exclusion", duration_months=6), "x", start)
    assert ex.ends_at == start.replace(year=2027, month=2, day=28)


@given(first=st.integers(24, 1008), second=st.integers(24, 1008))
def test_an_exclusion_can_be_extended_but_never_shortened(first: int, second: int) -> None:
    ex = exclusions.start_exclusion([], ExclusionCreate(kind="timeout", duration_hours=first), "a", T0)
    later = T0 + timedelta(hours=1)
    spec = ExclusionCreate(kind="timeout", duration_hours=second)
    if later + timedelta(hours=second) < ex.ends_at:  # type: ignore[operator]
        with pytest.raises(Conflict):
            exclusions.start_exclusion([ex], spec, "b", later)
    else:
        assert exclusions.start_exclusion([ex], spec, "b", later).ends_at == later + timedelta(hours=second)


def test_nothing_replaces_an_indefinite_self_exclusion() -> None:
    ex = exclusions.start_exclusion([], ExclusionCreate(kind="self_exclusion", indefinite=True), "a", T0)
    with pytest.raises(Conflict):
        exclusions.start_exclusion([ex], ExclusionCreate(kind="self_exclusion", duration_months=1200), "b", T0)


def test_an_excluded_player_is_denied_deposits_until_it_ends() -> None:
    state = player()
    cmd = StartExclusion(
        player_id=state.player_id, brand="demo", data=ExclusionCreate(kind="timeout", duration_hours=24)
    )
    state = decide(state, cmd, T0, 0).state
    assert status_of(state, T0) == "timed_out"
    ask = AuthorizeDeposit(
        player_id=state.player_id,
        brand="demo",
        data=DepositAuthorizationRequest(tx_id="t", amount_minor=10, currency="EUR"),
    )
    assert decide(state, ask, T0 + timedelta(hours=23), 1).body["reasons"] == ["timed_out"]
    assert decide(state, ask, T0 + timedelta(hours=24), 1).body["decision"] == "allow"

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from domain import limits
from domain.player import decide
from schemas.commands import AuthorizeDeposit
from schemas.players import DepositAuthorizationRequest, LimitSetting
from schemas.state import Limit
from tests.domain.helpers import T0, deposit, player

values = st.integers(min_value=1, max_value=10**9)
periods = st.sampled_from(["day", "week", "month"])


def setting(value: int | None, period: str = "day", kind: str = "deposit") -> LimitSetting:
    return LimitSetting.model_validate({"kind": kind, "period": period, "value": value})


@given(first=values, second=values, period=periods)
def test_decrease_applies_at_once_and_increase_waits_24_hours(first: int, second: int, period: str) -> None:
    active, pending, _ = limits.set_limits([], [], [setting(first, period)], "player", T0)
    assert [lim.value for lim in active] == [first] and pending == []
    later = T0 + timedelta(hours=1)
    active, pending, _ = limits.set_limits(active, pending, [setting(second, period)], "player", later)
    if second <= first:
        assert [lim.value for lim in active] == [second] and pending == []
    else:
        assert [lim.value for lim in active] == [first]
        assert [(p.value, p.effective_at) for p in pending] == [(second, later + timedelta(hours=24))]
        before, still = limits.promote_due(active, pending, later + timedelta(hours=24) - timedelta(seconds=1))
        assert [lim.value for lim in before] == [first] and still == pending
        after, none = limits.promote_due(active, pending, later + timedelta(hours=24))
        assert [lim.value for lim in after] == [second] and none == []


@given(first=values, higher=values)
def test_a_decrease_cancels_a_pending_increase(first: int, higher: int) -> None:
    active, pending, _ = limits.set_limits([], [], [setting(first)], "player", T0)
    active, pending, _ = limits.set_limits(active, pending, [setting(first + higher)], "player", T0)
    assert len(pending) == 1
    active, pending, _ = limits.set_limits(active, pending, [setting(max(1, first - 1))], "player", T0)
    assert pending == [] and active[0].value == max(1, first - 1)


def test_removal_waits_out_the_cooling_off() -> None:
    active, pending, _ = limits.set_limits([], [], [setting(500)], "player", T0)
    active, pending, _ = limits.set_limits(active, pending, [setting(None)], "player", T0)
    assert active[0].value == 500 and pending[0].value is None
    after, _ = limits.promote_due(active, pending, T0 + timedelta(days=1))
    assert after == []


def test_repeating_an_increase_does_not_restart_the_clock() -> None:
    active, pending, _ = limits.set_limits([], [], [setting(100)], "player", T0)
    active, pending, _ = limits.set_limits(active, pending, [setting(200)], "player", T0)
    _, again, _ = limits.set_limits(active, pending, [setting(200)], "player", T0 + timedelta(hours=5))
    assert again[0].effective_at == T0 + timedelta(hours=24)


@given(vals=st.lists(st.tuples(st.sampled_from(["player", "operator"]), periods, values), min_size=1, max_size=6))
def test_the_lowest_applicable_limit_binds(vals: list[tuple[str, str, int]]) -> None:
    lims = [
        Limit.model_validate({"kind": "deposit", "period": p, "value": v, "source": src, "set_at": T0})
        for src, p, v in vals
    ]
    binding = limits.binding_limits(lims)
    for (kind, period), value in binding.items():
        assert value == min(v for _, p, v in vals if p == period)
        assert kind == "deposit"


@given(
    day=st.integers(1, 10_000),
    week=st.integers(1, 10_000),
    month=st.integers(1, 10_000),
    spent=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 2_000)), max_size=12),
    amount=st.integers(1, 10_000),
)
def test_deposit_is_allowed_only_within_every_limit(
    day: int, week: int, month: int, spent: list[tuple[int, int]], amount: int
) -> None:
    state = player()
    now = T0
    for days_ago, value in spent:
        from domain.player import decide as d

        state = d(state, deposit(state, value, at=now - timedelta(days=days_ago)), now, 0).state
    state.limits, state.pending_limits, _ = limits.set_limits(
        [], [], [setting(day, "day"), setting(week, "week"), setting(month, "month")], "player", now
    )
    used: dict[str, int] = {p: sum(v for ago, v in spent if ago < n) for p, n in limits.WINDOW_DAYS.items()}
    cmd = AuthorizeDeposit(
        player_id=state.player_id,
        brand="demo",
        command_id="deposit:t",
        data=DepositAuthorizationRequest(tx_id="t", amount_minor=amount, currency="EUR"),
    )
    answer = decide(state, cmd, now, 1).body
    fits = all(used[p] + amount <= lim for p, lim in (("day", day), ("week", week), ("month", month)))
    assert (answer["decision"] == "allow") == fits
    expected_remaining = min(max(0, lim - used[p]) for p, lim in (("day", day), ("week", week), ("month", month)))
    if fits:
        expected_remaining -= amount
    assert answer["remaining"]["deposit"] == expected_remaining


@given(amounts=st.lists(st.integers(1, 500), min_size=1, max_size=30), limit=st.integers(1, 3_000))
def test_holds_make_concurrent_authorizations_stay_within_the_limit(amounts: list[int], limit: int) -> None:
    state = player()
    state.limits, _, _ = limits.set_limits([], [], [setting(limit)], "player", T0)
    allowed = 0
    for i, amount in enumerate(amounts):
        cmd = AuthorizeDeposit(
            player_id=state.player_id,
            brand="demo",
            command_id=f"deposit:{i}",
            data=DepositAuthorizationRequest(tx_id=str(i), amount_minor=amount, currency="EUR"),
        )
        d = decide(state, cmd, T0, i)
        state = d.state
        if d.body["decision"] == "allow":
            allowed += amount
    assert allowed <= limit


def test_a_failed_deposit_releases_its_hold() -> None:
    state = player()
    state.limits, _, _ = limits.set_limits([], [], [setting(1000)], "player", T0)
    cmd = AuthorizeDeposit(
        player_id=state.player_id,
        brand="demo",
        command_id="deposit:a",
        data=DepositAuthorizationRequest(tx_id="a", amount_minor=800, currency="EUR"),
    )
    state = decide(state, cmd, T0, 0).state
    assert limits.held(state, T0) == 800
    state = decide(state, deposit(state, 800, status="failed", tx="a"), T0, 1).state
    assert limits.held(state, T0) == 0
    assert state.lifetime.deposits_minor == 0

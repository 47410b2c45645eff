"""The demo generator is pure: these run without any service."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import pytest

from cluster.local.demo import COUNTED, DemoData, expected_lifetime, generate, parse_args
from schemas.events import parse_envelope
from schemas.players import ExclusionCreate, LimitsUpdate, PlayerCreate

NOW = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)


@pytest.fixture(scope="module")
def data() -> DemoData:
    return generate(players=150, days=30, seed=7, now=NOW)


def test_same_seed_same_data(data: DemoData) -> None:
    again = generate(players=150, days=30, seed=7, now=NOW)
    assert again == data


def test_other_seed_other_data(data: DemoData) -> None:
    other = generate(players=150, days=30, seed=8, now=NOW)
    assert {p.player_id for p in other.players}.isdisjoint({p.player_id for p in data.players})


def test_a_later_run_the_same_day_only_adds_events(data: DemoData) -> None:
    later = generate(players=150, days=30, seed=7, now=NOW + timedelta(hours=5))
    before = {e["event_id"]: e for e in data.events}
    after = {e["event_id"]: e for e in later.events}
    recent = {i for i, e in before.items() if e["occurred_at"] >= (NOW - timedelta(days=29)).isoformat()}
    assert recent <= set(after)
    assert all(after[i] == before[i] for i in recent)
    assert len(after) > len(recent)


def test_registrations_do_not_depend_on_the_clock(data: DemoData) -> None:
    other_day = generate(players=150, days=30, seed=7, now=NOW + timedelta(days=40))
    assert [p.registration for p in other_day.players] == [p.registration for p in data.players]


def test_a_player_is_the_same_whatever_the_count(data: DemoData) -> None:
    fewer = generate(players=40, days=30, seed=7, now=NOW)
    assert [p.registration for p in fewer.players] == [p.registration for p in data.players[:40]]


def test_every_envelope_parses(data: DemoData) -> None:
    assert len(data.events) > 1000
    for raw in data.events:
        env = parse_envelope(raw)
        assert str(env.event_id) == raw["event_id"]
    assert len({e["event_id"] for e in data.events}) == len(data.events)


def test_registrations_limits_and_exclusions_are_valid_api_bodies(data: DemoData) -> None:
    for p in data.players:
        assert PlayerCreate.model_validate(p.registration).player_id == p.player_id
        if p.limits is not None:
            LimitsUpdate.model_validate(p.limits)
        if p.exclusion is not None:
            ExclusionCreate.model_validate(p.exclusion)
    assert len({p.player_id for p in data.players}) == len(data.players)


def test_amounts_are_positive_integers(data: DemoData) -> None:
    amounts = [e["payload"]["amount_minor"] for e in data.events if "amount_minor" in e["payload"]]
    assert amounts
    assert all(type(a) is int and a > 0 for a in amounts)


def test_currencies_are_the_players_account_currency(data: DemoData) -> None:
    currency = {p.registration["player_id"]: p.registration["currency"] for p in data.players}
    for e in data.events:
        if "currency" in e["payload"]:
            assert e["payload"]["currency"] == currency[e["player_id"]]


def test_times_are_in_the_window_never_in_the_future_and_ordered(data: DemoData) -> None:
    times = [parse_envelope(e).occurred_at for e in data.events]
    assert all(t.utcoffset() == timedelta(0) for t in times)
    assert max(times) <= NOW
    assert min(times) >= NOW - timedelta(days=30)
    assert times == sorted(times)


def test_history_looks_like_a_casino(data: DemoData) -> None:
    types = Counter(e["type"] for e in data.events)
    assert types["session.started"] == types["session.ended"]
    assert types["game.bet"] > types["game.win"] > 0
    assert types["payment.deposit"] > 0
    assert len({p.registration["country"] for p in data.players}) >= 6
    assert len({p.registration["traffic_source"] for p in data.players}) == 6
    assert any(p.churned for p in data.players) and not all(p.churned for p in data.players)
    bets = sum(e["payload"]["amount_minor"] for e in data.events if e["type"] == "game.bet")
    wins = sum(e["payload"]["amount_minor"] for e in data.events if e["type"] == "game.win")
    assert 0.7 < wins / bets < 1.2  # ~96 % RTP, loose: a few heavy-tailed whales move it


def test_expected_counters_add_up(data: DemoData) -> None:
    expected = expected_lifetime(data.events)
    assert set(expected) <= {str(p.player_id) for p in data.players}
    total = {k: sum(t[k] for t in expected.values()) for k in COUNTED}
    assert total["bets_count"] == sum(e["type"] == "game.bet" for e in data.events)
    assert total["sessions"] == sum(e["type"] == "session.started" for e in data.events)
    completed = [e for e in data.events if e["type"] == "payment.deposit" and e["payload"]["status"] == "completed"]
    assert total["deposits_minor"] == sum(e["payload"]["amount_minor"] for e in completed)


def test_naive_clock_is_refused() -> None:
    with pytest.raises(ValueError):
        generate(players=1, days=1, seed=1, now=datetime(2026, 1, 1))


def test_player_ids_are_uuid4(data: DemoData) -> None:
    assert all(UUID(str(p.player_id)).version == 4 for p in data.players)


def test_until_fixes_the_history_and_needs_a_zone() -> None:
    args = parse_args(["--until", "2026-03-14T16:09:26+01:00"])
    assert args.until == NOW
    assert parse_args([]).until is None
    with pytest.raises(SystemExit):
        parse_args(["--until", "2026-03-14T15:09:26"])


def test_the_stack_keeps_the_first_runs_instant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cluster.local import stack

    monkeypatch.setattr(stack, "DATA", tmp_path)
    monkeypatch.setattr(stack, "DEMO_UNTIL", tmp_path / "demo-until")
    first = stack.demo_until()
    assert datetime.fromisoformat(first).tzinfo is not None
    (tmp_path / "demo-until").write_text("2026-03-14T15:09:26+00:00\n")
    assert stack.demo_until() == "2026-03-14T15:09:26+00:00"

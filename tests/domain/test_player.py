from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from actors.grain import decide_entry, decode, encode
from domain.errors import Forbidden, InvalidInput
from domain.player import decide
from schemas.commands import AuthorizeDeposit, PlaceBlock, RegisterPlayer
from schemas.players import BlockCreate, DepositAuthorizationRequest, PlayerCreate
from schemas.state import decode_state, encode_state
from tests.domain.helpers import T0, deposit, event, player


def test_bets_wins_and_sessions_feed_day_and_lifetime_counters() -> None:
    s = player()
    for cmd in [
        event(s, "session.started", {"session_id": "s1", "device": "mobile"}),
        event(s, "game.bet", {"bet_id": "b1", "amount_minor": 500, "currency": "EUR", "game_id": "g"}),
        event(s, "game.win", {"bet_id": "b1", "amount_minor": 200, "currency": "EUR", "game_id": "g"}),
        event(s, "session.ended", {"session_id": "s1"}, at=T0 + timedelta(minutes=30)),
        event(s, "payment.withdrawal", {"tx_id": "w", "status": "paid", "amount_minor": 100, "currency": "EUR"}),
        deposit(s, 1000),
    ]:
        s = decide(s, cmd, T0 + timedelta(hours=1), 0).state
    day = s.days[T0.date().isoformat()]
    assert (day.bets_minor, day.wins_minor, day.sessions, day.session_seconds) == (500, 200, 1, 1800)
    assert (s.lifetime.deposits_minor, s.lifetime.withdrawals_minor) == (1000, 100)
    assert s.lifetime.first_deposit_at == T0


def test_an_event_in_another_currency_is_rejected_and_changes_nothing() -> None:
    s = player()
    before = encode_state(s)
    cmd = event(s, "game.bet", {"bet_id": "b", "amount_minor": 5, "currency": "USD", "game_id": "g"})
    with pytest.raises(InvalidInput) as exc:
        decide(s, cmd, T0, 0)
    assert exc.value.field == "payload.currency"
    assert encode_state(s) == before


def test_an_event_from_the_future_is_rejected() -> None:
    s = player()
    with pytest.raises(InvalidInput):
        decide(s, deposit(s, 5, at=T0 + timedelta(hours=1)), T0, 0)


def test_old_events_count_for_lifetime_only() -> None:
    s = player()
    s = decide(s, deposit(s, 70, at=T0 - timedelta(days=45)), T0, 0).state
    assert s.lifetime.deposits_minor == 70 and s.days == {}


def test_another_brand_cannot_touch_the_player() -> None:
    s = player()
    cmd = PlaceBlock(player_id=s.player_id, brand="other", data=BlockCreate(kind="fraud", reason="x"))
    with pytest.raises(Forbidden):
        decide(s, cmd, T0, 0)


def test_a_blocked_player_is_denied_with_the_block_named() -> None:
    s = player()
    s = decide(
        s, PlaceBlock(player_id=s.player_id, brand="demo", data=BlockCreate(kind="aml", reason="review")), T0, 0
    ).state
    ask = AuthorizeDeposit(
        player_id=s.player_id,
        brand="demo",
        data=DepositAuthorizationRequest(tx_id="t", amount_minor=10, currency="EUR"),
    )
    assert decide(s, ask, T0, 1).body["reasons"] == ["blocked_aml"]


ops = st.lists(
    st.tuples(st.sampled_from(["bet", "win", "dep", "fail", "auth"]), st.integers(1, 5000), st.integers(0, 3000)),
    max_size=25,
)


@settings(max_examples=40, deadline=None)
@given(ops=ops)
def test_replaying_the_journal_rebuilds_the_same_state(ops: list[tuple[str, int, int]]) -> None:
    pid = uuid.uuid4()
    reg = RegisterPlayer(
        player_id=pid,
        brand="demo",
        home_region="eu",
        command_id=f"register:{pid}",
        data=PlayerCreate(player_id=pid, currency="EUR", country="SE"),
    )
    journal = []
    live = None
    for i, (op, amount, minutes) in enumerate([("reg", 0, 0), *ops]):
        now = T0 + timedelta(minutes=minutes)
        cmd: Any
        if op == "reg":
            cmd = reg
        elif op == "auth":
            cmd = AuthorizeDeposit(
                player_id=pid,
                brand="demo",
                command_id=f"deposit:{i}",
                data=DepositAuthorizationRequest(tx_id=str(i), amount_minor=amount, currency="EUR"),
            )
        else:
            assert live is not None
            kind = {"bet": "game.bet", "win": "game.win"}.get(op, "payment.deposit")
            payload = {"bet_id": str(i), "amount_minor": amount, "currency": "EUR", "game_id": "g"}
            if kind == "payment.deposit":
                payload = {
                    "tx_id": str(i - 1),
                    "status": "completed" if op == "dep" else "failed",
                    "amount_minor": amount,
                    "currency": "EUR",
                }
            cmd = event(live, kind, payload, at=now - timedelta(seconds=1))
        live = decide_entry(live, cmd, now, i, "eu").state
        live = decode_state(encode_state(live))
        journal.append((encode(cmd), now))
    replayed = None
    for i, ((kind, body), now) in enumerate(journal):
        replayed = decide_entry(replayed, decode(kind, body), now, i, "eu").state
        replayed = decode_state(encode_state(replayed))
    assert replayed is not None and live is not None
    assert encode_state(replayed) == encode_state(live)


def test_a_partial_profile_update_survives_the_journal_round_trip() -> None:
    from schemas.commands import UpdateProfile
    from schemas.players import PlayerUpdate

    s = player()
    cmd = UpdateProfile(player_id=s.player_id, brand="demo", data=PlayerUpdate(first_name="Ada"))
    kind, body = encode(cmd)
    again = decode(kind, body)
    assert again == cmd
    after = decide(s, again, T0, 0).state
    assert after.profile.first_name == "Ada" and after.profile.country == "MT"
    upd = event(s, "player.updated", {"language": "sv"})
    after = decide(after, decode(*encode(upd)), T0, 1).state
    assert after.profile.language == "sv" and after.profile.country == "MT" and after.profile.first_name == "Ada"

"""Builders for pure-rule tests."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from schemas.commands import RegisterPlayer, event_command
from schemas.events import parse_envelope
from schemas.players import PlayerCreate
from schemas.state import PlayerState

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def player(currency: str = "EUR", at: datetime = T0) -> PlayerState:
    from domain.player import new_player

    pid = uuid.uuid4()
    cmd = RegisterPlayer(
        player_id=pid, brand="demo", home_region="eu", data=PlayerCreate(player_id=pid, currency=currency, country="MT")
    )
    return new_player(cmd, at)


def event(state: PlayerState, type_: str, payload: dict[str, Any], at: datetime = T0) -> Any:
    env = parse_envelope(
        {
            "event_id": str(uuid.uuid4()),
            "type": type_,
            "occurred_at": at.isoformat(),
            "player_id": str(state.player_id),
            "brand": state.brand,
            "payload": payload,
        }
    )
    return event_command(env)


def deposit(
    state: PlayerState, amount: int, status: str = "completed", tx: str | None = None, at: datetime = T0
) -> Any:
    return event(
        state,
        "payment.deposit",
        {"tx_id": tx or uuid.uuid4().hex, "status": status, "amount_minor": amount, "currency": state.profile.currency},
        at,
    )

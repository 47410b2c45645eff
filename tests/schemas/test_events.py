from __future__ import annotations

import uuid
from typing import Any

import pytest

from schemas.events import EnvelopeError, parse_envelope


def envelope(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "game.bet",
        "occurred_at": "2026-03-01T10:00:00+01:00",
        "player_id": str(uuid.uuid4()),
        "brand": "demo",
        "payload": {"bet_id": "1", "amount_minor": 100, "currency": "EUR", "game_id": "g"},
    }
    base.update(over)
    return base


def test_a_valid_envelope_parses_into_its_typed_payload() -> None:
    env = parse_envelope(envelope())
    assert env.payload.amount_minor == 100  # type: ignore[attr-defined]
    assert parse_envelope(env.model_dump_json()) == env


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"payload": {"bet_id": "1", "amount_minor": 1.5, "currency": "EUR", "game_id": "g"}}, "payload.amount_minor"),
        ({"payload": {"bet_id": "1", "amount_minor": -3, "currency": "EUR", "game_id": "g"}}, "payload.amount_minor"),
        ({"payload": {"bet_id": "1", "amount_minor": True, "currency": "EUR", "game_id": "g"}}, "payload.amount_minor"),
        (
            {"payload": {"bet_id": "1", "amount_minor": "100", "currency": "EUR", "game_id": "g"}},
            "payload.amount_minor",
        ),
        ({"payload": {"bet_id": "1", "amount_minor": 1, "currency": "EUX", "game_id": "g"}}, "payload.currency"),
        ({"payload": {"bet_id": "1", "amount_minor": 1, "currency": "EUR", "game_id": "g", "x": 1}}, "payload.x"),
        ({"occurred_at": "2026-03-01T10:00:00"}, "occurred_at"),
        ({"type": "game.unknown"}, "type"),
        ({"event_id": "42"}, "event_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_a_bad_envelope_names_the_wrong_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(EnvelopeError) as exc:
        parse_envelope(envelope(**change))
    assert exc.value.errors[0]["loc"] == field


def test_malformed_json_is_reported_as_such() -> None:
    with pytest.raises(EnvelopeError) as exc:
        parse_envelope(b"{oops")
    assert "JSON" in exc.value.reason

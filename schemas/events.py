"""Event envelopes and the payload of every platform event type.

The envelope is what travels on the bus and through `POST /platform/v1/events`; the
payload model is chosen by `type`, so an unknown type or a payload that does not match its
type is rejected with the field that is wrong.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, SerializeAsAny, ValidationError

from schemas.common import AmountMinor, AwareDatetime, Brand, Country, Currency
from schemas.profile import ProfileFields, TrafficSource

SCHEMA_VERSION: Literal[1] = 1


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlayerRegistered(Payload, ProfileFields):
    currency: Currency
    country: Country
    traffic_source: TrafficSource | None = None
    home_region: Annotated[str, Field(max_length=32)] | None = None


class PlayerUpdated(Payload, ProfileFields):
    country: Country | None = None


class SessionStarted(Payload):
    session_id: Annotated[str, Field(min_length=1, max_length=64)]
    device: Literal["desktop", "mobile", "tablet", "app", "other"] = "other"


class SessionEnded(Payload):
    session_id: Annotated[str, Field(min_length=1, max_length=64)]
    duration_s: NonNegativeInt | None = None


DepositStatus = Literal["requested", "completed", "failed", "cancelled"]
WithdrawalStatus = Literal["requested", "approved", "paid", "rejected", "cancelled"]


class _Money(Payload):
    amount_minor: AmountMinor
    currency: Currency


class _Payment(_Money):
    tx_id: Annotated[str, Field(min_length=1, max_length=64)]
    method: Annotated[str, Field(max_length=32)] | None = None


class DepositEvent(_Payment):
    status: DepositStatus


class WithdrawalEvent(_Payment):
    status: WithdrawalStatus


class _Game(_Money):
    bet_id: Annotated[str, Field(min_length=1, max_length=64)]
    game_id: Annotated[str, Field(min_length=1, max_length=64)]
    game_category: Annotated[str, Field(max_length=32)] = "slots"


class GameBet(_Game):
    session_id: Annotated[str, Field(max_length=64)] | None = None


class GameWin(_Game):
    pass


PAYLOADS: dict[str, type[Payload]] = {
    "player.registered": PlayerRegistered,
    "player.updated": PlayerUpdated,
    "session.started": SessionStarted,
    "session.ended": SessionEnded,
    "payment.deposit": DepositEvent,
    "payment.withdrawal": WithdrawalEvent,
    "game.bet": GameBet,
    "game.win": GameWin,
}

EventType = Literal[
    "player.registered",
    "player.updated",
    "session.started",
    "session.ended",
    "payment.deposit",
    "payment.withdrawal",
    "game.bet",
    "game.win",
]


class _Envelope(BaseModel):
    """The envelope fields every event on the bus carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: UUID
    type: str
    occurred_at: AwareDatetime
    player_id: UUID
    brand: Brand
    schema_version: int = SCHEMA_VERSION
    payload: dict[str, Any]


class _RawEnvelope(_Envelope):
    """A platform event before its payload is parsed by type."""

    type: EventType
    schema_version: Literal[1] = SCHEMA_VERSION


class EventEnvelope(_RawEnvelope):
    """One platform event. `payload` is parsed into the model its `type` names."""

    payload: SerializeAsAny[Payload]  # type: ignore[assignment]


class PitbossEvent(_Envelope):
    """An event Pitboss publishes about its own decisions (limit changed, exclusion started...)."""


class EnvelopeError(ValueError):
    """An envelope that cannot be parsed; `errors` name each wrong field by its path."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        first = errors[0]
        self.reason = f"{first['loc']}: {first['msg']}"
        super().__init__(self.reason)


def _errors(exc: ValidationError, prefix: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    return [
        {"loc": ".".join(str(p) for p in (*prefix, *e["loc"])) or "body", "msg": e["msg"]}
        for e in exc.errors(include_url=False)
    ]


def parse_envelope(raw: bytes | str | dict[str, Any]) -> EventEnvelope:
    """Parse and validate one envelope and its typed payload, or raise EnvelopeError."""
    try:
        env = _RawEnvelope.model_validate(raw) if isinstance(raw, dict) else _RawEnvelope.model_validate_json(raw)
    except ValidationError as exc:
        raise EnvelopeError(_errors(exc)) from None
    try:
        payload = PAYLOADS[env.type].model_validate(env.payload)
    except ValidationError as exc:
        raise EnvelopeError(_errors(exc, ("payload",))) from None
    return EventEnvelope.model_construct(
        event_id=env.event_id,
        type=env.type,
        occurred_at=env.occurred_at,
        player_id=env.player_id,
        brand=env.brand,
        schema_version=env.schema_version,
        payload=payload,
    )

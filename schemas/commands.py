"""Commands a player actor takes (imperative) — the journal stores them as they were decided."""

from __future__ import annotations

from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny

from schemas.events import EventEnvelope, Payload
from schemas.players import (
    BlockCreate,
    DepositAuthorizationRequest,
    ExclusionCreate,
    LimitsUpdate,
    PlayerCreate,
    PlayerUpdate,
)
from schemas.state import BlockKind


class _Command(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    player_id: UUID
    brand: str  # the caller's brand; a player of another brand is refused
    # Idempotency: the same command_id applied twice has the effect of once and answers the same.
    command_id: str | None = None
    fingerprint: str = ""
    actor: str = "platform"  # who asked: "platform", or "operator:<id>" once operators exist

    def model_post_init(self, context: Any, /) -> None:
        # `kind` tags the union; it must survive a dump that leaves unset fields out.
        self.__pydantic_fields_set__.add("kind")


class RegisterPlayer(_Command):
    kind: Literal["register_player"] = "register_player"
    home_region: str
    data: PlayerCreate


class UpdateProfile(_Command):
    kind: Literal["update_profile"] = "update_profile"
    data: PlayerUpdate


class SetLimits(_Command):
    kind: Literal["set_limits"] = "set_limits"
    data: LimitsUpdate
    source: Literal["player", "operator"] = "player"


class StartExclusion(_Command):
    kind: Literal["start_exclusion"] = "start_exclusion"
    data: ExclusionCreate


class AuthorizeDeposit(_Command):
    kind: Literal["authorize_deposit"] = "authorize_deposit"
    data: DepositAuthorizationRequest


class PlaceBlock(_Command):
    kind: Literal["place_block"] = "place_block"
    data: BlockCreate


class LiftBlock(_Command):
    kind: Literal["lift_block"] = "lift_block"
    block: BlockKind


class ApplyEvent(_Command):
    kind: Literal["apply_event"] = "apply_event"
    event: SerializeAsAny[EventEnvelope]


Command = Annotated[
    RegisterPlayer | UpdateProfile | SetLimits | StartExclusion | AuthorizeDeposit | PlaceBlock | LiftBlock,
    Field(discriminator="kind"),
]


def event_command(env: EventEnvelope) -> ApplyEvent:
    # The envelope is already validated; constructing skips a second validation per event.
    return ApplyEvent.model_construct(
        player_id=env.player_id,
        brand=env.brand,
        command_id=f"event:{env.event_id}",
        fingerprint="",
        actor="platform",
        kind="apply_event",
        event=env,
    )


def payload_dict(payload: Payload) -> dict[str, Any]:
    return payload.model_dump(mode="json")

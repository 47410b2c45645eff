"""A player as the back office sees it: live state (personal data masked by role), blocks,
the assigned VIP manager."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict

from schemas.players import BlockCreate
from schemas.state import BlockKind
from serve_apps.backoffice import actions
from serve_apps.backoffice.deps import BO, Operator, Require

router = APIRouter(prefix="/players", tags=["players"])
IdemKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=64)]


class VipAssign(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operator_id: UUID | None


@router.get("/{player_id}", summary="Live profile, limits, exclusions, blocks and counters")
async def get_player(player_id: UUID, op: Annotated[Operator, Require("player.read")], bo: BO) -> dict[str, Any]:
    return await actions.read_player(bo, op, player_id)


@router.post("/{player_id}/blocks", status_code=201, summary="Place a fraud, KYC or AML block")
async def place_block(
    player_id: UUID,
    body: BlockCreate,
    op: Annotated[Operator, Require("player.block")],
    bo: BO,
    idempotency_key: IdemKey = None,
) -> dict[str, Any]:
    return await actions.place_block(bo, op, player_id, body, idempotency_key)


@router.delete("/{player_id}/blocks/{kind}", summary="Lift a block")
async def lift_block(
    player_id: UUID,
    kind: BlockKind,
    op: Annotated[Operator, Require("player.unblock")],
    bo: BO,
    idempotency_key: IdemKey = None,
) -> dict[str, Any]:
    return await actions.lift_block(bo, op, player_id, kind, idempotency_key)


@router.put("/{player_id}/vip-manager", summary="Assign (or with null, unassign) the player's VIP manager")
async def assign_vip(
    player_id: UUID, body: VipAssign, op: Annotated[Operator, Require("player.vip.assign")], bo: BO
) -> dict[str, Any]:
    return await actions.assign_vip(bo, op, player_id, body.operator_id)

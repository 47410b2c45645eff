"""Manual payment adjustments with four eyes: a payments operator requests one for a player;
above the policy's threshold another operator holding `payment.adjust.approve` approves or
rejects it. An approved adjustment is published as `payment.adjustment.approved`."""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from schemas.adjustments import AdjustmentCreate, AdjustmentDecision, AdjustmentPublic
from serve_apps.backoffice import actions
from serve_apps.backoffice.deps import BO, Operator, Require

router = APIRouter(tags=["adjustments"])


class AdjustmentList(BaseModel):
    items: list[AdjustmentPublic]


@router.post(
    "/players/{player_id}/adjustments",
    status_code=201,
    response_model=AdjustmentPublic,
    summary="Request a manual adjustment (201; 200 when the same request was already made)",
)
async def request_adjustment(
    player_id: UUID,
    body: AdjustmentCreate,
    response: Response,
    op: Annotated[Operator, Require("payment.adjust")],
    bo: BO,
) -> AdjustmentPublic:
    adj, created = await actions.request_adjustment(bo, op, player_id, body)
    if not created:
        response.status_code = 200
    return adj


@router.get("/players/{player_id}/adjustments", summary="The player's adjustments, newest first")
async def player_adjustments(
    player_id: UUID,
    op: Annotated[Operator, Require("payment.read")],
    bo: BO,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AdjustmentList:
    return AdjustmentList(items=await actions.player_adjustments(bo, op, player_id, limit))


@router.get("/adjustments", summary="The approvers' queue: adjustments pending a second approver, oldest first")
async def adjustments(
    op: Annotated[Operator, Require("payment.read")],
    bo: BO,
    status: Annotated[Literal["pending_approval"], Query()] = "pending_approval",
) -> AdjustmentList:
    return AdjustmentList(items=await actions.pending_adjustments(bo, op))


@router.post("/adjustments/{adjustment_id}/approve", summary="Approve another operator's pending adjustment")
async def approve(
    adjustment_id: UUID,
    op: Annotated[Operator, Require("payment.adjust.approve")],
    bo: BO,
    body: AdjustmentDecision | None = None,
) -> AdjustmentPublic:
    return await actions.approve_adjustment(bo, op, adjustment_id, body or AdjustmentDecision())


@router.post("/adjustments/{adjustment_id}/reject", summary="Reject another operator's pending adjustment")
async def reject(
    adjustment_id: UUID,
    op: Annotated[Operator, Require("payment.adjust.approve")],
    bo: BO,
    body: AdjustmentDecision | None = None,
) -> AdjustmentPublic:
    return await actions.reject_adjustment(bo, op, adjustment_id, body or AdjustmentDecision())

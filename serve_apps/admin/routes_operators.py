"""Operator accounts, roles and sessions (admin pages' API)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, ConfigDict

from schemas.operators import OperatorCreate, OperatorPublic, OperatorUpdate, SessionPublic
from serve_apps.backoffice import actions
from serve_apps.backoffice.deps import BO, Operator, Require

router = APIRouter(tags=["operators"])


class OperatorCreated(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operator: OperatorPublic
    temporary_password: str


class OperatorPage(BaseModel):
    items: list[OperatorPublic]
    next_cursor: str | None


@router.get("/operators", response_model=OperatorPage, summary="Operators, by username")
async def list_operators(
    op: Annotated[Operator, Require("operator.read")],
    bo: BO,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> OperatorPage:
    items, nxt = await bo.identity.list_operators(cursor, limit)
    return OperatorPage(items=items, next_cursor=nxt)


@router.post("/operators", status_code=201, response_model=OperatorCreated, summary="Create an operator")
async def create_operator(
    body: OperatorCreate, op: Annotated[Operator, Require("operator.create")], bo: BO
) -> OperatorCreated:
    created, password = await actions.create_operator(bo, op, body)
    return OperatorCreated(operator=created, temporary_password=password)


@router.get("/operators/{operator_id}", response_model=OperatorPublic, summary="One operator")
async def get_operator(operator_id: UUID, op: Annotated[Operator, Require("operator.read")], bo: BO) -> OperatorPublic:
    return await bo.identity.get_operator(operator_id)


@router.patch("/operators/{operator_id}", response_model=OperatorPublic, summary="Change roles, scopes or details")
async def update_operator(
    operator_id: UUID, body: OperatorUpdate, op: Annotated[Operator, Require("operator.update")], bo: BO
) -> OperatorPublic:
    return await actions.update_operator(bo, op, operator_id, body)


@router.post("/operators/{operator_id}/disable", response_model=OperatorPublic, summary="Disable; ends every session")
async def disable_operator(
    operator_id: UUID, op: Annotated[Operator, Require("operator.disable")], bo: BO
) -> OperatorPublic:
    return await actions.set_disabled(bo, op, operator_id, True)


@router.post("/operators/{operator_id}/enable", response_model=OperatorPublic, summary="Enable again")
async def enable_operator(
    operator_id: UUID, op: Annotated[Operator, Require("operator.disable")], bo: BO
) -> OperatorPublic:
    return await actions.set_disabled(bo, op, operator_id, False)


@router.post(
    "/operators/{operator_id}/reset",
    response_model=OperatorCreated,
    summary="New temporary password; second factor cleared (re-enrol at next login); sessions ended",
)
async def reset_operator(
    operator_id: UUID, op: Annotated[Operator, Require("operator.reset")], bo: BO
) -> OperatorCreated:
    after, password = await actions.reset_operator(bo, op, operator_id)
    return OperatorCreated(operator=after, temporary_password=password)


@router.get("/operators/{operator_id}/sessions", response_model=list[SessionPublic], summary="An operator's sessions")
async def operator_sessions(
    operator_id: UUID, op: Annotated[Operator, Require("session.read_any")], bo: BO
) -> list[SessionPublic]:
    return await actions.sessions_of(bo, op, operator_id)


@router.delete("/operators/{operator_id}/sessions", status_code=204, summary="End all of an operator's sessions")
async def end_operator_sessions(
    operator_id: UUID, op: Annotated[Operator, Require("session.end_any")], bo: BO
) -> Response:
    await actions.end_session_of(bo, op, operator_id, None)
    return Response(status_code=204)


@router.delete("/operators/{operator_id}/sessions/{handle}", status_code=204, summary="End one session")
async def end_operator_session(
    operator_id: UUID, handle: str, op: Annotated[Operator, Require("session.end_any")], bo: BO
) -> Response:
    await actions.end_session_of(bo, op, operator_id, handle)
    return Response(status_code=204)


@router.get("/sessions", response_model=list[SessionPublic], summary="My sessions")
async def my_sessions(op: Annotated[Operator, Require("session.read_own", own=True)], bo: BO) -> list[SessionPublic]:
    return await bo.identity.sessions_of(op.session.operator.operator_id, op.session.sid)


@router.delete("/sessions/{handle}", status_code=204, summary="End one of my sessions")
async def end_my_session(
    handle: str, op: Annotated[Operator, Require("session.end_own", own=True)], bo: BO
) -> Response:
    await actions.end_own_session(bo, op, handle)
    return Response(status_code=204)


@router.get("/roles", summary="Roles and what each may do (the policy in force)")
async def roles(op: Annotated[Operator, Require("role.read")], bo: BO) -> dict[str, Any]:
    return {
        "roles": {name: {"permissions": sorted(bo.policy.permissions_for([name]))} for name in bo.policy.roles},
        "pii_fields": sorted(bo.policy.pii_fields),
    }

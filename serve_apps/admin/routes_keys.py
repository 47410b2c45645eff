"""Per-brand API keys of the casino platform: create, rotate, revoke."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from serve_apps.backoffice import actions
from serve_apps.backoffice.deps import BO, Operator, Require

router = APIRouter(prefix="/api-keys", tags=["api keys"])
Brand = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    brand: Brand
    label: Annotated[str, Field(min_length=1, max_length=200)]


class KeyRotate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # How long the old key keeps working, so the platform can deploy the new one first.
    grace_seconds: Annotated[int, Field(ge=0, le=7 * 24 * 3600)] = 0


@router.get("", summary="Keys of the brands in my scope (never the keys themselves)")
async def list_keys(
    op: Annotated[Operator, Require("apikey.read")],
    bo: BO,
    brand: Annotated[str | None, Query(max_length=64)] = None,
) -> list[dict[str, Any]]:
    return await actions.list_keys(bo, op, brand)


@router.post("", status_code=201, summary="Create a key; the key is shown once, in this answer")
async def create_key(body: KeyCreate, op: Annotated[Operator, Require("apikey.create")], bo: BO) -> dict[str, Any]:
    info, key = await actions.create_key(bo, op, body.brand, body.label)
    return {**info, "key": key}


@router.post("/{brand}/{key_id}/rotate", status_code=201, summary="Replace a key; the old one stops after the grace")
async def rotate_key(
    brand: str, key_id: UUID, body: KeyRotate, op: Annotated[Operator, Require("apikey.rotate")], bo: BO
) -> dict[str, Any]:
    old, new, key = await actions.rotate_key(bo, op, brand, key_id, body.grace_seconds)
    return {"old": old, "new": {**new, "key": key}}


@router.post("/{brand}/{key_id}/revoke", summary="Revoke a key now")
async def revoke_key(
    brand: str, key_id: UUID, op: Annotated[Operator, Require("apikey.revoke")], bo: BO
) -> dict[str, Any]:
    return await actions.revoke_key(bo, op, brand, key_id)

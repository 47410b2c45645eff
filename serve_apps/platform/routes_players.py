"""Players: registration, live profile, limits, exclusions, blocks, deposit authorization."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from uuid import UUID

from fastapi import APIRouter
from fastapi.responses import ORJSONResponse as Json
from pydantic import BaseModel

from domain.player import AnyCommand
from schemas.commands import (
    AuthorizeDeposit,
    LiftBlock,
    PlaceBlock,
    RegisterPlayer,
    SetLimits,
    StartExclusion,
    UpdateProfile,
)
from schemas.players import (
    BlockCreate,
    DepositAuthorization,
    DepositAuthorizationRequest,
    ExclusionCreate,
    LimitsUpdate,
    PlayerCreate,
    PlayerPublic,
    PlayerUpdate,
)
from schemas.state import BlockKind
from serve_apps.platform.deps import Brand, IdempotencyKey, Platform, fingerprint

if TYPE_CHECKING:
    from serve_apps.platform.app import PlatformAPI

router = APIRouter(prefix="/players", tags=["players"])


async def _run(
    app: PlatformAPI,
    cmd_type: type[AnyCommand],
    name: str,
    player_id: UUID,
    brand: str,
    key: str | None,
    body: BaseModel | str,
    **fields: Any,
) -> Json:
    """Send one command to the player's actor; `key` (an id from the body or the
    Idempotency-Key header) makes a retry return the first answer."""
    data = body.model_dump(mode="json", exclude_unset=True) if isinstance(body, BaseModel) else body
    if isinstance(body, BaseModel):
        fields["data"] = body
    cmd = cmd_type(
        player_id=player_id,
        brand=brand,
        command_id=f"{name}:{key}" if key else None,
        fingerprint=fingerprint(name, data),
        **fields,
    )
    status, answer = await app.router.command(cmd)
    return Json(answer, status_code=status)


@router.post("", status_code=201, response_model=PlayerPublic, summary="Register a player (idempotent on player_id)")
async def register(body: PlayerCreate, brand: Brand, app: Platform) -> Json:
    return await _run(
        app,
        RegisterPlayer,
        "register",
        body.player_id,
        brand,
        str(body.player_id),
        body,
        home_region=app.settings.region,
    )


@router.get("/{player_id}", response_model=PlayerPublic, summary="Live profile, limits, exclusions, counters")
async def get_player(player_id: UUID, brand: Brand, app: Platform) -> Json:
    return Json(await app.router.read(player_id, brand))


@router.patch("/{player_id}", response_model=PlayerPublic, summary="Change profile fields")
async def update_player(
    player_id: UUID, body: PlayerUpdate, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> Json:
    return await _run(app, UpdateProfile, "profile", player_id, brand, idempotency_key, body)


@router.put(
    "/{player_id}/limits",
    response_model=PlayerPublic,
    summary="Set responsible-gambling limits (decreases at once, increases after 24 h)",
)
async def set_limits(
    player_id: UUID, body: LimitsUpdate, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> Json:
    return await _run(app, SetLimits, "limits", player_id, brand, idempotency_key, body)


@router.post(
    "/{player_id}/exclusions",
    status_code=201,
    response_model=PlayerPublic,
    summary="Start a time-out or a self-exclusion (never lifted early)",
)
async def start_exclusion(
    player_id: UUID, body: ExclusionCreate, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> Json:
    return await _run(app, StartExclusion, "exclusion", player_id, brand, idempotency_key, body)


@router.post(
    "/{player_id}/blocks", status_code=201, response_model=PlayerPublic, summary="Place a fraud, KYC or AML block"
)
async def place_block(
    player_id: UUID, body: BlockCreate, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> Json:
    return await _run(app, PlaceBlock, "block", player_id, brand, idempotency_key, body, actor=f"platform:{brand}")


@router.delete("/{player_id}/blocks/{kind}", response_model=PlayerPublic, summary="Lift a block")
async def lift_block(
    player_id: UUID, kind: BlockKind, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> Json:
    return await _run(
        app, LiftBlock, "unblock", player_id, brand, idempotency_key, kind, block=kind, actor=f"platform:{brand}"
    )


@router.post(
    "/{player_id}/deposits/authorize",
    response_model=DepositAuthorization,
    summary="May this deposit go ahead? An allowed amount is held until the deposit settles",
)
async def authorize_deposit(player_id: UUID, body: DepositAuthorizationRequest, brand: Brand, app: Platform) -> Json:
    return await _run(app, AuthorizeDeposit, "deposit", player_id, brand, body.tx_id, body)

"""Players: registration, live profile, limits, exclusions, blocks, deposit authorization."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter
from fastapi.responses import JSONResponse

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

router = APIRouter(prefix="/players", tags=["players"])


def _answer(result: tuple[int, dict[str, Any]]) -> JSONResponse:
    status, body = result
    return JSONResponse(body, status_code=status)


def _keyed(name: str, key: str | None) -> str | None:
    return f"{name}:{key}" if key else None


@router.post("", status_code=201, response_model=PlayerPublic, summary="Register a player (idempotent on player_id)")
async def register(body: PlayerCreate, brand: Brand, app: Platform) -> JSONResponse:
    data = body.model_dump(mode="json")
    cmd = RegisterPlayer(
        player_id=body.player_id,
        brand=brand,
        home_region=app.settings.region,
        data=body,
        command_id=f"register:{body.player_id}",
        fingerprint=fingerprint("register", data),
    )
    return _answer(await app.router.command(cmd))


@router.get("/{player_id}", response_model=PlayerPublic, summary="Live profile, limits, exclusions, counters")
async def get_player(player_id: UUID, brand: Brand, app: Platform) -> JSONResponse:
    return JSONResponse(await app.router.read(player_id, brand))


@router.patch("/{player_id}", response_model=PlayerPublic, summary="Change profile fields")
async def update_player(
    player_id: UUID, body: PlayerUpdate, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    data = body.model_dump(mode="json", exclude_unset=True)
    cmd = UpdateProfile(
        player_id=player_id,
        brand=brand,
        data=body,
        command_id=_keyed("profile", idempotency_key),
        fingerprint=fingerprint("profile", data),
    )
    return _answer(await app.router.command(cmd))


@router.put(
    "/{player_id}/limits",
    response_model=PlayerPublic,
    summary="Set responsible-gambling limits (decreases at once, increases after 24 h)",
)
async def set_limits(
    player_id: UUID, body: LimitsUpdate, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    cmd = SetLimits(
        player_id=player_id,
        brand=brand,
        data=body,
        command_id=_keyed("limits", idempotency_key),
        fingerprint=fingerprint("limits", body.model_dump(mode="json")),
    )
    return _answer(await app.router.command(cmd))


@router.post(
    "/{player_id}/exclusions",
    status_code=201,
    response_model=PlayerPublic,
    summary="Start a time-out or a self-exclusion (never lifted early)",
)
async def start_exclusion(
    player_id: UUID, body: ExclusionCreate, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    cmd = StartExclusion(
        player_id=player_id,
        brand=brand,
        data=body,
        command_id=_keyed("exclusion", idempotency_key),
        fingerprint=fingerprint("exclusion", body.model_dump(mode="json")),
    )
    return _answer(await app.router.command(cmd))


@router.post(
    "/{player_id}/blocks", status_code=201, response_model=PlayerPublic, summary="Place a fraud, KYC or AML block"
)
async def place_block(
    player_id: UUID, body: BlockCreate, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    cmd = PlaceBlock(
        player_id=player_id,
        brand=brand,
        data=body,
        command_id=_keyed("block", idempotency_key),
        fingerprint=fingerprint("block", body.model_dump(mode="json")),
        actor=f"platform:{brand}",
    )
    return _answer(await app.router.command(cmd))


@router.delete("/{player_id}/blocks/{kind}", response_model=PlayerPublic, summary="Lift a block")
async def lift_block(
    player_id: UUID, kind: BlockKind, brand: Brand, app: Platform, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    cmd = LiftBlock(
        player_id=player_id,
        brand=brand,
        block=kind,
        command_id=_keyed("unblock", idempotency_key),
        fingerprint=fingerprint("unblock", kind),
        actor=f"platform:{brand}",
    )
    return _answer(await app.router.command(cmd))


@router.post(
    "/{player_id}/deposits/authorize",
    response_model=DepositAuthorization,
    summary="May this deposit go ahead? An allowed amount is held until the deposit settles",
)
async def authorize_deposit(
    player_id: UUID, body: DepositAuthorizationRequest, brand: Brand, app: Platform
) -> JSONResponse:
    cmd = AuthorizeDeposit(
        player_id=player_id,
        brand=brand,
        data=body,
        command_id=f"deposit:{body.tx_id}",
        fingerprint=fingerprint("deposit", body.model_dump(mode="json")),
    )
    return _answer(await app.router.command(cmd))

"""The back-office use cases, shared by the JSON API (`/admin/v1`) and the dashboard pages:
each checks the policy on the resource it touches, does the work, and audits it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from domain.errors import InvalidInput, NotFound, PitbossError
from domain.player import AnyCommand
from domain.policy import ALL, Resource
from schemas.commands import LiftBlock, PlaceBlock
from schemas.operators import OperatorCreate, OperatorPublic, OperatorUpdate, SessionPublic
from schemas.players import BlockCreate
from schemas.state import BlockKind
from serve_apps.backoffice import auditing
from serve_apps.backoffice.deps import Operator, authorize
from serve_apps.backoffice.runtime import BackOffice


def _dump(op: OperatorPublic) -> dict[str, Any]:
    return op.model_dump(mode="json")


def _within(requested: list[str], held: frozenset[str], field: str) -> None:
    """No one hands out a scope they do not hold themselves."""
    if ALL in held:
        return
    outside = [x for x in requested if x not in held]
    if outside:
        raise InvalidInput(f"{field} outside your own scope: {', '.join(sorted(outside))}", field=field)


def _check_roles(bo: BackOffice, roles: list[str] | None) -> None:
    if roles is None:
        return
    unknown = [r for r in roles if r not in bo.policy.roles]
    if unknown:
        raise InvalidInput(f"unknown roles: {', '.join(unknown)}", field="roles")


def operator_resource(target: UUID) -> Resource:
    return Resource(kind="operator", id=str(target), owner=str(target))


# --- operators ---------------------------------------------------------------------------


async def create_operator(bo: BackOffice, op: Operator, data: OperatorCreate) -> tuple[OperatorPublic, str]:
    _check_roles(bo, data.roles)
    _within(data.brands, op.subject.brands, "brands")
    _within(data.jurisdictions, op.subject.jurisdictions, "jurisdictions")
    try:
        created, password = await bo.identity.create_operator(data)
    except PitbossError as exc:
        await auditing.record(
            bo,
            op,
            "operator.create",
            target_kind="operator",
            after=data.model_dump(mode="json"),
            outcome="failed",
            reason=exc.detail,
        )
        raise
    await auditing.record(
        bo, op, "operator.create", target_kind="operator", target_id=str(created.operator_id), after=_dump(created)
    )
    return created, password


async def update_operator(bo: BackOffice, op: Operator, target: UUID, data: OperatorUpdate) -> OperatorPublic:
    await authorize(bo, op, "operator.update", operator_resource(target))
    _check_roles(bo, data.roles)
    if data.brands is not None:
        _within(data.brands, op.subject.brands, "brands")
    if data.jurisdictions is not None:
        _within(data.jurisdictions, op.subject.jurisdictions, "jurisdictions")
    before, after = await bo.identity.update_operator(target, data)
    await auditing.record(
        bo,
        op,
        "operator.update",
        target_kind="operator",
        target_id=str(target),
        before=_dump(before),
        after=_dump(after),
    )
    return after


async def set_disabled(bo: BackOffice, op: Operator, target: UUID, disabled: bool) -> OperatorPublic:
    await authorize(bo, op, "operator.disable", operator_resource(target))
    before, after = await bo.identity.set_disabled(target, disabled)
    await auditing.record(
        bo,
        op,
        "operator.disable" if disabled else "operator.enable",
        target_kind="operator",
        target_id=str(target),
        before=_dump(before),
        after=_dump(after),
    )
    return after


async def reset_operator(bo: BackOffice, op: Operator, target: UUID) -> tuple[OperatorPublic, str]:
    await authorize(bo, op, "operator.reset", operator_resource(target))
    before = await bo.identity.get_operator(target)
    after, password = await bo.identity.reset_operator(target)
    await auditing.record(
        bo,
        op,
        "operator.reset",
        target_kind="operator",
        target_id=str(target),
        before=_dump(before),
        after=_dump(after),
    )
    return after, password


async def change_password(bo: BackOffice, op: Operator, old: str, new: str) -> None:
    try:
        await bo.identity.change_password(op.session.sid, old, new)
    except PitbossError as exc:
        await auditing.record(
            bo, op, "auth.password", target_kind="operator", target_id=op.id, outcome="denied", reason=exc.detail
        )
        raise
    await auditing.record(bo, op, "auth.password", target_kind="operator", target_id=op.id)


# --- sessions ----------------------------------------------------------------------------


async def end_own_session(bo: BackOffice, op: Operator, handle: str) -> None:
    await bo.identity.end_session(op.session.operator.operator_id, handle)
    await auditing.record(bo, op, "session.end_own", target_kind="session", target_id=handle)


async def sessions_of(bo: BackOffice, op: Operator, target: UUID) -> list[SessionPublic]:
    await bo.identity.get_operator(target)
    return await bo.identity.sessions_of(target, None)


async def end_session_of(bo: BackOffice, op: Operator, target: UUID, handle: str | None) -> None:
    if handle is None:
        await bo.identity.get_operator(target)
        for s in await bo.identity.sessions_of(target, None):
            await bo.identity.end_session(target, s.handle)
    else:
        await bo.identity.end_session(target, handle)
    await auditing.record(
        bo, op, "session.end_any", target_kind="operator", target_id=str(target), after={"session": handle or "all"}
    )


# --- API keys ----------------------------------------------------------------------------


def _key_dump(k: Any) -> dict[str, Any]:
    return {
        "key_id": str(k.key_id),
        "brand": k.brand,
        "label": k.label,
        "hint": k.hint,
        "created_at": k.created_at.isoformat() if k.created_at else None,
        "created_by": k.created_by,
        "revoked_at": k.revoked_at.isoformat() if k.revoked_at else None,
    }


async def list_keys(bo: BackOffice, op: Operator, brand: str | None) -> list[dict[str, Any]]:
    brands = [brand] if brand else await bo.keys.brands()
    out: list[dict[str, Any]] = []
    for b in brands:
        if bo.policy.allowed(op.subject, "apikey.read", Resource(kind="apikey", brand=b)):
            out.extend(_key_dump(k) for k in await bo.keys.list(b))
        elif brand:
            await authorize(bo, op, "apikey.read", Resource(kind="apikey", brand=b))
    return out


async def create_key(bo: BackOffice, op: Operator, brand: str, label: str) -> tuple[dict[str, Any], str]:
    await authorize(bo, op, "apikey.create", Resource(kind="apikey", brand=brand))
    key_id, key = await bo.keys.create(brand, label, op.name)
    info = _key_dump(await bo.keys.get(brand, key_id))
    await auditing.record(bo, op, "apikey.create", target_kind="apikey", target_id=str(key_id), brand=brand, after=info)
    return info, key


async def rotate_key(
    bo: BackOffice, op: Operator, brand: str, key_id: UUID, grace_seconds: int
) -> tuple[dict[str, Any], dict[str, Any], str]:
    await authorize(bo, op, "apikey.rotate", Resource(kind="apikey", brand=brand, id=str(key_id)))
    old, new, key = await bo.keys.rotate(brand, key_id, timedelta(seconds=grace_seconds), op.name)
    await auditing.record(
        bo,
        op,
        "apikey.rotate",
        target_kind="apikey",
        target_id=str(key_id),
        brand=brand,
        before={"key_id": str(key_id)},
        after={"old": _key_dump(old), "new": _key_dump(new)},
    )
    return _key_dump(old), _key_dump(new), key


async def revoke_key(bo: BackOffice, op: Operator, brand: str, key_id: UUID) -> dict[str, Any]:
    await authorize(bo, op, "apikey.revoke", Resource(kind="apikey", brand=brand, id=str(key_id)))
    before, after = await bo.keys.revoke_id(brand, key_id)
    await auditing.record(
        bo,
        op,
        "apikey.revoke",
        target_kind="apikey",
        target_id=str(key_id),
        brand=brand,
        before=_key_dump(before),
        after=_key_dump(after),
    )
    return _key_dump(after)


# --- players -----------------------------------------------------------------------------


async def _player_resource(bo: BackOffice, player_id: UUID) -> tuple[dict[str, Any], Resource]:
    if bo.players is None:
        raise NotFound("players are not served here")
    state = await bo.players.read(player_id, None)
    resource = Resource(
        kind="player",
        id=str(player_id),
        brand=state["brand"],
        jurisdiction=state["profile"]["country"],
        vip_manager=await bo.vip.manager_of(player_id),
    )
    return state, resource


async def read_player(bo: BackOffice, op: Operator, player_id: UUID) -> dict[str, Any]:
    """The live player, with personal data masked unless the role may see it. Reading a
    player's personal data is itself on the audit record."""
    state, resource = await _player_resource(bo, player_id)
    decision = await authorize(bo, op, "player.read", resource)
    shown = bo.policy.mask(op.subject, state, resource)
    shown["vip_manager"] = resource.vip_manager
    shown["masked_fields"] = sorted(decision.masked_fields)
    await auditing.record(
        bo,
        op,
        "player.read",
        target_kind="player",
        target_id=str(player_id),
        brand=resource.brand,
        after={"masked": sorted(decision.masked_fields)},
    )
    return shown


async def _player_command(
    bo: BackOffice,
    op: Operator,
    player_id: UUID,
    permission: str,
    command: Callable[[str], AnyCommand],
    note: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A command an operator sends to a player's actor: checked on the player, then audited
    with the blocks before and after. `command` gets the player's brand."""
    before, resource = await _player_resource(bo, player_id)
    await authorize(bo, op, permission, resource)
    assert bo.players is not None
    status, after = await bo.players.command(command(before["brand"]))
    await auditing.record(
        bo,
        op,
        permission,
        target_kind="player",
        target_id=str(player_id),
        brand=resource.brand,
        before={"blocks": before["blocks"]},
        after={"blocks": after.get("blocks"), **(note or {})},
        outcome="succeeded" if status < 400 else "failed",
    )
    return after


async def place_block(
    bo: BackOffice, op: Operator, player_id: UUID, body: BlockCreate, key: str | None
) -> dict[str, Any]:
    def command(brand: str) -> AnyCommand:
        return PlaceBlock(
            player_id=player_id,
            brand=brand,
            command_id=f"op-block:{key or uuid4()}",
            fingerprint=f"{body.kind}:{body.reason}",
            data=body,
            actor=f"operator:{op.name}",
        )

    return await _player_command(bo, op, player_id, "player.block", command, {"reason": body.reason})


async def lift_block(bo: BackOffice, op: Operator, player_id: UUID, kind: BlockKind, key: str | None) -> dict[str, Any]:
    def command(brand: str) -> AnyCommand:
        return LiftBlock(
            player_id=player_id,
            brand=brand,
            command_id=f"op-unblock:{key or uuid4()}",
            fingerprint=str(kind),
            block=kind,
            actor=f"operator:{op.name}",
        )

    return await _player_command(bo, op, player_id, "player.unblock", command)


async def assign_vip(bo: BackOffice, op: Operator, player_id: UUID, manager: UUID | None) -> dict[str, Any]:
    _, resource = await _player_resource(bo, player_id)
    await authorize(bo, op, "player.vip.assign", resource)
    if manager is not None:
        target = await bo.identity.get_operator(manager)
        if "vip_manager" not in target.roles:
            raise InvalidInput("that operator is not a VIP manager", field="operator_id")
    await bo.vip.assign(player_id, str(manager) if manager else None, op.name)
    after = {"vip_manager": str(manager) if manager else None}
    await auditing.record(
        bo,
        op,
        "player.vip.assign",
        target_kind="player",
        target_id=str(player_id),
        brand=resource.brand,
        before={"vip_manager": resource.vip_manager},
        after=after,
    )
    return after


# --- audit -------------------------------------------------------------------------------


async def export_audit(bo: BackOffice, op: Operator, start: datetime, end: datetime, fmt: str) -> AsyncIterator[Any]:
    # A browser's datetime-local field has no offset: the page says the times are UTC.
    start, end = (t if t.tzinfo else t.replace(tzinfo=UTC) for t in (start, end))
    if end <= start:
        raise InvalidInput("`to` must be after `from`", field="to")
    await auditing.record(
        bo,
        op,
        "audit.export",
        target_kind="audit",
        after={"from": start.isoformat(), "to": end.isoformat(), "format": fmt},
    )
    return bo.audit.export(start, end)

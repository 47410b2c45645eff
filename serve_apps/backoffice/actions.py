"""The back-office use cases, shared by the JSON API (`/admin/v1`) and the dashboard pages:
each checks the policy on the resource it touches, does the work, and audits it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from domain import adjustments as adjustment_rules
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, PitbossError
from domain.player import AnyCommand
from domain.policy import ALL, Resource
from schemas.adjustments import APPROVED_EVENT, PENDING, AdjustmentCreate, AdjustmentDecision, AdjustmentPublic
from schemas.commands import LiftBlock, PlaceBlock
from schemas.events import PitbossEvent
from schemas.operators import OperatorCreate, OperatorPublic, OperatorUpdate, SessionPublic
from schemas.players import BlockCreate
from schemas.state import BlockKind
from serve_apps.backoffice import auditing
from serve_apps.backoffice.auditing import Outcome
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


async def _audit_change(
    bo: BackOffice, op: Operator, action: str, before: OperatorPublic, after: OperatorPublic
) -> None:
    await auditing.record(
        bo,
        op,
        action,
        target_kind="operator",
        target_id=str(after.operator_id),
        before=_dump(before),
        after=_dump(after),
    )


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
    await _audit_change(bo, op, "operator.update", before, after)
    return after


async def set_disabled(bo: BackOffice, op: Operator, target: UUID, disabled: bool) -> OperatorPublic:
    await authorize(bo, op, "operator.disable", operator_resource(target))
    before, after = await bo.identity.set_disabled(target, disabled)
    await _audit_change(bo, op, "operator.disable" if disabled else "operator.enable", before, after)
    return after


async def reset_operator(bo: BackOffice, op: Operator, target: UUID) -> tuple[OperatorPublic, str]:
    await authorize(bo, op, "operator.reset", operator_resource(target))
    before = await bo.identity.get_operator(target)
    after, password = await bo.identity.reset_operator(target)
    await _audit_change(bo, op, "operator.reset", before, after)
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


async def player_resource(bo: BackOffice, player_id: UUID) -> tuple[dict[str, Any], Resource]:
    if bo.players is None:
        raise NotFound("players are not served here")
    state = await bo.players.read(player_id, None)
    return state, await resource_of_player(bo, player_id, state)


async def resource_of_player(bo: BackOffice, player_id: UUID, state: dict[str, Any]) -> Resource:
    """The player as the policy sees them, from a live state the caller has already read."""
    return Resource(
        kind="player",
        id=str(player_id),
        brand=state["brand"],
        jurisdiction=state["profile"]["country"],
        vip_manager=await bo.vip.manager_of(player_id),
    )


async def read_player(bo: BackOffice, op: Operator, player_id: UUID) -> dict[str, Any]:
    """The live player, with personal data masked unless the role may see it. Reading a
    player's personal data is itself on the audit record."""
    state, resource = await player_resource(bo, player_id)
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
    before, resource = await player_resource(bo, player_id)
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
    _, resource = await player_resource(bo, player_id)
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


# --- manual payment adjustments (four eyes) ----------------------------------------------

_log = logging.getLogger("pitboss.adjustments")
ADJUST = "payment.adjust"
APPROVE = "payment.adjust.approve"
_PUBLISH_TIMEOUT = 5.0


def _now_ms() -> datetime:
    # Cassandra keeps milliseconds: what we answer is what a later read returns.
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _payment(player: Resource, adjustment_id: UUID, owner: str, amount_minor: int) -> Resource:
    """The adjustment as the policy sees it: the player's brand and jurisdiction, the requester
    as owner (so `not_self` refuses them as approver), the absolute amount (the threshold)."""
    return Resource(
        kind="payment",
        id=str(adjustment_id),
        brand=player.brand,
        jurisdiction=player.jurisdiction,
        owner=owner,
        amount_minor=abs(amount_minor),
    )


def _adj_dump(adj: AdjustmentPublic) -> dict[str, Any]:
    return adj.model_dump(mode="json")


async def _publish_if_due(bo: BackOffice, adj: AdjustmentPublic) -> AdjustmentPublic:
    """Publishes an approved adjustment's event unless the broker already confirmed it, then
    marks it published. A failure leaves it unpublished (the approval stands): the next
    approve, reject, list or queue call that sees it publishes it again. At least once; the
    event id is the adjustment id, so the wallet applies it once."""
    if not adjustment_rules.needs_publishing(adj):
        return adj
    assert adj.decided_at is not None
    event = PitbossEvent(
        event_id=adj.adjustment_id,
        type=APPROVED_EVENT,
        occurred_at=adj.decided_at,
        player_id=adj.player_id,
        brand=adj.brand,
        payload=adjustment_rules.approved_payload(adj).model_dump(mode="json"),
    )
    try:
        await bo.bus.publish(event)
        return await bo.adjustments.mark_published(adj, _now_ms())
    except Exception:
        _log.warning(
            "adjustment %s approved but its event is not published yet; retried later", adj.adjustment_id, exc_info=True
        )
        return adj


async def request_adjustment(
    bo: BackOffice, op: Operator, player_id: UUID, data: AdjustmentCreate
) -> tuple[AdjustmentPublic, bool]:
    """A manual adjustment for a player: approved at once at or below the policy's threshold,
    else pending a second approver. (adjustment, created); a retry of the same request
    gives the first adjustment and False, a different request under a used id is a Conflict."""
    state, player = await player_resource(bo, player_id)
    resource = _payment(player, data.adjustment_id, op.id, data.amount_minor)
    decision = await authorize(bo, op, ADJUST, resource)

    async def failed(reason: str) -> None:
        await auditing.record(
            bo,
            op,
            ADJUST,
            target_kind="payment",
            target_id=str(data.adjustment_id),
            brand=player.brand,
            after={"player_id": str(player_id), **data.model_dump(mode="json")},
            outcome="failed",
            reason=reason,
        )

    try:
        adj = adjustment_rules.request(
            data,
            player_id=player_id,
            brand=state["brand"],
            jurisdiction=player.jurisdiction,
            player_currency=state["profile"]["currency"],
            requested_by=op.id,
            requested_by_name=op.name,
            needs_second_approver=decision.needs_second_approver,
            now=_now_ms(),
        )
    except PitbossError as exc:
        await failed(exc.detail)
        raise
    stored, created = await bo.adjustments.create(adj)
    if not created:
        if not adjustment_rules.same_request(stored, data, player_id, op.id):
            await failed("adjustment_id already used for a different adjustment")
            raise Conflict("adjustment_id already used for a different adjustment", field="adjustment_id")
        return await _publish_if_due(bo, stored), False
    await auditing.record(
        bo,
        op,
        ADJUST,
        target_kind="payment",
        target_id=str(stored.adjustment_id),
        brand=stored.brand,
        after=_adj_dump(stored),
        reason=decision.reason,
    )
    return await _publish_if_due(bo, stored), True


async def _decide_adjustment(
    bo: BackOffice, op: Operator, adjustment_id: UUID, approve: bool, note: str | None
) -> AdjustmentPublic:
    action = APPROVE if approve else "payment.adjust.reject"
    adj = await bo.adjustments.get(adjustment_id)
    _, player = await player_resource(bo, adj.player_id)

    async def audit(outcome: Outcome, reason: str, after: AdjustmentPublic | None = None) -> None:
        await auditing.record(
            bo,
            op,
            action,
            target_kind="payment",
            target_id=str(adjustment_id),
            brand=adj.brand,
            before=_adj_dump(adj),
            after=_adj_dump(after) if after else None,
            outcome=outcome,
            reason=reason,
        )

    # Rejecting needs the same right as approving: both are the second pair of eyes.
    resource = _payment(player, adjustment_id, adj.requested_by, adj.amount_minor)
    decision = bo.policy.decide(op.subject, APPROVE, resource)
    if not decision.allowed:
        await audit("denied", decision.reason)
        raise Forbidden(decision.reason, extra={"permission": APPROVE})
    try:
        decided = adjustment_rules.decide(adj, approve=approve, by=op.id, by_name=op.name, note=note, now=_now_ms())
    except PitbossError as exc:
        await audit("denied" if isinstance(exc, Forbidden) else "failed", exc.detail)
        await _publish_if_due(bo, adj)
        raise
    current = await bo.adjustments.decide(decided)
    if current is not None:
        reason = f"decided meanwhile: the adjustment is already {current.status}"
        await audit("failed", reason)
        await _publish_if_due(bo, current)
        raise Conflict(reason, field="status", extra={"current_status": current.status})
    await audit("succeeded", decision.reason, decided)
    return await _publish_if_due(bo, decided)


async def approve_adjustment(
    bo: BackOffice, op: Operator, adjustment_id: UUID, data: AdjustmentDecision
) -> AdjustmentPublic:
    return await _decide_adjustment(bo, op, adjustment_id, True, data.note)


async def reject_adjustment(
    bo: BackOffice, op: Operator, adjustment_id: UUID, data: AdjustmentDecision
) -> AdjustmentPublic:
    return await _decide_adjustment(bo, op, adjustment_id, False, data.note)


async def player_adjustments(bo: BackOffice, op: Operator, player_id: UUID, limit: int = 100) -> list[AdjustmentPublic]:
    """The player's adjustments, newest first (any approved one still unpublished is sent)."""
    _, player = await player_resource(bo, player_id)
    await authorize(bo, op, "payment.read", player)
    return [await _publish_if_due(bo, a) for a in await bo.adjustments.of_player(player_id, limit)]


async def pending_adjustments(bo: BackOffice, op: Operator) -> list[AdjustmentPublic]:
    """The approvers' queue, oldest first, within the operator's brands and jurisdictions.
    Walking the open adjustments also finishes the approved ones whose event is unpublished and
    drops index rows of adjustments decided meanwhile."""
    out: list[AdjustmentPublic] = []
    for adj in await bo.adjustments.open():
        if adjustment_rules.needs_publishing(adj):
            await _publish_if_due(bo, adj)
        elif adj.status != PENDING:
            await bo.adjustments.close(adj)
        elif bo.policy.allowed(
            op.subject, "payment.read", Resource(kind="payment", brand=adj.brand, jurisdiction=adj.jurisdiction)
        ):
            out.append(adj)
    return out

"""The player grain's decisions: `decide(state, command, now)` returns the new state, the
events Pitboss publishes about it and the answer to the caller. No IO; the clock is passed
in. The caller owns `state` (a private copy per turn) and keeps the old one if this raises."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from domain import counters, exclusions, limits
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound
from schemas.commands import (
    ApplyEvent,
    AuthorizeDeposit,
    LiftBlock,
    PlaceBlock,
    RegisterPlayer,
    SetLimits,
    StartExclusion,
    UpdateProfile,
)
from schemas.events import PlayerRegistered, PlayerUpdated
from schemas.players import DepositAuthorization, ExclusionPublic, PlayerPublic, PlayerStatus
from schemas.state import Block, Counters, Hold, PlayerState, Profile, StoredResult

HOLD_TTL = timedelta(hours=24)
MAX_STORED_RESULTS = 32

AnyCommand = (
    RegisterPlayer | UpdateProfile | SetLimits | StartExclusion | AuthorizeDeposit | PlaceBlock | LiftBlock | ApplyEvent
)


@dataclass
class Decision:
    state: PlayerState
    status: int = 200
    body: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    changed: bool = True


def status_of(state: PlayerState, now: datetime) -> PlayerStatus:
    if state.blocks:
        return "blocked"
    ex = exclusions.in_force(state.exclusions, now)
    if ex is None:
        return "active"
    return "self_excluded" if ex.kind == "self_exclusion" else "timed_out"


def view(state: PlayerState, version: int, now: datetime) -> PlayerPublic:
    active, pending = limits.promote_due(state.limits, state.pending_limits, now)
    today = state.days.get(now.date().isoformat())
    today_c = today if today is not None else Counters()
    return PlayerPublic(
        player_id=state.player_id,
        brand=state.brand,
        home_region=state.home_region,
        version=version,
        registered_at=state.registered_at,
        updated_at=state.updated_at,
        profile=state.profile,
        status=status_of(state, now),
        limits=active,
        pending_limits=pending,
        exclusions=[ExclusionPublic(**e.model_dump(), active=exclusions.is_active(e, now)) for e in state.exclusions],
        blocks=state.blocks,
        holds_minor=limits.held(state, now),
        remaining=limits.remaining(state, now),
        today=today_c,
        lifetime=state.lifetime,
        ggr_today_minor=today_c.bets_minor - today_c.wins_minor,
        ggr_lifetime_minor=state.lifetime.bets_minor - state.lifetime.wins_minor,
    )


def new_player(cmd: RegisterPlayer, now: datetime) -> PlayerState:
    d = cmd.data
    profile = Profile(**d.model_dump(exclude={"player_id"}))
    return PlayerState(
        player_id=d.player_id,
        brand=cmd.brand,
        home_region=cmd.home_region,
        registered_at=now,
        updated_at=now,
        profile=profile,
    )


def register_from_event(cmd: ApplyEvent, home_region: str) -> PlayerState:
    env = cmd.event
    assert isinstance(env.payload, PlayerRegistered)
    p = env.payload
    return PlayerState(
        player_id=env.player_id,
        brand=env.brand,
        home_region=p.home_region or home_region,
        registered_at=env.occurred_at,
        updated_at=env.occurred_at,
        profile=Profile(**p.model_dump(exclude={"home_region"})),
    )


def remember(
    state: PlayerState, command_id: str | None, fingerprint: str, status: int, body: dict[str, Any] | None = None
) -> None:
    """Keep the answer for retries; `body` None means a retry gets the player's current view.

    Only the most recent answers are kept: retries come within seconds, and an older retry is
    still recognised by the player's id set (it is not applied twice)."""
    if command_id is None:
        return
    text = None if body is None else json.dumps(body, separators=(",", ":"))
    state.results[command_id] = StoredResult(fingerprint=fingerprint, status=status, body=text)
    while len(state.results) > MAX_STORED_RESULTS:
        del state.results[next(iter(state.results))]


def decide(state: PlayerState, cmd: AnyCommand, now: datetime, version: int) -> Decision:
    if cmd.brand != state.brand:
        raise Forbidden("the player belongs to another brand", field="player_id")
    counters.prune(state, now)
    state.limits, state.pending_limits = limits.promote_due(state.limits, state.pending_limits, now)
    if isinstance(cmd, ApplyEvent):
        return _apply_event(state, cmd, now)
    if isinstance(cmd, RegisterPlayer):
        if (cmd.data.currency, cmd.data.country) != (state.profile.currency, state.profile.country):
            raise Conflict("the player is already registered with other data", field="player_id")
        return Decision(state, 200, view(state, version, now).model_dump(mode="json"), changed=False)
    if isinstance(cmd, AuthorizeDeposit):
        return _authorize(state, cmd, now)
    if isinstance(cmd, UpdateProfile):
        changes = cmd.data.model_dump(exclude_unset=True)
        state.profile = state.profile.model_copy(update=changes)
        event: tuple[str, dict[str, Any]] = ("player.profile_changed", {"fields": sorted(changes)})
    elif isinstance(cmd, SetLimits):
        state.limits, state.pending_limits, changed = limits.set_limits(
            state.limits, state.pending_limits, cmd.data.limits, cmd.source, now
        )
        event = ("limits.changed", {"changes": changed, "source": cmd.source})
    elif isinstance(cmd, StartExclusion):
        ex = exclusions.start_exclusion(state.exclusions, cmd.data, cmd.command_id or f"ex-{version + 1}", now)
        state.exclusions.append(ex)
        # Holds of an excluded player must not turn into deposits.
        state.holds.clear()
        event = ("exclusion.started", ex.model_dump(mode="json"))
    elif isinstance(cmd, PlaceBlock):
        if any(b.kind == cmd.data.kind for b in state.blocks):
            raise Conflict(f"a {cmd.data.kind} block is already in place", field="kind")
        block = Block(kind=cmd.data.kind, reason=cmd.data.reason, placed_by=cmd.actor, placed_at=now)
        state.blocks.append(block)
        event = ("block.placed", block.model_dump(mode="json"))
    elif isinstance(cmd, LiftBlock):
        if not any(b.kind == cmd.block for b in state.blocks):
            raise NotFound(f"no {cmd.block} block is in place", field="kind")
        state.blocks = [b for b in state.blocks if b.kind != cmd.block]
        event = ("block.lifted", {"kind": cmd.block, "lifted_by": cmd.actor})
    else:  # pragma: no cover - the union is exhaustive
        raise InvalidInput(f"unknown command {type(cmd).__name__}")
    state.updated_at = now
    body = view(state, version + 1, now).model_dump(mode="json")
    status = 201 if isinstance(cmd, StartExclusion | PlaceBlock) else 200
    remember(state, cmd.command_id, cmd.fingerprint, status)
    return Decision(state, status, body, [event])


def _authorize(state: PlayerState, cmd: AuthorizeDeposit, now: datetime) -> Decision:
    req = cmd.data
    if req.currency != state.profile.currency:
        raise InvalidInput(
            f"currency {req.currency} is not the player's account currency {state.profile.currency}",
            field="currency",
        )
    reasons = [f"blocked_{b.kind}" for b in state.blocks]
    ex = exclusions.in_force(state.exclusions, now)
    if ex is not None:
        reasons.append("self_excluded" if ex.kind == "self_exclusion" else "timed_out")
    rows = limits.remaining(state, now)
    reasons += limits.deposit_limit_reasons(rows, req.amount_minor)
    decision = "deny" if reasons else "allow"
    if decision == "allow":
        state.holds[req.tx_id] = Hold(amount_minor=req.amount_minor, created_at=now, expires_at=now + HOLD_TTL)
        rows = limits.remaining(state, now)
    answer = DepositAuthorization(
        tx_id=req.tx_id,
        decision=decision,
        reasons=reasons,
        remaining=limits.remaining_by_kind(rows),
        limits=rows,
    )
    body = answer.model_dump(mode="json")
    remember(state, cmd.command_id, cmd.fingerprint, 200, body)
    event_type = "deposit.authorized" if decision == "allow" else "deposit.denied"
    return Decision(
        state,
        200,
        body,
        [
            (
                event_type,
                {"tx_id": req.tx_id, "amount_minor": req.amount_minor, "currency": req.currency, "reasons": reasons},
            )
        ],
    )


def _apply_event(state: PlayerState, cmd: ApplyEvent, now: datetime) -> Decision:
    env = cmd.event
    counters.check_event(state, env, now)
    if isinstance(env.payload, PlayerRegistered):
        return Decision(state, 200, {"status": "accepted"}, changed=True)
    if isinstance(env.payload, PlayerUpdated):
        state.profile = state.profile.model_copy(update=env.payload.model_dump(exclude_unset=True))
        state.updated_at = max(state.updated_at, env.occurred_at)
    counters.record(state, env, now)
    return Decision(state, 200, {"status": "accepted"})

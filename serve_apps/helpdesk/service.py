"""The help desk's use cases, shared by the helpdesk API, the dashboard pages, the chat, the phone
webhook and the email gateway. Each checks who acts (`Actor`) on what, decides with
`domain.tickets` / `domain.routing`, commits through `TicketStore`, then does what follows a
commit: indexes (agents' loads), SLA clocks, the bus, the audit record.

Decisions:

- One `HelpDesk` per replica, built lazily from the bound `BackOffice` (`helpdesk()`).
- Actors: an agent carries their `Operator` (policy on the ticket's brand, and on the player's
  brand and jurisdiction when their scope is not every jurisdiction; every action audited); a
  player acts through the platform's brand API key (`brand` set: only that brand's tickets and
  players); `system` is a channel (email gateway, phone webhook) speaking for a player.
- A new ticket goes to a team by (category, language) (`domain.routing`) and, when someone can
  take it, to the least-loaded available agent of that team: both decided before the commit, so
  the ticket is stored assigned in one write.
- After a commit: agents' loads, then SLA clocks, then the events; the events of a retried create
  or message are published again (their ids are derived from the ticket and message ids, so a
  consumer applies them once). A failure after the commit answers 503: the caller retries the
  same request and the retry finishes the work. Updates publish best effort (logged).
- Events (`bo.bus`, routing key = type): ticket.created (with the first message's id),
  ticket.message_added (every later message), ticket.status_changed, ticket.assigned. The
  envelope's player_id is the nil UUID for a ticket not yet linked to a player (an email from an
  unknown sender); the payload says null.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass, is_dataclass, replace
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast
from uuid import UUID

from cachetools import TTLCache
from fastapi import Depends
from pydantic import BaseModel, ConfigDict

from adapters.cassandra.helpdesk_routing import HelpdeskRoutingStore
from adapters.cassandra.player_contacts import PlayerContacts
from adapters.cassandra.sla_clocks import SlaClocks
from adapters.cassandra.tickets import MAX_PAGE, TicketStore
from adapters.redis_presence import Presence, PresenceStore
from adapters.settings import Settings
from adapters.sla_config import load_sla_policies
from adapters.yaml_config import parse_model, read_text
from domain import player_links
from domain import routing as routing_rules
from domain import tickets as rules
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, PitbossError, Unavailable
from domain.policy import ALL, Resource, Subject
from domain.sla import SlaStatus
from domain.ticket_bus import bus_events
from domain.tickets import Ticket
from schemas.events import PitbossEvent
from schemas.helpdesk_routing import AgentPublic, PresenceUpdate, RoutingConfig
from schemas.helpdesk_sla import SlaEvent
from schemas.operators import OperatorPublic
from schemas.tickets import (
    STATUSES,
    AttachmentMeta,
    MessageCreate,
    MessagePublic,
    PlayerCandidate,
    Status,
    TicketCreate,
    TicketPlayerLink,
    TicketPublic,
    TicketUpdate,
    TimelineItem,
)
from serve_apps.backoffice import auditing
from serve_apps.backoffice.actions import resource_of_player
from serve_apps.backoffice.deps import Operator, authorize, backoffice
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk.contacts import SenderResolver

log = logging.getLogger("pitboss.helpdesk")

DEFAULT_ROUTING = "helpdesk/routing.yaml"  # inside the `cluster` package
ACTIVE_STATUSES: tuple[Status, ...] = ("new", "open", "pending", "on_hold")


# ---------------------------------------------------------------------------- who acts


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: an agent (with their Operator), a player (through the platform's brand key), or a
    channel (`system`: email gateway, phone webhook). `brand` limits a player or system actor to
    one brand's tickets (the brand of the API key); None for agents (their scope is the policy's)."""

    kind: Literal["agent", "player", "system"]
    id: str
    operator: Operator | None = None
    brand: str | None = None

    @classmethod
    def agent(cls, op: Operator) -> Actor:
        return cls("agent", op.id, op)


# ---------------------------------------------------------------------------- views


class TicketView(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ticket: TicketPublic
    messages: list[MessagePublic]
    attachments: list[AttachmentMeta]
    sla: dict[str, Any] | None


class QueueItem(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    ticket: TicketPublic
    sla: dict[str, Any] | None


class QueuePage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[QueueItem]
    next_cursor: str | None


class HistoryPage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[TimelineItem]
    next_cursor: str | None


def sla_json(status: Any) -> dict[str, Any] | None:
    """An SLA status (the SLA clocks' dataclass) as JSON-ready data."""
    if status is None:
        return None
    raw = asdict(status) if is_dataclass(status) and not isinstance(status, type) else dict(status)
    return cast(dict[str, Any], json.loads(json.dumps(raw, default=_json_default)))


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


# ---------------------------------------------------------------------------- SLA clocks (SLA helper's adapter)


def _sla_clocks(bo: BackOffice) -> SlaClocks:
    """The SLA clocks over the configured policies (PITBOSS_HELPDESK_SLA_FILE or the packaged ones)."""
    return SlaClocks(bo.session, load_sla_policies(bo.settings))


# ---------------------------------------------------------------------------- routing file


class RoutingFileError(ValueError):
    """The routing file cannot be read or validated; the message names the part."""


def parse_routing(text: str, source: str) -> RoutingConfig:
    return parse_model(text, source, RoutingConfig, RoutingFileError, "routing", "version, default_team, teams, rules")


def load_routing(settings: Settings) -> RoutingConfig:
    """`PITBOSS_HELPDESK_ROUTING_FILE`, else the packaged cluster/helpdesk/routing.yaml."""
    text, source = read_text(settings.helpdesk_routing_file, DEFAULT_ROUTING, RoutingFileError, "routing file")
    return parse_routing(text, source)


# ---------------------------------------------------------------------------- helpers


def now_ms() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _dump(t: Ticket) -> dict[str, Any]:
    return t.public().model_dump(mode="json", exclude={"message_count"})


def _ticket_resource(t: Ticket) -> Resource:
    return Resource(kind="ticket", id=str(t.ticket_id), brand=t.brand)


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def _unb64(cursor: str) -> dict[str, Any]:
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError) as exc:
        raise InvalidInput("not a cursor this list gave out", field="cursor") from exc
    if not isinstance(value, dict):
        raise InvalidInput("not a cursor this list gave out", field="cursor")
    return value


def _store_cursor(t: Ticket) -> str:
    # The ticket store's queue cursor (day, ms, id) positioned at `t`: the merged queue resumes
    # each (brand, status) stream right after the last ticket it showed from it.
    at = t.created_at.astimezone(UTC)
    return _b64({"day": at.strftime("%Y-%m-%d"), "at": int(at.timestamp() * 1000), "id": str(t.ticket_id)})


# ---------------------------------------------------------------------------- the help desk


# What an agent needs to tell accounts that share an address apart.
CANDIDATE_FIELDS = ("email", "first_name", "last_name", "country")


class HelpDesk:
    """Built once per replica (the constructor blocks on statement prepares: build it in a thread)."""

    def __init__(self, bo: BackOffice, routing: RoutingConfig | None = None) -> None:
        self.bo = bo
        self.settings = bo.settings
        self.tickets = TicketStore(bo.session)
        self.routes = HelpdeskRoutingStore(bo.session)
        self.presence = PresenceStore(bo.redis, bo.settings.helpdesk_presence_ttl_seconds)
        self.routing = routing or load_routing(bo.settings)
        self.sla: SlaClocks | None = _sla_clocks(bo)
        self.contacts = SenderResolver(PlayerContacts(bo.session), bo.players) if bo.players else None
        self._known_players: TTLCache[UUID, Resource] = TTLCache(
            maxsize=100_000, ttl=max(bo.settings.helpdesk_player_cache_seconds, 0.001))

    # ------------------------------------------------------------------ checks

    async def _player(self, player_id: UUID, actor: Actor, permission: str) -> Resource:
        """The player as the policy sees them (NotFound field player_id when unknown); checks the
        actor may act on them."""
        if self.bo.players is None:
            raise Unavailable("players are not served here")
        if actor.operator is None:
            # A platform call only needs the player to exist in its brand: a brand never changes,
            # so a recent answer saves a round trip through the player's actor per ticket.
            cached = self._known_players.get(player_id)
            if cached is not None and (actor.brand is None or cached.brand == actor.brand):
                return cached
        state = await self.bo.players.read(player_id, actor.brand if actor.kind != "agent" else None)
        resource = Resource(kind="player", id=str(player_id), brand=state["brand"],
                            jurisdiction=(state.get("profile") or {}).get("country"),
                            vip_manager=None)
        if actor.operator is not None:
            await authorize(self.bo, actor.operator, permission, resource, target_id=str(player_id))
        elif self.settings.helpdesk_player_cache_seconds > 0:
            self._known_players[player_id] = resource
        return resource

    async def _may(self, t: Ticket, actor: Actor, permission: str) -> None:
        """Refuse (403, audited for agents) an actor outside the ticket's brand or the player's scope."""
        if actor.kind != "agent":
            if actor.brand is not None and actor.brand != t.brand:
                raise NotFound(f"no ticket {t.ticket_id}", field="ticket_id")
            if actor.kind == "player" and t.player_id is not None and actor.id not in ("", str(t.player_id)):
                raise NotFound(f"no ticket {t.ticket_id}", field="ticket_id")
            return
        op = actor.operator
        if op is None:
            raise Forbidden("an agent acts with their operator session")
        await authorize(self.bo, op, permission, _ticket_resource(t))
        if t.player_id is not None and ALL not in op.subject.jurisdictions:
            # The jurisdiction is the player's: read it only for operators limited to some.
            with contextlib.suppress(NotFound):
                await self._player(t.player_id, actor, permission)

    async def _audit(self, actor: Actor, action: str, t: Ticket, before: dict[str, Any] | None = None,
                     after: dict[str, Any] | None = None) -> None:
        if actor.operator is not None:
            await auditing.record(self.bo, actor.operator, action, target_kind="ticket", target_id=str(t.ticket_id),
                                  brand=t.brand, before=before, after=after)

    async def _audit_failure(self, actor: Actor, action: str, target: str, brand: str | None,
                             exc: PitbossError) -> None:
        if actor.operator is not None and not isinstance(exc, Forbidden):  # a denial is audited by authorize
            await auditing.record(self.bo, actor.operator, action, target_kind="ticket", target_id=target,
                                  brand=brand, outcome="failed", reason=exc.detail[:500])

    # ------------------------------------------------------------------ routing

    def _teams_of(self, p: Presence) -> frozenset[str]:
        return frozenset(p.teams)

    async def pick_agent(self, team: str) -> str | None:
        """The least-loaded available agent of `team` now, or None."""
        if not self.routing.auto_assign:
            return None
        try:
            spec = self.routing.team(team)
            online = [p for p in await self.presence.online() if p.status == "available" and team in p.teams]
            if not online or spec is None:
                return None
            loads = await self.routes.loads([p.agent_id for p in online], cap=spec.max_load)
        except Exception:
            # Presence or loads unreachable: the ticket still opens, unassigned, in its team's queue.
            log.warning("auto-assignment skipped for team %s", team, exc_info=True)
            return None
        agents = [routing_rules.AgentState(p.agent_id, p.status, loads[p.agent_id], self._teams_of(p),
                                           p.last_assigned_at) for p in online]
        return routing_rules.choose_agent(agents, team, self.routing)

    # ------------------------------------------------------------------ after a commit

    async def _publish(self, events: Sequence[PitbossEvent]) -> None:
        if events:
            await asyncio.gather(*(self.bo.bus.publish(e) for e in events))

    async def _after_commit(self, before: Ticket | None, after: Ticket, events: Sequence[rules.Event],
                            strict: bool, created: bool = False, also: Sequence[Awaitable[Any]] = ()) -> None:
        """Loads, SLA clocks, the bus. `strict`: a failure answers 503 (the caller's retry redoes it).
        `created`: this call created `after`, so no other writer has recorded its clock yet.
        `also`: more writes keyed by the committed ticket, waited for in the same round."""
        await self._follow_up(before, after, bus_events(after, events), rules.sla_events(events), strict,
                              created, also)

    async def _follow_up(self, before: Ticket | None, after: Ticket, bus: Sequence[PitbossEvent],
                         sla: Sequence[SlaEvent], strict: bool, created: bool = False,
                         also: Sequence[Awaitable[Any]] = ()) -> None:
        jobs = [self.routes.index(before, after), self._publish(bus), *also]
        if self.sla is not None and sla:
            jobs.append(self.sla.start(after, sla) if created else self.sla.record(after, sla))
        try:
            # Independent of each other: one round of waiting, not three.
            await asyncio.gather(*jobs)
        except PitbossError:
            raise
        except Exception as exc:
            log.warning("ticket %s committed but its follow-up failed: %s", after.ticket_id, exc, exc_info=True)
            if strict:
                raise Unavailable("the ticket is stored but not yet fully processed: retry the same request") from exc

    # ------------------------------------------------------------------ use cases

    async def create_ticket(self, body: TicketCreate, actor: Actor) -> tuple[TicketPublic, bool]:
        """(ticket, created). A retry with the same ticket_id returns the first ticket (False)."""
        if actor.brand is not None and actor.brand != body.brand:
            raise Forbidden(f"this API key is for brand {actor.brand}", field="brand")
        if actor.kind == "agent" and actor.operator is None:
            raise Forbidden("an agent acts with their operator session")
        try:
            team = routing_rules.team_for(self.routing, body.category, body.language)
            # The player check and the agent choice wait on different stores: ask both at once.
            picking = asyncio.ensure_future(self.pick_agent(team))
            try:
                if body.player_id is not None:
                    player = await self._player(body.player_id, actor, "ticket.write")
                    if player.brand != body.brand:
                        raise InvalidInput(f"player {body.player_id} is a player of brand {player.brand}",
                                           field="brand")
                elif actor.operator is not None:
                    await authorize(self.bo, actor.operator, "ticket.write",
                                    Resource(kind="ticket", id=str(body.ticket_id), brand=body.brand))
            except BaseException:
                picking.cancel()
                raise
            author = actor.id if actor.kind == "agent" else None
            ticket, events = rules.apply(None, rules.CreateTicket(body, author), now_ms())
            message = rules.message_of(events)
            assert message is not None
            assignee = await picking
            ticket = replace(ticket, team=team, assignee=assignee)
            routed = rules.Assigned(ticket.ticket_id, ticket.created_at, "system:routing", team, assignee)
            events = (*events, routed)
            created = await self.tickets.commit_new(ticket, message)
        except PitbossError as exc:
            await self._audit_failure(actor, "ticket.create", str(body.ticket_id), body.brand, exc)
            raise
        if not created:
            stored = await self.tickets.index_existing(body.ticket_id, message)
            if stored.brand != body.brand or stored.player_id != body.player_id:
                raise Conflict(f"ticket {body.ticket_id} already exists with other details", field="ticket_id")
            # Finish what the first attempt may not have: the same events, the same SLA ids.
            _, replayed = rules.apply(None, rules.CreateTicket(body, author), stored.created_at)
            await self._after_commit(None, stored, replayed, strict=True)
            return stored.public(), False
        # The indexes and the agent's presence join the loads, the clock and the bus: all keyed by
        # the committed ticket, so one round of waiting after the commit (a retry redoes them all).
        also = [self.tickets.index_new(ticket, message)]
        if assignee is not None:
            also.append(self.presence.assigned(assignee, ticket.created_at))
        await self._after_commit(None, ticket, events, strict=True, created=True, also=also)
        await self._audit(actor, "ticket.create", ticket, after=_dump(ticket))
        return ticket.public(), True

    async def _load(self, ticket_id: UUID, actor: Actor, permission: str) -> Ticket:
        t = await self.tickets.get(ticket_id)
        await self._may(t, actor, permission)
        return t

    def _author(self, t: Ticket, body: MessageCreate, actor: Actor) -> str | None:
        kind = body.author_kind
        if actor.kind == "agent":
            if kind != "agent":
                raise InvalidInput("an agent writes as an agent", field="author_kind")
            return actor.id
        if kind == "agent":
            raise InvalidInput("only an agent writes as an agent", field="author_kind")
        if actor.kind == "player" and kind != "player":
            raise InvalidInput("a player writes as the player", field="author_kind")
        if kind == "player":
            return str(t.player_id) if t.player_id is not None else (t.sender_email or actor.id)
        return actor.id

    async def add_message(self, ticket_id: UUID, body: MessageCreate, actor: Actor) -> MessagePublic:
        """A public reply or an internal note (idempotent by message_id; 409 on a closed ticket)."""
        try:
            before = await self._load(ticket_id, actor, "ticket.write")
            author = self._author(before, body, actor)
            if body.attachments:
                known = {a.attachment_id for a in await self.tickets.attachments(ticket_id)}
                missing = [a for a in body.attachments if a not in known]
                if missing:
                    raise InvalidInput(f"no attachment {missing[0]} on this ticket: upload it first",
                                       field="attachments")
            after, events = rules.apply(before, rules.AddMessage(body, author), now_ms())
        except PitbossError as exc:
            await self._audit_failure(actor, "ticket.message", str(ticket_id), None, exc)
            raise
        message = rules.message_of(events)
        if message is None:
            # A retry: the stored message, and its event again (same id: applied once downstream).
            stored = next((m for m in await self.tickets.messages(before) if m.message_id == body.message_id), None)
            if stored is None:
                raise Conflict(f"message {body.message_id} is being written: retry", field="message_id")
            await self._after_commit(before, before, [rules.MessageAdded(before.ticket_id, stored.created_at,
                                                                         stored.author_id, stored)], strict=True)
            return stored
        await self.tickets.add_message(before, after, message)
        await self._after_commit(before, after, events, strict=True)
        action = "ticket.note" if message.visibility == "internal" else "ticket.reply"
        await self._audit(actor, action, after, before={"status": before.status},
                          after={"status": after.status, "message_id": str(message.message_id),
                                 "visibility": message.visibility})
        return message

    async def add_messages(self, ticket_id: UUID, items: Sequence[tuple[MessageCreate, Actor, datetime]],
                           read: Ticket | None = None) -> int:
        """Public messages in one commit (a chat's lines copied into its ticket), each as
        `add_message` would add it (the actor's access, its SLA events at its own time, its event
        and audit record) but with one compare-and-set for all: a Paxos round per chat line would
        cost the cluster more than the chat itself. Lines already in the ticket are skipped; the
        count of those added. Conflict (field version) when another change won the race. `read`: the
        ticket as the caller just read it, the compare-and-set base (saves a read; a stale one only
        loses the race)."""
        before = read if read is not None and read.ticket_id == ticket_id else await self.tickets.get(ticket_id)
        checked: set[tuple[str, str]] = set()
        current = before
        steps: list[tuple[Ticket, Ticket, Sequence[rules.Event], Actor, MessagePublic]] = []
        for body, actor, at in items:
            if body.attachments:
                raise InvalidInput("a copied line carries no attachments", field="attachments")
            try:
                if (actor.kind, actor.id) not in checked:
                    await self._may(before, actor, "ticket.write")
                    checked.add((actor.kind, actor.id))
                after, events = rules.apply(current, rules.AddMessage(body, self._author(current, body, actor)), at)
            except PitbossError as exc:
                await self._audit_failure(actor, "ticket.message", str(ticket_id), before.brand, exc)
                raise
            message = rules.message_of(events)
            if message is not None:
                steps.append((current, after, events, actor, message))
                current = after
        if not steps:
            return 0
        await self.tickets.add_messages(before, current, [m for *_, m in steps])
        await self._follow_up(before, current, [b for _, t, ev, _, _ in steps for b in bus_events(t, ev)],
                              [e for _, _, ev, _, _ in steps for e in rules.sla_events(ev)], strict=True)
        await asyncio.gather(*(
            self._audit(actor, "ticket.reply", t, before={"status": prev.status},
                        after={"status": t.status, "message_id": str(m.message_id), "visibility": m.visibility})
            for prev, t, _, actor, m in steps if actor.operator is not None
        ))
        return len(steps)

    async def update_ticket(self, ticket_id: UUID, body: TicketUpdate, actor: Actor) -> TicketPublic:
        """Status, priority, category, team, assignee, tags; a stale `version` is refused (409)."""
        try:
            before = await self._load(ticket_id, actor, "ticket.write")
            assigning = body.team is not None or "assignee" in body.model_fields_set
            if assigning:
                await self._check_assignment(before, body, actor)
            actor_id = actor.id if actor.kind == "agent" else f"{actor.kind}:{actor.id}"
            after, events = rules.apply(before, rules.UpdateTicket(body, actor_id), now_ms())
            if after.version != before.version:
                await self.tickets.update(before, after)
        except PitbossError as exc:
            await self._audit_failure(actor, "ticket.update", str(ticket_id), None, exc)
            raise
        if after.version == before.version:
            return before.public()
        if after.assignee is not None and after.assignee != before.assignee:
            await self.presence.assigned(after.assignee, after.updated_at)
        await self._after_commit(before, after, events, strict=False)
        await self._audit(actor, "ticket.update", after, before=_dump(before), after=_dump(after))
        return after.public()

    async def link_player(self, ticket_id: UUID, body: TicketPlayerLink, actor: Actor) -> TicketPublic:
        """An agent links a ticket without a player to one (`domain.player_links.link_player`): the ticket
        and its messages then show in the player's history. Same player again: a retry (the indexes are
        re-written, nothing else). 409 on a stale version or a ticket of another player; 404/422 on
        `player_id` for an unknown player or one of another brand."""
        try:
            if actor.operator is None:
                raise Forbidden("an agent links tickets to players, with their operator session")
            before = await self._load(ticket_id, actor, "ticket.write")
            if before.player_id is not None and before.player_id != body.player_id:
                raise Conflict(f"ticket {ticket_id} already belongs to player {before.player_id}", field="player_id")
            player = await self._player(body.player_id, actor, "ticket.write")
            after = player_links.link_player(before, body.player_id, player.brand or "", body.version, now_ms())
            await self.tickets.link_player(before, after)
        except PitbossError as exc:
            await self._audit_failure(actor, "ticket.link_player", str(ticket_id), None, exc)
            raise
        if after is not before:
            await self._audit(actor, "ticket.link_player", after,
                              before={"player_id": None, "version": before.version},
                              after={"player_id": str(after.player_id), "version": after.version,
                                     "sender_email": after.sender_email})
        return after.public()

    async def player_candidates(self, ticket_id: UUID, actor: Actor) -> list[PlayerCandidate]:
        """Who an unlinked ticket's sender address names in its brand (`SenderResolver.candidates`: the
        contacts index checked against each live profile), for the agent to pick the player to link.
        Every live match is offered, also when the gateway did not link on its own (several accounts
        share the address, or the sender's domain failed DMARC): the agent decides. Empty for a linked
        ticket or one without a sender address. Players the agent may not read are left out; shown
        personal data is masked as on the player page, and the offer is on the audit record."""
        if actor.operator is None:
            raise Forbidden("an agent links tickets to players, with their operator session")
        op = actor.operator
        t = await self._load(ticket_id, actor, "ticket.read")
        if t.player_id is not None or not t.sender_email or self.contacts is None:
            return []
        out: list[PlayerCandidate] = []
        for pid, state in (await self.contacts.candidates(t.brand, t.sender_email)).items():
            resource = await resource_of_player(self.bo, pid, state)
            if not self.bo.policy.decide(op.subject, "player.read", resource).allowed:
                continue
            profile = state.get("profile") or {}
            shown = self.bo.policy.mask(op.subject, {k: profile.get(k) for k in CANDIDATE_FIELDS}, resource)
            clear = self.bo.policy.decide(op.subject, self.bo.policy.pii_permission, resource).allowed
            out.append(PlayerCandidate(player_id=pid, masked=not clear, **shown))
        if out:
            await self._audit(actor, "ticket.player_candidates", t,
                              after={"players": [str(c.player_id) for c in out],
                                     "masked": [str(c.player_id) for c in out if c.masked]})
        return out

    async def _check_assignment(self, t: Ticket, body: TicketUpdate, actor: Actor) -> None:
        if body.team is not None and self.routing.team(body.team) is None:
            raise InvalidInput(f"no team {body.team} in the routing configuration", field="team")
        self_take = (body.team is None and body.assignee is not None and body.assignee == actor.id)
        if actor.operator is not None and not self_take:
            # Taking a ticket for oneself is answering it; handing it to others is assigning.
            await authorize(self.bo, actor.operator, "ticket.assign", _ticket_resource(t))
        if body.assignee is not None and body.assignee != t.assignee:
            try:
                target = await self.bo.identity.get_operator(UUID(body.assignee))
            except (ValueError, NotFound) as exc:
                raise InvalidInput(f"no operator {body.assignee}", field="assignee") from exc
            subject = routing_subject(target)
            if not self.bo.policy.decide(subject, "ticket.write", _ticket_resource(t)).allowed:
                raise InvalidInput(f"operator {target.username} may not work this ticket", field="assignee")

    async def get_ticket(self, ticket_id: UUID, actor: Actor) -> TicketView:
        """The ticket, its conversation (internal notes hidden from players), attachments and SLA."""
        t = await self._load(ticket_id, actor, "ticket.read")
        messages, attachments, sla = await asyncio.gather(
            self.tickets.messages(t), self.tickets.attachments(ticket_id), self._sla_of(t))
        if actor.kind != "agent":
            messages = [m for m in messages if m.visibility == "public"]
            shown = {a for m in messages for a in m.attachments}
            attachments = [a for a in attachments if a.attachment_id in shown]
        await self._audit(actor, "ticket.read", t)
        return TicketView(ticket=t.public(), messages=messages, attachments=attachments, sla=sla)

    async def _sla_of(self, t: Ticket) -> dict[str, Any] | None:
        if self.sla is None:
            return None
        try:
            return sla_json(await self.sla.status(t, datetime.now(UTC)))
        except PitbossError:
            return None

    async def queue(self, actor: Actor, *, statuses: Sequence[Status] = ACTIVE_STATUSES,
                    brand: str | None = None, team: str | None = None, assignee: str | None = None,
                    cursor: str | None = None, limit: int = 50) -> QueuePage:
        """Tickets newest first over the statuses and brands asked (the operator's brands when none).
        Team and assignee filter the page (it may come back shorter, with a cursor still given)."""
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit is 1 to {MAX_PAGE}", field="limit")
        bad = [s for s in statuses if s not in STATUSES]
        if bad or not statuses:
            raise InvalidInput(f"status is one of {', '.join(STATUSES)}", field="status")
        brands = await self._brands(actor, brand)
        streams = [f"{b}|{s}" for b in brands for s in dict.fromkeys(statuses)]
        state: dict[str, str | None]
        if cursor:
            raw = _unb64(cursor)
            if set(raw) != set(streams) or not all(v is None or isinstance(v, str) for v in raw.values()):
                raise InvalidInput("not a cursor of this list (filters changed?)", field="cursor")
            state = {k: raw[k] for k in streams}
        else:
            state = dict.fromkeys(streams, "")
        live = [k for k, v in state.items() if v is not None]
        pages = await asyncio.gather(*(self.tickets.queue(k.split("|", 1)[0], k.split("|", 1)[1],
                                                          state[k] or None, limit) for k in live))
        merged = sorted(((t, k) for k, (ts, _) in zip(live, pages, strict=True) for t in ts),
                        key=lambda x: (x[0].created_at, x[0].ticket_id.int), reverse=True)[:limit]
        taken: dict[str, Ticket] = {}
        for t, k in merged:
            taken[k] = t  # the last (oldest) shown of each stream
        nxt: dict[str, str | None] = dict(state)
        for k, (ts, store_next) in zip(live, pages, strict=True):
            shown_all = all(any(t is x for x, _ in merged) for t in ts)
            if shown_all:
                nxt[k] = store_next
            elif k in taken:
                nxt[k] = _store_cursor(taken[k])
        more = any(v is not None for v in nxt.values())
        tickets = [t for t, _ in merged if (team is None or t.team == team)
                   and (assignee is None or t.assignee == assignee)]
        if actor.operator is not None:
            tickets = [t for t in tickets
                       if self.bo.policy.decide(actor.operator.subject, "ticket.read", _ticket_resource(t)).allowed]
        slas: dict[UUID, SlaStatus] = {}
        if self.sla is not None and tickets:
            try:
                slas = await self.sla.statuses(tickets, datetime.now(UTC))
            except PitbossError:
                slas = {}
        items = [QueueItem(ticket=t.public(), sla=sla_json(slas.get(t.ticket_id))) for t in tickets]
        return QueuePage(items=items, next_cursor=_b64(nxt) if more else None)

    async def _brands(self, actor: Actor, brand: str | None) -> list[str]:
        if actor.brand is not None:
            if brand is not None and brand != actor.brand:
                raise Forbidden(f"this API key is for brand {actor.brand}", field="brand")
            return [actor.brand]
        held = actor.operator.subject.brands if actor.operator is not None else frozenset({ALL})
        if brand is not None:
            if ALL not in held and brand not in held:
                raise Forbidden(f"brand {brand} is outside your brands", field="brand")
            return [brand]
        if ALL in held:
            return sorted(await self.bo.keys.brands())
        return sorted(held)

    async def player_history(self, player_id: UUID, actor: Actor, cursor: str | None = None,
                             limit: int = 50) -> HistoryPage:
        """The player's communication history, newest first (internal items hidden from players)."""
        if actor.kind == "player" and actor.id != str(player_id):
            raise NotFound(f"no player {player_id}", field="player_id")
        resource = await self._player(player_id, actor, "ticket.read")
        items, nxt = await self.tickets.timeline(player_id, cursor, limit)
        if actor.kind != "agent":
            items = [i for i in items if i.visibility == "public"]
        if actor.operator is not None:
            await auditing.record(self.bo, actor.operator, "ticket.history", target_kind="player",
                                  target_id=str(player_id), brand=resource.brand)
        return HistoryPage(items=items, next_cursor=nxt)

    # ------------------------------------------------------------------ attachments

    async def upload_attachment(self, ticket_id: UUID, attachment_id: UUID, filename: str, content_type: str,
                                data: bytes, actor: Actor) -> tuple[AttachmentMeta, bool]:
        """Store a file for the ticket (type allow-list, extension, size, sniffed content); a message
        then names it. (meta, created); a retry with the same id and bytes returns the first."""
        try:
            t = await self._load(ticket_id, actor, "ticket.write")
            if t.status == "closed":
                raise Conflict(f"ticket {ticket_id} is closed: open a new ticket instead", field="ticket_id")
            meta = rules.attachment_meta(attachment_id, ticket_id, filename, content_type, data, now_ms())
            created = await self.tickets.put_attachment(meta, data)
        except PitbossError as exc:
            await self._audit_failure(actor, "ticket.attachment", str(ticket_id), None, exc)
            raise
        if created:
            await self._audit(actor, "ticket.attachment", t, after=meta.model_dump(mode="json"))
        return meta, created

    async def get_attachment(self, ticket_id: UUID, attachment_id: UUID, actor: Actor) -> tuple[AttachmentMeta, bytes]:
        t = await self._load(ticket_id, actor, "ticket.read")
        meta, data = await self.tickets.get_attachment(ticket_id, attachment_id)
        await self._audit(actor, "ticket.attachment.read", t, after={"attachment_id": str(attachment_id)})
        return meta, data

    # ------------------------------------------------------------------ agents

    async def set_presence(self, op: Operator, body: PresenceUpdate) -> AgentPublic:
        """Set or refresh (heartbeat) the operator's presence and the teams they work."""
        if body.teams is not None:
            unknown = [t for t in body.teams if self.routing.team(t) is None]
            if unknown:
                raise InvalidInput(f"no team {unknown[0]} in the routing configuration", field="teams")
            teams = list(dict.fromkeys(body.teams))
        else:
            previous = await self.presence.get(op.id)
            teams = list(previous.teams) if previous is not None and previous.teams else (
                routing_rules.configured_teams(self.routing, op.id, op.name) or [self.routing.default_team])
        before = await self.presence.get(op.id) if body.teams is None else None
        p = await self.presence.set(op.id, op.name, body.status, teams)
        changed = before is None or before.status != p.status or before.teams != p.teams
        if changed:
            await auditing.record(self.bo, op, "ticket.presence", target_kind="operator", target_id=op.id,
                                  before={"status": before.status, "teams": list(before.teams)} if before else None,
                                  after={"status": p.status, "teams": list(p.teams)})
        return AgentPublic(agent_id=p.agent_id, name=p.name, status=p.status, teams=list(p.teams),
                           load=await self.routes.load(op.id), last_seen=p.seen.isoformat())

    async def agents(self, team: str | None = None) -> list[AgentPublic]:
        """Agents whose presence is live, with their loads, least loaded first."""
        online = [p for p in await self.presence.online() if team is None or team in p.teams]
        loads = await self.routes.loads([p.agent_id for p in online])
        out = [AgentPublic(agent_id=p.agent_id, name=p.name, status=p.status, teams=list(p.teams),
                           load=loads[p.agent_id], last_seen=p.seen.isoformat()) for p in online]
        return sorted(out, key=lambda a: (a.status != "available", a.load, a.name))


def routing_subject(target: OperatorPublic) -> Subject:
    """The policy subject of an operator record (a ticket's prospective assignee)."""
    return Subject(operator_id=str(target.operator_id), roles=frozenset(target.roles),
                   brands=frozenset(target.brands), jurisdictions=frozenset(target.jurisdictions))


_desk: list[HelpDesk] = []
_lock = asyncio.Lock()


async def helpdesk() -> HelpDesk:
    """The replica's HelpDesk (FastAPI dependency), built on first use from the bound BackOffice."""
    bo = await backoffice()
    if _desk and _desk[0].bo is bo:
        return _desk[0]
    async with _lock:
        if not (_desk and _desk[0].bo is bo):
            _desk[:] = [await asyncio.to_thread(HelpDesk, bo)]
    return _desk[0]


HD = Annotated[HelpDesk, Depends(helpdesk)]

"""Live chat: copying each chat's stored lines into its ticket, in the help-desk worker's process.

A line is stored in `chat_lines` and delivered by the help-desk replica holding the sockets (see
routes_chat.py); the same round trip that publishes it queues the chat in the Redis copy queue
(`adapters.redis_chat`). `TranscriptCopier` runs in `HelpdeskWorker` (worker.py), not in the API
replicas: a copy is a ticket commit (a Paxos round, SLA clocks, events, audit records) and costs
several times what delivering the line does, so in the replica it held the event loop that live
delivery needs (measured: delivery p99 343 ms with the copies in the replica, 78 ms without, 200
chats at 100 lines/s on 2 cores).

- A chat is copied once its first uncopied line is `chat_copy_seconds` old, so one commit carries
  every line of those seconds; copies start at most `chat_copies_per_second` a second (one commit
  each), at most `_CONCURRENCY` at once, so a burst of chats waits longer and each copy carries more
  lines instead of the copies taking the Cassandra time the live writes need.
- One copier per chat at a time: a copier leases the chat on the queue for `_LEASE_MS` (so workers
  can be scaled out, and a copy cut off by a crash falls due again); the copied-up-to seq in Redis;
  the message id derives from the line's client id, so a copy repeated after a crash adds nothing
  twice (`HelpDesk.add_messages` skips lines already in the ticket).
- An agent's line is copied as that agent: authorized and audited with the context their socket
  wrote with the line (operator, address, user agent). Without it (expired after 7 days, Redis
  lost) the copy stops before that line and retries every `_AGENT_RETRY_SECONDS`.
- A failed copy is queued again (`_RETRY_SECONDS`); the lines themselves are durable already.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime
from uuid import UUID

from pydantic import BaseModel, ConfigDict

from adapters.cassandra.chat import ChatStore
from adapters.redis_chat import CopyQueue, epoch_ms
from adapters.settings import Settings
from domain.errors import Conflict
from domain.tickets import Ticket
from schemas.chat import ChatLine
from schemas.operators import OperatorPublic
from schemas.tickets import MessageCreate
from serve_apps.backoffice.deps import Operator, subject_of
from serve_apps.backoffice.identity import SessionInfo
from serve_apps.helpdesk.service import Actor, HelpDesk

log = logging.getLogger("pitboss.chat.copy")

_POLL_SECONDS = 0.5
_BATCH = 500  # due chats read per poll
_CONCURRENCY = 4
_LEASE_MS = 60_000
_RETRY_SECONDS = 5.0
_AGENT_RETRY_SECONDS = 300.0
_ATTEMPTS = 8  # compare-and-set races lost before a copy gives up (and is queued again)



class AgentContext(BaseModel):
    """What an agent's chat line is copied with: who, from where (as their socket saw it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operator: OperatorPublic
    session_handle: str
    session_expires_at: datetime
    ip: str | None
    user_agent: str | None


def agent_context(op: Operator) -> str:
    return AgentContext(operator=op.session.operator, session_handle=op.session.handle,
                        session_expires_at=op.session.expires_at, ip=op.ip,
                        user_agent=op.user_agent).model_dump_json()


def operator_of(context: str) -> Operator:
    """The agent of a line as an `Operator` for authorization and the audit record. The session's
    secrets are not kept (nothing here acts on the session itself)."""
    c = AgentContext.model_validate_json(context)
    info = SessionInfo(sid="", csrf="", operator=c.operator, stage="full", handle=c.session_handle,
                       expires_at=c.session_expires_at)
    return Operator(session=info, subject=subject_of(info), ip=c.ip, user_agent=c.user_agent, request_id=None)


class TranscriptCopier:
    """Polls the copy queue and copies each due chat's lines into its ticket (module docstring)."""

    def __init__(self, settings: Settings, store: ChatStore, queue: CopyQueue, hd: HelpDesk) -> None:
        self.settings, self.store, self.queue, self.hd = settings, store, queue, hd
        self._bound = asyncio.Semaphore(_CONCURRENCY)
        self._running: dict[UUID, asyncio.Task[None]] = {}
        self._next_slot = 0.0
        self.totals = {"copies": 0, "lines": 0, "failed": 0, "left_closed": 0}

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: the queue is still there when it is back
                log.warning("reading the chat copy queue failed: %s", exc)
            await asyncio.sleep(_POLL_SECONDS)

    async def sweep(self, now_ms: int | None = None) -> int:
        """Start copying every chat due now; how many were started."""
        now_ms = now_ms if now_ms is not None else epoch_ms()
        due_before = now_ms - int(self.settings.chat_copy_seconds * 1000)
        due = await self.queue.due(due_before, _BATCH)
        started = 0
        for ticket_id in due:
            if ticket_id in self._running:
                continue
            await self._paced()
            lease = epoch_ms() + _LEASE_MS
            if not await self.queue.lease(ticket_id, due_before, lease):
                continue  # another copier has it
            self._running[ticket_id] = asyncio.create_task(self._copy_leased(ticket_id, lease),
                                                           name=f"chat-copy-{ticket_id}")
            started += 1
        return started

    async def _paced(self) -> None:
        now = time.monotonic()
        slot = max(now, self._next_slot)
        self._next_slot = slot + 1.0 / self.settings.chat_copies_per_second
        if slot > now:
            await asyncio.sleep(slot - now)

    async def _copy_leased(self, ticket_id: UUID, lease: int) -> None:
        try:
            async with self._bound:
                outcome = await self.copy(ticket_id)
        except Exception as exc:
            outcome = "failed"
            self.totals["failed"] += 1
            log.warning("chat %s: copying lines into the ticket failed: %s", ticket_id, exc)
        finally:
            self._running.pop(ticket_id, None)
        delay = {"failed": _RETRY_SECONDS, "waiting": _AGENT_RETRY_SECONDS}.get(outcome)
        with contextlib.suppress(Exception):  # Redis away: the lease falls due again by itself
            await self.queue.settle(ticket_id, lease, epoch_ms() + int(delay * 1000) if delay else None)

    async def copy(self, ticket_id: UUID) -> str:
        """Copy the chat's lines not yet in its ticket (the caller holds its lease): `copied`,
        `nothing`, `closed` (the ticket was closed: the lines stay in the chat record), or `waiting`
        (stopped before an agent's line whose context is gone)."""
        done = await self.queue.copied(ticket_id)
        lines = await self.store.all_after(ticket_id, done)
        if not lines:
            return "nothing"
        ticket = await self.hd.tickets.get(ticket_id)
        if ticket.status == "closed":
            # Lines stored as the scheduler closed the ticket: a closed ticket takes no message, so
            # they stay in the chat's own record only, instead of a copy retried for ever.
            log.warning("chat %s: ticket closed; %d line(s) after seq %d stay in the chat record only",
                        ticket_id, len(lines), done)
            await self.queue.set_copied(ticket_id, lines[-1].seq)
            self.totals["left_closed"] += len(lines)
            return "closed"
        items: list[tuple[MessageCreate, Actor, datetime]] = []
        agents: dict[str, Actor | None] = {}
        last, outcome = done, "copied"
        for line in lines:
            if line.message_id not in ticket.messages:
                actor = await self._actor(ticket, line, agents)
                if actor is None:
                    outcome = "waiting"
                    break
                items.append((MessageCreate(message_id=line.message_id, body=line.body,
                                            author_kind=line.author_kind), actor, line.created_at))
            last = line.seq
        if items:
            await self._add(ticket, items)
        if last != done:
            await self.queue.set_copied(ticket_id, last)
        self.totals["copies"] += 1
        self.totals["lines"] += len(items)
        return outcome

    async def _actor(self, t: Ticket, line: ChatLine, agents: dict[str, Actor | None]) -> Actor | None:
        if line.author_kind != "agent":
            return Actor("player", str(t.player_id), None, brand=t.brand)
        who = line.author_id or ""
        if who not in agents:
            context = await self.queue.agent(who)
            agents[who] = Actor.agent(operator_of(context)) if context else None
        return agents[who]

    async def _add(self, ticket: Ticket, items: list[tuple[MessageCreate, Actor, datetime]]) -> None:
        read: Ticket | None = ticket  # the first attempt commits on the read copy() made
        for attempt in range(_ATTEMPTS):
            try:
                # All the lines in one ticket commit, each at the time it was said (SLA clocks).
                await self.hd.add_messages(ticket.ticket_id, items, read)
                return
            except Conflict as exc:
                # Another change to the ticket won its version race: read it again and retry.
                if exc.field != "version" or attempt == _ATTEMPTS - 1:
                    raise
                read = None
                await asyncio.sleep(0.05 * (attempt + 1))

"""Live chat: a reassigned chat reaches the new agent's open console at once, and the consoles that
follow it learn it moved.

`ChatMoveConsumer` reads `ticket.assigned` from the shared durable queue
`PITBOSS_HELPDESK_CHAT_MOVES_QUEUE` (each help-desk worker replica consumes it; dead letters in
`<queue>.dlq`) and, for a chat ticket, from the ticket as it is NOW (a late or repeated event
announces the current assignee, never a past one):

- lists the chat among the assignee's open chats (`agent_chats`, what a reloaded console shows) and
  takes it off the previous assignee's list (`previous_assignee` in the event), unless the chat is
  theirs again by now;
- publishes a `chat` frame (the chat's summary) on the assignee's Redis channel
  `pitboss:chat:a:<operator>`: their sockets follow the chat and the console joins it (replaying
  its lines);
- publishes a `moved {ticket_id, assignee, team}` frame on the chat's channel
  `pitboss:chat:t:<ticket>`: every agent socket following the chat forwards it (player sockets drop
  it), and the previous agent's console marks the chat as moved and stops offering a reply.

The creation's own assignment (ticket version 1) is announced by `POST /chat/sessions` itself.
Applying an event twice publishes the same frames twice; the console ignores the repeat.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import redis.asyncio as aioredis
from prometheus_client import Counter

from adapters.bus_consumer import DeadLetter, QueueConsumer
from adapters.cassandra.chat import ChatStore
from adapters.cassandra.tickets import TicketStore
from adapters.redis_chat import agent_channel, ticket_channel
from adapters.settings import Settings
from domain.errors import NotFound
from schemas.chat import ChatSummary

ROUTING_KEY = "ticket.assigned"
MOVES = Counter("pitboss_helpdesk_chat_moves_total", "ticket.assigned events seen by the chat consoles' notifier",
                ["outcome"])


def _frame(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"), default=str)


class ChatMoveConsumer(QueueConsumer):
    label = "chat-moves"

    def __init__(self, settings: Settings, tickets: TicketStore, chats: ChatStore, redis: aioredis.Redis) -> None:
        super().__init__(settings, settings.helpdesk_chat_moves_queue, (ROUTING_KEY,), MOVES, prefetch=16)
        self.tickets, self.chats, self.redis = tickets, chats, redis

    async def handle(self, raw: dict[str, Any]) -> str:
        inner = raw.get("payload")
        payload: dict[str, Any] = inner if isinstance(inner, dict) else raw
        try:
            ticket_id = UUID(str(payload["ticket_id"]))
            version = int(payload.get("version") or 0)
            previous = payload.get("previous_assignee")
        except (KeyError, ValueError, TypeError) as exc:
            raise DeadLetter(f"not a ticket.assigned event: {exc}") from exc
        if version <= 1:
            return "skipped"  # the creation's assignment: POST /chat/sessions announces it
        try:
            t = await self.tickets.get(ticket_id)
        except NotFound:
            return "no_ticket"
        if t.channel != "chat":
            return "skipped"
        if isinstance(previous, str) and previous and previous != t.assignee:
            await self.chats.close_for(previous, t.ticket_id)
        if t.assignee:
            await self.chats.open_for(t.assignee, t.ticket_id, datetime.now(UTC))
            summary = ChatSummary(ticket_id=t.ticket_id, brand=t.brand, player_id=t.player_id, subject=t.subject,
                                  status=t.status, assignee=t.assignee,
                                  last_seq=await self.chats.last_seq(t.ticket_id))
            await self.redis.publish(agent_channel(t.assignee),
                                     _frame({"type": "chat", **summary.model_dump(mode="json")}))
        await self.redis.publish(ticket_channel(t.ticket_id), _frame({
            "type": "moved", "ticket_id": str(t.ticket_id), "assignee": t.assignee, "team": t.team}))
        return "announced"

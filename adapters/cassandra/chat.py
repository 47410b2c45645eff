"""Chat lines and agents' open chats in Cassandra (tables in schemas/cql/010_helpdesk_chat.cql).

Lines are plain inserts keyed by (ticket_id, seq): the sequence is unique because Redis hands it
out (adapters/redis_chat.py), so no lightweight transaction is needed. `last_seq` seeds Redis
again when it lost the counter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute, utc
from schemas.chat import ChatLine

_CONCURRENCY = 64
MAX_REPLAY = 1000


def _line(row: dict[str, Any]) -> ChatLine:
    return ChatLine(ticket_id=row["ticket_id"], seq=row["seq"], message_id=row["message_id"],
                    client_id=row["client_id"], author_kind=row["author_kind"], author_id=row["author_id"],
                    body=row["body"], created_at=utc(row["created_at"]))


class ChatStore:
    """Statements prepared once (the constructor blocks on the prepares: build it off the event loop)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        p = session.prepare
        self._put = p("INSERT INTO chat_lines (ticket_id, seq, message_id, client_id, author_kind, author_id, body, "
                      "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
        self._after = p("SELECT ticket_id, seq, message_id, client_id, author_kind, author_id, body, created_at "
                        "FROM chat_lines WHERE ticket_id = ? AND seq > ? LIMIT ?")
        self._last = p("SELECT seq FROM chat_lines WHERE ticket_id = ? ORDER BY seq DESC LIMIT 1")
        self._open = p("INSERT INTO agent_chats (operator_id, ticket_id, opened_at) VALUES (?, ?, ?)")
        self._close = p("DELETE FROM agent_chats WHERE operator_id = ? AND ticket_id = ?")
        self._list = p("SELECT ticket_id, opened_at FROM agent_chats WHERE operator_id = ? LIMIT ?")
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"chat_{op}", limit=self._limit)

    async def put(self, line: ChatLine) -> None:
        await self._run(self._put, (line.ticket_id, line.seq, line.message_id, line.client_id, line.author_kind,
                                    line.author_id, line.body, line.created_at), "put")

    async def after(self, ticket_id: UUID, after: int, limit: int = MAX_REPLAY) -> list[ChatLine]:
        """Lines with seq > after, oldest first, at most `limit`."""
        rows = await self._run(self._after, (ticket_id, after, limit), "after")
        return [_line(r) for r in rows]

    async def all_after(self, ticket_id: UUID, after: int) -> list[ChatLine]:
        """Every line with seq > after, read in pages."""
        out: list[ChatLine] = []
        while True:
            page = await self.after(ticket_id, after)
            out.extend(page)
            if len(page) < MAX_REPLAY:
                return out
            after = page[-1].seq

    async def last_seq(self, ticket_id: UUID) -> int:
        rows = await self._run(self._last, (ticket_id,), "last")
        return int(rows[0]["seq"]) if rows else 0

    async def open_for(self, operator_id: str, ticket_id: UUID, at: datetime) -> None:
        await self._run(self._open, (operator_id, ticket_id, at), "agent")

    async def close_for(self, operator_id: str, ticket_id: UUID) -> None:
        await self._run(self._close, (operator_id, ticket_id), "agent")

    async def chats_of(self, operator_id: str, limit: int = 500) -> list[UUID]:
        rows = await self._run(self._list, (operator_id, limit), "agent")
        return [r["ticket_id"] for r in rows]

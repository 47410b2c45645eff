"""The mail gateway's tables (schemas/cql/011_helpdesk_email.cql): which email Message-IDs belong to
which ticket, each ticket's thread in order, the `[#TAG]` index, and the outbound send records.

Written around the ticket service's commits, never instead of them: an inbound message's ids are
recorded after the ticket service made the message durable (a crash in between is repaired by the
sender's retry, which threads to the same ticket by the same deterministic ids); an outbound reply's
id is recorded before it is sent (so a fast answer to it already threads).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import aexecute, utc

Direction = Literal["in", "out"]
SendState = Literal["sending", "sent", "failed"]
_CONCURRENCY = 16


def short_id(ticket_id: UUID) -> str:
    """The tag Pitboss writes into subjects, `[#<short id>]`: the first 10 hex digits of the ticket id
    (40 bits; the tag index keeps every ticket of a tag and the sender's address decides)."""
    return ticket_id.hex[:10].upper()


@dataclass(frozen=True, slots=True)
class KnownId:
    message_id: str
    ticket_id: UUID
    ticket_message_id: UUID | None
    direction: Direction
    address: str | None


@dataclass(frozen=True, slots=True)
class ThreadEntry:
    at: datetime
    message_id: str
    direction: Direction
    address: str | None


@dataclass(frozen=True, slots=True)
class SendRecord:
    ticket_message_id: UUID
    ticket_id: UUID
    email_message_id: str
    recipient: str
    state: SendState
    attempts: int
    detail: str | None


class EmailThreads:
    def __init__(self, session: Session) -> None:
        self.session = session
        p = session.prepare
        self._id_put = p(
            "INSERT INTO helpdesk_email_ids (message_id, ticket_id, ticket_message_id, direction, address, "
            "recorded_at) VALUES (?, ?, ?, ?, ?, ?)"
        )
        self._id_get = p(
            "SELECT message_id, ticket_id, ticket_message_id, direction, address FROM helpdesk_email_ids "
            "WHERE message_id = ?"
        )
        self._thread_put = p(
            "INSERT INTO helpdesk_email_thread (ticket_id, at, message_id, direction, address) VALUES (?, ?, ?, ?, ?)"
        )
        self._thread_get = p(
            "SELECT at, message_id, direction, address FROM helpdesk_email_thread WHERE ticket_id = ? LIMIT ?"
        )
        self._tag_put = p("INSERT INTO helpdesk_email_tags (tag, ticket_id) VALUES (?, ?)")
        self._tag_get = p("SELECT ticket_id FROM helpdesk_email_tags WHERE tag = ? LIMIT 100")
        self._out_claim = p(
            "INSERT INTO helpdesk_email_outbox (ticket_message_id, ticket_id, email_message_id, recipient, state, "
            "attempts, created_at, updated_at) VALUES (?, ?, ?, ?, 'sending', 1, ?, ?) IF NOT EXISTS"
        )
        self._out_get = p(
            "SELECT ticket_message_id, ticket_id, email_message_id, recipient, state, attempts, detail "
            "FROM helpdesk_email_outbox WHERE ticket_message_id = ?"
        )
        self._out_set = p(
            "UPDATE helpdesk_email_outbox SET state = ?, attempts = ?, detail = ?, updated_at = ? "
            "WHERE ticket_message_id = ?"
        )
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"helpdesk_mail_{op}", limit=self._limit)

    # ------------------------------------------------------------------------ threading

    async def known(self, message_id: str) -> KnownId | None:
        rows = await self._run(self._id_get, (message_id,), "id")
        if not rows:
            return None
        r = rows[0]
        return KnownId(r["message_id"], r["ticket_id"], r["ticket_message_id"], r["direction"], r["address"])

    async def first_known(self, message_ids: Sequence[str]) -> list[KnownId]:
        """The known ids among `message_ids`, in the order given (read in parallel)."""
        found = await asyncio.gather(*(self.known(m) for m in message_ids))
        return [k for k in found if k is not None]

    async def record(
        self,
        ticket_id: UUID,
        message_id: str,
        ticket_message_id: UUID | None,
        direction: Direction,
        address: str | None,
        at: datetime,
    ) -> None:
        """Index one email of a ticket (idempotent: the same values again are the same rows)."""
        await asyncio.gather(
            self._run(self._id_put, (message_id, ticket_id, ticket_message_id, direction, address, at), "id"),
            self._run(self._thread_put, (ticket_id, at, message_id, direction, address), "thread"),
            self._run(self._tag_put, (short_id(ticket_id), ticket_id), "tag"),
        )

    async def thread(self, ticket_id: UUID, limit: int = 1000) -> list[ThreadEntry]:
        """The ticket's emails, oldest first."""
        rows = await self._run(self._thread_get, (ticket_id, limit), "thread")
        return [ThreadEntry(utc(r["at"]) or datetime.now(UTC), r["message_id"], r["direction"], r["address"])
                for r in rows]

    async def tagged(self, tag: str) -> list[UUID]:
        return [r["ticket_id"] for r in await self._run(self._tag_get, (tag.upper(),), "tag")]

    # ------------------------------------------------------------------------ outbound records

    async def claim(
        self, ticket_message_id: UUID, ticket_id: UUID, email_message_id: str, recipient: str, now: datetime
    ) -> tuple[bool, SendRecord]:
        """Record a reply as `sending` unless a record exists: (True, new record) or (False, the existing one)."""
        rows = await self._run(
            self._out_claim, (ticket_message_id, ticket_id, email_message_id, recipient, now, now), "outbox"
        )
        if rows and rows[0].get("[applied]"):
            return True, SendRecord(ticket_message_id, ticket_id, email_message_id, recipient, "sending", 1, None)
        existing = await self.send_record(ticket_message_id)
        assert existing is not None  # the conditional insert saw it
        return False, existing

    async def send_record(self, ticket_message_id: UUID) -> SendRecord | None:
        rows = await self._run(self._out_get, (ticket_message_id,), "outbox")
        if not rows:
            return None
        r = rows[0]
        return SendRecord(r["ticket_message_id"], r["ticket_id"], r["email_message_id"], r["recipient"], r["state"],
                          int(r["attempts"] or 0), r["detail"])

    async def mark(self, ticket_message_id: UUID, state: SendState, attempts: int, detail: str | None,
                   now: datetime) -> None:
        await self._run(self._out_set, (state, attempts, (detail or "")[:1000] or None, now, ticket_message_id),
                        "outbox")

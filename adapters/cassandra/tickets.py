"""Help-desk tickets in Cassandra (tables in schemas/cql/007_helpdesk.cql, rules in domain/tickets.py).

The `tickets` row is the commit point of every command: created `IF NOT EXISTS`, changed only by
`UPDATE ... IF version = ?` (Conflict, field "version", when another agent got there first).
Everything else is written around it so that a reader never sees half a command:

- a message row is written *before* the ticket row names it, and the conversation lists only
  rows the ticket names (id and time), so a message whose ticket update lost the race stays
  invisible, and its retry (new time) is a different row. The row is a plain insert, not a
  lightweight transaction: its key holds its own time, so two writes of one key carry the same
  message, and a Paxos round per message would halve what the cluster can take;
- the indexes (player's tickets, the queue, the timeline) are written *after* the commit; they
  are upserts with keys taken from the committed ticket, and the queue reader checks each
  ticket's current status against the row, never trusting the index alone.

Usage by the service (read, decide, write):

    before = await store.get(ticket_id)
    after, events = tickets.apply(before, command, now)
    if events: await store.add_message(before, after, tickets.message_of(events))  # or store.update(before, after)
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from cassandra.cluster import Session

from adapters.cassandra.session import abatch, aexecute, applied, utc
from domain.errors import Conflict, InvalidInput, NotFound
from domain.tickets import Ticket, check_attachment
from schemas.tickets import AttachmentMeta, MessagePublic, TicketPublic, TimelineItem, summarize

CHUNK_BYTES = 512 * 1024
MAX_PAGE = 200
_DAYS_PER_PAGE = 64  # day partitions one queue page may read before answering with a cursor
_CONCURRENCY = 16
_END_MS = 253_402_214_400_000  # 9999-12-31T00:00Z: above every stored time
_Write = tuple[Any, tuple[Any, ...]]  # a prepared statement and its parameters
_TICKET_COLUMNS = (
    "ticket_id, player_id, brand, channel, category, priority, status, subject, language, team, assignee, "
    "tags, version, created_at, updated_at, first_responded_at, solved_at, closed_at, sender_email, messages"
)


def _day(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%d")


def _ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


def _encode(cursor: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(cursor, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(cursor: str | None, keys: Sequence[str]) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(value, dict) or set(value) != set(keys):
            raise ValueError("keys")
        UUID(value["id"])
        datetime.fromtimestamp(int(value["at"]) / 1000, UTC)
        return value
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise InvalidInput("not a cursor this list gave out", field="cursor") from exc


def _committed(rows: list[dict[str, Any]], before: Ticket) -> None:
    """Conflict (field version) unless the `IF version = <before's>` write took effect."""
    if not applied(rows):
        now = rows[0].get("version") if rows else None
        raise Conflict(f"ticket {before.ticket_id} was changed by someone else (version {now}, expected "
                       f"{before.version}): reload it", field="version")


def _limit(limit: int) -> int:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit is 1 to {MAX_PAGE}", field="limit")
    return limit


def _ticket(row: dict[str, Any]) -> Ticket:
    return Ticket(
        ticket_id=row["ticket_id"], player_id=row["player_id"], brand=row["brand"], channel=row["channel"],
        category=row["category"], priority=row["priority"], status=row["status"], subject=row["subject"],
        language=row["language"], created_at=utc(row["created_at"]), updated_at=utc(row["updated_at"]),
        version=row["version"], team=row["team"], assignee=row["assignee"], tags=tuple(row["tags"] or ()),
        first_responded_at=utc(row["first_responded_at"]), solved_at=utc(row["solved_at"]),
        closed_at=utc(row["closed_at"]), sender_email=row["sender_email"],
        messages={k: utc(v) for k, v in (row["messages"] or {}).items()},
    )


def _message(row: dict[str, Any]) -> MessagePublic:
    return MessagePublic(
        message_id=row["message_id"], ticket_id=row["ticket_id"], author_kind=row["author_kind"],
        author_id=row["author_id"], visibility=row["visibility"], body=row["body"],
        attachments=list(row["attachments"] or ()), created_at=utc(row["created_at"]),
    )


class TicketStore:
    """Statements prepared once (the constructor blocks on the prepares: build it off the event loop)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        p = session.prepare
        self._create = p(f"INSERT INTO tickets ({_TICKET_COLUMNS}) VALUES ({', '.join('?' * 20)}) IF NOT EXISTS")
        self._get = p(f"SELECT {_TICKET_COLUMNS} FROM tickets WHERE ticket_id = ?")
        self._status = p("SELECT status FROM tickets WHERE ticket_id = ?")
        mutable = ("status = ?, priority = ?, category = ?, team = ?, assignee = ?, tags = ?, version = ?, "
                   "updated_at = ?, first_responded_at = ?, solved_at = ?, closed_at = ?")
        self._update = p(f"UPDATE tickets SET {mutable} WHERE ticket_id = ? IF version = ?")
        self._update_msg = p(f"UPDATE tickets SET {mutable}, messages[?] = ? WHERE ticket_id = ? IF version = ?")
        self._update_msgs = p(f"UPDATE tickets SET {mutable}, messages = messages + ? WHERE ticket_id = ? "
                              "IF version = ?")
        self._link = p("UPDATE tickets SET player_id = ?, version = ?, updated_at = ? WHERE ticket_id = ? "
                       "IF version = ?")
        self._insert_message = p(
            "INSERT INTO ticket_messages (ticket_id, created_at, message_id, author_kind, author_id, visibility, "
            "body, attachments) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._messages = p(
            "SELECT ticket_id, created_at, message_id, author_kind, author_id, visibility, body, attachments "
            "FROM ticket_messages WHERE ticket_id = ? LIMIT ?"
        )
        self._player_ticket = p(
            "INSERT INTO player_tickets (player_id, created_at, ticket_id, subject, status, priority, channel) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._player_first = p(
            "SELECT created_at, ticket_id, subject, status, priority, channel FROM player_tickets "
            "WHERE player_id = ? LIMIT ?"
        )
        self._player_after = p(
            "SELECT created_at, ticket_id, subject, status, priority, channel FROM player_tickets "
            "WHERE player_id = ? AND (created_at, ticket_id) < (?, ?) LIMIT ?"
        )
        self._queue_put = p(
            "INSERT INTO ticket_queue (brand, status, day, created_at, ticket_id, priority, team, assignee, subject) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
        )
        self._queue_del = p(
            "DELETE FROM ticket_queue WHERE brand = ? AND status = ? AND day = ? AND created_at = ? AND ticket_id = ?"
        )
        self._queue_day = p("INSERT INTO ticket_queue_days (brand, status, day) VALUES (?, ?, ?)")
        self._queue_days = p(
            "SELECT day FROM ticket_queue_days WHERE brand = ? AND status = ? AND day <= ? LIMIT ?"
        )
        self._queue_first = p(
            "SELECT created_at, ticket_id FROM ticket_queue WHERE brand = ? AND status = ? AND day = ? LIMIT ?"
        )
        self._queue_after = p(
            "SELECT created_at, ticket_id FROM ticket_queue WHERE brand = ? AND status = ? AND day = ? "
            "AND (created_at, ticket_id) < (?, ?) LIMIT ?"
        )
        self._timeline_put = p(
            "INSERT INTO player_timeline (player_id, at, item_id, kind, ticket_id, summary, visibility) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"
        )
        self._timeline_first = p(
            "SELECT at, item_id, kind, ticket_id, summary, visibility FROM player_timeline WHERE player_id = ? LIMIT ?"
        )
        self._timeline_after = p(
            "SELECT at, item_id, kind, ticket_id, summary, visibility FROM player_timeline "
            "WHERE player_id = ? AND (at, item_id) < (?, ?) LIMIT ?"
        )
        self._att_meta = p(
            "INSERT INTO ticket_attachments (ticket_id, attachment_id, filename, content_type, size, sha256, chunks, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._att_get = p(
            "SELECT ticket_id, attachment_id, filename, content_type, size, sha256, chunks, created_at "
            "FROM ticket_attachments WHERE ticket_id = ? AND attachment_id = ?"
        )
        self._att_list = p(
            "SELECT ticket_id, attachment_id, filename, content_type, size, sha256, chunks, created_at "
            "FROM ticket_attachments WHERE ticket_id = ?"
        )
        self._chunk_put = p("INSERT INTO ticket_attachment_chunks (attachment_id, chunk, data) VALUES (?, ?, ?)")
        self._chunk_get = p("SELECT chunk, data FROM ticket_attachment_chunks WHERE attachment_id = ? AND chunk = ?")
        self._limit = asyncio.Semaphore(_CONCURRENCY)

    async def _run(self, stmt: Any, params: Sequence[Any], op: str) -> list[dict[str, Any]]:
        return await aexecute(self.session, stmt, params, op=f"tickets_{op}", limit=self._limit)

    # ------------------------------------------------------------------------ tickets

    async def create(self, ticket: Ticket, message: MessagePublic) -> bool:
        """Store a new ticket with its first message. False when the id was taken (a retry): the
        stored ticket is kept and its indexes re-written (repairing a crash after the commit)."""
        created = await self.commit_new(ticket, message)
        if created:
            await self.index_new(ticket, message)
        else:
            await self.index_existing(ticket.ticket_id, message)
        return created

    async def commit_new(self, ticket: Ticket, message: MessagePublic) -> bool:
        """`create`'s commit alone: the first message, then the ticket row if its id is free (True).
        The caller then writes the indexes (`index_new`, or `index_existing` when False)."""
        await self._put_message(message)
        t = ticket
        rows = await self._run(self._create, (
            t.ticket_id, t.player_id, t.brand, t.channel, t.category, t.priority, t.status, t.subject, t.language,
            t.team, t.assignee, list(t.tags), t.version, t.created_at, t.updated_at, t.first_responded_at,
            t.solved_at, t.closed_at, t.sender_email, dict(t.messages),
        ), "create")
        return applied(rows)

    async def index_new(self, stored: Ticket, first: MessagePublic | None) -> None:
        """The queue, player-list and timeline rows of a committed new ticket: upserts keyed by it."""
        writes = self._index_writes(None, stored)
        if stored.player_id is not None:
            writes.append(self._ticket_line(stored))
            if first is not None:
                writes.append(self._message_line(stored, first))
        await self._write(writes, "index")

    async def index_existing(self, ticket_id: UUID, message: MessagePublic) -> Ticket:
        """A create whose id was taken: the stored ticket, its indexes written again."""
        stored = await self.get(ticket_id)
        first = None
        if message.message_id in stored.messages:
            first = message.model_copy(update={"created_at": stored.messages[message.message_id]})
        await self.index_new(stored, first)
        return stored

    async def get(self, ticket_id: UUID) -> Ticket:
        rows = await self._run(self._get, (ticket_id,), "get")
        if not rows:
            raise NotFound(f"no ticket {ticket_id}", field="ticket_id")
        return _ticket(rows[0])

    async def status(self, ticket_id: UUID) -> str:
        """The ticket's status alone: a chat socket checks it every few seconds, and the whole
        ticket (every message) would cost a chat line more to read and parse than the line itself."""
        rows = await self._run(self._status, (ticket_id,), "status")
        if not rows:
            raise NotFound(f"no ticket {ticket_id}", field="ticket_id")
        return str(rows[0]["status"])

    async def public(self, ticket_id: UUID) -> TicketPublic:
        return (await self.get(ticket_id)).public()

    async def update(self, before: Ticket, after: Ticket) -> None:
        """Commit a change decided by `domain.tickets.apply` (Conflict when `before` is stale)."""
        if after.version == before.version:
            return
        await self._commit(self._update, before, after, ())
        await self._write(self._index_writes(before, after), "index")

    async def add_message(self, before: Ticket, after: Ticket, message: MessagePublic) -> None:
        """Commit a message added by `domain.tickets.apply` (Conflict when `before` is stale)."""
        if after.version == before.version:
            return
        await self._put_message(message)
        await self._commit(self._update_msg, before, after, (message.message_id, message.created_at))
        writes = self._index_writes(before, after)
        if after.player_id is not None:
            writes.append(self._message_line(after, message))
        await self._write(writes, "index")

    async def add_messages(self, before: Ticket, after: Ticket, messages: Sequence[MessagePublic]) -> None:
        """Commit several messages added by successive `domain.tickets.apply` calls from `before` to
        `after` in one compare-and-set (a chat transcript's lines): one Paxos round, not one a line."""
        if after.version == before.version or not messages:
            return
        await abatch(self.session, [self._message_row(m) for m in messages], op="tickets_message",
                     limit=self._limit)
        await self._commit(self._update_msgs, before, after, ({m.message_id: m.created_at for m in messages},))
        writes = self._index_writes(before, after)
        if after.player_id is not None:
            writes.extend(self._message_line(after, m) for m in messages)
        await self._write(writes, "index")

    async def link_player(self, before: Ticket, after: Ticket) -> None:
        """Commit a link decided by `domain.player_links.link_player` (Conflict when `before` is stale),
        then write the player's indexes for the ticket (`index_player`)."""
        if after.version != before.version:
            rows = await self._run(self._link, (after.player_id, after.version, after.updated_at, after.ticket_id,
                                                before.version), "link")
            _committed(rows, before)
        await self.index_player(after)

    async def index_player(self, t: Ticket) -> None:
        """The player's ticket list row and timeline rows (the ticket and every message it names), as a
        ticket created for the player would have them. Upserts: repeating it (a retried link) repairs
        a crash after the commit and writes nothing twice."""
        if t.player_id is None:
            return
        messages = await self.messages(t)
        await self._write([self._player_row(t), self._ticket_line(t), *(self._message_line(t, m) for m in messages)],
                          "index")

    async def _commit(self, stmt: Any, before: Ticket, after: Ticket, extra: tuple[Any, ...]) -> None:
        a = after
        rows = await self._run(stmt, (
            a.status, a.priority, a.category, a.team, a.assignee, list(a.tags), a.version, a.updated_at,
            a.first_responded_at, a.solved_at, a.closed_at, *extra, a.ticket_id, before.version,
        ), "update")
        _committed(rows, before)

    async def _put_message(self, m: MessagePublic) -> None:
        await self._run(*self._message_row(m), "message")

    def _message_row(self, m: MessagePublic) -> _Write:
        return self._insert_message, (m.ticket_id, m.created_at, m.message_id, m.author_kind, m.author_id,
                                      m.visibility, m.body, list(m.attachments))

    async def _write(self, writes: Sequence[_Write], op: str) -> None:
        await abatch(self.session, writes, op=f"tickets_{op}", limit=self._limit)

    def _ticket_line(self, t: Ticket) -> _Write:
        return self._timeline_put, (t.player_id, t.created_at, t.ticket_id, "ticket", t.ticket_id,
                                    summarize(t.subject), "public")

    def _message_line(self, t: Ticket, m: MessagePublic) -> _Write:
        who = {"agent": "Agent", "player": "Player", "system": "System"}[m.author_kind]
        note = " (internal note)" if m.visibility == "internal" else ""
        return self._timeline_put, (t.player_id, m.created_at, m.message_id, "message", t.ticket_id,
                                    summarize(f"{who}{note}: {m.body}"), m.visibility)

    def _player_row(self, t: Ticket) -> _Write:
        return self._player_ticket, (t.player_id, t.created_at, t.ticket_id, t.subject, t.status, t.priority,
                                     t.channel)

    def _index_writes(self, before: Ticket | None, t: Ticket) -> list[_Write]:
        """The queue, queue-day and player-list rows of a committed ticket (upserts keyed by it)."""
        day = _day(t.created_at)
        writes: list[_Write] = [
            (self._queue_put, (t.brand, t.status, day, t.created_at, t.ticket_id, t.priority, t.team, t.assignee,
                               summarize(t.subject))),
            (self._queue_day, (t.brand, t.status, day)),
        ]
        if before is not None and before.status != t.status:
            writes.append((self._queue_del, (t.brand, before.status, day, t.created_at, t.ticket_id)))
        if t.player_id is not None:
            writes.append(self._player_row(t))
        return writes

    async def messages(self, ticket: Ticket, limit: int = 5000) -> list[MessagePublic]:
        """The conversation, oldest first: only the messages the ticket names (see the module docstring)."""
        rows = await self._run(self._messages, (ticket.ticket_id, limit), "messages")
        out = [_message(r) for r in rows]
        return [m for m in out if ticket.messages.get(m.message_id) == m.created_at]

    # ------------------------------------------------------------------------ lists

    async def player_tickets(self, player_id: UUID, cursor: str | None = None,
                             limit: int = 50) -> tuple[list[dict[str, Any]], str | None]:
        """A player's tickets, newest first: rows of ticket_id, created_at, subject, status, priority, channel."""
        n, c = _limit(limit), _decode(cursor, ("at", "id"))
        if c is None:
            rows = await self._run(self._player_first, (player_id, n), "player")
        else:
            rows = await self._run(self._player_after, (player_id, _from_ms(c["at"]), UUID(c["id"]), n), "player")
        items = [{**r, "created_at": utc(r["created_at"])} for r in rows]
        if len(rows) < n:
            return items, None
        return items, _encode({"at": _ms(items[-1]["created_at"]), "id": str(items[-1]["ticket_id"])})

    async def timeline(self, player_id: UUID, cursor: str | None = None,
                       limit: int = 50) -> tuple[list[TimelineItem], str | None]:
        """A player's communication history, newest first."""
        n, c = _limit(limit), _decode(cursor, ("at", "id"))
        if c is None:
            rows = await self._run(self._timeline_first, (player_id, n), "timeline")
        else:
            rows = await self._run(self._timeline_after, (player_id, _from_ms(c["at"]), UUID(c["id"]), n), "timeline")
        items = [TimelineItem(item_id=r["item_id"], kind=r["kind"], at=utc(r["at"]), ticket_id=r["ticket_id"],
                              summary=r["summary"], visibility=r["visibility"] or "public") for r in rows]
        nxt = _encode({"at": _ms(items[-1].at), "id": str(items[-1].item_id)}) if len(rows) == n else None
        return items, nxt

    async def queue(self, brand: str, status: str, cursor: str | None = None,
                    limit: int = 50) -> tuple[list[Ticket], str | None]:
        """Tickets of a brand in one status, newest first. The page may be shorter than `limit` with a
        cursor still given (stale index rows dropped, or the day budget spent); None means the end."""
        n, c = _limit(limit), _decode(cursor, ("day", "at", "id"))
        start_day = c["day"] if c else "9999-12-31"
        days = [r["day"] for r in await self._run(self._queue_days, (brand, status, start_day, _DAYS_PER_PAGE + 1),
                                                  "queue")]
        keys: list[tuple[str, datetime, UUID]] = []
        for day in days[:_DAYS_PER_PAGE]:
            want = n - len(keys)
            if c is not None and day == c["day"]:
                rows = await self._run(self._queue_after, (brand, status, day, _from_ms(c["at"]), UUID(c["id"]), want),
                                       "queue")
            else:
                rows = await self._run(self._queue_first, (brand, status, day, want), "queue")
            keys.extend((day, utc(r["created_at"]), r["ticket_id"]) for r in rows)
            if len(keys) >= n:
                last = keys[-1]
                return await self._tickets_in(keys, status), _encode({"day": last[0], "at": _ms(last[1]),
                                                                       "id": str(last[2])})
        if len(days) > _DAYS_PER_PAGE:
            # Day budget spent before the page filled: resume at the top of the next listed day.
            top = _encode({"day": days[_DAYS_PER_PAGE], "at": _END_MS, "id": str(UUID(int=0))})
            return await self._tickets_in(keys, status), top
        return await self._tickets_in(keys, status), None

    async def _tickets_in(self, keys: list[tuple[str, datetime, UUID]], status: str) -> list[Ticket]:
        async def one(tid: UUID) -> Ticket | None:
            try:
                t = await self.get(tid)
            except NotFound:
                return None
            return t if t.status == status else None  # an index row left behind by a move

        found = await asyncio.gather(*(one(k[2]) for k in keys))
        return [t for t in found if t is not None]

    # ------------------------------------------------------------------------ attachments

    async def put_attachment(self, meta: AttachmentMeta, data: bytes) -> bool:
        """Store an upload described by `domain.tickets.attachment_meta`: chunks first, then the
        description (so a listed attachment is whole). False for a retry of the same bytes;
        Conflict (field "attachment_id") when the id already holds other bytes."""
        check_attachment(meta, data)
        chunks = [data[i:i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
        existing = await self._run(self._att_get, (meta.ticket_id, meta.attachment_id), "attachment")
        if existing:
            if existing[0]["sha256"] != meta.sha256:
                raise Conflict(f"attachment {meta.attachment_id} already holds another file", field="attachment_id")
            return False
        await asyncio.gather(*(self._run(self._chunk_put, (meta.attachment_id, i, chunk), "chunk")
                               for i, chunk in enumerate(chunks)))
        rows = await self._run(self._att_meta, (meta.ticket_id, meta.attachment_id, meta.filename, meta.content_type,
                                                meta.size, meta.sha256, len(chunks), meta.created_at), "attachment")
        if not applied(rows):
            if rows and rows[0].get("sha256") != meta.sha256:
                raise Conflict(f"attachment {meta.attachment_id} already holds another file", field="attachment_id")
            return False
        return True

    async def attachments(self, ticket_id: UUID) -> list[AttachmentMeta]:
        return [_meta(r) for r in await self._run(self._att_list, (ticket_id,), "attachment")]

    async def get_attachment(self, ticket_id: UUID, attachment_id: UUID) -> tuple[AttachmentMeta, bytes]:
        rows = await self._run(self._att_get, (ticket_id, attachment_id), "attachment")
        if not rows:
            raise NotFound(f"no attachment {attachment_id} on ticket {ticket_id}", field="attachment_id")
        meta = _meta(rows[0])
        parts = await asyncio.gather(*(self._run(self._chunk_get, (attachment_id, i), "chunk")
                                       for i in range(rows[0]["chunks"])))
        data = b"".join(bytes(p[0]["data"]) for p in parts if p)
        check_attachment(meta, data)
        return meta, data


def _from_ms(value: int) -> datetime:
    return datetime.fromtimestamp(int(value) / 1000, UTC)


def _meta(row: dict[str, Any]) -> AttachmentMeta:
    return AttachmentMeta(attachment_id=row["attachment_id"], ticket_id=row["ticket_id"], filename=row["filename"],
                          content_type=row["content_type"], size=row["size"], sha256=row["sha256"],
                          created_at=utc(row["created_at"]))

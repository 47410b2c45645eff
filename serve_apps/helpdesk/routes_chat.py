"""Help desk: live chat between players and agents over WebSocket (`/helpdesk/v1/chat/...`).

- `POST /chat/sessions` (the platform, brand API key): opens or re-opens a player's chat. A chat
  is a ticket (channel "chat") created through the help desk, so it is routed to a team and
  assigned like any ticket; the answer carries a short-lived token for the player's browser.
- `WS /chat/player?token=...[&after=<seq>]`: the player's socket, bound to the token's one chat.
- `WS /chat/agent`: an agent's socket (session cookie, `ticket.write`, Origin must be
  `public_base_url`): the chats assigned to the agent, plus any they `join`.

The frame protocol is in `schemas/chat.py`. Storage decision (see schemas/cql/010_helpdesk_chat.cql):
a line is stored in `chat_lines` (plain write, seq from Redis) before it is acknowledged or
delivered, then copied into the ticket's messages in the background, in seq order, by the help-desk
worker's `TranscriptCopier` (transcripts.py; idempotent: the message id is derived from the line's
client id), so the ticket's LWT is off the delivery path and out of this process, and the ticket
stays the one place to read the conversation.
Nothing lives only in a replica: a socket reconnected to another replica replays from Cassandra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4, uuid5

from fastapi import APIRouter, Depends, Query, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketState

from adapters.cassandra.chat import ChatStore
from adapters.redis_chat import GAP, ChatHub, agent_channel, ticket_channel
from domain import chat as rules
from domain.errors import Conflict, Forbidden, InvalidInput, NotFound, PitbossError, Unauthorized, Unavailable
from domain.identity import client_address
from domain.policy import Resource
from domain.tickets import ACTIVE, Ticket, first_message_id
from schemas.chat import (
    ChatAuthor,
    ChatLine,
    ChatSessionCreate,
    ChatSessionPublic,
    ChatSummary,
    JoinFrame,
    LeaveFrame,
    MessageFrame,
)
from schemas.tickets import TicketCreate
from serve_apps.access import mark_permission, mark_service
from serve_apps.backoffice.deps import BrandKey, Operator, authorize, backoffice, cookie_name, subject_of
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk.service import Actor, HelpDesk, helpdesk
from serve_apps.helpdesk.transcripts import agent_context

log = logging.getLogger("pitboss.chat")
router = APIRouter(tags=["chat"])

PERMISSION = "ticket.write"
_FIRST = UUID("5d0f3a71-8c2b-4e19-b6a4-7e2c9d1f0b33")  # namespace of the client id of a session's first line
_SESSION_RECHECK = 30.0  # seconds between checks that an agent's session is still valid
_TICKET_RECHECK = 5.0  # seconds a socket trusts the ticket status it read
_TICKET_REFRESH = 2.5  # from this age the status is read again beside the line, off its path
_QUEUE = 1000
CLOSE_UNAUTHORIZED, CLOSE_FORBIDDEN = 4401, 4403


def _now() -> datetime:
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def _error(exc: PitbossError, client_id: UUID | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "status": exc.status, "field": exc.field, "detail": exc.detail}
    if client_id is not None:
        frame["client_id"] = str(client_id)
    if "retry_after" in exc.extra:
        frame["retry_after"] = exc.extra["retry_after"]
    return frame


def _without_origin(frame: dict[str, Any]) -> dict[str, Any]:
    # A copy: the hub hands one decoded frame to every socket of the chat on this replica, and the
    # sender's own socket must still see its origin to skip it.
    return {k: v for k, v in frame.items() if k != "origin"}


def _line_frame(line: ChatLine) -> dict[str, Any]:
    return {"type": "message", **line.model_dump(mode="json")}


# ---------------------------------------------------------------------------- the replica's chat runtime


class ChatRuntime:
    """What a replica holds for chat: the line store, the Redis hub, the token key."""

    def __init__(self, bo: BackOffice, hd: HelpDesk) -> None:
        self.bo, self.hd, self.settings = bo, hd, bo.settings
        self.store = ChatStore(bo.session)  # prepares: built in a thread
        self.hub = ChatHub(bo.settings)
        self.key = rules.token_key(bo.settings.secret_key)

    async def post(self, ticket_id: UUID, client_id: UUID, body: str, author_kind: ChatAuthor, author_id: str,
                   origin: str, message_id: UUID | None = None, agent: Operator | None = None) -> dict[str, Any]:
        """Store one line (before anything is acknowledged or delivered), publish it, queue its
        copy into the ticket (with `agent`'s context for an agent's line); the ack. A resend of
        `client_id` gets the first ack."""
        mid = message_id or rules.line_message_id(ticket_id, client_id)
        claim = await self.hub.claim(ticket_id, client_id, lambda: self.store.last_seq(ticket_id))
        if not claim.new:
            for _ in range(30):
                if not claim.pending:
                    return {"type": "ack", "ticket_id": str(ticket_id), "client_id": str(client_id),
                            "message_id": str(mid), "seq": claim.seq}
                await asyncio.sleep(0.1)
                again = await self.hub.prior(ticket_id, client_id)
                if again is None:
                    break
                claim = again
            raise Unavailable("this message's first send is still being stored: resend it in a few seconds",
                              field="client_id")
        line = ChatLine(ticket_id=ticket_id, seq=claim.seq, message_id=mid, client_id=client_id,
                        author_kind=author_kind, author_id=author_id, body=body, created_at=_now())
        try:
            await self.store.put(line)
        except Exception as exc:
            await self.hub.release(ticket_id, client_id)
            raise Unavailable("the message could not be stored: resend it") from exc
        await self.hub.settle_and_publish(ticket_id, client_id, line.seq, {**_line_frame(line), "origin": origin},
                                          (agent.id, agent_context(agent)) if agent is not None else None)
        return {"type": "ack", "ticket_id": str(ticket_id), "client_id": str(client_id), "message_id": str(mid),
                "seq": line.seq}

    async def summary(self, t: Ticket) -> ChatSummary:
        return ChatSummary(ticket_id=t.ticket_id, brand=t.brand, player_id=t.player_id, subject=t.subject,
                           status=t.status, assignee=t.assignee, last_seq=await self.store.last_seq(t.ticket_id))


_runtime: list[ChatRuntime] = []
_lock = asyncio.Lock()


async def chat_runtime() -> ChatRuntime:
    bo = await backoffice()
    if _runtime and _runtime[0].bo is bo:
        return _runtime[0]
    hd = await helpdesk()
    async with _lock:
        if not (_runtime and _runtime[0].bo is bo):
            _runtime[:] = [await asyncio.to_thread(ChatRuntime, bo, hd)]
    return _runtime[0]


RT = Annotated[ChatRuntime, Depends(chat_runtime)]


# ---------------------------------------------------------------------------- who connects




async def player_socket_grant(websocket: WebSocket, token: Annotated[str | None, Query()] = None
                              ) -> rules.ChatGrant | PitbossError:
    """The token's grant, or why it is refused (the socket reports it after the handshake)."""
    try:
        rt = await chat_runtime()
        return rules.read_token(rt.key, token, datetime.now(UTC))
    except PitbossError as exc:
        return exc


# The player's credential is the token the platform obtained with its brand key.
mark_service(player_socket_grant)


def _origin_ok(websocket: WebSocket, bo: BackOffice) -> bool:
    origin = websocket.headers.get("origin")
    allowed = urlsplit(bo.settings.public_base_url)
    return bool(origin) and urlsplit(origin).netloc == allowed.netloc and urlsplit(origin).scheme == allowed.scheme


async def agent_socket_operator(websocket: WebSocket) -> Operator | PitbossError:
    """The agent behind the session cookie, checked as `Require("ticket.write")` checks a request,
    plus the Origin (a WebSocket carries no CSRF header: a page of another site must not open one
    with the agent's cookie)."""
    try:
        bo = await backoffice()
        if not _origin_ok(websocket, bo):
            return Forbidden("the chat socket opens only from the dashboard's origin", field="Origin")
        sid = websocket.cookies.get(cookie_name(bo.settings.cookie_secure))
        info = await bo.identity.session(sid) if sid and len(sid) <= 128 else None
        if info is None or info.stage != "full":
            return Unauthorized("log in first (no session, or it expired or was revoked)", field="session")
        if info.operator.must_change_password:
            return Forbidden("change your temporary password first", field="password")
        peer = websocket.client.host if websocket.client else None
        op = Operator(session=info, subject=subject_of(info),
                      ip=client_address(peer, websocket.headers.get("x-forwarded-for"), bo.identity.proxies),
                      user_agent=(websocket.headers.get("user-agent") or "")[:300] or None, request_id=None)
        decision = bo.policy.decide_role(op.subject, PERMISSION)
        if not decision.allowed:
            return Forbidden(decision.reason, extra={"permission": PERMISSION})
        return op
    except PitbossError as exc:
        return exc


mark_permission(agent_socket_operator, PERMISSION)


# ---------------------------------------------------------------------------- one socket


class Conn:
    """One socket: frames out under one lock, the Redis queue pumped into it, lines de-duplicated by seq."""

    def __init__(self, ws: WebSocket, rt: ChatRuntime, role: ChatAuthor) -> None:
        self.ws, self.rt, self.role = ws, rt, role
        self.id = uuid4().hex
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=_QUEUE)
        self.seen: dict[UUID, set[int]] = {}
        self.channels: set[str] = set()
        self.status: dict[UUID, tuple[str, float]] = {}
        self.bucket = rules.TokenBucket(rt.settings.chat_rate_per_second, rt.settings.chat_rate_burst)
        self._send = asyncio.Lock()
        self._typing: dict[UUID, float] = {}
        self._refreshing: dict[UUID, asyncio.Task[None]] = {}

    async def send(self, frame: dict[str, Any]) -> None:
        async with self._send:
            await self.ws.send_json(frame)

    async def listen(self, channel: str) -> None:
        if channel not in self.channels:
            self.channels.add(channel)
            await self.rt.hub.subscribe(channel, self.queue)

    async def follow(self, ticket_id: UUID, after: int | None) -> None:
        """Deliver the chat live from now on; replay lines after `after` (None: none)."""
        self.seen.setdefault(ticket_id, set())
        await self.listen(ticket_channel(ticket_id))  # subscribe first: nothing falls between replay and live
        if after is not None:
            await self.replay(ticket_id, after)

    async def unfollow(self, ticket_id: UUID) -> None:
        channel = ticket_channel(ticket_id)
        self.seen.pop(ticket_id, None)
        if channel in self.channels:
            self.channels.discard(channel)
            await self.rt.hub.unsubscribe(channel, self.queue)

    async def replay(self, ticket_id: UUID, after: int) -> None:
        for line in await self.rt.store.all_after(ticket_id, after):
            await self.deliver(_line_frame(line))

    async def deliver(self, frame: dict[str, Any]) -> None:
        tid, seq = UUID(frame["ticket_id"]), int(frame["seq"])
        seen = self.seen.get(tid)
        if seen is None or seq in seen:
            return
        seen.add(seq)
        if len(seen) > 4000:
            floor = max(seen) - 2000
            self.seen[tid] = {s for s in seen if s > floor}
        await self.send(_without_origin(frame))

    async def pump(self) -> None:
        while True:
            frame = await self.queue.get()
            kind = frame.get("type")
            if kind == GAP["type"]:
                for tid, seen in list(self.seen.items()):
                    await self.replay(tid, max(seen, default=0))
            elif kind == "message":
                if frame.get("origin") == self.id:
                    continue  # the sender got its ack
                await self.deliver(frame)
            elif kind == "typing":
                if frame.get("origin") != self.id and frame.get("author_kind") != self.role:
                    await self.send(_without_origin(frame))
            elif kind == "chat":
                await self.on_chat(frame)
            elif kind == "moved" and self.role == "agent":
                await self.send(frame)  # reassigned (serve_apps/helpdesk/chat_moves.py); players never see it

    async def on_chat(self, frame: dict[str, Any]) -> None:
        """A chat newly assigned to this agent (agent sockets only)."""
        tid = UUID(frame["ticket_id"])
        await self.follow(tid, None)
        await self.send(frame)

    async def open_ticket(self, ticket_id: UUID) -> None:
        """Refuse a line to a chat that is closed, by a status read at most `_TICKET_RECHECK` old.
        A chat that keeps talking has it read again ahead of time, beside its lines: a read in the
        path of every few lines put a Cassandra round trip into the delivery tail."""
        now = time.monotonic()
        cached = self.status.get(ticket_id)
        if cached is None or now - cached[1] > _TICKET_RECHECK:
            cached = await self._read_status(ticket_id)
        elif now - cached[1] > _TICKET_REFRESH and ticket_id not in self._refreshing:
            self._refreshing[ticket_id] = asyncio.create_task(self._refresh_status(ticket_id))
        if cached[0] == "closed":
            raise Conflict(f"chat {ticket_id} is closed: ask for a new chat", field="ticket_id")

    async def _read_status(self, ticket_id: UUID) -> tuple[str, float]:
        started = time.monotonic()  # the read's age counts from before it was asked
        cached = (await self.rt.hd.tickets.status(ticket_id), started)
        self.status[ticket_id] = cached
        return cached

    async def _refresh_status(self, ticket_id: UUID) -> None:
        try:
            await self._read_status(ticket_id)
        except Exception as exc:  # the next line past `_TICKET_RECHECK` reads it in its path
            log.info("chat %s: reading the ticket status ahead failed: %s", ticket_id, exc)
        finally:
            self._refreshing.pop(ticket_id, None)

    async def message(self, ticket_id: UUID, frame: MessageFrame, author_id: str, agent: Operator | None = None
                      ) -> None:
        try:
            self.bucket.take(time.monotonic())
            body = rules.check_body(frame.body, self.rt.settings.chat_max_message_chars)
            await self.open_ticket(ticket_id)
            ack = await self.rt.post(ticket_id, frame.client_id, body, self.role, author_id, self.id, agent=agent)
        except PitbossError as exc:
            await self.send(_error(exc, frame.client_id))
            return
        self.seen.setdefault(ticket_id, set()).add(int(ack["seq"]))
        await self.send(ack)

    async def typing(self, ticket_id: UUID) -> None:
        # At most two typing frames a second per chat reach Redis, whatever the client sends.
        now = time.monotonic()
        if now - self._typing.get(ticket_id, 0.0) < 0.5:
            return
        self._typing[ticket_id] = now
        await self.rt.hub.publish(ticket_channel(ticket_id), {"type": "typing", "ticket_id": str(ticket_id),
                                                              "author_kind": self.role, "origin": self.id})

    async def close(self) -> None:
        for task in list(self._refreshing.values()):
            task.cancel()
        for channel in list(self.channels):
            await self.rt.hub.unsubscribe(channel, self.queue)
        self.channels.clear()


async def _refuse(ws: WebSocket, exc: PitbossError) -> None:
    await ws.accept()
    await ws.send_json(_error(exc))
    await ws.close(code=CLOSE_UNAUTHORIZED if isinstance(exc, Unauthorized) else CLOSE_FORBIDDEN,
                   reason=exc.detail[:120])


async def _serve(conn: Conn, handle: Any, watch: Any = None) -> None:
    """Pump Redis frames out while reading the client's frames, until either side ends (or `watch`,
    a coroutine run alongside, closes the socket)."""
    pump = asyncio.create_task(conn.pump())
    watcher = asyncio.create_task(watch) if watch is not None else None
    try:
        while not pump.done():
            message = await conn.ws.receive()
            if message["type"] == "websocket.disconnect":
                break
            try:
                frame = rules.parse_frame(message["text"] if message.get("text") is not None
                                         else message.get("bytes") or b"")
            except InvalidInput as exc:
                await conn.send(_error(exc))
                continue
            if await handle(frame) is False:
                break
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        for task in (pump, watcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await conn.close()
        if conn.ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await conn.ws.close()


# ---------------------------------------------------------------------------- routes


@router.post("/chat/sessions", status_code=201, response_model=ChatSessionPublic,
             summary="Open (or re-open, same chat_id) a player's live chat; answers the player's socket token",
             responses={200: {"description": "a retry: the same chat, a fresh token"}})
async def open_chat(body: ChatSessionCreate, brand: BrandKey, rt: RT
                    ) -> JSONResponse:
    ticket_id = rules.ticket_id_for(brand, body.chat_id)
    first: str | None = None
    if body.message is not None:
        try:
            first = rules.check_body(body.message, rt.settings.chat_max_message_chars)
        except InvalidInput as exc:
            raise InvalidInput(exc.detail, field="message") from exc
    create = TicketCreate(ticket_id=ticket_id, player_id=body.player_id, brand=brand, channel="chat",
                          category=body.category, subject=body.subject or "Live chat",
                          body=first or "(the player opened a live chat)", language=body.language)
    actor = Actor("player", str(body.player_id), None, brand=brand)
    try:
        ticket, created = await rt.hd.create_ticket(create, actor)
    except Conflict as exc:
        raise Conflict(f"chat {body.chat_id} is another player's chat or has other details",
                       field="chat_id") from exc
    if ticket.player_id != body.player_id:
        raise Conflict(f"chat {body.chat_id} is another player's chat", field="chat_id")
    if ticket.status == "closed":
        raise Conflict(f"chat {body.chat_id} is closed: open a new chat with a new chat_id", field="chat_id")
    if first is not None:
        # The first line is also the ticket's first message (same id): the copy skips it.
        await rt.post(ticket_id, uuid5(_FIRST, str(ticket_id)), first, "player", str(body.player_id), "platform",
                      message_id=first_message_id(ticket_id))
    if created and ticket.assignee:
        await rt.store.open_for(ticket.assignee, ticket_id, _now())
        t = await rt.hd.tickets.get(ticket_id)
        await rt.hub.publish(agent_channel(ticket.assignee), {"type": "chat", **(await rt.summary(t)).model_dump(
            mode="json")})
    now = datetime.now(UTC)
    grant = rules.grant_for(body.player_id, brand, ticket_id, body.chat_id, now, rt.settings.chat_token_seconds)
    answer = ChatSessionPublic(chat_id=body.chat_id, ticket_id=ticket_id, token=rules.issue_token(rt.key, grant, now),
                               expires_at=grant.expires_at)
    return JSONResponse(answer.model_dump(mode="json"), status_code=201 if created else 200,
                        headers={"Cache-Control": "no-store"})


@router.websocket("/chat/player")
async def player_socket(
    websocket: WebSocket,
    grant: Annotated[rules.ChatGrant | PitbossError, Depends(player_socket_grant)],
    after: Annotated[int | None, Query(ge=0, description="replay lines with seq above this")] = None,
) -> None:
    if isinstance(grant, PitbossError):
        await _refuse(websocket, grant)
        return
    rt = await chat_runtime()
    try:
        t = await rt.hd.tickets.get(grant.ticket_id)
    except NotFound:
        await _refuse(websocket, Unauthorized("the chat token names no chat", field="token"))
        return
    if t.player_id != grant.player_id or t.brand != grant.brand:
        await _refuse(websocket, Unauthorized("the chat token does not match its chat", field="token"))
        return
    await websocket.accept()
    conn = Conn(websocket, rt, "player")
    player = str(grant.player_id)

    async def handle(frame: Any) -> bool:
        try:
            if isinstance(frame, JoinFrame | LeaveFrame):
                raise Forbidden("a player's socket is bound to its one chat", field="type")
            target = rules.player_target(grant, frame.ticket_id)
        except PitbossError as exc:
            await conn.send(_error(exc, getattr(frame, "client_id", None)))
            return True
        if isinstance(frame, MessageFrame):
            await conn.message(target, frame, player)
        else:
            await conn.typing(target)
        return True

    await conn.send({"type": "ready", "ticket_id": str(t.ticket_id), "chat_id": str(grant.chat_id),
                     "status": t.status, "last_seq": await rt.store.last_seq(t.ticket_id)})
    await conn.follow(t.ticket_id, after if after is not None else 0)
    await rt.hub.queue_copy(t.ticket_id)
    await _serve(conn, handle)


@router.websocket("/chat/agent")
async def agent_socket(
    websocket: WebSocket, op: Annotated[Operator | PitbossError, Depends(agent_socket_operator)]
) -> None:
    if isinstance(op, PitbossError):
        await _refuse(websocket, op)
        return
    rt = await chat_runtime()
    bo = rt.bo
    await websocket.accept()
    conn = Conn(websocket, rt, "agent")

    async def watch() -> None:
        # A revoked or expired session (or a disabled operator) stops a socket already open, even a
        # silent one that only receives; the check also counts as activity for the idle timeout.
        while True:
            await asyncio.sleep(_SESSION_RECHECK)
            if await bo.identity.session(op.session.sid) is None:
                await _refuse_open(conn, Unauthorized("the session ended: log in again", field="session"))
                return

    async def chat_of(ticket_id: UUID) -> Ticket:
        t = await rt.hd.tickets.get(ticket_id)
        await authorize(bo, op, PERMISSION, Resource(kind="ticket", id=str(ticket_id), brand=t.brand))
        if t.channel != "chat":
            raise InvalidInput(f"ticket {ticket_id} is not a chat", field="ticket_id")
        return t

    async def handle(frame: Any) -> bool:
        try:
            if isinstance(frame, JoinFrame):
                t = await chat_of(frame.ticket_id)
                await rt.store.open_for(op.id, t.ticket_id, _now())
                await conn.send({"type": "chat", **(await rt.summary(t)).model_dump(mode="json")})
                await conn.follow(t.ticket_id, frame.after)
                await rt.hub.queue_copy(t.ticket_id)
                return True
            if isinstance(frame, LeaveFrame):
                await conn.unfollow(frame.ticket_id)
                await rt.store.close_for(op.id, frame.ticket_id)
                return True
            if frame.ticket_id is None:
                raise InvalidInput("an agent names the chat (ticket_id)", field="ticket_id")
            if frame.ticket_id not in conn.seen:
                raise Forbidden("join the chat first (a join frame)", field="ticket_id")
        except PitbossError as exc:
            await conn.send(_error(exc, getattr(frame, "client_id", None)))
            return True
        if isinstance(frame, MessageFrame):
            await conn.message(frame.ticket_id, frame, op.id, agent=op)
        else:
            await conn.typing(frame.ticket_id)
        return True

    chats: list[ChatSummary] = []
    for tid in await rt.store.chats_of(op.id):
        try:
            t = await rt.hd.tickets.get(tid)
        except NotFound:
            continue
        if t.status in ACTIVE and bo.policy.decide(op.subject, PERMISSION, Resource(kind="ticket", id=str(tid),
                                                                                     brand=t.brand)).allowed:
            chats.append(await rt.summary(t))
    await conn.listen(agent_channel(op.id))
    for c in chats:
        await conn.follow(c.ticket_id, None)
        await rt.hub.queue_copy(c.ticket_id)
    await conn.send({"type": "ready", "operator_id": op.id, "chats": [c.model_dump(mode="json") for c in chats]})
    await _serve(conn, handle, watch())


async def _refuse_open(conn: Conn, exc: PitbossError) -> None:
    with contextlib.suppress(Exception):
        await conn.send(_error(exc))
        await conn.ws.close(code=CLOSE_UNAUTHORIZED, reason=exc.detail[:120])


__all__ = ["ChatRuntime", "chat_runtime", "router"]

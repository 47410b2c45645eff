"""Live chat over Redis: the per-chat line sequence, client-id idempotency claims, and the pub/sub
hub that carries frames between the replicas holding a chat's sockets.

- Sequence: `INCR pitboss:chat:seq:<ticket>` inside a script that also claims the sender's
  `client_id`, so a line costs one round trip. A counter Redis lost (restart, eviction, 7 days
  idle) is seeded again from the last stored line (`SET NX`), so numbers never repeat.
- Claims: `pitboss:chat:cid:<ticket>:<client_id>` holds `p:<seq>` while the line is being stored
  (expires after `PENDING_MS`, so a writer that died does not block the resend for long), then
  `<seq>` for a day: a resend within the day is answered with the first ack.
- Hub: one subscriber connection per replica; sockets register an `asyncio.Queue` per channel.
  Channels: `pitboss:chat:t:<ticket>` (lines and typing of a chat), `pitboss:chat:a:<operator>`
  (chats newly assigned to an agent). When the subscriber connection drops, every queue gets a
  `{"type": "_gap"}` item after it is back, and the socket replays what it missed from Cassandra.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from redis.exceptions import RedisError

from adapters.redis_pool import redis_client
from adapters.settings import Settings
from domain.errors import Unavailable

log = logging.getLogger("pitboss.chat")
PENDING_MS = 10_000
CLAIM_SECONDS = 24 * 3600
SEQ_IDLE_SECONDS = 7 * 24 * 3600
_HUB = "pitboss:chat:hub"
GAP: dict[str, Any] = {"type": "_gap"}

# KEYS: seq counter, client claim. ARGV: pending ms, counter idle seconds.
# -> {0, prior claim} a resend | {1, seq} a new line | {2, ""} the counter must be seeded first
_NEXT = """
local prior = redis.call('GET', KEYS[2])
if prior then return {0, prior} end
if redis.call('EXISTS', KEYS[1]) == 0 then return {2, ''} end
local seq = redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], 'p:' .. seq, 'PX', ARGV[1])
return {1, tostring(seq)}
"""


def ticket_channel(ticket_id: UUID) -> str:
    return f"pitboss:chat:t:{ticket_id}"


def agent_channel(operator_id: str) -> str:
    return f"pitboss:chat:a:{operator_id}"


def _seq_key(ticket_id: UUID) -> str:
    return f"pitboss:chat:seq:{ticket_id}"


def _claim_key(ticket_id: UUID, client_id: UUID) -> str:
    return f"pitboss:chat:cid:{ticket_id}:{client_id}"


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of `ChatHub.claim`: a new line's seq, or the seq of an earlier send of the same
    client id (`pending` while that send is still being stored)."""

    seq: int
    new: bool
    pending: bool


def _encode(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), default=str)


def _offer(queue: asyncio.Queue[dict[str, Any]], frame: dict[str, Any]) -> None:
    """Queue a frame; a socket too slow to keep up loses its queue and replays from Cassandra instead."""
    try:
        queue.put_nowait(frame)
    except asyncio.QueueFull:
        while not queue.empty():
            queue.get_nowait()
        queue.put_nowait(GAP)


class ChatHub:
    def __init__(self, settings: Settings) -> None:
        self.commands = redis_client(settings)
        # The subscriber blocks on reads by design: no socket timeout, a health check instead.
        self._listener = redis_client(settings, socket_timeout=None, health_check_interval=30)
        self._next = self.commands.register_script(_NEXT)
        self._subs: dict[str, set[asyncio.Queue[dict[str, Any]]]] = {}
        self._pubsub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------------ sequence and claims

    async def claim(self, ticket_id: UUID, client_id: UUID, seed: Callable[[], Awaitable[int]]) -> Claim:
        keys = [_seq_key(ticket_id), _claim_key(ticket_id, client_id)]
        try:
            for _ in range(3):
                kind, value = await self._next(keys=keys, args=[PENDING_MS, SEQ_IDLE_SECONDS])
                text = value.decode() if isinstance(value, bytes) else str(value)
                if int(kind) == 1:
                    return Claim(int(text), True, False)
                if int(kind) == 0:
                    return Claim(int(text.removeprefix("p:")), False, text.startswith("p:"))
                await self.commands.set(keys[0], await seed(), nx=True, ex=SEQ_IDLE_SECONDS)
        except RedisError as exc:
            raise Unavailable("chat is unavailable (Redis): resend the message") from exc
        raise Unavailable("chat sequence could not be seeded: resend the message")

    async def settle_and_publish(self, ticket_id: UUID, client_id: UUID, seq: int, frame: dict[str, Any]) -> None:
        """`settle` and `publish` of a stored line in one round trip. On a Redis failure the line is
        still stored, and sockets get it by replay; the pending claim expires, and a resend after that
        stores the line again under a new seq (same message id: the ticket keeps one copy)."""
        pipe = self.commands.pipeline(transaction=False)
        pipe.set(_claim_key(ticket_id, client_id), str(seq), ex=CLAIM_SECONDS)
        pipe.publish(ticket_channel(ticket_id), _encode(frame))
        try:
            await pipe.execute()
        except RedisError as exc:
            log.warning("chat %s: settling and publishing line %d failed: %s", ticket_id, seq, exc)

    async def release(self, ticket_id: UUID, client_id: UUID) -> None:
        """Storing failed: a resend may try again at once (the seq stays unused)."""
        with contextlib.suppress(RedisError):
            await self.commands.delete(_claim_key(ticket_id, client_id))

    async def prior(self, ticket_id: UUID, client_id: UUID) -> Claim | None:
        value = await self.commands.get(_claim_key(ticket_id, client_id))
        if value is None:
            return None
        text = value.decode() if isinstance(value, bytes) else str(value)
        return Claim(int(text.removeprefix("p:")), False, text.startswith("p:"))

    async def get_json(self, key: str) -> Any:
        value = await self.commands.get(key)
        return json.loads(value) if value else None

    async def set_json(self, key: str, value: Any, seconds: int) -> None:
        await self.commands.set(key, json.dumps(value), ex=seconds)

    async def lock(self, key: str, ms: int) -> bool:
        return bool(await self.commands.set(key, "1", nx=True, px=ms))

    async def unlock(self, key: str) -> None:
        with contextlib.suppress(RedisError):
            await self.commands.delete(key)

    # ------------------------------------------------------------------------ pub/sub

    async def publish(self, channel: str, frame: dict[str, Any]) -> None:
        try:
            await self.commands.publish(channel, _encode(frame))
        except RedisError as exc:
            # The line is stored: a reconnecting socket gets it by replay.
            log.warning("chat publish failed on %s: %s", channel, exc)

    async def start(self) -> None:
        async with self._lock:
            if self._task is None or self._task.done():
                self._pubsub = self._listener.pubsub()
                await self._pubsub.subscribe(_HUB)
                self._task = asyncio.create_task(self._read(), name="chat-hub")

    async def subscribe(self, channel: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        await self.start()
        async with self._lock:
            subs = self._subs.setdefault(channel, set())
            first = not subs
            subs.add(queue)
            if first:
                await self._pubsub.subscribe(channel)

    async def unsubscribe(self, channel: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        async with self._lock:
            subs = self._subs.get(channel)
            if subs is None:
                return
            subs.discard(queue)
            if not subs:
                del self._subs[channel]
                with contextlib.suppress(RedisError):
                    await self._pubsub.unsubscribe(channel)

    def channels(self) -> int:
        return len(self._subs)

    async def _read(self) -> None:
        while True:
            try:
                msg = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                log.warning("chat hub lost Redis, reconnecting: %s", exc)
                await self._reconnect()
                continue
            if msg is None or msg.get("type") != "message":
                continue
            channel = msg["channel"].decode() if isinstance(msg["channel"], bytes) else str(msg["channel"])
            try:
                frame = json.loads(msg["data"])
            except ValueError:
                continue
            for queue in list(self._subs.get(channel, ())):
                _offer(queue, frame)

    async def _reconnect(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            try:
                async with self._lock:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()
                    self._pubsub = self._listener.pubsub()
                    await self._pubsub.subscribe(_HUB, *self._subs)
                    queues = [q for subs in self._subs.values() for q in subs]
            except (RedisError, OSError) as exc:
                log.warning("chat hub still without Redis: %s", exc)
                continue
            for queue in queues:
                _offer(queue, GAP)
            return

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self._listener.aclose()
        await self.commands.aclose()

"""Live chat over Redis: the per-chat line sequence, client-id idempotency claims, and the pub/sub
hub that carries frames between the replicas holding a chat's sockets.

- Sequence: `INCR pitboss:chat:seq:<ticket>` inside a script that also claims the sender's
  `client_id`, so a line costs one round trip. A counter Redis lost (restart, eviction, 7 days
  idle) is seeded again from the last stored line (`SET NX`), so numbers never repeat.
- Claims: `pitboss:chat:cid:<ticket>:<client_id>` holds `p:<seq>` while the line is being stored
  (expires after `PENDING_MS`, so a writer that died does not block the resend for long), then
  `<seq>` for a day: a resend within the day is answered with the first ack.
- Copy queue: `pitboss:chat:pending`, a sorted set of the chats with lines not yet copied into
  their tickets (score: when the oldest of them was stored, ms; ZADD LT), added to in the same round
  trip that publishes a line; `pitboss:chat:agent:<operator>` holds the context an agent's lines are
  copied (authorized and audited) with, written with each of their lines. `CopyQueue` is the side
  the help-desk worker reads (serve_apps/helpdesk/transcripts.py).
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
import time
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
COPY_QUEUE = "pitboss:chat:pending"
AGENT_SECONDS = 7 * 24 * 3600
COPIED_SECONDS = 7 * 24 * 3600
GAP: dict[str, Any] = {"type": "_gap"}

# KEYS: copy queue. ARGV: ticket, due before (ms), lease until (ms). -> 1 leased | 0 not due
_LEASE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) > tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""
# KEYS: copy queue. ARGV: ticket, lease (ms), due again at (ms, 0: done). A score that is not the
# lease is a line stored since: it stays.
_SETTLE = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not s or tonumber(s) ~= tonumber(ARGV[2]) then return 0 end
if tonumber(ARGV[3]) > 0 then redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
else redis.call('ZREM', KEYS[1], ARGV[1]) end
return 1
"""
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


def _agent_key(operator_id: str) -> str:
    return f"pitboss:chat:agent:{operator_id}"


def _copied_key(ticket_id: UUID) -> str:
    return f"pitboss:chat:copied:{ticket_id}"


def epoch_ms() -> int:
    """Now in the copy queue's unit (milliseconds since the epoch)."""
    return int(time.time() * 1000)


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
    def __init__(self, settings: Settings, copy_queue: str = COPY_QUEUE) -> None:
        self.commands = redis_client(settings)
        self.copy_queue = copy_queue
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

    async def settle_and_publish(self, ticket_id: UUID, client_id: UUID, seq: int, frame: dict[str, Any],
                                 agent: tuple[str, str] | None = None) -> None:
        """`settle` and `publish` of a stored line, its chat queued for copying and (an agent's line)
        `agent` = (operator id, context) kept for the copy, in one round trip. On a Redis failure
        the line is still stored, and sockets get it by replay; the pending claim expires, and a
        resend after that stores the line again under a new seq (same message id: the ticket keeps
        one copy); the chat is queued again when a socket opens on it."""
        pipe = self.commands.pipeline(transaction=False)
        pipe.set(_claim_key(ticket_id, client_id), str(seq), ex=CLAIM_SECONDS)
        pipe.publish(ticket_channel(ticket_id), _encode(frame))
        pipe.zadd(self.copy_queue, {str(ticket_id): epoch_ms()}, lt=True)
        if agent is not None:
            pipe.set(_agent_key(agent[0]), agent[1], ex=AGENT_SECONDS)
        try:
            await pipe.execute()
        except RedisError as exc:
            log.warning("chat %s: settling and publishing line %d failed: %s", ticket_id, seq, exc)

    async def queue_copy(self, ticket_id: UUID) -> None:
        """Queue a chat for copying (a socket opened on it: lines a writer stored but could not queue
        are caught up). Best effort: the next line queues it too."""
        try:
            await self.commands.zadd(self.copy_queue, {str(ticket_id): epoch_ms()}, lt=True)
        except RedisError as exc:
            log.warning("chat %s: queueing the transcript copy failed: %s", ticket_id, exc)

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


class CopyQueue:
    """The transcript copier's side of the copy queue (see the module docstring). A copier leases a
    due chat (its score moves past the lease's end, so no other copier takes it), and settles the
    lease when done: off the queue, or due again later. A line stored meanwhile lowers the score to
    its own time (ZADD LT), so the lease no longer matches and the chat stays queued; a copier that
    died leaves a lease that simply falls due again."""

    def __init__(self, settings: Settings, key: str = COPY_QUEUE) -> None:
        self.commands = redis_client(settings)
        self.key = key
        self._lease = self.commands.register_script(_LEASE)
        self._settle = self.commands.register_script(_SETTLE)

    async def due(self, stored_before_ms: int, limit: int) -> list[UUID]:
        """Queued chats whose first uncopied line was stored before the instant, oldest first."""
        raw = await self.commands.zrangebyscore(self.key, "-inf", stored_before_ms, start=0, num=limit)
        return [UUID(v.decode() if isinstance(v, bytes) else str(v)) for v in raw]

    async def lease(self, ticket_id: UUID, due_before_ms: int, until_ms: int) -> bool:
        """Take a due chat until `until_ms`; False when it is not due (any more): another copier has it."""
        return bool(await self._lease(keys=[self.key], args=[str(ticket_id), due_before_ms, until_ms]))

    async def settle(self, ticket_id: UUID, lease_ms: int, again_at_ms: int | None = None) -> None:
        """End a lease: the chat leaves the queue, or is due again at `again_at_ms`; unless a line
        stored during the lease queued it anew."""
        await self._settle(keys=[self.key], args=[str(ticket_id), lease_ms, again_at_ms or 0])

    async def size(self) -> int:
        return int(await self.commands.zcard(self.key))

    async def agent(self, operator_id: str) -> str | None:
        value = await self.commands.get(_agent_key(operator_id))
        return value.decode() if isinstance(value, bytes) else value

    async def copied(self, ticket_id: UUID) -> int:
        """The seq up to which the chat's lines are in its ticket (0: none yet)."""
        return int(await self.commands.get(_copied_key(ticket_id)) or 0)

    async def set_copied(self, ticket_id: UUID, seq: int) -> None:
        await self.commands.set(_copied_key(ticket_id), str(seq), ex=COPIED_SECONDS)

"""Help-desk agents' presence in Redis: who is available, away or offline, for how long.

An agent's presence is one hash (`status`, `name`, `teams`, `seen`, `last_assigned`) that expires
`ttl` seconds after the last heartbeat: an agent whose dashboard tab is gone (closed, asleep,
network lost) stops heartbeating and so stops being available, with no one having to notice.
A sorted set of agent ids by last heartbeat lists the agents seen recently, so the routing reads
a few keys, never scans. Losing Redis loses only presence: agents are offline until their next
heartbeat (seconds later), and loads are kept in Cassandra, not here."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis

from schemas.helpdesk_routing import PresenceStatus

_PREFIX = "pitboss:helpdesk:presence:"
_INDEX = "pitboss:helpdesk:agents"
_STATUSES: tuple[PresenceStatus, ...] = ("available", "away", "offline")


@dataclass(frozen=True, slots=True)
class Presence:
    agent_id: str
    name: str
    status: PresenceStatus
    teams: tuple[str, ...]
    seen: datetime
    last_assigned_at: datetime | None


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def _parse(agent_id: str, raw: Mapping[Any, Any]) -> Presence | None:
    data = {_text(k): _text(v) for k, v in raw.items()}
    status = data.get("status", "")
    if status not in _STATUSES or "seen" not in data:
        return None
    assigned = data.get("last_assigned")
    return Presence(
        agent_id=agent_id, name=data.get("name", ""), status=status,
        teams=tuple(t for t in data.get("teams", "").split(",") if t),
        seen=datetime.fromtimestamp(float(data["seen"]), UTC),
        last_assigned_at=datetime.fromtimestamp(float(assigned), UTC) if assigned else None,
    )


class PresenceStore:
    def __init__(self, redis: aioredis.Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds

    async def set(self, agent_id: str, name: str, status: PresenceStatus, teams: Sequence[str]) -> Presence:
        """Set (or refresh: a heartbeat is the same call) an agent's presence for `ttl` seconds."""
        now = time.time()
        key = _PREFIX + agent_id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"status": status, "name": name, "teams": ",".join(teams), "seen": repr(now)})
            pipe.expire(key, self.ttl)
            pipe.zadd(_INDEX, {agent_id: now})
            # Agents unseen for a day leave the index (their hash expired long ago).
            pipe.zremrangebyscore(_INDEX, "-inf", now - 86_400)
            pipe.hget(key, "last_assigned")
            results = await pipe.execute()
        assigned = _text(results[-1])
        return Presence(agent_id, name, status, tuple(teams), datetime.fromtimestamp(now, UTC),
                        datetime.fromtimestamp(float(assigned), UTC) if assigned else None)

    async def get(self, agent_id: str) -> Presence | None:
        raw = await self.redis.hgetall(_PREFIX + agent_id)
        return _parse(agent_id, raw) if raw else None

    async def assigned(self, agent_id: str, at: datetime) -> None:
        """Remember when an agent last got a ticket (the tie-break of the least-loaded choice);
        only while their presence lives (a lapsed agent's hash is not recreated without a status)."""
        key = _PREFIX + agent_id
        if await self.redis.exists(key):
            await self.redis.hset(key, "last_assigned", repr(at.timestamp()))

    async def online(self) -> list[Presence]:
        """Every agent whose presence has not expired, available or not."""
        now = time.time()
        found_ids = await self.redis.zrangebyscore(_INDEX, now - self.ttl, "+inf")
        ids = [_text(i) if isinstance(i, bytes | str) else str(i) for i in found_ids]
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for agent_id in ids:
                pipe.hgetall(_PREFIX + agent_id)
            raws = await pipe.execute()
        found = (_parse(a, r) for a, r in zip(ids, raws, strict=True) if r)
        return [p for p in found if p is not None]

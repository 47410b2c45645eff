"""Shard ownership leases: lightweight transactions on `shard_leases`.

A lease names its owner and an epoch that grows with every change of owner. The owner
renews it well before it expires; a new owner can claim it only once it has expired (or from
a previous incarnation of the same owner, which Ray guarantees is dead when it restarts an
actor). Each claim bumps the epoch, which fences the journal writes of a stale owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cassandra import ConsistencyLevel
from cassandra.cluster import Session

from adapters.cassandra.session import aexecute


@dataclass(frozen=True, slots=True)
class Lease:
    region: str
    shard: int
    owner: str
    epoch: int
    expires_at: datetime


class LeaseStore:
    def __init__(self, session: Session, serial: str = "SERIAL") -> None:
        self.session = session
        serial_cl = ConsistencyLevel.SERIAL if serial.upper() == "SERIAL" else ConsistencyLevel.LOCAL_SERIAL
        self._read = session.prepare("SELECT owner, epoch, expires_at FROM shard_leases WHERE region = ? AND shard = ?")
        self._read.consistency_level = serial_cl  # a linearizable read also completes any half-done claim
        self._insert = session.prepare(
            "INSERT INTO shard_leases (region, shard, owner, epoch, expires_at) VALUES (?, ?, ?, ?, ?) IF NOT EXISTS"
        )
        self._take = session.prepare(
            "UPDATE shard_leases SET owner = ?, epoch = ?, expires_at = ? WHERE region = ? AND shard = ? "
            "IF owner = ? AND epoch = ?"
        )
        self._renew = session.prepare(
            "UPDATE shard_leases SET expires_at = ? WHERE region = ? AND shard = ? IF owner = ? AND epoch = ?"
        )
        for stmt in (self._insert, self._take, self._renew):
            stmt.serial_consistency_level = serial_cl

    async def current(self, region: str, shard: int) -> Lease | None:
        rows = await aexecute(self.session, self._read, (region, shard), op="lease_read")
        if not rows:
            return None
        r = rows[0]
        return Lease(region, shard, r["owner"], r["epoch"], r["expires_at"].replace(tzinfo=UTC))

    async def claim(self, region: str, shard: int, owner: str, ttl: float, same_owner_prefix: str = "") -> Lease | None:
        """Take the lease if it is free, expired, or held by an earlier incarnation of this owner."""
        now = datetime.now(UTC)
        expires = now + timedelta(seconds=ttl)
        cur = await self.current(region, shard)
        if cur is None:
            rows = await aexecute(self.session, self._insert, (region, shard, owner, 1, expires), op="lease_claim")
            return Lease(region, shard, owner, 1, expires) if rows and rows[0]["[applied]"] else None
        if cur.owner == owner:
            return cur if await self.renew(cur, ttl) else None
        reclaimable = bool(same_owner_prefix) and cur.owner.startswith(same_owner_prefix)
        if cur.expires_at > now and not reclaimable:
            return None
        rows = await aexecute(
            self.session,
            self._take,
            (owner, cur.epoch + 1, expires, region, shard, cur.owner, cur.epoch),
            op="lease_claim",
        )
        return Lease(region, shard, owner, cur.epoch + 1, expires) if rows and rows[0]["[applied]"] else None

    async def renew(self, lease: Lease, ttl: float) -> datetime | None:
        expires = datetime.now(UTC) + timedelta(seconds=ttl)
        rows = await aexecute(
            self.session,
            self._renew,
            (expires, lease.region, lease.shard, lease.owner, lease.epoch),
            op="lease_renew",
        )
        return expires if rows and rows[0]["[applied]"] else None

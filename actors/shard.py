"""`PlayerShard`: a Ray actor hosting many per-player virtual actors.

- A player is activated on first use from its snapshot and journal tail, serves one turn at a
  time (per-player lock) and is passivated when idle or when the shard's active cap is
  reached (least recently used first). The cache keeps each player's state as JSON bytes, so
  memory is bounded by the cap and small per player.
- A turn's journal entries are written at LOCAL_QUORUM before the answer: a killed shard
  loses nothing it acknowledged. If a write fails or its outcome is unknown, the player is
  evicted, so the next turn reloads what really landed instead of reusing sequence numbers.
- The shard owns its slot of the home region through a lease (see adapters.cassandra.leases)
  and refuses to write once the lease may have passed to another owner.
- CRM features: a turn that changed a player only marks it dirty (its new state kept by
  reference, no extra work in the turn). Every PITBOSS_SEGMENT_FEATURE_FLUSH_MS the shard computes
  the dirty players' feature rows (domain.features), writes them and their recent daily activity to
  Cassandra, then pushes the rows to the region's segment engine (fire and forget: the engine's
  periodic catch-up from Cassandra repairs a lost push). At most one row per player per flush.
- Contact index: the same flush writes the player's profile email to `player_contacts` (the help
  desk's email -> player lookup), only when it differs from the address this activation last
  wrote (most turns do not touch the profile), dropping the previous address's row when known.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
import zlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import ray
from prometheus_client import REGISTRY, Counter, Gauge

from actors.grain import Replay, check_replay, decide_entry, decode, decode_command, encode
from actors.ids import Seen, add_ids, id_hash, new_seen, pack, unpack
from adapters.cassandra.leases import LeaseStore
from adapters.cassandra.outbox import OutboxRow, OutboxStore
from adapters.cassandra.player_contacts import ContactChange, PlayerContacts
from adapters.cassandra.players import JournalEntry, PlayerStore
from adapters.cassandra.segments import DayActivity, FeatureStore, StoredFeatures
from adapters.cassandra.session import connect
from adapters.outages import OUTAGES, which
from adapters.settings import Settings
from domain import features as crm_features
from domain.errors import Forbidden, NotFound, NotHomeRegion, PitbossError, StaleOwner, Unavailable
from domain.player import AnyCommand, Decision, view
from domain.player_links import normalize_email
from schemas.commands import AuthorizeDeposit, RegisterPlayer, event_command
from schemas.events import EventEnvelope, PitbossEvent
from schemas.state import PlayerState, decode_state, encode_state

log = logging.getLogger("pitboss.shard")

EVENTS = Counter("pitboss_events_total", "Platform events by outcome", ["outcome"])
ACTIVE = Gauge("pitboss_shard_active_players", "Players active in this shard")
ACTIVATIONS = Counter("pitboss_shard_activations_total", "Players activated from Cassandra")
PASSIVATIONS = Counter("pitboss_shard_passivations_total", "Players passivated", ["why"])
FEATURE_ROWS = Counter("pitboss_shard_feature_rows_total", "Player feature rows written", ["outcome"])
CONTACT_ROWS = Counter("pitboss_shard_contact_rows_total", "Player email index rows written")
ENGINE_LOOKUP_SECONDS = 10.0
LEASE_CHECK_SECONDS = 2.0  # how long a turn waits for a lease renewal it asked for before answering 503


@dataclass(slots=True)
class Active:
    state: bytes | None  # PlayerState JSON, zlib-compressed; None only inside a turn that creates the player
    seen: Seen
    seq: int
    snap_seq: int
    home: str
    last_used: float
    contact: str | None = None  # the email this activation last wrote to player_contacts (normal form)


@dataclass(slots=True)
class _Plan:
    """One player's part of an event batch, decided but not yet durable."""

    pid: UUID
    act: Active | None
    created: bool
    state: PlayerState | None = None
    entries: list[JournalEntry] = field(default_factory=list)
    new_ids: list[int] = field(default_factory=list)
    outcomes: list[tuple[str, str | None]] = field(default_factory=list)


def _pack_state(state: PlayerState) -> bytes:
    # zlib level 1 halves a typical state for ~10 us a turn: memory is bounded by the cap,
    # and the cap by bytes per player.
    return zlib.compress(encode_state(state), 1)


def _unpack_state(data: bytes) -> PlayerState:
    return decode_state(zlib.decompress(data))


def _answer_or_error(result: Any) -> Any:
    if isinstance(result, PitbossError):
        return result
    if isinstance(result, OUTAGES):
        log.warning("command not run: %s unavailable (%r)", which(result), result)
        return Unavailable(f"{which(result)} is unavailable; retry in a moment")
    if isinstance(result, BaseException):
        log.error("command failed", exc_info=result)
        return Unavailable("the command failed unexpectedly; it has been logged")
    return result


class _TurnLock:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


@dataclass(slots=True)
class _Held:
    lease_epoch: int
    deadline: float  # monotonic time after which this shard must not write


class PlayerShard:
    """Hosts the players whose id hashes to `index`. Created by actors.router.ensure_shards."""

    def __init__(self, region: str, index: int, count: int, env: dict[str, str] | None = None) -> None:
        os.environ.update(env or {})
        self.settings = Settings()
        self.region = region
        self.index = index
        self.count = count
        # Ray keeps an actor's id across its restarts, so a restarted shard may take its own lease
        # back at once; outside Ray every instance is a stranger to every other.
        actor_id = (ray.get_runtime_context().get_actor_id() if ray.is_initialized() else None) or uuid.uuid4().hex
        self.owner_prefix = f"{region}/{index}/{actor_id}/"
        self.owner = self.owner_prefix + uuid.uuid4().hex[:8]
        self.active: OrderedDict[UUID, Active] = OrderedDict()
        self.locks: dict[UUID, _TurnLock] = {}
        self.leases: dict[str, _Held] = {}
        self._renewing: dict[str, asyncio.Future[bool]] = {}
        self._init_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._snapshots: set[asyncio.Task[Any]] = set()
        self._outbox_wake = asyncio.Event()
        # Players whose state changed since the last feature flush -> their latest state (a reference:
        # a turn works on its own decoded copy and never touches it again).
        self._dirty: dict[UUID, PlayerState] = {}
        self._features_wake = asyncio.Event()
        self._engine: Any = None
        self._engine_looked_up = 0.0
        self.store: PlayerStore
        self.features: FeatureStore
        self.contacts: PlayerContacts
        self.lease_store: LeaseStore

    # ---------------------------------------------------------------- lifecycle

    async def ready(self) -> bool:
        """Connect and own this shard's slot of the home region; retried by every call until it works."""
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if self.region in self.leases:
                return True
            if not hasattr(self, "lease_store"):
                loop = asyncio.get_running_loop()
                ks = self.settings.cassandra_keyspace
                cluster, session = await loop.run_in_executor(None, lambda: connect(self.settings, ks))
                # Leases get their own connections so a burst of player writes cannot delay a renewal.
                lease_cluster, lease_session = await loop.run_in_executor(None, lambda: connect(self.settings, ks))
                try:
                    store = PlayerStore(session, self.settings.cassandra_max_in_flight)
                    outbox = OutboxStore(session, store.limit)
                    features = FeatureStore(session, self.settings.segment_feature_buckets)
                    contacts = PlayerContacts(session)
                    leases = LeaseStore(lease_session, self.settings.lease_serial_consistency)
                except Exception:
                    cluster.shutdown()
                    lease_cluster.shutdown()
                    raise
                # Assigned together, so a failure above leaves the shard to try again from scratch.
                self.cluster, self.lease_cluster = cluster, lease_cluster
                self.store, self.outbox, self.lease_store = store, outbox, leases
                self.features = features
                self.contacts = contacts
            await self._acquire(self.region, wait=self.settings.lease_seconds * 2.5)
            if not self._tasks:
                self._spawn(self._renew_loop())
                self._spawn(self._passivate_loop())
                self._spawn(self._publish_loop())
                self._spawn(self._features_loop())
            return True

    def _spawn(self, coro: Any, tasks: set[asyncio.Task[Any]] | None = None) -> None:
        group = self._tasks if tasks is None else tasks
        task = asyncio.get_running_loop().create_task(coro)
        group.add(task)
        task.add_done_callback(group.discard)

    async def _acquire(self, region: str, wait: float) -> _Held:
        ttl = self.settings.lease_seconds
        give_up = time.monotonic() + wait
        while True:
            sent = time.monotonic()
            lease = await self.lease_store.claim(region, self.index, self.owner, ttl, self.owner_prefix)
            if lease is not None:
                held = _Held(lease.epoch, sent + ttl * 0.8)
                self.leases[region] = held
                log.info("shard %s/%s owns %s with epoch %s", self.region, self.index, region, lease.epoch)
                return held
            if time.monotonic() >= give_up:
                if region != self.region:
                    raise NotHomeRegion(f"the player is owned by region {region}", extra={"home_region": region})
                raise Unavailable(f"shard {self.index} of {region} is owned by another live process")
            await asyncio.sleep(0.5)

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_seconds / 4)
            for region, held in list(self.leases.items()):
                try:
                    await self._renew(region, held)
                except Exception:  # a failed renewal is retried; the deadline protects writes
                    log.warning("lease renewal of %s/%s failed", region, self.index, exc_info=True)

    async def _renew(self, region: str, held: _Held) -> bool:
        """Renew one held lease, one attempt per region at a time; False if another owner has it
        now (its players are dropped and, for the home region, a new claim starts)."""
        running = self._renewing.get(region)
        if running is None:
            running = self._renewing[region] = asyncio.ensure_future(self._renew_once(region, held))
            running.add_done_callback(lambda done: self._renewed(region, done))
        return await asyncio.shield(running)

    def _renewed(self, region: str, done: asyncio.Future[bool]) -> None:
        self._renewing.pop(region, None)
        if not done.cancelled():
            done.exception()  # retrieved here: every caller may have stopped waiting for it

    async def _renew_once(self, region: str, held: _Held) -> bool:
        ttl = self.settings.lease_seconds
        sent = time.monotonic()
        lease = await self.lease_store.current(region, self.index)
        ok = (
            lease is not None
            and lease.owner == self.owner
            and lease.epoch == held.lease_epoch
            and await self.lease_store.renew(lease, ttl) is not None
        )
        if ok:
            held.deadline = sent + ttl * 0.8
            return True
        if self.leases.get(region) is held:
            log.error("shard %s/%s lost the lease of %s; dropping its players", self.region, self.index, region)
            self.leases.pop(region, None)
            self._drop_region(region)
            if region == self.region:
                self._spawn(self._acquire(region, wait=float("inf")))
        return False

    def _drop_region(self, region: str) -> None:
        for pid in [p for p, a in self.active.items() if a.home == region]:
            self.active.pop(pid, None)
        ACTIVE.set(len(self.active))

    async def _epoch_for(self, region: str) -> int:
        held = self.leases.get(region)
        if held is None:
            held = await self._acquire(region, wait=0)
        if time.monotonic() >= held.deadline:
            # Renewed now rather than at the loop's next round: after a Cassandra outage the
            # shard writes again as soon as the lease row can be reached, not up to a quarter
            # of the TTL later. The renewal is a compare-and-set on owner and epoch, so it
            # cannot revive a lease another owner has claimed meanwhile.
            try:
                renewed = await asyncio.wait_for(self._renew(region, held), LEASE_CHECK_SECONDS)
            except Exception as exc:
                log.warning("lease of %s/%s not confirmed: %r", region, self.index, exc)
                renewed = False
            if not renewed:
                raise StaleOwner(f"shard {self.index} cannot confirm it still owns {region}; retry")
        return held.lease_epoch

    # ---------------------------------------------------------------- activation

    @asynccontextmanager
    async def _turn(self, pid: UUID) -> AsyncIterator[None]:
        """One turn at a time per player. The lock is dropped only when no task holds or waits
        for it: asyncio.Lock looks free between a release and the woken waiter's acquire, so
        `locked()` cannot tell."""
        entry = self.locks.get(pid)
        if entry is None:
            entry = self.locks[pid] = _TurnLock()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self.locks[pid]

    async def _activate(self, pid: UUID, write: bool = True) -> Active | None:
        """The player's live actor, loaded if needed. A player homed in another region is only
        cached (and written) while this shard holds that region's lease (failover); a read of
        one is served from the local replica without taking ownership."""
        act = self.active.get(pid)
        if act is not None:
            self.active.move_to_end(pid)
            act.last_used = time.monotonic()
            return act
        loaded = await self.store.load(pid)
        if loaded is None:
            return None
        state: PlayerState | None = decode_state(loaded.snapshot.state)
        seen = unpack(loaded.snapshot.seen)
        seq = snap_seq = loaded.snapshot.seq
        for entry in loaded.tail:
            cmd = decode(entry.kind, entry.body)
            state = decide_entry(state, cmd, entry.recorded_at, seq, self.region).state
            if cmd.command_id is not None:
                seen = add_ids(seen, [id_hash(cmd.command_id)])
            seq = entry.seq
        if state is None:
            return None
        act = Active(_pack_state(state), seen, seq, snap_seq, state.home_region, time.monotonic())
        if act.home != self.region:
            if not write:
                return act
            await self._epoch_for(act.home)
        self.active[pid] = act
        ACTIVATIONS.inc()
        ACTIVE.set(len(self.active))
        self._enforce_cap()
        return act

    def _enforce_cap(self) -> None:
        excess = len(self.active) - self.settings.shard_active_cap
        if excess <= 0:
            return
        for pid in list(self.active)[: excess + 16]:
            if excess <= 0:
                break
            if pid in self.locks:
                continue
            self._passivate(pid, "cap")
            excess -= 1

    def _passivate(self, pid: UUID, why: str) -> None:
        act = self.active.pop(pid, None)
        ACTIVE.set(len(self.active))
        if act is None:
            return
        PASSIVATIONS.labels(why).inc()
        if act.seq > act.snap_seq and act.state is not None:
            self._spawn(self._snapshot(pid, act), self._snapshots)

    async def _snapshot(self, pid: UUID, act: Active) -> None:
        assert act.state is not None
        try:
            epoch = await self._epoch_for(act.home)
            await self.store.save_snapshot(pid, act.seq, zlib.decompress(act.state), pack(act.seen), epoch)
            act.snap_seq = max(act.snap_seq, act.seq)
        except Exception:  # the journal holds everything; a missed snapshot only slows activation
            log.warning("snapshot of %s at %s failed", pid, act.seq, exc_info=True)

    async def _passivate_loop(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.settings.shard_idle_seconds / 2))
            cutoff = time.monotonic() - self.settings.shard_idle_seconds
            for pid in [p for p, a in self.active.items() if a.last_used < cutoff and p not in self.locks]:
                self._passivate(pid, "idle")

    # ---------------------------------------------------------------- writes

    async def _persist(
        self,
        pid: UUID,
        act: Active,
        entries: list[JournalEntry],
        state: PlayerState,
        new_ids: list[int],
        created: bool,
        outbox: list[Any] | None = None,
        features: bool = True,
    ) -> None:
        async with self._durable([pid]):
            epoch = await self._epoch_for(act.home)
            if created:
                await self.store.write_many(self._creation(pid, act, entries, state, new_ids, epoch))
            else:
                await self.store.append(pid, entries, epoch, outbox or ())
        self._advance(pid, act, state, entries, new_ids, created, features)

    @asynccontextmanager
    async def _durable(self, pids: list[UUID]) -> AsyncIterator[None]:
        """Around a journal write: if it fails or its outcome is unknown, the players are evicted
        (the next turn reloads what really landed) and the caller gets a retryable error."""
        try:
            yield
        except Exception as exc:
            for pid in pids:
                self._evict(pid)
            if isinstance(exc, PitbossError):
                raise
            log.warning("journal write of %s players failed: %r", len(pids), exc)
            raise Unavailable("the players' state could not be stored; retry") from None

    def _advance(
        self, pid: UUID, act: Active, state: PlayerState, entries: list[JournalEntry], new_ids: list[int],
        created: bool, features: bool = True,
    ) -> None:
        """The entries are durable: the player's cached state moves on. `features`: the turn may have
        changed what the CRM features are computed from (profile, exclusions, counters)."""
        act.state = _pack_state(state)
        if features or pid in self._dirty:
            self._dirty[pid] = state
            self._features_wake.set()
        act.seen = add_ids(act.seen, new_ids)
        act.seq = entries[-1].seq
        if created:
            self.active[pid] = act
            ACTIVE.set(len(self.active))
            self._enforce_cap()
        if act.seq - act.snap_seq >= self.settings.snapshot_every:
            act.snap_seq = act.seq  # claimed now so one snapshot is in flight, not one per turn
            self._spawn(self._snapshot(pid, act), self._snapshots)

    def _creation(
        self, pid: UUID, act: Active, entries: list[JournalEntry], state: PlayerState, new_ids: list[int], epoch: int
    ) -> list[Any]:
        seq = entries[-1].seq
        act.snap_seq = seq
        return self.store.append_statements(pid, entries, epoch) + self.store.creation_statements(
            pid,
            seq,
            encode_state(state),
            pack([*act.seen, *new_ids]),
            epoch,
            state.brand,
            state.home_region,
            state.registered_at,
        )

    def _evict(self, pid: UUID) -> None:
        self.active.pop(pid, None)
        ACTIVE.set(len(self.active))

    # ---------------------------------------------------------------- API

    async def command(self, cmd: AnyCommand) -> tuple[int, dict[str, Any]]:
        """Run one command as a turn of its player; returns (HTTP status, body)."""
        await self.ready()
        pid = cmd.player_id
        async with self._turn(pid):
            act = await self._activate(pid)
            now = datetime.now(UTC)
            state = _unpack_state(act.state) if act and act.state else None
            seq = act.seq if act else 0
            replay = check_replay(state, act.seen if act else set(), cmd, seq, now)
            if isinstance(replay, Replay):
                return replay.status, replay.body
            created = act is None
            if act is None:
                home = cmd.home_region if isinstance(cmd, RegisterPlayer) else self.region
                act = Active(None, new_seen(), 0, 0, home, time.monotonic())
            decision = decide_entry(state, cmd, now, seq, act.home)
            if decision.changed:
                kind, body = encode(cmd)
                entry = JournalEntry(seq + 1, cmd.command_id or uuid.uuid4().hex, kind, body, now)
                ids = [id_hash(cmd.command_id)] if cmd.command_id else []
                outbox = [] if created else self._outbox_rows(act.home, decision, now)
                # A hold is not a feature: an authorization costs no feature row or segment update.
                await self._persist(pid, act, [entry], decision.state, ids, created, outbox,
                                    features=not isinstance(cmd, AuthorizeDeposit))
                if outbox:
                    self._outbox_wake.set()
            return decision.status, decision.body

    def _outbox_rows(self, home: str, decision: Decision, now: datetime) -> list[Any]:
        """Decisions the platform should hear about. Deposit decisions are not among them: the
        platform asked for them and has the answer."""
        rows = []
        for type_, payload in decision.events:
            if type_.startswith("deposit."):
                continue
            event = PitbossEvent(
                event_id=uuid.uuid1(),
                type=type_,
                occurred_at=now,
                player_id=decision.state.player_id,
                brand=decision.state.brand,
                payload=payload,
            )
            rows.append(
                self.outbox.insert(home, self.index, OutboxRow(event.event_id, type_, event.model_dump_json().encode()))
            )
        return rows

    async def _publish_loop(self) -> None:
        """Drains this shard's outbox to the bus; at least once, in decision order per shard."""
        import aio_pika

        from adapters import rabbit

        while True:
            try:
                connection = await aio_pika.connect_robust(self.settings.rabbitmq_url, timeout=10)
                async with connection:
                    channel = await connection.channel(publisher_confirms=True)
                    exchange = await channel.declare_exchange(
                        self.settings.events_exchange, aio_pika.ExchangeType.TOPIC, durable=True
                    )
                    while True:
                        for region in list(self.leases):
                            for row in await self.outbox.pending(region, self.index):
                                await rabbit.publish(exchange, row.type, row.body, str(row.event_id))
                                await self.outbox.done(region, self.index, row.event_id)
                        self._outbox_wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._outbox_wake.wait(), timeout=5.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("outbox publisher of shard %s failed; retrying", self.index, exc_info=True)
                await asyncio.sleep(2.0)

    async def _features_loop(self) -> None:
        """Writes the dirty players' feature rows and pushes them to the segment engine: at once after a
        quiet spell (a lone event is not delayed), then at most once per interval while turns keep coming."""
        interval = self.settings.segment_feature_flush_ms / 1000
        while True:
            await self._features_wake.wait()
            self._features_wake.clear()
            if not self._dirty:
                continue
            batch, self._dirty = self._dirty, {}
            try:
                await self._flush_features(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                # Rows not written are retried with the next flush, unless a newer state replaced them.
                for pid, state in batch.items():
                    self._dirty.setdefault(pid, state)
                FEATURE_ROWS.labels("failed").inc(len(batch))
                log.warning("feature rows of %s players not written; retrying", len(batch), exc_info=True)
                self._features_wake.set()
                await asyncio.sleep(min(5.0, interval * 10))
            await asyncio.sleep(interval)

    async def _flush_features(self, batch: dict[UUID, PlayerState]) -> None:
        now = datetime.now(UTC)
        by_region: dict[str, list[StoredFeatures]] = {}
        days: list[tuple[str, DayActivity]] = []
        for pid, state in batch.items():
            blob, codes = crm_features.pack(crm_features.features_of(state, now))
            by_region.setdefault(state.home_region, []).append(StoredFeatures(pid, state.brand, blob, codes, now))
            days += [
                (state.home_region, DayActivity(pid, a.day, a.sessions, a.bets, a.deposits_minor, a.net_loss_minor))
                for a in crm_features.recent_activity(state, now)
            ]
        for i, (region, rows) in enumerate(by_region.items()):
            await self.features.write(region, rows, days if i == 0 else ())
        FEATURE_ROWS.labels("written").inc(len(batch))
        await self._flush_contacts(batch, now)
        own = by_region.get(self.region)
        engine = self._segment_engine() if own else None
        if engine is not None and own:
            payload = [
                {"player_id": str(r.player_id), "brand": r.brand, "features": r.features, "codes": r.codes,
                 "as_of": r.as_of.isoformat()}
                for r in own
            ]
            try:
                engine.apply_rows.remote(payload)  # fire and forget: the engine's catch-up repairs a loss
            except Exception:
                self._engine = None

    async def _flush_contacts(self, batch: dict[UUID, PlayerState], now: datetime) -> None:
        """Index the players' emails that changed since this activation last wrote them. A failure
        raises: the caller retries the whole flush (the rows are idempotent)."""
        changes: list[ContactChange] = []
        for pid, state in batch.items():
            email = normalize_email(state.profile.email)
            act = self.active.get(pid)
            known = act.contact if act is not None else None
            if email is not None and email != known:
                changes.append(ContactChange(pid, state.brand, email, known))
        if not changes:
            return
        await self.contacts.write(changes, now)
        for c in changes:
            act = self.active.get(c.player_id)
            if act is not None:
                act.contact = c.email
        CONTACT_ROWS.inc(len(changes))

    def _segment_engine(self) -> Any:
        """The region's segment engine if it runs (looked up at most every few seconds), else None."""
        if self._engine is None and time.monotonic() - self._engine_looked_up > ENGINE_LOOKUP_SECONDS:
            self._engine_looked_up = time.monotonic()
            if ray.is_initialized():
                with contextlib.suppress(Exception):
                    self._engine = ray.get_actor(f"pitboss-segments-{self.region}",
                                                 namespace=self.settings.ray_namespace)
        return self._engine

    async def commands(self, batch: list[bytes]) -> list[tuple[int, dict[str, Any]] | PitbossError]:
        """Many commands (JSON, as the journal stores them) in one actor call: callers coalesce
        concurrent requests, since a Ray call costs more than a turn. Each answer, or the
        error of that one command, in order."""
        results = await asyncio.gather(*(self._command_json(raw) for raw in batch), return_exceptions=True)
        return [_answer_or_error(r) for r in results]

    async def _command_json(self, raw: bytes) -> tuple[int, dict[str, Any]]:
        return await self.command(decode_command(raw))

    async def reads(self, batch: list[tuple[UUID, str | None]]) -> list[dict[str, Any] | PitbossError]:
        results = await asyncio.gather(*(self.read(pid, brand) for pid, brand in batch), return_exceptions=True)
        return [_answer_or_error(r) for r in results]

    async def read(self, player_id: UUID, brand: str | None) -> dict[str, Any]:
        """`brand` None is the back office reading for an operator, whose scope the policy checks."""
        await self.ready()
        async with self._turn(player_id):
            act = await self._activate(player_id, write=False)
            if act is None or act.state is None:
                raise NotFound("unknown player", field="player_id")
            state = _unpack_state(act.state)
            if brand is not None and state.brand != brand:
                raise Forbidden("the player belongs to another brand", field="player_id")
            return view(state, act.seq, datetime.now(UTC)).model_dump(mode="json")

    async def apply_events(self, events: list[EventEnvelope]) -> list[tuple[str, str | None]]:
        """Apply a batch of events; per event ("accepted" | "duplicate" | "rejected", reason).

        All players of the batch take their turn together: their locks are taken in id order
        (so two batches cannot deadlock), every entry is written in a few unlogged batches,
        and only then do the players' states move on. Raises Unavailable if the writes could
        not be confirmed: the caller retries the batch, and the ids make the retry safe.
        """
        await self.ready()
        by_player: dict[UUID, list[int]] = {}
        for i, env in enumerate(events):
            by_player.setdefault(env.player_id, []).append(i)
        outcomes: list[tuple[str, str | None]] = [("rejected", "not processed")] * len(events)
        async with AsyncExitStack() as stack:
            pids = sorted(by_player, key=lambda p: p.int)
            for pid in pids:
                await stack.enter_async_context(self._turn(pid))
            missing = [p for p in pids if p not in self.active]
            if missing:
                await asyncio.gather(*(self._activate(p) for p in missing))
            now = datetime.now(UTC)
            plans: list[_Plan] = []
            for pid in pids:
                idx = by_player[pid]
                plan = self._plan(pid, [events[i] for i in idx], now)
                for i, outcome in zip(idx, plan.outcomes, strict=True):
                    outcomes[i] = outcome
                if plan.entries:
                    plans.append(plan)
            if plans:
                await self._commit(plans)
        for status, _ in outcomes:
            EVENTS.labels(status).inc()
        return outcomes

    def _plan(self, pid: UUID, envs: list[EventEnvelope], now: datetime) -> _Plan:
        act = self.active.get(pid)
        state = _unpack_state(act.state) if act and act.state else None
        seq = act.seq if act else 0
        seen = act.seen if act else set()
        home = act.home if act else self.region
        plan = _Plan(pid, act, act is None)
        for env in envs:
            cmd = event_command(env)
            h = id_hash(cmd.command_id or "")
            if h in seen or h in plan.new_ids:
                plan.outcomes.append(("duplicate", None))
                continue
            try:
                decision = decide_entry(state, cmd, now, seq, home)
            except PitbossError as exc:
                plan.outcomes.append(("rejected", exc.detail if exc.field is None else f"{exc.field}: {exc.detail}"))
                continue
            state = decision.state
            seq += 1
            kind, body = encode(cmd)
            plan.entries.append(JournalEntry(seq, cmd.command_id or "", kind, body, now))
            plan.new_ids.append(h)
            plan.outcomes.append(("accepted", None))
        plan.state = state
        return plan

    async def _commit(self, plans: list[_Plan]) -> None:
        statements: list[Any] = []
        async with self._durable([plan.pid for plan in plans]):
            for plan in plans:
                assert plan.state is not None
                if plan.act is None:
                    plan.act = Active(None, new_seen(), 0, 0, plan.state.home_region, time.monotonic())
                epoch = await self._epoch_for(plan.act.home)
                if plan.created:
                    statements += self._creation(plan.pid, plan.act, plan.entries, plan.state, plan.new_ids, epoch)
                else:
                    statements += self.store.append_statements(plan.pid, plan.entries, epoch)
            await self.store.write_many(statements)
        for plan in plans:
            self._advance(plan.pid, plan.act, plan.state, plan.entries, plan.new_ids, plan.created)  # type: ignore[arg-type]

    async def stats(self) -> dict[str, Any]:
        await self.ready()
        return {
            "region": self.region,
            "index": self.index,
            "active": len(self.active),
            "turns_in_flight": len(self.locks),
            "leases": {r: h.lease_epoch for r, h in self.leases.items()},
            "pid": os.getpid(),
        }

    async def metric_families(self) -> list[Any]:
        """This process's prometheus samples, for the platform app's /metrics to re-export."""
        return [m for m in REGISTRY.collect() if m.name.startswith("pitboss_")]

    async def passivate_all(self) -> int:
        """Snapshot and drop every player (for a planned shutdown); returns how many there were."""
        count = len(self.active)
        for pid in list(self.active):
            self._passivate(pid, "shutdown")
        await asyncio.gather(*self._snapshots, return_exceptions=True)
        return count

"""Fill the email -> player index (`player_contacts`, migration 015) for every player of the region.

    python -m actors.contacts_backfill [--brand B] [--concurrency 32] [--player ID ...]

The shards write a player's row with their CRM flush, after a turn that changed the player. A
player who has not changed since the index existed (registered before migration 015, or idle
since the row was lost) is missing from it, so an email from them opens an unlinked ticket. This
walks `player_index` (every bucket, every page), reads each player's live profile through their
shard, the one source of truth, and writes the row in normal form (`domain.player_links`).
`--player` repairs only the players named.

Safe to run again and while traffic runs: a row is the same row written twice, and readers check
every row against the live profile anyway, so a row for an address a player changes a moment later
is ignored. Players whose profile has no address are counted, not written. A player the shard
cannot serve (restarting) is retried a few times, then counted as failed; the exit status is 1 if
any failed, and a later run finishes them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from uuid import UUID

import ray
from cassandra.cluster import Session

from actors.router import PlayerRouter
from adapters.cassandra.player_contacts import ContactChange, PlayerContacts
from adapters.cassandra.players import INDEX_BUCKETS
from adapters.cassandra.session import aexecute, connect
from adapters.settings import Settings, get_settings
from domain.errors import NotFound, Unavailable
from domain.player_links import normalize_email

PAGE = 500
ATTEMPTS = 5


@dataclass
class Tally:
    indexed: int = 0
    without_email: int = 0
    gone: int = 0
    failed: list[UUID] = field(default_factory=list)


async def players_of(session: Session, brand: str | None) -> AsyncIterator[UUID]:
    """Every player in `player_index`, bucket by bucket, a page at a time (by token order within one)."""
    for bucket in range(INDEX_BUCKETS):
        after: UUID | None = None
        while True:
            if after is None:
                rows = await aexecute(session, "SELECT player_id, brand FROM player_index WHERE bucket = %s "
                                      "LIMIT %s", (bucket, PAGE), op="contacts_backfill_scan")
            else:
                rows = await aexecute(session, "SELECT player_id, brand FROM player_index WHERE bucket = %s "
                                      "AND player_id > %s LIMIT %s", (bucket, after, PAGE),
                                      op="contacts_backfill_scan")
            for r in rows:
                if brand is None or r["brand"] == brand:
                    yield r["player_id"]
            if len(rows) < PAGE:
                break
            after = rows[-1]["player_id"]


async def backfill_one(router: PlayerRouter, contacts: PlayerContacts, player_id: UUID, tally: Tally) -> None:
    for attempt in range(ATTEMPTS):
        try:
            state = await router.read(player_id, None)
            break
        except NotFound:
            tally.gone += 1
            return
        except Unavailable:
            if attempt == ATTEMPTS - 1:
                tally.failed.append(player_id)
                return
            await asyncio.sleep(0.5 * 2**attempt)
    email = normalize_email((state.get("profile") or {}).get("email"))
    if email is None:
        tally.without_email += 1
        return
    await contacts.write([ContactChange(player_id, str(state["brand"]), email)], datetime.now(UTC))
    tally.indexed += 1


async def _listed(ids: Sequence[UUID]) -> AsyncIterator[UUID]:
    for pid in ids:
        yield pid


async def backfill(settings: Settings, brand: str | None, concurrency: int, only: Sequence[UUID] = (),
                   report_every: int = 5000) -> Tally:
    """Index every player of `player_index` (of `brand` if given), or only the players in `only`."""
    cluster, session = await asyncio.to_thread(connect, settings, settings.cassandra_keyspace)
    try:
        return await _backfill(session, PlayerRouter(settings), brand, concurrency, only, report_every)
    finally:
        cluster.shutdown()


async def _backfill(session: Session, router: PlayerRouter, brand: str | None, concurrency: int,
                    only: Sequence[UUID], report_every: int) -> Tally:
    contacts = await asyncio.to_thread(PlayerContacts, session)
    tally = Tally()
    limit = asyncio.Semaphore(concurrency)
    tasks: set[asyncio.Task[None]] = set()
    seen = 0

    async def one(pid: UUID) -> None:
        try:
            await backfill_one(router, contacts, pid, tally)
        finally:
            limit.release()

    async for pid in _listed(only) if only else players_of(session, brand):
        await limit.acquire()
        task = asyncio.create_task(one(pid))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        seen += 1
        if seen % report_every == 0:
            print(f"  {seen} players: {tally.indexed} indexed, {tally.without_email} without an address, "
                  f"{len(tally.failed)} failed", flush=True)
    await asyncio.gather(*tasks)
    return tally


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m actors.contacts_backfill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--brand", default=None, help="only this brand's players (default: every brand)")
    parser.add_argument("--concurrency", type=int, default=32, help="players read at once (1-512)")
    parser.add_argument("--player", type=UUID, action="append", default=[], help="only this player (repeatable)")
    args = parser.parse_args(argv)
    if not 1 <= args.concurrency <= 512:
        parser.error("--concurrency must be between 1 and 512")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = get_settings()
    ray.init(address=settings.ray_address, namespace=settings.ray_namespace, logging_level=logging.WARNING,
             log_to_driver=False)
    tally = asyncio.run(backfill(settings, args.brand, args.concurrency, args.player))
    print(f"indexed {tally.indexed} players; {tally.without_email} without an address; {tally.gone} gone; "
          f"{len(tally.failed)} failed" + (f" (first: {tally.failed[0]})" if tally.failed else ""), flush=True)
    return 1 if tally.failed else 0


if __name__ == "__main__":
    sys.exit(main())

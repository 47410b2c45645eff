"""Restart the region's shards and consumers one at a time so they run the code now installed.

    python -m actors.rollout

`serve deploy` replaces Serve replicas but not the detached actors they created. Each shard
is passivated (its players snapshotted) and killed; Ray restarts it under the same actor id,
which lets it take its own lease back at once, so each shard is away for seconds.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time

import ray

from actors.router import call, ensure_shards
from actors.runtime import ensure_audit, ensure_consumers, ensure_sla_scheduler
from adapters.settings import Settings, get_settings


async def _wait_ready(handle: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await call(handle.stats.remote(), 10.0)  # type: ignore[attr-defined]
            return
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def rollout() -> int:
    settings = get_settings()
    shards = ensure_shards(settings)
    for i, shard in enumerate(shards):
        try:
            await call(shard.passivate_all.remote(), 60.0)
        except Exception as exc:  # a shard that cannot snapshot loses nothing: the journal has it all
            print(f"shard {i}: passivation skipped ({exc})")
        ray.kill(shard, no_restart=False)
        await _wait_ready(shard)
        print(f"shard {i}: restarted")
    for i, consumer in enumerate(ensure_consumers(settings)):
        ray.kill(consumer, no_restart=False)
        deadline = time.monotonic() + 60
        while True:
            try:
                await call(consumer.start.remote(), 10.0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.5)
        print(f"consumer {i}: restarted")
    await _restart_audit(settings)
    await _restart_sla_scheduler(settings)
    await _restart_segment_engine(settings)
    return 0


async def _restart_segment_engine(settings: Settings) -> None:
    """The engine answers `stats()` only once its matrix is rebuilt from Cassandra."""
    from actors.segments import ensure_segment_engine

    engine = ensure_segment_engine(settings)
    ray.kill(engine, no_restart=False)
    await _wait_ready(engine, timeout=900.0)
    print("segment engine: restarted")


async def _restart_audit(settings: Settings) -> None:
    """Drain the audit log (queued appends committed, new ones refused so callers retry), restart
    it, and wait until it has claimed its chain again."""
    audit = ensure_audit(settings)
    try:
        await call(audit.drain.remote(), 60.0)
    except Exception as exc:  # nothing acknowledged is lost: answers come only after the commit
        print(f"audit log: drain skipped ({exc})")
    ray.kill(audit, no_restart=False)
    deadline = time.monotonic() + 60
    while True:
        try:
            await call(audit.head.remote(), 10.0)
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
    print("audit log: restarted")


async def _restart_sla_scheduler(settings: Settings) -> None:
    """Restart the help-desk SLA scheduler (created here on the first deploy). Nothing is lost: a
    warning or breach it claimed but did not finish is finished by the next scan."""
    scheduler = ensure_sla_scheduler(settings)
    ray.kill(scheduler, no_restart=False)
    await _wait_ready(scheduler)
    print("helpdesk SLA scheduler: restarted")


def main() -> int:
    settings = get_settings()
    ray.init(address=settings.ray_address, namespace=settings.ray_namespace, logging_level=logging.WARNING)
    return asyncio.run(rollout())


if __name__ == "__main__":
    sys.exit(main())

"""`HelpdeskWorker`: the help desk's background work, in a deployment of its own so that it never
holds the event loop of the replicas that serve agents, players and their chat sockets.

- the transcript copier (transcripts.py): chat lines into their tickets;
- the ticket-event consumers on their shared durable queues: the KPI fact writer (kpi_facts.py)
  and the chat consoles' reassignment notices (chat_moves.py);
- the publisher of events parked while the broker was down (adapters/rabbit.py, `parked_events`).

The help-desk API is handed its handle (app.py) and reports its state under `worker` in /healthz.
Replicas and scaling are in the Serve config; several replicas share the queues and the copy queue
(one copier per chat at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from adapters.bus_consumer import QueueConsumer
from adapters.cassandra.chat import ChatStore
from adapters.redis_chat import CopyQueue
from adapters.settings import get_settings
from serve_apps.backoffice import deps
from serve_apps.backoffice.runtime import BackOffice
from serve_apps.helpdesk.chat_moves import ChatMoveConsumer
from serve_apps.helpdesk.kpi_facts import KpiFactConsumer
from serve_apps.helpdesk.routes_kpis import kpi_facts
from serve_apps.helpdesk.service import helpdesk
from serve_apps.helpdesk.transcripts import TranscriptCopier

WORKER_NICENESS = 10
PARKED_POLL_SECONDS = 5.0  # how often the worker looks for events parked while the broker was down
log = logging.getLogger("pitboss.helpdesk.worker")

# The API replica's handle, set by its constructor. Here, not in app.py: Serve ships the ingress
# class by value, and a global of app.py it wrote would be a copy the routes never see.
_handle: list[DeploymentHandle[Any]] = []


def bind_worker(handle: DeploymentHandle[Any]) -> None:
    _handle[:] = [handle]


async def worker_state() -> dict[str, Any]:
    """The worker's stats through the bound handle (the /healthz probe)."""
    if not _handle:
        raise RuntimeError("the worker's handle is not bound yet")
    return dict(await _handle[0].stats.remote())


@serve.deployment(name="HelpdeskWorker")
class HelpdeskWorker:
    async def __init__(self) -> None:  # type: ignore[misc]
        # Everything here can wait a little; the sockets' replica and Cassandra's request threads
        # cannot: on a shared host the kernel runs them first.
        os.nice(WORKER_NICENESS)
        settings = get_settings()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.consumers: list[QueueConsumer] = []
        self.bo = bo = await asyncio.to_thread(BackOffice, settings)
        deps.bind(bo)
        hd = await helpdesk()
        chats = await asyncio.to_thread(ChatStore, bo.session)
        self.queue = CopyQueue(settings)
        self.copier = TranscriptCopier(settings, chats, self.queue, hd)
        self.consumers.append(ChatMoveConsumer(settings, hd.tickets, chats, bo.redis))
        if settings.helpdesk_kpi_consumer:
            self.consumers.append(KpiFactConsumer(settings, await kpi_facts(bo)))
        loop = asyncio.get_running_loop()
        self.tasks["transcripts"] = loop.create_task(self.copier.run(), name="transcripts")
        for c in self.consumers:
            self.tasks[c.label] = loop.create_task(c.run(), name=f"consumer-{c.label}")
        self.tasks["parked-events"] = loop.create_task(self._publish_parked(), name="parked-events")

    async def _publish_parked(self) -> None:
        while True:
            try:
                await self.bo.bus.publish_parked()
            except Exception as exc:  # the broker or Cassandra still down: the rows wait
                log.warning("parked events not published yet: %r", exc)
            await asyncio.sleep(PARKED_POLL_SECONDS)

    async def check_health(self) -> None:
        for label, task in self.tasks.items():
            if task.done():
                raise RuntimeError(f"the {label} loop stopped")

    async def stats(self) -> dict[str, Any]:
        """What /healthz shows: the copy queue's length and this replica's totals."""
        return {"copy_queue": await self.queue.size(), **self.copier.totals,
                "loops": sorted(label for label, task in self.tasks.items() if not task.done())}

    async def __del__(self) -> None:
        for task in self.tasks.values():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        # A copy cut off here is finished by the next copier: the chat's lease on the copy queue
        # falls due again, and lines already in the ticket are skipped.
        for consumer in self.consumers:
            await consumer.stop()

"""The one way to reach a player's actor: shard placement, handles and error mapping.

Serve replicas and event consumers both route through `PlayerRouter`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from uuid import UUID

import ray
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from actors.grain import encode
from actors.shard import PlayerShard
from adapters.coalesce import Coalescer
from adapters.settings import Settings
from domain.errors import PitbossError, Unavailable
from domain.player import AnyCommand
from domain.sharding import shard_of
from schemas.events import EventEnvelope

T = TypeVar("T")
CALL_TIMEOUT = 30.0


def shard_name(region: str, index: int) -> str:
    return f"pitboss-shard-{region}-{index}"


def pitboss_env() -> dict[str, str]:
    """The caller's PITBOSS_* configuration, handed to actors so every process agrees."""
    return {k: v for k, v in os.environ.items() if k.startswith("PITBOSS_")}


def detached(actor_class: type, name: str, settings: Settings, max_concurrency: int, *args: Any) -> Any:
    """Get or create a named actor that outlives its creator and that Ray restarts when it dies."""
    return (
        ray.remote(actor_class)
        .options(
            name=name,
            namespace=settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=max_concurrency,
            num_cpus=0,
        )
        .remote(*args, pitboss_env())
    )


def ensure_shards(settings: Settings) -> list[Any]:
    """Get or create the region's shards."""
    return [
        detached(PlayerShard, shard_name(settings.region, i), settings, 4000, settings.region, i, settings.shards)
        for i in range(settings.shards)
    ]


async def call(ref: Awaitable[T], timeout: float = CALL_TIMEOUT) -> T:
    """Await an actor call, turning Ray's failures into Pitboss errors."""
    try:
        return await asyncio.wait_for(ref, timeout)
    except RayTaskError as exc:
        cause = exc.cause if hasattr(exc, "cause") else None
        if isinstance(cause, PitbossError):
            raise cause from None
        raise Unavailable("the player's shard failed; retry") from exc
    except (ActorDiedError, ActorUnavailableError, RayActorError):
        raise Unavailable("the player's shard is restarting; retry in a moment") from None
    except (TimeoutError, GetTimeoutError):
        raise Unavailable("the player's shard did not answer in time; retry") from None


class PlayerRouter:
    def __init__(self, settings: Settings, handles: list[Any] | None = None) -> None:
        self.settings = settings
        self.handles = handles if handles is not None else ensure_shards(settings)
        self._commands = [Coalescer(self._sender(h, "commands")) for h in self.handles]
        self._reads = [Coalescer(self._sender(h, "reads")) for h in self.handles]

    @staticmethod
    def _sender(handle: Any, method: str) -> Callable[[list[Any]], Awaitable[list[Any]]]:
        async def send(items: list[Any]) -> list[Any]:
            return list(await call(getattr(handle, method).remote(items)))

        return send

    def shard_of(self, player_id: UUID) -> int:
        return shard_of(player_id, len(self.handles))

    async def command(self, cmd: AnyCommand) -> tuple[int, dict[str, Any]]:
        raw = encode(cmd)[1]
        return await self._commands[self.shard_of(cmd.player_id)].submit(raw)  # type: ignore[no-any-return]

    async def read(self, player_id: UUID, brand: str | None) -> dict[str, Any]:
        return await self._reads[self.shard_of(player_id)].submit((player_id, brand))  # type: ignore[no-any-return]

    async def apply_events(self, events: list[EventEnvelope]) -> list[tuple[str, str | None]]:
        """Per event (status, reason), in input order. Raises Unavailable if a shard failed."""
        groups: dict[int, list[int]] = {}
        for i, env in enumerate(events):
            groups.setdefault(self.shard_of(env.player_id), []).append(i)
        results = await asyncio.gather(
            *(call(self.handles[s].apply_events.remote([events[i] for i in idx])) for s, idx in groups.items())
        )
        out: list[tuple[str, str | None]] = [("rejected", None)] * len(events)
        for idx, res in zip(groups.values(), results, strict=True):
            for i, outcome in zip(idx, res, strict=True):
                out[i] = outcome
        return out

    async def stats(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(call(h.stats.remote(), 5.0) for h in self.handles)))

    async def metric_families(self) -> list[list[Any]]:
        return list(await asyncio.gather(*(call(h.metric_families.remote(), 5.0) for h in self.handles)))

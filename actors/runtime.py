"""Creates the region's long-lived actors from inside the Serve apps, so a KubeRay RayService
that only applies the Serve config brings up everything."""

from __future__ import annotations

from typing import Any

import ray

from actors.consumer import EventConsumer
from actors.router import pitboss_env
from adapters.settings import Settings


def consumer_name(region: str, index: int) -> str:
    return f"pitboss-consumer-{region}-{index}"


def ensure_consumers(settings: Settings) -> list[Any]:
    remote = ray.remote(EventConsumer)
    return [
        remote.options(
            name=consumer_name(settings.region, i),
            namespace=settings.ray_namespace,
            lifetime="detached",
            get_if_exists=True,
            max_restarts=-1,
            max_task_retries=0,
            max_concurrency=64,
            num_cpus=0,
        ).remote(settings.region, i, pitboss_env())
        for i in range(settings.consumers)
    ]

"""An engine's config for a cluster test, and an API process (``run_api``) beside it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from crashd.api.cluster.apiproc import ApiInfo, run_api
from crashd.api.config import Config
from support.game import game_config


def cluster_config(tmp_path: Path, redis_url: str, **overrides: Any) -> Config:
    return game_config(
        tmp_path, redis_url=redis_url, redis_prefix=f"test-{uuid.uuid4().hex[:8]}", **overrides
    )


@asynccontextmanager
async def api_process(config: Config) -> AsyncIterator[ApiInfo]:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        info: ApiInfo = await nursery.start(
            lambda task_status: run_api(
                config.with_overrides(port=0), shutdown=shutdown, task_status=task_status
            )
        )
        try:
            yield info
        finally:
            shutdown.set()

"""An engine's config for a cluster test, an API process (``run_api``) beside it, and
how its answers are compared with the engine's."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import trio

from crashd.api.cluster.apiproc import ApiInfo, run_api
from crashd.api.config import Config
from crashd.api.security.signing import sign_request
from support.game import Api, game_config


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


def same_answer(there: httpx.Response, here: httpx.Response) -> None:
    """The API process answered as the engine did: status, and the body but for the
    request id a problem quotes."""
    assert there.status_code == here.status_code, (there.text, here.text)
    if "json" not in there.headers.get("Content-Type", ""):
        assert there.headers.get("Content-Type") == here.headers.get("Content-Type")
        assert there.content == here.content
        return
    a, b = there.json(), here.json()
    if isinstance(a, dict) and isinstance(b, dict):
        a.pop("request_id", None)
        b.pop("request_id", None)
    assert a == b, (there.text, here.text)


def code_of(r: httpx.Response) -> tuple[int, str | None]:
    doc = r.json()
    return r.status_code, doc.get("code") if isinstance(doc, dict) else None


async def signed_raw(
    api: Api, path: str, raw: bytes, *, key: str | None = None, method: str = "POST"
) -> httpx.Response:
    """A signed request with any body (``Api.post`` sends JSON objects only)."""
    signature = sign_request(
        api.signing_secret, method, path, raw, key or uuid.uuid4().hex, int(time.time())
    )
    headers = {**api.headers, **signature, "Content-Type": "application/json"}
    return await api.client.request(method, path, content=raw, headers=headers)

"""``crashd api``: the REST API in a process without the engine.

It authenticates, verifies signatures, rate-limits and validates as the engine's own
REST does (same app, same routes); reads go to the database (``open_reads``), the live
round's state comes from the engine's keyframes (it follows the feed stream as an edge
does, without subscribers), and money-moving calls go to the engine as commands
(``RedisCommands``). Per-process state stays per process: rate limits and nonces count
per API process (a replayed signed request is still answered from its stored reply, by
its Idempotency-Key), in-flight keys are checked again by the engine.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import hypercorn.trio
import trio

from crashd.api.config import Config, ConfigError, describe
from crashd.api.edge.links import LinkError, StreamLink, open_link
from crashd.api.edge.mirror import EdgeHub
from crashd.api.edge.streams import follow_stream
from crashd.api.rest.app import create_app
from crashd.api.rest.problems import Problem
from crashd.api.server import ServerInfo, _parse_bind, hypercorn_config
from crashd.api.services import Services, open_services
from crashd.engine.chainstore import ChainFile
from crashd.engine.fairness import ChainEncoding, ChainSpec
from crashd.engine.ledger.reads import ReadOnlyLedger, open_reads

from .client import RedisCommands
from .wire import public_key

log = logging.getLogger(__name__)


class KeyframeLive:
    """``GET /game/state``'s body from the engine's newest keyframe (encoded once each),
    while that keyframe is fresh (``EdgeHub.stale``): past ``STALE_AFTER_S`` without one
    (Redis or the engine away) the state is no longer passed off as live."""

    def __init__(self, hub: EdgeHub) -> None:
        self.hub = hub
        self._seen: object = None
        self._body = b""

    def rest_body(self) -> bytes:
        why = self.hub.stale()
        state = self.hub.public_state()
        if why is not None or state is None:
            raise Problem(
                "engine_unavailable",
                why or "no state from the engine yet",
                headers={"Retry-After": "1"},
            )
        if state is not self._seen:
            self._seen = state
            self._body = json.dumps(state["rest"], separators=(",", ":")).encode()
        return self._body


async def public_chain(
    link: StreamLink, prefix: str, timeout: float = 60.0
) -> tuple[ChainFile, dict[str, Any] | None]:
    """The engine's public commitment (the chain without its secret) and the JWK Set
    of its signing keys."""
    with trio.fail_after(timeout):
        while True:
            try:
                raw = await link.get(public_key(prefix))
            except LinkError as exc:
                log.warning("api: Redis unavailable (%s); retrying", exc)
                raw = None
            if raw is not None:
                doc = json.loads(raw)
                spec = ChainSpec(
                    seed=b"",
                    length=int(doc["games"]),
                    encoding=ChainEncoding(doc["encoding"]),
                    interval=1,
                    checkpoints=(),
                    terminating_hash=bytes.fromhex(doc["terminating_hash"]),
                )
                keys = doc.get("signing_keys")
                return ChainFile(spec=spec, salt=doc.get("salt")), (
                    keys if isinstance(keys, dict) else None
                )
            await trio.sleep(0.2)


def reuse_port_listener(host: str, port: int, backlog: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(backlog)
    return sock


def hand_over(sock: socket.socket) -> str:
    """Hypercorn's bind for ``sock``: ``fd://N``, the descriptor given away. Hypercorn
    makes a socket object of its own on it and closes it when it stops; ``sock`` is
    detached first, or it would close N a second time when collected, by then another
    file's descriptor (a later server's database lock, on CI: its release failed with
    EBADF, its flock gone early)."""
    return f"fd://{sock.detach()}"


@dataclass(frozen=True)
class ApiInfo:
    server: ServerInfo
    services: Services
    commands: RedisCommands
    hub: EdgeHub


async def commanding_services(
    config: Config, link: StreamLink, nursery: trio.Nursery
) -> tuple[Services, RedisCommands, ReadOnlyLedger]:
    """Services whose money-moving calls go to the engine (an API process's, an edge's
    for feed orders), the command client's task started in ``nursery``."""
    chain, signing_keys = await public_chain(link, config.redis_prefix)
    services = await trio.to_thread.run_sync(open_services, config, chain)
    services.published_keys = signing_keys
    reads = await trio.to_thread.run_sync(open_reads, config.database)
    commands = RedisCommands(link, prefix=config.redis_prefix)
    services.reads = reads
    services.commands = commands
    services.feed_url = config.feed_url
    await nursery.start(commands.run)
    return services, commands, reads


async def remote_services(
    config: Config, link: StreamLink, nursery: trio.Nursery
) -> tuple[Services, RedisCommands, EdgeHub, ReadOnlyLedger]:
    """An API process's services, their tasks started in ``nursery``."""
    services, commands, reads = await commanding_services(config, link, nursery)
    hub = EdgeHub()
    services.live = KeyframeLive(hub)

    def on_epoch(epoch: str) -> None:
        log.info("api: the feed moved to epoch %s", epoch)

    await nursery.start(
        lambda task_status: follow_stream(
            link, hub, on_epoch, prefix=config.redis_prefix, task_status=task_status
        )
    )
    return services, commands, hub, reads


async def run_api(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    task_status: trio.TaskStatus[ApiInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the REST API without the engine until ``shutdown`` is set (or cancelled)."""
    if config.redis_url is None:
        raise ConfigError("an API process needs redis_url (the engine's commands go there)")
    shutdown = shutdown if shutdown is not None else trio.Event()
    async with open_link(config.redis_url) as link, trio.open_nursery() as nursery:
        services, commands, hub, reads = await remote_services(config, link, nursery)
        try:
            app = create_app(services)
            stop_http = trio.Event()

            hc = hypercorn_config(config)
            if config.tls_cert is None:
                # Several API processes may share one port (SO_REUSEPORT), as edges do.
                listener = reuse_port_listener(config.host, config.port, hc.backlog)
                hc.bind = [hand_over(listener)]

            async def serve_http(task_status: trio.TaskStatus[list[str]]) -> None:
                await hypercorn.trio.serve(
                    app, hc, shutdown_trigger=stop_http.wait, task_status=task_status
                )
                nursery.cancel_scope.cancel()

            binds: list[str] = await nursery.start(serve_http)
            info = _parse_bind(binds[0])
            log.info("crashd api listening on %s %s", info.url, describe(config))
            task_status.started(ApiInfo(info, services, commands, hub))
            await shutdown.wait()
            stop_http.set()
        finally:
            services.close()
            reads.close()


def run_api_blocking(config: Config, on_ready: Callable[[ApiInfo], Any] | None = None) -> None:
    """``crashd api``: until SIGINT/SIGTERM (then Hypercorn drains its requests)."""

    async def main() -> None:
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            info: ApiInfo = await nursery.start(partial(run_api, config, shutdown=shutdown))
            if on_ready is not None:
                on_ready(info)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    if shutdown.is_set():
                        nursery.cancel_scope.cancel()
                        return
                    shutdown.set()

    trio.run(main)

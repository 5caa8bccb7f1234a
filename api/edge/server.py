"""``crashd edge``: a feed server without the engine.

It authenticates clients as the engine's feed does (API keys and feed tokens, from the
same database), serves them with today's feed server and an ``EdgeHub`` kept in step
with the engine over a Unix socket (``relay_socket``) or Redis (``redis_url``), and
listens with ``SO_REUSEPORT``, so several edges on one machine share one port. Its
listener opens only once the hub holds the engine's state (a client is never served an
empty snapshot). ``GET /readyz`` on the feed port is its readiness probe: 503 while its
newest keyframe is older than ``STALE_AFTER_S`` (Redis or the engine away), when new
feed connections are refused with 503 too (connected clients stay, and are served
again once the stream is back). Orders sent on its connections go to the engine over Redis, as API
processes' commands do (``crashd.api.cluster``); with the Unix transport alone, orders
are refused (``engine_unavailable``: send them to the engine's feed or to REST).
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from crashd.api.config import Config, ConfigError, redact_url
from crashd.api.feed import FeedConfig, FeedServer
from crashd.api.feed.server import OrderHandler
from crashd.api.rest.routes.feed import feed_authenticator
from crashd.api.security.keys import Authenticator, KeyStore
from crashd.api.wire import FEED_PATH

from .engine import close_all
from .links import open_link
from .mirror import EdgeHub
from .streams import follow_stream
from .unix import follow_unix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EdgeInfo:
    host: str
    port: int
    url: str
    hub: EdgeHub
    feed: FeedServer


async def run_edge(
    config: Config,
    *,
    feed_config: FeedConfig | None = None,
    task_status: trio.TaskStatus[EdgeInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the feed as an edge until cancelled (see the module docstring)."""
    if config.relay_socket is None and config.redis_url is None:
        raise ConfigError("an edge needs relay_socket (this machine) or redis_url")
    keys = await trio.to_thread.run_sync(KeyStore, config.database)
    try:
        authenticator = Authenticator(keys, frozenset({config.environment}))
        hub = EdgeHub()
        feed_server: FeedServer | None = None

        def on_revoke(key_id: str) -> None:
            if feed_server is not None:
                closed = feed_server.disconnect_key(key_id)
                if closed:
                    log.warning("edge: key %s revoked (%d connections closed)", key_id, closed)

        def on_epoch(epoch: str) -> None:
            if feed_server is not None:
                closed = close_all(feed_server)
                log.warning(
                    "edge: the feed moved to epoch %s (%d connections closed)", epoch, closed
                )

        async with contextlib.AsyncExitStack() as stack:
            link = None
            if config.redis_url is not None:
                # Before the nursery: coredis keeps its pool in a context variable.
                link = await stack.enter_async_context(open_link(config.redis_url))
            nursery = await stack.enter_async_context(trio.open_nursery())
            if config.relay_socket is not None:
                await nursery.start(
                    partial(follow_unix, config.relay_socket, hub, on_epoch, on_revoke=on_revoke)
                )
                source = f"unix:{config.relay_socket}"
            else:
                assert link is not None
                await nursery.start(
                    lambda task_status: follow_stream(
                        link,
                        hub,
                        on_epoch,
                        on_revoke=on_revoke,
                        prefix=config.redis_prefix,
                        task_status=task_status,
                    )
                )
                assert config.redis_url is not None
                source = redact_url(config.redis_url)
            desk: OrderHandler | None = None
            if link is not None:
                # Orders on this edge's connections go to the engine as commands.
                from crashd.api.cluster.apiproc import commanding_services
                from crashd.api.feed.orders import OrderDesk
                from crashd.api.security.signing import NonceCache

                services, _, reads = await commanding_services(config, link, nursery)
                stack.callback(services.close)
                stack.callback(reads.close)
                desk = OrderDesk(services, NonceCache(), config.signature_window_s)
            feed_server = FeedServer(
                hub,
                feed_authenticator(authenticator),
                feed_config or FeedConfig(reuse_port=True),
                desk,
                readiness=hub.stale,
            )
            port: int = await nursery.start(feed_server.serve, config.host, config.feed_port)
            host = f"[{config.host}]" if ":" in config.host else config.host
            url = f"ws://{host}:{port}{FEED_PATH}"
            log.info("edge: feed on %s, following %s (epoch %s)", url, source, hub.epoch)
            task_status.started(EdgeInfo(config.host, port, url, hub, feed_server))
    finally:
        keys.close()


def run_edge_blocking(config: Config, on_ready: Callable[[EdgeInfo], None] | None = None) -> None:
    """``crashd edge``: run until SIGINT/SIGTERM (the feed closes its connections with
    1001, so clients reconnect, to another edge, and resume)."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                info: EdgeInfo = await nursery.start(run_edge, config)
                if on_ready is not None:
                    on_ready(info)
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)

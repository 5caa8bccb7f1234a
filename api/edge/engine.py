"""The engine's outlets for its edges, as ``crashd serve`` configures them.

``relay_socket`` set: edges on this machine connect there (``unix``). ``redis_url`` set:
the feed goes into Redis too (``streams``). When Redis lost the stream (a restart) the
whole feed moves to a new epoch — the engine's own hub, its direct subscribers (closed
with 1001: they reconnect and resume, and get an ``epoch_changed`` snapshot) and the
Unix edges (reconnected to a new ``HELLO``) — so every edge and client agrees on it.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import trio

from crashd.api.config import Config, redact_url
from crashd.api.feed.hub import Hub
from crashd.api.feed.server import FeedServer
from crashd.api.feed.session import Dropped
from crashd.api.wire import CloseCode

from .links import open_link
from .relay import FeedRelay, LiveView
from .streams import StreamOutlet
from .unix import UnixRelayServer

log = logging.getLogger(__name__)

EPOCH_CLOSE_REASON = "the feed moved to a new epoch: reconnect and resume"


@dataclass
class RelayRuntime:
    relay: FeedRelay
    unix: UnixRelayServer | None
    stream: StreamOutlet | None


def close_all(feed_server: FeedServer, reason: str = EPOCH_CLOSE_REASON) -> int:
    """Close every feed connection with 1001 (they reconnect and resume)."""
    now = trio.current_time()
    conns = list(feed_server.connections)
    for conn in conns:
        conn.tell(now, Dropped(CloseCode.GOING_AWAY, reason))
    return len(conns)


def wanted(config: Config) -> bool:
    return config.relay_socket is not None or config.redis_url is not None


async def serve_relay(
    config: Config,
    hub: Hub,
    live: LiveView,
    feed_server: FeedServer,
    *,
    keep: dict[str, bytes] | None = None,
    task_status: trio.TaskStatus[RelayRuntime] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the configured outlets until cancelled; ``started()`` once edges can connect.
    ``keep``: other Redis keys to write with each new stream (the public commitment)."""
    relay = FeedRelay(hub, live, tick_s=1 / config.tick_hz)
    runtime = RelayRuntime(relay, None, None)

    def on_epoch(epoch: str) -> None:
        hub.epoch = epoch
        closed = close_all(feed_server)
        if runtime.unix is not None:
            runtime.unix.drop_all()
        log.warning("feed: new epoch %s (%d direct connections closed)", epoch, closed)

    async with contextlib.AsyncExitStack() as stack:
        # The link first: coredis keeps its pool in a context variable, which tasks see
        # only if their nursery was opened inside it.
        link = None
        if config.redis_url is not None:
            link = await stack.enter_async_context(open_link(config.redis_url))
        nursery = await stack.enter_async_context(trio.open_nursery())
        if config.relay_socket is not None:
            runtime.unix = UnixRelayServer(relay, config.relay_socket)
            await nursery.start(runtime.unix.serve)
            log.info("feed relay for local edges on %s", config.relay_socket)
        if link is not None and config.redis_url is not None:
            runtime.stream = StreamOutlet(
                relay, link, prefix=config.redis_prefix, on_epoch=on_epoch, keep=keep
            )
            await nursery.start(runtime.stream.run)
            log.info("feed relay into Redis at %s", redact_url(config.redis_url))
        nursery.start_soon(relay.run)
        task_status.started(runtime)
        await trio.sleep_forever()

"""What ``crashd serve`` runs for the cluster: the feed relay and the command desk.

With ``relay_socket`` and/or ``redis_url`` set, the engine feeds its edges
(``crashd.api.edge.engine``); with ``redis_url`` it also runs the command desk for API
processes and publishes its public commitment (terminating hash, salt) where they read
it — never the chain's secret.
"""

from __future__ import annotations

import json
import logging

import trio

from crashd.api.config import Config
from crashd.api.edge.engine import serve_relay
from crashd.api.edge.links import LinkError, StreamLink, open_link
from crashd.api.edge.relay import LiveView
from crashd.api.feed.hub import Hub
from crashd.api.feed.server import FeedServer
from crashd.api.services import Services
from crashd.engine.chainstore import ChainFile
from crashd.engine.ledger import Ledger

from .desk import CommandDesk
from .wire import public_key

log = logging.getLogger(__name__)


def wanted(config: Config) -> bool:
    return config.relay_socket is not None or config.redis_url is not None


def public_commitment(chain: ChainFile) -> dict[str, object]:
    spec = chain.spec
    return {
        "terminating_hash": spec.terminating_hash.hex(),
        "encoding": spec.encoding.value,
        "games": spec.games,
        "salt": chain.salt,
    }


async def publish_commitment(link: StreamLink, prefix: str, chain: ChainFile) -> None:
    doc = json.dumps(public_commitment(chain)).encode()
    while True:
        try:
            await link.set(public_key(prefix), doc)
            return
        except LinkError as exc:
            log.warning("cluster: Redis unavailable (%s); retrying", exc)
            await trio.sleep(0.2)


async def serve_cluster(
    config: Config,
    hub: Hub,
    live: LiveView,
    feed_server: FeedServer,
    services: Services,
    ledger: Ledger,
    *,
    task_status: trio.TaskStatus[CommandDesk | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the relay (and, with Redis, the desk) until cancelled."""
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_relay, config, hub, live, feed_server)
        if config.redis_url is None:
            task_status.started(None)
            return
        async with open_link(config.redis_url) as link:
            await publish_commitment(link, config.redis_prefix, services.chain)
            desk = CommandDesk(services, ledger, link, prefix=config.redis_prefix)
            async with trio.open_nursery() as inner:
                await inner.start(desk.run)
                task_status.started(desk)

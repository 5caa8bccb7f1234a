"""What ``crashd serve`` runs for the cluster: the feed relay and the command desk.

With ``relay_socket`` and/or ``redis_url`` set, the engine feeds its edges
(``crashd.api.edge.engine``); with ``redis_url`` it also runs the command desk for API
processes and publishes its public commitment (terminating hash, salt) where they read
it (with every new feed stream: a restarted Redis lost it) — never the chain's secret.
"""

from __future__ import annotations

import json
import logging
from functools import partial

import trio

from crashd.api.config import Config
from crashd.api.edge.engine import serve_relay
from crashd.api.edge.links import open_link
from crashd.api.edge.relay import LiveView
from crashd.api.feed.hub import Hub
from crashd.api.feed.server import FeedServer
from crashd.api.services import Services
from crashd.engine.chainstore import ChainFile
from crashd.engine.ledger import Ledger
from crashd.engine.settlement.documents import jwk

from .desk import CommandDesk
from .wire import public_key

log = logging.getLogger(__name__)


def wanted(config: Config) -> bool:
    return config.relay_socket is not None or config.redis_url is not None


def public_commitment(
    chain: ChainFile, signing_keys: dict[str, object] | None = None
) -> dict[str, object]:
    """What processes without the engine publish: the chain without its secret, and
    the JWK Set of the keys that sign transcripts, seals and receipts (docs/fairness.md)."""
    spec = chain.spec
    return {
        "terminating_hash": spec.terminating_hash.hex(),
        "encoding": spec.encoding.value,
        "games": spec.games,
        "salt": chain.salt,
        "signing_keys": signing_keys,
    }


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
    notary = services.notary
    keys = notary.signer.keys().values() if notary is not None else ()
    commitment = public_commitment(services.chain, {"keys": [jwk(raw) for raw in keys]})
    keep = {public_key(config.redis_prefix): json.dumps(commitment).encode()}
    async with trio.open_nursery() as nursery:
        runtime = await nursery.start(
            partial(serve_relay, config, hub, live, feed_server, keep=keep)
        )
        services.feed_relay = runtime.relay
        if config.redis_url is None:
            task_status.started(None)
            return
        async with open_link(config.redis_url) as link:
            desk = CommandDesk(services, ledger, link, prefix=config.redis_prefix)
            async with trio.open_nursery() as inner:
                await inner.start(desk.run)
                task_status.started(desk)

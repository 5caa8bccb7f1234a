"""The live WebSocket feed: ``serve_feed`` on a dedicated listener, fed by ``crashd.api.feed.hub``.

Protocol and close codes: docs/feed.md; one connection's rules are the sans-IO
``session.FeedSession``, which ``server`` drives. Integration::

    hub = Hub(snapshot=engine_state_for_channel)
    port = await nursery.start(serve_feed, hub, "127.0.0.1", 8001, authenticate)
    hub.publish("live_multiplier", {"type": "tick", ...})   # from the tick task
"""

from __future__ import annotations

from crashd.api.security.keys import Principal
from crashd.api.wire import FEED_PATH, SCOPE_BALANCE, SCOPE_GAME_STATE, CloseCode, user_channel

from .access import Authenticate
from .server import DEFAULT_FEED_PORT, FeedConfig, FeedServer, FeedStatistics, serve_feed

__all__ = [
    "Authenticate",
    "CloseCode",
    "DEFAULT_FEED_PORT",
    "FEED_PATH",
    "FeedConfig",
    "FeedServer",
    "FeedStatistics",
    "Principal",
    "SCOPE_BALANCE",
    "SCOPE_GAME_STATE",
    "serve_feed",
    "user_channel",
]

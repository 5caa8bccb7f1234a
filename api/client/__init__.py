"""The crashd Python SDK: ``RestClient`` for the REST API, ``FeedClient`` for the feed.

Both run under Trio. Guide with examples: docs/sdk.md. ::

    from crashd.api.client import RestClient, open_feed

    async with RestClient("http://127.0.0.1:8000", api_key, signing_secret=secret) as api:
        token = await api.feed_token()
        async with open_feed(token.ws_url, api_key=api_key,
                             channels=["round_updates", "live_multiplier"]) as feed:
            async for msg in feed.messages():
                ...
"""

from __future__ import annotations

from .backoff import Backoff
from .feed import FATAL_CLOSE_CODES, ClientStatistics, FeedClient, OrderResult, open_feed
from .messages import (
    EPOCH_CHANGED,
    RESUME_GAP,
    RESYNC,
    SUBSCRIBE,
    ChannelMessage,
    FeedError,
    FeedUnavailable,
    Snapshot,
    StreamMessage,
)
from .rest import (
    Balance,
    BatchResult,
    Bet,
    Cashout,
    Fairness,
    FeedToken,
    GameState,
    Hold,
    ProblemError,
    RestClient,
    RetryPolicy,
    Round,
    Ticket,
    new_idempotency_key,
)
from .stream import ResumePoint, StreamCursor

__all__ = [
    "Backoff",
    "Balance",
    "BatchResult",
    "Bet",
    "Cashout",
    "ChannelMessage",
    "ClientStatistics",
    "EPOCH_CHANGED",
    "FATAL_CLOSE_CODES",
    "Fairness",
    "FeedClient",
    "FeedError",
    "FeedToken",
    "FeedUnavailable",
    "GameState",
    "Hold",
    "OrderResult",
    "ProblemError",
    "RESUME_GAP",
    "RESYNC",
    "RestClient",
    "ResumePoint",
    "RetryPolicy",
    "Round",
    "SUBSCRIBE",
    "Snapshot",
    "StreamCursor",
    "StreamMessage",
    "Ticket",
    "new_idempotency_key",
    "open_feed",
]

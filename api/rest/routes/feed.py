"""The REST side of the live feed: feed tokens for browsers, and the feed's authenticator.

The feed itself listens on its own port (see docs/feed.md: the framework's per-message
path costs 7-10x the CPU per delivered message). This module connects it to the API
keys: ``feed_authenticator`` turns a presented credential — an API key in the upgrade
request's ``Authorization`` header, or a feed token sent as the first message — into the
feed's principal. The feed awaits it in the connection's own task: it answers from the
key cache on the event loop and reads the key store (SQLite) in a thread, so a slow
database delays that one handshake and nothing else.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

from quart import Blueprint, Response

from crashd.api.feed.access import ConnectRateLimited
from crashd.api.rest.contract import documented, json_body, json_response
from crashd.api.rest.validation import Boolean, Integer, String
from crashd.api.security import feedtokens
from crashd.api.security.auth import requires_scope
from crashd.api.security.guard import signed
from crashd.api.security.keys import Authenticator, Principal
from crashd.api.security.ratelimit import Policy, RateLimiter
from crashd.api.services import current_services
from crashd.api.wire import API_PREFIX

from .bets import USER_ID

feed = Blueprint("feed", __name__, url_prefix=API_PREFIX)

log = logging.getLogger(__name__)

TOKEN_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["token", "expires_at", "expires_in_s", "ws_url"],
    "properties": {
        "token": {"type": "string", "description": 'send as {"type": "auth", "token": …}'},
        "expires_at": {"type": "integer", "description": "Unix seconds"},
        "expires_in_s": {"type": "integer"},
        "ws_url": {"type": "string", "description": "where the feed listens"},
        "scopes": {"type": "array", "items": {"type": "string"}},
    },
}


@feed.post("/feed/token")
@documented(
    "A short-lived feed token for a browser (never give it your API key)",
    response=TOKEN_SCHEMA,
    tags=("feed",),
)
@requires_scope("read:game_state")
async def feed_token(*, principal: Principal) -> Response:
    services = current_services()
    expires = int(time.time()) + feedtokens.DEFAULT_TTL_S
    # A browser needs no write scope on the feed: the token carries read scopes only.
    scopes = frozenset(s for s in principal.scopes if s.startswith("read:"))
    token = services.authenticator.issue_token(
        feedtokens.FeedClaims(
            principal.key_id, principal.partner_id, principal.environment, scopes, expires
        )
    )
    return json_response(
        {
            "token": token,
            "expires_at": expires,
            "expires_in_s": feedtokens.DEFAULT_TTL_S,
            "ws_url": services.feed_url or "",
            "scopes": sorted(scopes),
        },
        headers={"Cache-Control": "no-store"},
    )


USER_TOKEN_SCOPES = frozenset({"read:game_state", "read:balance", "write:bet"})
MAX_USER_TOKEN_TTL_S = 3600


@dataclass(frozen=True)
class UserTokenBody:
    user_id: Annotated[
        str, String(min_length=1, max_length=64, pattern=USER_ID, description="your user")
    ]
    ttl_s: Annotated[
        int,
        Integer(minimum=30, maximum=MAX_USER_TOKEN_TTL_S, description="lifetime, seconds"),
    ] = feedtokens.DEFAULT_TTL_S
    read_only: Annotated[
        bool, Boolean(description="true: no write:bet (the page can watch, not bet)")
    ] = False


@feed.post("/feed/user-token")
@documented(
    "A short-lived feed token for one of your users' browsers: it reads that user's "
    "channel and (with write:bet) bets and cashes out for that user only, over the feed",
    response=TOKEN_SCHEMA,
    tags=("feed",),
)
@requires_scope("read:balance")
@signed
@json_body(UserTokenBody)
async def user_token(*, principal: Principal, body: UserTokenBody) -> Response:
    services = current_services()
    expires = int(time.time()) + body.ttl_s
    scopes = principal.scopes & USER_TOKEN_SCOPES
    if body.read_only:
        scopes -= {"write:bet"}
    token = services.authenticator.issue_token(
        feedtokens.FeedClaims(
            principal.key_id,
            principal.partner_id,
            principal.environment,
            scopes,
            expires,
            user_id=body.user_id,
        )
    )
    return json_response(
        {
            "token": token,
            "expires_at": expires,
            "expires_in_s": body.ttl_s,
            "ws_url": services.feed_url or "",
            "scopes": sorted(scopes),
            "user_id": body.user_id,
        },
        headers={"Cache-Control": "no-store"},
    )


FEED_CONNECTS = Policy("feed_connect", 60, 60.0)
"""Connections per minute one API key may open to the feed directly (a partner's server
reconnecting; browsers connect with feed tokens, which ``rate_limit_feed`` bounds when
they are issued, so they are not counted here)."""


def feed_authenticator(
    authenticator: Authenticator, connects: Policy = FEED_CONNECTS
) -> Callable[[str], Awaitable[Principal | None]]:
    """The feed's ``Authenticate``: API keys (counted against ``connects`` per key; over
    it, ``ConnectRateLimited``) and feed tokens (whose issuing key must still be active)."""
    limiter = RateLimiter(max_keys=10_000)  # full buckets are swept when it fills

    async def authenticate(credential: str) -> Principal | None:
        if credential.startswith(feedtokens.PREFIX):
            return await authenticator.authenticate_token(credential)
        # The REST path's own lookup: the cache on the loop (its validity check reads
        # the one-row revocation counter, as every REST request does), a miss and the
        # last-used stamp in a worker thread.
        principal = await authenticator.authenticate(credential)
        if principal is None:
            return None
        if not limiter.check(principal.key_id, connects, time.monotonic()).allowed:
            log.info("feed connect refused: rate limited key_id=%s", principal.key_id)
            raise ConnectRateLimited(principal.key_id)
        return principal

    return authenticate

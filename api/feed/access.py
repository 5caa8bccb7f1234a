"""Who is on the other end of a feed connection, and which channels they may read.

The feed does not know how credentials are stored: the REST side (API keys, short-lived
feed tokens) hands ``serve_feed`` an ``Authenticate`` callable. The feed only applies
the channel rules below, which are part of the protocol (docs/feed.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .hub import LIVE_MULTIPLIER, ROUND_UPDATES

SCOPE_GAME_STATE = "read:game_state"
"""Needed to open a feed connection at all (public channels)."""

SCOPE_BALANCE = "read:balance"
"""Needed for per-user channels: bets, cashouts and balances are a user's private data."""

PUBLIC_CHANNELS = (LIVE_MULTIPLIER, ROUND_UPDATES)
USER_PREFIX = "user:"
MAX_CHANNEL_NAME = 200


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated partner credential (API key or feed token)."""

    partner_id: str
    environment: str
    """``sandbox`` or ``production``."""
    scopes: frozenset[str] = field(default_factory=frozenset)


class ConnectRateLimited(Exception):
    """Raised by an ``Authenticate`` callable for a valid credential that is opening
    connections too fast: the connection is closed with 1013 (try again later), which a
    client treats as a reason to back off, not as a bad credential."""


Authenticate = Callable[[str], "Principal | None"]
"""``authenticate(credential)`` -> the principal, or ``None`` when it is not valid.

Called once per connection, synchronously on the feed's event loop, so it must be
quick (a dict or cache lookup); it must not block on I/O.
"""


def user_channel(partner_id: str, user_id: str) -> str:
    """The per-user channel name: ``user:{partner_id}:{user_id}``."""
    return f"{USER_PREFIX}{partner_id}:{user_id}"


def channel_denial(principal: Principal, channel: str) -> tuple[str, str] | None:
    """``None`` if ``principal`` may subscribe to ``channel``, else ``(code, message)``."""
    if channel in PUBLIC_CHANNELS:
        return None
    if len(channel) <= MAX_CHANNEL_NAME and channel.startswith(USER_PREFIX):
        parts = channel.split(":", 2)
        if len(parts) == 3 and parts[1] and parts[2]:
            if parts[1] != principal.partner_id:
                return ("forbidden_channel", f"{channel!r} belongs to another partner")
            if SCOPE_BALANCE not in principal.scopes:
                return ("forbidden_channel", f"{channel!r} needs the {SCOPE_BALANCE!r} scope")
            return None
    return (
        "unknown_channel",
        f"unknown channel {channel[:64]!r}: use live_multiplier, round_updates or "
        "user:{partner_id}:{user_id}",
    )

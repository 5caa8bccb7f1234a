"""Who is on the other end of a feed connection, and which channels they may read.

The feed does not know how credentials are stored: the REST side (API keys, short-lived
feed tokens) hands ``serve_feed`` an ``Authenticate`` callable. The feed only applies
the channel rules below, which are part of the protocol (docs/feed.md).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from crashd.api.security.keys import Principal
from crashd.api.wire import PUBLIC_CHANNELS, SCOPE_BALANCE, parse_user_channel


class ConnectRateLimited(Exception):
    """Raised by an ``Authenticate`` callable for a valid credential that is opening
    connections too fast: the connection is closed with 1013 (try again later), which a
    client treats as a reason to back off, not as a bad credential."""


Authenticate = Callable[[str], Awaitable[Principal | None] | Principal | None]
"""``authenticate(credential)`` -> the principal, or ``None`` when it is not valid.

Called once per connection and awaited by the connection's own task: an ``async``
function may look credentials up in a database (in a thread, never on the event loop:
``trio.to_thread.run_sync``) while every other connection carries on. A plain function
is accepted for a lookup that cannot block (an in-memory table such as ``dict.get``).
It may raise ``ConnectRateLimited``.
"""


def channel_denial(principal: Principal, channel: str) -> tuple[str, str] | None:
    """``None`` if ``principal`` may subscribe to ``channel``, else ``(code, message)``."""
    if channel in PUBLIC_CHANNELS:
        return None
    user = parse_user_channel(channel)
    if user is not None:
        if user[0] != principal.partner_id:
            return ("forbidden_channel", f"{channel!r} belongs to another partner")
        if principal.user_id is not None and user[1] != principal.user_id:
            return ("forbidden_channel", f"{channel!r} is another user's: this token is one user's")
        if SCOPE_BALANCE not in principal.scopes:
            return ("forbidden_channel", f"{channel!r} needs the {SCOPE_BALANCE!r} scope")
        return None
    return (
        "unknown_channel",
        f"unknown channel {channel[:64]!r}: use live_multiplier, round_updates or "
        "user:{partner_id}:{user_id}",
    )

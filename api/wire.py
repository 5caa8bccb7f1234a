"""What the server and its clients share on the wire, declared once.

The SDK (``crashd.api.client``) may import this module and the signing scheme and
nothing else of the server, so the two cannot drift: the API prefix, header names,
scopes, the feed's path, channel names and close codes all live here. (Refusal codes
are the engine's catalogue, ``crashd.engine.reasons``, plus the API's own in
``crashd.api.rest.problems``.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import IntEnum

API_PREFIX = "/api/v1"
"""Every REST route lives under it."""
FEED_PATH = f"{API_PREFIX}/ws"
"""The WebSocket feed's path (on the feed listener's port)."""
READY_PATH = "/readyz"
"""The readiness probe: the REST app's, and a feed edge's on its feed port."""
WEBHOOK_PATH = f"{API_PREFIX}/psp/webhook"
FEED_TOKEN_PATH = f"{API_PREFIX}/feed/token"


def iso_ms(epoch_ms: int | None) -> str | None:
    """A Unix-epoch millisecond instant as the API writes times: ISO 8601, UTC, ``Z``,
    millisecond precision (``2026-12-01T09:50:00.123Z``)."""
    if epoch_ms is None:
        return None
    return (
        datetime.fromtimestamp(epoch_ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


MAX_BATCH = 100
"""Items in one ``POST /api/v1/bets/batch``."""


# -- headers --------------------------------------------------------------------------

AUTHORIZATION_HEADER = "Authorization"
IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
REQUEST_ID_HEADER = "X-Request-ID"
TIMESTAMP_HEADER = "X-Crashd-Timestamp"
NONCE_HEADER = "X-Crashd-Nonce"
SIGNATURE_HEADER = "X-Crashd-Signature"
PSP_SIGNATURE_HEADER = "Crashd-PSP-Signature"

# -- scopes ---------------------------------------------------------------------------

SCOPE_GAME_STATE = "read:game_state"
"""The live game and finished rounds; needed to open a feed connection at all."""
SCOPE_BALANCE = "read:balance"
"""Balances of the partner's users; needed for per-user feed channels."""
SCOPE_BET = "write:bet"
"""Place and cash out bets (and, on a sandbox server, fund users from the faucet)."""
SCOPE_WALLET = "manage:wallet"
"""Seamless partners: resolve the wallet transactions parked in the failed queue."""
SCOPE_ADMIN_METRICS = "admin:metrics"
"""Scrape ``GET /metrics`` (give Prometheus a key with this scope alone)."""
SCOPE_ADMIN_READ = "admin:read"
"""The operator's view: ``/api/v1/admin/…`` reads (state, limits, audit log, keys, RTP)
and the operator's page."""
SCOPE_ADMIN_CONTROL = "admin:control"
"""Steer the game: limits, pause, resume, void, chain rotation, key revocation."""
SCOPE_ADMIN_BANKROLL = "admin:bankroll"
"""Move the house's money: bankroll deposits and withdrawals."""
ADMIN_SCOPES: tuple[str, ...] = (
    SCOPE_ADMIN_METRICS,
    SCOPE_ADMIN_READ,
    SCOPE_ADMIN_CONTROL,
    SCOPE_ADMIN_BANKROLL,
)
SCOPES: tuple[str, ...] = (
    SCOPE_GAME_STATE,
    SCOPE_BALANCE,
    SCOPE_BET,
    SCOPE_WALLET,
    *ADMIN_SCOPES,
)
"""Every scope, in canonical order."""

# -- feed channels --------------------------------------------------------------------

LIVE_MULTIPLIER = "live_multiplier"
"""Ticks of the running round (conflated for slow readers)."""
ROUND_UPDATES = "round_updates"
"""Phase changes, the crash with its revealed hash, settled cashouts (ordered)."""
PUBLIC_CHANNELS: tuple[str, ...] = (LIVE_MULTIPLIER, ROUND_UPDATES)
USER_PREFIX = "user:"
MAX_CHANNEL_NAME = 200


def user_channel(partner_id: str, user_id: str) -> str:
    """The per-user channel name: ``user:{partner_id}:{user_id}``."""
    return f"{USER_PREFIX}{partner_id}:{user_id}"


def parse_user_channel(channel: str) -> tuple[str, str] | None:
    """``(partner_id, user_id)`` of a well-formed user channel name, else ``None``."""
    if len(channel) > MAX_CHANNEL_NAME or not channel.startswith(USER_PREFIX):
        return None
    parts = channel.split(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class CloseCode(IntEnum):
    """Close codes the feed sends. 1xxx are RFC 6455's; 4xxx are the feed's own."""

    NORMAL = 1000
    """The client closed, or asked to."""
    GOING_AWAY = 1001
    """The server is shutting down; reconnect (with ``resume``) after a short delay."""
    PROTOCOL_ERROR = 1002
    """The bytes were not valid WebSocket framing (garbage, unmasked client frame…)."""
    INVALID_PAYLOAD = 1007
    """A text frame was not valid UTF-8."""
    MESSAGE_TOO_BIG = 1009
    """A client message exceeded ``max_message_bytes``."""
    TRY_AGAIN_LATER = 1013
    """The server is at its connection limit."""
    INVALID_MESSAGES = 4000
    """Too many malformed or unknown messages (each one was answered with an ``error``)."""
    UNAUTHORIZED = 4001
    """Missing, wrong or expired credential, or no ``auth`` within the auth timeout."""
    FORBIDDEN = 4003
    """The credential lacks the ``read:game_state`` scope."""
    HEARTBEAT_TIMEOUT = 4008
    """No ``ack`` for the server's heartbeats within the heartbeat timeout."""
    SLOW_CONSUMER = 4009
    """The client read too slowly: its outbox overflowed repeatedly (see docs/feed.md)."""
    RATE_LIMITED = 4029
    """The client kept sending faster than the control-message rate limit."""

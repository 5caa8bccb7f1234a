"""Short-lived feed tokens: what a browser sends to the WebSocket feed instead of a key.

A browser cannot set headers on a WebSocket, and an API key must never reach one. The
partner's server asks ``POST /api/v1/feed/token`` for a token (its key stays on the
server) and hands the token to the browser, which sends it as the feed's first message.

Stateless and pure (``now`` is an argument)::

    ft_<base64url(JSON claims)>.<base64url(HMAC-SHA256(secret, claims))>

claims: ``k`` key id, ``p`` partner, ``e`` environment, ``s`` scopes, ``x`` expiry (Unix
seconds), and ``u`` the user, for a token minted for one of the partner's users (it may
then carry ``write:bet``: that user's browser bets and cashes out for that user only).
The secret is derived from the server's key pepper, so tokens die with it.
Revoking the key that issued a token also invalidates the token (the feed's
authenticator checks the key is still active).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

PREFIX = "ft_"
DEFAULT_TTL_S = 300
MAX_TOKEN = 2048
SECRET_LABEL = "feed-token"
"""The label the token secret is derived under (``KeyStore.derive_secret``)."""


@dataclass(frozen=True)
class FeedClaims:
    key_id: str
    partner_id: str
    environment: str
    scopes: frozenset[str]
    expires_at: int
    user_id: str | None = None
    """The one user a user-scoped token acts for (``None``: the whole partner, read only)."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue(secret: bytes, claims: FeedClaims) -> str:
    doc: dict[str, object] = {
        "k": claims.key_id,
        "p": claims.partner_id,
        "e": claims.environment,
        "s": sorted(claims.scopes),
        "x": claims.expires_at,
    }
    if claims.user_id is not None:
        doc["u"] = claims.user_id
    body = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(secret, body, hashlib.sha256).digest()
    return f"{PREFIX}{_b64(body)}.{_b64(mac)}"


def verify(secret: bytes, token: str, now: float, grace_s: float = 0) -> FeedClaims | None:
    """The token's claims if it is authentic and unexpired (or expired less than
    ``grace_s`` ago: renewing a session), else ``None``."""
    if not token.startswith(PREFIX) or len(token) > MAX_TOKEN:
        return None
    body_b64, dot, mac_b64 = token[len(PREFIX) :].partition(".")
    if not dot:
        return None
    try:
        body, mac = _unb64(body_b64), _unb64(mac_b64)
    except (ValueError, TypeError):
        return None
    if not hmac.compare_digest(hmac.new(secret, body, hashlib.sha256).digest(), mac):
        return None
    try:
        doc = json.loads(body)
        claims = FeedClaims(
            str(doc["k"]),
            str(doc["p"]),
            str(doc["e"]),
            frozenset(str(s) for s in doc["s"]),
            int(doc["x"]),
            None if doc.get("u") is None else str(doc["u"]),
        )
    except (ValueError, KeyError, TypeError):
        return None
    if claims.expires_at + grace_s <= now:
        return None
    return claims

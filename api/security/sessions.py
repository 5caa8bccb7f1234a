"""Public sessions: tokens the server hands to anonymous browsers, under its own keys.

A page served to the public needs a credential before any partner is involved: to watch
the game (a *viewer*: ``read:game_state`` only), and, on a sandbox server, to play with
demo money (a *demo player*: a fresh user of the demo partner, funded from the faucet,
with a user-scoped token that reads that user's balance and bets and bets over the feed).
Both are ordinary feed tokens (:mod:`crashd.api.security.feedtokens`) issued under a
*house key*: an API key the server creates for itself on first start, labelled
``crashd:…`` (``crashd keys list`` shows them). Its secret is discarded: the server
only issues tokens under it. Revoking a house key turns its sessions off for good
(tokens already issued die with it); ``rate_limit_sessions = 0`` turns both off.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crashd.api.wire import SCOPE_BALANCE, SCOPE_BET, SCOPE_GAME_STATE

from .keys import KeyStore

VIEWER_LABEL = "crashd:public-viewer"
VIEWER_PARTNER = "crashd-public"
VIEWER_SCOPES: tuple[str, ...] = (SCOPE_GAME_STATE,)
DEMO_LABEL = "crashd:sandbox-demo"
DEMO_PARTNER = "crashd-demo"
DEMO_SCOPES: tuple[str, ...] = (SCOPE_GAME_STATE, SCOPE_BALANCE, SCOPE_BET)
SESSION_TTL_S = 3600
"""Lifetime of a public session's token; the page renews it before then."""
RENEW_GRACE_S = 24 * 3600
"""A demo token expired less than this long ago still renews its session (same user,
same balance): a laptop woken the next morning keeps its demo account."""
DEMO_GRANT = 1_000_00
"""Demo money a new demo player starts with (and is topped up to, when renewing a
session that can no longer afford the minimum stake), minor units."""
DEMO_USER_PREFIX = "demo-"
WALLET_LABEL_PREFIX = "crashd:wallet-session:"
"""Label prefix of a seamless partner's house key (``crashd:wallet-session:<partner>``):
its players' launch sessions (``POST /api/v1/wallet/session``) are issued under it, so
revoking it turns that partner's launch sessions off."""
WALLET_SCOPES: tuple[str, ...] = (SCOPE_GAME_STATE, SCOPE_BALANCE, SCOPE_BET)


@dataclass(frozen=True)
class HouseKeys:
    viewer: str | None
    """The key public viewer tokens are issued under; ``None`` once revoked."""
    demo: str | None
    """The key demo sessions are issued under (sandbox servers only)."""


def open_wallet_house_keys(
    store: KeyStore, environment: str, partners: Iterable[str]
) -> dict[str, str | None]:
    """Each seamless partner's launch-session house key (created on first start)."""
    return {
        partner: store.house_key(WALLET_LABEL_PREFIX + partner, environment, partner, WALLET_SCOPES)
        for partner in partners
    }


def open_house_keys(store: KeyStore, environment: str) -> HouseKeys:
    """Find (or create, on first start) the server's house keys. Blocking."""
    viewer = store.house_key(VIEWER_LABEL, environment, VIEWER_PARTNER, VIEWER_SCOPES)
    demo = (
        store.house_key(DEMO_LABEL, environment, DEMO_PARTNER, DEMO_SCOPES)
        if environment == "sandbox"
        else None
    )
    return HouseKeys(viewer=viewer, demo=demo)

"""What the app needs from the running process, built once by :mod:`crashd.api.server`.

Routes reach it with :func:`current_services`. The app never opens files or starts
tasks itself; the server owns every resource's lifetime (open here, close in
:meth:`Services.close`), so tests can build the same object the real server uses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from quart import current_app

from crashd.engine.chainstore import ChainFile
from crashd.engine.game import Game

from .config import Config
from .ops.metrics import Metrics
from .rest.idempotency import Idempotency
from .rest.problems import Problem
from .security.keys import Authenticator, KeyStore
from .security.sessions import HouseKeys, open_house_keys, open_wallet_house_keys
from .wallet.partners import PartnerConfig, load_partners

SERVICES_EXTENSION = "crashd.services"

if TYPE_CHECKING:
    from crashd.engine.ledger.reads import LedgerReads
    from crashd.engine.notary import Notary
    from crashd.engine.wallet.seamless import Seamless

    from .edge.relay import FeedRelay
    from .feed.hub import Hub
    from .feed.server import FeedServer
    from .live import LiveState
    from .ops.chains import ChainRegistry
    from .ops.runtime import Ops
    from .rest.commands import CommandSink


class LiveBody(Protocol):
    """``GET /game/state``'s body, built once per engine change (``LiveState``, or in a
    process without the engine the engine's keyframes: ``crashd.api.cluster``)."""

    def rest_body(self) -> bytes: ...


@dataclass
class GameRuntime:
    game: Game
    epoch_offset_ms: int
    """Wall-clock ms (Unix epoch) of engine instant 0."""
    live: LiveState
    """The public live state, built once per engine change (``GET /game/state``)."""

    def epoch_ms(self, engine_ms: int) -> int:
        return self.epoch_offset_ms + engine_ms


@dataclass
class Services:
    config: Config
    keys: KeyStore
    authenticator: Authenticator
    idempotency: Idempotency
    chain: ChainFile
    """The operator's chain, including its secret seed: the engine needs it; routes may
    publish only ``spec.terminating_hash``, ``spec.encoding``, ``spec.games`` and
    ``salt``."""
    house: HouseKeys
    """The server's own keys, for public viewer and demo sessions."""
    started_monotonic: float = field(default_factory=time.monotonic)
    feed_url: str | None = None
    """Where the WebSocket feed listens (``ws://host:port/api/v1/ws``), once it does."""
    game: GameRuntime | None = None
    """The running game (engine + ledger), set by the server once both are up."""
    notary: Notary | None = None
    """Verifiable settlement: the signing key, receipts, transcripts (set by the server)."""
    commands: CommandSink | None = None
    """In a process without the engine (``crashd api``, ``crashd edge``): where
    money-moving calls go (``crashd.api.rest.commands``)."""
    reads: LedgerReads | None = None
    """In a process without the engine: the ledger's reads."""
    live: LiveBody | None = None
    """In a process without the engine: the live round's public state."""
    wallet_partners: dict[str, PartnerConfig] = field(default_factory=dict)
    """The partners that play on their own wallet (``wallets_file``)."""
    wallet_keys: dict[str, str | None] = field(default_factory=dict)
    """Seamless partner → the house key its launch sessions are issued under."""
    wallets: Seamless | None = None
    """The seamless wallet's driver, set by the server when a partner plays seamless."""
    published_keys: dict[str, Any] | None = None
    """In a process without the engine: the engine's JWK Set of signing keys."""
    metrics: Metrics = field(default_factory=Metrics)
    """The instruments observed on hot paths (``crashd.api.ops.metrics``)."""
    rate_limited: dict[str, int] = field(default_factory=dict)
    """Requests refused with 429, by rate-limit policy."""
    hub: Hub | None = None
    feed_server: FeedServer | None = None
    feed_relay: FeedRelay | None = None
    """The engine's relay to its feed edges (``crashd.api.edge``), when it has edges."""
    feed_port: int | None = None
    started_trio: float = 0.0
    """``trio.current_time()`` when the game started (readiness measures from it)."""
    ops: Ops | None = None
    """The operator's side: limits, bankroll, round control, RTP (``crashd.api.ops``)."""
    chains: ChainRegistry | None = None
    """Every hash chain published, in order (``crashd.api.ops.chains``)."""

    def salt_for(self, round_id: int) -> str | None:
        """The public salt of the chain a round was played from."""
        if self.chains is not None:
            return self.chains.salt_for(round_id)
        return self.chain.salt

    def require_game(self) -> GameRuntime:
        if self.game is None:
            raise Problem("engine_unavailable", "the game engine is not running")
        return self.game

    def require_notary(self) -> Notary:
        if self.notary is None:
            raise Problem("engine_unavailable", "the game engine is not running")
        return self.notary

    def require_ledger(self) -> LedgerReads:
        """The ledger's reads, here or in a process without the engine."""
        if self.game is not None:
            return self.game.game.ledger
        if self.reads is not None:
            return self.reads
        raise Problem("engine_unavailable", "the game engine is not running")

    def close_key_connections(self, key_id: str) -> int:
        """A key was revoked: close the feed connections opened with it here (the count
        returned) and tell every edge to close theirs (``REVOKE``, on each transport)."""
        closed = self.feed_server.disconnect_key(key_id) if self.feed_server is not None else 0
        if self.feed_relay is not None:
            self.feed_relay.revoke(key_id)
        return closed

    def require_live(self) -> LiveBody:
        if self.game is not None:
            return self.game.live
        if self.live is not None:
            return self.live
        raise Problem("engine_unavailable", "the game engine is not running")

    def close(self) -> None:
        self.keys.close()


def open_services(config: Config, chain: ChainFile) -> Services:
    """Open the database-backed parts of the services (blocking: call from a thread or
    before the event loop)."""
    keys = KeyStore(config.database, config.pepper_file)
    idempotency = Idempotency(retention_ms=config.idempotency_retention_hours * 3600 * 1000)
    # One environment per server. Rounds are shared by every bet placed in them, and
    # max profit caps a whole round: demo bets in a production round could force real
    # players out early. So a sandbox server serves sandbox keys only, a production
    # server production keys only (run a second, sandbox crashd for integration tests).
    accepted = frozenset({config.environment})
    try:
        partners = load_partners(config)
        wallet_keys = open_wallet_house_keys(keys, config.environment, partners)
    except BaseException:
        keys.close()
        raise
    return Services(
        config=config,
        keys=keys,
        authenticator=Authenticator(keys, accepted),
        idempotency=idempotency,
        chain=chain,
        house=open_house_keys(keys, config.environment),
        metrics=Metrics(config.environment),
        wallet_partners=partners,
        wallet_keys=wallet_keys,
    )


def current_services() -> Services:
    services: Services = current_app.extensions[SERVICES_EXTENSION]
    return services

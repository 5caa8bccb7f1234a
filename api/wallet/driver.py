"""The seamless wallets in the server's nursery: one HTTP pool per partner's wallet,
the engine's ``Seamless`` driver around them, recovery before the first bet, and the
outbox for the life of the server (its pools close with it)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping

import trio

from crashd.api.config import Config
from crashd.engine.game import Game
from crashd.engine.wallet.breaker import Breaker
from crashd.engine.wallet.seamless import BalanceListener, PartnerWallet, Seamless
from crashd.engine.wallet.signing import make_signer

from .client import HttpWalletPort, wallet_client
from .partners import PartnerConfig

log = logging.getLogger(__name__)

COOLDOWN_CAP = 12
"""The breaker's cool-down doubles while a wallet keeps failing, up to this many times
``wallet_breaker_cooldown_s``."""


def partner_wallets(
    config: Config, partners: Mapping[str, PartnerConfig], ports: Mapping[str, HttpWalletPort]
) -> dict[str, PartnerWallet]:
    cooldown_ms = round(config.wallet_breaker_cooldown_s * 1000)
    return {
        p.partner_id: PartnerWallet(
            p.partner_id,
            p.currency,
            ports[p.partner_id],
            timeout_ms=p.timeout_ms,
            breaker=Breaker(
                threshold=config.wallet_breaker_failures,
                cooldown_ms=cooldown_ms,
                max_cooldown_ms=cooldown_ms * COOLDOWN_CAP,
            ),
            max_in_flight=config.wallet_max_in_flight,
        )
        for p in partners.values()
    }


async def run_wallets(
    config: Config,
    partners: Mapping[str, PartnerConfig],
    game: Game,
    on_balance: BalanceListener,
    *,
    task_status: trio.TaskStatus[Seamless] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Started (with the driver) once recovery has committed; runs until cancelled."""
    async with contextlib.AsyncExitStack() as stack:
        ports: dict[str, HttpWalletPort] = {}
        for p in partners.values():
            # Debits of concurrent bets and the outbox's calls share the pool.
            client = await stack.enter_async_context(wallet_client(config.wallet_max_in_flight * 4))
            ports[p.partner_id] = HttpWalletPort(
                client,
                p.url,
                make_signer(p.signer, p.secret),
                environment=config.environment,
                partner_id=p.partner_id,
            )
        seamless = Seamless(
            game,
            partner_wallets(config, partners, ports),
            environment=config.environment,
            horizon_ms=config.wallet_retry_horizon_hours * 3600 * 1000,
            log_retention_ms=config.wallet_log_retention_days * 24 * 3600 * 1000,
            on_balance=on_balance,
        )
        recovered = await seamless.recover()
        if partners:
            log.info("seamless wallets: %s; recovery: %s", ", ".join(sorted(partners)), recovered)
        async with trio.open_nursery() as nursery:
            await nursery.start(seamless.run)
            task_status.started(seamless)

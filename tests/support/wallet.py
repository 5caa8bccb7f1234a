"""A real mock wallet (``crashd wallet mock``'s) on 127.0.0.1 and a crashd configured to
play one partner on it, for the seamless-wallet tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from crashd.api.config import Config
from crashd.api.wallet.mock import MockBook, MockFaults, MockWallet
from crashd.engine.ledger.walletstore import OPEN_DEBITS

WALLET_SECRET = "mock-wallet-secret-0123456789abcdef"
PARTNER = "acme"
CURRENCY = "EUR"


@dataclass
class Mock:
    wallet: MockWallet
    url: str
    admin: httpx.AsyncClient

    async def fund(self, player: str, balance: int, **extra: Any) -> None:
        r = await self.admin.post(
            "/admin/players", json={"player_id": player, "balance": balance, **extra}
        )
        assert r.status_code == 200, r.text

    async def faults(self, **faults: Any) -> None:
        r = await self.admin.post("/admin/faults", json=faults)
        assert r.status_code == 200, r.text

    async def heal(self) -> None:
        await self.faults(
            error_rate=0,
            timeout_rate=0,
            drop_rate=0,
            duplicate_rate=0,
            insufficient_rate=0,
            outages=[],
            latency_ms=0,
            jitter_ms=0,
        )

    async def balances(self) -> dict[str, int]:
        r = await self.admin.get("/admin/players")
        return {p["player_id"]: p["balance"] for p in r.json()}

    async def transactions(self) -> list[dict[str, Any]]:
        return (await self.admin.get("/admin/transactions")).json()  # type: ignore[no-any-return]

    async def violations(self) -> list[dict[str, Any]]:
        return (await self.admin.get("/admin/violations")).json()  # type: ignore[no-any-return]


@asynccontextmanager
async def running_mock(directory: Path, seed: int = 0, **faults: Any) -> AsyncIterator[Mock]:
    book = MockBook(directory / "mock-wallet.sqlite3")
    mock_faults = MockFaults()
    mock_faults.update(faults)
    wallet = MockWallet(book, WALLET_SECRET, currency=CURRENCY, faults=mock_faults, seed=seed)
    try:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(wallet.serve, "127.0.0.1", 0)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=10) as admin:
                yield Mock(wallet, base + "/wallet", admin)
            nursery.cancel_scope.cancel()
    finally:
        book.close()


def write_wallets_file(directory: Path, url: str, partner: str = PARTNER, **extra: Any) -> Path:
    path = directory / "crashd-wallets.toml"
    lines = [
        f"[partners.{partner}]",
        f'url = "{url}"',
        f'secret = "{WALLET_SECRET}"',
        f'currency = "{CURRENCY}"',
    ]
    lines += [f"{k} = {v!r}" if isinstance(v, str) else f"{k} = {v}" for k, v in extra.items()]
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    os.chmod(path, 0o600)
    return path


def seamless(config: Config, url: str, **extra: Any) -> Config:
    """``config`` with its partner ``acme`` on the wallet at ``url``."""
    return config.with_overrides(
        wallets_file=write_wallets_file(config.chain_file.parent, url, **extra)
    )


def ledger_connection(config: Config) -> Any:
    """A connection to the server's database, safe while it runs."""
    from support.postgres import read_connection

    return read_connection(config.database)


@dataclass
class SeamlessGame:
    mock: Mock
    api: Any  # support.game.Api
    config: Config
    url: str

    def ledger(self) -> Any:
        """A connection to the server's database (safe while it runs)."""
        return ledger_connection(self.config)

    def crashd_txs(self) -> list[tuple[Any, ...]]:
        conn = self.ledger()
        try:
            return conn.execute(
                "SELECT tx_id, kind, state, amount, ref_tx_id, code FROM wallet_txs ORDER BY id"
            ).fetchall()
        finally:
            conn.close()

    def unclosed_debits(self) -> int:
        """Debits of rounds that are over still without their closing transaction.

        A round's losses are closed by an op the wallet queues after the round's
        settlement (docs/wallet.md: same commit group almost always), so the round can
        read as over a moment before its credits of 0 exist."""
        conn = self.ledger()
        try:
            row = conn.execute(
                f"SELECT count(*) FROM wallet_txs WHERE {OPEN_DEBITS} "
                "AND round_id IN (SELECT id FROM rounds WHERE state != 'open')"
            ).fetchone()
            return int(row[0])
        finally:
            conn.close()

    async def drained(self, timeout: float = 15.0) -> None:
        """Wait until the outbox has nothing pending and every debit of a finished round
        has its closing transaction."""
        with trio.fail_after(timeout):
            while any(t[2] == "pending" for t in self.crashd_txs()) or self.unclosed_debits():
                await trio.sleep(0.05)


@asynccontextmanager
async def seamless_game(
    directory: Path, mock_faults: dict[str, Any] | None = None, **settings: Any
) -> AsyncIterator[SeamlessGame]:
    """A mock wallet and a real crashd (short rounds) playing partner ``acme`` on it,
    with a signed client holding every scope of the partner's."""
    from support.game import Api, game_config
    from support.servers import make_key, running_server

    defaults: dict[str, Any] = dict(
        wallet_timeout_ms=400, wallet_breaker_failures=3, wallet_breaker_cooldown_s=0.5
    )
    defaults.update(settings)
    async with running_mock(directory, **(mock_faults or {})) as mock:
        config = seamless(game_config(directory, **defaults), mock.url)
        async with running_server(config) as info:
            _, secret = make_key(
                config, "read:game_state,read:balance,write:bet,manage:wallet", partner=PARTNER
            )
            async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
                yield SeamlessGame(mock, Api(client, secret), config, info.url)

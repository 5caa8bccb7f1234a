"""The seamless driver (crashd.engine.wallet.seamless) with its knobs within reach: a
real engine, a real SQLite ledger and the real mock wallet over HTTP, but a retry horizon
of a fraction of a second, so the outbox's give-up, the failed queue and its retry run
in a test's time. The server-level rules are tested in tests/rest/test_wallet.py and
the state machine in tests/system/test_wallet_machine.py."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio

from crashd.api.wallet.client import HttpWalletPort, wallet_client
from crashd.engine.driver import Engine
from crashd.engine.fairness import ChainReader, build_chain
from crashd.engine.game import Game, GameError, Player, ticket_for
from crashd.engine.ledger import open_ledger, walletstore
from crashd.engine.reasons import GAME_PAUSED, WALLET_TIMEOUT
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.tables import Phase
from crashd.engine.wallet.breaker import Breaker, BreakerState
from crashd.engine.wallet.contract import Outcome
from crashd.engine.wallet.retry import Backoff
from crashd.engine.wallet.seamless import PartnerWallet, Seamless
from crashd.engine.wallet.signing import HmacSha256Signer
from support.wallet import CURRENCY, PARTNER, WALLET_SECRET, running_mock

SPEC = build_chain(hashlib.sha256(b"seamless").digest(), length=100, interval=10)
ALICE = Player("sandbox", PARTNER, "alice")


async def test_a_credit_past_its_horizon_is_parked_then_retried(tmp_path: Path) -> None:
    async with (
        running_mock(tmp_path) as mock,
        open_ledger(tmp_path / "ledger.sqlite3", synchronous="NORMAL") as ledger,
        wallet_client(8) as client,
        trio.open_nursery() as nursery,
    ):
        await mock.fund("alice", 1000)
        engine = Engine(
            games=ChainReader(SPEC).games(1),
            salt="s",
            first_game=1,
            config=RoundConfig(betting_ms=200, pause_ms=100),
        )
        game = Game(engine, ledger)
        port = HttpWalletPort(
            client,
            mock.url,
            HmacSha256Signer(WALLET_SECRET),
            environment="sandbox",
            partner_id=PARTNER,
        )
        wallets = {
            PARTNER: PartnerWallet(
                PARTNER, CURRENCY, port, timeout_ms=300, breaker=Breaker(threshold=1000)
            )
        }
        seamless = Seamless(
            game,
            wallets,
            environment="sandbox",
            horizon_ms=400,
            backoff=Backoff(base_ms=20, cap_ms=60),
        )
        await seamless.recover()
        await nursery.start(game.run)
        await nursery.start(seamless.run)
        ticket = ticket_for("k/1")
        placed = await seamless.place("k/1", ALICE, 100, 101, ticket, "h_1")
        assert placed.round_id == 1 and not placed.queued
        await mock.faults(error_rate=1)  # the wallet fails every call from now on

        async def failed() -> list[walletstore.WalletTx]:
            return await ledger.read(
                walletstore.txs,
                walletstore.TxFilter("sandbox", PARTNER, state="failed"),
            )

        with trio.fail_after(20):
            while not await failed():
                await trio.sleep(0.05)
        [parked] = await failed()
        # Auto-cashed out at 1.01x: the credit of 101, tried until its horizon.
        assert parked.kind == "credit" and parked.amount == 101 and parked.attempts >= 2
        assert parked.code == "http_503"
        balance = await ledger.balance(environment="sandbox", partner_id=PARTNER, user_id="alice")
        assert balance.posted == 101  # owed to the wallet, held in crashd's ledger
        await mock.heal()
        await seamless.resolve(PARTNER, parked.tx_id, "retry", "wallet fixed")
        with trio.fail_after(20):
            while (await ledger.read(walletstore.load_tx, parked.tx_id)).state != "ok":  # type: ignore[union-attr]
                await trio.sleep(0.05)
        assert (await mock.balances())["alice"] == 1000 - 100 + 101
        balance = await ledger.balance(environment="sandbox", partner_id=PARTNER, user_id="alice")
        assert balance.posted == 0
        report = await ledger.audit()
        assert report.ok, report.problems
        engine.stop(void=True)
        nursery.cancel_scope.cancel()


async def test_a_paused_game_refuses_a_bet_before_the_wallet_is_debited(tmp_path: Path) -> None:
    """Past betting in a paused game a bet could only be rolled back: it is refused with
    ``game_paused`` and the wallet is never asked."""
    async with (
        running_mock(tmp_path) as mock,
        open_ledger(tmp_path / "ledger.sqlite3", synchronous="NORMAL") as ledger,
        wallet_client(8) as client,
        trio.open_nursery() as nursery,
    ):
        await mock.fund("alice", 1000)
        engine = Engine(
            games=ChainReader(SPEC).games(1),
            salt="s",
            first_game=1,
            config=RoundConfig(betting_ms=200, pause_ms=100),
        )
        game = Game(engine, ledger)
        port = HttpWalletPort(
            client,
            mock.url,
            HmacSha256Signer(WALLET_SECRET),
            environment="sandbox",
            partner_id=PARTNER,
        )
        wallets = {PARTNER: PartnerWallet(PARTNER, CURRENCY, port, timeout_ms=300)}
        seamless = Seamless(game, wallets, environment="sandbox")
        await seamless.recover()
        await nursery.start(game.run)
        await nursery.start(seamless.run)
        engine.pause()
        with trio.fail_after(20):
            while engine.sequencer.current.phase is Phase.BETTING:
                await trio.sleep(0.01)
        with pytest.raises(GameError) as refused:
            await seamless.place("k/2", ALICE, 100, None, ticket_for("k/2"), "h_2")
        assert refused.value.code == GAME_PAUSED
        assert await mock.transactions() == []
        assert await ledger.read(walletstore.txs, walletstore.TxFilter("sandbox", PARTNER)) == []
        assert (await mock.balances())["alice"] == 1000
        engine.stop(void=True)
        nursery.cancel_scope.cancel()


async def test_a_debit_cut_short_by_the_close_of_betting_is_no_wallet_failure(
    tmp_path: Path,
) -> None:
    """A slow wallet whose debit is still out when betting closes: the bet does not play
    (``wallet_timeout``) and is rolled back, but crashd's own deadline ran out, not the
    wallet's timeout, so the breaker (here tripping on the first failure) stays closed."""
    async with (
        running_mock(tmp_path, latency_ms=600) as mock,
        open_ledger(tmp_path / "ledger.sqlite3", synchronous="NORMAL") as ledger,
        wallet_client(8) as client,
        trio.open_nursery() as nursery,
    ):
        await mock.fund("alice", 1000)
        engine = Engine(
            games=ChainReader(SPEC).games(1),
            salt="s",
            first_game=1,
            config=RoundConfig(betting_ms=300, pause_ms=100),
        )
        game = Game(engine, ledger)
        port = HttpWalletPort(
            client,
            mock.url,
            HmacSha256Signer(WALLET_SECRET),
            environment="sandbox",
            partner_id=PARTNER,
        )
        breaker = Breaker(threshold=1)
        wallets = {
            PARTNER: PartnerWallet(PARTNER, CURRENCY, port, timeout_ms=5000, breaker=breaker)
        }
        seamless = Seamless(game, wallets, environment="sandbox")
        await seamless.recover()
        await nursery.start(game.run)
        await nursery.start(seamless.run)
        with trio.fail_after(20):
            while engine.sequencer.current.phase is not Phase.BETTING:
                await trio.sleep(0.01)
        with pytest.raises(GameError) as refused:
            await seamless.place("k/3", ALICE, 100, None, ticket_for("k/3"), "h_3")
        assert refused.value.code == WALLET_TIMEOUT
        assert breaker.state is BreakerState.CLOSED
        # The rollback goes out (the wallet answers within its timeout) and is final.
        [debit] = await ledger.read(
            walletstore.txs, walletstore.TxFilter("sandbox", PARTNER, kind="debit")
        )
        with trio.fail_after(20):
            while (await mock.balances())["alice"] != 1000 or any(
                t.state == "pending"
                for t in await ledger.read(
                    walletstore.txs, walletstore.TxFilter("sandbox", PARTNER)
                )
            ):
                await trio.sleep(0.05)
        assert debit.state == "cancelled"
        assert breaker.state is BreakerState.CLOSED
        assert await mock.violations() == []
        engine.stop(void=True)
        nursery.cancel_scope.cancel()


async def test_a_call_that_never_left_crashd_says_so_and_is_no_wallet_failure(
    tmp_path: Path,
) -> None:
    """The pool's one connection is held by a slow call past the next call's deadline:
    that call never reached the wallet — ``not_sent`` (the wallet has no record of it;
    one that was written and went unanswered is a ``timeout``) — and since it says
    nothing of the wallet, the breaker (tripping on the first failure) stays closed."""
    from crashd.engine.reasons import WALLET_UNAVAILABLE
    from crashd.engine.wallet import contract

    async with (
        running_mock(tmp_path, latency_ms=600) as mock,
        open_ledger(tmp_path / "ledger.sqlite3", synchronous="NORMAL") as ledger,
        wallet_client(1) as client,
        trio.open_nursery() as nursery,
    ):
        await mock.fund("alice", 1000)
        port = HttpWalletPort(
            client,
            mock.url,
            HmacSha256Signer(WALLET_SECRET),
            environment="sandbox",
            partner_id=PARTNER,
        )
        answers: dict[str, contract.Answer] = {}

        async def debit(tx_id: str, within_s: float) -> None:
            request = contract.debit(tx_id, "alice", CURRENCY, 100, 1, "t_" + tx_id[4:])
            answers[tx_id] = (await port.send(request, trio.current_time() + within_s)).answer

        async with trio.open_nursery() as calls:
            calls.start_soon(debit, "dbt_a1", 0.3)  # written, unanswered in time
            await trio.sleep(0.05)
            calls.start_soon(debit, "dbt_b2", 0.1)  # waits for the one connection
        assert (answers["dbt_a1"].outcome, answers["dbt_a1"].code) == (Outcome.UNKNOWN, "timeout")
        assert (answers["dbt_b2"].outcome, answers["dbt_b2"].code) == (
            Outcome.UNKNOWN,
            contract.NOT_SENT,
        )
        await trio.sleep(0.8)  # the mock answers (and records) what reached it
        seen = {t["tx_id"] for t in await mock.transactions()}
        assert "dbt_b2" not in seen

        # Through the driver: a balance read that never left crashd opens no breaker.
        engine = Engine(
            games=ChainReader(SPEC).games(1),
            salt="s",
            first_game=1,
            config=RoundConfig(betting_ms=300, pause_ms=100),
        )
        breaker = Breaker(threshold=1)
        wallets = {PARTNER: PartnerWallet(PARTNER, CURRENCY, port, timeout_ms=100, breaker=breaker)}
        seamless = Seamless(Game(engine, ledger), wallets, environment="sandbox")
        nursery.start_soon(debit, "dbt_c3", 5.0)  # holds the connection for 600 ms
        await trio.sleep(0.05)
        with pytest.raises(GameError) as refused:
            await seamless.balance(ALICE)
        assert refused.value.code == WALLET_UNAVAILABLE
        assert refused.value.extra["reason"] == contract.NOT_SENT
        assert breaker.state is BreakerState.CLOSED
        nursery.cancel_scope.cancel()

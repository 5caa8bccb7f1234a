"""The notary with a real engine and a real ledger (``MockClock``: rounds in simulated
time): every round the ledger settles has its transcript, written in the same
transaction (a failing transcript fails the settlement: nothing of it is durable), the
seal is kept when betting closes, and a round left open by a dead process gets its
transcript from start-up recovery; the whole chain audits clean."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crashd.engine.driver import Engine
from crashd.engine.fairness import ChainReader, build_chain, crash_point
from crashd.engine.game import Game, Player, ticket_for
from crashd.engine.ledger import open_ledger
from crashd.engine.ledger.model import Round
from crashd.engine.ledger.txn import Txn
from crashd.engine.notary import Notary
from crashd.engine.round.config import RoundConfig
from crashd.engine.settlement.audit import audit
from crashd.engine.settlement.documents import Pseudonyms, Signer

SPEC = build_chain(hashlib.sha256(b"notary").digest(), length=200, interval=20)
SALT = "notary-salt"
CONFIG = RoundConfig(betting_ms=1_000, pause_ms=500, max_profit=50_000, max_bets_per_user=5)
SIGNER = Signer(Ed25519PrivateKey.from_private_bytes(b"\x05" * 32))
USERS = [Player("sandbox", "acme", f"u{i}") for i in range(4)]


def notary() -> Notary:
    return Notary(
        SIGNER,
        Pseudonyms(b"\x06" * 32),
        environment="sandbox",
        salt=SALT,
        terminating_hash=SPEC.terminating_hash.hex(),
        chain_encoding="hex",
        config=CONFIG,
    )


class Broken(Notary):
    def rounds_settled(self, txn: Txn, rounds: list[Round], now: int) -> None:
        raise RuntimeError("the transcript cannot be written")


def reveal(round_id: int) -> tuple[int, str]:
    """As the server's chains do: start-up recovery reveals the game it burns."""
    game_hash = ChainReader(SPEC).game_hash(round_id)
    return crash_point(game_hash, SALT), game_hash


async def play(db: Path, n: Notary, rounds: int, *, die_running: bool = False) -> None:
    """Bets and cash-outs for ``rounds`` rounds; then a clean stop, or (``die_running``)
    an abrupt end while the next round runs, as a killed process leaves it."""
    async with open_ledger(db, synchronous="NORMAL", reveal=reveal, settlement=n) as ledger:
        first = (ledger.recovery.highest_round_id if ledger.recovery else 0) + 1
        engine = Engine(
            games=ChainReader(SPEC).games(first), salt=SALT, first_game=first, config=CONFIG
        )
        game = Game(engine, ledger)
        n.attach(engine, ledger, lambda: game.epoch_offset_ms)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(n.run)

            async def run_game(task_status: trio.TaskStatus[None]) -> None:
                # As the server does: the notary's seal channel closes with the game.
                try:
                    await game.run(task_status=task_status)
                finally:
                    n.close()

            await nursery.start(run_game)
            for i, p in enumerate(USERS):
                await ledger.faucet_credit(
                    f"fund-{first}-{i}", partner_id=p.partner_id, user_id=p.user_id, amount=10**6
                )
            k = 0
            while engine.next_game - first < rounds:
                state = engine.snapshot()
                if state.status != "betting":
                    await trio.sleep(0.05)
                    continue
                round_id = state.round_id
                tickets = []
                for i, p in enumerate(USERS):
                    k += 1
                    key = f"b-{first}-{k}"
                    placed = await game.place(
                        key, p, 100 * (i + 1), [None, 101, 150, 300][i], ticket_for(key), f"h-{key}"
                    )
                    tickets.append((p, placed.ticket_id))
                    if i == 0:
                        # Betting can close while the ledger commits a bet (the mock clock
                        # jumps while the writer's thread works): it is queued for the next.
                        round_id = placed.round_id
                while (s := engine.snapshot()).round_id < round_id or (
                    s.round_id == round_id and s.status == "betting"
                ):
                    await trio.sleep(0.01)
                if die_running and engine.next_game - first >= rounds - 1:
                    await trio.sleep(0.2)
                    await game.cash_out(*tickets[0])
                    nursery.cancel_scope.cancel()  # the process dies mid-round
                    return
                await trio.sleep(0.1)
                await game.cash_out(*tickets[0])
                while engine.snapshot().round_id == round_id:
                    await trio.sleep(0.05)
            engine.stop()


def transcripts(db: Path) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT document FROM round_transcripts ORDER BY round_id").fetchall()
        return [json.loads(r[0]) for r in rows]
    finally:
        conn.close()


def finished(db: Path) -> list[int]:
    conn = sqlite3.connect(db)
    try:
        q = "SELECT id FROM rounds WHERE settled_at IS NOT NULL ORDER BY id"
        return [r[0] for r in conn.execute(q)]
    finally:
        conn.close()


def run(fn: Any, *args: Any, **kwargs: Any) -> None:
    trio.run(lambda: fn(*args, **kwargs), clock=trio.testing.MockClock(autojump_threshold=0.001))


def test_every_settled_round_has_its_transcript_and_audits_clean(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    n = notary()
    run(play, db, n, 6)
    ts = transcripts(db)
    assert [t["round_id"] for t in ts] == finished(db) and len(ts) >= 6
    report = audit(ts, SIGNER.keys(), terminating_hash=SPEC.terminating_hash.hex())
    assert report.ok, report.findings
    assert report.rerun == len(ts)
    conn = sqlite3.connect(db)
    sealed = [r[0] for r in conn.execute("SELECT round_id FROM round_seals ORDER BY round_id")]
    conn.close()
    started = [t["round_id"] for t in ts if t["clock"]["started_at"] is not None]
    assert sealed == started
    assert all(t["seal"] is not None for t in ts if t["round_id"] in sealed)
    assert {e.get("cashout") for t in ts for e in t["settlement"]} >= {"manual", "auto"}


def test_a_round_left_running_is_recovered_with_its_transcript(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    run(play, db, notary(), 3, die_running=True)
    before = transcripts(db)
    run(play, db, notary(), 1)  # recovery voids the open round, then one more round
    ts = transcripts(db)
    recovered = [t for t in ts if t["source"] == "ledger"]
    assert len(recovered) == 1
    t = recovered[0]
    assert (t["status"], t["void"]) == (
        "voided",
        {"at": None, "reason": "recovery", "by": "recovery"},
    )
    assert t["seal"] is not None and t["prev"] is not None
    assert t["fairness"]["crash_point"] == crash_point(t["fairness"]["game_hash"], SALT)
    won = [e for e in t["settlement"] if e["outcome"] == "won"]
    assert won and all(e["at"] is None for e in won)  # the cash-out acknowledged stands
    assert ts[: len(before)] == before
    report = audit(ts, SIGNER.keys(), terminating_hash=SPEC.terminating_hash.hex())
    assert report.ok, report.findings
    assert report.rerun == len(ts) - 1


def test_a_transcript_that_cannot_be_written_fails_its_settlement(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    with pytest.raises(BaseException) as raised:
        run(play, db, Broken(**_args()), 2)
    assert "the transcript cannot be written" in _messages(raised.value)
    # The round whose settlement failed is not settled: nothing of that group is durable.
    assert finished(db) == []
    assert transcripts(db) == []


def _messages(exc: BaseException | None) -> str:
    """Every message in an exception, its groups and its causes."""
    if exc is None:
        return ""
    inner = getattr(exc, "exceptions", ())
    return " ".join(
        [repr(exc), *(_messages(e) for e in inner), _messages(exc.__cause__ or exc.__context__)]
    )


def _args() -> dict[str, Any]:
    return dict(
        signer=SIGNER,
        pseudonyms=Pseudonyms(b"\x06" * 32),
        environment="sandbox",
        salt=SALT,
        terminating_hash=SPEC.terminating_hash.hex(),
        chain_encoding="hex",
        config=CONFIG,
    )

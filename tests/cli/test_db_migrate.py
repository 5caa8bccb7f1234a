"""``crashd db migrate``: a SQLite database (ledger with rounds, bets, reversals, stored
replies, the audit log, seamless wallet transactions and calls, round seals and
transcripts; API keys) copied into an empty PostgreSQL database, checked there, served from
there; and every refusal. Real PostgreSQL (skipped with the reason where none)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from crashd.api import database as apidb
from crashd.api.cli.main import main
from crashd.api.security.keys import KeyStore
from crashd.engine.ledger import open_ledger
from crashd.engine.ledger.model import ReplySlot, Round, StoredReply
from crashd.engine.ledger.txn import Txn
from crashd.engine.ledger.wallet import REFUSED, WalletCall
from crashd.engine.ledger.walletops import WalletCallsLog, WalletDebitClose, WalletDebitOpen
from crashd.engine.wallet.contract import debit_id
from support.postgres import Backend

P = dict(environment="production", partner_id="acme")
HASH = "e" * 64
SEAL = ('{"seal":1}', '["leaf"]')


class Transcripts:
    """A settlement that writes a (made-up) transcript for every round a group settles,
    in its transaction, as the notary does (engine/notary.py)."""

    def rounds_settled(self, txn: Txn, rounds: list[Round], now: int) -> None:
        for r in rounds:
            last = txn.last_transcript()
            txn.add_transcript(r.id, f"{r.id:064x}", last and last[1], f'{{"round":{r.id}}}', now)


def wallet_call(kind: str, tx: str | None, outcome: str = "ok") -> WalletCall:
    return WalletCall(1, "sandbox", "seam", kind, "req", "{}", outcome, 3, tx_id=tx, user_id="zed")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def make_sqlite(path: Path) -> str:
    """A database with every kind of row; returns an API key's secret."""
    async with open_ledger(path, sweep_interval_s=None, settlement=Transcripts()) as ledger:
        await ledger.psp_deposit("d1", user_id="ann", amount=5_000, **P)
        await ledger.faucet_credit("f1", user_id="bob", amount=700, partner_id="acme")
        await ledger.psp_withdrawal("w1", user_id="ann", amount=1_200, **P)
        await ledger.psp_withdrawal_reversal("w1r", environment="production", withdrawal_id="w1")
        await ledger.round_start("s1", round_id=1)
        await ledger.seal_round(1, lambda: SEAL).wait()
        # A seamless partner's debit the wallet refused, and a logged balance call.
        tx = debit_id("tz1")
        await ledger.submit(
            WalletDebitOpen("wallet-o1", "sandbox", "seam", "zed", tx, "tz1", 1, 100, "EUR")
        )
        await ledger.submit(
            WalletDebitClose(
                "wallet-x1", tx, REFUSED, "insufficient_funds", 10**12, 5, "insufficient_funds", "",
                wallet_call("debit", tx, "refused"),
            )
        )  # fmt: skip
        await ledger.submit(WalletCallsLog("wallet-l1", (wallet_call("balance", None),)))
        await ledger.bet_reserve("r1", user_id="ann", hold_id="h1", amount=300, ttl_ms=60_000, **P)
        slot = ReplySlot(b"k" * 16, b"f" * 16, lambda s, a: StoredReply(200, "x/y", b"{}"))
        await ledger.bet_confirm(
            "c1", user_id="ann", hold_id="h1", ticket_id="t1", round_id=1, reply=slot, **P
        )
        await ledger.settle_win("w-t1", ticket_id="t1", multiplier=150)
        await ledger.round_settle("x1", round_id=1, crash_point=200, game_hash=HASH)
        await ledger.bankroll_move(
            "b1", environment="production", direction="deposit", amount=900, actor="k1"
        )
        await ledger.audit_record("a1", environment="production", actor="k1", action="paused")
        await ledger.round_start("s2", round_id=2)  # left open: the copy's first start voids it
        await ledger.bet_reserve("r2", user_id="ann", hold_id="h2", amount=100, ttl_ms=60_000, **P)
        await ledger.bet_confirm("c2", user_id="ann", hold_id="h2", ticket_id="t2", round_id=2, **P)
    store = KeyStore(path)
    created = store.create(environment="production", scopes="read:balance", partner_id="acme")
    store.close()
    return created.secret


async def test_migrate_copies_everything_and_the_copy_serves(
    pg: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "crashd.sqlite3"
    secret = await make_sqlite(source)
    url = str(pg.target)
    pepper = tmp_path / "pg.pepper"
    code, out, err = run(
        capsys, "db", "migrate", "--database", str(source), "--to", url,
        "--to-pepper-file", str(pepper), "--json",
    )  # fmt: skip
    assert code == 0, (out, err)
    doc = json.loads(out)
    assert doc["check"]["ok"] and doc["rows"]["transfers"] >= 8 and doc["rows"]["api_keys"] == 1
    assert doc["rows"]["replies"] == 1 and doc["rows"]["reversals"] == 1
    assert doc["rows"]["audit_log"] == 2  # the bankroll deposit's and the pause
    assert doc["rows"]["wallet_txs"] == 1 and doc["rows"]["wallet_calls"] == 2
    assert doc["rows"]["round_seals"] == 1 and doc["rows"]["round_transcripts"] == 1
    assert pepper.read_bytes() == apidb.pepper_path(source).read_bytes()
    assert stat.S_IMODE(pepper.stat().st_mode) == 0o600
    # crashd db check on the URL agrees.
    code, out, _ = run(capsys, "db", "check", "--database", url, "--json")
    assert code == 0 and json.loads(out)["audit"]["total"] == 0
    # The copy serves: same balances, the stored reply, the key checks with its pepper,
    # and recovery voids the round the source left open, once.
    async with open_ledger(url, sweep_interval_s=None) as ledger:
        rec = ledger.recovery
        assert rec is not None and (rec.rounds_voided, rec.bets_refunded) == (1, 1)
        ann = await ledger.balance(user_id="ann", **P)
        assert ann.available == 5_000 - 300 + 450
        assert (
            await ledger.balance(user_id="bob", environment="sandbox", partner_id="acme")
        ).available == 700
        assert await ledger.reply(b"k" * 16) == (b"f" * 16, StoredReply(200, "x/y", b"{}"))
        view = await ledger.bet("t1")
        assert view is not None and (view.outcome, view.payout) == ("won", 450)
        assert [e.action for e in await ledger.audit_entries("production")] == [
            "paused",
            "bankroll_deposit",
        ]
        assert await ledger.system_posted("production", "house") == 900 - 150  # paid t1 a win
        # The settlement's and the wallet's rows came along.
        assert await ledger.seal(1) == SEAL[0]
        assert await ledger.transcript(1) == (f"{1:064x}", '{"round":1}')
        rows = await ledger.read(
            lambda c: c.execute("SELECT tx_id, state FROM wallet_txs").fetchall()
        )
        assert rows == [(debit_id("tz1"), "refused")]
        # New ops go on after the copied ones (ids continue; the wallet's identities too).
        await ledger.psp_deposit("d2", user_id="ann", amount=1, **P)
        await ledger.submit(WalletCallsLog("wallet-l2", (wallet_call("balance", None),)))
        report = await ledger.audit()
        assert report.ok and report.capital_total["production"] == 900
    keys = KeyStore(url, pepper)
    try:
        found = keys.lookup(secret)
        assert found is not None and found.partner_id == "acme"
    finally:
        keys.close()
    # A second migration into the same database is refused: it never merges ledgers.
    code, _, err = run(capsys, "db", "migrate", "--database", str(source), "--to", url,
                       "--to-pepper-file", str(pepper))  # fmt: skip
    assert code == 2 and "already holds a ledger" in err


async def test_migrate_refusals(
    pg: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "crashd.sqlite3"
    await make_sqlite(source)
    url = str(pg.target)
    for argv, message in (
        (("--database", str(tmp_path / "missing.sqlite3"), "--to", url), "no database at"),
        (("--database", str(source), "--to", str(tmp_path / "x.sqlite3")), "postgresql://"),
        (("--database", url, "--to", url), "not a URL"),
    ):
        code, _, err = run(capsys, "db", "migrate", *argv)
        assert code == 2 and message in err, (argv, err)
    other = tmp_path / "other.pepper"
    other.write_text("00" * 32 + "\n")
    code, _, err = run(capsys, "db", "migrate", "--database", str(source), "--to", url,
                       "--to-pepper-file", str(other))  # fmt: skip
    assert code == 2 and "another pepper" in err
    # Nothing reached the target.
    conn = pg.connect()
    try:
        assert not conn.execute("SELECT to_regclass('ops') IS NOT NULL").fetchone()[0]
    finally:
        conn.close()
    # crashd db backup of a URL points at PostgreSQL's tools.
    code, _, err = run(capsys, "db", "backup", "--database", url, str(tmp_path / "b"))
    assert code == 2 and "pg_dump" in err

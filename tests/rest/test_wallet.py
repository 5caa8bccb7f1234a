"""Seamless mode against a real crashd and a real mock wallet on 127.0.0.1: bets debit
the wallet, wins are credited (0 for a loss), refusals are passed on, a debit without a
final answer never plays and is rolled back, cash-outs never wait for the wallet, the
circuit breaker pauses and resumes bets, the failed queue is resolved, launch sessions,
reconciliation (JSON, CSV, calls, daily summary), the wallet's limits from session.verify,
receipts on seamless bets and cash-outs, and transfer partners untouched."""

from __future__ import annotations

import csv
import io
import json
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from crashd.engine.ledger.store import audit
from support.game import Api, fund
from support.postgres import Backend
from support.security import LogScan
from support.servers import PYTHON, REPO, make_key, running_server
from support.wallet import (
    PARTNER,
    WALLET_SECRET,
    SeamlessGame,
    ledger_connection,
    running_mock,
    seamless,
    seamless_game,
)

pytestmark = pytest.mark.usefixtures("logscan")


@pytest.fixture(autouse=True)
def _secrets(logscan: LogScan) -> None:
    logscan.remember(WALLET_SECRET, "launch-ok")


async def until(predicate: Any, timeout: float = 15.0) -> None:
    with trio.fail_after(timeout):
        while not await predicate():
            await trio.sleep(0.05)


def audited(game: SeamlessGame) -> None:
    conn = game.ledger()
    try:
        report = audit(conn)
    finally:
        conn.close()
    assert report.ok, report.problems


async def crashd_cli(*argv: str) -> Any:
    """``crashd …`` as a real process; its JSON output."""
    done = await trio.run_process(
        [PYTHON, "-m", "crashd.api", *argv],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    return json.loads(done.stdout)


async def bet(
    api: Api, user: str, amount: int, key: str | None = None, **extra: Any
) -> httpx.Response:
    return await api.post("/api/v1/bets", {"user_id": user, "amount": amount, **extra}, key=key)


async def test_a_bet_debits_the_wallet_and_its_win_is_credited(db: Backend, tmp_path: Path) -> None:
    """On both backends: the wallet's tables, reconciliation and summary on PostgreSQL
    as on SQLite. Betting stays open 2 s: with 400 ms, a slow machine's poll could
    see betting just before it closed, and the bet then queued for the next round."""
    async with seamless_game(tmp_path, database=db.target, betting_ms=2000) as g:
        api = g.api
        await g.mock.fund("alice", 10_000)
        await g.mock.fund("bob", 5_000)
        await api.wait_status("betting", timeout=30)
        r = await bet(api, "alice", 1000)
        assert r.status_code == 201, r.text
        placed = r.json()
        assert placed["available"] == 9000 and placed["queued"] is False
        r = await bet(api, "bob", 500, auto_cashout=100_000)
        assert r.status_code == 201, r.text
        assert (await g.mock.balances()) == {"alice": 9000, "bob": 4500}
        await api.wait_status("running", timeout=30)
        r = await api.post(f"/api/v1/bets/{placed['ticket_id']}/cashout", {"user_id": "alice"})
        assert r.status_code == 200, r.text
        payout = r.json()["payout"]
        await api.wait_round_over(placed["round_id"])
        await g.drained()
        assert (await g.mock.balances()) == {"alice": 9000 + payout, "bob": 4500}
        kinds = sorted((t[1], t[2], t[3]) for t in g.crashd_txs())
        assert kinds == sorted(
            [
                ("debit", "ok", 1000),
                ("debit", "ok", 500),
                ("credit", "ok", payout),
                ("credit", "ok", 0),
            ]
        )
        r = await api.get("/api/v1/user/balance", user_id="alice")
        assert r.status_code == 200, r.text
        assert r.json() == {
            "user_id": "alice",
            "environment": "sandbox",
            "posted": 9000 + payout,
            "pending": 0,
            "available": 9000 + payout,
            "source": "wallet",
            "owed": 0,
            "limits": {"max_stake": None},
        }
        # Reconciliation: transactions (filtered), CSV, the calls and their answers.
        r = await api.get("/api/v1/wallet/transactions", user_id="alice", include_calls="true")
        items = r.json()["items"]
        assert [(i["kind"], i["state"]) for i in items] == [("debit", "ok"), ("credit", "ok")]
        assert items[1]["ref_tx_id"] == items[0]["tx_id"] and items[1]["multiplier"] is not None
        assert [c["call"] for c in items[0]["calls"]] == ["debit"]
        assert items[0]["calls"][0]["status"] == 200 and items[0]["calls"][0]["outcome"] == "ok"
        r = await api.get(
            "/api/v1/wallet/transactions", round_id=placed["round_id"], status="ok", kind="credit"
        )
        assert len(r.json()["items"]) == 2
        r = await api.get("/api/v1/wallet/transactions", format="csv")
        assert r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert len(rows) == 4 and {row["kind"] for row in rows} == {"debit", "credit"}
        r = await api.get("/api/v1/wallet/transactions", view="calls")
        calls = [c["call"] for c in r.json()["items"]]
        assert calls.count("debit") == 2 and calls.count("credit") == 2 and "balance" in calls
        r = await api.get("/api/v1/wallet/summary")
        summary = r.json()
        assert summary["debits"]["count"] == 2 and summary["debits"]["amount"] == 1500
        assert summary["credits"]["count"] == 2 and summary["credits"]["amount"] == payout
        assert summary["pending"]["count"] == 0 and summary["failed"]["count"] == 0
        r = await api.get(
            "/api/v1/wallet/transactions",
            since="2000-01-01T00:00:00Z",
            until="2000-01-02T00:00:00Z",
        )
        assert r.json()["items"] == []
        r = await api.get("/api/v1/wallet/transactions", since="yesterday")
        assert r.status_code == 422 and r.json()["code"] == "validation_failed"
        audited(g)
        assert await g.mock.violations() == []


@pytest.mark.parametrize(
    ("player", "amount", "status", "code"),
    [
        ({"balance": 300}, 500, 409, "insufficient_funds"),
        ({"balance": 9000, "blocked": True}, 500, 403, "wallet_player_blocked"),
        ({"balance": 9000, "self_excluded": True}, 500, 403, "wallet_self_excluded"),
        ({"balance": 9000, "wager_limit": 100}, 500, 403, "wallet_limit_reached"),
        (None, 500, 404, "wallet_unknown_player"),
    ],
)
async def test_wallet_refusals_are_passed_on_and_move_nothing(
    tmp_path: Path, player: dict[str, Any] | None, amount: int, status: int, code: str
) -> None:
    async with seamless_game(tmp_path) as g:
        if player is not None:
            await g.mock.fund("carol", **player)
        before = await g.mock.balances()
        await g.api.wait_status("betting", timeout=30)
        key = str(uuid.uuid4())
        r = await bet(g.api, "carol", amount, key=key)
        assert r.status_code == status, r.text
        body = r.json()
        assert body["code"] == code and body["rolled_back"] is False
        if code == "insufficient_funds":
            assert body["balance"] == 300
        # The same request again: the same answer, replayed; the wallet sees one call.
        again = await bet(g.api, "carol", amount, key=key)
        assert again.status_code == status and again.headers.get("Idempotent-Replayed") == "true"
        assert again.json()["code"] == code
        assert await g.mock.balances() == before
        [(tx_id, kind, state, _, _, why)] = g.crashd_txs()
        assert (kind, state, why) == ("debit", "refused", code)
        [seen] = await g.mock.transactions()
        assert seen["deliveries"] == 1 and seen["applied"] == 0
        audited(g)


async def test_a_retried_bet_never_debits_twice(tmp_path: Path) -> None:
    async with seamless_game(tmp_path) as g:
        await g.mock.fund("dave", 1000)
        await g.api.wait_status("betting", timeout=30)
        key = str(uuid.uuid4())
        first = await bet(g.api, "dave", 400, key=key)
        second = await bet(g.api, "dave", 400, key=key)
        assert first.status_code == second.status_code == 201
        assert second.headers.get("Idempotent-Replayed") == "true" and second.json() == first.json()
        assert await g.mock.balances() == {"dave": 600}
        debits = [t for t in await g.mock.transactions() if t["call"] == "debit"]
        assert len(debits) == 1 and debits[0]["deliveries"] == 1


async def test_a_debit_without_a_final_answer_never_plays_and_is_rolled_back(
    tmp_path: Path,
) -> None:
    async with seamless_game(tmp_path, mock_faults={"hang_s": 5}) as g:
        await g.mock.fund("erin", 5000)
        await g.api.wait_status("betting", timeout=30)
        # The wallet hangs without applying it: no answer in time.
        await g.mock.faults(timeout_rate=1)
        r = await bet(g.api, "erin", 1000)
        assert r.status_code == 504 and r.json()["code"] == "wallet_timeout", r.text
        assert r.json()["rolled_back"] is True
        await g.mock.heal()
        await g.drained()
        # The hard case: the wallet applied the debit, the answer never came.
        await g.api.wait_status("betting", timeout=30)
        await g.mock.faults(drop_rate=1)
        r = await bet(g.api, "erin", 700)
        assert r.status_code == 502 and r.json()["code"] == "wallet_error", r.text
        assert (await g.mock.balances())["erin"] == 4300  # debited: crashd never heard
        await g.mock.heal()
        await g.drained()
        assert (await g.mock.balances())["erin"] == 5000  # rolled back
        states = [(t[1], t[2], t[5]) for t in g.crashd_txs()]
        assert states == [
            ("debit", "cancelled", "wallet_timeout"),
            ("rollback", "ok", None),
            ("debit", "cancelled", "wallet_error"),
            ("rollback", "ok", None),
        ]
        r = await g.api.get("/api/v1/user/bets", user_id="erin")
        assert r.json()["bets"] == []  # neither played
        audited(g)
        assert await g.mock.violations() == []


async def test_cash_outs_never_wait_for_the_wallet(tmp_path: Path) -> None:
    async with seamless_game(tmp_path) as g:
        await g.mock.fund("fay", 5000)
        await g.api.wait_status("betting", timeout=30)
        r = await bet(g.api, "fay", 1000)
        assert r.status_code == 201, r.text
        ticket = r.json()["ticket_id"]
        await g.api.wait_status("running", timeout=30)
        await g.mock.faults(outages=[[0, 4_000_000_000]])  # the wallet is down
        r = await g.api.post(f"/api/v1/bets/{ticket}/cashout", {"user_id": "fay"})
        assert r.status_code == 200, r.text  # decided and answered without the wallet
        payout = r.json()["payout"]
        r = await g.api.get("/api/v1/wallet/status")
        assert r.json()["outbox"]["owed"] == payout
        assert [t[2] for t in g.crashd_txs() if t[1] == "credit"] == ["pending"]
        await g.mock.heal()
        await g.drained(timeout=20)
        assert (await g.mock.balances())["fay"] == 4000 + payout
        credit = [t for t in g.crashd_txs() if t[1] == "credit"][0]
        assert credit[2] == "ok"
        conn = g.ledger()
        try:
            attempts = conn.execute(
                "SELECT attempts FROM wallet_txs WHERE tx_id = ?", (credit[0],)
            ).fetchone()[0]
            logged = conn.execute(
                "SELECT count(*) FROM wallet_calls WHERE tx_id = ?", (credit[0],)
            ).fetchone()[0]
        finally:
            conn.close()
        assert attempts >= 2 and logged == attempts  # every try kept, same tx_id
        audited(g)


async def test_the_breaker_pauses_bets_says_why_and_resumes(tmp_path: Path) -> None:
    async with seamless_game(tmp_path, wallet_breaker_failures=3) as g:
        await g.mock.fund("gus", 5000)
        await g.mock.faults(error_rate=1)
        # Every failed call counts, the outbox's rollbacks of the failed debits too: the
        # breaker opens within three bets.
        codes: list[str] = []
        while "wallet_unavailable" not in codes:
            assert len(codes) < 3, codes
            await g.api.wait_status("betting", timeout=30)
            codes.append((await bet(g.api, "gus", 100)).json()["code"])
        assert set(codes[:-1]) == {"wallet_error"}
        r = await bet(g.api, "gus", 100)
        body = r.json()
        assert r.status_code == 503 and "3 call(s) in a row" in body["detail"]
        assert body["retry_after_s"] >= 1 and "reason" in body
        status = (await g.api.get("/api/v1/wallet/status")).json()
        assert status["bets"] == "paused" and status["breaker"]["state"] == "open"
        assert "http_503" in status["breaker"]["reason"]
        await g.mock.heal()
        await trio.sleep(0.6)

        async def resumed() -> bool:
            await g.api.wait_status("betting", timeout=30)
            return (await bet(g.api, "gus", 100)).status_code == 201

        await until(resumed)
        status = (await g.api.get("/api/v1/wallet/status")).json()
        assert status["bets"] == "open" and status["breaker"]["state"] == "closed"
        await g.drained()
        assert (await g.mock.balances())["gus"] == 4900  # only the last bet is out
        assert await g.mock.violations() == []


async def test_a_credit_the_wallet_refuses_is_parked_and_resolved(
    db: Backend, tmp_path: Path
) -> None:
    # Betting open for a second: both debits must be answered before it closes, on a
    # loaded machine too (a debit the close of betting cuts short never plays).
    async with seamless_game(tmp_path, database=db.target, betting_ms=1000) as g:
        await g.mock.fund("hal", 5000)
        await g.mock.fund("ivy", 5000)
        await g.api.wait_status("betting", timeout=30)
        tickets = {}
        for user in ("hal", "ivy"):
            r = await bet(g.api, user, 1000)
            assert r.status_code == 201, r.text
            tickets[user] = r.json()["ticket_id"]
        await g.mock.fund("hal", 4000, closed=True)
        await g.mock.fund("ivy", 4000, closed=True)
        await g.api.wait_status("running", timeout=30)
        payouts = {}
        for user, ticket in tickets.items():
            r = await g.api.post(f"/api/v1/bets/{ticket}/cashout", {"user_id": user})
            payouts[user] = r.json()["payout"]

        async def parked() -> bool:
            return len((await g.api.get("/api/v1/wallet/failed")).json()["items"]) == 2

        await until(parked)
        failed = {
            i["user_id"]: i for i in (await g.api.get("/api/v1/wallet/failed")).json()["items"]
        }
        # The operator's command line reads the same queue from the database (SQLite or
        # PostgreSQL) while the server runs.
        listed = await crashd_cli(
            "wallet", "failed", "list", "--database", str(db.target), "--json"
        )
        assert {(i["user_id"], i["tx_id"]) for i in listed["failed"]} == {
            (u, i["tx_id"]) for u, i in failed.items()
        }
        day = await crashd_cli("wallet", "summary", "--database", str(db.target), "--json")
        assert day["partners"][PARTNER]["failed"]["count"] == 2
        assert (
            failed["hal"]["code"] == "account_closed" and failed["hal"]["amount"] == payouts["hal"]
        )
        r = await g.api.get("/api/v1/wallet/status")
        assert r.json()["outbox"]["failed"] == 2
        # Settled by hand: recorded, and crashd's debt to the wallet released.
        r = await g.api.post(
            f"/api/v1/wallet/failed/{failed['hal']['tx_id']}/settle", {"note": "paid by bank"}
        )
        assert r.status_code == 200 and r.json()["state"] == "resolved", r.text
        r = await g.api.post(
            f"/api/v1/wallet/failed/{failed['hal']['tx_id']}/settle", {"note": "again"}
        )
        assert r.status_code == 409 and r.json()["code"] == "wallet_tx_final"
        # A retry sends the same tx_id: a refusal is final at the wallet (a replay answers
        # the same), so it comes back parked, one attempt more; settled by hand after all.
        await g.mock.fund("ivy", 4000, closed=False)
        r = await g.api.post(f"/api/v1/wallet/failed/{failed['ivy']['tx_id']}/retry", {})
        assert r.status_code == 200 and r.json()["state"] == "pending", r.text

        async def parked_again() -> bool:
            items = (await g.api.get("/api/v1/wallet/failed")).json()["items"]
            return [(i["user_id"], i["attempts"]) for i in items] == [("ivy", 2)]

        await until(parked_again)
        r = await g.api.post(f"/api/v1/wallet/failed/{failed['ivy']['tx_id']}/settle", {})
        assert r.status_code == 200, r.text
        assert (await g.mock.balances()) == {"hal": 4000, "ivy": 4000}
        r = await g.api.post("/api/v1/wallet/failed/crd_000000000000000000000000/retry", {})
        assert r.status_code == 404 and r.json()["code"] == "unknown_wallet_tx"
        r = await g.api.post("/api/v1/wallet/failed/not-a-tx/retry", {})
        assert r.status_code == 404
        assert (await g.api.get("/api/v1/user/balance", user_id="hal")).json()["owed"] == 0
        audited(g)


async def test_a_stop_voids_the_round_and_the_next_start_rolls_back(
    db: Backend, tmp_path: Path
) -> None:
    async with running_mock(tmp_path) as mock:
        await mock.fund("jo", 5000)
        from support.game import game_config

        config = seamless(
            game_config(tmp_path, betting_ms=3000, stop_wait_s=0.2, database=db.target), mock.url
        )
        async with running_server(config) as info:
            _, secret = make_key(config, "read:game_state,read:balance,write:bet", partner=PARTNER)
            async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
                api = Api(client, secret)
                await api.wait_status("betting", timeout=30)
                r = await bet(api, "jo", 1000)
                assert r.status_code == 201, r.text
                await mock.faults(outages=[[0, 4_000_000_000]])  # no rollback gets through
        # Stopped while betting: the round was voided, its bet refunded, the rollback owed.
        assert (await mock.balances())["jo"] == 4000
        await mock.heal()
        async with running_server(config) as info:
            g = SeamlessGame(mock, None, config, info.url)
            await g.drained()
        assert (await mock.balances())["jo"] == 5000
        conn = ledger_connection(config)
        try:
            assert conn.execute("SELECT outcome FROM bets").fetchall() == [("refunded",)]
            assert audit(conn).ok
        finally:
            conn.close()
        assert await mock.violations() == []


async def test_launch_sessions(tmp_path: Path) -> None:
    async with seamless_game(tmp_path) as g:
        await g.mock.fund("kim", 2500)
        for token, ttl in (("launch-ok", 3600), ("launch-old", -1)):
            r = await g.mock.admin.post(
                "/admin/sessions", json={"token": token, "player_id": "kim", "ttl_s": ttl}
            )
            assert r.status_code == 200
        r = await g.api.client.post(
            "/api/v1/wallet/session", json={"partner_id": PARTNER, "launch_token": "launch-ok"}
        )
        assert r.status_code == 201, r.text
        session = r.json()
        assert session["user_id"] == "kim" and session["balance"]["available"] == 2500
        assert session["currency"] == "EUR" and "write:bet" in session["scopes"]
        r = await g.api.client.get(
            "/api/v1/user/balance",
            params={"user_id": "kim"},
            headers={"Authorization": f"Bearer {session['token']}"},
        )
        assert r.status_code == 200 and r.json()["available"] == 2500
        for token, code in (
            ("launch-old", "wallet_session_expired"),
            ("nope", "wallet_unknown_player"),
        ):
            r = await g.api.client.post(
                "/api/v1/wallet/session", json={"partner_id": PARTNER, "launch_token": token}
            )
            assert r.json()["code"] == code, r.text
        r = await g.api.client.post(
            "/api/v1/wallet/session", json={"partner_id": "other", "launch_token": "x"}
        )
        assert r.status_code == 409 and r.json()["code"] == "wallet_not_seamless"
        conn = g.ledger()
        try:
            logged = [
                r[0]
                for r in conn.execute(
                    "SELECT request FROM wallet_calls WHERE call = 'session.verify'"
                )
            ]
        finally:
            conn.close()
        assert logged and not any("launch-ok" in text for text in logged)  # only hashed


async def test_the_wallets_limits_are_applied_and_shown(tmp_path: Path) -> None:
    """The limits ``session.verify`` gives (a max stake) are shown with the session and
    the balance, and a bet above them is refused ``wallet_stake_too_large`` before the
    wallet is asked (the mock would refuse it too, as ``limit_reached``: that code
    would mean crashd sent the debit). A later session without limits lifts them."""
    async with seamless_game(tmp_path) as g:
        await g.mock.fund("kim", 5000, max_stake=300)
        await g.mock.fund("lee", 5000, max_stake=300)  # never launched: no limits known
        r = await g.mock.admin.post(
            "/admin/sessions", json={"token": "launch-ok", "player_id": "kim", "ttl_s": 3600}
        )
        assert r.status_code == 200
        r = await g.api.client.post(
            "/api/v1/wallet/session", json={"partner_id": PARTNER, "launch_token": "launch-ok"}
        )
        assert r.status_code == 201, r.text
        session = r.json()
        assert session["limits"] == {"max_stake": 300}
        as_kim = {"Authorization": f"Bearer {session['token']}"}
        r = await g.api.client.get(
            "/api/v1/user/balance", params={"user_id": "kim"}, headers=as_kim
        )
        assert r.status_code == 200 and r.json()["limits"] == {"max_stake": 300}, r.text
        await g.api.wait_status("betting", timeout=30)
        before = await g.mock.transactions()
        for amount in (301, 5000):
            r = await bet(g.api, "kim", amount)
            assert r.status_code == 422, r.text
            problem = r.json()
            assert problem["code"] == "wallet_stake_too_large" and problem["max_stake"] == 300
        assert await g.mock.transactions() == before  # the wallet was never asked
        assert not any(t[1] == "debit" for t in g.crashd_txs())  # nothing recorded
        assert (await g.mock.balances())["kim"] == 5000
        r = await bet(g.api, "kim", 300)
        assert r.status_code == 201, r.text
        placed = r.json()
        # A player whose limits crashd never learnt: the wallet's own refusal, passed on.
        r = await bet(g.api, "lee", 400)
        assert r.json()["code"] == "wallet_limit_reached", r.text
        # The wallet lifts the limit: the next session says so, and crashd forgets it.
        await g.mock.fund("kim", 4700, max_stake=None)
        r = await g.mock.admin.post(
            "/admin/sessions", json={"token": "launch-ok", "player_id": "kim", "ttl_s": 3600}
        )
        r = await g.api.client.post(
            "/api/v1/wallet/session", json={"partner_id": PARTNER, "launch_token": "launch-ok"}
        )
        assert r.json()["limits"] == {"max_stake": None}, r.text
        await g.api.wait_round_over(placed["round_id"])
        await g.api.wait_status("betting", timeout=30)
        r = await bet(g.api, "kim", 400)
        assert r.status_code == 201, r.text
        await g.drained()
        audited(g)
        assert await g.mock.violations() == []


async def test_a_seamless_bet_and_its_cash_out_carry_receipts_that_verify(
    tmp_path: Path,
) -> None:
    """As a transfer partner's (docs/fairness.md): the bet's answer and its cash-out's
    carry signed receipts, a retry gets the same receipt, the bet is in its round's
    transcript, and ``audit`` finds the receipts, the transcript and the re-run agree."""
    from crashd.api.cli.audit import KEYS_PATH, keys_of
    from crashd.engine.settlement.audit import audit as audit_transcripts

    async with seamless_game(tmp_path) as g:
        api = g.api
        await g.mock.fund("alice", 10_000)
        await api.wait_status("betting", timeout=30)
        key = uuid.uuid4().hex
        r = await bet(api, "alice", 1000, key=key)
        assert r.status_code == 201, r.text
        placed = r.json()
        receipt = placed["receipt"]
        assert receipt is not None, placed
        assert (receipt["kind"], receipt["ticket_id"], receipt["round_id"], receipt["stake"]) == (
            "bet",
            placed["ticket_id"],
            placed["round_id"],
            1000,
        )
        again = await bet(api, "alice", 1000, key=key)
        assert again.status_code == 201 and again.json()["receipt"] == receipt  # stored
        await api.wait_status("running", timeout=30)
        r = await api.post(f"/api/v1/bets/{placed['ticket_id']}/cashout", {"user_id": "alice"})
        assert r.status_code == 200, r.text
        cashout = r.json()["receipt"]
        assert cashout is not None and cashout["kind"] == "cashout", r.text
        assert cashout["payout"] == r.json()["payout"]
        await api.wait_round_over(placed["round_id"])
        r = await api.get(f"/api/v1/game/rounds/{placed['round_id']}/transcript")
        assert r.status_code == 200, r.text
        transcript = r.json()
        logged = [e for e in transcript["log"] if e.get("ticket_id") == placed["ticket_id"]]
        assert [e["op"] for e in logged][:1] == ["bet"], transcript["log"]
        keys = keys_of((await api.client.get(KEYS_PATH)).json())
        report = audit_transcripts([transcript], keys, receipts=[receipt, cashout])
        assert report.ok and report.receipts == 2 and not report.unchecked, report.to_dict()
        # A receipt the transcript does not back is found: the check can fail.
        forged = {**cashout, "payout": cashout["payout"] + 1}
        assert not audit_transcripts([transcript], keys, receipts=[forged]).ok
        await g.drained()
        audited(g)


async def test_transfer_partners_play_as_before(tmp_path: Path) -> None:
    async with seamless_game(tmp_path) as g:
        _, secret = make_key(
            g.config, "read:game_state,read:balance,write:bet,manage:wallet", partner="other"
        )
        other = Api(g.api.client, secret)
        await fund(other, "lee", 1000)
        await other.wait_status("betting", timeout=30)
        placed = await other.place("lee", 300)
        assert placed["stake"] == 300
        assert (await other.get("/api/v1/wallet/status")).json() == {
            "partner_id": "other",
            "mode": "transfer",
        }
        for path in ("/api/v1/wallet/summary", "/api/v1/wallet/failed"):
            r = await other.get(path)
            assert r.status_code == 409 and r.json()["code"] == "wallet_not_seamless"
        assert (await other.get("/api/v1/wallet/transactions")).json()["items"] == []
        # And a seamless partner's two-phase and faucet routes say what to use instead.
        for path, body in (
            ("/api/v1/bets/reserve", {"user_id": "x", "amount": 10}),
            ("/api/v1/sandbox/faucet", {"user_id": "x", "amount": 10}),
        ):
            r = await g.api.post(path, body)
            assert r.status_code == 409 and r.json()["code"] == "seamless_one_shot", r.text
        assert g.crashd_txs() == []

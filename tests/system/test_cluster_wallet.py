"""The seamless wallet's routes through an API process, against a real engine playing
partner ``acme`` on a real mock wallet: the records (transactions, the calls, the
day's summary, the failed queue) read from the database by the API process, which
loads the same wallets file; the breaker's status, a player's wallet balance and the
failed queue's retry and settle asked of or sent to the engine. Every answer compared
with the engine's own; hostile requests answered alike, nothing moved."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from support.cluster import api_process, same_answer, signed_raw
from support.game import Api
from support.postgres import Backend
from support.security import LogScan, money_fingerprint
from support.servers import SIGNING_SECRETS, make_key
from support.wallet import PARTNER, seamless_game

pytestmark = pytest.mark.usefixtures("logscan")


def books(db: Backend) -> Any:
    """What a hostile request must leave as it was: the money (and the audit passing) on
    SQLite; on PostgreSQL the transfers and the wallet's transactions, row for row."""
    if not db.postgres:
        return money_fingerprint(Path(db.target))
    conn = db.connect()
    try:
        return [
            conn.execute(query).fetchall()
            for query in (
                "SELECT * FROM transfers ORDER BY 1",
                "SELECT tx_id, kind, state, amount FROM wallet_txs ORDER BY id",
            )
        ]
    finally:
        conn.close()


async def test_the_seamless_wallet_through_an_api_process(
    db: Backend, tmp_path: Path, redis_url: str, logscan: LogScan
) -> None:
    """On both backends: on PostgreSQL the API process reads the wallet's records
    through its read pool."""
    # Betting open for two seconds: both debits answered before it closes. The wallet's
    # timeout is not under test here: well above the 400 ms of the timeout tests (a
    # loaded CI machine took longer once through the API process, on PostgreSQL).
    async with (
        seamless_game(
            tmp_path,
            database=db.target,
            betting_ms=2000,
            wallet_timeout_ms=1500,
            redis_url=redis_url,
            redis_prefix=f"test-{uuid.uuid4().hex[:8]}",
        ) as g,
        api_process(g.config) as proc,
        httpx.AsyncClient(base_url=proc.server.url, timeout=20) as remote,
    ):
        here = g.api
        there = Api(remote, here.headers["Authorization"].removeprefix("Bearer "))
        _, reader = make_key(g.config, "read:game_state,read:balance", partner=PARTNER)
        logscan.remember(reader, SIGNING_SECRETS[reader])
        await g.mock.fund("hal", 5000)
        await g.mock.fund("ivy", 5000)
        # A launch session: the wallet asked by the engine, the token made by the process.
        for token, ttl in (("launch-ok", 3600), ("launch-old", -1)):
            r = await g.mock.admin.post(
                "/admin/sessions", json={"token": token, "player_id": "hal", "ttl_s": ttl}
            )
            assert r.status_code == 200, r.text
        launched = await remote.post(
            "/api/v1/wallet/session", json={"partner_id": PARTNER, "launch_token": "launch-ok"}
        )
        assert launched.status_code == 201, launched.text
        session = launched.json()
        logscan.remember(session["token"])
        assert session["user_id"] == "hal" and session["balance"]["available"] == 5000
        assert session["currency"] == "EUR"
        bearer = {"Authorization": f"Bearer {session['token']}"}
        mine = await here.client.get(
            "/api/v1/user/balance", params={"user_id": "hal"}, headers=bearer
        )
        assert mine.status_code == 200 and mine.json()["available"] == 5000, mine.text
        for refused in (
            {"partner_id": PARTNER, "launch_token": "launch-old"},
            {"partner_id": PARTNER, "launch_token": "nope"},
            {"partner_id": "other", "launch_token": "x"},
            {"partner_id": PARTNER},
        ):
            a = await remote.post("/api/v1/wallet/session", json=refused)
            b = await here.client.post("/api/v1/wallet/session", json=refused)
            same_answer(a, b)
            assert a.status_code >= 400, a.text
        # The wallet's balance, asked of the engine (its driver calls the wallet).
        balance = "/api/v1/user/balance"
        same_answer(await there.get(balance, user_id="hal"), await here.get(balance, user_id="hal"))
        assert (await there.get(balance, user_id="hal")).json()["source"] == "wallet"
        await here.wait_status("betting", timeout=30)
        tickets = {}
        for user in ("hal", "ivy"):
            r = await there.post("/api/v1/bets", {"user_id": user, "amount": 1000})
            assert r.status_code == 201, r.text
            tickets[user] = r.json()["ticket_id"]
        # Both players' accounts closed at the wallet: their wins' credits are refused.
        await g.mock.fund("hal", 4000, closed=True)
        await g.mock.fund("ivy", 4000, closed=True)
        await here.wait_status("running", timeout=30)
        for user, ticket in tickets.items():
            r = await there.post(f"/api/v1/bets/{ticket}/cashout", {"user_id": user})
            assert r.status_code == 200, r.text
        with trio.fail_after(30):
            while len((await there.get("/api/v1/wallet/failed")).json().get("items", [])) < 2:
                await trio.sleep(0.05)
        await g.drained()
        # The records, read by the API process from the database: the engine's answers.
        for path, params in (
            ("/api/v1/wallet/failed", {}),
            ("/api/v1/wallet/transactions", {}),
            ("/api/v1/wallet/transactions", {"view": "calls"}),
            ("/api/v1/wallet/transactions", {"format": "csv"}),
            ("/api/v1/wallet/transactions", {"status": "failed", "include_calls": "true"}),
            ("/api/v1/wallet/summary", {}),
            ("/api/v1/wallet/status", {}),
        ):
            same_answer(await there.get(path, **params), await here.get(path, **params))
        status = (await there.get("/api/v1/wallet/status")).json()
        assert status["mode"] == "seamless" and status["outbox"]["failed"] == 2, status
        failed = {
            i["user_id"]: i for i in (await there.get("/api/v1/wallet/failed")).json()["items"]
        }
        hal, ivy = failed["hal"]["tx_id"], failed["ivy"]["tx_id"]
        before = books(db)
        # Hostile: each answered as the engine answers it, nothing moved.
        settle = f"/api/v1/wallet/failed/{hal}/settle"
        for send in (
            lambda api: api.get("/api/v1/wallet/summary", day="2026-02-30"),
            lambda api: api.get("/api/v1/wallet/transactions", limit="lots"),
            lambda api: api.get("/api/v1/wallet/transactions", since="yesterday"),
            lambda api: Api(api.client, reader).get("/api/v1/wallet/failed"),
            lambda api: Api(api.client, reader).post(settle, {"note": "no"}, key="w-0"),
            lambda api: signed_raw(api, settle, b"{", key="w-1"),
            lambda api: signed_raw(api, settle, json.dumps({"note": 5}).encode(), key="w-2"),
            lambda api: api.client.post(settle, content=b"{}", headers=api.headers),
            lambda api: api.post("/api/v1/wallet/failed/crd_000000000000000000000000/retry", {}),
            lambda api: api.post("/api/v1/wallet/failed/not-a-tx/retry", {}),
        ):
            a, b = await send(there), await send(here)
            same_answer(a, b)
            assert a.status_code >= 400, a.text
        assert books(db) == before
        # Settled by hand through the API process; again refused alike (it is final).
        r = await there.post(settle, {"note": "paid by bank"}, key="settle-hal")
        assert r.status_code == 200 and r.json() == {"tx_id": hal, "state": "resolved"}, r.text
        again = await here.post(settle, {"note": "paid by bank"}, key="settle-hal")
        assert again.headers["Idempotent-Replayed"] == "true" and again.content == r.content
        same_answer(
            await there.post(settle, {"note": "again"}), await here.post(settle, {"note": "again"})
        )
        # A retry through the API process puts the credit back into the engine's outbox.
        await g.mock.fund("ivy", 4000, closed=False)
        r = await there.post(f"/api/v1/wallet/failed/{ivy}/retry", {})
        assert r.status_code == 200 and r.json()["state"] == "pending", r.text

        async def settled() -> Any:
            items = (await there.get("/api/v1/wallet/failed")).json()["items"]
            return items == [] or [(i["user_id"], i["attempts"]) for i in items] == [("ivy", 2)]

        with trio.fail_after(30):
            while not await settled():
                await trio.sleep(0.05)
        await g.drained()
        same_answer(
            await there.get("/api/v1/wallet/summary"), await here.get("/api/v1/wallet/summary")
        )
        same_answer(await there.get(balance, user_id="hal"), await here.get(balance, user_id="hal"))
        assert (await there.get(balance, user_id="hal")).json()["owed"] == 0
    books(db)  # (on SQLite: the audit passes)

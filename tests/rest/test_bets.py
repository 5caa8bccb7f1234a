"""Bet lifecycles against a real ``crashd`` server on 127.0.0.1: real HTTP, real ledger.

Rounds are short here (betting 400 ms, pause 200 ms) so a lifecycle takes about a
second; crash points come from a real chain, so each test reads the game state to
decide when to act instead of assuming a crash point.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest

from crashd.engine.fairness import crash_point
from crashd.engine.ledger import open_ledger
from support.game import Api, fund, game_config
from support.servers import make_key, running_server


async def test_manual_cashout_wins_and_pays(api: Api) -> None:
    await fund(api, "alice")
    # Play until a round lets us cash out (a crash racing the request says too_late).
    for _ in range(5):
        await api.wait_status("betting")
        placed = await api.place("alice", 1_000)
        assert placed["queued"] is False
        await api.wait_status("running")
        r = await api.post(f"/api/v1/bets/{placed['ticket_id']}/cashout", {"user_id": "alice"})
        if r.status_code == 200:
            body = r.json()
            assert body["status"] == "cashed_out"
            assert body["payout"] == 1_000 * body["multiplier"] // 100
            bet = (await api.get(f"/api/v1/bets/{placed['ticket_id']}")).json()
            assert bet["status"] == "cashed_out" and bet["payout"] == body["payout"]
            return
        assert r.status_code == 409 and r.json()["code"] == "too_late"
    pytest.fail("no round ran long enough to cash out")


async def test_auto_cashout_and_loss_settle_exactly(api: Api) -> None:
    await fund(api, "bob")
    await fund(api, "carol")
    await api.wait_status("betting")
    auto = await api.place("bob", 1_000, auto=101)
    lose = await api.place("carol", 500)
    assert auto["round_id"] == lose["round_id"]
    crashed = await api.wait_round_over(auto["round_id"])
    bob = (await api.get(f"/api/v1/bets/{auto['ticket_id']}")).json()
    carol = (await api.get(f"/api/v1/bets/{lose['ticket_id']}")).json()
    assert crashed["crash_point"] >= 101
    assert (bob["status"], bob["multiplier"], bob["payout"]) == ("cashed_out", 101, 1_010)
    assert carol["status"] == "lost" and carol["payout"] == 0
    assert await api.balance("carol") == 100_000 - 500
    # The revealed round verifies: its hash's crash point is what the round reported.
    r = await api.get(f"/api/v1/game/rounds/{crashed['round_id']}")
    assert r.status_code == 200
    rnd = r.json()
    assert (
        crash_point(rnd["game_hash"], rnd["salt"]) == rnd["crash_point"] == crashed["crash_point"]
    )
    # Revalidation: same ETag -> 304.
    again = await api.client.get(
        f"/api/v1/game/rounds/{crashed['round_id']}",
        headers={**api.headers, "If-None-Match": r.headers["ETag"]},
    )
    assert again.status_code == 304


async def test_insufficient_funds_and_replayed_key_move_nothing(api: Api) -> None:
    await fund(api, "dave", 1_000)
    r = await api.post("/api/v1/bets/reserve", {"user_id": "dave", "amount": 5_000})
    assert r.status_code == 409 and r.json()["code"] == "insufficient_funds"
    key = uuid.uuid4().hex
    first = await api.post("/api/v1/bets/reserve", {"user_id": "dave", "amount": 400}, key=key)
    replay = await api.post("/api/v1/bets/reserve", {"user_id": "dave", "amount": 400}, key=key)
    assert first.status_code == replay.status_code == 201
    assert replay.headers.get("Idempotent-Replayed") == "true"
    assert first.json() == replay.json()
    assert await api.balance("dave") == 600
    other = await api.post("/api/v1/bets/reserve", {"user_id": "dave", "amount": 401}, key=key)
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert await api.balance("dave") == 600


async def test_scopes_and_partners_are_enforced(api: Api, tmp_path: Path) -> None:
    config = game_config(tmp_path)
    _, read_only = make_key(config, "read:game_state")
    _, other_partner = make_key(config, "read:balance,write:bet", partner="globex")
    await fund(api, "erin", 2_000)
    r = await api.client.post(
        "/api/v1/bets/reserve",
        json={"user_id": "erin", "amount": 10},
        headers={"Authorization": f"Bearer {read_only}", "Idempotency-Key": "k1"},
    )
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
    # Another partner's "erin" is another person with no money.
    r = await api.client.get(
        "/api/v1/user/balance",
        params={"user_id": "erin"},
        headers={"Authorization": f"Bearer {other_partner}"},
    )
    assert r.status_code == 200 and r.json()["available"] == 0
    r = await Api(api.client, other_partner).post(
        "/api/v1/bets/reserve", {"user_id": "erin", "amount": 10}
    )
    assert r.status_code == 409 and r.json()["code"] == "insufficient_funds"
    assert await api.balance("erin") == 2_000


async def test_queued_bet_plays_next_round(api: Api) -> None:
    await fund(api, "fay")
    state = await api.wait_status("running", timeout=20)
    r = await api.post("/api/v1/bets/reserve", {"user_id": "fay", "amount": 300})
    hold = r.json()["hold_id"]
    r = await api.post("/api/v1/bets/confirm", {"user_id": "fay", "hold_id": hold})
    assert r.status_code == 201, r.text
    placed = r.json()
    if placed["queued"]:
        assert placed["round_id"] == state["round_id"] + 1
    # Confirming the same hold again is refused and moves nothing.
    r = await api.post("/api/v1/bets/confirm", {"user_id": "fay", "hold_id": hold})
    assert r.status_code == 409 and r.json()["code"] == "hold_resolved"
    assert await api.balance("fay") == 100_000 - 300


async def test_restart_voids_interrupted_round_and_refunds(tmp_path: Path) -> None:
    config = game_config(tmp_path, betting_ms=60_000, stop_wait_s=0.5)  # the round stays in betting
    async with running_server(config) as info:
        _, secret = make_key(config, "read:game_state,read:balance,write:bet")
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "gus", 1_000)
            await api.place("gus", 700)
            assert await api.balance("gus") == 300
            first_round = (await api.state())["round_id"]
    # A graceful stop voided the betting round after stop_wait_s and refunded the stake.
    async with open_ledger(config.database) as ledger:
        balance = await ledger.balance(environment="sandbox", partner_id="acme", user_id="gus")
        assert balance.available == 1_000
        audit = await ledger.audit()
        assert audit.ok, audit.problems
        rnd = await ledger.round(first_round)
        assert rnd is not None and rnd.state == "voided"
        # The burnt game is revealed and kept with the round.
        assert rnd.game_hash is not None and rnd.crash_point is not None
    # The next start resumes the chain after the voided game: a game is never replayed.
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            state = await Api(client, secret).state()
            assert state["round_id"] == first_round + 1
            # Its history shows what the game would have been, verifiable by anyone.
            r = await Api(client, secret).get(f"/api/v1/game/rounds/{first_round}")
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["status"], body["void_reason"]) == ("voided", rnd.void_reason)
            assert body["game_hash"] == rnd.game_hash
            assert body["crash_point"] == crash_point(rnd.game_hash, body["salt"])
            assert body["verify"].startswith(f"crashd verify --hash {rnd.game_hash} ")

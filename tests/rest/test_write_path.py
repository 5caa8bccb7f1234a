"""The write path at round scale, against a real server: one-shot bets, batches, the
bounded live state, batched public cash-outs (issue 13)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from support.feed import next_of
from support.game import Api, fund, game_config
from support.servers import make_key, running_server

SCOPES = "read:game_state,read:balance,write:bet"


async def _bet(
    api: Api, user: str, amount: int, auto: int | None = None, key: str | None = None
) -> httpx.Response:
    body: dict[str, Any] = {"user_id": user, "amount": amount}
    if auto is not None:
        body["auto_cashout"] = auto
    return await api.post("/api/v1/bets", body, key=key)


async def test_a_one_shot_bet_takes_the_stake_and_plays(api: Api) -> None:
    await fund(api, "ann", 1_000)
    await api.wait_status("betting")
    key = uuid.uuid4().hex
    r = await _bet(api, "ann", 300, auto=101, key=key)
    assert r.status_code == 201, r.text
    placed = r.json()
    assert (placed["stake"], placed["auto_cashout"], placed["status"]) == (300, 101, "active")
    assert placed["available"] == 700 and await api.balance("ann") == 700
    again = await _bet(api, "ann", 300, auto=101, key=key)
    assert again.headers["idempotent-replayed"] == "true" and again.content == r.content
    await api.wait_round_over(placed["round_id"])
    for _ in range(100):
        bet = (await api.get(f"/api/v1/bets/{placed['ticket_id']}")).json()
        if bet["status"] != "active":
            break
        await trio.sleep(0.02)
    assert (bet["status"], bet["multiplier"], bet["payout"]) == ("cashed_out", 101, 303)
    assert await api.balance("ann") == 700 + 303


async def test_a_one_shot_bet_without_the_money_moves_nothing(api: Api) -> None:
    await fund(api, "bob", 100)
    key = uuid.uuid4().hex
    r = await _bet(api, "bob", 500, key=key)
    assert (r.status_code, r.json()["code"]) == (409, "insufficient_funds")
    assert r.json()["available"] == 100
    assert await api.balance("bob") == 100
    state = await api.state()
    assert state["participant_count"] == 0 or all(b["stake"] != 500 for b in state["top_bets"])
    # The refusal is the stored answer for that key.
    again = await _bet(api, "bob", 500, key=key)
    assert again.headers["idempotent-replayed"] == "true" and again.content == r.content
    bets = (await api.get("/api/v1/user/bets", user_id="bob")).json()["bets"]
    assert bets == []


async def test_a_batch_places_for_many_users_each_with_its_own_result(api: Api) -> None:
    for user in ("u1", "u2", "u3"):
        await fund(api, user, 1_000)
    await api.wait_status("betting")
    keys = [uuid.uuid4().hex for _ in range(4)]
    items = [
        {"action": "place", "key": keys[0], "user_id": "u1", "amount": 100},
        {"action": "place", "key": keys[1], "user_id": "u2", "amount": 5_000},  # too much
        {"action": "place", "key": keys[2], "user_id": "u3", "amount": 200, "auto_cashout": 150},
        {"action": "place", "key": keys[3], "user_id": "u4", "amount": 0},  # invalid
    ]
    r = await api.post("/api/v1/bets/batch", {"items": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["key"] for x in results] == keys
    assert [x["status"] for x in results] == [201, 409, 201, 422]
    assert results[1]["body"]["code"] == "insufficient_funds"
    assert results[3]["body"]["code"] == "validation_failed"
    assert await api.balance("u1") == 900 and await api.balance("u2") == 1_000
    assert await api.balance("u3") == 800
    # An item is the same request as the single endpoint: a retry either way replays.
    single = await _bet(api, "u1", 100, key=keys[0])
    assert single.headers["idempotent-replayed"] == "true"
    assert single.json() == results[0]["body"]
    again = await api.post("/api/v1/bets/batch", {"items": items[:3]})
    assert [x["replayed"] for x in again.json()["results"]] == [True, True, True]
    assert await api.balance("u1") == 900
    # A batch of cash-outs, once betting closed (each answered definitively: cashed out
    # while it runs, too_late once it crashed).
    await api.wait_status(("running", "crashed"))
    ticket = results[0]["body"]["ticket_id"]
    cash = await api.post(
        "/api/v1/bets/batch",
        {
            "items": [
                {
                    "action": "cashout",
                    "key": uuid.uuid4().hex,
                    "user_id": "u1",
                    "ticket_id": ticket,
                },
                {
                    "action": "cashout",
                    "key": uuid.uuid4().hex,
                    "user_id": "u1",
                    "ticket_id": "t_" + "0" * 24,
                },
            ]
        },
    )
    first, unknown = cash.json()["results"]
    assert first["status"] == 200 or first["body"]["code"] == "too_late", first
    assert (unknown["status"], unknown["body"]["code"]) == (404, "unknown_ticket")


async def test_bad_batches_are_refused_whole(api: Api) -> None:
    for body in (
        {},
        {"items": []},
        {"items": [{"action": "dance", "key": "k"}]},
        {"items": [{"action": "place", "key": "k", "user_id": "a", "amount": 1}] * 2},
        {
            "items": [
                {"action": "place", "key": str(i), "user_id": "a", "amount": 1} for i in range(101)
            ]
        },
    ):
        r = await api.post("/api/v1/bets/batch", body)
        assert (r.status_code, r.json()["code"]) == (422, "validation_failed"), body


async def test_the_live_state_is_bounded_and_built_once_per_change(tmp_path: Path) -> None:
    config = game_config(tmp_path, betting_ms=3_000, max_bets_per_user=1)
    async with running_server(config) as info:
        _, secret = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await api.wait_status("betting")
            users = [f"p{i}" for i in range(30)]
            for user in users:
                await fund(api, user, 1_000)
            items = [
                {"action": "place", "key": uuid.uuid4().hex, "user_id": u, "amount": 10 + i}
                for i, u in enumerate(users)
            ]
            r = await api.post("/api/v1/bets/batch", {"items": items})
            assert [x["status"] for x in r.json()["results"]] == [201] * len(users)
            await trio.sleep(0.1)  # one tick period: the view catches up
            state = await api.state()
            assert state["participant_count"] == 30
            assert state["total_stake"] == sum(10 + i for i in range(30))
            assert [b["stake"] for b in state["top_bets"]] == list(range(39, 29, -1))
            page = (await api.get("/api/v1/game/state/participants", limit=20)).json()
            assert len(page["participants"]) == 20 and page["next_offset"] == 20
            rest = (await api.get("/api/v1/game/state/participants", offset=20)).json()
            stakes = [p["stake"] for p in page["participants"] + rest["participants"]]
            # (Batch items run concurrently: placement order is theirs.)
            assert sorted(stakes) == [10 + i for i in range(30)]
            assert all(p["user_id"] in users for p in rest["participants"])  # our own users
            # Many readers, no engine change in between: one build serves them all.
            from crashd.api.services import Services  # noqa: F401  (type only)

            bodies = {
                (await client.get("/api/v1/game/state", headers=api.headers)).content
                for _ in range(20)
            }
            assert len(bodies) <= 3  # at most a tick or two passed while reading


async def test_public_cashouts_travel_together(tmp_path: Path) -> None:
    config = game_config(tmp_path, betting_ms=1_000)
    async with running_server(config) as info:
        _, secret = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            users = [f"c{i}" for i in range(8)]
            for user in users:
                await fund(api, user, 1_000)
            ws_url = (await client.post("/api/v1/feed/token", headers=api.headers)).json()["ws_url"]
            async with open_websocket_url(
                ws_url, extra_headers=[("Authorization", f"Bearer {secret}")]
            ) as ws:
                await next_of(ws, lambda m: m["type"] == "welcome")
                await ws.send_message(
                    json.dumps(
                        {
                            "type": "subscribe",
                            "id": 1,
                            "channels": ["round_updates", "user:acme:c0"],
                        }
                    )
                )
                await next_of(ws, lambda m: m["type"] == "snapshot")
                await api.wait_status("betting")
                # Eight auto-cashouts at the same target: decided at the same instant.
                items = [
                    {
                        "action": "place",
                        "key": uuid.uuid4().hex,
                        "user_id": u,
                        "amount": 100,
                        "auto_cashout": 101,
                    }
                    for u in users
                ]
                r = await api.post("/api/v1/bets/batch", {"items": items})
                round_id = r.json()["results"][0]["body"]["round_id"]
                public: list[dict[str, Any]] = []
                own: list[dict[str, Any]] = []
                while True:
                    msg = await next_of(
                        ws, lambda m: m.get("type") in ("cashouts", "cashed_out", "round_settled")
                    )
                    if msg["type"] == "round_settled" and msg["round_id"] == round_id:
                        break
                    (public if msg["channel"] == "round_updates" else own).append(msg)
                assert all(m["type"] == "cashouts" for m in public)  # never one per cash-out
                entries = [c for m in public for c in m["cashouts"]]
                assert len(entries) == 8 and len(public) < 8
                assert all(
                    set(c) == {"stake", "multiplier", "payout", "kind", "elapsed_ms"}
                    for c in entries
                )  # no user, no ticket on the public channel
                assert [(m["type"], m["multiplier"]) for m in own] == [("cashed_out", 101)]

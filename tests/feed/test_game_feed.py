"""The live feed wired to the real game: a real ``crashd`` on 127.0.0.1, REST + WebSocket.

A partner's server subscribes with its API key; a browser with a feed token from REST.
Money news (a bet accepted, a cashout, a loss) reaches the feed only after the ledger
committed it; the crash is announced with the revealed hash, which verifies.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from crashd.engine.fairness import crash_point
from support.feed import next_of
from support.game import Api, fund, game_config
from support.servers import make_key, running_server

SCOPES = "read:game_state,read:balance,write:bet"


async def test_feed_carries_the_game_and_the_users_money(tmp_path: Any) -> None:
    config = game_config(tmp_path)
    async with running_server(config) as info:
        _, secret = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            token_reply = await client.post("/api/v1/feed/token", headers=api.headers)
            assert token_reply.status_code == 200, token_reply.text
            ws_url = token_reply.json()["ws_url"]
            assert ws_url.startswith("ws://127.0.0.1:") and ws_url.endswith("/api/v1/ws")
            await fund(api, "zoe")

            async with open_websocket_url(
                ws_url, extra_headers=[("Authorization", f"Bearer {secret}")]
            ) as ws:
                welcome = await next_of(ws, lambda m: m["type"] == "welcome")
                assert welcome["partner_id"] == "acme"
                await ws.send_message(
                    json.dumps(
                        {
                            "type": "subscribe",
                            "id": 1,
                            "channels": ["round_updates", "live_multiplier", "user:acme:zoe"],
                        }
                    )
                )
                snapshot = await next_of(ws, lambda m: m["type"] == "snapshot")
                state = snapshot["channels"]["round_updates"]
                assert state["status"] in ("betting", "running", "crashed")
                assert state.get("crash_point") is None or state["status"] == "crashed"

                await api.wait_status("betting")
                placed = await api.place("zoe", 1_000, auto=101)
                accepted = await next_of(ws, lambda m: m.get("type") == "bet_accepted")
                assert (accepted["channel"], accepted["ticket_id"]) == (
                    "user:acme:zoe",
                    placed["ticket_id"],
                )
                tick = await next_of(ws, lambda m: m.get("type") == "tick")
                assert tick["channel"] == "live_multiplier" and tick["multiplier"] >= 100
                won = await next_of(
                    ws, lambda m: m.get("type") == "cashed_out" and m["channel"] == "user:acme:zoe"
                )
                assert (won["multiplier"], won["payout"]) == (101, 1_010)
                crashed = await next_of(
                    ws, lambda m: m.get("type") == "crashed" and m["round_id"] == placed["round_id"]
                )
                rnd = await api.wait_round_over(placed["round_id"])
                assert crashed["game_hash"] == rnd["game_hash"]
                assert crash_point(crashed["game_hash"], rnd["salt"]) == crashed["crash_point"]
                # By the time the feed announced the win, the ledger had it.
                assert await api.balance("zoe") == 100_000 - 1_000 + 1_010

            # A browser: feed token as the first message; another partner's user is refused.
            token = token_reply.json()["token"]
            async with open_websocket_url(ws_url) as ws:
                await ws.send_message(json.dumps({"type": "auth", "token": token}))
                await next_of(ws, lambda m: m["type"] == "welcome")
                await ws.send_message(
                    json.dumps({"type": "subscribe", "id": 2, "channels": ["user:globex:zoe"]})
                )
                error = await next_of(ws, lambda m: m["type"] == "error")
                assert error["code"] == "forbidden_channel"


async def test_feed_refuses_bad_credentials(tmp_path: Any) -> None:
    config = game_config(tmp_path)
    async with running_server(config) as info:
        _, secret = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            reply = await client.post(
                "/api/v1/feed/token", headers={"Authorization": f"Bearer {secret}"}
            )
            ws_url, token = reply.json()["ws_url"], reply.json()["token"]
        for credential in ("ck_test_" + "x" * 32, token[:-2] + "AA", "ft_garbage.garbage"):
            async with open_websocket_url(ws_url) as ws:
                await ws.send_message(json.dumps({"type": "auth", "token": credential}))
                with trio.fail_after(10):
                    msg = json.loads(await ws.get_message())
                assert (msg["type"], msg["code"]) == ("error", "unauthorized"), msg

"""``balance`` messages on a user channel, against a real server (issue 11, item 4).

After the commit of every movement of a user's balance — faucet, stake held and
posted, payout, refund, PSP deposit and withdrawal — the user's channel carries the
balance that commit left, and it equals what ``GET /user/balance`` answers. A user
channel's snapshot carries the last balance; one subscribed before any movement is
read from the ledger and announced.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from crashd.api import wire
from crashd.api.security import webhook as pspsig
from crashd.api.server import run_server
from support.feed import next_of
from support.game import Api, fund, game_config
from support.servers import make_key, running_server

SCOPES = "read:game_state,read:balance,write:bet"
PSP_SECRET = "whsec_" + "c3" * 16


async def _rest_balance(api: Api, user: str) -> dict[str, int]:
    r = await api.get("/api/v1/user/balance", user_id=user)
    assert r.status_code == 200, r.text
    body = r.json()
    return {k: body[k] for k in ("posted", "pending", "available")}


async def _psp(
    client: httpx.AsyncClient, event_id: str, type_: str, user: str, amount: int
) -> None:
    doc = {
        "id": event_id,
        "type": type_,
        "created": int(time.time()),
        "data": {"environment": "sandbox", "partner_id": "acme", "user_id": user, "amount": amount},
    }
    body = json.dumps(doc).encode()
    r = await client.post(
        "/api/v1/psp/webhook",
        content=body,
        headers={
            "Content-Type": "application/json",
            wire.PSP_SIGNATURE_HEADER: pspsig.header_value(PSP_SECRET, int(time.time()), body),
        },
    )
    assert r.status_code == 200 and r.json()["status"] == "applied", r.text


def _is_balance(msg: dict[str, Any]) -> bool:
    return msg.get("type") == "balance" and msg.get("channel") == "user:acme:kim"


async def test_every_movement_is_announced_after_its_commit(tmp_path: Path) -> None:
    config = game_config(tmp_path, betting_ms=1_000, psp_secrets_file=tmp_path / "psp")
    config.psp_secrets_file.write_text(PSP_SECRET + "\n")
    async with running_server(config) as info:
        _, secret = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            ws_url = (await client.post("/api/v1/feed/token", headers=api.headers)).json()["ws_url"]
            async with open_websocket_url(
                ws_url, extra_headers=[("Authorization", f"Bearer {secret}")]
            ) as ws:
                await next_of(ws, lambda m: m["type"] == "welcome")
                await ws.send_message(
                    json.dumps({"type": "subscribe", "id": 1, "channels": ["user:acme:kim"]})
                )
                snapshot = await next_of(ws, lambda m: m["type"] == "snapshot")
                # Never seen: the snapshot cannot know it yet, the read is announced.
                assert snapshot["channels"]["user:acme:kim"]["balance"] is None
                first = await next_of(ws, _is_balance)
                assert (first["posted"], first["pending"], first["available"]) == (0, 0, 0)

                last_seq = first["seq"]

                async def expect(posted: int, pending: int) -> None:
                    nonlocal last_seq
                    msg = await next_of(ws, _is_balance)
                    assert msg["seq"] > last_seq
                    last_seq = msg["seq"]
                    assert (msg["user_id"], msg["posted"], msg["pending"], msg["available"]) == (
                        "kim",
                        posted,
                        pending,
                        posted - pending,
                    )
                    # The message follows the commit: REST already says the same.
                    assert await _rest_balance(api, "kim") == {
                        "posted": posted,
                        "pending": pending,
                        "available": posted - pending,
                    }

                await fund(api, "kim", 5_000)  # faucet
                await expect(5_000, 0)
                await api.wait_status("betting")
                r = await api.post("/api/v1/bets/reserve", {"user_id": "kim", "amount": 1_000})
                assert r.status_code == 201, r.text
                await expect(5_000, 1_000)  # stake held
                r = await api.post(
                    "/api/v1/bets/confirm",
                    {"user_id": "kim", "hold_id": r.json()["hold_id"], "auto_cashout": 101},
                )
                assert r.status_code == 201, r.text
                await expect(4_000, 0)  # stake posted
                await expect(4_000 + 1_010, 0)  # auto-cashout at 1.01x paid
                await _psp(client, "evt-dep-1", "deposit.completed", "kim", 2_500)
                await expect(7_510, 0)  # PSP deposit
                await _psp(client, "evt-wd-1", "withdrawal.completed", "kim", 510)
                await expect(7_000, 0)  # PSP withdrawal

            # A new subscriber's snapshot already carries the last balance.
            async with open_websocket_url(
                ws_url, extra_headers=[("Authorization", f"Bearer {secret}")]
            ) as ws:
                await next_of(ws, lambda m: m["type"] == "welcome")
                await ws.send_message(
                    json.dumps({"type": "subscribe", "id": 1, "channels": ["user:acme:kim"]})
                )
                snapshot = await next_of(ws, lambda m: m["type"] == "snapshot")
                assert snapshot["channels"]["user:acme:kim"]["balance"] == {
                    "posted": 7_000,
                    "pending": 0,
                    "available": 7_000,
                }


async def test_a_refund_is_announced(tmp_path: Path) -> None:
    # A round that stays in betting; a graceful stop voids it and refunds the stake,
    # and the refund's balance reaches the feed before the feed closes (1001).
    config = game_config(tmp_path, betting_ms=60_000, stop_wait_s=0)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        info = await nursery.start(partial(run_server, config, shutdown=shutdown))
        _, secret = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "kim", 1_000)
            await api.place("kim", 600)
            assert (await _rest_balance(api, "kim"))["posted"] == 400
            ws_url = (await client.post("/api/v1/feed/token", headers=api.headers)).json()["ws_url"]
        async with open_websocket_url(
            ws_url, extra_headers=[("Authorization", f"Bearer {secret}")]
        ) as ws:
            await next_of(ws, lambda m: m["type"] == "welcome")
            await ws.send_message(
                json.dumps({"type": "subscribe", "id": 1, "channels": ["user:acme:kim"]})
            )
            snapshot = await next_of(ws, lambda m: m["type"] == "snapshot")
            assert snapshot["channels"]["user:acme:kim"]["balance"] == {
                "posted": 400,
                "pending": 0,
                "available": 400,
            }
            shutdown.set()
            # Both come from the void's commit; their order is the seq order.
            seen: dict[str, dict[str, Any]] = {}
            while len(seen) < 2:
                msg = await next_of(ws, lambda m: m.get("type") in ("bet_refunded", "balance"))
                seen[msg["type"]] = msg
            assert seen["bet_refunded"]["stake"] == 600
            assert (seen["balance"]["posted"], seen["balance"]["available"]) == (1_000, 1_000)

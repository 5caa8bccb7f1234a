"""Orders on the feed connection, against a real server: a user-scoped token's browser
bets and cashes out for its user only; a partner's server signs each order; every
order is its REST request (same key, same stored reply, same codes); bad orders are
refused with a result and move nothing."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from crashd.api.security.signing import sign_order
from support.feed import next_of
from support.game import Api, fund, game_config
from support.security import money_fingerprint
from support.servers import SIGNING_SECRETS, make_key, running_server

SCOPES = "read:game_state,read:balance,write:bet"


async def _user_token(api: Api, user: str, **extra: Any) -> dict[str, Any]:
    r = await api.post("/api/v1/feed/user-token", {"user_id": user, **extra})
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _order(ws: WebSocketConnection, order: dict[str, Any]) -> dict[str, Any]:
    await ws.send_message(json.dumps(order))
    return await next_of(ws, lambda m: m.get("type") == "result" and m.get("id") == order["id"])


async def _connect_token(ws: WebSocketConnection, token: str) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "auth", "token": token}))
    return await next_of(ws, lambda m: m["type"] == "welcome")


async def test_a_browser_bets_and_cashes_out_for_its_user_only(tmp_path: Any) -> None:
    config = game_config(tmp_path, betting_ms=1_200)
    async with running_server(config) as info:
        _, secret = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "amy", 1_000)
            await fund(api, "bo", 1_000)
            token = await _user_token(api, "amy")
            assert token["user_id"] == "amy" and "write:bet" in token["scopes"]
            async with open_websocket_url(token["ws_url"]) as ws:
                await _connect_token(ws, token["token"])
                await ws.send_message(
                    json.dumps(
                        {
                            "type": "subscribe",
                            "id": 1,
                            "channels": ["round_updates", "user:acme:amy"],
                        }
                    )
                )
                await next_of(ws, lambda m: m["type"] == "snapshot")
                # Only its own user's channel.
                await ws.send_message(
                    json.dumps({"type": "subscribe", "id": 2, "channels": ["user:acme:bo"]})
                )
                err = await next_of(ws, lambda m: m["type"] == "error" and m.get("id") == 2)
                assert err["code"] == "forbidden_channel"
                await api.wait_status("betting")
                key = uuid.uuid4().hex
                bet = await _order(ws, {"type": "bet", "id": 3, "key": key, "amount": 300})
                assert bet["status"] == 201, bet
                assert bet["body"]["stake"] == 300 and bet["key"] == key
                ticket = bet["body"]["ticket_id"]
                # The same key again: the stored reply. And the REST form is the same request.
                again = await _order(ws, {"type": "bet", "id": 4, "key": key, "amount": 300})
                assert again["replayed"] and again["body"] == bet["body"]
                rest = await api.post("/api/v1/bets", {"user_id": "amy", "amount": 300}, key=key)
                assert rest.headers["idempotent-replayed"] == "true" and rest.json() == bet["body"]
                assert await api.balance("amy") == 700
                # Another user's bet through this token: refused, nothing moved.
                other = await _order(
                    ws,
                    {
                        "type": "bet",
                        "id": 5,
                        "key": uuid.uuid4().hex,
                        "user_id": "bo",
                        "amount": 10,
                    },
                )
                assert (other["status"], other["body"]["code"]) == (403, "insufficient_scope")
                assert await api.balance("bo") == 1_000
                # A target change while betting, then a cash-out once it runs.
                target = await _order(
                    ws,
                    {
                        "type": "auto_cashout",
                        "id": 6,
                        "key": uuid.uuid4().hex,
                        "ticket_id": ticket,
                        "target": 50_000,
                    },
                )
                assert (target["status"], target["body"]["auto_cashout"]) == (200, 50_000), target
                await api.wait_status("running")
                cash = await _order(
                    ws, {"type": "cashout", "id": 7, "key": uuid.uuid4().hex, "ticket_id": ticket}
                )
                assert cash["status"] in (200, 409), cash
                if cash["status"] == 200:
                    assert cash["body"]["payout"] == 300 * cash["body"]["multiplier"] // 100
                else:
                    assert cash["body"]["code"] == "too_late"


async def test_a_partners_server_signs_its_orders(tmp_path: Any) -> None:
    config = game_config(tmp_path, betting_ms=60_000)
    async with running_server(config) as info:
        _, secret = make_key(config, SCOPES)
        signing = SIGNING_SECRETS[secret]
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "cy", 1_000)
            ws_url = (await client.post("/api/v1/feed/token", headers=api.headers)).json()["ws_url"]
            async with open_websocket_url(
                ws_url, extra_headers=[("Authorization", f"Bearer {secret}")]
            ) as ws:
                await next_of(ws, lambda m: m["type"] == "welcome")
                before = money_fingerprint(config.database)
                order = {
                    "type": "bet",
                    "id": 1,
                    "key": uuid.uuid4().hex,
                    "user_id": "cy",
                    "amount": 100,
                }
                unsigned = await _order(ws, order)
                assert (unsigned["status"], unsigned["body"]["code"]) == (401, "signature_missing")
                signed = sign_order(signing, {**order, "id": 2}, int(time.time()))
                tampered = {**signed, "id": 3, "amount": 999}
                bad = await _order(ws, tampered)
                assert (bad["status"], bad["body"]["code"]) == (401, "invalid_signature")
                assert money_fingerprint(config.database) == before
                ok = await _order(ws, signed)
                assert ok["status"] == 201, ok
                replay = await _order(ws, {**signed, "id": 4})
                assert (replay["status"], replay["body"]["code"]) == (409, "nonce_reused")
                assert await api.balance("cy") == 900


async def test_bad_orders_get_a_result_and_move_nothing(tmp_path: Any) -> None:
    config = game_config(tmp_path, betting_ms=60_000)
    async with running_server(config) as info:
        _, secret = make_key(config, SCOPES)
        _, reader = make_key(config, "read:game_state,read:balance")
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "dee", 100)
            token = await _user_token(api, "dee")
            before = money_fingerprint(config.database)
            async with open_websocket_url(token["ws_url"]) as ws:
                await _connect_token(ws, token["token"])
                cases = [
                    ({"type": "bet", "amount": 1}, 400, "idempotency_key_required"),
                    ({"type": "bet", "key": "k1", "amount": -5}, 422, "validation_failed"),
                    (
                        {"type": "bet", "key": "k2", "amount": 1, "extra": 1},
                        422,
                        "validation_failed",
                    ),
                    ({"type": "bet", "key": "k3", "amount": 500}, 409, "insufficient_funds"),
                    ({"type": "cashout", "key": "k4", "ticket_id": "nope"}, 404, "unknown_ticket"),
                    (
                        {"type": "cashout", "key": "k5", "ticket_id": "t_" + "0" * 24},
                        404,
                        "unknown_ticket",
                    ),
                ]
                for i, (order, status, code) in enumerate(cases):
                    result = await _order(ws, {**order, "id": 10 + i})
                    assert (result["status"], result["body"]["code"]) == (status, code), result
                # Garbage is a protocol error, not an order: answered with an error.
                await ws.send_message("{not json")
                err = await next_of(ws, lambda m: m["type"] == "error")
                assert err["code"] == "bad_json"
            assert money_fingerprint(config.database) == before
            # A read-only user token can watch but not bet.
            watch = await _user_token(api, "dee", read_only=True)
            assert "write:bet" not in watch["scopes"]
            async with open_websocket_url(watch["ws_url"]) as ws:
                await _connect_token(ws, watch["token"])
                result = await _order(ws, {"type": "bet", "id": 1, "key": "k9", "amount": 1})
                assert (result["status"], result["body"]["code"]) == (403, "insufficient_scope")
            # A key without write:bet cannot mint a betting token at all.
            r = await Api(client, reader).post("/api/v1/feed/user-token", {"user_id": "dee"})
            assert r.status_code in (200, 403)
            if r.status_code == 200:
                assert "write:bet" not in r.json()["scopes"]
            # Orders before authenticating close the connection (4001).
            async with open_websocket_url(token["ws_url"]) as ws:
                await ws.send_message(json.dumps({"type": "bet", "key": "k", "amount": 1}))
                with trio.fail_after(10):
                    msg = json.loads(await ws.get_message())
                assert (msg["type"], msg["code"]) == ("error", "unauthorized")
            assert money_fingerprint(config.database) == before


def test_the_documented_order_limits_are_the_code() -> None:
    from crashd.api.feed.orders import USER_ORDERS
    from crashd.api.feed.server import FeedConfig
    from support.servers import REPO

    doc = (REPO / "docs" / "feed.md").read_text()
    assert USER_ORDERS.window_s == 1.0
    assert f"at most\n{USER_ORDERS.limit} orders a second" in doc
    assert f"`max_orders_in_flight` ({FeedConfig().max_orders_in_flight})" in doc
    assert f"| `max_orders_in_flight` | {FeedConfig().max_orders_in_flight} |" in doc

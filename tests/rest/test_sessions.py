"""Public routes for a page, against a real server: the game's rules, viewer tokens and
sandbox demo sessions (funded, renewable, rate limited, switchable off), and what a
token may do on REST (its scope, its user, never a signed write)."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

import httpx
import pytest
from trio_websocket import open_websocket_url

from crashd.api.security import sessions as house
from crashd.api.security.keys import KeyStore
from crashd.engine.bounds import MAX_MULTIPLIER, MIN_AUTO_CASHOUT
from support.feed import next_of
from support.game import Api, fund, game_config
from support.security import money_fingerprint
from support.servers import REPO, make_key, running_server

pytestmark = pytest.mark.usefixtures("logscan")


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _demo(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post("/api/v1/sandbox/session", json=body)


async def test_the_rules_are_the_servers_settings(tmp_path: Any) -> None:
    config = game_config(tmp_path, min_stake=5, max_stake=7_000, max_profit=90_000, max_win=700)
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            r = await client.get("/api/v1/game/rules")  # no key: a page shows them first
            assert r.status_code == 200, r.text
            assert r.headers["Cache-Control"] == "no-cache"  # limits change at runtime
            assert r.json() == {
                "environment": "sandbox",
                "min_stake": 5,
                "max_stake": 7_000,
                "max_profit": 90_000,
                "max_profit_bankroll_bp": None,
                "max_win": 700,
                "max_bets_per_user": config.max_bets_per_user,
                "betting_ms": config.betting_ms,
                "pause_ms": config.pause_ms,
                "tick_hz": config.tick_hz,
                "house_edge_percent": 1,
                "rtp_percent": 99,
                "min_auto_cashout": MIN_AUTO_CASHOUT,
                "max_multiplier": MAX_MULTIPLIER,
            }


async def test_a_viewer_token_reads_the_game_and_nothing_else(tmp_path: Any) -> None:
    config = game_config(tmp_path)
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            r = await client.post("/api/v1/session/viewer", json={})
            assert r.status_code == 201, r.text
            session = r.json()
            assert session["scopes"] == ["read:game_state"]
            assert session["expires_in_s"] == house.SESSION_TTL_S
            assert session["ws_url"].startswith("ws://127.0.0.1:")
            token = session["token"]
            assert (
                await client.get("/api/v1/game/state", headers=_bearer(token))
            ).status_code == 200
            assert (
                await client.get("/api/v1/game/rounds", headers=_bearer(token))
            ).status_code == 200
            # Scoped routes it lacks the scope for, and routes that take API keys only.
            r = await client.get(
                "/api/v1/user/balance", params={"user_id": "x"}, headers=_bearer(token)
            )
            assert (r.status_code, r.json()["code"]) == (403, "insufficient_scope")
            r = await client.post("/api/v1/feed/token", headers=_bearer(token), json={})
            assert (r.status_code, r.json()["code"]) == (403, "token_not_accepted")
            # A forged or altered token is no key at all.
            r = await client.get("/api/v1/game/state", headers=_bearer(token[:-2] + "AA"))
            assert (r.status_code, r.json()["code"]) == (401, "invalid_api_key")
            # The same token opens the feed.
            async with open_websocket_url(session["ws_url"]) as ws:
                await ws.send_message(json.dumps({"type": "auth", "token": token}))
                welcome = await next_of(ws, lambda m: m["type"] in ("welcome", "error"))
                assert welcome["type"] == "welcome", welcome


async def test_a_demo_player_is_funded_plays_over_the_feed_and_renews(tmp_path: Any) -> None:
    config = game_config(tmp_path, betting_ms=1_500)
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            r = await _demo(client)
            assert r.status_code == 201, r.text
            s = r.json()
            user = s["user_id"]
            assert re.fullmatch(r"demo-[0-9a-f]{16}", user)
            assert s["partner_id"] == house.DEMO_PARTNER and not s["renewed"]
            assert s["credited"] == house.DEMO_GRANT == s["balance"]["available"]
            assert s["scopes"] == ["read:balance", "read:game_state", "write:bet"]
            token = s["token"]
            # Its own balance and bets over REST; nobody else's.
            r = await client.get(
                "/api/v1/user/balance", params={"user_id": user}, headers=_bearer(token)
            )
            assert r.status_code == 200 and r.json()["available"] == house.DEMO_GRANT
            r = await client.get(
                "/api/v1/user/balance", params={"user_id": "demo-0"}, headers=_bearer(token)
            )
            assert (r.status_code, r.json()["code"]) == (403, "token_wrong_user")
            r = await client.get(
                "/api/v1/user/bets", params={"user_id": "x"}, headers=_bearer(token)
            )
            assert (r.status_code, r.json()["code"]) == (403, "token_wrong_user")
            # A signed write is the API key's: a token cannot make one.
            r = await client.post(
                "/api/v1/bets",
                json={"user_id": user, "amount": 10},
                headers={**_bearer(token), "Idempotency-Key": uuid.uuid4().hex},
            )
            assert (r.status_code, r.json()["code"]) == (403, "token_not_accepted")
            # It bets everything over the feed...
            async with open_websocket_url(s["ws_url"]) as ws:
                await ws.send_message(json.dumps({"type": "auth", "token": token}))
                await next_of(ws, lambda m: m["type"] == "welcome")
                for _ in range(20):
                    bet = await _order(ws, house.DEMO_GRANT)
                    if bet["status"] == 201:
                        break
                assert bet["status"] == 201, bet
            ticket = bet["body"]["ticket_id"]
            r = await client.get(f"/api/v1/bets/{ticket}", headers=_bearer(token))
            assert r.status_code == 200 and r.json()["stake"] == house.DEMO_GRANT
            # ... so renewing tops it up: the same user, a new token.
            r = await _demo(client, token=token)
            assert r.status_code == 201, r.text
            renewed = r.json()
            assert renewed["renewed"] and renewed["user_id"] == user
            assert renewed["credited"] == house.DEMO_GRANT - 0
            # Renewing again while it can afford a bet credits nothing.
            r = await _demo(client, token=renewed["token"])
            assert r.json()["credited"] == 0 and r.json()["user_id"] == user


async def _order(ws: Any, amount: int) -> dict[str, Any]:
    order = {"type": "bet", "id": uuid.uuid4().hex[:8], "key": uuid.uuid4().hex, "amount": amount}
    await ws.send_message(json.dumps(order))
    return await next_of(ws, lambda m: m.get("type") == "result" and m.get("id") == order["id"])


async def test_only_a_demo_sessions_token_renews_it(tmp_path: Any) -> None:
    config = game_config(tmp_path)
    async with running_server(config) as info:
        _, secret = make_key(config, "read:game_state,read:balance,write:bet")
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "amy", 1_000)
            partners = (await api.post("/api/v1/feed/user-token", {"user_id": "amy"})).json()
            viewer = (await client.post("/api/v1/session/viewer", json={})).json()
            demo = (await _demo(client)).json()
            before = money_fingerprint(config.database)
            for bad in (
                partners["token"],  # a user token, but the partner's, not a demo session
                viewer["token"],  # no user
                demo["token"][:-3] + "abc",  # altered
                "ft_" + "A" * 40,
                "not a token",
            ):
                r = await _demo(client, token=bad)
                assert (r.status_code, r.json()["code"]) == (401, "invalid_session_token"), bad
            for bad_body in ({"token": 5}, {"token": ""}, {"user_id": "amy"}):
                r = await _demo(client, **bad_body)
                assert (r.status_code, r.json()["code"]) == (422, "validation_failed")
            assert money_fingerprint(config.database) == before


async def test_sessions_are_limited_per_ip_and_can_be_turned_off(tmp_path: Any) -> None:
    config = game_config(tmp_path, rate_limit_sessions=3)
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            codes = [(await _demo(client)).status_code for _ in range(3)]
            assert codes == [201, 201, 201]
            before = money_fingerprint(config.database)
            r = await _demo(client)
            assert (r.status_code, r.json()["code"]) == (429, "rate_limited")
            assert "retry-after" in r.headers
            r = await client.post("/api/v1/session/viewer", json={})
            assert r.status_code == 429  # one budget for both
            assert money_fingerprint(config.database) == before

    (tmp_path / "off").mkdir()
    off = game_config(tmp_path / "off", rate_limit_sessions=0)
    async with running_server(off) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            for path in ("/api/v1/session/viewer", "/api/v1/sandbox/session"):
                r = await client.post(path, json={})
                assert (r.status_code, r.json()["code"]) == (403, "sessions_disabled"), path


async def test_revoking_a_house_key_ends_its_sessions_for_good(tmp_path: Any) -> None:
    config = game_config(tmp_path)
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            demo = (await _demo(client)).json()
            store = KeyStore(config.database)
            try:
                (key,) = [k for k in store.list() if k.label == house.DEMO_LABEL]
                assert key.partner_id == house.DEMO_PARTNER
                store.revoke(key.id)
            finally:
                store.close()
            r = await client.get("/api/v1/game/state", headers=_bearer(demo["token"]))
            assert (r.status_code, r.json()["code"]) == (401, "invalid_api_key")
            # At once: no new demo players, no renewals; the viewers' key is another.
            r = await _demo(client)
            assert (r.status_code, r.json()["code"]) == (403, "sessions_disabled")
            r = await _demo(client, token=demo["token"])
            assert (r.status_code, r.json()["code"]) == (403, "sessions_disabled")
            assert (await client.post("/api/v1/session/viewer", json={})).status_code == 201
    # And for good: a restart does not make a new demo key.
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            r = await _demo(client)
            assert (r.status_code, r.json()["code"]) == (403, "sessions_disabled")
            assert (await client.post("/api/v1/session/viewer", json={})).status_code == 201


async def test_a_production_server_has_viewers_but_no_demo_players(tmp_path: Any) -> None:
    config = game_config(tmp_path, environment="production")
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            r = await _demo(client)
            assert (r.status_code, r.json()["code"]) == (403, "sessions_disabled")
            r = await client.post("/api/v1/session/viewer", json={})
            assert r.status_code == 201 and r.json()["environment"] == "production"


def test_the_documented_session_figures_are_the_code() -> None:
    doc = " ".join((REPO / "docs" / "api.md").read_text().split())
    assert f"credited {house.DEMO_GRANT // 100:,}.{house.DEMO_GRANT % 100:02d}" in doc
    assert f"({house.DEMO_GRANT} minor units)" in doc
    assert house.SESSION_TTL_S == 3600 and "one-hour" in doc
    assert house.RENEW_GRACE_S == 86400 and "expired less than a day ago" in doc
    assert f"`{house.DEMO_PARTNER}`" in doc and f"`{house.VIEWER_LABEL}`" in doc
    assert f"`{house.DEMO_LABEL}`" in doc and f"(`{house.DEMO_USER_PREFIX}` + 16 hex)" in doc

"""The Idempotency-Key rules, against a real server and its real money routes.

A request's reply is stored by the ledger in the same commit as its money (one durable
commit per request); a retry with the same key and request gets exactly that reply,
with ``Idempotent-Replayed: true``, and moves nothing, also after a restart; another
request under the same key is 422; a key still running is 409 (a test-only route that
blocks, on the real app); a refusal made before any money could move is not stored.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import httpx
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from quart import Blueprint, Response

from crashd.api.rest.contract import documented, json_response
from crashd.api.rest.idempotency import IdempotencyToken, SeenKeys, idempotent, reply_key
from crashd.api.security.auth import requires_scope
from crashd.api.security.keys import Principal
from support.game import Api, fund, game_config
from support.servers import build_app, make_config, make_key, running_server, serving_app

SCOPES = "read:game_state,read:balance,write:bet"


async def _faucet(api: Api, user: str, amount: int, key: str) -> httpx.Response:
    return await api.post("/api/v1/sandbox/faucet", {"user_id": user, "amount": amount}, key=key)


async def test_a_retry_gets_the_stored_reply_and_moves_nothing(api: Api, tmp_path: Path) -> None:
    key = uuid.uuid4().hex
    first = await _faucet(api, "ann", 700, key)
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await _faucet(api, "ann", 700, key)
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content  # byte for byte, the stored reply
    # The same JSON written differently is the same request.
    raw = json.dumps({"amount": 700, "user_id": "ann"}, indent=2).encode()
    from crashd.api.security.signing import sign_request

    headers = {
        **api.headers,
        "Content-Type": "application/json",
        **sign_request(
            api.signing_secret,
            "POST",
            "/api/v1/sandbox/faucet",
            raw,
            key,
            int(__import__("time").time()),
        ),
    }
    pretty = await api.client.post("/api/v1/sandbox/faucet", content=raw, headers=headers)
    assert pretty.status_code == 201 and pretty.headers["idempotent-replayed"] == "true"
    assert await api.balance("ann") == 700


async def test_the_same_key_for_another_request_is_422(api: Api) -> None:
    key = uuid.uuid4().hex
    assert (await _faucet(api, "bob", 100, key)).status_code == 201
    other = await _faucet(api, "bob", 101, key)
    assert (other.status_code, other.json()["code"]) == (422, "idempotency_key_reused")
    # Another route, same key: also another request.
    r = await api.post("/api/v1/bets/reserve", {"user_id": "bob", "amount": 10}, key=key)
    assert (r.status_code, r.json()["code"]) == (422, "idempotency_key_reused")
    assert await api.balance("bob") == 100


async def test_a_ledger_refusal_is_the_stored_answer(api: Api) -> None:
    key = uuid.uuid4().hex
    r1 = await api.post("/api/v1/bets/reserve", {"user_id": "cy", "amount": 5_000}, key=key)
    assert (r1.status_code, r1.json()["code"]) == (409, "insufficient_funds")
    await fund(api, "cy", 10_000)
    # Funded now, but the key's answer was given: the same refusal, the same body.
    r2 = await api.post("/api/v1/bets/reserve", {"user_id": "cy", "amount": 5_000}, key=key)
    assert r2.status_code == 409 and r2.headers["idempotent-replayed"] == "true"
    assert r2.content == r1.content
    assert await api.balance("cy") == 10_000


async def test_keys_are_scoped_per_api_key(tmp_path: Path) -> None:
    config = game_config(tmp_path)
    async with running_server(config) as info:
        _, one = make_key(config, SCOPES)
        _, two = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            a, b = Api(client, one), Api(client, two)
            assert (await _faucet(a, "dee", 10, "same-key")).status_code == 201
            r = await _faucet(b, "dee", 20, "same-key")
            assert r.status_code == 201 and "idempotent-replayed" not in r.headers
            assert await a.balance("dee") == 30  # one partner: both credits landed


async def test_one_commit_per_request_and_replies_survive_a_restart(tmp_path: Path) -> None:
    config = game_config(tmp_path)
    key = uuid.uuid4().hex
    async with running_server(config) as info:
        key_id, secret = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            first = await _faucet(api, "eve", 300, key)
            assert first.status_code == 201
    with sqlite3.connect(config.database) as db:
        # The reply is in the ledger, keyed by the hash of the scoped key; the API keeps
        # no idempotency table of its own (that needed two commits per request).
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_schema WHERE type='table'")}
        assert "api_idempotency" not in tables
        [(stored_key, body)] = db.execute("SELECT key, body FROM replies").fetchall()
        assert stored_key == reply_key(key_id, key) and body == first.content
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            again = await _faucet(api, "eve", 300, key)
            assert again.headers["idempotent-replayed"] == "true"
            assert again.content == first.content
            assert await api.balance("eve") == 300


async def test_a_refusal_before_the_ledger_is_not_stored(tmp_path: Path) -> None:
    """A cash-out of a bet still in betting moves nothing and stores nothing: asked
    again with the same key once the round runs, it is answered anew."""
    config = game_config(tmp_path, betting_ms=1_500)
    async with running_server(config) as info:
        _, secret = make_key(config, SCOPES)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "fay")
            await api.wait_status("betting")
            placed = await api.place("fay", 100)
            key = uuid.uuid4().hex
            path = f"/api/v1/bets/{placed['ticket_id']}/cashout"
            r1 = await api.post(path, {"user_id": "fay"}, key=key)
            assert (r1.status_code, r1.json()["code"]) == (409, "round_not_running")
            await api.wait_status("running")
            r2 = await api.post(path, {"user_id": "fay"}, key=key)
            assert "idempotent-replayed" not in r2.headers
            assert r2.status_code in (200, 409), r2.text
            if r2.status_code == 200:
                r3 = await api.post(path, {"user_id": "fay"}, key=key)
                assert r3.headers["idempotent-replayed"] == "true" and r3.content == r2.content


async def test_a_request_still_running_is_409(tmp_path: Path) -> None:
    entered, release = trio.Event(), trio.Event()
    runs: list[str] = []
    bp = Blueprint("idemtest", __name__, url_prefix="/test")

    @bp.post("/slow")
    @documented("test")
    @requires_scope("write:bet")
    @idempotent
    async def slow(*, principal: Principal, idempotency: IdempotencyToken) -> Response:
        runs.append(idempotency.scoped_id)
        entered.set()
        await release.wait()
        return json_response({"done": True})

    under_test = build_app(make_config(tmp_path))
    under_test.app.register_blueprint(bp)
    _, secret = make_key(under_test.config, "write:bet")
    async with serving_app(under_test) as info:
        async with httpx.AsyncClient(
            base_url=info.url, headers={"Authorization": f"Bearer {secret}"}
        ) as client:
            results: list[httpx.Response] = []
            async with trio.open_nursery() as nursery:

                async def first() -> None:
                    results.append(
                        await client.post("/test/slow", headers={"Idempotency-Key": "k"})
                    )

                nursery.start_soon(first)
                await entered.wait()
                r = await client.post("/test/slow", headers={"Idempotency-Key": "k"})
                assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_flight"
                assert r.headers["retry-after"] == "1"
                release.set()
            assert results[0].status_code == 200
            # Nothing moved money, so nothing was stored: the key is free again.
            again = await client.post("/test/slow", headers={"Idempotency-Key": "k"})
            assert again.status_code == 200 and len(runs) == 2
            for bad in ({}, {"Idempotency-Key": ""}, {"Idempotency-Key": "a b"}):
                r = await client.post("/test/slow", headers=bad)
                assert r.status_code == 400 and r.json()["code"].startswith("idempotency_key_")
            assert len(runs) == 2


@settings(max_examples=50)
@given(st.sets(st.binary(min_size=16, max_size=16), max_size=300))
def test_seen_keys_never_forget_a_key(keys: set[bytes]) -> None:
    seen = SeenKeys(capacity=200)
    for key in keys:
        seen.add(key)
    assert all(key in seen for key in keys)


def test_seen_keys_false_positives_are_rare() -> None:
    import hashlib

    seen = SeenKeys(capacity=10_000, false_positive_rate=0.01)
    for i in range(10_000):
        seen.add(hashlib.blake2b(b"in%d" % i, digest_size=16).digest())
    strangers = [hashlib.blake2b(b"out%d" % i, digest_size=16).digest() for i in range(20_000)]
    rate = sum(k in seen for k in strangers) / len(strangers)
    assert rate < 0.03, rate


@pytest.mark.parametrize("n", [0, 1])
def test_reply_keys_are_fixed_size_and_scoped(n: int) -> None:
    assert len(reply_key("key_a", "x" * (255 * n + 1))) == 16
    assert reply_key("key_a", "k") != reply_key("key_b", "k")

"""The Idempotency-Key wrapper, through the real app and server, on test-only routes
(the bet routes will use the same wrapper)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import httpx
import pytest
import trio
from quart import Blueprint, Response

from crashd.api.rest.contract import documented, json_body, json_response
from crashd.api.rest.idempotency import (
    IdempotencyStore,
    IdempotencyToken,
    InFlight,
    Replay,
    Reused,
    Started,
    fingerprint,
    idempotent,
)
from crashd.api.rest.problems import Problem, register_code
from crashd.api.rest.validation import Integer, String
from crashd.api.security.auth import requires_scope
from crashd.api.security.keys import Principal
from support.servers import build_app, make_config, make_key, serving_app

register_code("test_refused", 422, "Refused by a test route")


@dataclass(frozen=True)
class Transfer:
    user_id: Annotated[str, String(min_length=1, max_length=32)]
    amount: Annotated[int, Integer(minimum=1, maximum=10**9)]


@dataclass
class Effects:
    """What the test routes did: the thing idempotency must protect."""

    applied: list[tuple[str, int]]
    entered: trio.Event
    release: trio.Event
    fail_next: bool = False
    ledger_ids: list[str] = field(default_factory=list)


def _routes(effects: Effects) -> Blueprint:
    bp = Blueprint("idemtest", __name__, url_prefix="/test")

    @bp.post("/transfers")
    @documented("test")
    @requires_scope("write:bet")
    @idempotent
    @json_body(Transfer)
    async def transfer(
        *, principal: Principal, idempotency: IdempotencyToken, body: Transfer
    ) -> Response:
        assert idempotency.key_id == principal.key_id
        effects.ledger_ids.append(idempotency.scoped_id)
        if body.amount > 1000:
            raise Problem("test_refused", "not enough money")
        if effects.fail_next:
            effects.fail_next = False
            raise RuntimeError("database on fire")
        effects.applied.append((body.user_id, body.amount))
        n = len(effects.applied)
        return json_response(
            {"transfer": n, "amount": body.amount},
            status=201,
            headers={"Location": f"/test/transfers/{n}"},
        )

    @bp.post("/slow")
    @documented("test")
    @requires_scope("write:bet")
    @idempotent
    async def slow(*, principal: Principal, idempotency: IdempotencyToken) -> Response:
        effects.entered.set()
        await effects.release.wait()
        effects.applied.append(("slow", 0))
        return json_response({"done": True})

    return bp


@pytest.fixture
async def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    effects = Effects([], trio.Event(), trio.Event())
    under_test = build_app(make_config(tmp_path))
    under_test.app.register_blueprint(_routes(effects))
    _, secret = make_key(under_test.config, "write:bet")
    async with serving_app(under_test) as info:
        async with httpx.AsyncClient(
            base_url=info.url, headers={"Authorization": f"Bearer {secret}"}
        ) as client:
            yield client, effects, under_test


def _h(key: str) -> dict[str, str]:
    return {"Idempotency-Key": key}


async def test_missing_or_invalid_key_is_400_and_nothing_runs(env) -> None:  # type: ignore[no-untyped-def]
    client, effects, _ = env
    r = await client.post("/test/transfers", json={"user_id": "u", "amount": 5})
    assert r.status_code == 400 and r.json()["code"] == "idempotency_key_required"
    for bad in ("", "x" * 256, "has space", "é"):
        r = await client.post(
            "/test/transfers",
            json={"user_id": "u", "amount": 5},
            headers={"Idempotency-Key": bad.encode("utf-8")},
        )
        assert r.status_code == 400 and r.json()["code"] == "idempotency_key_invalid", bad
    assert effects.applied == []


async def test_same_key_same_body_replays_the_first_response(env) -> None:  # type: ignore[no-untyped-def]
    client, effects, _ = env
    first = await client.post(
        "/test/transfers", json={"user_id": "u", "amount": 5}, headers=_h("k-1")
    )
    assert first.status_code == 201 and "idempotent-replayed" not in first.headers
    for _ in range(3):
        again = await client.post(
            "/test/transfers", json={"user_id": "u", "amount": 5}, headers=_h("k-1")
        )
        assert again.status_code == 201
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"
        assert again.headers["location"] == first.headers["location"]
        assert again.headers["content-type"] == "application/json"
        assert again.headers["x-request-id"] != first.headers["x-request-id"]  # a new request
    assert effects.applied == [("u", 5)]
    assert len(effects.ledger_ids) == 1 and effects.ledger_ids[0].endswith("/k-1")
    # The same JSON re-encoded (order, whitespace) is the same request.
    again = await client.post(
        "/test/transfers",
        content=b'{ "amount": 5,\n "user_id": "u" }',
        headers={**_h("k-1"), "Content-Type": "application/json"},
    )
    assert again.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert effects.applied == [("u", 5)]


async def test_same_key_different_request_is_422(env) -> None:  # type: ignore[no-untyped-def]
    client, effects, _ = env
    await client.post("/test/transfers", json={"user_id": "u", "amount": 5}, headers=_h("k-2"))
    r = await client.post("/test/transfers", json={"user_id": "u", "amount": 6}, headers=_h("k-2"))
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    r = await client.post(
        "/test/transfers?x=1", json={"user_id": "u", "amount": 5}, headers=_h("k-2")
    )
    assert r.status_code == 422 and r.json()["code"] == "idempotency_key_reused"
    assert effects.applied == [("u", 5)]


async def test_keys_are_scoped_per_api_key(env) -> None:  # type: ignore[no-untyped-def]
    client, effects, under_test = env
    _, other = make_key(under_test.config, "write:bet", partner="other")
    await client.post("/test/transfers", json={"user_id": "u", "amount": 5}, headers=_h("shared"))
    r = await client.post(
        "/test/transfers",
        json={"user_id": "u", "amount": 7},
        headers={**_h("shared"), "Authorization": f"Bearer {other}"},
    )
    assert r.status_code == 201 and "idempotent-replayed" not in r.headers
    assert effects.applied == [("u", 5), ("u", 7)]


async def test_a_request_still_running_is_409(env) -> None:  # type: ignore[no-untyped-def]
    client, effects, _ = env
    results: list[httpx.Response] = []
    async with trio.open_nursery() as nursery:

        async def first() -> None:
            results.append(await client.post("/test/slow", headers=_h("k-3")))

        nursery.start_soon(first)
        await effects.entered.wait()
        r = await client.post("/test/slow", headers=_h("k-3"))
        assert r.status_code == 409 and r.json()["code"] == "idempotency_key_in_flight"
        assert r.headers["retry-after"] == "1"
        effects.release.set()
    assert results[0].status_code == 200
    replay = await client.post("/test/slow", headers=_h("k-3"))
    assert replay.headers["idempotent-replayed"] == "true"
    assert effects.applied == [("slow", 0)]


async def test_definitive_problems_are_stored_and_server_errors_are_not(env) -> None:  # type: ignore[no-untyped-def]
    client, effects, _ = env
    # A domain refusal is the answer for that key: asked again, answered the same.
    r1 = await client.post(
        "/test/transfers", json={"user_id": "u", "amount": 5000}, headers=_h("k-4")
    )
    r2 = await client.post(
        "/test/transfers", json={"user_id": "u", "amount": 5000}, headers=_h("k-4")
    )
    assert r1.status_code == r2.status_code == 422 and r1.json()["code"] == "test_refused"
    assert r2.headers["idempotent-replayed"] == "true"
    assert r2.json()["request_id"] == r1.json()["request_id"]  # the stored body, verbatim
    assert r2.headers["content-type"] == "application/problem+json"
    # Validation failures too.
    v1 = await client.post(
        "/test/transfers", json={"user_id": "u", "amount": -1}, headers=_h("k-5")
    )
    v2 = await client.post(
        "/test/transfers", json={"user_id": "u", "amount": -1}, headers=_h("k-5")
    )
    assert v1.status_code == 422 and v2.headers["idempotent-replayed"] == "true"
    # A 500 frees the key: the retry runs (the ledger dedupes by the same key).
    effects.fail_next = True
    e1 = await client.post("/test/transfers", json={"user_id": "u", "amount": 9}, headers=_h("k-6"))
    assert e1.status_code == 500 and e1.json()["code"] == "internal_error"
    e2 = await client.post("/test/transfers", json={"user_id": "u", "amount": 9}, headers=_h("k-6"))
    assert e2.status_code == 201 and "idempotent-replayed" not in e2.headers
    assert effects.applied == [("u", 9)]


async def test_a_claim_left_by_a_dead_process_is_taken_over(env) -> None:  # type: ignore[no-untyped-def]
    client, effects, under_test = env
    body = b'{"user_id":"u","amount":5}'
    key_id = await _principal_key_id(under_test, client)
    fp = fingerprint("POST", "/test/transfers", b"", body)
    assert isinstance(
        under_test.services.idempotency.begin(key_id, "k-7", fp, "previous-run", time.time()),
        Started,
    )
    r = await client.post(
        "/test/transfers", content=body, headers={**_h("k-7"), "Content-Type": "application/json"}
    )
    assert r.status_code == 201
    assert effects.applied == [("u", 5)]


async def _principal_key_id(under_test, client: httpx.AsyncClient) -> str:  # type: ignore[no-untyped-def]
    secret = client.headers["authorization"].split()[1]
    key = under_test.services.keys.lookup(secret)
    assert key is not None
    return str(key.id)


def test_store_rules_and_retention(tmp_path: Path) -> None:
    store = IdempotencyStore(tmp_path / "i.sqlite3")
    day = 24 * 3600
    fp, other = b"a" * 32, b"b" * 32
    t0 = 1_000_000.0
    assert isinstance(store.begin("key", "k", fp, "run1", t0), Started)
    assert isinstance(store.begin("key", "k", fp, "run1", t0 + 1), InFlight)
    assert isinstance(store.begin("key", "k", other, "run1", t0 + 1), Reused)
    store.complete("key", "k", "run1", 201, "application/json", None, b"{}")
    assert store.begin("key", "k", fp, "run2", t0 + day - 1) == Replay(
        201, "application/json", None, b"{}"
    )
    # Kept at least 24 h; after the retention the key is new again.
    assert isinstance(store.begin("key", "k", other, "run2", t0 + day + 1), Started)
    store.release("key", "k", "run2")
    assert store.count() == 0
    store.begin("key", "old", fp, "run1", t0)
    store.begin("key", "new", fp, "run1", t0 + day)
    assert store.purge(t0 + day + 10) == 1 and store.count() == 1
    with pytest.raises(ValueError):
        IdempotencyStore(tmp_path / "j.sqlite3", retention_s=3600)
    store.close()

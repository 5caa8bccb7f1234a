"""GET /api/v1/fairness, /health and /openapi.json; the OpenAPI document cannot drift."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from quart import Blueprint, Response

from crashd.api.cli.main import main
from crashd.api.rest.contract import documented, json_body, json_response, query_params
from crashd.api.rest.idempotency import idempotent
from crashd.api.rest.openapi import api_rules, build_openapi, undocumented_routes
from crashd.api.rest.validation import Integer, String
from crashd.api.security.auth import requires_scope
from crashd.api.security.keys import Principal
from crashd.engine import chainstore
from crashd.engine.fairness import ChainReader, crash_point, verify_game
from support.servers import REPO, build_app, make_config, running_server, serving_app


async def test_health(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as info:
        async with httpx.AsyncClient(base_url=info.url) as client:
            r = await client.get("/api/v1/health")
    assert r.status_code == 200
    doc = r.json()
    assert doc["status"] == "ok" and doc["environment"] == "sandbox" and doc["uptime_s"] >= 0
    assert r.headers["cache-control"] == "no-store"


async def test_fairness_publishes_the_commitment_and_nothing_secret(tmp_path: Path) -> None:
    # A sandbox server fixes a random salt itself when it creates the chain.
    config = make_config(tmp_path, chain_length=300)
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url) as client:
            sandbox = (await client.get("/api/v1/fairness")).json()
    chain = chainstore.load(config.chain_file)
    assert sandbox["scheme"] == "bustabit-v2"
    assert sandbox["terminating_hash"] == chain.spec.terminating_hash.hex()
    assert sandbox["games"] == 300 and sandbox["chain_encoding"] == "hex"
    assert sandbox["salt"] == chain.salt and sandbox["salt_fixed"] is True
    text = str(sandbox)
    assert chain.spec.seed.hex() not in text
    assert not any(c.hex() in text for c in chain.spec.checkpoints)
    assert any(
        "crashd verify --hash GAME_HASH --terminating " + sandbox["terminating_hash"] in c
        for c in sandbox["verify"]["commands"]
    )


async def test_production_waits_for_the_operator_to_fix_the_salt(tmp_path: Path) -> None:
    config = make_config(tmp_path, chain_length=300, environment="production")
    assert (
        main(
            [
                "chain",
                "new",
                "--file",
                str(config.chain_file),
                "--length",
                "300",
                "--interval",
                "100",
            ]
        )
        == 0
    )
    with pytest.raises(BaseException) as refused:
        async with running_server(config):
            pass
    assert "salt is not fixed" in str(_root(refused.value))

    # The operator publishes the terminating hash, then fixes the salt; now it serves it.
    assert main(["chain", "salt", "--file", str(config.chain_file), "my-public-salt"]) == 0
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url) as client:
            after = (await client.get("/api/v1/fairness")).json()
    chain = chainstore.load(config.chain_file)
    assert after["salt"] == "my-public-salt" and after["salt_fixed"] is True
    assert "crashd verify --hash GAME_HASH --salt my-public-salt" in after["verify"]["commands"]

    # The published recipe verifies a real game of this chain (game 7, say).
    game_hash = ChainReader(chain.spec).game_hash(7)
    assert verify_game(game_hash, after["salt"], after["terminating_hash"], 7) == crash_point(
        game_hash, "my-public-salt"
    )


def _root(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def test_openapi_documents_every_api_route_and_nothing_else(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as info:
        async with httpx.AsyncClient(base_url=info.url) as client:
            doc = (await client.get("/api/v1/openapi.json")).json()
    under_test = build_app(make_config(tmp_path))  # the same files, server stopped
    try:
        app = under_test.app
        assert undocumented_routes(app) == []
        routed = {(path, method) for path, method, _ in api_rules(app)}
        documented_ops = {(path, method) for path, ops in doc["paths"].items() for method in ops}
        assert routed == documented_ops
        assert {"/api/v1/health", "/api/v1/fairness", "/api/v1/openapi.json"} <= set(doc["paths"])
    finally:
        under_test.services.close()
    assert doc["openapi"] == "3.1.0"
    for ops in doc["paths"].values():
        for op in ops.values():
            assert (
                op["summary"]
                and any(s.startswith("2") for s in op["responses"])
                and "500" in op["responses"]
            )


@dataclass(frozen=True)
class Bet:
    user_id: Annotated[str, String(min_length=1, max_length=64)]
    amount: Annotated[int, Integer(minimum=1)]


@dataclass(frozen=True)
class Paging:
    limit: Annotated[int, Integer(minimum=1, maximum=100)] = 20


def _api_routes() -> Blueprint:
    bp = Blueprint("apitest", __name__, url_prefix="/api/v1")

    @bp.post("/things")
    @documented("Make a thing", status=201)
    @requires_scope("write:bet")
    @idempotent
    @json_body(Bet)
    async def make_thing(*, principal: Principal, idempotency: object, body: Bet) -> Response:
        return json_response({}, status=201)

    @bp.get("/things/<int:thing_id>")
    @documented("Read a thing")
    @requires_scope("read:game_state")
    @query_params(Paging)
    async def read_thing(thing_id: int, *, principal: Principal, query: Paging) -> Response:
        return json_response({"id": thing_id})

    @bp.get("/forgotten")
    async def forgotten() -> Response:
        return json_response({})

    return bp


def test_openapi_is_generated_from_the_route_decorators(tmp_path: Path) -> None:
    under_test = build_app(make_config(tmp_path))
    try:
        app = under_test.app
        app.register_blueprint(_api_routes())
        # A route without @documented is caught (the coverage test above would fail).
        assert undocumented_routes(app) == ["GET /api/v1/forgotten"]
        doc = build_openapi(app)
    finally:
        under_test.services.close()
    assert "/api/v1/forgotten" not in doc["paths"]
    post = doc["paths"]["/api/v1/things"]["post"]
    assert post["x-required-scope"] == "write:bet" and post["security"] == [{"bearerAuth": []}]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["user_id", "amount"] and schema["additionalProperties"] is False
    assert schema["properties"]["amount"]["minimum"] == 1
    assert any(
        p["name"] == "Idempotency-Key" and p["in"] == "header" and p["required"]
        for p in post["parameters"]
    )
    assert {"201", "400", "401", "403", "409", "413", "415", "422", "500"} <= set(post["responses"])
    assert "Idempotent-Replayed" in post["responses"]["201"]["headers"]
    get = doc["paths"]["/api/v1/things/{thing_id}"]["get"]
    params = {p["name"]: p for p in get["parameters"]}
    assert params["thing_id"]["in"] == "path" and params["thing_id"]["schema"]["type"] == "integer"
    assert params["limit"]["in"] == "query" and params["limit"]["required"] is False
    assert "422" in get["responses"] and "413" not in get["responses"]
    assert re.fullmatch(r"[A-Za-z0-9_]+", get["operationId"])


@pytest.mark.parametrize("path", ["/api/v1/health", "/api/v1/fairness", "/api/v1/openapi.json"])
async def test_meta_routes_are_public_and_get_only(tmp_path: Path, path: str) -> None:
    under_test = build_app(make_config(tmp_path))
    async with serving_app(under_test) as info:
        async with httpx.AsyncClient(base_url=info.url) as client:
            assert (await client.get(path)).status_code == 200
            assert (await client.post(path)).status_code == 405


def test_the_docs_code_and_settings_tables_are_the_code() -> None:
    from crashd.api.config import describe_settings
    from crashd.api.rest.problems import describe_api_codes
    from crashd.engine.reasons import describe_codes

    docs = (REPO / "docs" / "api.md").read_text()
    for name, table in (
        ("codes:api", describe_api_codes()),
        ("codes:game", describe_codes()),
        ("settings", describe_settings()),
    ):
        begin, end = f"<!-- {name}:begin -->\n", f"<!-- {name}:end -->"
        assert docs[docs.index(begin) + len(begin) : docs.index(end)] == table, name


def test_docs_list_every_problem_code_and_setting() -> None:
    from crashd.api.config import SETTINGS
    from crashd.api.rest.problems import CODES

    docs = (REPO / "docs" / "api.md").read_text()
    for code in CODES:
        if not code.startswith("test_"):  # codes registered by test modules
            assert f"`{code}`" in docs, code
    for setting in SETTINGS:
        assert (
            f"`{setting.name}`" in docs
            and f"`{setting.env}`" in docs
            and f"`{setting.flag}`" in docs
        )

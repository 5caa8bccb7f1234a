"""The error and header contract, over real HTTP: problem+json everywhere, request ids,
strict bodies, no internals in a 500, one access-log line per request."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import httpx
import pytest
from quart import Blueprint, Response

from crashd.api.rest.contract import documented, json_body, json_response, query_params
from crashd.api.rest.validation import Boolean, Choice, Integer, String
from support.servers import build_app, make_config, running_server, serving_app

PROBLEM_MEMBERS = {"type", "title", "status", "detail", "code", "request_id"}


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    doc = response.json()
    assert PROBLEM_MEMBERS <= set(doc)
    assert doc["status"] == status
    assert doc["code"] == code
    assert doc["type"] == f"urn:crashd:problem:{code}"
    assert doc["request_id"] == response.headers["x-request-id"]
    return doc


@dataclass(frozen=True)
class Order:
    """A test body schema."""

    user_id: Annotated[str, String(min_length=1, max_length=16, pattern=r"[a-z0-9_]+")]
    amount: Annotated[int, Integer(minimum=1, maximum=1_000_000)]
    side: Annotated[Literal["buy", "sell"], Choice()]
    note: Annotated[str | None, String(max_length=10)] = None
    urgent: Annotated[bool, Boolean()] = False


@dataclass(frozen=True)
class Page:
    limit: Annotated[int, Integer(minimum=1, maximum=100)] = 20
    cursor: Annotated[str | None, String(max_length=32)] = None


def _test_routes() -> Blueprint:
    bp = Blueprint("testing", __name__, url_prefix="/test")

    @bp.post("/orders")
    @documented("test")
    @json_body(Order)
    async def orders(*, body: Order) -> Response:
        return json_response(
            {
                "user_id": body.user_id,
                "amount": body.amount,
                "side": body.side,
                "note": body.note,
                "urgent": body.urgent,
            },
            status=201,
        )

    @bp.get("/page")
    @documented("test")
    @query_params(Page)
    async def page(*, query: Page) -> Response:
        return json_response({"limit": query.limit, "cursor": query.cursor})

    @bp.get("/boom")
    async def boom() -> Response:
        raise RuntimeError("secret internal detail /etc/passwd")

    return bp


@pytest.fixture
async def client(tmp_path: Path):  # type: ignore[no-untyped-def]
    under_test = build_app(make_config(tmp_path, max_body_bytes=2048))
    under_test.app.register_blueprint(_test_routes())
    async with serving_app(under_test) as info:
        async with httpx.AsyncClient(base_url=info.url) as c:
            yield c


async def test_every_response_has_a_request_id_and_sane_inbound_ids_are_kept(
    client: httpx.AsyncClient,
) -> None:
    r1 = await client.get("/api/v1/health")
    r2 = await client.get("/api/v1/health")
    assert r1.headers["x-request-id"] != r2.headers["x-request-id"]
    assert len(r1.headers["x-request-id"]) >= 16
    kept = await client.get("/api/v1/health", headers={"X-Request-ID": "partner-42.a:b"})
    assert kept.headers["x-request-id"] == "partner-42.a:b"
    for hostile in ("x" * 129, "a b", "a\tb", "é"):
        r = await client.get("/nope", headers={b"X-Request-ID": hostile.encode("utf-8")})
        assert r.headers["x-request-id"] != hostile
        assert_problem(r, 404, "not_found")


async def test_404_405_are_problems(client: httpx.AsyncClient) -> None:
    assert_problem(await client.get("/api/v1/nothing-here"), 404, "not_found")
    doc = assert_problem(await client.delete("/api/v1/health"), 405, "method_not_allowed")
    r = await client.put("/api/v1/fairness")
    assert "GET" in r.headers["allow"]
    assert "DELETE" in str(doc["detail"])


async def test_500_never_leaks_internals(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="crashd.api")
    r = await client.get("/test/boom")
    doc = assert_problem(r, 500, "internal_error")
    assert "secret" not in r.text and "RuntimeError" not in r.text and "passwd" not in r.text
    # The operator still gets the traceback, tied to the request id.
    assert any(doc["request_id"] in rec.getMessage() for rec in caplog.records)


async def test_valid_body_is_parsed_into_the_schema(client: httpx.AsyncClient) -> None:
    r = await client.post("/test/orders", json={"user_id": "u1", "amount": 5, "side": "buy"})
    assert r.status_code == 201
    assert r.json() == {"user_id": "u1", "amount": 5, "side": "buy", "note": None, "urgent": False}
    r = await client.post(
        "/test/orders",
        content=b'{"user_id":"u1","amount":5,"side":"sell","note":null,"urgent":true}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert r.status_code == 201 and r.json()["urgent"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user_id": "u1", "amount": "5", "side": "buy"}, "amount"),  # no coercion
        ({"user_id": "u1", "amount": 5.0, "side": "buy"}, "amount"),  # float is not int
        ({"user_id": "u1", "amount": True, "side": "buy"}, "amount"),  # bool is not int
        ({"user_id": "u1", "amount": 0, "side": "buy"}, "amount"),  # range
        ({"user_id": "u1", "amount": 10**30, "side": "buy"}, "amount"),  # range, huge
        ({"user_id": "U!", "amount": 5, "side": "buy"}, "user_id"),  # pattern
        ({"user_id": "u" * 17, "amount": 5, "side": "buy"}, "user_id"),  # length
        ({"user_id": "u1", "amount": 5, "side": "hold"}, "side"),  # choice
        ({"user_id": "u1", "amount": 5, "side": "buy", "extra": 1}, "extra"),  # unknown field
        ({"amount": 5, "side": "buy"}, "user_id"),  # missing
        ({"user_id": None, "amount": 5, "side": "buy"}, "user_id"),  # null not allowed
        ({"user_id": "u1", "amount": 5, "side": "buy", "urgent": 1}, "urgent"),
    ],
)
async def test_invalid_bodies_are_422_with_every_field_named(
    client: httpx.AsyncClient, body: dict[str, object], field: str
) -> None:
    raw = json.dumps(body).encode()
    r = await client.post("/test/orders", content=raw, headers={"Content-Type": "application/json"})
    doc = assert_problem(r, 422, "validation_failed")
    assert field in [e["field"] for e in doc["errors"]]


async def test_all_errors_are_reported_at_once(client: httpx.AsyncClient) -> None:
    r = await client.post("/test/orders", json={"amount": -1, "side": 3, "x": 1})
    doc = assert_problem(r, 422, "validation_failed")
    assert {e["field"] for e in doc["errors"]} == {"user_id", "amount", "side", "x"}


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"",
        b"[1,2",
        b'{"a":1}{"b":2}',
        b'{"amount": NaN}',
        b'{"a":1,"a":2}',
        b"\xff\xfe",
        b'{"a": "\\ud800"}',  # a lone surrogate: a str Python cannot encode back
        b'{"a": ["x\\uDFFF"]}',
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
async def test_malformed_json_is_400(client: httpx.AsyncClient, raw: bytes) -> None:
    r = await client.post("/test/orders", content=raw, headers={"Content-Type": "application/json"})
    # The deeply nested one is also over the 2 KiB limit of this app: 413 first.
    expected = (413, "payload_too_large") if len(raw) > 2048 else (400, "malformed_json")
    assert_problem(r, *expected)


async def test_top_level_must_be_an_object(client: httpx.AsyncClient) -> None:
    for raw in (b"[]", b"1", b'"x"', b"null"):
        r = await client.post(
            "/test/orders", content=raw, headers={"Content-Type": "application/json"}
        )
        assert_problem(r, 422, "validation_failed")


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    for ctype in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ):
        r = await client.post(
            "/test/orders", content=b'{"user_id":"u"}', headers={"Content-Type": ctype}
        )
        assert_problem(r, 415, "unsupported_media_type")
    r = await client.post("/test/orders", content=b'{"user_id":"u"}')  # no content type at all
    assert_problem(r, 415, "unsupported_media_type")


async def test_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    big = json.dumps({"user_id": "u1", "amount": 5, "side": "buy", "note": "x" * 5000}).encode()
    r = await client.post("/test/orders", content=big, headers={"Content-Type": "application/json"})
    assert_problem(r, 413, "payload_too_large")

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b" " * 1000

    # Chunked (no Content-Length): the limit still holds.
    r = await client.post(
        "/test/orders", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert_problem(r, 413, "payload_too_large")


async def test_query_parameters_are_validated(client: httpx.AsyncClient) -> None:
    assert (await client.get("/test/page")).json() == {"limit": 20, "cursor": None}
    assert (await client.get("/test/page?limit=5&cursor=abc")).json() == {
        "limit": 5,
        "cursor": "abc",
    }
    for bad in (
        "limit=0",
        "limit=abc",
        "limit=1&limit=2",
        "limit=+5",
        "unknown=1",
        "limit=99999999999999999999",
    ):
        r = await client.get(f"/test/page?{bad}")
        assert_problem(r, 422, "validation_failed")


async def test_access_log_has_one_line_per_request_without_secrets(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="crashd.access")
    async with running_server(make_config(tmp_path)) as info:
        async with httpx.AsyncClient(base_url=info.url) as c:
            await c.get("/api/v1/health", headers={"X-Request-ID": "trace-1"})
            await c.get(
                "/api/v1/nope%0Ainjected", headers={"Authorization": "Bearer ck_test_SECRETSECRET"}
            )
    lines = [r.getMessage() for r in caplog.records if r.name == "crashd.access"]
    assert len(lines) == 2
    assert lines[0].startswith(
        "request_id=trace-1 key_id=- method=GET path=/api/v1/health status=200 duration_ms="
    )
    assert "status=404" in lines[1] and "\n" not in lines[1]
    assert all("SECRET" not in line and "Bearer" not in line for line in lines)


def test_strict_json_keeps_what_is_valid() -> None:
    from crashd.api import strictjson

    # A surrogate *pair* is one code point, valid JSON; so is a literal backslash-u text.
    assert strictjson.loads('{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}
    assert strictjson.loads('{"a": "\\\\ud800"}') == {"a": "\\ud800"}
    for bad in ('{"a": "\\ud800"}', '["\\udc00x"]', '{"a": 1, "a": 2}', "[NaN]", "[" * 10_000):
        with pytest.raises(strictjson.MalformedJSON):
            strictjson.loads(bad)

"""Conditional GETs: strong ETag, Last-Modified, 304 (for finished rounds and the like)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest
from quart import Blueprint, Response

from crashd.api.rest.conditional import CONDITIONAL_HEADERS, CONDITIONAL_RESPONSES, conditional_json
from crashd.api.rest.contract import documented
from support.servers import build_app, make_config, serving_app

FINISHED = datetime(2026, 11, 1, 12, 0, 0, 500_000, tzinfo=UTC)
rounds = {1: {"round_id": 1, "crash_point": "3.74"}, 2: {"round_id": 2, "crash_point": "1.00"}}


def _routes() -> Blueprint:
    bp = Blueprint("condtest", __name__, url_prefix="/test")

    @bp.get("/rounds/<int:round_id>")
    @documented("test", headers=CONDITIONAL_HEADERS, extra_responses=CONDITIONAL_RESPONSES)
    async def one_round(round_id: int) -> Response:
        return conditional_json(
            rounds[round_id],
            last_modified=FINISHED,
            cache_control="public, max-age=31536000, immutable",
        )

    return bp


@pytest.fixture
async def client(tmp_path: Path):  # type: ignore[no-untyped-def]
    under_test = build_app(make_config(tmp_path))
    under_test.app.register_blueprint(_routes())
    async with serving_app(under_test) as info:
        async with httpx.AsyncClient(base_url=info.url) as c:
            yield c


async def test_etag_and_last_modified_then_304(client: httpx.AsyncClient) -> None:
    r = await client.get("/test/rounds/1")
    assert r.status_code == 200 and r.json()["crash_point"] == "3.74"
    etag = r.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert r.headers["last-modified"] == "Sun, 01 Nov 2026 12:00:00 GMT"
    assert "immutable" in r.headers["cache-control"]
    assert (await client.get("/test/rounds/1")).headers["etag"] == etag  # stable

    for inm in (etag, f"W/{etag}", f'"nope", {etag}', "*"):
        nm = await client.get("/test/rounds/1", headers={"If-None-Match": inm})
        assert nm.status_code == 304 and nm.content == b"", inm
        assert nm.headers["etag"] == etag and "x-request-id" in nm.headers
    assert (await client.get("/test/rounds/2", headers={"If-None-Match": etag})).status_code == 200


async def test_if_modified_since(client: httpx.AsyncClient) -> None:
    same = format_datetime(FINISHED.replace(microsecond=0), usegmt=True)
    later = format_datetime(FINISHED + timedelta(days=1), usegmt=True)
    earlier = format_datetime(FINISHED - timedelta(seconds=1), usegmt=True)
    assert (
        await client.get("/test/rounds/1", headers={"If-Modified-Since": same})
    ).status_code == 304
    assert (
        await client.get("/test/rounds/1", headers={"If-Modified-Since": later})
    ).status_code == 304
    assert (
        await client.get("/test/rounds/1", headers={"If-Modified-Since": earlier})
    ).status_code == 200
    assert (
        await client.get("/test/rounds/1", headers={"If-Modified-Since": "garbage"})
    ).status_code == 200
    # If-None-Match wins over If-Modified-Since.
    r = await client.get(
        "/test/rounds/1", headers={"If-Modified-Since": later, "If-None-Match": '"other"'}
    )
    assert r.status_code == 200

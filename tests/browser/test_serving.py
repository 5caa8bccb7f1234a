"""How the pages are served, checked over real HTTP without a browser (these run
everywhere, Chromium or not): hashed asset names from the files' bytes, immutable
caching, the HTML revalidated, gzip negotiated, the import map and its CSP hash."""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from crashd.api.rest.routes import pages as pages_module
from crashd.api.server import ServerInfo, run_server
from support.servers import make_config

IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.S)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    config = make_config(tmp_path)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            functools.partial(run_server, config, shutdown=shutdown)
        )
        try:
            async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
                yield client
        finally:
            shutdown.set()


async def test_every_page_names_hashed_assets_that_are_cached_for_good(
    site: httpx.AsyncClient,
) -> None:
    for path in ("/", "/verify", "/rounds/7", "/rules"):
        page = await site.get(path)
        assert page.status_code == 200, path
        assert page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.headers["Cache-Control"] == "no-cache"
        assert page.headers["Referrer-Policy"] == "no-referrer"
        names = re.findall(r'(?:src|href)="/assets/([^"]+)"', page.text)
        assert names, path
        for name in names:
            stem, digest, ext = name.rsplit(".", 2)
            hashed = await site.get(f"/assets/{name}", headers={"Accept-Encoding": "identity"})
            assert hashed.status_code == 200
            assert hashed.headers["Cache-Control"] == "public, max-age=31536000, immutable"
            assert "Content-Encoding" not in hashed.headers
            assert digest == hashlib.sha256(hashed.content).hexdigest()[:12]
            plain = await site.get(f"/assets/{stem}.{ext}", headers={"Accept-Encoding": "identity"})
            assert plain.headers["Cache-Control"] == "no-cache"
            assert plain.content == hashed.content


async def test_the_import_map_maps_every_module_and_the_csp_allows_only_it(
    site: httpx.AsyncClient,
) -> None:
    page = await site.get("/")
    found = IMPORT_MAP.search(page.text)
    assert found is not None
    mapping = json.loads(found.group(1))["imports"]
    modules = {name for name in pages_module.ASSETS if name.endswith(".js")}
    assert set(mapping) == {f"/assets/{name}" for name in modules}
    for plain, hashed in mapping.items():
        assert hashed == pages_module.ASSETS[plain.rsplit("/", 1)[1]].url
    digest = base64.b64encode(hashlib.sha256(found.group(1).encode()).digest()).decode()
    csp = page.headers["Content-Security-Policy"]
    assert f"script-src 'self' 'sha256-{digest}'" in csp
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp
    viewer = (await site.post("/api/v1/session/viewer")).json()
    feed = viewer["ws_url"].rsplit("/api/", 1)[0]
    assert f"connect-src 'self' {feed};" in csp  # the feed's origin, and no other
    assert "<script>" not in page.text  # no inline script but the import map


async def test_html_revalidates_and_gzip_is_negotiated(site: httpx.AsyncClient) -> None:
    plain = await site.get("/", headers={"Accept-Encoding": "identity"})
    packed = await site.get("/", headers={"Accept-Encoding": "gzip, br"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert packed.headers["Vary"] == "Accept-Encoding"
    assert packed.content == plain.content  # httpx decodes it
    assert plain.headers["ETag"] != packed.headers["ETag"]  # two representations
    for etag in (plain.headers["ETag"], packed.headers["ETag"]):
        again = await site.get("/", headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b""
    refused = await site.get("/", headers={"Accept-Encoding": "gzip;q=0"})
    assert "Content-Encoding" not in refused.headers


async def test_unknown_paths_are_404_problems(site: httpx.AsyncClient) -> None:
    for path in ("/assets/nope.js", "/assets/../pages.py", "/rounds/abc", "/rounds/-1"):
        r = await site.get(path)
        assert r.status_code == 404, path
        assert r.headers["Content-Type"] == "application/problem+json"


def test_assets_are_named_from_their_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.js").write_bytes(b"export const a = 1;\n")
    (tmp_path / "b.css").write_bytes(b"body{}")
    (tmp_path / "index.html").write_text("{{ asset a.js }}")
    assets = pages_module.load_assets(tmp_path)
    assert set(assets) == {"a.js", "b.css"}  # HTML is rendered, not an asset
    digest = hashlib.sha256(b"export const a = 1;\n").hexdigest()[:12]
    assert assets["a.js"].hashed == f"a.{digest}.js"
    assert assets["b.css"].body.content_type == "text/css; charset=utf-8"
    page = pages_module.render_page("{{ asset a.js }} {{ importmap }}", assets)
    assert page.body.raw.decode().startswith(f"/assets/a.{digest}.js <script type=")
    with pytest.raises(LookupError):
        pages_module.render_page("{{ asset missing.js }}", assets)


def test_a_feed_on_every_interface_is_reached_at_the_pages_host() -> None:
    origin = pages_module.feed_origin
    assert origin("ws://127.0.0.1:8001/api/v1/ws", "127.0.0.1:8000") == "ws://127.0.0.1:8001"
    assert origin("ws://0.0.0.0:8001/api/v1/ws", "192.168.1.5:8000") == "ws://192.168.1.5:8001"
    assert origin("ws://[::]:8001/api/v1/ws", "[fd00::5]:8000") == "ws://[fd00::5]:8001"
    assert origin("ws://0.0.0.0:8001/api/v1/ws", "crashd.lan") == "ws://crashd.lan:8001"
    assert origin(None, "crashd.lan") == "ws: wss:"

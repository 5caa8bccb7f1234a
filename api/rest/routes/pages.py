"""The player's pages: the game (``/``), the verifier (``/verify``, ``/rounds/{id}``) and
the rules (``/rules``), with their static assets (``/assets/…``).

The pages are hand-written HTML, CSS and JavaScript in ``api/web/`` (no build step, no
CDN: they work offline on a LAN). They speak only the public REST API and the feed, as
any partner's page would (docs/page.md), so this module serves files and nothing else:
no page reads the engine or the ledger.

Caching, decided once at import from the files' bytes:

* every asset is served under a name carrying its content hash
  (``game.3f9c0e1a2b4d.js``) with ``Cache-Control: public, max-age=31536000,
  immutable``: a browser never asks for it again, and a changed file is a new name;
* the HTML is ``no-cache`` (revalidated on every load: 304 while unchanged) and names
  the hashed assets. Its ES modules import each other by their plain names
  (``./curve.js``); an import map in the HTML maps each plain name to its hashed one,
  so a module's bytes (and hash) do not depend on its dependencies' hashes;
* the plain names are served too (``no-cache``, with an ETag), for a browser that
  resolves a module without the import map;
* every response is also kept gzip-compressed, sent to clients that accept it.

Each HTML page carries a Content-Security-Policy: scripts from this origin only (and
the page's own import map, by its hash), no inline script or style, connections to
this origin and to the feed's WebSocket origin (the ``ws_url`` the sessions hand out).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import mimetypes
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from quart import Blueprint, Response, request
from werkzeug.exceptions import NotFound

from crashd.api.services import current_services

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
"""``api/web/``: the pages' sources, served as they are."""
ASSETS_PATH = "/assets"
"""Where the static assets are served (``/static`` is Quart's own, unused, route)."""
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
HASH_DIGITS = 12
"""Hex digits of SHA-256 in an asset's name (48 bits: collisions are not a concern
among a few dozen files, and a name stays short)."""

PAGES: Mapping[str, str] = {
    "game": "index.html",
    "verify": "verify.html",
    "rules": "rules.html",
    "operator": "operator.html",
}
"""Page name -> its HTML file in ``api/web/``."""

CONTENT_TYPES: Mapping[str, str] = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".json": "application/json",
}

_ASSET_REF = re.compile(r"\{\{\s*asset\s+([A-Za-z0-9_.-]+)\s*\}\}")
_IMPORT_MAP_REF = "{{ importmap }}"


@dataclass(frozen=True)
class Body:
    """One response body, as sent: its bytes, its gzip form and a strong validator for
    each (two representations, two ETags: RFC 9110 8.8.3)."""

    raw: bytes
    gzipped: bytes
    etag: str
    etag_gzip: str
    content_type: str

    @classmethod
    def of(cls, raw: bytes, content_type: str) -> Body:
        digest = hashlib.sha256(raw).hexdigest()[:32]
        # mtime=0: the compressed bytes depend on the content only.
        compressed = gzip.compress(raw, 9, mtime=0)
        return cls(raw, compressed, f'"{digest}"', f'"{digest}-gz"', content_type)


@dataclass(frozen=True)
class Asset:
    name: str
    """The file's plain name (``game.js``)."""
    hashed: str
    """The name it is served under for good (``game.3f9c0e1a2b4d.js``)."""
    body: Body

    @property
    def url(self) -> str:
        return f"{ASSETS_PATH}/{self.hashed}"


@dataclass(frozen=True)
class Page:
    body: Body
    csp: str
    """The Content-Security-Policy, with ``{feed}`` for the feed's origin."""

    def policy(self, feed_url: str | None, page_host: str) -> str:
        return self.csp.replace("{feed}", feed_origin(feed_url, page_host))


UNSPECIFIED_HOSTS = frozenset({"0.0.0.0", "[::]"})
"""A feed bound to every interface advertises an address no browser can dial; the page
then dials the host it was loaded from, on the feed's port (``api/web/game.js``)."""


def feed_origin(feed_url: str | None, page_host: str) -> str:
    """The origin the page's WebSocket goes to (the ``ws_url`` its sessions get), for
    ``connect-src``; any WebSocket origin while the feed is not up yet."""
    if not feed_url:
        return "ws: wss:"
    scheme, _, rest = feed_url.partition("://")
    authority = rest.split("/", 1)[0]
    host, _, port = authority.rpartition(":")
    if host in UNSPECIFIED_HOSTS:
        page = page_host.rsplit(":", 1)[0] if not page_host.endswith("]") else page_host
        authority = f"{page}:{port}"
    return f"{scheme}://{authority}"


def hashed_name(name: str, raw: bytes) -> str:
    stem, dot, ext = name.rpartition(".")
    digest = hashlib.sha256(raw).hexdigest()[:HASH_DIGITS]
    return f"{stem}.{digest}.{ext}" if dot else f"{name}.{digest}"


def load_assets(root: Path = WEB_DIR) -> dict[str, Asset]:
    """Every non-HTML file of ``root`` (flat), by plain name."""
    assets: dict[str, Asset] = {}
    for path in sorted(root.iterdir()):
        if not path.is_file() or path.suffix == ".html" or path.name.startswith("."):
            continue
        raw = path.read_bytes()
        content_type = CONTENT_TYPES.get(path.suffix) or (
            mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        )
        assets[path.name] = Asset(
            path.name, hashed_name(path.name, raw), Body.of(raw, content_type)
        )
    return assets


def import_map(assets: Mapping[str, Asset]) -> str:
    """The page's import map: each module's plain URL -> its hashed URL."""
    imports = {f"{ASSETS_PATH}/{a.name}": a.url for a in assets.values() if a.name.endswith(".js")}
    return json.dumps({"imports": imports}, separators=(",", ":"), sort_keys=True)


def render_page(template: str, assets: Mapping[str, Asset]) -> Page:
    """Fill a page's ``{{ asset NAME }}`` and ``{{ importmap }}`` references."""

    def asset_url(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in assets:
            raise LookupError(f"the page names an asset that does not exist: {name}")
        return assets[name].url

    mapping = import_map(assets)
    html = _ASSET_REF.sub(asset_url, template)
    html = html.replace(_IMPORT_MAP_REF, f'<script type="importmap">{mapping}</script>')
    map_hash = base64.b64encode(hashlib.sha256(mapping.encode()).digest()).decode()
    csp = "; ".join(
        (
            "default-src 'none'",
            f"script-src 'self' 'sha256-{map_hash}'",
            "style-src 'self'",
            "img-src 'self' data:",
            # The feed listens on its own port (docs/feed.md): filled in per response.
            "connect-src 'self' {feed}",
            "base-uri 'none'",
            "form-action 'self'",
        )
    )
    return Page(Body.of(html.encode(), CONTENT_TYPES[".html"]), csp)


def load_pages(root: Path, assets: Mapping[str, Asset]) -> dict[str, Page]:
    return {
        name: render_page((root / file).read_text(encoding="utf-8"), assets)
        for name, file in PAGES.items()
    }


# An installation without the pages' files (a wheel built without its package data)
# serves the API all the same; the pages then answer 404.
ASSETS = load_assets() if WEB_DIR.is_dir() else {}
"""Computed once, at import: the bytes, hashes and names of every asset."""
BY_HASHED = {a.hashed: a for a in ASSETS.values()}
RENDERED = load_pages(WEB_DIR, ASSETS) if ASSETS else {}

pages = Blueprint("pages", __name__)


def _accepts_gzip() -> bool:
    accepted = request.headers.get("Accept-Encoding", "")
    for part in accepted.split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip().lower() == "gzip":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def _not_modified(body: Body) -> bool:
    """``If-None-Match`` names either representation (weak comparison, RFC 9110 13.1.2)."""
    sent = request.headers.get("If-None-Match")
    if sent is None:
        return False
    tags = {t.strip().removeprefix("W/") for t in sent.split(",")}
    return "*" in tags or body.etag in tags or body.etag_gzip in tags


def _send(body: Body, cache_control: str, extra: Mapping[str, str] | None = None) -> Response:
    compressed = _accepts_gzip()
    headers = {
        "Cache-Control": cache_control,
        "ETag": body.etag_gzip if compressed else body.etag,
        "Vary": "Accept-Encoding",
        "X-Content-Type-Options": "nosniff",
        **(extra or {}),
    }
    if _not_modified(body):
        return Response(b"", status=304, headers=headers)
    if compressed:
        headers["Content-Encoding"] = "gzip"
        return Response(body.gzipped, content_type=body.content_type, headers=headers)
    return Response(body.raw, content_type=body.content_type, headers=headers)


def _page(name: str) -> Response:
    page = RENDERED.get(name)
    if page is None:
        raise NotFound()
    return _send(
        page.body,
        REVALIDATE,
        {
            "Content-Security-Policy": page.policy(current_services().feed_url, request.host),
            "Referrer-Policy": "no-referrer",
        },
    )


@pages.get("/")
async def game_page() -> Response:
    """The game: the live curve, one bet panel, the round's bets, history."""
    return _page("game")


@pages.get("/verify")
async def verify_page() -> Response:
    """The verifier: a pasted game hash and salt, checked in the browser."""
    return _page("verify")


@pages.get("/rounds/<int(max=9007199254740991):round_id>")
async def round_page(round_id: int) -> Response:
    """One round's page: the verifier, filled in from the round's revealed hash."""
    return _page("verify")


@pages.get("/rules")
async def rules_page() -> Response:
    """The rules, read from the live configuration (``GET /api/v1/game/rules``)."""
    return _page("rules")


@pages.get("/operator")
async def operator_page() -> Response:
    """The operator's page (an operator token from ``crashd admin page``; the page
    itself is public and empty without one: every number comes from /api/v1/admin)."""
    return _page("operator")


@pages.get(f"{ASSETS_PATH}/<name>")
async def asset(name: str) -> Response:
    hashed = BY_HASHED.get(name)
    if hashed is not None:
        return _send(hashed.body, IMMUTABLE)
    plain = ASSETS.get(name)
    if plain is not None:
        return _send(plain.body, REVALIDATE)
    raise NotFound()


__all__ = ["ASSETS", "ASSETS_PATH", "PAGES", "WEB_DIR", "Asset", "load_assets", "pages"]

"""The Quart-Trio application: error contract, request ids and the public meta routes.

:func:`create_app` takes the :class:`~crashd.api.services.Services` the server built and
returns a ready app; it starts no tasks (the server runs the engine in its own nursery,
beside Hypercorn, so a failure there ends the process instead of hiding in the app).

Game routes live in their own blueprints (``url_prefix="/api/v1"``) and are registered
in :func:`create_app`; everything under ``/api/v1`` must be ``@documented``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from quart import Blueprint, Response, current_app, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from crashd.api import __version__
from crashd.api.rest.commands import forwarded_query
from crashd.api.security.guard import install as install_security
from crashd.api.security.keys import Principal
from crashd.api.services import SERVICES_EXTENSION, Services, current_services
from crashd.api.wallet.routes import wallet as wallet_routes
from crashd.api.wire import API_PREFIX

from .contract import documented, json_response
from .openapi import build_openapi
from .problems import Problem, code_for_status, problem_response
from .requestid import SCOPE_ROUTE, RequestContextMiddleware, log_context
from .routes.admin import admin
from .routes.batch import batch
from .routes.bets import bets
from .routes.feed import feed
from .routes.game import game
from .routes.ops import probes
from .routes.pages import pages
from .routes.psp import psp
from .routes.sessions import public_principal, sessions
from .routes.settlement import key_set, settlement, well_known
from .routes.users import users

log = logging.getLogger(__name__)

meta = Blueprint("meta", __name__, url_prefix=API_PREFIX)

HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status", "version", "environment", "uptime_s"],
    "properties": {
        "status": {"type": "string", "enum": ["ok"]},
        "version": {"type": "string"},
        "environment": {"type": "string", "enum": ["sandbox", "production"]},
        "uptime_s": {"type": "integer", "minimum": 0},
    },
}

FAIRNESS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "scheme",
        "terminating_hash",
        "salt",
        "salt_fixed",
        "chain_encoding",
        "games",
        "house_edge_percent",
        "formula",
        "verify",
    ],
    "properties": {
        "scheme": {"type": "string", "enum": ["bustabit-v2"]},
        "terminating_hash": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        "salt": {"type": ["string", "null"], "description": "null until the operator fixes it"},
        "salt_fixed": {"type": "boolean"},
        "chain_encoding": {"type": "string", "enum": ["hex", "raw"]},
        "games": {"type": "integer", "minimum": 1},
        "first_round": {
            "type": "integer",
            "description": "the round id of this chain's game 1 (1 until a rotation)",
        },
        "chains": {
            "type": "array",
            "description": "every chain published, oldest first, with the rounds it covers",
            "items": {"type": "object"},
        },
        "house_edge_percent": {"type": "number"},
        "signing_keys": {
            "type": "object",
            "description": "the Ed25519 keys signing transcripts, seals and receipts (a JWK "
            "Set, as at /.well-known/crashd-keys)",
        },
        "formula": {"type": "object", "additionalProperties": {"type": "string"}},
        "verify": {
            "type": "object",
            "required": ["steps", "commands"],
            "properties": {
                "steps": {"type": "array", "items": {"type": "string"}},
                "commands": {"type": "array", "items": {"type": "string"}},
            },
        },
    },
}


@meta.get("/health")
@documented("Liveness and basic facts about this server", response=HEALTH_SCHEMA, tags=("meta",))
async def health() -> Response:
    services = current_services()
    return json_response(
        {
            "status": "ok",
            "version": __version__,
            "environment": services.config.environment,
            "uptime_s": int(time.monotonic() - services.started_monotonic),
        },
        headers={"Cache-Control": "no-store"},
    )


@meta.get("/fairness")
@documented(
    "The provably fair commitment and how to verify any round",
    response=FAIRNESS_SCHEMA,
    tags=("meta",),
)
async def fairness() -> Response:
    """Public: the terminating hash was committed before the first game; each finished
    round reveals its game hash, which hashes forward to the terminating hash."""
    services = current_services()
    return await fairness_now(public_principal(services.config.environment))


@forwarded_query("fairness")
async def fairness_now(principal: Principal, services: Services | None = None) -> Response:
    """The chains in force are the engine's registry (a rotation after this process
    started is the engine's to know): asked of it from a process without the engine."""
    services = services or current_services()
    chain = services.chain
    chains: list[dict[str, Any]] = []
    first_round = 1
    if services.chains is not None:
        # After a rotation the commitment in force is the current chain's; every chain
        # is listed with the rounds it covers (a round's game number in its chain is
        # round_id - first_round + 1).
        current = services.chains.current
        chain, first_round = current.chain, current.first_round
        chains = [c.public() for c in services.chains.chains]
    spec = chain.spec
    terminating = spec.terminating_hash.hex()
    link_rule = (
        "sha256 of the lowercase hex string of the next hash"
        if spec.encoding.value == "hex"
        else "sha256 of the raw 32 bytes of the next hash"
    )
    return json_response(
        {
            "scheme": "bustabit-v2",
            "terminating_hash": terminating,
            "salt": chain.salt,
            "salt_fixed": chain.salt is not None,
            "chain_encoding": spec.encoding.value,
            "games": spec.games,
            "first_round": first_round,
            "chains": chains,
            "house_edge_percent": 1,
            "formula": {
                "chain": f"h[i-1] = {link_rule} h[i]; games are played from the end of the chain backwards, "
                "so sha256^n(game_hash) == terminating_hash for the game's position n",
                "crash_point": "r = int(HMAC_SHA256(key=salt as ASCII, msg=raw 32 bytes of game_hash).hexdigest()[:13], 16); "
                "X = r / 2**52; crash = max(1.00, floor(99 / (1 - X)) / 100) (IEEE double)",
            },
            "verify": {
                "steps": [
                    "take a finished round's game_hash (and this salt) from GET /api/v1/game/rounds/{round_id}",
                    "recompute its crash point and compare it with the round's crash_point",
                    "check that the game hash links to the terminating hash published here",
                ],
                "commands": [
                    "crashd verify --hash GAME_HASH --salt "
                    + (chain.salt if chain.salt is not None else "SALT"),
                    f"crashd verify --hash GAME_HASH --terminating {terminating} --chain {spec.encoding.value}",
                    "crashd audit --url THIS_SERVER --from ROUND --to ROUND",
                ],
            },
            "signing_keys": key_set(services),
        },
        # The salt is fixed once, after the commitment; a minute of caching is harmless.
        headers={"Cache-Control": "public, max-age=60"},
    )


@meta.get("/openapi.json")
@documented("This OpenAPI 3.1 document", response={"type": "object"}, tags=("meta",))
async def openapi() -> Response:
    return json_response(build_openapi(current_app), headers={"Cache-Control": "no-cache"})


def _http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = code_for_status(status)
    headers: dict[str, str] = {}
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        allowed = sorted(set(exc.valid_methods))
        headers["Allow"] = ", ".join(allowed)
        detail = f"{request.method} is not allowed here; allowed: {', '.join(allowed)}"
    elif status == 404:
        # Echo a bounded prefix only: the path is the client's input, not ours to amplify.
        path = request.path if len(request.path) <= 200 else request.path[:200] + "…"
        detail = f"no such resource: {path}"
    elif status == 413:
        detail = f"the request body exceeds {current_services().config.max_body_bytes} bytes"
    else:
        detail = exc.name
    if status >= 500:
        # Werkzeug's 5xx descriptions are generic, but keep the promise: nothing internal.
        code, detail = "internal_error", "the server failed; quote the request id when reporting it"
    return problem_response(Problem(code, detail, status=status, headers=headers))


async def _note_route() -> None:
    rule = request.url_rule
    if rule is not None:
        request.scope[SCOPE_ROUTE] = rule.rule  # type: ignore[literal-required]  # our own key in the ASGI scope


def create_app(services: Services, blueprints: Sequence[Blueprint] = ()) -> QuartTrio:
    app = QuartTrio(__name__)
    # "//" in a path is a 404 problem, not a 308 redirect with an HTML body: a client
    # that followed it would re-send a signed write to a path it never signed.
    app.url_map.merge_slashes = False
    app.config.update(
        MAX_CONTENT_LENGTH=services.config.max_body_bytes,
        # Exceptions become 500 problems (never a traceback to the client), even in tests.
        PROPAGATE_EXCEPTIONS=False,
        # Quart answers each request within this budget or gives up on it (seconds).
        RESPONSE_TIMEOUT=60,
        BODY_TIMEOUT=30,
    )
    app.extensions[SERVICES_EXTENSION] = services
    app.register_blueprint(meta)
    app.register_blueprint(game)
    app.register_blueprint(bets)
    app.register_blueprint(batch)
    app.register_blueprint(users)
    app.register_blueprint(feed)
    app.register_blueprint(psp)
    app.register_blueprint(sessions)
    app.register_blueprint(wallet_routes)
    app.register_blueprint(settlement)
    app.register_blueprint(well_known)
    app.register_blueprint(probes)
    app.register_blueprint(admin)
    app.register_blueprint(pages)  # the player's pages at /, /verify, /rounds/{id}, /rules
    for extra in blueprints:
        app.register_blueprint(extra)
    # Routed requests are labelled by their rule in the metrics (never by raw path).
    # Registered before the security hooks: a refused request still has its route.
    app.before_request(_note_route)
    install_security(app, services.config)

    @app.errorhandler(Problem)
    async def on_problem(problem: Problem) -> Response:
        return problem_response(problem)

    @app.errorhandler(HTTPException)
    async def on_http_exception(exc: HTTPException) -> Response:
        return _http_exception(exc)

    @app.errorhandler(Exception)
    async def on_exception(exc: Exception) -> Response:
        log.error(
            "unhandled error %s %s %s",
            log_context(request.scope),
            request.method,
            request.path,
            exc_info=exc,
        )
        return problem_response(
            Problem("internal_error", "the server failed; quote the request id when reporting it")
        )

    app.asgi_app = RequestContextMiddleware(  # type: ignore[method-assign]  # Quart's documented middleware hook
        app.asgi_app, services.metrics.observe_request
    )
    return app

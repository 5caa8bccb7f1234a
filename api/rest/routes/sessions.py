"""Public routes for a page: the game's rules, viewer tokens, sandbox demo sessions.

None of these needs an API key: a page served to anonymous browsers calls them first.
Tokens are issued under the server's house keys (:mod:`crashd.api.security.sessions`)
and limited per client IP (``rate_limit_sessions``, see ``guard.SESSION_PATHS``).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from typing import Annotated, Any

from quart import Blueprint, Response

from crashd.api.rest.commands import forwarded_query
from crashd.api.rest.contract import documented, json_body, json_response
from crashd.api.rest.problems import Problem
from crashd.api.rest.validation import String
from crashd.api.security import feedtokens
from crashd.api.security import sessions as house
from crashd.api.security.keys import Principal
from crashd.api.services import Services, current_services
from crashd.api.wire import API_PREFIX
from crashd.engine.bounds import MAX_MULTIPLIER, MIN_AUTO_CASHOUT
from crashd.engine.fairness import HOUSE_EDGE_NUMERATOR
from crashd.engine.ledger.model import Balance
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.tables import Phase

from .users import BALANCE_SCHEMA, FAUCET_MAX

sessions = Blueprint("sessions", __name__, url_prefix=API_PREFIX)

assert house.DEMO_GRANT <= FAUCET_MAX, "a demo grant is a faucet credit"

RULES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "environment",
        "min_stake",
        "max_stake",
        "max_profit",
        "max_profit_bankroll_bp",
        "max_win",
        "max_bets_per_user",
        "betting_ms",
        "pause_ms",
        "tick_hz",
        "house_edge_percent",
        "rtp_percent",
        "min_auto_cashout",
        "max_multiplier",
    ],
    "properties": {
        "environment": {"type": "string", "enum": ["sandbox", "production"]},
        "min_stake": {"type": "integer", "description": "minor units"},
        "max_stake": {"type": "integer", "description": "minor units"},
        "max_profit": {
            "type": ["integer", "null"],
            "description": "cap on the players' total profit in one round (null: none)",
        },
        "max_profit_bankroll_bp": {
            "type": ["integer", "null"],
            "description": "the cap is this share of the house bankroll in basis points, "
            "set again every round (null: a fixed cap, or none)",
        },
        "max_win": {
            "type": ["integer", "null"],
            "description": "cap on one bet's profit, minor units (null: none)",
        },
        "max_bets_per_user": {"type": "integer"},
        "betting_ms": {"type": "integer", "description": "length of the betting window"},
        "pause_ms": {"type": "integer", "description": "pause after a crash"},
        "tick_hz": {"type": "integer", "description": "multiplier ticks per second"},
        "house_edge_percent": {"type": "integer"},
        "rtp_percent": {"type": "integer", "description": "return to player"},
        "min_auto_cashout": {"type": "integer", "description": "hundredths"},
        "max_multiplier": {"type": "integer", "description": "hundredths"},
    },
}


@sessions.get("/game/rules")
@documented(
    "The game's rules as this server plays them: stakes, caps, timings, house edge",
    response=RULES_SCHEMA,
    tags=("game",),
    problems=("engine_unavailable",),
)
async def rules() -> Response:
    services = current_services()
    return await rules_now(public_principal(services.config.environment))


def public_principal(environment: str) -> Principal:
    """Who a public route's query runs as in the engine: nobody in particular."""
    return Principal("public", "", environment, frozenset())


@forwarded_query("game_rules")
async def rules_now(principal: Principal, services: Services | None = None) -> Response:
    """The rules in force, from the engine's live limits (in a process without the
    engine, asked of it: the operator may have changed them since this process started)."""
    services = services or current_services()
    c = services.config
    edge = 100 - HOUSE_EDGE_NUMERATOR
    # The limits a bet placed now plays with: the operator changes them at runtime
    # (crashd admin limits), from the next round on, so they are read from the engine,
    # never from the start-up settings.
    round_config = _config_for_a_bet_now(services)
    share = (
        services.ops.limits.max_profit_bp
        if services.ops is not None and services.ops.limits.max_profit_mode == "bankroll"
        else None
    )
    return json_response(
        {
            "environment": c.environment,
            "min_stake": round_config.min_stake,
            "max_stake": round_config.max_stake,
            "max_profit": round_config.max_profit,
            "max_profit_bankroll_bp": share,
            "max_win": round_config.max_win,
            "max_bets_per_user": round_config.max_bets_per_user,
            "betting_ms": c.betting_ms,
            "pause_ms": c.pause_ms,
            "tick_hz": c.tick_hz,
            "house_edge_percent": edge,
            "rtp_percent": 100 - edge,
            "min_auto_cashout": MIN_AUTO_CASHOUT,
            "max_multiplier": MAX_MULTIPLIER,
        },
        # Limits change at runtime: revalidate every time.
        headers={"Cache-Control": "no-cache"},
    )


def _config_for_a_bet_now(services: Services) -> RoundConfig:
    """The round config of the round a bet placed now joins: the open round's while it
    takes bets, else the next round's (the engine's, with the operator's limits and the
    cap the bankroll gives); the start-up settings when no engine runs."""
    if services.game is not None and not services.game.game.engine.finished:
        engine = services.game.game.engine
        current = engine.sequencer.current
        return current.config if current.phase is Phase.BETTING else engine.next_config
    c = services.config
    return RoundConfig(
        min_stake=c.min_stake,
        max_stake=c.max_stake,
        max_profit=c.max_profit or None,
        max_win=c.max_win or None,
        max_bets_per_user=c.max_bets_per_user,
    )


SESSION_PROPERTIES: dict[str, Any] = {
    "token": {
        "type": "string",
        "description": 'a feed token: Authorization: Bearer … on REST, {"type": "auth", '
        '"token": …} on the feed',
    },
    "expires_at": {"type": "integer", "description": "Unix seconds"},
    "expires_in_s": {"type": "integer"},
    "ws_url": {"type": "string", "description": "where the feed listens"},
    "scopes": {"type": "array", "items": {"type": "string"}},
    "environment": {"type": "string", "enum": ["sandbox", "production"]},
}

VIEWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": list(SESSION_PROPERTIES),
    "properties": SESSION_PROPERTIES,
}

DEMO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [*SESSION_PROPERTIES, "user_id", "partner_id", "balance", "credited", "renewed"],
    "properties": {
        **SESSION_PROPERTIES,
        "user_id": {"type": "string", "description": "the demo player (kept on renewal)"},
        "partner_id": {"type": "string"},
        "balance": BALANCE_SCHEMA,
        "credited": {"type": "integer", "description": "demo money credited by this call"},
        "renewed": {"type": "boolean", "description": "true: the session's user was kept"},
    },
}


async def _enabled(services: Services, key_id: str | None) -> str:
    """The house key to issue under, unless sessions are off (by the setting, or the
    house key was revoked, even while the server runs)."""
    if (
        services.config.rate_limit_sessions == 0
        or key_id is None
        or not await services.authenticator.issuer_active(key_id)
    ):
        raise Problem(
            "sessions_disabled",
            "public sessions are turned off on this server",
        )
    return key_id


def _session(
    services: Services, key_id: str, partner_id: str, scopes: frozenset[str], user: str | None
) -> dict[str, Any]:
    expires = int(time.time()) + house.SESSION_TTL_S
    token = services.authenticator.issue_token(
        feedtokens.FeedClaims(
            key_id, partner_id, services.config.environment, scopes, expires, user_id=user
        )
    )
    return {
        "token": token,
        "expires_at": expires,
        "expires_in_s": house.SESSION_TTL_S,
        "ws_url": services.feed_url or "",
        "scopes": sorted(scopes),
        "environment": services.config.environment,
    }


@sessions.post("/session/viewer")
@documented(
    "A token for an anonymous page viewer: live state, rounds and the public feed "
    "(read:game_state), for an hour; limited per client IP",
    response=VIEWER_SCHEMA,
    status=201,
    tags=("sessions",),
    problems=("sessions_disabled", "rate_limited"),
)
async def viewer() -> Response:
    services = current_services()
    key_id = await _enabled(services, services.house.viewer)
    body = _session(services, key_id, house.VIEWER_PARTNER, frozenset(house.VIEWER_SCOPES), None)
    return json_response(body, status=201, headers={"Cache-Control": "no-store"})


@dataclass(frozen=True)
class DemoBody:
    token: Annotated[
        str | None,
        String(
            min_length=1,
            max_length=feedtokens.MAX_TOKEN,
            description="a demo session's token (expired less than a day ago is fine): "
            "renew that session, same user and balance",
        ),
    ] = None


@sessions.post("/sandbox/session")
@documented(
    "A demo player for a page on a sandbox server: a new user of the demo partner "
    "funded with demo money, and a user token (its balance and bets over REST, bets and "
    "cashouts over the feed) for an hour; send the old token to renew",
    response=DEMO_SCHEMA,
    status=201,
    tags=("sessions",),
    problems=(
        "sessions_disabled",
        "invalid_session_token",
        "rate_limited",
        "ledger_unavailable",
        "engine_unavailable",
    ),
)
@json_body(DemoBody)
async def demo(*, body: DemoBody) -> Response:
    services = current_services()
    if services.config.environment != "sandbox":
        raise Problem("sessions_disabled", "demo sessions are for sandbox servers only")
    key_id = await _enabled(services, services.house.demo)
    environment = services.config.environment
    if body.token is not None:
        holder = await services.authenticator.authenticate_token(
            body.token, grace_s=house.RENEW_GRACE_S
        )
        if holder is None or holder.key_id != key_id or holder.user_id is None:
            raise Problem(
                "invalid_session_token",
                "that token is not a current demo session of this server; start a new one "
                "without a token",
            )
        user_id = holder.user_id
    else:
        user_id = house.DEMO_USER_PREFIX + secrets.token_hex(8)
    # The grant is a ledger write: the engine makes it (in a process without the
    # engine, through the command stream: ``demo_grant_now`` is a forwarded query).
    principal = Principal(key_id, house.DEMO_PARTNER, environment, frozenset(house.DEMO_SCOPES))
    grant = await demo_grant_now(principal, user_id)
    if grant.status_code != 200:
        return grant  # the engine's refusal (its ledger unavailable, say), as it is
    granted = json.loads(await grant.get_data())
    credited = int(granted["credited"])
    balance = Balance(int(granted["posted"]), int(granted["pending"]), int(granted["available"]))
    answer = _session(services, key_id, house.DEMO_PARTNER, frozenset(house.DEMO_SCOPES), user_id)
    answer.update(
        {
            "user_id": user_id,
            "partner_id": house.DEMO_PARTNER,
            "balance": {
                "user_id": user_id,
                "environment": environment,
                "posted": balance.posted,
                "pending": balance.pending,
                "available": balance.available,
            },
            "credited": credited,
            "renewed": body.token is not None,
        }
    )
    # 201 both ways: a renewal, too, creates a new token.
    return json_response(answer, status=201, headers={"Cache-Control": "no-store"})


@forwarded_query("demo_grant", str)
async def demo_grant_now(
    principal: Principal, user_id: str, services: Services | None = None
) -> Response:
    """Top a broke demo player up (``POST /sandbox/session``): the balance after it, and
    what was credited (0 when the player could still bet)."""
    services = services or current_services()
    ledger = services.require_game().game.ledger
    environment = principal.environment
    balance = await ledger.balance(
        environment=environment, partner_id=house.DEMO_PARTNER, user_id=user_id
    )
    credited = 0
    if balance.available < services.config.min_stake:
        credited = max(house.DEMO_GRANT, services.config.min_stake) - balance.available
        # A unique op per grant: a retried request may grant twice, which in a sandbox
        # costs nothing (and the grant only tops a broke player up).
        await ledger.faucet_credit(
            f"session:{user_id}:{secrets.token_hex(8)}",
            partner_id=house.DEMO_PARTNER,
            user_id=user_id,
            amount=credited,
            environment=environment,
        )
        balance = await ledger.balance(
            environment=environment, partner_id=house.DEMO_PARTNER, user_id=user_id
        )
    return json_response(
        {
            "credited": credited,
            "posted": balance.posted,
            "pending": balance.pending,
            "available": balance.available,
        }
    )

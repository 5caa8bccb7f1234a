"""Public game routes: the live state and the finished rounds (``read:game_state``).

The live state is never cached (``no-store``); a finished round never changes, so it is
served with a strong ETag, ``Last-Modified`` and a long ``max-age``; the round list
changes as rounds finish, so it is revalidated (``no-cache``) but still answers 304.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from quart import Blueprint, Response

from crashd.api.rest.commands import forwarded_query
from crashd.api.rest.conditional import CONDITIONAL_HEADERS, CONDITIONAL_RESPONSES, conditional_json
from crashd.api.rest.contract import documented, json_response, query_params
from crashd.api.rest.problems import Problem
from crashd.api.rest.validation import MAX_INTEGER, Integer
from crashd.api.security.auth import requires_scope
from crashd.api.security.keys import Principal
from crashd.api.services import Services, current_services
from crashd.api.wire import API_PREFIX, iso_ms
from crashd.engine.curve import format_multiplier
from crashd.engine.ledger.model import BetView, RoundView

game = Blueprint("game", __name__, url_prefix=API_PREFIX)


PAGE_MAX = 100


def public_user(user: Any, principal: Principal) -> str | None:
    """Another partner's users stay anonymous: only the caller's own are named."""
    if isinstance(user, (tuple, list)) and len(user) == 3:
        partner_id, environment, user_id = user
        if partner_id == principal.partner_id and environment == principal.environment:
            return str(user_id)
    return None


STATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["round_id", "status", "current_multiplier", "timestamp", "participant_count"],
    "properties": {
        "round_id": {"type": "integer", "description": "the round's game number in the chain"},
        "status": {"type": "string", "enum": ["betting", "running", "crashed", "voided"]},
        "current_multiplier": {"type": "integer", "description": "hundredths: 250 is 2.50x"},
        "current_multiplier_display": {"type": "string"},
        "timestamp": {"type": "string", "format": "date-time"},
        "server_time_ms": {"type": "integer"},
        "elapsed_ms": {"type": "integer"},
        "betting_closes_at": {"type": ["string", "null"], "format": "date-time"},
        "started_at": {"type": ["string", "null"], "format": "date-time"},
        "crashed_at": {"type": ["string", "null"], "format": "date-time"},
        "next_round_at": {"type": ["string", "null"], "format": "date-time"},
        "crash_point": {"type": ["integer", "null"], "description": "only once crashed"},
        "game_hash": {"type": ["string", "null"], "description": "only once crashed"},
        "participant_count": {"type": "integer"},
        "cashed_out_count": {"type": "integer"},
        "total_stake": {"type": "integer"},
        "total_payout": {"type": "integer"},
        "top_bets": {
            "type": "array",
            "description": "the largest bets by stake (at most 10), anonymous; every bet: "
            "GET /game/state/participants",
            "items": {"type": "object"},
        },
        "next_round_bets": {"type": "integer"},
        "paused": {
            "type": "boolean",
            "description": "the operator paused the game: no round opens after this one",
        },
        "curve": {"type": "object"},
    },
}

ROUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["round_id", "status", "crash_point", "game_hash", "salt"],
    "properties": {
        "round_id": {"type": "integer"},
        "status": {"type": "string", "enum": ["crashed", "voided"]},
        "crash_point": {"type": ["integer", "null"]},
        "crash_point_display": {"type": ["string", "null"]},
        "game_hash": {"type": ["string", "null"]},
        "salt": {"type": ["string", "null"]},
        "started_at": {"type": "string", "format": "date-time"},
        "ended_at": {"type": ["string", "null"], "format": "date-time"},
        "void_reason": {"type": ["string", "null"]},
        "bets": {"type": "integer"},
        "total_stake": {"type": "integer"},
        "total_payout": {"type": "integer"},
        "verify": {"type": "string"},
    },
}

ROUNDS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["rounds", "next_cursor"],
    "properties": {
        "rounds": {"type": "array", "items": ROUND_SCHEMA},
        "next_cursor": {
            "type": ["integer", "null"],
            "description": "pass as ?before= for the next (older) page",
        },
    },
}


@game.get("/game/state")
@documented(
    "The live round: phase, multiplier, deadlines, counts and totals, the largest bets",
    response=STATE_SCHEMA,
    tags=("game",),
    problems=("engine_unavailable",),
)
@requires_scope("read:game_state", tokens=True)
async def game_state(*, principal: Principal) -> Response:
    # Built and encoded once per engine change, whatever the number of readers or bets.
    body = current_services().require_live().rest_body()
    return Response(body, content_type="application/json", headers={"Cache-Control": "no-store"})


@dataclass(frozen=True)
class ParticipantsQuery:
    offset: Annotated[int, Integer(minimum=0, maximum=MAX_INTEGER, description="bets to skip")] = 0
    limit: Annotated[int, Integer(minimum=1, maximum=PAGE_MAX, description="page size")] = 50


PUBLIC_BET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["stake", "status"],
    "properties": {
        "ticket_id": {"type": ["string", "null"], "description": "your users' only"},
        "user_id": {"type": ["string", "null"], "description": "your users' only"},
        "stake": {"type": "integer"},
        "status": {"type": "string", "enum": ["open", "won", "lost", "refunded"]},
        "cashed_out_at": {"type": ["integer", "null"]},
        "payout": {"type": ["integer", "null"]},
    },
}
"""One bet as anyone may see it: the live round's and a finished round's lists."""

PARTICIPANTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["round_id", "participant_count", "offset", "participants"],
    "properties": {
        "round_id": {"type": "integer"},
        "participant_count": {"type": "integer"},
        "offset": {"type": "integer"},
        "participants": {"type": "array", "items": PUBLIC_BET_SCHEMA},
        "next_offset": {"type": ["integer", "null"]},
    },
}


@game.get("/game/state/participants")
@documented(
    "Every bet of the live round, a page at a time, in the order placed (other partners' "
    "users anonymous)",
    response=PARTICIPANTS_SCHEMA,
    tags=("game",),
    problems=("engine_unavailable",),
)
@requires_scope("read:game_state", tokens=True)
@query_params(ParticipantsQuery)
async def game_participants(*, principal: Principal, query: ParticipantsQuery) -> Response:
    return await participants_now(principal, query)


@forwarded_query("participants", ParticipantsQuery)
async def participants_now(
    principal: Principal, query: ParticipantsQuery, services: Services | None = None
) -> Response:
    """One page of the live round's bets: the engine's to answer (every bet it holds)."""
    live = (services or current_services()).require_game().live
    round_id, count, page = live.participants(query.offset, query.limit)
    items = [
        {
            "ticket_id": p.ticket if public_user(p.user, principal) is not None else None,
            "user_id": public_user(p.user, principal),
            "stake": p.stake,
            "status": p.status,
            "cashed_out_at": p.cashed_out_at,
            "payout": p.payout,
        }
        for p in page
    ]
    following = query.offset + len(page)
    return json_response(
        {
            "round_id": round_id,
            "participant_count": count,
            "offset": query.offset,
            "participants": items,
            "next_offset": following if len(page) == query.limit else None,
        },
        headers={"Cache-Control": "no-store"},
    )


def _round_body(view: RoundView, bets: list[BetView], salt: str | None) -> dict[str, Any]:
    return {
        "round_id": view.round_id,
        "status": "voided" if view.state == "voided" else "crashed",
        "crash_point": view.crash_point,
        "crash_point_display": format_multiplier(view.crash_point)
        if view.crash_point is not None
        else None,
        "game_hash": view.game_hash,
        "salt": salt,
        "started_at": iso_ms(view.started_at),
        "ended_at": iso_ms(view.ended_at),
        "void_reason": view.void_reason,
        "bets": len(bets),
        "total_stake": sum(b.stake for b in bets),
        "total_payout": sum(b.payout or 0 for b in bets),
        "verify": (
            f"crashd verify --hash {view.game_hash} --salt {salt}"
            if view.game_hash and salt
            else ""
        ),
    }


@dataclass(frozen=True)
class RoundsQuery:
    limit: Annotated[int, Integer(minimum=1, maximum=PAGE_MAX, description="page size")] = 20
    before: Annotated[
        int | None, Integer(minimum=1, description="cursor: round ids below this")
    ] = None


@game.get("/game/rounds")
@documented(
    "Finished rounds, newest first, with crash points and revealed hashes",
    response=ROUNDS_SCHEMA,
    tags=("game",),
    problems=("engine_unavailable",),
    headers=CONDITIONAL_HEADERS,
    extra_responses=CONDITIONAL_RESPONSES,
)
@requires_scope("read:game_state", tokens=True)
@query_params(RoundsQuery)
async def list_rounds(*, principal: Principal, query: RoundsQuery) -> Response:
    services = current_services()
    ledger = services.require_ledger()
    views = await ledger.finished_rounds(limit=query.limit, before=query.before)
    rounds = []
    for view in views:
        rounds.append(
            _round_body(
                view, await ledger.round_bets(view.round_id), services.salt_for(view.round_id)
            )
        )
    next_cursor = views[-1].round_id if len(views) == query.limit else None
    return conditional_json(
        {"rounds": rounds, "next_cursor": next_cursor}, cache_control="no-cache"
    )


# Bounded like every integer of the API (beyond it: 404, not an overflow in SQLite).
@game.get(f"/game/rounds/<int(max={MAX_INTEGER}):round_id>")
@documented(
    "One finished round (immutable once finished: cache it)",
    response=ROUND_SCHEMA,
    tags=("game",),
    problems=("unknown_round", "round_not_finished", "engine_unavailable"),
    headers=CONDITIONAL_HEADERS,
    extra_responses=CONDITIONAL_RESPONSES,
)
@requires_scope("read:game_state", tokens=True)
async def get_round(round_id: int, *, principal: Principal) -> Response:
    services = current_services()
    ledger = services.require_ledger()
    view = await ledger.round(round_id)
    if view is None:
        raise Problem("unknown_round", f"no round {round_id} has been played")
    if view.state == "open":
        # It exists, but its hash is still secret: say so rather than "unknown". A
        # voided round is final; its game is burnt and revealed with it.
        raise Problem(
            "round_not_finished",
            f"round {round_id} is still being played; its "
            "game hash and crash point are revealed when it crashes",
            extra={"round_id": round_id},
        )
    bets = await ledger.round_bets(round_id)
    ended = view.ended_at or view.started_at
    return conditional_json(
        _round_body(view, bets, services.salt_for(round_id)),
        cache_control="public, max-age=86400, immutable",
        last_modified=datetime.fromtimestamp(ended / 1000, UTC),
    )


ROUND_BETS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["round_id", "bet_count", "offset", "bets", "next_offset"],
    "properties": {
        "round_id": {"type": "integer"},
        "bet_count": {"type": "integer", "description": "the round's bets in all"},
        "offset": {"type": "integer"},
        "bets": {"type": "array", "items": PUBLIC_BET_SCHEMA},
        "next_offset": {"type": ["integer", "null"]},
    },
}

# A settled bet's outcome in the public list's words (the live round's words).
_PUBLIC_STATUS = {"won": "won", "lost": "lost", "refunded": "refunded", None: "open"}


@game.get(f"/game/rounds/<int(max={MAX_INTEGER}):round_id>/bets")
@documented(
    "A finished round's bets, a page at a time in the order placed, from the ledger "
    "(other partners' users anonymous; immutable once the round is finished)",
    response=ROUND_BETS_SCHEMA,
    tags=("game",),
    problems=("unknown_round", "round_not_finished", "engine_unavailable"),
    headers=CONDITIONAL_HEADERS,
    extra_responses=CONDITIONAL_RESPONSES,
)
@requires_scope("read:game_state", tokens=True)
@query_params(ParticipantsQuery)
async def get_round_bets(
    round_id: int, *, principal: Principal, query: ParticipantsQuery
) -> Response:
    services = current_services()
    ledger = services.require_ledger()
    view = await ledger.round(round_id)
    if view is None:
        raise Problem("unknown_round", f"no round {round_id} has been played")
    if view.state == "open":
        # Its bets are still being played: the live list is /game/state/participants.
        raise Problem(
            "round_not_finished",
            f"round {round_id} is still being played; its bets are at "
            f"{API_PREFIX}/game/state/participants until it ends",
            extra={"round_id": round_id},
        )
    bets = await ledger.round_bets(round_id)
    page = bets[query.offset : query.offset + query.limit]
    items = []
    for b in page:
        user = public_user((b.partner_id, b.environment, b.user_id), principal)
        items.append(
            {
                "ticket_id": b.ticket_id if user is not None else None,
                "user_id": user,
                "stake": b.stake,
                "status": _PUBLIC_STATUS[b.outcome],
                "cashed_out_at": b.multiplier if b.outcome == "won" else None,
                "payout": b.payout,
            }
        )
    following = query.offset + len(page)
    ended = view.ended_at or view.started_at
    return conditional_json(
        {
            "round_id": round_id,
            "bet_count": len(bets),
            "offset": query.offset,
            "bets": items,
            "next_offset": following if following < len(bets) else None,
        },
        # The caller's own users are named: a private cache only.
        cache_control="private, max-age=86400, immutable",
        last_modified=datetime.fromtimestamp(ended / 1000, UTC),
    )

"""Bets (``write:bet``): reserve → confirm → ticket; cash out; auto-cashout; status.

Every write carries an ``Idempotency-Key``; the ledger's idempotent ids, the hold id and
the ticket id are all derived from it (scoped to the API key), so a retry — even after a
crash of the server — names the same hold and the same bet and moves nothing twice.

The money-moving part of each view runs shielded from cancellation: once the engine has
decided, the decision is made durable and answered (and stored for replays) even if the
client hung up, so its retry with the same key gets the same answer.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import trio
from quart import Blueprint, Response

from crashd.api.rest.commands import forwarded
from crashd.api.rest.contract import documented, json_body, json_response, query_params
from crashd.api.rest.idempotency import IdempotencyToken, Render, idempotent, stored_or
from crashd.api.rest.problems import Problem, problem_response
from crashd.api.rest.receipts import RECEIPT_SCHEMA, receipt_of
from crashd.api.rest.validation import Integer, String
from crashd.api.security.auth import require_user, requires_scope
from crashd.api.security.guard import signed
from crashd.api.security.keys import Principal
from crashd.api.services import Services, current_services
from crashd.api.wallet.bets import (
    WALLET_BET_PROBLEMS,
    refuse_two_phase,
    seamless_of,
    seamless_place_now,
)
from crashd.api.wire import API_PREFIX, iso_ms
from crashd.engine.bounds import MAX_AMOUNT, MAX_MULTIPLIER
from crashd.engine.curve import format_multiplier
from crashd.engine.game import Cashout, GameError, Placed, Player, ticket_for
from crashd.engine.ledger import LedgerError
from crashd.engine.ledger.model import (
    BetConfirmed,
    BetPlaced,
    BetRetargeted,
    BetSettled,
    BetView,
    HoldReserved,
    HoldVoided,
    ReplySlot,
    Result,
)

T = TypeVar("T")

bets = Blueprint("bets", __name__, url_prefix=API_PREFIX)

USER_ID = r"[A-Za-z0-9_.:@-]{1,64}"
TICKET = re.compile(r"t_[0-9a-f]{24}")
HOLD = r"h_[0-9a-f]{24}"


def problem_from(err: GameError | LedgerError) -> Problem:
    """The refusal as its problem: the code is the catalogue's (crashd.engine.reasons),
    and so are its status and title."""
    if isinstance(err, GameError):
        return Problem(err.code, err.detail, extra=dict(err.extra))
    return Problem(err.code, err.message, extra=dict(err.detail))


def player_of(principal: Principal, user_id: str) -> Player:
    return Player(principal.environment, principal.partner_id, user_id)


def derived_id(prefix: str, idempotency: IdempotencyToken) -> str:
    return prefix + hashlib.blake2b(idempotency.scoped_id.encode(), digest_size=12).hexdigest()


async def answer_with(
    idempotency: IdempotencyToken,
    render: Render,
    call: Callable[[ReplySlot], Awaitable[T]],
    live: Callable[[T], Response],
) -> Response:
    """Run a money-moving call whose op carries this request's reply slot, shielded
    (see the module docstring), and answer with exactly the reply stored in its commit
    (``render`` makes it from the op's result; a ledger refusal is kept as its problem).
    ``live`` answers when no op stored a reply (the engine answered from a record); a
    refusal before any op (the engine's) is its problem, and nothing is stored."""
    slot = idempotency.slot(render)
    try:
        with trio.CancelScope(shield=True):
            outcome = await call(slot)
    except (GameError, LedgerError) as err:
        problem = problem_from(err)
        if slot.stored is not None or slot.existing is not None:
            return stored_or(slot, lambda: problem_response(problem, idempotency.request_id))
        raise problem from None
    return stored_or(slot, lambda: live(outcome))


def event_hint(slot: ReplySlot, name: str) -> Any:
    """What the engine decided for this request (left in the slot by the game)."""
    event = slot.hints.get("event")
    if event is not None:
        return getattr(event, name)
    return slot.hints[name]


async def decide(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run a money-moving call shielded from cancellation (see the module docstring);
    a refusal by the game or the ledger becomes its problem response."""
    try:
        with trio.CancelScope(shield=True):
            return await fn(*args, **kwargs)
    except (GameError, LedgerError) as err:
        raise problem_from(err) from None


def bet_body(view: BetView) -> dict[str, Any]:
    status = {"won": "cashed_out", "lost": "lost", "refunded": "refunded", None: "active"}[
        view.outcome
    ]
    return {
        "ticket_id": view.ticket_id,
        "user_id": view.user_id,
        "round_id": view.round_id,
        "stake": view.stake,
        "auto_cashout": view.auto_cashout,
        "status": status,
        "multiplier": view.multiplier,
        "payout": view.payout,
        "confirmed_at": iso_ms(view.confirmed_at),
        "settled_at": iso_ms(view.settled_at),
    }


BET_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ticket_id", "user_id", "round_id", "stake", "status"],
    "properties": {
        "ticket_id": {"type": "string"},
        "user_id": {"type": "string"},
        "round_id": {"type": ["integer", "null"]},
        "stake": {"type": "integer"},
        "auto_cashout": {"type": ["integer", "null"]},
        "status": {"type": "string", "enum": ["active", "cashed_out", "lost", "refunded"]},
        "multiplier": {"type": ["integer", "null"]},
        "payout": {"type": ["integer", "null"]},
        "confirmed_at": {"type": ["string", "null"], "format": "date-time"},
        "settled_at": {"type": ["string", "null"], "format": "date-time"},
    },
}


@dataclass(frozen=True)
class ReserveBody:
    user_id: Annotated[
        str,
        String(min_length=1, max_length=64, pattern=USER_ID, description="the partner's user id"),
    ]
    amount: Annotated[
        int, Integer(minimum=1, maximum=MAX_AMOUNT, description="stake in minor units")
    ]
    ttl_ms: Annotated[
        int,
        Integer(minimum=1_000, maximum=600_000, description="how long the hold lasts unconfirmed"),
    ] = 30_000


RESERVE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["hold_id", "user_id", "amount", "expires_at", "available"],
    "properties": {
        "hold_id": {"type": "string"},
        "user_id": {"type": "string"},
        "amount": {"type": "integer"},
        "expires_at": {"type": "string", "format": "date-time"},
        "expires_at_ms": {"type": "integer"},
        "available": {"type": "integer", "description": "balance available after the hold"},
    },
}


@bets.post("/bets/reserve")
@documented(
    "Reserve a stake (a hold that expires unless confirmed)",
    response=RESERVE_SCHEMA,
    status=201,
    tags=("bets",),
    problems=(
        "insufficient_funds",
        "stake_too_small",
        "stake_too_large",
        "duplicate_hold",
        "idempotency_conflict",
        "invalid_request",
        "ledger_busy",
        "ledger_unavailable",
        "engine_unavailable",
        "seamless_one_shot",
    ),
    links={
        name: {
            "operationId": f"bets_{name}",
            "requestBody": {
                "user_id": "$response.body#/user_id",
                "hold_id": "$response.body#/hold_id",
            },
        }
        for name in ("confirm", "release")
    },
)
@requires_scope("write:bet")
@signed
@idempotent
@json_body(ReserveBody)
async def reserve(
    *, principal: Principal, idempotency: IdempotencyToken, body: ReserveBody
) -> Response:
    return await reserve_now(principal, idempotency, body)


@forwarded("reserve", ReserveBody)
async def reserve_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: ReserveBody,
    services: Services | None = None,
) -> Response:
    """A hold, answered with the reply its commit stored."""
    refuse_two_phase(services or current_services(), principal.partner_id)
    game = (services or current_services()).require_game().game
    hold_id = derived_id("h_", idempotency)

    def render(held: Result) -> tuple[int, Any]:
        assert isinstance(held, HoldReserved)
        return 201, {
            "hold_id": hold_id,
            "user_id": body.user_id,
            "amount": held.amount,
            "expires_at": iso_ms(held.expires_at),
            "expires_at_ms": held.expires_at,
            "available": held.available,
        }

    return await answer_with(
        idempotency,
        render,
        lambda slot: game.reserve(
            idempotency.scoped_id + ":reserve",
            player_of(principal, body.user_id),
            hold_id,
            body.amount,
            body.ttl_ms,
            slot,
        ),
        lambda held: json_response(*reversed(render(held))),
    )


@dataclass(frozen=True)
class ConfirmBody:
    user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]
    hold_id: Annotated[str, String(min_length=26, max_length=26, pattern=HOLD)]
    auto_cashout: Annotated[
        int | None,
        Integer(
            minimum=101,
            maximum=MAX_MULTIPLIER,
            description="auto-cashout target in hundredths (>= 101, i.e. 1.01x)",
        ),
    ] = None


PLACED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ticket_id", "round_id", "queued", "stake", "status"],
    "properties": {
        "ticket_id": {"type": "string"},
        "round_id": {"type": "integer"},
        "queued": {
            "type": "boolean",
            "description": "true: placed while a round ran, so it plays in the next",
        },
        "stake": {"type": "integer"},
        "auto_cashout": {"type": ["integer", "null"]},
        "status": {"type": "string", "enum": ["active"]},
        "receipt": RECEIPT_SCHEMA,
    },
}


@dataclass(frozen=True)
class PlaceBody:
    user_id: Annotated[
        str,
        String(min_length=1, max_length=64, pattern=USER_ID, description="the partner's user id"),
    ]
    amount: Annotated[
        int, Integer(minimum=1, maximum=MAX_AMOUNT, description="stake in minor units")
    ]
    auto_cashout: Annotated[
        int | None,
        Integer(
            minimum=101,
            maximum=MAX_MULTIPLIER,
            description="auto-cashout target in hundredths (>= 101, i.e. 1.01x)",
        ),
    ] = None


PLACED_ONCE_SCHEMA: dict[str, Any] = {
    **PLACED_SCHEMA,
    "properties": {
        **PLACED_SCHEMA["properties"],
        "available": {"type": "integer", "description": "the user's balance after the stake"},
    },
}


@bets.post("/bets")
@documented(
    "Place a bet in one request: the stake is taken and the bet joins the round open "
    "for betting (else the next) in one durable commit",
    response=PLACED_ONCE_SCHEMA,
    status=201,
    tags=("bets",),
    problems=(
        "insufficient_funds",
        "stake_too_small",
        "stake_too_large",
        "invalid_target",
        "too_many_bets",
        "round_full",
        "duplicate_ticket",
        "duplicate_hold",
        "idempotency_conflict",
        "invalid_request",
        "engine_stopping",
        "ledger_busy",
        "ledger_unavailable",
        "engine_unavailable",
        "round_closed",
        "bet_busy",
        *WALLET_BET_PROBLEMS,
    ),
    links={
        "status": {
            "operationId": "bets_bet_status",
            "parameters": {"ticket_id": "$response.body#/ticket_id"},
        },
        **{
            name: {
                "operationId": f"bets_{name}",
                "parameters": {"ticket_id": "$response.body#/ticket_id"},
                "requestBody": {"user_id": "$request.body#/user_id"},
            }
            for name in ("cashout", "auto_cashout")
        },
    },
)
@requires_scope("write:bet")
@signed
@idempotent
@json_body(PlaceBody)
async def place(
    *, principal: Principal, idempotency: IdempotencyToken, body: PlaceBody
) -> Response:
    return await place_now(principal, idempotency, body)


@forwarded("place", PlaceBody)
async def place_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: PlaceBody,
    services: Services | None = None,
) -> Response:
    """A one-shot bet, answered with the reply its commit stored (REST, batch, feed);
    a seamless partner's is a debit of its wallet (``crashd.api.wallet.bets``)."""
    services = services or current_services()
    game = services.require_game().game
    seamless = seamless_of(services, principal.partner_id)
    if seamless is not None:
        return await seamless_place_now(seamless, principal, idempotency, body, services.notary)
    ticket_id = ticket_for(idempotency.scoped_id)

    def render(result: Result) -> tuple[int, Any]:
        assert isinstance(result, BetPlaced)
        slot = idempotency.slots[-1]
        return 201, {
            "ticket_id": result.ticket_id,
            "round_id": event_hint(slot, "round_id"),
            "queued": event_hint(slot, "queued"),
            "stake": result.stake,
            "auto_cashout": result.auto_cashout,
            "status": "active",
            "available": result.available,
            "receipt": receipt_of(slot, services.notary),
        }

    def live(placed: Placed) -> Response:
        return json_response(
            {
                "ticket_id": placed.ticket_id,
                "round_id": placed.round_id,
                "queued": placed.queued,
                "stake": placed.stake,
                "auto_cashout": placed.auto_cashout,
                "status": "active",
                "available": getattr(placed.confirmed, "available", None),
                "receipt": None,
            },
            status=201,
        )

    return await answer_with(
        idempotency,
        render,
        lambda slot: game.place(
            idempotency.scoped_id + ":place",
            player_of(principal, body.user_id),
            body.amount,
            body.auto_cashout,
            ticket_id,
            derived_id("h_", idempotency),
            slot,
            fresh=idempotency.fresh,
        ),
        live,
    )


@bets.post("/bets/confirm")
@documented(
    "Confirm a reserved stake as a bet: the round open for betting, else the next",
    response=PLACED_SCHEMA,
    status=201,
    tags=("bets",),
    problems=(
        "unknown_hold",
        "hold_expired",
        "hold_resolved",
        "hold_busy",
        "duplicate_ticket",
        "too_many_bets",
        "round_full",
        "stake_too_small",
        "stake_too_large",
        "invalid_target",
        "idempotency_conflict",
        "invalid_request",
        "engine_stopping",
        "ledger_busy",
        "ledger_unavailable",
        "engine_unavailable",
        "seamless_one_shot",
    ),
    links={
        "status": {
            "operationId": "bets_bet_status",
            "parameters": {"ticket_id": "$response.body#/ticket_id"},
        },
        **{
            name: {
                "operationId": f"bets_{name}",
                "parameters": {"ticket_id": "$response.body#/ticket_id"},
                "requestBody": {"user_id": "$request.body#/user_id"},
            }
            for name in ("cashout", "auto_cashout")
        },
    },
)
@requires_scope("write:bet")
@signed
@idempotent
@json_body(ConfirmBody)
async def confirm(
    *, principal: Principal, idempotency: IdempotencyToken, body: ConfirmBody
) -> Response:
    return await confirm_now(principal, idempotency, body)


@forwarded("confirm", ConfirmBody)
async def confirm_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: ConfirmBody,
    services: Services | None = None,
) -> Response:
    """A confirm, answered with the reply its commit stored."""
    services = services or current_services()
    refuse_two_phase(services, principal.partner_id)
    game = services.require_game().game
    ticket_id = ticket_for(idempotency.scoped_id)

    def render(result: Result) -> tuple[int, Any]:
        assert isinstance(result, BetConfirmed)
        slot = idempotency.slots[-1]
        return 201, {
            "ticket_id": result.ticket_id,
            "round_id": event_hint(slot, "round_id"),
            "queued": event_hint(slot, "queued"),
            "stake": result.stake,
            "auto_cashout": result.auto_cashout,
            "status": "active",
            "receipt": receipt_of(slot, services.notary),
        }

    def live(placed: Placed) -> Response:
        return json_response(
            {
                "ticket_id": placed.ticket_id,
                "round_id": placed.round_id,
                "queued": placed.queued,
                "stake": placed.stake,
                "auto_cashout": placed.auto_cashout,
                "status": "active",
                "receipt": None,
            },
            status=201,
        )

    return await answer_with(
        idempotency,
        render,
        lambda slot: game.confirm(
            idempotency.scoped_id + ":confirm",
            player_of(principal, body.user_id),
            body.hold_id,
            body.auto_cashout,
            ticket_id,
            slot,
            fresh=idempotency.fresh,
        ),
        live,
    )


@dataclass(frozen=True)
class ReleaseBody:
    user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]
    hold_id: Annotated[str, String(min_length=26, max_length=26, pattern=HOLD)]


@bets.post("/bets/release")
@documented(
    "Release a reserved stake that will not be confirmed",
    response={
        "type": "object",
        "required": ["hold_id", "amount", "status"],
        "properties": {
            "hold_id": {"type": "string"},
            "amount": {"type": "integer"},
            "status": {"type": "string", "enum": ["released"]},
        },
    },
    tags=("bets",),
    problems=(
        "unknown_hold",
        "hold_resolved",
        "hold_busy",
        "idempotency_conflict",
        "invalid_request",
        "ledger_unavailable",
        "engine_unavailable",
        "seamless_one_shot",
    ),
)
@requires_scope("write:bet")
@signed
@idempotent
@json_body(ReleaseBody)
async def release(
    *, principal: Principal, idempotency: IdempotencyToken, body: ReleaseBody
) -> Response:
    return await release_now(principal, idempotency, body)


@forwarded("release", ReleaseBody)
async def release_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: ReleaseBody,
    services: Services | None = None,
) -> Response:
    """A release, answered with the reply its commit stored."""
    refuse_two_phase(services or current_services(), principal.partner_id)
    game = (services or current_services()).require_game().game

    def render(voided: Result) -> tuple[int, Any]:
        assert isinstance(voided, HoldVoided)
        return 200, {"hold_id": voided.hold_id, "amount": voided.amount, "status": "released"}

    return await answer_with(
        idempotency,
        render,
        lambda slot: game.void_hold(
            idempotency.scoped_id + ":release",
            player_of(principal, body.user_id),
            body.hold_id,
            slot,
        ),
        lambda voided: json_response(*reversed(render(voided))),
    )


CASHOUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ticket_id", "round_id", "status", "multiplier", "payout"],
    "properties": {
        "ticket_id": {"type": "string"},
        "round_id": {"type": "integer"},
        "status": {"type": "string", "enum": ["cashed_out"]},
        "multiplier": {"type": "integer"},
        "multiplier_display": {"type": "string"},
        "payout": {"type": "integer"},
        "receipt": RECEIPT_SCHEMA,
    },
}


def _ticket(ticket_id: str) -> str:
    if TICKET.fullmatch(ticket_id) is None:
        raise Problem("unknown_ticket", "no such ticket")
    return ticket_id


@dataclass(frozen=True)
class CashoutBody:
    user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]


@bets.post("/bets/<ticket_id>/cashout")
@documented(
    "Cash out now: cashed_out with multiplier and payout, or a too_late problem "
    "with the crash point",
    response=CASHOUT_SCHEMA,
    tags=("bets",),
    problems=(
        "unknown_ticket",
        "too_late",
        "round_not_running",
        "round_voided",
        "round_settled",
        "bet_refunded",
        "already_cashed_out",
        "ledger_busy",
        "ledger_unavailable",
        "engine_unavailable",
    ),
)
@requires_scope("write:bet")
@signed
@idempotent
@json_body(CashoutBody)
async def cashout(
    ticket_id: str, *, principal: Principal, idempotency: IdempotencyToken, body: CashoutBody
) -> Response:
    return await cash_out_now(principal, idempotency, ticket_id, body.user_id)


@forwarded("cashout", str, str)
async def cash_out_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    ticket_id: str,
    user_id: str,
    services: Services | None = None,
) -> Response:
    """A cash-out, answered with the reply its commit stored (REST, batch, feed)."""
    services = services or current_services()
    started = time.perf_counter()
    try:
        return await _cash_out_now(principal, idempotency, ticket_id, user_id, services)
    finally:
        services.metrics.cashout_answer.observe(time.perf_counter() - started)


async def _cash_out_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    ticket_id: str,
    user_id: str,
    services: Services,
) -> Response:
    game = services.require_game().game

    def cashed_out(
        round_id: int, multiplier: int, payout: int, receipt: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        return {
            "ticket_id": ticket_id,
            "round_id": round_id,
            "status": "cashed_out",
            "multiplier": multiplier,
            "multiplier_display": format_multiplier(multiplier),
            "payout": payout,
            "receipt": receipt,
        }

    def render(result: Result) -> tuple[int, Any]:
        assert isinstance(result, BetSettled) and result.multiplier is not None
        slot = idempotency.slots[-1]
        return 200, cashed_out(
            event_hint(slot, "round_id"),
            result.multiplier,
            result.payout,
            receipt_of(slot, services.notary),
        )

    def live(answer: Cashout) -> Response:
        if answer.status == "too_late":
            crash = answer.crash_point
            raise Problem(
                "too_late",
                f"the round crashed at {format_multiplier(crash) if crash else '?'}x "
                "before the cashout",
                extra={"ticket_id": ticket_id, "round_id": answer.round_id, "crash_point": crash},
            )
        assert answer.multiplier is not None and answer.payout is not None
        return json_response(cashed_out(answer.round_id, answer.multiplier, answer.payout))

    return await answer_with(
        idempotency,
        render,
        lambda slot: game.cash_out(player_of(principal, user_id), _ticket(ticket_id), slot),
        live,
    )


@dataclass(frozen=True)
class AutoCashoutBody:
    user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]
    target: Annotated[
        int | None,
        Integer(minimum=101, maximum=MAX_MULTIPLIER, description="hundredths; null cancels"),
    ]


@bets.put("/bets/<ticket_id>/auto-cashout")
@documented(
    "Set or cancel (null) the auto-cashout target while the round is betting",
    response={
        "type": "object",
        "required": ["ticket_id", "auto_cashout"],
        "properties": {
            "ticket_id": {"type": "string"},
            "auto_cashout": {"type": ["integer", "null"]},
            "receipt": RECEIPT_SCHEMA,
        },
    },
    tags=("bets",),
    problems=(
        "unknown_ticket",
        "round_closed",
        "round_settled",
        "bet_refunded",
        "invalid_target",
        "bet_busy",
        "idempotency_conflict",
        "ledger_busy",
        "ledger_unavailable",
        "engine_unavailable",
    ),
)
@requires_scope("write:bet")
@signed
@idempotent
@json_body(AutoCashoutBody)
async def auto_cashout(
    ticket_id: str, *, principal: Principal, idempotency: IdempotencyToken, body: AutoCashoutBody
) -> Response:
    return await retarget_now(principal, idempotency, ticket_id, body)


@forwarded("auto_cashout", str, AutoCashoutBody)
async def retarget_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    ticket_id: str,
    body: AutoCashoutBody,
    services: Services | None = None,
) -> Response:
    """An auto-cashout change, answered with the reply its commit stored (REST, feed)."""
    services = services or current_services()
    game = services.require_game().game

    def render(result: Result) -> tuple[int, Any]:
        assert isinstance(result, BetRetargeted)
        receipt = receipt_of(idempotency.slots[-1], services.notary)
        return 200, {
            "ticket_id": ticket_id,
            "auto_cashout": result.auto_cashout,
            "receipt": receipt,
        }

    return await answer_with(
        idempotency,
        render,
        lambda slot: game.set_auto_cashout(
            idempotency.scoped_id + ":target",
            player_of(principal, body.user_id),
            _ticket(ticket_id),
            body.target,
            slot,
        ),
        lambda target: json_response(
            {"ticket_id": ticket_id, "auto_cashout": target, "receipt": None}
        ),
    )


@dataclass(frozen=True)
class UserQuery:
    user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]


@bets.get("/bets/<ticket_id>")
@documented(
    "A bet's status by ticket",
    response=BET_SCHEMA,
    tags=("bets",),
    problems=("unknown_ticket", "engine_unavailable"),
)
@requires_scope("write:bet", tokens=True)
async def bet_status(ticket_id: str, *, principal: Principal) -> Response:
    view = await current_services().require_ledger().bet(_ticket(ticket_id))
    if (
        view is None
        or (view.environment, view.partner_id) != (principal.environment, principal.partner_id)
        # A user token sees its own user's bets only; another's are not its to know of.
        or (principal.user_id is not None and view.user_id != principal.user_id)
    ):
        raise Problem("unknown_ticket", "no such ticket")
    return json_response(bet_body(view), headers={"Cache-Control": "no-store"})


@dataclass(frozen=True)
class UserBetsQuery:
    user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]
    limit: Annotated[int, Integer(minimum=1, maximum=100)] = 20
    before: Annotated[int | None, Integer(minimum=1, description="cursor from next_cursor")] = None


@bets.get("/user/bets")
@documented(
    "A user's bets, newest first",
    response={
        "type": "object",
        "required": ["bets", "next_cursor"],
        "properties": {
            "bets": {"type": "array", "items": BET_SCHEMA},
            "next_cursor": {"type": ["integer", "null"]},
        },
    },
    tags=("bets",),
    problems=("engine_unavailable", "token_wrong_user"),
)
@requires_scope("write:bet", tokens=True)
@query_params(UserBetsQuery)
async def user_bets(*, principal: Principal, query: UserBetsQuery) -> Response:
    require_user(principal, query.user_id)
    views = (
        await current_services()
        .require_ledger()
        .user_bets(
            environment=principal.environment,
            partner_id=principal.partner_id,
            user_id=query.user_id,
            limit=query.limit,
            before=query.before,
        )
    )
    next_cursor = views[-1].seq if len(views) == query.limit else None
    return json_response(
        {"bets": [bet_body(v) for v in views], "next_cursor": next_cursor},
        headers={"Cache-Control": "no-store"},
    )

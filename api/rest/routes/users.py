"""Balances (``read:balance``) and the sandbox faucet (``write:bet``, sandbox keys only)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from quart import Blueprint, Response

from crashd.api.rest.commands import forwarded, forwarded_query
from crashd.api.rest.contract import documented, json_body, json_response, query_params
from crashd.api.rest.idempotency import IdempotencyToken, idempotent
from crashd.api.rest.problems import Problem
from crashd.api.rest.validation import Integer, String
from crashd.api.security.auth import require_user, requires_scope
from crashd.api.security.guard import signed
from crashd.api.security.keys import Principal
from crashd.api.services import Services, current_services
from crashd.api.wallet.bets import (
    WALLET_LIMITS_SCHEMA,
    WALLET_PROBLEMS,
    game_problem,
    refuse_two_phase,
    seamless_of,
)
from crashd.api.wire import API_PREFIX
from crashd.engine.game import GameError, Player
from crashd.engine.ledger.model import Posted, Result

from .bets import USER_ID, answer_with

users = Blueprint("users", __name__, url_prefix=API_PREFIX)

FAUCET_MAX = 1_000_000

BALANCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["user_id", "environment", "posted", "pending", "available"],
    "properties": {
        "user_id": {"type": "string"},
        "environment": {"type": "string", "enum": ["sandbox", "production"]},
        "posted": {"type": "integer", "description": "settled balance, minor units"},
        "pending": {"type": "integer", "description": "held by unexpired reservations"},
        "available": {"type": "integer", "description": "posted - pending: what can be staked"},
        "source": {
            "type": "string",
            "enum": ["wallet"],
            "description": "seamless partners: the balance is the operator's wallet's",
        },
        "owed": {
            "type": "integer",
            "description": "seamless partners: wins and refunds crashd has yet to deliver "
            "to the wallet (its outbox)",
        },
        "limits": WALLET_LIMITS_SCHEMA,
    },
}


@dataclass(frozen=True)
class BalanceQuery:
    user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]


async def _balance_body(
    principal: Principal, user_id: str, services: Services | None = None
) -> dict[str, Any]:
    services = services or current_services()
    ledger = services.require_ledger()
    seamless = seamless_of(services, principal.partner_id)
    if seamless is not None:
        player = Player(principal.environment, principal.partner_id, user_id)
        try:
            available, owed = await seamless.balance(player)
        except GameError as err:
            raise game_problem(err) from None
        return {
            "user_id": user_id,
            "environment": principal.environment,
            "posted": available,
            "pending": 0,
            "available": available,
            "source": "wallet",
            "owed": owed,
            "limits": seamless.limits(player).to_json(),
        }
    balance = await ledger.balance(
        environment=principal.environment, partner_id=principal.partner_id, user_id=user_id
    )
    return {
        "user_id": user_id,
        "environment": principal.environment,
        "posted": balance.posted,
        "pending": balance.pending,
        "available": balance.available,
    }


@users.get("/user/balance")
@documented(
    "One user's balance (the calling partner's users only; a user token, its own user)",
    response=BALANCE_SCHEMA,
    tags=("users",),
    problems=("engine_unavailable", "token_wrong_user", *WALLET_PROBLEMS),
)
@requires_scope("read:balance", tokens=True)
@query_params(BalanceQuery)
async def balance(*, principal: Principal, query: BalanceQuery) -> Response:
    require_user(principal, query.user_id)
    services = current_services()
    if services.game is None and principal.partner_id in services.wallet_partners:
        # A seamless partner's balance is its wallet's: the engine's driver asks it.
        return await seamless_balance_now(principal, query.user_id)
    return json_response(
        await _balance_body(principal, query.user_id), headers={"Cache-Control": "no-store"}
    )


@forwarded_query("seamless_balance", str)
async def seamless_balance_now(
    principal: Principal, user_id: str, services: Services | None = None
) -> Response:
    body = await _balance_body(principal, user_id, services)
    return json_response(body, headers={"Cache-Control": "no-store"})


@dataclass(frozen=True)
class FaucetBody:
    user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]
    amount: Annotated[
        int, Integer(minimum=1, maximum=FAUCET_MAX, description="demo money, minor units")
    ]


@users.post("/sandbox/faucet")
@documented(
    "Credit demo money to a sandbox user (sandbox keys only)",
    response=BALANCE_SCHEMA,
    status=201,
    tags=("users",),
    problems=(
        "environment_not_allowed",
        "idempotency_conflict",
        "invalid_request",
        "ledger_unavailable",
        "engine_unavailable",
        "seamless_one_shot",
    ),
    links={
        "reserve": {
            "operationId": "bets_reserve",
            "requestBody": {
                "user_id": "$response.body#/user_id",
                "amount": "$response.body#/available",
            },
        },
        "balance": {
            "operationId": "users_balance",
            "parameters": {"user_id": "$response.body#/user_id"},
        },
    },
)
@requires_scope("write:bet")
@signed
@idempotent
@json_body(FaucetBody)
async def faucet(
    *, principal: Principal, idempotency: IdempotencyToken, body: FaucetBody
) -> Response:
    if principal.environment != "sandbox":
        raise Problem(
            "environment_not_allowed", "the faucet hands out demo money to sandbox users only"
        )
    return await faucet_now(principal, idempotency, body)


@forwarded("faucet", FaucetBody)
async def faucet_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: FaucetBody,
    services: Services | None = None,
) -> Response:
    """A faucet credit, answered with the reply its commit stored."""
    refuse_two_phase(services or current_services(), principal.partner_id)
    ledger = (services or current_services()).require_game().game.ledger
    environment = principal.environment

    def render(posted: Result) -> tuple[int, Any]:
        assert isinstance(posted, Posted)
        # The balance the credit's own commit left (a record from before ``posted`` was
        # kept has only what is available).
        total = posted.posted if posted.posted is not None else posted.balance
        return 201, {
            "user_id": body.user_id,
            "environment": environment,
            "posted": total,
            "pending": total - posted.balance,
            "available": posted.balance,
        }

    return await answer_with(
        idempotency,
        render,
        lambda slot: ledger.faucet_credit(
            idempotency.scoped_id + ":faucet",
            partner_id=principal.partner_id,
            user_id=body.user_id,
            amount=body.amount,
            reply=slot,
        ),
        lambda posted: json_response(*reversed(render(posted))),
    )

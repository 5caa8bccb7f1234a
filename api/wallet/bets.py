"""A seamless partner's bet request: what ``POST /api/v1/bets`` (and each batch item,
and each feed order) does when the partner plays on its own wallet.

The same request, idempotency and reply as a transfer partner's bet; only the money
path differs (``crashd.engine.wallet.seamless``). The reply is stored with whichever op
ends the request — the bet's (201, the bet and the wallet's balance after the debit)
or the debit's closing (the problem: ``insufficient_funds`` with the balance, another
wallet refusal, ``wallet_timeout``, ``wallet_error``, or the engine's refusal of a bet
whose debit went through and is rolled back) — so a retry with the same
Idempotency-Key gets exactly that answer and never a second debit.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio
from quart import Response

from crashd.api.rest.contract import json_response
from crashd.api.rest.idempotency import IdempotencyToken, reply_key, stored_or
from crashd.api.rest.problems import PROBLEM_CONTENT_TYPE, Problem, problem_response
from crashd.api.rest.receipts import receipt_of
from crashd.engine.game import GameError, Placed, Player, ticket_for
from crashd.engine.ledger.model import LedgerError, ReplySlot, Result, StoredReply
from crashd.engine.ledger.wallet import WalletBetPlaced, WalletDebitClosed
from crashd.engine.reasons import CATALOGUE

if TYPE_CHECKING:
    from crashd.api.rest.routes.bets import PlaceBody
    from crashd.api.security.keys import Principal
    from crashd.api.services import Services
    from crashd.engine.notary import Notary
    from crashd.engine.wallet.seamless import Seamless


WALLET_PROBLEMS: tuple[str, ...] = (
    "wallet_session_expired",
    "wallet_player_blocked",
    "wallet_limit_reached",
    "wallet_self_excluded",
    "wallet_unknown_player",
    "wallet_currency_mismatch",
    "wallet_tx_conflict",
    "wallet_refused",
    "wallet_timeout",
    "wallet_error",
    "wallet_unavailable",
)
"""What a seamless partner's wallet call (a bet's debit, a balance) may be refused with
beyond a transfer partner's."""
WALLET_BET_PROBLEMS: tuple[str, ...] = (*WALLET_PROBLEMS, "wallet_stake_too_large")
"""What a seamless partner's bet may be refused with beyond a transfer partner's: the
wallet's refusals, and a stake above the wallet's limit (refused before the debit)."""

WALLET_LIMITS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["max_stake"],
    "description": "seamless partners: the limits the operator's wallet gave for this "
    "player in session.verify (crashd refuses a bet above them with "
    "wallet_stake_too_large); null: none given",
    "properties": {
        "max_stake": {
            "type": ["integer", "null"],
            "description": "the largest stake the wallet allows this player, minor units",
        },
    },
}


def refusal(code: str, detail: str | None, extra: dict[str, Any]) -> Problem:
    """A refusal as its problem, with only the members that have a value."""
    return Problem(
        code,
        detail or CATALOGUE[code].detail,
        extra={k: v for k, v in extra.items() if v is not None and v != ""},
    )


def game_problem(err: GameError | LedgerError) -> Problem:
    if isinstance(err, GameError):
        return refusal(err.code, err.detail, dict(err.extra))
    return refusal(err.code, err.message, dict(err.detail))


def _slot(
    idempotency: IdempotencyToken,
    ticket_id: str,
    round_hint: dict[str, Any],
    notary: Notary | None,
) -> ReplySlot:
    """The request's reply slot: a placed bet renders as the bet, with its signed
    receipt as a transfer partner's (signed here, on the ledger writer's thread, and
    stored with the reply), a closed debit as its problem (so the stored reply is the
    refusal the client got)."""
    request_id = idempotency.request_id

    def keep(slot: ReplySlot, answer: Result | LedgerError) -> StoredReply:
        if isinstance(answer, WalletBetPlaced):
            event = slot.hints.get("event")
            round_id = getattr(event, "round_id", round_hint.get("round_id"))
            queued = getattr(event, "queued", answer.round_id is None)
            body = {
                "ticket_id": answer.ticket_id,
                "round_id": round_id,
                "queued": queued,
                "stake": answer.stake,
                "auto_cashout": answer.auto_cashout,
                "status": "active",
                "available": answer.balance,
                "receipt": receipt_of(slot, notary),
            }
            return StoredReply(
                201, "application/json", json.dumps(body, separators=(",", ":")).encode()
            )
        if isinstance(answer, WalletDebitClosed):
            problem = refusal(
                answer.code,
                answer.message or None,
                {
                    "ticket_id": ticket_id,
                    "wallet_code": answer.wallet_code,
                    "wallet_message": answer.message,
                    "balance": answer.balance,
                    "rolled_back": answer.rollback_tx_id is not None,
                },
            )
        elif isinstance(answer, LedgerError):
            problem = game_problem(answer)
        else:  # pragma: no cover - no other op carries this slot
            raise AssertionError(answer)
        return StoredReply(problem.status, PROBLEM_CONTENT_TYPE, problem.encode(request_id))

    slot = ReplySlot(reply_key(idempotency.key_id, idempotency.key), idempotency.fingerprint, keep)
    idempotency.slots.append(slot)
    return slot


async def seamless_place_now(
    seamless: Seamless,
    principal: Principal,
    idempotency: IdempotencyToken,
    body: PlaceBody,
    notary: Notary | None,
) -> Response:
    ticket_id = ticket_for(idempotency.scoped_id)
    hint: dict[str, Any] = {}
    slot = _slot(idempotency, ticket_id, hint, notary)
    player = Player(principal.environment, principal.partner_id, body.user_id)
    try:
        with trio.CancelScope(shield=True):
            placed: Placed = await seamless.place(
                idempotency.scoped_id + ":place",
                player,
                body.amount,
                body.auto_cashout,
                ticket_id,
                "h_" + ticket_id.removeprefix("t_"),
                slot,
            )
    except (GameError, LedgerError) as err:
        problem = game_problem(err)
        if slot.stored is not None or slot.existing is not None:
            return stored_or(slot, lambda: problem_response(problem, idempotency.request_id))
        raise problem from None
    result = placed.confirmed
    balance = result.balance if isinstance(result, WalletBetPlaced) else None
    return stored_or(
        slot,
        lambda: json_response(
            {
                "ticket_id": placed.ticket_id,
                "round_id": placed.round_id,
                "queued": placed.queued,
                "stake": placed.stake,
                "auto_cashout": placed.auto_cashout,
                "status": "active",
                "available": balance,
                "receipt": None,  # an answer no commit rendered (as a transfer partner's)
            },
            status=201,
        ),
    )


def seamless_of(services: Services, partner_id: str) -> Seamless | None:
    """The seamless driver if this partner plays on its own wallet, else ``None``."""
    seamless = services.wallets
    if seamless is None and partner_id in services.wallet_partners:
        raise no_wallet_here(partner_id)
    if seamless is None or seamless.wallet_of(partner_id) is None:
        return None
    return seamless


def no_wallet_here(partner_id: str) -> Problem:
    """A process without the engine (``crashd api``) has no wallet driver: a seamless
    partner's balance and wallet records are not crashd's to answer from the database,
    and answering from crashd's own balances would be wrong."""
    return Problem(
        "engine_unavailable",
        f"partner {partner_id} plays on its own wallet, which the engine's process "
        "(crashd serve) calls: ask its API for this",
    )


def refuse_two_phase(services: Services, partner_id: str) -> None:
    """Holds live in crashd's ledger: a seamless partner's bets are debits instead."""
    if seamless_of(services, partner_id) is not None:
        raise Problem(
            "seamless_one_shot",
            "this partner plays on its own wallet: place bets with POST /api/v1/bets "
            "(holds, confirms, releases and the faucet are for crashd-held balances)",
        )

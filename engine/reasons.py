"""Every refusal of the game, the round engine and the ledger: one catalogue.

A refusal is a stable snake_case ``code`` that clients switch on. Each code is declared
here once, with the HTTP status it suggests (h11's ``error_status_hint``: the core
stays free of server policy, the API adopts the hint), a title, the default detail a
refusal carries, and when it happens — from which the API's problem registry, the
engine's round tables, the ledger's errors and docs/api.md's table are all made (a
test keeps the document in step). The API's own codes (authentication, signatures,
request parsing) live beside the API in ``crashd.api.rest.problems``.

Pure data: no I/O, nothing imported from the rest of crashd.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reason:
    code: str
    status: int
    """The HTTP status the API answers it with."""
    title: str
    """Short, for the problem's ``title``."""
    detail: str
    """The default human explanation (a refusal may say more)."""
    when: str
    """When it happens, for the documentation's code table."""


# -- the codes (the names the engine, the ledger and the API use) ----------------------

INSUFFICIENT_FUNDS = "insufficient_funds"
STAKE_TOO_SMALL = "stake_too_small"
STAKE_TOO_LARGE = "stake_too_large"
INVALID_TARGET = "invalid_target"
UNKNOWN_HOLD = "unknown_hold"
HOLD_EXPIRED = "hold_expired"
HOLD_RESOLVED = "hold_resolved"
HOLD_BUSY = "hold_busy"
BET_BUSY = "bet_busy"
DUPLICATE_HOLD = "duplicate_hold"
DUPLICATE_TICKET = "duplicate_ticket"
TOO_MANY_BETS = "too_many_bets"
ROUND_FULL = "round_full"
ROUND_CLOSED = "round_closed"
ROUND_NOT_RUNNING = "round_not_running"
ROUND_VOIDED = "round_voided"
BET_REFUNDED = "bet_refunded"
ROUND_SETTLED = "round_settled"
ALREADY_CASHED_OUT = "already_cashed_out"
TOO_LATE = "too_late"
UNKNOWN_TICKET = "unknown_ticket"
UNKNOWN_ROUND = "unknown_round"
ROUND_NOT_FINISHED = "round_not_finished"
ENGINE_STOPPING = "engine_stopping"
GAME_PAUSED = "game_paused"
ENGINE_UNAVAILABLE = "engine_unavailable"
LEDGER_BUSY = "ledger_busy"
LEDGER_UNAVAILABLE = "ledger_unavailable"
IDEMPOTENCY_CONFLICT = "idempotency_conflict"
ENVIRONMENT_NOT_ALLOWED = "environment_not_allowed"
INVALID_REQUEST = "invalid_request"
ALREADY_SETTLED = "already_settled"
BET_IN_ROUND = "bet_in_round"
ROUND_OUT_OF_ORDER = "round_out_of_order"
ROUND_STILL_OPEN = "round_still_open"
ROUND_NOT_CRASHED = "round_not_crashed"
INVALID_MULTIPLIER = "invalid_multiplier"
UNKNOWN_WITHDRAWAL = "unknown_withdrawal"
ALREADY_REVERSED = "already_reversed"
# The seamless wallet's (docs/wallet.md): the wallet's refusals, passed on, and crashd's own.
WALLET_SESSION_EXPIRED = "wallet_session_expired"
WALLET_PLAYER_BLOCKED = "wallet_player_blocked"
WALLET_LIMIT_REACHED = "wallet_limit_reached"
WALLET_STAKE_TOO_LARGE = "wallet_stake_too_large"
WALLET_SELF_EXCLUDED = "wallet_self_excluded"
WALLET_UNKNOWN_PLAYER = "wallet_unknown_player"
WALLET_CURRENCY_MISMATCH = "wallet_currency_mismatch"
WALLET_TX_CONFLICT = "wallet_tx_conflict"
WALLET_REFUSED = "wallet_refused"
WALLET_TIMEOUT = "wallet_timeout"
WALLET_ERROR = "wallet_error"
WALLET_UNAVAILABLE = "wallet_unavailable"
UNKNOWN_WALLET_TX = "unknown_wallet_tx"
WALLET_TX_FINAL = "wallet_tx_final"

_ALL = (
    Reason(
        INSUFFICIENT_FUNDS,
        409,
        "Insufficient funds",
        "the user's available balance is too low",
        "the reservation is above the user's available balance (`available`, `requested`)",
    ),
    Reason(
        STAKE_TOO_SMALL,
        422,
        "Stake below the minimum",
        "the stake is below the minimum",
        "the stake is below the operator's `min_stake` (`min_stake`, `max_stake`)",
    ),
    Reason(
        STAKE_TOO_LARGE,
        422,
        "Stake above the maximum",
        "the stake is above the maximum",
        "the stake is above the operator's `max_stake` (`min_stake`, `max_stake`)",
    ),
    Reason(
        INVALID_TARGET,
        422,
        "Invalid auto-cashout target",
        "auto-cashout targets are between 1.01x (101) and 1,000,000x (100000000)",
        "an auto-cashout target outside 101 (1.01x)..100000000",
    ),
    Reason(
        UNKNOWN_HOLD,
        404,
        "Unknown hold",
        "no such hold for this user",
        "no such hold for this user of this partner",
    ),
    Reason(
        HOLD_EXPIRED,
        409,
        "Hold expired",
        "the hold has expired (or is about to); reserve again",
        "the hold expired (or expires within 2 s) before it was confirmed: reserve again",
    ),
    Reason(
        HOLD_RESOLVED,
        409,
        "Hold already confirmed or released",
        "the hold was already confirmed or released",
        "the hold was already confirmed or released",
    ),
    Reason(
        HOLD_BUSY,
        409,
        "Hold busy",
        "this hold is being confirmed or released",
        "another request is confirming or releasing this hold right now",
    ),
    Reason(
        BET_BUSY,
        409,
        "Bet busy",
        "another change of this bet is in progress",
        "another request is changing this bet's auto-cashout right now",
    ),
    Reason(
        DUPLICATE_HOLD,
        409,
        "Duplicate hold",
        "this hold id already exists",
        "a hold id derived from your `Idempotency-Key` already exists for something else",
    ),
    Reason(
        DUPLICATE_TICKET,
        409,
        "Duplicate ticket",
        "this ticket already exists",
        "a ticket id derived from your `Idempotency-Key` already exists for something else",
    ),
    Reason(
        TOO_MANY_BETS,
        409,
        "Too many bets in this round",
        "this user already has the maximum number of bets in this round",
        "the user already has `max_bets_per_user` bets in that round",
    ),
    Reason(
        ROUND_FULL,
        409,
        "Round full",
        "the round has no room for more bets",
        "the round (or the queue for the next one) is at its bet limit",
    ),
    Reason(
        ROUND_CLOSED,
        409,
        "Betting is closed",
        "betting is closed for this round",
        "the auto-cashout can no longer change: the bet's round is past betting "
        "(running, or being settled)",
    ),
    Reason(
        ROUND_NOT_RUNNING,
        409,
        "Round not running",
        "the round is not running yet; cash out once it runs",
        "a cashout before the round started running (betting, or a queued bet)",
    ),
    Reason(
        ROUND_VOIDED,
        409,
        "Round voided",
        "the round was voided",
        "the bet's round was voided (by the operator, a stop or recovery after a "
        "restart) and the stake refunded",
    ),
    Reason(
        BET_REFUNDED,
        409,
        "Bet refunded",
        "the bet was refunded",
        "the bet was refunded (its round voided, or it was queued for a round that "
        "was never played)",
    ),
    Reason(
        ROUND_SETTLED,
        409,
        "Round already settled",
        "the round is over",
        "the bet's round is over and the bet settled (`outcome`, `round_id` say how): "
        "e.g. an auto-cashout change of a bet from an earlier round",
    ),
    Reason(
        ALREADY_CASHED_OUT,
        409,
        "Already cashed out",
        "the bet was already cashed out",
        "(internal; a repeated cashout of a won bet answers `cashed_out` again)",
    ),
    Reason(
        TOO_LATE,
        409,
        "Too late: the round crashed",
        "the round crashed before the cashout",
        "the cashout was handled at or after the crash; `crash_point` says where it crashed",
    ),
    Reason(
        UNKNOWN_TICKET,
        404,
        "Unknown ticket",
        "no such ticket",
        "no such ticket for this partner (or a malformed ticket id); a ticket that "
        "exists is always answered from its real state, even once the engine has "
        "moved past it",
    ),
    Reason(
        UNKNOWN_ROUND,
        404,
        "Unknown round",
        "no such round",
        "no round with that id has been played",
    ),
    Reason(
        ROUND_NOT_FINISHED,
        409,
        "Round not finished",
        "the round is still being played; its game hash and crash point are revealed "
        "when it crashes",
        "the round is still being played (betting or running): its hash and crash "
        "point are revealed when it crashes",
    ),
    Reason(
        ENGINE_STOPPING,
        503,
        "Server shutting down",
        "the server is shutting down and takes no more bets",
        "the server is shutting down and takes no more bets",
    ),
    Reason(
        GAME_PAUSED,
        503,
        "Game paused",
        "the operator paused the game; no round opens until it is resumed",
        "a bet for the next round while the operator has paused the game (the round "
        "still taking bets, if any, plays)",
    ),
    Reason(
        ENGINE_UNAVAILABLE,
        503,
        "Game engine unavailable",
        "the game engine is not running",
        "the game engine is not running",
    ),
    Reason(
        LEDGER_BUSY,
        503,
        "Ledger busy",
        "the ledger is behind; retry shortly",
        "the ledger is behind; retry shortly",
    ),
    Reason(
        LEDGER_UNAVAILABLE,
        503,
        "Ledger unavailable",
        "the ledger stopped before committing this operation",
        "the ledger stopped before committing",
    ),
    Reason(
        IDEMPOTENCY_CONFLICT,
        409,
        "Idempotent id reused for a different operation",
        "this id was used for a different operation",
        "a ledger id derived from your key was used for a different operation",
    ),
    Reason(
        ENVIRONMENT_NOT_ALLOWED,
        403,
        "Not allowed in this environment",
        "not allowed in this environment",
        "the sandbox faucet with a production key",
    ),
    Reason(
        INVALID_REQUEST,
        422,
        "Invalid request",
        "the request is malformed",
        "a request the ledger refuses as malformed",
    ),
    Reason(
        ALREADY_SETTLED,
        409,
        "Already settled",
        "the bet was already settled",
        "the bet was already settled",
    ),
    Reason(
        BET_IN_ROUND,
        409,
        "Bet already in a round",
        "the bet joined a round",
        "a refund of a bet that joined a round (the round is voided instead)",
    ),
    Reason(
        ROUND_OUT_OF_ORDER,
        409,
        "Round out of order",
        "round ids only go up",
        "a ledger guard on the engine's own round ops; a client should never see it",
    ),
    Reason(
        ROUND_STILL_OPEN,
        409,
        "Another round is still open",
        "another round is still open",
        "a ledger guard on the engine's own round ops; a client should never see it",
    ),
    Reason(
        ROUND_NOT_CRASHED,
        409,
        "Round not crashed",
        "the round has not crashed",
        "a ledger guard on the engine's own round ops; a client should never see it",
    ),
    Reason(
        INVALID_MULTIPLIER,
        422,
        "Invalid multiplier",
        "the multiplier is out of bounds",
        "a win above the round's crash point (a ledger guard)",
    ),
    Reason(
        UNKNOWN_WITHDRAWAL,
        404,
        "Unknown withdrawal",
        "no such withdrawal",
        "a PSP reversal of a withdrawal that was never posted",
    ),
    Reason(
        ALREADY_REVERSED,
        409,
        "Withdrawal already reversed",
        "the withdrawal was already reversed",
        "a PSP reversal of a withdrawal that was already reversed",
    ),
    Reason(
        WALLET_SESSION_EXPIRED,
        403,
        "Wallet session expired",
        "the player's session at the operator's wallet has expired: open the game again",
        "seamless: the operator's wallet says the player's session expired (or is unknown)",
    ),
    Reason(
        WALLET_PLAYER_BLOCKED,
        403,
        "Player blocked by the wallet",
        "the operator's wallet has blocked this player",
        "seamless: the operator's wallet refuses the player (account blocked)",
    ),
    Reason(
        WALLET_LIMIT_REACHED,
        403,
        "Responsible-gambling limit reached",
        "a responsible-gambling limit refuses this bet (wager, loss or time limit)",
        "seamless: the wallet refuses the bet under one of the player's limits (wager, "
        "loss, session time); `wallet_message` says which, as the wallet put it",
    ),
    Reason(
        WALLET_STAKE_TOO_LARGE,
        422,
        "Stake above the wallet's limit",
        "the stake is above the largest stake the operator's wallet allows this player",
        "seamless: the stake is above the `max_stake` the wallet gave for the player in "
        "`session.verify` (`max_stake`); refused before the wallet is asked",
    ),
    Reason(
        WALLET_SELF_EXCLUDED,
        403,
        "Player self-excluded",
        "the player has excluded themself from play",
        "seamless: the wallet refuses the bet: the player is self-excluded",
    ),
    Reason(
        WALLET_UNKNOWN_PLAYER,
        404,
        "Unknown to the wallet",
        "the operator's wallet does not know this player (or launch token)",
        "seamless: the wallet does not know the player, or the launch token",
    ),
    Reason(
        WALLET_CURRENCY_MISMATCH,
        409,
        "Currency mismatch",
        "the player's wallet is in another currency than this game",
        "seamless: the player's wallet currency is not the partner's configured one",
    ),
    Reason(
        WALLET_TX_CONFLICT,
        409,
        "Wallet transaction conflict",
        "the wallet knows this transaction id with different contents",
        "seamless: the wallet already has this `tx_id` with a different body",
    ),
    Reason(
        WALLET_REFUSED,
        409,
        "Refused by the wallet",
        "the operator's wallet refused the call",
        "seamless: any other refusal of the wallet's; `wallet_code` and `wallet_message` "
        "carry its own words",
    ),
    Reason(
        WALLET_TIMEOUT,
        504,
        "Wallet did not answer in time",
        "the wallet did not confirm the debit in time: the bet does not play and the "
        "debit is rolled back",
        "seamless: no answer to the debit within `wallet_timeout_ms` or before betting "
        "closed; the bet does not play and crashd rolls the debit back (retried until final)",
    ),
    Reason(
        WALLET_ERROR,
        502,
        "Wallet error",
        "the wallet answered with an error or a broken answer: the bet does not play and "
        "the debit is rolled back",
        "seamless: a 5xx, a dropped connection, a body outside the contract or a bad "
        "signature in answer to the debit; it is rolled back",
    ),
    Reason(
        WALLET_UNAVAILABLE,
        503,
        "Wallet unavailable",
        "the operator's wallet is failing: bets are paused and resume by themselves",
        "seamless: the partner's circuit breaker is open (the wallet failed "
        "`wallet_breaker_failures` calls in a row); `reason` says why, `retry_after_s` when "
        "bets resume; also when the wallet cannot be reached for a balance",
    ),
    Reason(
        UNKNOWN_WALLET_TX,
        404,
        "Unknown wallet transaction",
        "no such wallet transaction",
        "a wallet transaction id this partner does not have",
    ),
    Reason(
        WALLET_TX_FINAL,
        409,
        "Wallet transaction not resolvable",
        "the wallet transaction is not in a state for this",
        "resolving a wallet transaction that is not in the failed queue (or a ledger guard on "
        "the outbox's own ops)",
    ),
)

CATALOGUE: Mapping[str, Reason] = {r.code: r for r in _ALL}
"""Every refusal code, in the order the documentation lists them."""
assert len(CATALOGUE) == len(_ALL), "a code is declared twice"


def reason(code: str) -> Reason:
    """The catalogue entry of ``code`` (a ``KeyError`` is a bug: every code is here)."""
    return CATALOGUE[code]


def describe_codes() -> str:
    """The catalogue as docs/api.md's Markdown table (a test keeps them equal)."""
    lines = ["| code | status | when |", "|---|---|---|"]
    lines += [f"| `{r.code}` | {r.status} | {r.when} |" for r in _ALL]
    return "\n".join(lines) + "\n"

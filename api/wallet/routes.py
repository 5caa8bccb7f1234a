"""The seamless wallet's routes: a page's launch session, the partner's view of its
wallet (status, the reconciliation log, the daily summary) and the failed queue.

* ``POST /wallet/session`` (public, limited per client IP like the other sessions): a
  launch token from the operator's site → ``session.verify`` at its wallet → a user
  token for that player (its balance, bets and cash-outs, as a demo session's).
* ``GET /wallet/status``: the mode, the circuit breaker (why bets are paused, until
  when), the outbox (what is pending, what is parked).
* ``GET /wallet/transactions``: every debit, credit and rollback (or, ``view=calls``,
  every call and its answer), by time window, round, player, status; JSON or CSV.
* ``GET /wallet/summary``: one day's debits, credits, rollbacks, pending and failed.
* ``GET /wallet/failed``, ``POST /wallet/failed/{tx_id}/retry|settle``
  (``manage:wallet``): the failed queue and its resolution.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from quart import Blueprint, Response

from crashd.api.rest.commands import forwarded, forwarded_query
from crashd.api.rest.contract import documented, json_body, json_response, query_params
from crashd.api.rest.idempotency import IdempotencyToken, idempotent, stored_or
from crashd.api.rest.problems import Problem, problem_response
from crashd.api.rest.routes.sessions import public_principal
from crashd.api.rest.validation import Boolean, Choice, Integer, String
from crashd.api.security import feedtokens
from crashd.api.security import sessions as house
from crashd.api.security.auth import requires_scope
from crashd.api.security.guard import signed
from crashd.api.security.keys import PARTNER_ID, Principal
from crashd.api.services import Services, current_services
from crashd.api.wire import API_PREFIX, iso_ms
from crashd.engine.game import GameError
from crashd.engine.ledger import LedgerError, walletstore
from crashd.engine.ledger.model import Result
from crashd.engine.ledger.reads import LedgerReads
from crashd.engine.ledger.wallet import STATES, WalletResolved
from crashd.engine.wallet.seamless import Seamless

from .bets import WALLET_LIMITS_SCHEMA, game_problem, no_wallet_here
from .reconcile import CALL_FIELDS, TX_FIELDS, call_body, daily_summary, tx_body

wallet = Blueprint("wallet", __name__, url_prefix=API_PREFIX)

MAX_PAGE = 1000
_INSTANT = r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{5,15}(Z|[+-][0-9]{2}:[0-9]{2})"


def seamless_for(services: Services, partner_id: str) -> Seamless:
    seamless = services.wallets
    if seamless is None and partner_id in services.wallet_partners:
        raise no_wallet_here(partner_id)
    if seamless is None or seamless.wallet_of(partner_id) is None:
        raise _not_seamless(partner_id)
    return seamless


def _not_seamless(partner_id: str) -> Problem:
    return Problem(
        "wallet_not_seamless",
        f"partner {partner_id} plays on crashd's own balances (it is not in wallets_file)",
    )


def _require_seamless(services: Services, partner_id: str) -> None:
    """Refuse a partner that does not play seamless (in a process without the engine,
    by the wallets file it loaded too)."""
    if services.game is None:
        if partner_id not in services.wallet_partners:
            raise _not_seamless(partner_id)
    else:
        seamless_for(services, partner_id)


def wallet_records(services: Services, partner_id: str) -> tuple[LedgerReads, str]:
    """Where a seamless partner's wallet records are read, and its currency: the
    engine's ledger, or, in a process without the engine (which loads the same
    wallets file), the database through its reads."""
    if services.game is None:
        _require_seamless(services, partner_id)
        return services.require_ledger(), services.wallet_partners[partner_id].currency
    seamless = seamless_for(services, partner_id)
    wallet_of = seamless.wallet_of(partner_id)
    assert wallet_of is not None  # (seamless_for checked)
    return seamless.ledger, wallet_of.currency


# -- the launch session ----------------------------------------------------------------


@dataclass(frozen=True)
class SessionBody:
    partner_id: Annotated[str, String(min_length=1, max_length=64, pattern=PARTNER_ID)]
    launch_token: Annotated[
        str,
        String(
            min_length=1,
            max_length=512,
            pattern=r"[\x21-\x7e]+",
            description="the operator's launch token, as its site put it in the game's URL",
        ),
    ]


WALLET_SESSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "token",
        "expires_at",
        "expires_in_s",
        "ws_url",
        "scopes",
        "environment",
        "user_id",
        "partner_id",
        "currency",
        "limits",
        "balance",
    ],
    "properties": {
        "token": {
            "type": "string",
            "description": "a user token (Bearer on REST, auth on the feed)",
        },
        "expires_at": {"type": "integer"},
        "expires_in_s": {"type": "integer"},
        "ws_url": {"type": "string"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "environment": {"type": "string", "enum": ["sandbox", "production"]},
        "user_id": {"type": "string", "description": "the wallet's player id"},
        "partner_id": {"type": "string"},
        "currency": {"type": "string"},
        "limits": WALLET_LIMITS_SCHEMA,
        "balance": {
            "type": "object",
            "required": ["user_id", "environment", "posted", "pending", "available"],
            "properties": {
                "user_id": {"type": "string"},
                "environment": {"type": "string"},
                "posted": {"type": ["integer", "null"]},
                "pending": {"type": "integer"},
                "available": {"type": ["integer", "null"]},
            },
        },
    },
}


@wallet.post("/wallet/session")
@documented(
    "A page's session for a seamless partner's player: the operator's launch token is "
    "checked with its wallet (session.verify), and a user token for that player is "
    "issued for an hour; limited per client IP",
    response=WALLET_SESSION_SCHEMA,
    status=201,
    tags=("wallet",),
    problems=(
        "wallet_not_seamless",
        "sessions_disabled",
        "wallet_session_expired",
        "wallet_unknown_player",
        "wallet_player_blocked",
        "wallet_currency_mismatch",
        "wallet_refused",
        "wallet_unavailable",
        "rate_limited",
        "engine_unavailable",
    ),
)
@json_body(SessionBody)
async def launch_session(*, body: SessionBody) -> Response:
    services = current_services()
    _require_seamless(services, body.partner_id)
    key_id = services.wallet_keys.get(body.partner_id)
    if (
        services.config.rate_limit_sessions == 0
        or key_id is None
        or not await services.authenticator.issuer_active(key_id)
    ):
        raise Problem("sessions_disabled", "launch sessions are turned off for this partner")
    # The wallet is called by the engine's driver (its breaker, its call log): in a
    # process without the engine, through the command stream; the token is made here.
    verified = await verify_session_now(
        public_principal(services.config.environment), body.partner_id, body.launch_token
    )
    if verified.status_code != 200:
        return verified  # the wallet's refusal, as the engine answered it
    session = json.loads(await verified.get_data(as_text=False))
    expires = int(time.time()) + house.SESSION_TTL_S
    scopes = frozenset(house.WALLET_SCOPES)
    token = services.authenticator.issue_token(
        feedtokens.FeedClaims(
            key_id,
            body.partner_id,
            services.config.environment,
            scopes,
            expires,
            user_id=session["player_id"],
        )
    )
    return json_response(
        {
            "token": token,
            "expires_at": expires,
            "expires_in_s": house.SESSION_TTL_S,
            "ws_url": services.feed_url or "",
            "scopes": sorted(scopes),
            "environment": services.config.environment,
            "user_id": session["player_id"],
            "partner_id": body.partner_id,
            "currency": session["currency"],
            "limits": session["limits"],
            "balance": {
                "user_id": session["player_id"],
                "environment": services.config.environment,
                "posted": session["balance"],
                "pending": 0,
                "available": session["balance"],
            },
        },
        status=201,
        headers={"Cache-Control": "no-store"},
    )


@forwarded_query("wallet_verify_session", str, str)
async def verify_session_now(
    principal: Principal, partner_id: str, launch_token: str, services: Services | None = None
) -> Response:
    """``session.verify`` at the partner's wallet: who the launch token is."""
    services = services or current_services()
    seamless = seamless_for(services, partner_id)
    try:
        session = await seamless.verify_session(partner_id, launch_token)
    except GameError as err:
        raise game_problem(err) from None
    return json_response(
        {
            "player_id": session.player_id,
            "currency": session.currency,
            "limits": session.limits.to_json(),
            "balance": session.balance,
        },
        headers={"Cache-Control": "no-store"},
    )


# -- status ------------------------------------------------------------------------------

STATUS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["partner_id", "mode"],
    "properties": {
        "partner_id": {"type": "string"},
        "mode": {"type": "string", "enum": ["transfer", "seamless"]},
        "currency": {"type": "string"},
        "bets": {"type": "string", "enum": ["open", "paused"]},
        "breaker": {
            "type": "object",
            "properties": {
                "state": {"type": "string", "enum": ["closed", "open", "half_open"]},
                "reason": {"type": "string"},
                "failures": {"type": "integer"},
                "resumes_at": {"type": ["string", "null"], "format": "date-time"},
            },
        },
        "outbox": {
            "type": "object",
            "properties": {
                "pending": {"type": "integer"},
                "failed": {"type": "integer"},
                "owed": {"type": "integer", "description": "total still to be delivered"},
            },
        },
    },
}


def _outbox_counts(conn: Any, environment: str, partner_id: str) -> dict[str, int]:
    row = conn.execute(
        "SELECT coalesce(sum(CASE WHEN state = 'pending' THEN 1 ELSE 0 END), 0), "
        "coalesce(sum(CASE WHEN state = 'failed' THEN 1 ELSE 0 END), 0), "
        "coalesce(sum(amount), 0) FROM wallet_txs WHERE environment = ? AND partner_id = ? "
        "AND kind != 'debit' AND (state = 'pending' OR state = 'failed')",
        (environment, partner_id),
    ).fetchone()
    return {"pending": int(row[0]), "failed": int(row[1]), "owed": int(row[2])}


@wallet.get("/wallet/status")
@documented(
    "This partner's wallet mode; in seamless mode whether bets are open or paused by the "
    "circuit breaker (and why, and until when), and what the outbox holds",
    response=STATUS_SCHEMA,
    tags=("wallet",),
    problems=("engine_unavailable",),
)
@requires_scope("read:balance", tokens=True)
async def status(*, principal: Principal) -> Response:
    return await status_now(principal)


@forwarded_query("wallet_status")
async def status_now(principal: Principal, services: Services | None = None) -> Response:
    """The breaker and the driver live in the engine: asked of it from an API process."""
    services = services or current_services()
    seamless = services.wallets
    if seamless is None and principal.partner_id in services.wallet_partners:
        raise no_wallet_here(principal.partner_id)
    partner = None if seamless is None else seamless.wallet_of(principal.partner_id)
    if seamless is None or partner is None:
        return json_response({"partner_id": principal.partner_id, "mode": "transfer"})
    breaker = partner.breaker.status(seamless.now_ms())
    counts = await seamless.ledger.read(_outbox_counts, principal.environment, principal.partner_id)
    return json_response(
        {
            "partner_id": principal.partner_id,
            "mode": "seamless",
            "currency": partner.currency,
            "bets": "open" if breaker.state.value == "closed" else "paused",
            "breaker": {
                "state": breaker.state.value,
                "reason": breaker.reason,
                "failures": breaker.failures,
                "resumes_at": iso_ms(breaker.resumes_at_ms),
            },
            "outbox": counts,
        },
        headers={"Cache-Control": "no-store"},
    )


# -- reconciliation ---------------------------------------------------------------------

TX_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["tx_id", "kind", "state", "user_id", "amount", "created_at"],
    "properties": {
        "tx_id": {"type": "string"},
        "kind": {"type": "string", "enum": ["debit", "credit", "rollback"]},
        "state": {"type": "string", "enum": list(STATES)},
        "code": {"type": ["string", "null"]},
        "user_id": {"type": "string"},
        "currency": {"type": "string"},
        "amount": {"type": "integer"},
        "multiplier": {"type": ["integer", "null"]},
        "ticket_id": {"type": "string"},
        "round_id": {"type": ["integer", "null"]},
        "ref_tx_id": {"type": ["string", "null"]},
        "attempts": {"type": "integer"},
        "wallet_tx_id": {"type": ["string", "null"]},
        "balance": {"type": ["integer", "null"]},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "next_at": {"type": ["string", "null"], "format": "date-time"},
        "give_up_at": {"type": ["string", "null"], "format": "date-time"},
        "note": {"type": ["string", "null"]},
        "calls": {"type": "array", "items": {"type": "object"}},
    },
}
CALL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "at", "call", "outcome", "duration_ms"],
    "properties": {
        "id": {"type": "integer"},
        "at": {"type": "string", "format": "date-time"},
        "call": {
            "type": "string",
            "enum": ["session.verify", "balance", "debit", "credit", "rollback"],
        },
        "tx_id": {"type": ["string", "null"]},
        "user_id": {"type": ["string", "null"]},
        "request_id": {"type": "string"},
        "status": {"type": ["integer", "null"], "description": "HTTP status; null: no answer"},
        "outcome": {"type": "string", "enum": ["ok", "refused", "unknown"]},
        "code": {"type": ["string", "null"]},
        "duration_ms": {"type": "integer"},
        "request": {
            "type": "string",
            "description": "the JSON body sent (a launch token only hashed)",
        },
        "response": {"type": ["string", "null"], "description": "the body received"},
    },
}


def _instant_ms(text: str | None, name: str) -> int | None:
    if text is None:
        return None
    try:
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        raise Problem(
            "validation_failed",
            f"{name} must be an ISO 8601 instant with its offset, e.g. 2026-12-01T00:00:00Z",
            extra={"errors": [{"field": name, "message": "not an ISO 8601 instant"}]},
        ) from None


@dataclass(frozen=True)
class TransactionsQuery:
    since: Annotated[
        str | None,
        String(max_length=40, pattern=_INSTANT, description="from (inclusive), ISO 8601"),
    ] = None
    until: Annotated[
        str | None, String(max_length=40, pattern=_INSTANT, description="to (exclusive), ISO 8601")
    ] = None
    round_id: Annotated[int | None, Integer(minimum=1)] = None
    user_id: Annotated[
        str | None, String(min_length=1, max_length=64, pattern=r"[A-Za-z0-9_.:@-]{1,64}")
    ] = None
    status: Annotated[
        Literal["pending", "ok", "refused", "cancelled", "failed", "resolved"] | None,
        Choice(description="transactions in this state"),
    ] = None
    kind: Annotated[
        Literal["debit", "credit", "rollback", "balance", "session.verify"] | None,
        Choice(description="transactions of this kind (view=calls: calls of this kind)"),
    ] = None
    view: Annotated[
        Literal["transactions", "calls"],
        Choice(description="transactions, or every call and its answer"),
    ] = "transactions"
    include_calls: Annotated[
        bool, Boolean(description="each transaction with its calls (JSON only)")
    ] = False
    format: Annotated[Literal["json", "csv"], Choice()] = "json"
    limit: Annotated[int, Integer(minimum=1, maximum=MAX_PAGE)] = 100
    after: Annotated[int | None, Integer(minimum=0, description="cursor: next_cursor")] = None


TRANSACTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["partner_id", "view", "items", "next_cursor"],
    "properties": {
        "partner_id": {"type": "string"},
        "view": {"type": "string", "enum": ["transactions", "calls"]},
        "items": {"type": "array", "items": {"oneOf": [TX_SCHEMA, CALL_SCHEMA]}},
        "next_cursor": {"type": ["integer", "null"]},
    },
}


def _csv(rows: list[dict[str, Any]], fields: tuple[str, ...]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, extrasaction="ignore", lineterminator="\r\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return out.getvalue()


@wallet.get("/wallet/transactions")
@documented(
    "Reconciliation: the partner's wallet transactions (debits, credits, rollbacks, with "
    "their state), or with view=calls every call made to its wallet and the answer; by "
    "time window, round, player, status and kind; JSON or CSV (format=csv), paged",
    response=TRANSACTIONS_SCHEMA,
    tags=("wallet",),
    problems=("wallet_not_seamless", "engine_unavailable"),
    media={"text/csv": {"type": "string"}},
)
@requires_scope("read:balance")
@query_params(TransactionsQuery)
async def transactions(*, principal: Principal, query: TransactionsQuery) -> Response:
    services = current_services()
    # Any partner's records (a transfer partner has none): the engine's ledger, or in a
    # process without the engine the database, if this server has seamless partners.
    ledger: LedgerReads
    if services.wallets is not None:
        ledger = services.wallets.ledger
    elif services.game is None and services.wallet_partners:
        ledger = services.require_ledger()
    else:
        raise Problem("wallet_not_seamless", "no partner of this server plays in seamless mode")
    flt = walletstore.TxFilter(
        environment=principal.environment,
        partner_id=principal.partner_id,
        since=_instant_ms(query.since, "since"),
        until=_instant_ms(query.until, "until"),
        round_id=query.round_id,
        user_id=query.user_id,
        state=query.status,
        kind=query.kind,
        after_id=query.after,
        limit=query.limit,
    )
    if query.view == "calls":
        rows = await ledger.read(walletstore.calls, flt)
        items = [call_body(i, c) for i, c in rows]
        cursor = rows[-1][0] if len(rows) == query.limit else None
        fields: tuple[str, ...] = CALL_FIELDS
    else:
        found = await ledger.read(walletstore.txs, flt)
        items = [tx_body(t) for t in found]
        if query.include_calls and query.format == "json":
            calls = await ledger.read(walletstore.calls_of, [t.tx_id for t in found])
            for item, tx in zip(items, found, strict=True):
                item["calls"] = [call_body(0, c) | {"id": 0} for c in calls[tx.tx_id]]
        cursor = found[-1].row_id if len(found) == query.limit else None
        fields = TX_FIELDS
    headers = {"Cache-Control": "no-store"}
    if query.format == "csv":
        if cursor is not None:
            headers["Link"] = f'<?after={cursor}>; rel="next"'
        return Response(
            _csv(items, fields), status=200, headers=headers, content_type="text/csv; charset=utf-8"
        )
    return json_response(
        {
            "partner_id": principal.partner_id,
            "view": query.view,
            "items": items,
            "next_cursor": cursor,
        },
        headers=headers,
    )


@dataclass(frozen=True)
class SummaryQuery:
    day: Annotated[
        str | None,
        String(pattern=r"[0-9]{4}-[0-9]{2}-[0-9]{2}", description="the UTC day (default: today)"),
    ] = None


COUNTS: dict[str, Any] = {"type": "object", "additionalProperties": {"type": "integer"}}
SUMMARY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["partner_id", "day", "debits", "credits", "rollbacks", "pending", "failed"],
    "properties": {
        "partner_id": {"type": "string"},
        "day": {"type": "string"},
        "currency": {"type": "string"},
        "debits": COUNTS,
        "credits": COUNTS,
        "rollbacks": COUNTS,
        "pending": COUNTS,
        "failed": COUNTS,
    },
}


@wallet.get("/wallet/summary")
@documented(
    "One UTC day of the partner's wallet: debits, credits and rollbacks (count, amount, "
    "per state), and how many are pending or failed",
    response=SUMMARY_SCHEMA,
    tags=("wallet",),
    problems=("wallet_not_seamless", "engine_unavailable"),
)
@requires_scope("read:balance")
@query_params(SummaryQuery)
async def summary(*, principal: Principal, query: SummaryQuery) -> Response:
    ledger, currency = wallet_records(current_services(), principal.partner_id)
    try:
        day = date.fromisoformat(query.day) if query.day else datetime.now(UTC).date()
    except ValueError:
        raise Problem(
            "validation_failed",
            "day must be a calendar date, YYYY-MM-DD",
            extra={"errors": [{"field": "day", "message": "not a date"}]},
        ) from None
    body = await ledger.read(daily_summary, principal.environment, principal.partner_id, day)
    body["partner_id"] = principal.partner_id
    body["currency"] = currency
    return json_response(body, headers={"Cache-Control": "no-store"})


# -- the failed queue -------------------------------------------------------------------

FAILED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["partner_id", "items"],
    "properties": {
        "partner_id": {"type": "string"},
        "items": {"type": "array", "items": TX_SCHEMA},
    },
}


@wallet.get("/wallet/failed")
@documented(
    "The failed queue: credits and rollbacks the outbox gave up on (past the retry "
    "horizon, or refused by the wallet), oldest first, each waiting for retry or settle",
    response=FAILED_SCHEMA,
    tags=("wallet",),
    problems=("wallet_not_seamless", "engine_unavailable"),
)
@requires_scope("manage:wallet")
async def failed(*, principal: Principal) -> Response:
    ledger, _ = wallet_records(current_services(), principal.partner_id)
    rows = await ledger.read(
        walletstore.txs,
        walletstore.TxFilter(
            principal.environment, principal.partner_id, state="failed", limit=MAX_PAGE
        ),
    )
    return json_response(
        {"partner_id": principal.partner_id, "items": [tx_body(t) for t in rows]},
        headers={"Cache-Control": "no-store"},
    )


_TX_ID = re.compile(r"(crd|rbk)_[0-9a-f]{24}")


@dataclass(frozen=True)
class ResolveBody:
    note: Annotated[str, String(max_length=500, description="why, for the record")] = ""


def _resolver(action: Literal["retry", "settle"]) -> Any:
    @forwarded(f"wallet_{action}", str, ResolveBody)
    async def resolve_now(
        principal: Principal,
        idempotency: IdempotencyToken,
        tx_id: str,
        body: ResolveBody,
        services: Services | None = None,
    ) -> Response:
        services = services or current_services()
        services.require_game()
        seamless = seamless_for(services, principal.partner_id)
        if _TX_ID.fullmatch(tx_id) is None:
            raise Problem("unknown_wallet_tx", "no such credit or rollback")

        def render(result: Result) -> tuple[int, Any]:
            assert isinstance(result, WalletResolved)
            return 200, {"tx_id": result.tx_id, "state": result.state}

        slot = idempotency.slot(render)
        try:
            result = await seamless.resolve(principal.partner_id, tx_id, action, body.note, slot)
        except (GameError, LedgerError) as err:
            problem = game_problem(err)
            return stored_or(slot, lambda: problem_response(problem, idempotency.request_id))
        assert isinstance(result, WalletResolved)
        return stored_or(slot, lambda: json_response({"tx_id": tx_id, "state": result.state}))

    async def resolve(
        tx_id: str, *, principal: Principal, idempotency: IdempotencyToken, body: ResolveBody
    ) -> Response:
        return await resolve_now(principal, idempotency, tx_id, body)

    resolve.__name__ = f"failed_{action}"
    resolve.__doc__ = (
        "Back into the outbox now, with a new retry horizon"
        if action == "retry"
        else "Settled by other means (the operator paid or refunded the player in the "
        "wallet itself): recorded as resolved, and what crashd held for the wallet goes to it"
    )
    return resolve


for _action in ("retry", "settle"):
    wallet.post(f"/wallet/failed/<tx_id>/{_action}")(
        documented(
            f"Resolve a failed wallet transaction: {_action}",
            response={
                "type": "object",
                "required": ["tx_id", "state"],
                "properties": {"tx_id": {"type": "string"}, "state": {"type": "string"}},
            },
            tags=("wallet",),
            problems=(
                "wallet_not_seamless",
                "unknown_wallet_tx",
                "wallet_tx_final",
                "idempotency_conflict",
                "ledger_unavailable",
                "engine_unavailable",
            ),
        )(
            requires_scope("manage:wallet")(
                signed(idempotent(json_body(ResolveBody)(_resolver(_action))))
            )
        )
    )

"""Orders on the feed connection: bets, cash-outs and auto-cashout changes sent as feed
messages and answered on the same connection, ahead of the broadcast.

An order is the REST request it stands for, exactly: the same route function runs, with
the same idempotency key (scoped to the same API key), the same ledger op and the same
stored reply, so an order and its REST form are one request (a retry of either is
answered from the other's stored reply), and the codes are REST's. The answer is a
control message (no ``seq``)::

    {"type": "result", "id": 5, "key": "k-1", "status": 201, "replayed": false, "body": {…}}

Who may send orders (docs/feed.md, Orders):

* a connection authenticated with an **API key** (a partner's server): every order is
  signed as a REST request is — the six-line string to sign over the REST equivalent's
  method, path, timestamp, nonce, SHA-256 of the canonical body, and key — with the
  signature in the order's ``"signature"`` member; replayed or forged signatures are
  refused with REST's codes;
* a **user-scoped feed token** with ``write:bet`` (a player's browser): the token is the
  credential, and its orders act for that one user only (``user_id`` may be omitted).

Orders are rate-limited per connection (the feed's message limit) and per user.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from quart import Response

from crashd.api.rest import validation
from crashd.api.rest.contract import validation_problem
from crashd.api.rest.idempotency import IdempotencyToken, fingerprint, run_idempotent
from crashd.api.rest.problems import Problem, problem_response
from crashd.api.rest.routes.bets import (
    TICKET,
    AutoCashoutBody,
    CashoutBody,
    PlaceBody,
    cash_out_now,
    place_now,
    retarget_now,
)
from crashd.api.security import signing
from crashd.api.security.keys import Principal
from crashd.api.security.ratelimit import Policy, RateLimiter
from crashd.api.services import Services
from crashd.api.wire import (
    IDEMPOTENCY_HEADER,
    NONCE_HEADER,
    SCOPE_BET,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)

ORDER_TYPES = ("bet", "cashout", "auto_cashout")
"""The feed message types that are orders."""

USER_ORDERS = Policy("feed_orders_per_user", 10, 1.0)
"""Orders one user may send per second through the feed (bursts of 10)."""


class OrderRefused(Exception):
    """An order that cannot even be tried: answered with a ``result`` carrying the
    problem (the connection stays open; it is not a protocol error)."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.detail)
        self.problem = problem


@dataclass(frozen=True)
class Order:
    kind: str
    request_id: Any
    key: str
    fields: dict[str, Any]
    """The REST body's members (and ``ticket_id`` for cash-outs and targets)."""
    signature: dict[str, Any] | None


def parse(obj: dict[str, Any], request_id: Any) -> Order:
    """An order message → ``Order``; a malformed one raises ``OrderRefused``."""
    kind = obj.get("type")
    key = obj.get("key")
    if not isinstance(key, str):
        raise OrderRefused(
            Problem("idempotency_key_required", 'every order carries its idempotency key as "key"')
        )
    signature = obj.get("signature")
    if signature is not None and not isinstance(signature, dict):
        raise OrderRefused(
            Problem("signature_malformed", '"signature" is {"timestamp", "nonce", "value"}')
        )
    fields = {k: v for k, v in obj.items() if k not in ("type", "id", "key", "signature")}
    return Order(str(kind), request_id, key, fields, signature)


def rest_request(order: Order) -> tuple[str, str, dict[str, Any], bytes]:
    """The REST request an order stands for: (method, path, body, the body's canonical
    bytes, which the order is signed and fingerprinted over: ``signing.order_body``)."""
    message = {"type": order.kind, **order.fields}
    method, path, raw = signing.order_body(message)
    ticket = order.fields.get("ticket_id")
    if order.kind != "bet" and (not isinstance(ticket, str) or TICKET.fullmatch(ticket) is None):
        raise OrderRefused(Problem("unknown_ticket", "no such ticket"))
    body = {k: v for k, v in order.fields.items() if k != "ticket_id"}
    return method, path, body, raw


class OrderDesk:
    """Runs orders for the feed: one per server, shared by every connection."""

    def __init__(
        self, services: Services, nonces: signing.NonceCache, signature_window_s: int
    ) -> None:
        self.services = services
        self.nonces = nonces
        self.signature_window_s = signature_window_s
        self.per_user = RateLimiter(max_keys=100_000)
        self.orders = 0
        self.refused = 0

    async def answer(
        self, principal: Principal, obj: dict[str, Any], request_id: Any
    ) -> dict[str, Any]:
        """The ``result`` message for one order message (never raises for the order's
        sake: every refusal is a result with its problem, as REST would answer)."""
        rid = secrets.token_hex(16)
        key: Any = obj.get("key")
        try:
            order = parse(obj, request_id)
            response = await self._run(principal, order, rid)
        except OrderRefused as refused:
            response = problem_response(refused.problem, rid)
        except Problem as problem:
            response = problem_response(problem, rid)
        self.orders += 1
        if response.status_code >= 400:
            self.refused += 1
        raw = await response.get_data(as_text=False)
        result: dict[str, Any] = {
            "type": "result",
            "key": key if isinstance(key, str) else None,
            "status": response.status_code,
            "replayed": response.headers.get("Idempotent-Replayed") == "true",
            "body": json.loads(raw),
        }
        if request_id is not None:
            result["id"] = request_id
        return result

    async def _run(self, principal: Principal, order: Order, rid: str) -> Response:
        if SCOPE_BET not in principal.scopes:
            raise OrderRefused(
                Problem(
                    "insufficient_scope",
                    f"orders need the {SCOPE_BET!r} scope",
                    extra={"required_scope": SCOPE_BET},
                )
            )
        if principal.user_id is not None:
            user = order.fields.setdefault("user_id", principal.user_id)
            if user != principal.user_id:
                # A browser's token acts for its own user only.
                raise OrderRefused(
                    Problem("insufficient_scope", "this credential acts for one user only")
                )
        elif principal.via_token:
            raise OrderRefused(
                Problem("insufficient_scope", "orders on a feed token need a user-scoped token")
            )
        method, path, body, raw = rest_request(order)
        if not principal.via_token:
            self._check_signature(principal, order, method, path, raw)
        user_id = body.get("user_id")
        if isinstance(user_id, str):
            decision = self.per_user.check(
                f"{principal.key_id}/{user_id}", USER_ORDERS, time.monotonic()
            )
            if not decision.allowed:
                raise OrderRefused(
                    Problem(
                        "rate_limited",
                        f"at most {USER_ORDERS.limit} orders per second for one user",
                        extra={"retry_after_s": decision.retry_after_s},
                    )
                )
        run = self._runner(order.kind, principal, path, body)
        fp = fingerprint(method, path, b"", raw)
        return await run_idempotent(principal, order.key, fp, rid, run, self.services)

    def _check_signature(
        self, principal: Principal, order: Order, method: str, path: str, raw: bytes
    ) -> None:
        sig = order.signature
        if sig is None:
            raise OrderRefused(
                Problem(
                    "signature_missing",
                    'orders on an API-key connection are signed: "signature": '
                    '{"timestamp", "nonce", "value"}',
                )
            )
        headers = {
            TIMESTAMP_HEADER: str(sig.get("timestamp", "")),
            NONCE_HEADER: str(sig.get("nonce", "")),
            SIGNATURE_HEADER: str(sig.get("value", "")),
            IDEMPOTENCY_HEADER: order.key,
        }
        now = time.time()
        keys = self.services.keys
        try:
            signing.verify_request(
                signing.SignedRequest(method, path, raw, headers),
                principal.key_id,
                [
                    keys.signing_secret(principal.key_id, g)
                    for g in principal.signing_generations(now)
                ],
                now,
                self.nonces,
                self.signature_window_s,
            )
        except signing.SignatureError as err:
            raise OrderRefused(Problem(err.code, err.detail)) from None

    def _runner(
        self, kind: str, principal: Principal, path: str, body: dict[str, Any]
    ) -> Callable[[IdempotencyToken], Awaitable[Response]]:
        services = self.services
        try:
            if kind == "bet":
                place = validation.parse(PlaceBody, body)

                async def run_place(token: IdempotencyToken) -> Response:
                    return await place_now(principal, token, place, services=services)

                return run_place
            ticket = path.split("/")[-2]
            if kind == "cashout":
                cash = validation.parse(CashoutBody, body)

                async def run_cash(token: IdempotencyToken) -> Response:
                    return await cash_out_now(
                        principal, token, ticket, cash.user_id, services=services
                    )

                return run_cash
            target = validation.parse(AutoCashoutBody, body)

            async def run_target(token: IdempotencyToken) -> Response:
                return await retarget_now(principal, token, ticket, target, services=services)

            return run_target
        except validation.ValidationFailed as exc:
            raise OrderRefused(validation_problem(exc, "order")) from None

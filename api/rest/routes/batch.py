"""``POST /api/v1/bets/batch``: up to ``MAX_BATCH`` bets or cash-outs, for different users,
in one signed request — for partner servers that act for many players at once.

Each item carries its own idempotency key and gets its own result, exactly the answer
(status and body) the single request would get: ``{"action": "place", "key": K, …}`` is
the same request as ``POST /api/v1/bets`` with ``Idempotency-Key: K`` and that body, and
a retry of either form is answered from the other's stored reply. Items run
concurrently, so their money moves in the same group commits; partial success is
normal (one user's ``insufficient_funds`` does not fail the others). Signed like every
write, so the request carries an ``Idempotency-Key`` too (the string to sign includes
it); the batch itself is not stored: its items are, by their own keys.
"""

from __future__ import annotations

import json
from typing import Any

import trio
from quart import Blueprint, Response, request

from crashd.api.rest import validation
from crashd.api.rest.contract import (
    documented,
    json_response,
    read_json_value,
    route_meta,
    validation_problem,
)
from crashd.api.rest.idempotency import IdempotencyToken, fingerprint, run_idempotent
from crashd.api.rest.problems import Problem, problem_response
from crashd.api.rest.requestid import request_id_of
from crashd.api.security.auth import requires_scope
from crashd.api.security.guard import signed
from crashd.api.security.keys import Principal
from crashd.api.wire import API_PREFIX, MAX_BATCH

from .bets import TICKET, USER_ID, CashoutBody, PlaceBody, cash_out_now, place_now

batch = Blueprint("batch", __name__, url_prefix=API_PREFIX)

_KEY = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^[\\x21-\\x7e]+$",
    "description": "this item's idempotency key",
}
BATCH_REQUEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["items"],
    "additionalProperties": False,
    "properties": {
        "items": {
            "type": "array",
            "minItems": 1,
            "maxItems": MAX_BATCH,
            "items": {
                "oneOf": [
                    {
                        "type": "object",
                        "required": ["action", "key", "user_id", "amount"],
                        "additionalProperties": False,
                        "properties": {
                            "action": {"const": "place"},
                            "key": _KEY,
                            **validation.json_schema(PlaceBody)["properties"],
                        },
                    },
                    {
                        "type": "object",
                        "required": ["action", "key", "user_id", "ticket_id"],
                        "additionalProperties": False,
                        "properties": {
                            "action": {"const": "cashout"},
                            "key": _KEY,
                            "user_id": {"type": "string", "pattern": f"^{USER_ID}$"},
                            "ticket_id": {"type": "string", "pattern": "^t_[0-9a-f]{24}$"},
                        },
                    },
                ]
            },
        }
    },
}
BATCH_RESPONSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["results"],
    "properties": {
        "results": {
            "type": "array",
            "description": "one per item, in order",
            "items": {
                "type": "object",
                "required": ["key", "status", "body"],
                "properties": {
                    "key": {"type": "string"},
                    "status": {"type": "integer", "description": "the single request's status"},
                    "replayed": {"type": "boolean"},
                    "body": {"type": "object", "description": "the single request's body"},
                },
            },
        }
    },
}


def _problem(message: str, index: int | None = None) -> Problem:
    where = "body" if index is None else f"body items[{index}]"
    return Problem(
        "validation_failed",
        f"{where}: {message}",
        extra={"errors": [{"field": where.removeprefix("body ") or "body", "message": message}]},
    )


def _items(data: Any) -> list[dict[str, Any]]:
    if not isinstance(data, dict) or set(data) != {"items"}:
        raise _problem('expected {"items": [...]}')
    items = data["items"]
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
        raise _problem(f"items must be a list of 1..{MAX_BATCH} objects")
    for i, item in enumerate(items):
        if not isinstance(item, dict) or item.get("action") not in ("place", "cashout"):
            raise _problem('each item is an object with "action": "place" or "cashout"', i)
        if not isinstance(item.get("key"), str):
            raise _problem('each item needs a string "key" (its idempotency key)', i)
    keys = [item["key"] for item in items]
    if len(set(keys)) != len(keys):
        raise _problem("two items have the same key")
    return items


async def _run_item(principal: Principal, request_id: str, item: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in item.items() if k not in ("action", "key")}
    key = item["key"]
    try:
        if item["action"] == "place":
            body = validation.parse(PlaceBody, fields)
            path = f"{API_PREFIX}/bets"

            async def run(token: IdempotencyToken) -> Response:
                return await place_now(principal, token, body)
        else:
            ticket = fields.pop("ticket_id", None)
            if not isinstance(ticket, str) or TICKET.fullmatch(ticket) is None:
                raise Problem("unknown_ticket", "no such ticket")
            body_c = validation.parse(CashoutBody, fields)
            path = f"{API_PREFIX}/bets/{ticket}/cashout"

            async def run(token: IdempotencyToken) -> Response:
                return await cash_out_now(principal, token, ticket, body_c.user_id)

        # The item's fields are the single request's body: the same fingerprint.
        fp = fingerprint("POST", path, b"", json.dumps(fields).encode())
        response = await run_idempotent(principal, key, fp, request_id, run)
    except validation.ValidationFailed as exc:
        response = problem_response(validation_problem(exc, "item"))
    except Problem as problem:
        response = problem_response(problem)
    raw = await response.get_data(as_text=False)
    return {
        "key": key,
        "status": response.status_code,
        "replayed": response.headers.get("Idempotent-Replayed") == "true",
        "body": json.loads(raw),
    }


@batch.post("/bets/batch")
@documented(
    "Place bets and cash out for several users in one signed request: each item with its "
    "own idempotency key and its own result",
    response=BATCH_RESPONSE_SCHEMA,
    tags=("bets",),
    problems=("validation_failed", "engine_unavailable"),
)
@requires_scope("write:bet")
@signed
async def place_batch(*, principal: Principal) -> Response:
    items = _items(await read_json_value())
    request_id = request_id_of(request.scope)
    results: list[dict[str, Any] | None] = [None] * len(items)

    async def one(i: int, item: dict[str, Any]) -> None:
        results[i] = await _run_item(principal, request_id, item)

    async with trio.open_nursery() as nursery:
        for i, item in enumerate(items):
            nursery.start_soon(one, i, item)
    return json_response({"results": results})


route_meta(place_batch).body_schema = BATCH_REQUEST_SCHEMA

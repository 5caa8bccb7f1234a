"""RFC 9457 problem details: the one shape every API error takes.

A view raises :class:`Problem` (or lets Werkzeug raise 404/405/413); the app's error
handlers turn it into ``application/problem+json`` with the standard members ``type``,
``title``, ``status``, ``detail`` and two of ours: ``code``, a stable snake_case string a
client may switch on, and ``request_id``, the value of the ``X-Request-ID`` header.

Codes are data (:data:`CODES`): one table from code to HTTP status and title, so the
documentation and the OpenAPI document are generated from the same place the errors are
raised from, and a typo in a code fails at import rather than in production.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crashd.engine.reasons import CATALOGUE

if TYPE_CHECKING:
    from quart import Response

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:crashd:problem:"
"""``type`` is ``urn:crashd:problem:<code>``: stable and unique without pretending a
documentation URL exists; docs/api.md lists every code."""


@dataclass(frozen=True)
class ProblemKind:
    status: int
    title: str
    when: str = ""
    """When it happens (docs/api.md's code tables are made from it)."""


def _k(status: int, title: str, when: str) -> ProblemKind:
    return ProblemKind(status, title, when)


API_CODES: dict[str, ProblemKind] = {
    # The API's own codes, in the order docs/api.md lists them. The game's, the
    # engine's and the ledger's are the catalogue in crashd.engine.reasons.
    "bad_request": _k(400, "Bad request", "a request the framework cannot parse"),
    "malformed_json": _k(
        400,
        "Malformed JSON body",
        "the body is not one well-formed UTF-8 JSON document (also: `NaN`/`Infinity`, "
        "duplicate members, nesting too deep, a lone surrogate escape such as `\\ud800`)",
    ),
    "idempotency_key_required": _k(
        400, "Idempotency-Key header required", "a money-moving POST without `Idempotency-Key`"
    ),
    "idempotency_key_invalid": _k(
        400,
        "Idempotency-Key header invalid",
        "`Idempotency-Key` is empty, longer than 255 or not visible ASCII",
    ),
    "invalid_api_key": _k(
        401,
        "Invalid API key",
        "no key, a malformed `Authorization` header, or a key that is unknown, revoked, or "
        "for an environment this server does not serve",
    ),
    "insufficient_scope": _k(
        403,
        "Insufficient scope",
        "the key is valid but lacks the route's scope (`required_scope` names it)",
    ),
    "token_not_accepted": _k(
        403,
        "Feed token not accepted here",
        "a feed token on a route that takes an API key (tokens read game state, and a user "
        "token its own user's balance and bets)",
    ),
    "token_wrong_user": _k(
        403,
        "Token is for another user",
        "a user-scoped token asked for another user's balance or bets (`user_id` names its user)",
    ),
    "sessions_disabled": _k(
        403,
        "Public sessions are off",
        "the operator turned public sessions off (`rate_limit_sessions` = 0, or the house "
        "key revoked); a demo session on a production server",
    ),
    "invalid_session_token": _k(
        401,
        "Session token invalid",
        "the token to renew is forged, not a demo session's, or expired more than a day ago",
    ),
    "signature_missing": _k(
        401,
        "Signature missing",
        "a signed route without `X-Crashd-Timestamp`/`-Nonce`/`-Signature` (or a webhook "
        "without `Crashd-PSP-Signature`)",
    ),
    "signature_malformed": _k(
        400,
        "Signature malformed",
        "a signature header that does not parse (timestamp not Unix seconds, nonce not "
        "16-64 of `A-Za-z0-9_-`, signature not 64 lowercase hex)",
    ),
    "signature_expired": _k(
        401,
        "Signature expired",
        "the timestamp is more than `signature_window_s` (webhook: 300 s) in the past",
    ),
    "signature_from_future": _k(
        401,
        "Signature timestamp in the future",
        "the timestamp is more than `signature_window_s` in the future",
    ),
    "invalid_signature": _k(
        401,
        "Invalid signature",
        "the signature does not match the request (or no `v1` matches a PSP secret)",
    ),
    "nonce_reused": _k(
        409, "Nonce reused", "this key already used this nonce within the window: a replay"
    ),
    "rate_limited": _k(
        429,
        "Too many requests",
        "over the key's (or, without a valid key, the client IP's) limit; see `Retry-After`",
    ),
    "psp_not_configured": _k(
        503,
        "PSP webhooks not configured",
        "a PSP webhook, but `psp_secrets_file` is missing or empty",
    ),
    "environment_mismatch": _k(
        422,
        "Event for another environment",
        "a PSP event for the other environment than this server's",
    ),
    "not_found": _k(404, "Not found", "no such resource"),
    "seal_unavailable": _k(
        404,
        "No seal",
        "the round has no start seal: it is still taking bets, was voided while betting, "
        "or was played before seals existed",
    ),
    "transcript_unavailable": _k(
        404,
        "No transcript",
        "the round was settled before the ledger kept transcripts",
    ),
    "method_not_allowed": _k(
        405,
        "Method not allowed",
        "the resource exists but not with this method (see `Allow`)",
    ),
    "request_timeout": _k(408, "Request timeout", "the request body did not arrive within 30 s"),
    "idempotency_key_in_flight": _k(
        409,
        "Request with this Idempotency-Key still in progress",
        "the first request with this key is still running; retry after `Retry-After`",
    ),
    "payload_too_large": _k(
        413,
        "Request body too large",
        "the body exceeds `max_body_bytes` (default 64 KiB), with or without `Content-Length`",
    ),
    "unsupported_media_type": _k(
        415,
        "Unsupported media type",
        "a JSON route got a body that is not `Content-Type: application/json` (charset, if "
        "given, must be UTF-8)",
    ),
    "validation_failed": _k(
        422,
        "Validation failed",
        "the JSON or query parameters do not match the schema; `errors` lists every bad field",
    ),
    "idempotency_key_reused": _k(
        422,
        "Idempotency-Key reused with a different request",
        "the key was used before for a different request (method, path, query or body differ)",
    ),
    "invalid_limits": _k(
        422,
        "Limits not allowed",
        "a limits change that breaks a rule (`field` names it: min_stake above max_stake, "
        "max_win below max_stake / 100, …); nothing changed",
    ),
    "round_not_voidable": _k(
        409,
        "Round cannot be voided",
        "a void while no round is betting or running (it crashed already, or the game is "
        "paused between rounds)",
    ),
    "unknown_key": _k(404, "Unknown API key", "no API key with this id"),
    "chain_not_ready": _k(
        409,
        "Chain not ready",
        "a chain action out of order: a next chain while one is waiting, a salt for a chain "
        "that has one (or none waiting)",
    ),
    "internal_error": _k(
        500, "Internal server error", "the server failed; nothing internal is disclosed"
    ),
    "wallet_not_seamless": _k(
        409,
        "Partner not in seamless mode",
        "a seamless-wallet route for a partner that plays on crashd's own balances (not in "
        "`wallets_file`)",
    ),
    "seamless_one_shot": _k(
        409,
        "Not for a seamless partner",
        "reserve, confirm, release or the faucet for a partner that plays on its own "
        "wallet: its bets are `POST /api/v1/bets`",
    ),
}

CODES: dict[str, ProblemKind] = {
    **API_CODES,
    **{code: _k(r.status, r.title, r.when) for code, r in CATALOGUE.items()},
}
"""Every code a response may carry: the API's own, then the game's catalogue."""
assert not set(API_CODES) & set(CATALOGUE), "a code is declared twice"

_GENERIC_BY_STATUS: dict[int, str] = {}
for _code in (
    "bad_request",
    "invalid_api_key",
    "insufficient_scope",
    "not_found",
    "method_not_allowed",
    "request_timeout",
    "idempotency_key_in_flight",
    "payload_too_large",
    "unsupported_media_type",
    "validation_failed",
    "internal_error",
):
    _GENERIC_BY_STATUS[API_CODES[_code].status] = _code


def register_code(code: str, status: int, title: str, when: str = "") -> None:
    """Add a code at import time (tests register their own ``test_*`` codes).

    Re-registering the same code with the same meaning is allowed (module reloads in
    tests); changing its status or title is a programming error.
    """
    if not code or not code.replace("_", "").isalnum() or code != code.lower():
        raise ValueError(f"problem code must be snake_case: {code!r}")
    kind = ProblemKind(status, title, when)
    existing = CODES.get(code)
    if existing is not None and (existing.status, existing.title) != (status, title):
        raise ValueError(f"problem code {code!r} already registered as {existing}")
    CODES.setdefault(code, kind)


def describe_api_codes() -> str:
    """The API's own codes as docs/api.md's Markdown table (a test keeps them equal)."""
    lines = ["| code | status | when |", "|---|---|---|"]
    lines += [f"| `{code}` | {k.status} | {k.when} |" for code, k in API_CODES.items()]
    return "\n".join(lines) + "\n"


def code_for_status(status: int) -> str:
    """The generic code for an HTTP status (used for framework errors such as 404)."""
    code = _GENERIC_BY_STATUS.get(status)
    if code is not None:
        return code
    return "bad_request" if 400 <= status < 500 else "internal_error"


class Problem(Exception):
    """An API error with a stable ``code``; raise it from a view or a decorator.

    ``extra`` adds members to the body (e.g. ``errors`` for validation, ``crash_point``
    for ``too_late``); ``headers`` adds response headers (e.g. ``Retry-After``).
    """

    def __init__(
        self,
        code: str,
        detail: str,
        *,
        status: int | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        kind = CODES.get(code)
        if kind is None:
            raise ValueError(f"unregistered problem code {code!r}; add it with register_code")
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.status = status if status is not None else kind.status
        self.title = kind.title
        self.detail = detail
        self.extra: dict[str, Any] = dict(extra or {})
        self.headers: dict[str, str] = dict(headers or {})

    def body(self, request_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": TYPE_PREFIX + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "request_id": request_id,
        }
        for name, value in self.extra.items():
            # The standard members are not overridable: clients rely on them.
            doc.setdefault(name, value)
        return doc

    def encode(self, request_id: str) -> bytes:
        return json.dumps(self.body(request_id), separators=(",", ":")).encode()


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code", "request_id"],
    "properties": {
        "type": {"type": "string", "description": "urn:crashd:problem:<code>"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "validation_failed only: one entry per invalid field",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
    "additionalProperties": True,
}


def problem_response(problem: Problem, request_id: str | None = None) -> Response:
    """Render ``problem`` for the current request (quoting its request id), or, outside
    a request (a feed order), for ``request_id``."""
    # Imported here so the code table above stays importable without Quart (docs, tests).
    from quart import Response, request

    from .requestid import request_id_of

    rid = request_id if request_id is not None else request_id_of(request.scope)
    headers = dict(problem.headers)
    headers["Cache-Control"] = "no-store"
    return Response(
        problem.encode(rid),
        status=problem.status,
        headers=headers,
        content_type=PROBLEM_CONTENT_TYPE,
    )

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


CODES: dict[str, ProblemKind] = {
    # Transport and routing: produced by the framework, reshaped by the app.
    "bad_request": ProblemKind(400, "Bad request"),
    "not_found": ProblemKind(404, "Not found"),
    "method_not_allowed": ProblemKind(405, "Method not allowed"),
    "request_timeout": ProblemKind(408, "Request timeout"),
    "payload_too_large": ProblemKind(413, "Request body too large"),
    "unsupported_media_type": ProblemKind(415, "Unsupported media type"),
    "internal_error": ProblemKind(500, "Internal server error"),
    # Request bodies and parameters.
    "malformed_json": ProblemKind(400, "Malformed JSON body"),
    "validation_failed": ProblemKind(422, "Validation failed"),
    # Authentication and authorisation.
    "invalid_api_key": ProblemKind(401, "Invalid API key"),
    "insufficient_scope": ProblemKind(403, "Insufficient scope"),
    # Idempotency-Key.
    "idempotency_key_required": ProblemKind(400, "Idempotency-Key header required"),
    "idempotency_key_invalid": ProblemKind(400, "Idempotency-Key header invalid"),
    "idempotency_key_reused": ProblemKind(422, "Idempotency-Key reused with a different request"),
    "idempotency_key_in_flight": ProblemKind(
        409, "Request with this Idempotency-Key still in progress"
    ),
}

_GENERIC_BY_STATUS: dict[int, str] = {}
for _code, _kind in CODES.items():
    _GENERIC_BY_STATUS.setdefault(_kind.status, _code)


def register_code(code: str, status: int, title: str) -> None:
    """Add a domain code (``insufficient_funds``, ``round_closed`` …) at import time.

    Re-registering the same code with the same meaning is allowed (module reloads in
    tests); changing its status or title is a programming error.
    """
    if not code or not code.replace("_", "").isalnum() or code != code.lower():
        raise ValueError(f"problem code must be snake_case: {code!r}")
    kind = ProblemKind(status, title)
    existing = CODES.get(code)
    if existing is not None and existing != kind:
        raise ValueError(f"problem code {code!r} already registered as {existing}")
    CODES[code] = kind


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


def problem_response(problem: Problem) -> Response:
    """Render ``problem`` for the current request (quoting its request id)."""
    # Imported here so the code table above stays importable without Quart (docs, tests).
    from quart import Response, request

    from .requestid import request_id_of

    rid = request_id_of(request.scope)
    headers = dict(problem.headers)
    headers["Cache-Control"] = "no-store"
    return Response(
        problem.encode(rid),
        status=problem.status,
        headers=headers,
        content_type=PROBLEM_CONTENT_TYPE,
    )

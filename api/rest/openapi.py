"""The OpenAPI 3.1 document, generated from the app's real URL map.

Every rule under ``/api/v1`` is walked; its view's :class:`~crashd.api.rest.contract.RouteMeta`
(recorded by ``@documented``, ``@json_body``, ``@query_params``, ``@requires_scope``,
``@idempotent``) becomes an operation. Problem responses are derived from the same
records (a route with a body can answer 400/413/415/422, one with a scope 401/403, …),
so the document describes what the code does. :func:`undocumented_routes` lists rules
whose view lacks ``@documented``; the test suite requires it to be empty.
"""

from __future__ import annotations

import re
from typing import Any

from quart import Quart
from werkzeug.routing.rules import parse_converter_args

from crashd.api import __version__
from crashd.api.rest import validation
from crashd.api.wire import (
    API_PREFIX,
    IDEMPOTENCY_HEADER,
    REPLAYED_HEADER,
    REQUEST_ID_HEADER,
    SCOPES,
)

from .contract import ResponseSpec, find_route_meta
from .idempotency import KEY_PATTERN
from .problems import CODES, PROBLEM_CONTENT_TYPE, PROBLEM_SCHEMA

_IGNORED_METHODS = {"HEAD", "OPTIONS"}
_RULE_PARAM = re.compile(
    r"<(?:(?P<converter>[a-zA-Z_][a-zA-Z0-9_]*)(?:\((?P<args>[^)]*)\))?:)?(?P<name>[a-zA-Z_][a-zA-Z0-9_]*)>"
)
_CONVERTER_SCHEMA: dict[str, dict[str, Any]] = {
    "default": {"type": "string"},
    "string": {"type": "string"},
    "int": {"type": "integer", "minimum": 0},
    "uuid": {"type": "string", "format": "uuid"},
}


def api_rules(app: Quart) -> list[tuple[str, str, str]]:
    """(openapi path, method, endpoint) for every routed method under /api/v1."""
    result = []
    for rule in app.url_map.iter_rules():
        if not (rule.rule == API_PREFIX or rule.rule.startswith(API_PREFIX + "/")):
            continue
        if getattr(rule, "websocket", False):
            continue  # the WebSocket feed is documented separately (docs/api.md)
        path = _RULE_PARAM.sub(lambda m: "{" + m.group("name") + "}", rule.rule)
        for method in sorted((rule.methods or set()) - _IGNORED_METHODS):
            result.append((path, method.lower(), rule.endpoint))
    return result


def undocumented_routes(app: Quart) -> list[str]:
    missing = []
    for path, method, endpoint in api_rules(app):
        meta = find_route_meta(app.view_functions[endpoint])
        if meta is None or not meta.documented:
            missing.append(f"{method.upper()} {path}")
    return missing


def _schema(value: type | dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        return value
    return validation.json_schema(value)


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _path_parameters(app: Quart, endpoint: str) -> list[dict[str, Any]]:
    params = []
    for rule in app.url_map.iter_rules(endpoint):
        for m in _RULE_PARAM.finditer(rule.rule):
            converter = m.group("converter") or "default"
            schema = dict(_CONVERTER_SCHEMA.get(converter, {"type": "string"}))
            if converter == "int" and m.group("args"):
                # <int(min=1, max=…):id>: Werkzeug answers 404 outside the bounds.
                _, bounds = parse_converter_args(m.group("args"))
                if bounds.get("min") is not None:
                    schema["minimum"] = bounds["min"]
                if bounds.get("max") is not None:
                    schema["maximum"] = bounds["max"]
            params.append(
                {"name": m.group("name"), "in": "path", "required": True, "schema": schema}
            )
        break
    return params


def _query_parameters(schema: type) -> list[dict[str, Any]]:
    doc = validation.json_schema(schema)
    required = set(doc.get("required", ()))
    params = []
    for name, prop in doc["properties"].items():
        param: dict[str, Any] = {
            "name": name,
            "in": "query",
            "required": name in required,
            "schema": prop,
        }
        if "description" in prop:
            param["description"] = prop["description"]
        params.append(param)
    return params


def build_openapi(app: Quart, *, version: str = __version__) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    request_id_header = {
        REQUEST_ID_HEADER: {
            "description": "echoes a sane inbound X-Request-ID, or a generated one",
            "schema": {"type": "string"},
        },
    }
    for path, method, endpoint in api_rules(app):
        meta = find_route_meta(app.view_functions[endpoint])
        if meta is None or not meta.documented:
            continue
        op: dict[str, Any] = {"operationId": endpoint.replace(".", "_"), "summary": meta.summary}
        if meta.description:
            op["description"] = meta.description
        if meta.tags:
            op["tags"] = list(meta.tags)
        parameters = _path_parameters(app, endpoint)
        if meta.query_schema is not None:
            parameters += _query_parameters(meta.query_schema)
        if meta.idempotent:
            parameters.append(
                {
                    "name": IDEMPOTENCY_HEADER,
                    "in": "header",
                    "required": True,
                    "description": "unique per intended operation; retries reuse it (kept 24 h)",
                    "schema": {"type": "string", "pattern": f"^{KEY_PATTERN.pattern}$"},
                }
            )
        if meta.signed:
            for name, description, pattern in (
                (
                    "X-Crashd-Timestamp",
                    "Unix seconds; within signature_window_s of the server clock",
                    "^[0-9]{1,12}$",
                ),
                (
                    "X-Crashd-Nonce",
                    "unique per request (16-64 of A-Za-z0-9_-)",
                    "^[A-Za-z0-9_-]{16,64}$",
                ),
                (
                    "X-Crashd-Signature",
                    "hex HMAC-SHA256 of the canonical string (docs/security.md)",
                    "^[0-9a-f]{64}$",
                ),
            ):
                parameters.append(
                    {
                        "name": name,
                        "in": "header",
                        "required": True,
                        "description": description,
                        "schema": {"type": "string", "pattern": pattern},
                    }
                )
        if 304 in meta.responses:
            # A conditional resource (api.conditional): validators from an earlier 200.
            parameters += [
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "ETag(s) of your cached copy (or *): 304 if it is current",
                },
                {
                    "name": "If-Modified-Since",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                    "description": "Last-Modified of your cached copy (HTTP date): 304 if unchanged; "
                    "ignored when If-None-Match is sent",
                },
            ]
        if parameters:
            op["parameters"] = parameters
        if meta.body_schema is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": _schema(meta.body_schema)}},
            }
        responses: dict[str, Any] = {}
        for status, spec in sorted(meta.responses.items()):
            responses[str(status)] = _response(
                spec, request_id_header, meta.idempotent and status < 300
            )
        problems: dict[int, str] = {500: "internal error (no details leak; quote the request id)"}
        if meta.body_schema is not None or meta.query_schema is not None:
            problems[422] = (
                "validation_failed (or idempotency_key_reused)"
                if meta.idempotent
                else "validation_failed"
            )
        if meta.body_schema is not None:
            problems.update(
                {400: "malformed_json", 413: "payload_too_large", 415: "unsupported_media_type"}
            )
        if meta.scope is not None:
            problems.update(
                {
                    401: "invalid_api_key",
                    403: "insufficient_scope"
                    if meta.tokens
                    else "insufficient_scope / token_not_accepted",
                }
            )
            op["security"] = [{"bearerAuth": []}]
            op["x-required-scope"] = meta.scope
            # Routes that accept feed tokens say so; on the others a token is refused.
            op["x-accepts-feed-token"] = meta.tokens
        if meta.idempotent:
            problems[400] = (
                problems.get(400, "") + ", " if 400 in problems else ""
            ) + "idempotency_key_required / idempotency_key_invalid"
            problems[409] = "idempotency_key_in_flight"
            problems.setdefault(422, "idempotency_key_reused")
        if "{" in path:
            problems[404] = (
                "not_found (no such resource: a path parameter out of its range or format)"
            )
        for code in meta.problems:
            # The view's own refusals, each under its status, named by code.
            status = CODES[code].status
            problems[status] = f"{problems[status]}; {code}" if status in problems else code
        for status, description in sorted(problems.items()):
            responses.setdefault(str(status), _problem(description))
        op["responses"] = responses
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "crashd API",
            "version": version,
            "description": "Provably fair crash game engine. Errors are RFC 9457 problem details "
            "with a stable `code` and the `request_id`; every response carries X-Request-ID.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": {"Problem": PROBLEM_SCHEMA},
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "API key (ck_test_… sandbox, ck_live_… production). Scopes: "
                    + ", ".join(SCOPES)
                    + "; each operation names its scope in x-required-scope. Operations with "
                    "x-accepts-feed-token: true also take a feed token (ft_…: POST "
                    "/api/v1/feed/token, /feed/user-token, /session/viewer, "
                    "/sandbox/session); the others answer a token with 403 "
                    "token_not_accepted.",
                },
            },
        },
    }


def _response(spec: ResponseSpec, base_headers: dict[str, Any], idempotent: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {"description": spec.description}
    headers = dict(base_headers)
    for name, description in spec.headers.items():
        headers[name] = {"description": description, "schema": {"type": "string"}}
    if idempotent:
        headers[REPLAYED_HEADER] = {
            "description": "true when this is a stored response replayed for a repeated Idempotency-Key",
            "schema": {"type": "string", "enum": ["true"]},
        }
    doc["headers"] = headers
    schema = _schema(spec.schema)
    if schema is not None:
        doc["content"] = {"application/json": {"schema": schema}}
    for media_type, media_schema in spec.media.items():
        doc.setdefault("content", {})[media_type] = {"schema": media_schema}
    if spec.links:
        doc["links"] = spec.links
    return doc

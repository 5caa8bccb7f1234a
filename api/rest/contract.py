"""Declaring an endpoint's contract next to its code.

Each decorator here both *enforces* a part of the contract and *records* it on the view
(:class:`RouteMeta`), and :mod:`crashd.api.rest.openapi` builds the OpenAPI document from those
records and the app's real URL map. The document cannot drift from the behaviour: the
same schema object validates the request and describes it.

Order, outermost first (each wrapper passes its result inward as a keyword argument)::

    @bp.post("/bets")
    @documented("Place a bet", response=BetTicket, status=201)
    @requires_scope("write:bet")          # api.auth       -> principal=
    @idempotent                           # api.idempotency -> idempotency=
    @json_body(PlaceBet)                  #                -> body=
    async def place_bet(*, principal: Principal, idempotency: IdempotencyToken,
                        body: PlaceBet) -> Response: ...
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from quart import Response, request

from crashd.api.rest import validation
from crashd.api.rest.body import request_body

from .problems import CODES, Problem

View = Callable[..., Awaitable[Any]]
V = TypeVar("V", bound=View)

JSON_TYPES = ("application/json",)


@dataclass
class ResponseSpec:
    description: str
    schema: type | dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    """Response header name -> description (documented, not enforced)."""
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    """OpenAPI links: how this response's values feed another operation (name -> Link)."""
    media: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Other media types the response may take beside JSON (e.g. ``text/csv``) -> schema."""


@dataclass
class RouteMeta:
    """What the OpenAPI generator knows about a view. Shared (same object) by every
    wrapper of the view, because ``functools.wraps`` copies ``__dict__`` by reference."""

    summary: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    responses: dict[int, ResponseSpec] = field(default_factory=dict)
    body_schema: type | dict[str, Any] | None = None
    """A validated dataclass (``json_body``), or a JSON Schema for a view that checks
    its body itself."""
    query_schema: type | None = None
    scope: str | None = None
    tokens: bool = False
    """Feed tokens (``Bearer ft_…``) are accepted beside API keys."""
    idempotent: bool = False
    problems: tuple[str, ...] = ()
    """Domain problem codes the view may raise (``unknown_ticket``, ``round_closed`` …),
    beyond those the decorators imply; each is documented under its HTTP status."""
    signed: bool = False
    """``crashd.api.security.guard.signed``: the request must carry X-Crashd-Timestamp/-Nonce/-Signature."""
    documented: bool = False


_META_ATTR = "__crashd_route__"


def route_meta(view: Callable[..., Any]) -> RouteMeta:
    """The view's contract record, created on first use."""
    meta = view.__dict__.get(_META_ATTR)
    if meta is None:
        meta = RouteMeta()
        setattr(view, _META_ATTR, meta)
    return meta


def find_route_meta(view: Callable[..., Any]) -> RouteMeta | None:
    return view.__dict__.get(_META_ATTR)


def documented(
    summary: str,
    *,
    response: type | dict[str, Any] | None = None,
    status: int = 200,
    description: str = "",
    tags: tuple[str, ...] = (),
    response_description: str = "OK",
    headers: Mapping[str, str] | None = None,
    extra_responses: Mapping[int, ResponseSpec] | None = None,
    problems: Iterable[str] = (),
    links: Mapping[str, dict[str, Any]] | None = None,
    media: Mapping[str, dict[str, Any]] | None = None,
) -> Callable[[V], V]:
    """Mark a view as part of the public API (required for every /api/v1 route: a test
    fails on an undocumented one) and describe its success response.

    ``problems`` lists the registered problem codes the view itself may raise; the
    OpenAPI document puts each under its status (the decorators' own codes, such as
    ``invalid_api_key`` or ``validation_failed``, are added without being listed)."""
    codes = tuple(problems)
    unknown = [code for code in codes if code not in CODES]
    if unknown:
        raise ValueError(f"unregistered problem codes {unknown}; add them with register_code")

    def decorate(view: V) -> V:
        meta = route_meta(view)
        meta.problems = codes
        meta.summary = summary
        meta.description = description or (view.__doc__ or "").strip()
        meta.tags = tags
        meta.responses[status] = ResponseSpec(
            response_description,
            response,
            dict(headers or {}),
            dict(links or {}),
            dict(media or {}),
        )
        for code, spec in (extra_responses or {}).items():
            meta.responses[code] = spec
        meta.documented = True
        return view

    return decorate


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A compact JSON response (``ensure_ascii`` off: UTF-8 is the JSON default)."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return Response(
        body, status=status, headers=dict(headers or {}), content_type="application/json"
    )


def _is_json(content_type: str | None) -> bool:
    if not content_type:
        return False
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()
    if mime not in JSON_TYPES:
        return False
    charset = ""
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return charset in ("", "utf-8", "utf8")


def validation_problem(exc: validation.ValidationFailed, where: str) -> Problem:
    errors = [{"field": e.field, "message": e.message} for e in exc.errors]
    first = exc.errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return Problem(
        "validation_failed",
        f"{where} {first.field}: {first.message}{more}",
        extra={"errors": errors},
    )


async def read_json_value() -> Any:
    """Check content type (415) and decode strictly (400) the body, unvalidated."""
    if not _is_json(request.headers.get("Content-Type")):
        raise Problem("unsupported_media_type", "send the body as Content-Type: application/json")
    raw = await request_body()
    try:
        return validation.decode_json(raw)
    except validation.MalformedJSON as exc:
        raise Problem("malformed_json", str(exc)) from None


async def read_json_body(schema: type[validation.T]) -> validation.T:
    """Check content type (415), decode strictly (400) and validate (422) the body."""
    data = await read_json_value()
    try:
        return validation.parse(schema, data)
    except validation.ValidationFailed as exc:
        raise validation_problem(exc, "body") from None


def json_body(schema: type) -> Callable[[V], V]:
    """Validate the JSON body against ``schema``; the view gets ``body=<instance>``."""
    validation.json_schema(schema)  # fail at import on a malformed schema

    def decorate(view: V) -> V:
        route_meta(view).body_schema = schema

        @functools.wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs["body"] = await read_json_body(schema)
            return await view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def query_params(schema: type) -> Callable[[V], V]:
    """Validate the query string against ``schema``; the view gets ``query=<instance>``."""
    validation.json_schema(schema)

    def decorate(view: V) -> V:
        route_meta(view).query_schema = schema

        @functools.wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            args_lists = {name: request.args.getlist(name) for name in request.args.keys()}
            try:
                kwargs["query"] = validation.parse_query(schema, args_lists)
            except validation.ValidationFailed as exc:
                raise validation_problem(exc, "query parameter") from None
            return await view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate

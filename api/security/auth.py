"""Bearer-key authentication and scope checks for routes.

``@requires_scope("read:balance")`` verifies ``Authorization: Bearer ck_…`` and passes
the caller's :class:`~crashd.api.security.keys.Principal` to the view as ``principal=``. A missing,
malformed, unknown or revoked key is 401 ``invalid_api_key``; a valid key without the
scope is 403 ``insufficient_scope``. Both carry an RFC 6750 ``WWW-Authenticate`` header.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from quart import request

from crashd.api.rest.contract import V, route_meta
from crashd.api.rest.problems import Problem
from crashd.api.wire import SCOPES

from .guard import bearer_token, request_principal
from .keys import Principal

_REALM = 'Bearer realm="crashd"'


async def authenticate_request() -> Principal:
    """The verified caller of the current request, or a 401 problem."""
    header = request.headers.get("Authorization")
    if header is None:
        raise Problem(
            "invalid_api_key",
            "send your API key as Authorization: Bearer ck_…",
            headers={"WWW-Authenticate": _REALM},
        )
    if bearer_token(header) is None:
        raise Problem(
            "invalid_api_key",
            "the Authorization header must be: Bearer <API key>",
            headers={"WWW-Authenticate": _REALM},
        )
    # Looked up once per request: the rate limiter usually did it already.
    principal = await request_principal()
    if principal is None:
        raise Problem(
            "invalid_api_key",
            "the API key is unknown, revoked, or not valid on this server",
            headers={"WWW-Authenticate": f'{_REALM}, error="invalid_token"'},
        )
    return principal


def requires_scope(scope: str) -> Callable[[V], V]:
    """Require a verified key holding ``scope``; the view receives ``principal=``."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(view: V) -> V:
        route_meta(view).scope = scope

        @functools.wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = await authenticate_request()
            if not principal.has_scope(scope):
                raise Problem(
                    "insufficient_scope",
                    f"this API key lacks the {scope} scope",
                    extra={"required_scope": scope},
                    headers={
                        "WWW-Authenticate": f'{_REALM}, error="insufficient_scope", scope="{scope}"'
                    },
                )
            kwargs["principal"] = principal
            return await view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate

"""Bearer-key authentication and scope checks for routes.

``@requires_scope("read:balance")`` verifies ``Authorization: Bearer ck_…`` (or, where
the route accepts them, a feed token ``ft_…``) and passes
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


def requires_scope(scope: str, *, tokens: bool = False) -> Callable[[V], V]:
    """Require a verified key holding ``scope``; the view receives ``principal=``.

    ``tokens=True``: a feed token holding the scope is accepted too (read routes a
    browser may call: game state, and a user token's own balance and bets; the view
    confines a user token to its user with :func:`require_user`). Elsewhere a token is
    403 ``token_not_accepted``: signed writes and the partner's view of all its users
    take the API key itself.
    """
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def decorate(view: V) -> V:
        meta = route_meta(view)
        meta.scope = scope
        meta.tokens = tokens

        @functools.wraps(view)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = await authenticate_request()
            if principal.via_token and not tokens:
                raise Problem(
                    "token_not_accepted",
                    "this route takes an API key, not a feed token (a browser's token "
                    "reads game state and its own user's balance and bets; it bets over "
                    "the feed)",
                )
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


def require_user(principal: Principal, user_id: str) -> None:
    """A user-scoped token reads its own user only: 403 ``token_wrong_user`` otherwise."""
    if principal.user_id is not None and principal.user_id != user_id:
        raise Problem(
            "token_wrong_user",
            "this token acts for one user only; ask for that user's data",
            extra={"user_id": principal.user_id},
        )

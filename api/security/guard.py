"""Request security wired into the app: signed writes and per-key rate limits.

Two pieces, both built on the pure modules :mod:`crashd.api.security.signing` and :mod:`crashd.api.security.ratelimit`:

* ``@signed`` (placed inside ``@requires_scope``, outside ``@idempotent``) refuses a
  money-moving request unless it carries a fresh, correctly signed
  ``X-Crashd-Timestamp`` / ``X-Crashd-Nonce`` / ``X-Crashd-Signature`` triple over the
  exact method, path with query, body and ``Idempotency-Key``. The signing secret of a
  key is derived from the pepper (:meth:`crashd.api.security.keys.KeyStore.signing_secret`), never
  stored. Nonces are remembered per key for the window, so a replay is refused even
  though its signature is valid; the check runs before idempotency, so a replayed
  request cannot fetch a stored response either.
* :func:`install` adds a ``before_request`` hook that charges every request to a GCRA
  bucket — per API key and route class (``read``: GET/HEAD, ``write``: everything
  else, ``feed``: feed tokens), or per client IP when no valid key was presented
  (``anonymous``) — and an ``after_request`` hook that puts the IETF ``RateLimit`` /
  ``RateLimit-Policy`` and GitHub-style ``X-RateLimit-*`` headers on every response,
  problems included. Over the limit: 429 ``rate_limited`` with ``Retry-After``.

The PSP webhook is exempt from rate limits: the PSP is authenticated by its HMAC, and
throttling it would only delay money events it retries anyway.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from quart import Response, current_app, request
from quart_trio import QuartTrio

from crashd.api.config import Config
from crashd.api.rest.body import request_body
from crashd.api.rest.contract import V, route_meta
from crashd.api.rest.problems import Problem
from crashd.api.rest.requestid import set_key_id
from crashd.api.security import feedtokens, ratelimit, signing
from crashd.api.services import current_services

from .keys import Principal

SECURITY_EXTENSION = "crashd.security"
_SCOPE_PRINCIPAL = "crashd.principal"
_SCOPE_DECISION = "crashd.ratelimit"
EXEMPT_PATHS = frozenset({"/api/v1/psp/webhook"})
FEED_PATHS = frozenset({"/api/v1/feed/token"})
SESSION_PATHS = frozenset(
    {"/api/v1/session/viewer", "/api/v1/sandbox/session", "/api/v1/wallet/session"}
)
"""Public routes that issue tokens: limited per client IP (``rate_limit_sessions``)
whoever calls them, as each one mints a credential (and a demo session funds a user)."""


@dataclass
class SecurityState:
    """The app's signing and rate-limit memory (one per app, bounded)."""

    config: Config
    nonces: signing.NonceCache = field(default_factory=signing.NonceCache)
    limiter: ratelimit.RateLimiter = field(default_factory=ratelimit.RateLimiter)
    policies: dict[str, ratelimit.Policy] = field(default_factory=dict)
    last_sweep: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        c = self.config
        w = c.rate_limit_window_s
        self.policies = {
            "read": ratelimit.Policy("read", c.rate_limit_read, w),
            "write": ratelimit.Policy("write", c.rate_limit_write, w),
            "feed": ratelimit.Policy("feed", c.rate_limit_feed, w),
            "anonymous": ratelimit.Policy("anonymous", c.rate_limit_anonymous, w),
            # 0 turns sessions off (the routes refuse); the policy needs a positive limit.
            "session": ratelimit.Policy("session", max(c.rate_limit_sessions, 1), w),
        }

    def statistics(self) -> dict[str, int]:
        return {"rate_limited_keys": len(self.limiter), "nonces": len(self.nonces)}


def security_state(app: Any) -> SecurityState:
    state: SecurityState = app.extensions[SECURITY_EXTENSION]
    return state


# --- who is calling -------------------------------------------------------------------


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else ``None``."""
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _scope() -> dict[str, Any]:
    """The ASGI scope, where this request's principal and rate decision are kept (the
    typed scope has no room for keys of our own)."""
    return cast(dict[str, Any], request.scope)


async def request_principal() -> Principal | None:
    """The verified key of the current request, looked up once per request (the rate
    limiter needs it before routing; ``@requires_scope`` reuses the answer)."""
    scope = _scope()
    if _SCOPE_PRINCIPAL in scope:
        cached: Principal | None = scope[_SCOPE_PRINCIPAL]
        return cached
    token = bearer_token(request.headers.get("Authorization"))
    authenticator = current_services().authenticator
    if token is None:
        principal = None
    elif token.startswith(feedtokens.PREFIX):
        # A browser's token (feed token or public session): read routes that say so
        # accept it (``requires_scope(..., tokens=True)``), the rest refuse it.
        principal = await authenticator.authenticate_token(token)
    else:
        principal = await authenticator.authenticate(token)
    scope[_SCOPE_PRINCIPAL] = principal
    if principal is not None:
        set_key_id(scope, principal.key_id)
    return principal


# --- rate limits ----------------------------------------------------------------------


def route_class(method: str, path: str) -> str:
    if path in FEED_PATHS:
        return "feed"
    return "read" if method in ("GET", "HEAD", "OPTIONS") else "write"


def _client_ip() -> str:
    client = request.scope.get("client")
    return str(client[0]) if client else "unknown"


async def _charge() -> None:
    if request.path in EXEMPT_PATHS:
        return
    state = security_state(current_app)
    now = time.monotonic()
    if now - state.last_sweep >= state.config.rate_limit_window_s:
        # Forget idle keys: a full bucket holds no information (O(active keys) memory).
        state.limiter.sweep(now)
        state.last_sweep = now
    principal = await request_principal()
    if request.path in SESSION_PATHS and state.config.rate_limit_sessions:
        bucket, policy = "session:" + _client_ip(), state.policies["session"]
    elif principal is None:
        bucket, policy = "ip:" + _client_ip(), state.policies["anonymous"]
    elif principal.via_token:
        # Tokens share their issuing key (every page viewer holds one of the server's
        # viewer tokens): charge the user a token acts for, else the client's address.
        who = (
            f"user:{principal.partner_id}:{principal.user_id}"
            if principal.user_id
            else "ip:" + _client_ip()
        )
        bucket, policy = "token:" + who, state.policies["feed"]
    else:
        bucket, policy = (
            "key:" + principal.key_id,
            state.policies[route_class(request.method, request.path)],
        )
    decision = state.limiter.check(bucket, policy, now)
    _scope()[_SCOPE_DECISION] = decision
    if not decision.allowed:
        refused = current_services().rate_limited
        refused[policy.name] = refused.get(policy.name, 0) + 1
        raise Problem(
            "rate_limited",
            f"more than {policy.limit} {policy.name} requests in {policy.window_s:g} s; "
            f"retry after {decision.retry_after_s} s",
            extra={"policy": policy.name, "retry_after_s": decision.retry_after_s},
            headers=decision.headers(time.time()),
        )


async def _add_headers(response: Response) -> Response:
    decision: ratelimit.Decision | None = _scope().get(_SCOPE_DECISION)
    if decision is not None:
        for name, value in decision.headers(time.time()).items():
            response.headers[name] = value
    return response


def install(app: QuartTrio, config: Config) -> SecurityState:
    """Give ``app`` its signing memory and rate limits (called by ``create_app``)."""
    state = SecurityState(config)
    app.extensions[SECURITY_EXTENSION] = state
    app.before_request(_charge)
    app.after_request(_add_headers)
    return state


# --- signed requests ------------------------------------------------------------------


def path_with_query(scope: Any) -> str:
    """The request target as the client sent it (percent-encoding intact), which is
    what the client signed."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else str(scope.get("path", ""))
    query = scope.get("query_string", b"")
    return str(path) + ("?" + query.decode("latin-1") if query else "")


def signed(view: V) -> V:
    """Require a valid request signature by the caller's key (inside ``@requires_scope``)."""
    meta = route_meta(view)
    meta.signed = True
    meta.description = (meta.description + "\n\n" if meta.description else "") + (
        "Signed request: send X-Crashd-Timestamp, X-Crashd-Nonce and X-Crashd-Signature "
        "(HMAC-SHA256 with the key's signing secret; see docs/security.md)."
    )

    @functools.wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        principal: Principal = kwargs["principal"]
        services = current_services()
        state = security_state(current_app)
        body = await request_body()
        now = time.time()
        secrets_ = [
            services.keys.signing_secret(principal.key_id, g)
            for g in principal.signing_generations(now)
        ]
        try:
            signing.verify_request(
                signing.SignedRequest(
                    request.method,
                    path_with_query(request.scope),
                    body,
                    # Headers: a case-insensitive mapping, as the check needs.
                    cast(Mapping[str, str], request.headers),
                ),
                principal.key_id,
                secrets_,
                now,
                state.nonces,
                window_s=state.config.signature_window_s,
            )
        except signing.SignatureError as exc:
            raise Problem(exc.code, exc.detail) from None
        return await view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


__all__: list[str] = [
    "EXEMPT_PATHS",
    "SESSION_PATHS",
    "SecurityState",
    "bearer_token",
    "install",
    "path_with_query",
    "request_principal",
    "route_class",
    "security_state",
    "signed",
]

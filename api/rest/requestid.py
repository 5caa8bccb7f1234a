"""The ASGI layer around the Quart app: request ids, the access log, a shielded send.

It wraps ``app.asgi_app`` (Quart's documented middleware hook), so it sees every HTTP
request, including those the app never routes (404) and those it fails on (500):

* **Request id.** An inbound ``X-Request-ID`` is kept when it is sane (1-128 characters
  of ``[A-Za-z0-9._:-]``, so it cannot inject anything into logs or headers); otherwise a
  fresh one is generated. It is stored in the ASGI scope (:func:`request_id_of`) so
  problem bodies can quote it, and added to every response.
* **Access log.** One line per request on the ``crashd.access`` logger: request id, key
  id (set by the auth layer with :func:`set_key_id`; never the key itself), method, path
  (no query string: it is the partner's data, not ours to log), status and duration.
* **Shielded send.** quart-trio cancels its per-request nursery as soon as the response
  is handed over; with Hypercorn 0.18 that cancellation can land *inside* Hypercorn's
  ``send`` for the last body chunk, which then never runs its end-of-response
  bookkeeping. The connection is left neither closed nor idle: ``Connection: close`` is
  ignored and the keep-alive timer never starts, so sockets pile up. Shielding each
  ``send`` from cancellation lets it complete (it only writes to a socket Hypercorn
  already guards with its own timeouts). ``tests/cli/test_keepalive.py`` is the
  regression test.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from crashd.api.ops.logs import REQUEST_SCOPE

# Loose ASGI types on purpose: Hypercorn's and Quart's TypedDict scopes are not
# MutableMapping[str, Any] to a type checker, yet the scope is a plain dict we add to.
Scope = Any
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_SCOPE_REQUEST_ID = "crashd.request_id"
_SCOPE_KEY_ID = "crashd.key_id"
SCOPE_ROUTE = "crashd.route"
"""The matched route's rule (``/api/v1/bets/<ticket_id>/cashout``), set once routed:
metrics label requests by it, never by the raw path."""
UNMATCHED = "unmatched"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:\-]{1,128}")
_SAFE_PATH = re.compile(r"[A-Za-z0-9._~/!$&'()*+,;=:@%\-]*")

access_log = logging.getLogger("crashd.access")


def new_request_id() -> str:
    return secrets.token_hex(16)


def request_id_of(scope: Scope) -> str:
    """The request id of a scope; generated (and stored) if the middleware did not run."""
    rid = scope.get(_SCOPE_REQUEST_ID)
    if rid is None:
        rid = scope[_SCOPE_REQUEST_ID] = new_request_id()
    return str(rid)


def set_key_id(scope: Scope, key_id: str) -> None:
    """Record the authenticated key id for the access log."""
    scope[_SCOPE_KEY_ID] = key_id


def key_id_of(scope: Scope) -> str:
    """The authenticated key id of a scope, or ``-`` (never the key itself)."""
    return str(scope.get(_SCOPE_KEY_ID, "-"))


def log_context(scope: Scope) -> str:
    """``request_id=… key_id=…``: the prefix of every log line written for a request."""
    return f"request_id={request_id_of(scope)} key_id={key_id_of(scope)}"


def _inbound_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"x-request-id":
            return value.decode("ascii") if _SANE_ID.fullmatch(value) else None
    return None


def _log_path(path: str) -> str:
    # Percent-decoded paths can hold spaces, quotes or newlines; quote anything unusual
    # so one request is always exactly one log line.
    return path if _SAFE_PATH.fullmatch(path) else repr(path)


RequestObserver = Callable[[str, str, int, float], None]
"""(route rule, method, status, seconds) of each finished request: the metrics."""


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, observe: RequestObserver | None = None) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _inbound_id(scope) or new_request_id()
        scope[_SCOPE_REQUEST_ID] = rid
        header = (b"x-request-id", rid.encode("ascii"))
        started = time.perf_counter()
        status = 500  # what the client sees if the app dies before answering
        logged = False

        def log() -> None:
            nonlocal logged
            if logged:
                return
            logged = True
            elapsed = time.perf_counter() - started
            method = scope.get("method", "-")
            path = _log_path(scope.get("path", ""))
            access_log.info(
                "request_id=%s key_id=%s method=%s path=%s status=%d duration_ms=%.2f",
                rid,
                scope.get(_SCOPE_KEY_ID, "-"),
                method,
                path,
                status,
                elapsed * 1000,
                extra={
                    "fields": {
                        "method": method,
                        "path": path,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                    }
                },
            )
            if self.observe is not None:
                self.observe(scope.get(SCOPE_ROUTE) or UNMATCHED, method, status, elapsed)

        async def wrapped_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [h for h in message.get("headers", ()) if h[0].lower() != b"x-request-id"]
                headers.append(header)
                message = {**message, "headers": headers}
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                # Logged before the last chunk leaves: once a client has its answer,
                # the line exists (tests and log shippers can rely on that order).
                log()
            with trio.CancelScope(shield=True):
                await send(message)

        token = REQUEST_SCOPE.set(scope)
        try:
            await self.app(scope, receive, wrapped_send)
        finally:
            log()
            REQUEST_SCOPE.reset(token)

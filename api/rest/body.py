"""The request's body, read once per request.

Three layers of a signed write look at the raw body (the signature check, the
idempotency fingerprint, the JSON body), and Quart's ``request.get_data`` is a
checkpoint every time, even once the body is cached (it waits on the body's
completion event inside a fresh cancel scope): under load each checkpoint is a whole
scheduler batch the request waits before it goes on, so a cash-out's pricing lag grew
with the number of layers that read the body. The first read here keeps the bytes in
the ASGI scope and the later ones return them without yielding. Counted with a Trio
instrument in ``bench game`` (1,500 players): a REST cash-out's request task ran 4 steps
(6 loop iterations) from the ASGI entry to the engine's decision with three reads, 2
(4) with one.
"""

from __future__ import annotations

from typing import Any, cast

from quart import request

_SCOPE_BODY = "crashd.body"


async def request_body() -> bytes:
    """The current request's body (Quart's own limits apply to the one read)."""
    scope = cast(dict[str, Any], request.scope)  # the typed scope has no room for ours
    body: bytes | None = scope.get(_SCOPE_BODY)
    if body is None:
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        scope[_SCOPE_BODY] = body
    return body

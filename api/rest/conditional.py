"""HTTP conditional requests (RFC 9110 §13) for cacheable JSON: strong ETag,
Last-Modified, 304 Not Modified.

Finished rounds never change, so clients and proxies may cache them and revalidate
cheaply. :func:`conditional_json` encodes the body once, derives a strong ETag from its
bytes (same representation, same tag, across restarts and processes) and answers 304
when the client's copy is current:

* ``If-None-Match`` (weak comparison, as the RFC requires for it; ``*`` matches any);
* otherwise ``If-Modified-Since`` against ``last_modified`` (whole seconds, as HTTP dates).

Document such a route with ``headers=CONDITIONAL_HEADERS`` and
``extra_responses=CONDITIONAL_RESPONSES`` in ``@documented``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from quart import Response, request

from .contract import ResponseSpec

CONDITIONAL_HEADERS = {
    "ETag": "strong validator of this representation; send it back in If-None-Match",
    "Last-Modified": "HTTP date; send it back in If-Modified-Since",
    "Cache-Control": "how long the response may be cached",
}
CONDITIONAL_RESPONSES = {304: ResponseSpec("Not modified: your cached copy is current")}


def etag_for(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    for candidate in header.split(","):
        if candidate.strip().removeprefix("W/") == opaque:
            return True
    return False


def _not_modified_since(header: str, last_modified: datetime) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return False  # an invalid date is ignored (RFC 9110 §13.1.3)
    if since.tzinfo is None:
        return False
    return last_modified.replace(microsecond=0) <= since


def conditional_json(
    data: Any,
    *,
    cache_control: str,
    last_modified: datetime | None = None,
    status: int = 200,
) -> Response:
    """A JSON response with ETag (and Last-Modified), or 304 if the client is current."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    etag = etag_for(body)
    headers = {"ETag": etag, "Cache-Control": cache_control}
    if last_modified is not None:
        if last_modified.tzinfo is None:
            raise ValueError("last_modified must be timezone-aware")
        headers["Last-Modified"] = format_datetime(last_modified.astimezone(UTC), usegmt=True)
    if request.method in ("GET", "HEAD"):
        inm = request.headers.get("If-None-Match")
        ims = request.headers.get("If-Modified-Since")
        if inm is not None:
            fresh = _matches(inm, etag)
        else:
            fresh = (
                ims is not None
                and last_modified is not None
                and _not_modified_since(ims, last_modified)
            )
        if fresh:
            return Response(b"", status=304, headers=headers)
    return Response(body, status=status, headers=headers, content_type="application/json")

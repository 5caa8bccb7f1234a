"""Signed requests for ``write:bet`` routes: the canonical string, signing, checking.

Pure: no clock, no I/O. The server passes ``now`` and a ``NonceCache``; a client calls
``sign_request`` (the SDK does). The scheme, like AWS SigV4 and Binance's, binds every
part of a request that could be replayed or altered::

    string_to_sign = METHOD "\\n" PATH_WITH_QUERY "\\n" TIMESTAMP "\\n" NONCE "\\n"
                     SHA256_HEX(RAW_BODY) "\\n" IDEMPOTENCY_KEY
    signature      = HEX(HMAC_SHA256(key=signing_secret, msg=string_to_sign))

sent as ``X-Crashd-Timestamp`` (Unix seconds), ``X-Crashd-Nonce`` (16–64 characters of
``[A-Za-z0-9_-]``) and ``X-Crashd-Signature`` (64 lowercase hex digits).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crashd.api.wire import (
    API_PREFIX,
    IDEMPOTENCY_HEADER,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
)

DEFAULT_WINDOW_S = 30
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


class SignatureError(Exception):
    """A signed request was refused; ``code`` is the stable problem code."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def string_to_sign(
    method: str, path_with_query: str, timestamp: str, nonce: str, body: bytes, idempotency_key: str
) -> str:
    return "\n".join(
        [
            method.upper(),
            path_with_query,
            timestamp,
            nonce,
            hashlib.sha256(body).hexdigest(),
            idempotency_key,
        ]
    )


def signature(secret: str, canonical: str) -> str:
    return hmac.new(secret.encode(), canonical.encode(), hashlib.sha256).hexdigest()


def sign_request(
    secret: str,
    method: str,
    path_with_query: str,
    body: bytes,
    idempotency_key: str,
    timestamp: int,
    nonce: str | None = None,
) -> dict[str, str]:
    """The headers a client adds to a signed request (``timestamp`` in Unix seconds)."""
    nonce = nonce if nonce is not None else secrets.token_urlsafe(18)
    canonical = string_to_sign(
        method, path_with_query, str(timestamp), nonce, body, idempotency_key
    )
    return {
        TIMESTAMP_HEADER: str(timestamp),
        NONCE_HEADER: nonce,
        SIGNATURE_HEADER: signature(secret, canonical),
        IDEMPOTENCY_HEADER: idempotency_key,
    }


def order_body(order: dict[str, Any]) -> tuple[str, str, bytes]:
    """A feed order's REST equivalent as it is signed: (method, path, body bytes), the
    body being the order's REST body as compact JSON with sorted members. The one
    definition the server (``crashd.api.feed.orders``) and clients share."""
    fields = {k: v for k, v in order.items() if k not in ("type", "id", "key", "signature")}
    kind = order.get("type")
    if kind == "bet":
        method, path = "POST", f"{API_PREFIX}/bets"
    else:
        ticket = str(fields.pop("ticket_id", ""))
        method, path = (
            ("POST", f"{API_PREFIX}/bets/{ticket}/cashout")
            if kind == "cashout"
            else ("PUT", f"{API_PREFIX}/bets/{ticket}/auto-cashout")
        )
    body = json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return method, path, body.encode()


def sign_order(
    secret: str, order: dict[str, Any], timestamp: int, nonce: str | None = None
) -> dict[str, Any]:
    """``order`` with its ``"signature"`` member: what a partner's server sends on an
    API-key feed connection (docs/feed.md, Orders). ``order["key"]`` is the idempotency
    key; the string to sign is the REST request's, over ``order_body(order)``."""
    method, path, body = order_body(order)
    headers = sign_request(secret, method, path, body, str(order["key"]), timestamp, nonce)
    return {
        **order,
        "signature": {
            "timestamp": int(headers[TIMESTAMP_HEADER]),
            "nonce": headers[NONCE_HEADER],
            "value": headers[SIGNATURE_HEADER],
        },
    }


class NonceCache:
    """Nonces seen within the window, per key; bounded so no client can grow it forever.

    A nonce only needs remembering while its timestamp is still acceptable: after that
    the window check refuses the replay anyway. So entries expire at ``ts + window``.
    """

    def __init__(self, max_entries: int = 1_000_000) -> None:
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.max_entries = max_entries

    def __len__(self) -> int:
        return len(self._seen)

    def _purge(self, now: float) -> None:
        # Insertion order is close to expiry order (timestamps are within one window).
        while self._seen:
            key, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) <= self.max_entries:
                break
            del self._seen[key]

    def check_and_add(self, key_id: str, nonce: str, expires_at: float, now: float) -> bool:
        """True if the nonce is fresh (and now remembered); False if it is a replay."""
        self._purge(now)
        entry = (key_id, nonce)
        if entry in self._seen:
            return False
        self._seen[entry] = expires_at
        return True


@dataclass(frozen=True)
class SignedRequest:
    method: str
    path_with_query: str
    body: bytes
    headers: Mapping[str, str]
    """Case-insensitive lookups are the caller's business: pass a CIMultiDict or similar."""


def verify_request(
    request: SignedRequest,
    key_id: str,
    secrets_: Iterable[str],
    now: float,
    nonces: NonceCache,
    window_s: int = DEFAULT_WINDOW_S,
) -> None:
    """Raise ``SignatureError`` unless the request is correctly signed, fresh and new.

    ``secrets_`` holds every signing secret valid now (two during a rotation overlap).
    The nonce is only recorded once the signature checks, so a forger cannot burn a
    legitimate client's nonces.
    """
    headers = request.headers
    timestamp = headers.get(TIMESTAMP_HEADER)
    nonce = headers.get(NONCE_HEADER)
    sig = headers.get(SIGNATURE_HEADER)
    idem = headers.get(IDEMPOTENCY_HEADER)
    if timestamp is None or nonce is None or sig is None:
        raise SignatureError(
            "signature_missing",
            f"signed requests need {TIMESTAMP_HEADER}, {NONCE_HEADER} and {SIGNATURE_HEADER} headers",
        )
    if idem is None:
        raise SignatureError(
            "idempotency_key_required", f"this request needs an {IDEMPOTENCY_HEADER} header"
        )
    if not _TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("signature_malformed", f"{TIMESTAMP_HEADER} must be Unix seconds")
    if not _NONCE.fullmatch(nonce):
        raise SignatureError(
            "signature_malformed", f"{NONCE_HEADER} must be 16-64 characters of [A-Za-z0-9_-]"
        )
    if not _SIGNATURE.fullmatch(sig):
        raise SignatureError(
            "signature_malformed", f"{SIGNATURE_HEADER} must be 64 lowercase hex digits"
        )
    ts = int(timestamp)
    if ts < now - window_s:
        raise SignatureError(
            "signature_expired", f"timestamp is more than {window_s} s in the past"
        )
    if ts > now + window_s:
        raise SignatureError(
            "signature_from_future", f"timestamp is more than {window_s} s in the future"
        )
    canonical = string_to_sign(
        request.method, request.path_with_query, timestamp, nonce, request.body, idem
    )
    # Check every valid secret without an early exit, so timing says nothing about which.
    matched = False
    for secret in secrets_:
        matched |= hmac.compare_digest(signature(secret, canonical), sig)
    if not matched:
        raise SignatureError("invalid_signature", "the signature does not match the request")
    if not nonces.check_and_add(key_id, nonce, ts + window_s, now):
        raise SignatureError(
            "nonce_reused", "this nonce was already used; sign each request afresh"
        )

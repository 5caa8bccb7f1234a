"""PSP webhook signatures, Stripe style: ``t=<unix>,v1=<hex>[,v1=<hex>…]``.

The PSP signs ``f"{t}.{raw body}"`` with HMAC-SHA256 and the shared secret. Several
``v1`` values may be present while the PSP rotates its secret; crashd accepts the event
if any of them matches any secret it currently holds. Pure: ``now`` is an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable

from crashd.api.wire import PSP_SIGNATURE_HEADER

DEFAULT_TOLERANCE_S = 300
_MAX_HEADER = 4096
_HEX64 = re.compile(r"[0-9a-f]{64}")


class WebhookSignatureError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


def compute(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(
        secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256
    ).hexdigest()


def header_value(secret: str, timestamp: int, body: bytes) -> str:
    """What a PSP (or ``crashd psp send-test-event``) puts in the signature header."""
    return f"t={timestamp},v1={compute(secret, timestamp, body)}"


def verify(
    header: str | None,
    body: bytes,
    secrets_: Iterable[str],
    now: float,
    tolerance_s: int = DEFAULT_TOLERANCE_S,
) -> int:
    """Return the signed timestamp, or raise ``WebhookSignatureError``."""
    if not header:
        raise WebhookSignatureError(
            "signature_missing", f"the {PSP_SIGNATURE_HEADER} header is required"
        )
    if len(header) > _MAX_HEADER:
        raise WebhookSignatureError(
            "signature_malformed", f"the {PSP_SIGNATURE_HEADER} header is too long"
        )
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            raise WebhookSignatureError(
                "signature_malformed", f"cannot parse {PSP_SIGNATURE_HEADER}"
            )
        if name == "t":
            if timestamp is not None or not value.isdigit() or len(value) > 12:
                raise WebhookSignatureError(
                    "signature_malformed", "t must appear once, as Unix seconds"
                )
            timestamp = int(value)
        elif name == "v1":
            if not _HEX64.fullmatch(value):
                raise WebhookSignatureError(
                    "signature_malformed", "v1 must be 64 lowercase hex digits"
                )
            candidates.append(value)
        # Other schemes (v0, future v2) are ignored, as Stripe does.
    if timestamp is None or not candidates:
        raise WebhookSignatureError(
            "signature_malformed", f"{PSP_SIGNATURE_HEADER} needs t= and at least one v1="
        )
    if abs(now - timestamp) > tolerance_s:
        raise WebhookSignatureError(
            "signature_expired", f"timestamp is outside the {tolerance_s} s tolerance"
        )
    matched = False
    for secret in secrets_:
        expected = compute(secret, timestamp, body)
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookSignatureError("invalid_signature", "no v1 signature matches")
    return timestamp

"""How a wallet call and its answer are signed: a pluggable ``Signer`` per partner.

The default, ``hmac-sha256``, is what most seamless wallets use::

    string_to_sign = TIMESTAMP "\\n" PATH "\\n" RAW_BODY
    signature      = HEX(HMAC_SHA256(key=partner secret, msg=string_to_sign))

sent as ``Crashd-Timestamp`` (Unix seconds) and ``Crashd-Signature``. ``PATH`` is the
request's URL path (the wallet URL's own path included, e.g. ``/crashd/debit``). The
wallet signs its answer the same way (its own timestamp, the same path, the answer's
body), so a forged "ok" to a debit is an unknown answer, never a bet that plays.

A provider with another scheme (RSA signatures, say) is a new ``Signer`` registered in
``SIGNERS`` under the name the partner's configuration gives. Pure: no clock (the
caller passes the time), no I/O.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from typing import Protocol

from .contract import SIGNATURE_HEADER, TIMESTAMP_HEADER

DEFAULT_WINDOW_S = 300
"""How far a signed timestamp may be from the verifier's clock, either way."""
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")


def string_to_sign(timestamp: int, path: str, body: bytes) -> bytes:
    return f"{timestamp}\n{path}\n".encode() + body


class Signer(Protocol):
    """Signs what crashd sends and checks what the wallet answers (and the reverse, in
    the mock wallet)."""

    name: str

    def sign(self, timestamp: int, path: str, body: bytes) -> dict[str, str]:
        """The headers that sign ``body`` sent to (or answered at) ``path``."""
        ...

    def verify(
        self,
        headers: Mapping[str, str],
        path: str,
        body: bytes,
        now: int,
        window_s: int = DEFAULT_WINDOW_S,
    ) -> bool:
        """Whether ``headers`` sign ``body`` at ``path`` within ``window_s`` of ``now``."""
        ...


class HmacSha256Signer:
    """HMAC-SHA256 with a secret shared by crashd and the partner's wallet."""

    name = "hmac-sha256"

    def __init__(self, secret: str) -> None:
        if len(secret) < 16:
            raise ValueError("a wallet secret needs at least 16 characters")
        self._key = secret.encode()

    def signature(self, timestamp: int, path: str, body: bytes) -> str:
        return hmac.new(
            self._key, string_to_sign(timestamp, path, body), hashlib.sha256
        ).hexdigest()

    def sign(self, timestamp: int, path: str, body: bytes) -> dict[str, str]:
        return {
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: self.signature(timestamp, path, body),
        }

    def verify(
        self,
        headers: Mapping[str, str],
        path: str,
        body: bytes,
        now: int,
        window_s: int = DEFAULT_WINDOW_S,
    ) -> bool:
        stamp = _header(headers, TIMESTAMP_HEADER)
        given = _header(headers, SIGNATURE_HEADER)
        if stamp is None or given is None:
            return False
        if _TIMESTAMP.fullmatch(stamp) is None or _HEX64.fullmatch(given) is None:
            return False
        timestamp = int(stamp)
        if abs(now - timestamp) > window_s:
            return False
        return hmac.compare_digest(self.signature(timestamp, path, body), given)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        value = headers.get(name.lower())
    return value


SIGNERS: dict[str, Callable[[str], Signer]] = {HmacSha256Signer.name: HmacSha256Signer}
"""Signer name (a partner's ``signer`` setting) → how to make one from its secret."""


def make_signer(name: str, secret: str) -> Signer:
    factory = SIGNERS.get(name)
    if factory is None:
        raise ValueError(f"unknown wallet signer {name!r}; known: {', '.join(sorted(SIGNERS))}")
    return factory(secret)

"""Canonical JSON: RFC 8785 (JCS) for the values our documents hold.

Every signed document (transcript, seal, receipt) is signed over, and hashed as, its
canonical bytes. Our documents hold only objects with ASCII keys, arrays, strings,
booleans, ``null`` and integers of magnitude below 2^53, and for exactly those values
JCS is what ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``
writes: keys sorted by code unit (ASCII keys sort the same by code point), integers in
plain decimal, strings escaped as ECMAScript's ``JSON.stringify`` does (``\\"``, ``\\\\``,
``\\b \\f \\n \\r \\t``, other controls as lowercase ``\\u00xx``, everything else as is,
UTF-8). The C encoder is 4x faster than a general JCS encoder (measured on a
5,000-bet transcript: 8 ms against 32 ms for the ``rfc8785`` package); the test suite
checks the two agree on every value of the domain (Hypothesis).

``check_domain`` says whether a value (say, one a third party hands the auditor) is in
that domain: a document outside it is not one of ours, whatever its signature.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1
"""Integers a JavaScript verifier reads exactly (JCS serialises numbers as doubles)."""

_encode = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


def canonical(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value`` (which must be in the domain: see module doc)."""
    return _encode(value).encode("utf-8")


def digest(value: Any) -> str:
    """SHA-256 (lowercase hex) of the canonical bytes."""
    return hashlib.sha256(canonical(value)).hexdigest()


def check_domain(value: Any, path: str = "$") -> str | None:
    """``None`` if ``value`` is in the canonical domain, else where it leaves it."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if item is None or isinstance(item, (bool, str)):
            if isinstance(item, str):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    return f"{where}: a lone surrogate"
            continue
        if isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                return f"{where}: an integer beyond 2^53"
            continue
        if isinstance(item, list):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))
            continue
        if isinstance(item, dict):
            for key, v in item.items():
                if not isinstance(key, str) or not key.isascii():
                    return f"{where}: a key that is not ASCII text"
                stack.append((v, f"{where}.{key}"))
            continue
        return f"{where}: a {type(item).__name__} (only integers, strings, booleans, null)"
    return None


def b64url(raw: bytes) -> str:
    """Base64url without padding (RFC 4648 §5), as JOSE writes keys and signatures."""
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def from_b64url(text: str) -> bytes:
    """The bytes of a base64url string without padding; ``ValueError`` if it is not."""
    if not isinstance(text, str) or not text.isascii() or "=" in text:
        raise ValueError("not base64url without padding")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(raw) != text:
        raise ValueError("not the canonical base64url of its bytes")
    return raw

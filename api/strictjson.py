"""Strict JSON decoding: what a request body and a feed message must be.

One decoder for REST bodies and feed messages alike, so "valid JSON" means the same
thing on both doors: one UTF-8 document; no ``NaN``/``Infinity``; no duplicate members
(two parsers may keep different duplicates: refuse rather than guess); bounded nesting;
and no lone UTF-16 surrogate escapes (``"\\ud800"``): Python decodes them into strings
that cannot be encoded back to UTF-8, so echoing one (in a stored reply, a log line,
a feed answer) would fail far from where it came in.
"""

from __future__ import annotations

import json
import re
from typing import Any

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


class MalformedJSON(ValueError):
    """The text is not one strict JSON document; ``str()`` says why."""


def _reject_constant(name: str) -> Any:
    raise MalformedJSON(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedJSON(f"duplicate member {key!r}")
        result[key] = value
    return result


def loads(text: str) -> Any:
    """Decode ``text`` strictly, or raise :class:`MalformedJSON`."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except MalformedJSON:
        raise
    except RecursionError:
        raise MalformedJSON("nested too deeply") from None
    except ValueError as exc:
        # Also covers integers beyond Python's digit limit.
        raise MalformedJSON(f"invalid JSON: {exc}") from None
    # Surrogate escapes are rare: only then pay for a check (a valid pair decodes to
    # one code point and encodes fine; a lone one does not).
    if _SURROGATE_ESCAPE.search(text) is not None:
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise MalformedJSON(
                "a string holds a lone UTF-16 surrogate (\\ud800-\\udfff)"
            ) from None
    return value


def loads_bytes(raw: bytes) -> Any:
    """:func:`loads` for bytes that must be UTF-8."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedJSON("not UTF-8") from None
    return loads(text)

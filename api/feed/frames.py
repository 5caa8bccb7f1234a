"""Server-to-client WebSocket frames (RFC 6455 §5.2), built once and sent to everyone.

The fan-out path sends the same bytes to thousands of sockets, so the frame header is
prepended here, once per message, instead of by a WebSocket library once per
subscriber. Server frames are never masked (§5.1) and never compressed (the feed does
not negotiate permessage-deflate: compressing per subscriber is exactly the per-message
cost the hub exists to avoid), so one ``bytes`` object is a valid frame on every
connection.
"""

from __future__ import annotations

import struct

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
OPCODE_CLOSE = 0x8
OPCODE_PING = 0x9
OPCODE_PONG = 0xA

_FIN = 0x80

MAX_CONTROL_PAYLOAD = 125
"""Control frames (close, ping, pong) carry at most 125 bytes (§5.5)."""


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One complete, unmasked, final frame carrying ``payload``."""
    n = len(payload)
    first = _FIN | opcode
    if n < 126:
        header = bytes((first, n))
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, 126, n)
    else:
        header = struct.pack("!BBQ", first, 127, n)
    return header + payload


def encode_text(payload: bytes) -> bytes:
    """A text frame; ``payload`` must already be UTF-8 (JSON from ``json.dumps`` is)."""
    return encode_frame(OPCODE_TEXT, payload)


def encode_close(code: int, reason: str) -> bytes:
    """A close frame; the reason is cut (on a character boundary) to fit 125 bytes."""
    raw = reason.encode()[: MAX_CONTROL_PAYLOAD - 2]
    # Cutting may split a multi-byte character; drop the partial tail so it stays UTF-8.
    raw = raw.decode("utf-8", "ignore").encode()
    return encode_frame(OPCODE_CLOSE, struct.pack("!H", code) + raw)


def decode_server_frame(data: bytes) -> tuple[int, bytes, int] | None:
    """Parse one unmasked frame from the start of ``data``.

    Returns ``(opcode, payload, frame_length)``, or ``None`` when ``data`` does not yet
    hold a whole frame. Used by tests and the bench to check what the hub wrote; the
    server parses what *clients* send with wsproto.
    """
    if len(data) < 2:
        return None
    opcode = data[0] & 0x0F
    if data[1] & 0x80:
        raise ValueError("server frames are never masked")
    n = data[1] & 0x7F
    offset = 2
    if n == 126:
        if len(data) < 4:
            return None
        (n,) = struct.unpack_from("!H", data, 2)
        offset = 4
    elif n == 127:
        if len(data) < 10:
            return None
        (n,) = struct.unpack_from("!Q", data, 2)
        offset = 10
    if len(data) < offset + n:
        return None
    return opcode, bytes(data[offset : offset + n]), offset + n

"""What the engine sends its feed edges: records, one encoding for every transport.

A record is ``(kind, seq, channel, data)``:

==========  ==============================================================================
``FRAME``   one hub frame: its ``seq``, channel and complete WebSocket frame bytes, exactly
            as the engine's subscribers get them (so every edge sends identical bytes)
``STATE``   a public keyframe as of ``seq``: ``{"public": …, "rest": …}``, the public
            channels' snapshot (what the engine's hub would serve) and ``GET /game/state``
``USER``    a keyframe of one user channel as of ``seq`` (its snapshot, JSON)
``HELLO``   first record of a Unix connection: ``channel`` is the epoch, ``seq`` the
            engine's, ``data`` the highest ``seq`` no longer in its replay buffer
``EPOCH``   the last record of a Redis stream: the engine moved to epoch ``data``
``WANT``    edge → engine: a subscriber joined user channel ``channel`` (its balance and
            keyframe are wanted)
``REVOKE``  API key ``channel`` was revoked at the engine: close the feed connections
            opened with it (or with a token it issued), as the engine closes its own
==========  ==============================================================================

Binary, big-endian: ``u32`` length of what follows, ``u8`` kind, ``u64`` seq, ``u16``
channel length, the channel (UTF-8), then the data. On a Unix socket records follow
each other; in a Redis stream each entry holds, in its field ``r``, the records the
engine handed over together (a frame and its keyframes), one after the other.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

_HEAD = struct.Struct("!IBQH")
HEAD_BYTES = _HEAD.size
MAX_RECORD_BYTES = 16 * 1024 * 1024
"""A record beyond this is a broken peer, not a big frame (frames are a few KiB)."""


class Kind(IntEnum):
    FRAME = 1
    """A hub frame (see the module docstring for every kind)."""
    STATE = 2
    USER = 3
    HELLO = 4
    EPOCH = 5
    WANT = 6
    REVOKE = 7


KEYFRAMES = frozenset({Kind.STATE, Kind.USER})


class RecordError(ValueError):
    """Bytes that are not a record: the peer is broken (drop the connection)."""


@dataclass(frozen=True, slots=True)
class Record:
    kind: Kind
    seq: int
    channel: str
    data: bytes

    def encode(self) -> bytes:
        channel = self.channel.encode()
        return (
            _HEAD.pack(
                HEAD_BYTES - 4 + len(channel) + len(self.data),
                self.kind,
                self.seq,
                len(channel),
            )
            + channel
            + self.data
        )


def decode(buf: bytes | memoryview) -> Record:
    """One whole record (a Redis entry's field)."""
    records, rest = split(buf)
    if len(records) != 1 or rest:
        raise RecordError("not exactly one record")
    return records[0]


def decode_all(buf: bytes | memoryview) -> list[Record]:
    """The whole records of ``buf`` and nothing else (a Redis entry's field)."""
    records, rest = split(buf)
    if rest:
        raise RecordError(f"{len(rest)} bytes after the last record")
    return records


def split(buf: bytes | memoryview) -> tuple[list[Record], bytes]:
    """The whole records at the start of ``buf`` and the bytes left over."""
    view = memoryview(buf)
    out: list[Record] = []
    pos = 0
    end = len(view)
    while end - pos >= HEAD_BYTES:
        length, kind, seq, clen = _HEAD.unpack_from(view, pos)
        if length > MAX_RECORD_BYTES or length < HEAD_BYTES - 4 + clen:
            raise RecordError(f"record length {length} out of range")
        if end - pos < 4 + length:
            break
        start = pos + HEAD_BYTES
        try:
            channel = bytes(view[start : start + clen]).decode()
            out.append(
                Record(Kind(kind), seq, channel, bytes(view[start + clen : pos + 4 + length]))
            )
        except (UnicodeDecodeError, ValueError) as exc:
            raise RecordError(str(exc)) from None
        pos += 4 + length
    return out, bytes(view[pos:])


class RecordReader:
    """Sans-IO: bytes from a stream socket in, whole records out."""

    def __init__(self) -> None:
        self._rest = b""

    def feed(self, data: bytes) -> list[Record]:
        records, self._rest = split(self._rest + data if self._rest else data)
        return records

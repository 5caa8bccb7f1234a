"""What ``FeedClient.messages()`` yields: typed stream messages (docs/feed.md, Messages).

Only *stream* messages reach the user: channel messages and snapshots, both carrying
``seq``. Control messages (``welcome``, ``heartbeat``, ``subscribed``, ``resumed`` …) are
the client's business and never surface; an ``error`` the server sends in answer to a
request surfaces as a :class:`FeedError` from that request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SUBSCRIBE = "subscribe"
"""Snapshot reason: a new subscription (a late joiner's starting state)."""
RESYNC = "resync"
"""Snapshot reason: the client read too slowly; what it missed was replaced by this."""
RESUME_GAP = "resume_gap"
"""Snapshot reason: the resume point was older than the server's replay buffer."""
EPOCH_CHANGED = "epoch_changed"
"""Snapshot reason: the server restarted since the resume point (a new ``seq`` stream)."""


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """One message of one channel, e.g. a ``tick`` or a ``crashed``."""

    seq: int
    channel: str
    type: str
    data: Mapping[str, Any]
    """The whole JSON object as sent (``seq``, ``channel``, ``type`` and the payload)."""

    def __getitem__(self, name: str) -> Any:
        return self.data[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.data.get(name, default)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state of some channels as of ``seq``: replace what you had for them.

    ``reason`` is one of :data:`SUBSCRIBE`, :data:`RESYNC`, :data:`RESUME_GAP`,
    :data:`EPOCH_CHANGED`. Anything but ``subscribe`` means messages were skipped and
    this state stands in for them (``is_resync``).
    """

    seq: int
    epoch: str
    reason: str
    channels: Mapping[str, Mapping[str, Any]]

    @property
    def is_resync(self) -> bool:
        return self.reason != SUBSCRIBE


StreamMessage = ChannelMessage | Snapshot


def parse_stream_message(obj: Mapping[str, Any]) -> StreamMessage | None:
    """A stream message from a decoded frame, or ``None`` for a control message."""
    seq = obj.get("seq")
    if obj.get("type") == "snapshot":
        return Snapshot(
            seq=int(obj["seq"]),
            epoch=str(obj["epoch"]),
            reason=str(obj["reason"]),
            channels=obj.get("channels") or {},
        )
    channel = obj.get("channel")
    if isinstance(seq, int) and isinstance(channel, str):
        return ChannelMessage(seq=seq, channel=channel, type=str(obj.get("type", "")), data=obj)
    return None


class FeedError(Exception):
    """The server refused something (an ``error`` message, or a fatal close code)."""

    def __init__(self, code: str, message: str, close_code: int | None = None) -> None:
        super().__init__(
            f"{code}: {message}"
            if close_code is None
            else f"{code} (close {close_code}): {message}"
        )
        self.code = code
        self.message = message
        self.close_code = close_code


class FeedUnavailable(Exception):
    """The client gave up reconnecting after ``max_attempts`` failed attempts."""

"""The client's view of the ``seq`` stream: ordering, de-duplication, resume point.

Sans-IO, like the server's hub: the driver (``FeedClient``) hands in each stream
message with the epoch of the connection it arrived on, and is told whether to
deliver it. The rule is the one docs/feed.md gives every client: keep the epoch and
the last ``seq`` applied; a snapshot replaces state as of its ``seq``; drop any
channel message whose ``seq`` is not above the last one applied.
"""

from __future__ import annotations

from dataclasses import dataclass

from .messages import ChannelMessage, Snapshot, StreamMessage


@dataclass(frozen=True, slots=True)
class ResumePoint:
    seq: int
    epoch: str


class StreamCursor:
    """Where the client is in the server's stream, and which messages are news."""

    def __init__(self) -> None:
        self.epoch: str | None = None
        self.last_seq: int | None = None
        self.duplicates = 0
        """Channel messages dropped because their ``seq`` was already applied."""
        self.foreign = 0
        """Channel messages dropped because they belong to another epoch than the
        state (a restarted server's stream before its snapshot placed us in it)."""

    @property
    def resume_point(self) -> ResumePoint | None:
        """What to send as ``resume`` on reconnect, or ``None`` (subscribe afresh)."""
        if self.epoch is None or self.last_seq is None:
            return None
        return ResumePoint(self.last_seq, self.epoch)

    def accept(self, message: StreamMessage, connection_epoch: str) -> bool:
        """True if ``message`` (received on a connection in ``connection_epoch``) is
        new and must be delivered; records it as applied."""
        if isinstance(message, Snapshot):
            # A snapshot is state, not an event: always deliver it. It moves the cursor
            # to its own epoch and seq (a new epoch resets the stream).
            if message.epoch != self.epoch or self.last_seq is None:
                self.epoch, self.last_seq = message.epoch, message.seq
            else:
                self.last_seq = max(self.last_seq, message.seq)
            return True
        assert isinstance(message, ChannelMessage)
        if self.epoch is None:
            # Before any snapshot (the server sends one on every subscribe, so this is a
            # server that skipped it): the connection's epoch is the only reference.
            self.epoch = connection_epoch
        elif connection_epoch != self.epoch:
            self.foreign += 1
            return False
        if self.last_seq is not None and message.seq <= self.last_seq:
            self.duplicates += 1
            return False
        self.last_seq = message.seq
        return True

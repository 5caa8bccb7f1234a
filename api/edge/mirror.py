"""An edge's hub: today's ``Hub``, fed by the engine's records instead of ``publish``.

Sans-IO: a transport (``unix``, ``streams``) hands each record to :meth:`EdgeHub.apply`
in order; the hub delivers frames to its subscribers exactly as the engine's hub does
(the same bytes, the same ``seq``, the same replay buffer, outboxes and slow-consumer
rules), and serves snapshots from the engine's keyframes:

* public channels: the newest ``STATE`` keyframe (the engine sends one after every change
  of the public state, a tick at most old, as the engine's own snapshots are);
* a user channel: its newest ``USER`` keyframe, *if* no frame of that channel came after
  it. Otherwise (or without one) the snapshot leaves the channel out, the edge asks the
  engine for it (``want``), and when the keyframe comes every subscriber of the channel
  gets a snapshot of it alone — state as of a later ``seq``, which a client applies as it
  applies any snapshot.

Gaps: frames carry consecutive ``seq``s. When a transport that carries every frame (a
Redis stream) shows a gap (the edge fell behind the stream's trimmed window), or a Unix
reconnect finds the engine's replay buffer no longer reaching back to the edge, the hub
*holds*: it delivers nothing until the next ``STATE`` keyframe, then rebases there (its
replay buffer restarts empty at that ``seq``, so no resume can be served across the
hole) and sends every subscriber a ``resync`` snapshot. An epoch change is the driver's
to handle (it closes every connection with 1001 and calls :meth:`start`).

Freshness: the engine sends a public keyframe at least every ``KEYFRAME_EVERY_S``; a hub
whose newest one arrived more than ``STALE_AFTER_S`` ago (Redis or the engine away) says
so (:meth:`stale`), and what serves from it stops passing its state off as live.
"""

from __future__ import annotations

import collections
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crashd.api.feed.frames import encode_text
from crashd.api.feed.hub import Frame, Hub, ReplayBuffer, Subscriber, encode_json
from crashd.api.wire import parse_user_channel
from crashd.engine.bounds import STALE_AFTER_S

from .records import Kind, Record

AHEAD_LIMIT = 4096
"""A client resuming from a ``seq`` this edge has not reached yet (it came from an edge a
moment ahead) is resumed without a snapshot if the gap is at most this many ``seq``s:
the frames after its ``seq`` are on their way here, and the ones it has it ignores."""


def _nothing(channel: str) -> None:
    pass


@dataclass(slots=True)
class _UserState:
    seq: int
    """The ``seq`` the keyframe is valid as of."""
    data: bytes
    last_frame: int
    """The newest frame of the channel seen since (the keyframe is current iff not after)."""
    doc: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class EdgeStatistics:
    epoch: str
    seq: int
    synced: bool
    holding: bool
    gaps: int
    keyframes: int
    user_keyframes: int
    frames: int
    wants: int


class EdgeHub(Hub):
    """A hub whose frames and snapshots come from the engine (see the module docstring)."""

    def __init__(
        self,
        *,
        want: Callable[[str], None] = _nothing,
        user_capacity: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
        stale_after_s: float = STALE_AFTER_S,
        **kwargs: Any,
    ) -> None:
        super().__init__(snapshot=self._snapshot_of, **kwargs)
        self.want = want
        """Ask the engine for a user channel's keyframe (the transport sends a ``WANT``)."""
        self.user_capacity = user_capacity
        self._public: bytes | None = None
        self._public_doc: dict[str, Any] | None = None
        self._users: collections.OrderedDict[str, _UserState] = collections.OrderedDict()
        self._omitted: set[str] = set()
        """User channels some snapshot left out, waiting for their keyframe."""
        self.synced = False
        """A public keyframe has come: snapshots can be served (the listener opens)."""
        self.holding = False
        self.clock = clock
        self.stale_after_s = stale_after_s
        self.keyframe_at: float | None = None
        """When (``clock``) the newest public keyframe arrived; ``None``: none this epoch."""
        self.stats_gaps = 0
        self.stats_keyframes = 0
        self.stats_user_keyframes = 0
        self.stats_frames = 0
        self.stats_wants = 0

    # -- the stream ---------------------------------------------------------------------

    def start(self, epoch: str, seq: int) -> None:
        """Begin (again) at ``seq`` of ``epoch``: nothing retained, nothing to replay.
        The driver has closed every connection first if the epoch changed."""
        self.flush_all()
        self.epoch = epoch
        self.seq = seq
        self._rebase_buffers(seq)
        self._public = None
        self._public_doc = None
        self.keyframe_at = None
        self.synced = False
        self.holding = False

    def stale(self) -> str | None:
        """Why this hub's state is not the engine's live state (``None``: it is): no
        keyframe yet, or the newest older than ``stale_after_s``."""
        if self.keyframe_at is None or self._public is None:
            return "no state from the engine yet"
        age = self.clock() - self.keyframe_at
        if age > self.stale_after_s:
            return (
                f"the engine's newest state is {age:.1f} s old (limit "
                f"{self.stale_after_s:.1f} s): its stream stopped"
            )
        return None

    def _rebase_buffers(self, seq: int) -> None:
        self.replay = ReplayBuffer(self.replay.capacity)
        self.replay.evicted_through = seq
        self.latest.clear()
        self._users.clear()
        self._omitted.clear()

    def apply(self, record: Record, *, contiguous: bool) -> None:
        """One record from the engine. ``contiguous``: the transport carries every frame
        (a stream), so a ``seq`` that skips one is a gap."""
        kind = record.kind
        if kind is Kind.FRAME:
            self._frame(record, contiguous)
        elif kind is Kind.STATE:
            self._state(record)
        elif kind is Kind.USER:
            self._user(record)
        else:
            raise ValueError(f"{kind.name} records are the transport's, not the hub's")

    def gap(self) -> None:
        """The transport lost frames: deliver nothing until the next public keyframe."""
        if not self.holding:
            self.holding = True
            self.stats_gaps += 1

    def _frame(self, record: Record, contiguous: bool) -> None:
        seq = record.seq
        if self.holding or seq <= self.seq:
            return  # held (a gap), or already delivered (an overlapping catch-up)
        if contiguous and self.synced and seq != self.seq + 1:
            self.gap()
            return
        channel = record.channel
        user = self._users.get(channel)
        if user is not None:
            user.last_frame = seq
        self.stats_frames += 1
        self.relay(Frame(seq, channel, record.data))

    def _state(self, record: Record) -> None:
        self.stats_keyframes += 1
        self.keyframe_at = self.clock()
        self._public = record.data
        self._public_doc = None
        if record.seq < self.seq:
            return  # older than what was delivered: kept as the newest state we have
        if self.holding or (self.synced and record.seq > self.seq):
            # Frames up to its seq are missing here: start again from this keyframe.
            # What the fan-out still queues comes from before the hole: into the
            # outboxes first, where the resync snapshot replaces it.
            self.flush_all()
            self.holding = False
            self.seq = record.seq
            self._rebase_buffers(record.seq)
            self._resync_all()
            return
        if not self.synced:
            if record.seq > self.seq:
                # The stream began with this keyframe: nothing before it is known here.
                self.seq = record.seq
                self._rebase_buffers(record.seq)
            self.synced = True

    def _user(self, record: Record) -> None:
        if self.holding:
            return
        self.stats_user_keyframes += 1
        channel = record.channel
        users = self._users
        users[channel] = _UserState(record.seq, record.data, record.seq)
        users.move_to_end(channel)
        while len(users) > self.user_capacity:
            users.popitem(last=False)
        if channel in self._omitted:
            # The channel's queued frames go out before the snapshot that follows them.
            self.flush_all()
            self._omitted.discard(channel)
            subs = self.subscribers(channel)
            if subs:
                frame = self.snapshot_frame([channel], "subscribe")
                for sub in subs:
                    sub.deliver(frame)

    def _resync_all(self) -> None:
        for sub in list(self._all):
            if sub.closed or not sub.channels:
                continue
            frame = self.snapshot_frame(sub.channels, "resync")
            if sub.outbox:
                sub.outbox.reset(frame)  # the queued frames are from before the hole
            else:
                sub.deliver(frame)

    # -- snapshots ----------------------------------------------------------------------

    def public_state(self) -> dict[str, Any] | None:
        """The newest public keyframe as ``{"public": …, "rest": …}`` (parsed once)."""
        if self._public is None:
            return None
        if self._public_doc is None:
            self._public_doc = json.loads(self._public)
        return self._public_doc

    def _current_user(self, channel: str) -> dict[str, Any] | None:
        user = self._users.get(channel)
        if user is None or user.last_frame > user.seq:
            return None
        if user.doc is None:
            user.doc = json.loads(user.data)
        return user.doc

    def _snapshot_of(self, channel: str) -> Mapping[str, Any]:
        if parse_user_channel(channel) is not None:
            return self._current_user(channel) or {}
        state = self.public_state()
        return state["public"] if state is not None else {}

    def snapshot_frame(self, channels: Iterable[str], reason: str) -> bytes:
        """As the engine's hub's, less the user channels without a current keyframe:
        those are wanted from the engine and sent on their own when it answers."""
        states: dict[str, Any] = {}
        for channel in sorted(channels):
            if parse_user_channel(channel) is None:
                states[channel] = dict(self._snapshot_of(channel))
                continue
            user = self._current_user(channel)
            if user is not None:
                states[channel] = user
            elif channel not in self._omitted:
                self._omitted.add(channel)
                self.stats_wants += 1
                self.want(channel)
        body = {
            "type": "snapshot",
            "seq": self.seq,
            "epoch": self.epoch,
            "reason": reason,
            "channels": states,
        }
        return encode_text(encode_json(body))

    def _bring_up_to_date(
        self, sub: Subscriber, wanted: set[str], since_seq: int | None, epoch: str | None
    ) -> int | None:
        if (
            since_seq is not None
            and (epoch is None or epoch == self.epoch)
            and self.seq < since_seq <= self.seq + AHEAD_LIMIT
            and not self.holding
        ):
            # The client saw frames this edge has not received yet: they follow, and it
            # skips those it has (their seq is not above its own).
            return 0
        return super()._bring_up_to_date(sub, wanted, since_seq, epoch)

    def edge_statistics(self) -> EdgeStatistics:
        return EdgeStatistics(
            epoch=self.epoch,
            seq=self.seq,
            synced=self.synced,
            holding=self.holding,
            gaps=self.stats_gaps,
            keyframes=self.stats_keyframes,
            user_keyframes=self.stats_user_keyframes,
            frames=self.stats_frames,
            wants=self.stats_wants,
        )

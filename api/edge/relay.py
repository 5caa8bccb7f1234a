"""The engine's side of the edges: every hub frame forwarded, with keyframes.

``FeedRelay`` taps the engine's hub (``Hub.on_frame``): each frame becomes a ``FRAME``
record, handed to every outlet (a Unix socket server, a Redis stream writer) without
blocking and without touching a subscriber, so the engine's cost per frame is the same
whatever the edges' subscriber counts. Keyframes follow:

* ``STATE`` (the public channels' snapshot and ``GET /game/state``'s body) whenever the
  engine's live state was rebuilt — a phase change or a tick at once, other changes at
  most once a tick, as ``crashd.api.live.LiveState`` decides for the engine's own
  readers — checked after each frame and each tick period, and at least every
  ``KEYFRAME_EVERY_S`` (``crashd.engine.bounds``)
  (the edges' sign of life, and the point a lagging edge resynchronises at);
* ``USER`` for a *watched* user channel after each of its frames, and once when an edge
  asks for it (``want``): an edge has a subscriber there. Watched channels are a bounded
  LRU: an evicted one is asked for again by the edge that needs it.

``REVOKE`` (``revoke``): a key revoked at the engine, so that every edge closes the
connections opened with it. The newest ``REVOKED_KEPT`` revocations also go into every
catch-up and every new stream: an edge away at that moment (reconnecting) learns of
them when it is back; one told twice finds nothing more to close.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import trio

from crashd.api.feed.hub import Frame, Hub, encode_json
from crashd.api.wire import ROUND_UPDATES, parse_user_channel
from crashd.engine.bounds import KEYFRAME_EVERY_S

from .records import Kind, Record

log = logging.getLogger(__name__)

REVOKED_KEPT = 1024
"""Revocations repeated to (re)connecting edges; older ones are refused at
authentication anyway, and an edge away longer than it takes to revoke this many keys
has been reconnected (its clients too) by then."""


class Outlet(Protocol):
    """Where records go (a transport). ``send`` must not block: it queues, bounded."""

    def send(self, records: Sequence[Record]) -> None: ...


class LiveView(Protocol):
    """The engine's live state (``crashd.api.live.LiveState``)."""

    def public(self) -> Mapping[str, Any]: ...
    def rest_body(self) -> bytes: ...


class FeedRelay:
    def __init__(
        self,
        hub: Hub,
        live: LiveView,
        *,
        tick_s: float = 0.05,
        keyframe_every_s: float = KEYFRAME_EVERY_S,
        watch_capacity: int = 100_000,
    ) -> None:
        self.hub = hub
        self.live = live
        self.tick_s = tick_s
        self.keyframe_every_s = keyframe_every_s
        self.watch_capacity = watch_capacity
        self.outlets: list[Outlet] = []
        self._watched: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._public_sent: object = None
        self._revoked: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._state_at = 0.0
        self.stats_frames = 0
        self.stats_states = 0
        self.stats_users = 0
        hub.on_frame = self._on_frame

    # -- the engine's frames ---------------------------------------------------------

    def _on_frame(self, frame: Frame) -> None:
        self.stats_frames += 1
        if not self.outlets:
            return
        records = [Record(Kind.FRAME, frame.seq, frame.channel, frame.data)]
        if frame.channel in self._watched:
            records.append(self._user_record(frame.channel, frame.seq))
        state = self._state_if_changed(frame.seq)
        if state is not None:
            records.append(state)
        for outlet in self.outlets:
            outlet.send(records)

    def _user_record(self, channel: str, seq: int) -> Record:
        self.stats_users += 1
        return Record(Kind.USER, seq, channel, encode_json(self.hub.snapshot(channel)))

    def _state_if_changed(self, seq: int) -> Record | None:
        public = self.live.public()
        if public is self._public_sent:
            return None
        return self._state(seq, public)

    def _state(self, seq: int, public: Mapping[str, Any]) -> Record:
        self._public_sent = public
        self._state_at = time.monotonic()
        self.stats_states += 1
        data = b'{"public":' + encode_json(public) + b',"rest":' + self.live.rest_body() + b"}"
        return Record(Kind.STATE, seq, ROUND_UPDATES, data)

    def state_now(self) -> Record:
        """A public keyframe as of the hub's ``seq`` now (a new stream's first record)."""
        return self._state(self.hub.seq, self.live.public())

    # -- revocations ----------------------------------------------------------------------

    def revoke(self, key_id: str) -> None:
        """Key ``key_id`` was revoked: every edge closes the connections it opened."""
        revoked = self._revoked
        revoked[key_id] = None
        revoked.move_to_end(key_id)
        while len(revoked) > REVOKED_KEPT:
            revoked.popitem(last=False)
        record = Record(Kind.REVOKE, self.hub.seq, key_id, b"")
        for outlet in self.outlets:
            outlet.send([record])

    def revocations(self) -> list[Record]:
        """The newest revocations, for an edge (re)joining."""
        seq = self.hub.seq
        return [Record(Kind.REVOKE, seq, key_id, b"") for key_id in self._revoked]

    # -- edges asking ---------------------------------------------------------------

    def want(self, channel: str) -> Record | None:
        """An edge has a subscriber on ``channel``: watch it, make sure its balance is
        announced, and return its keyframe as of now (``None``: not a user channel)."""
        if parse_user_channel(channel) is None:
            return None
        watched = self._watched
        watched[channel] = None
        watched.move_to_end(channel)
        while len(watched) > self.watch_capacity:
            watched.popitem(last=False)
        if self.hub.on_subscribe is not None:
            self.hub.on_subscribe(channel)  # the balance feed reads it once if unknown
        return self._user_record(channel, self.hub.seq)

    def answer_want(self, channel: str) -> None:
        """``want``, with the keyframe sent to every outlet (a Redis edge asked: every
        edge may keep it)."""
        record = self.want(channel)
        if record is not None:
            for outlet in self.outlets:
                outlet.send([record])

    def catch_up(self) -> list[Record]:
        """What a (re)connecting Unix edge needs: ``HELLO``, the replay buffer and the
        newest conflated frames in ``seq`` order, and a public keyframe."""
        hub = self.hub
        hello = Record(
            Kind.HELLO, hub.seq, hub.epoch, str(hub.replay.evicted_through).encode("ascii")
        )
        frames = list(hub.replay.since(hub.replay.evicted_through) or [])
        frames.extend(hub.latest.values())
        frames.sort(key=lambda f: f.seq)
        out = [hello]
        out.extend(Record(Kind.FRAME, f.seq, f.channel, f.data) for f in frames)
        out.append(self.state_now())
        out.extend(self.revocations())
        return out

    # -- the keyframe clock -------------------------------------------------------------

    async def run(self) -> None:
        """Keyframes between frames: a rebuilt live state within a tick, and one at
        least every ``keyframe_every_s`` whatever happens."""
        while True:
            await trio.sleep(self.tick_s)
            if not self.outlets:
                continue
            state = self._state_if_changed(self.hub.seq)
            if state is None and time.monotonic() - self._state_at >= self.keyframe_every_s:
                state = self.state_now()
            if state is not None:
                for outlet in self.outlets:
                    outlet.send([state])


__all__ = ["FeedRelay", "LiveView", "Outlet"]

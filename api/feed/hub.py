"""The fan-out hub: channels, ``seq``, the replay buffer and per-subscriber outboxes.

Why it looks like this (measured, see docs/feed.md): on one core, what limits a
broadcast is the work done *per subscriber per message*. Waking a task or awaiting per
subscriber costs more than the system call itself. So:

* ``Hub.publish`` is synchronous. It assigns the next ``seq`` and encodes the JSON and
  the WebSocket frame **once**; for each subscriber, delivery is one plain non-blocking
  ``send`` of those shared bytes. No task is woken per subscriber, nothing is copied per
  subscriber.
* Alone (tests, embedding), ``publish`` delivers at once, from the publisher's task.
  Under a driver (the feed server sets ``on_pending``), ``publish`` only queues the
  frame, and the driver's one fan-out task ``flush``-es the queue in slices of a few
  hundred subscribers with a checkpoint between slices. Measured in ``bench game``
  (2,500 subscribers at 20 Hz): a tick's fan-out took the event loop for 10-25 ms at a
  time, so a cash-out arriving meanwhile waited that long to be priced; sliced, it
  waits for one slice. And the frames queued together (a tick and the cash-outs batched
  before it, a user's result and balance) go to each subscriber in **one** ``send``:
  half the system calls on the public channels at every tick with cash-outs.
* Only when a subscriber's kernel buffer is full (``send`` takes part of the frame or
  raises ``BlockingIOError``) does it get a backlog: a bounded ``Outbox`` of references
  to the shared frames, drained by a writer task that its transport starts on demand
  (``on_backlog``). While a backlog exists, new frames go to the outbox, never the
  socket, so order is kept.
* Conflatable channels (``live_multiplier``): the outbox keeps only the newest tick.
  Ordered channels: when the outbox overflows, the subscriber is resynced with a
  snapshot (marked ``"reason": "resync"``); after ``max_resyncs`` consecutive resyncs
  without catching up, it is disconnected with close code 4009 and a reason.

The hub is transport-agnostic: a ``Subscriber`` is given a non-blocking
``send(data) -> int`` (a socket's ``send``), an ``on_backlog()`` callback and an
``on_kill(code, reason)`` callback. It never awaits and holds no Trio objects, so the
unit tests drive it with in-memory pipes, and the round engine can call ``publish``
from its tick task.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crashd.api.wire import LIVE_MULTIPLIER, CloseCode

from .frames import encode_text

SendFn = Callable[[bytes | memoryview], int]
"""A non-blocking send: returns bytes taken, raises ``BlockingIOError`` when full."""

SnapshotProvider = Callable[[str], Mapping[str, Any]]
"""``snapshot(channel)`` -> the current state a new subscriber of ``channel`` needs."""


def _no_snapshot(channel: str) -> Mapping[str, Any]:
    return {}


def _closed_send(data: bytes | memoryview) -> int:
    raise BrokenPipeError("the connection is closed")


def _nothing() -> None:
    pass


def _ignore_kill(code: int, reason: str) -> None:
    pass


def encode_json(obj: Mapping[str, Any]) -> bytes:
    """Compact JSON, UTF-8: the encoding of every feed message."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Frame:
    """One published message: its ``seq``, channel and complete WebSocket frame bytes."""

    seq: int
    channel: str
    data: bytes


class ReplayBuffer:
    """The last ``capacity`` ordered-channel frames, for clients that resume.

    ``since(seq)`` answers "everything after ``seq``" exactly, or ``None`` when part of
    that range has already been evicted (then the client gets a snapshot instead).
    Memory is bounded by ``capacity`` frames.
    """

    __slots__ = ("capacity", "_frames", "evicted_through")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("replay capacity must be at least 1")
        self.capacity = capacity
        self._frames: deque[Frame] = deque()
        self.evicted_through = 0
        """The highest ``seq`` that is no longer retained (0: nothing evicted yet)."""

    def __len__(self) -> int:
        return len(self._frames)

    def append(self, frame: Frame) -> None:
        assert not self._frames or frame.seq > self._frames[-1].seq, "seq must increase"
        self._frames.append(frame)
        if len(self._frames) > self.capacity:
            self.evicted_through = self._frames.popleft().seq

    def since(self, seq: int) -> list[Frame] | None:
        """Frames with ``seq`` greater than the argument, oldest first; ``None`` if gone."""
        if seq < self.evicted_through:
            return None
        # Frames are sorted by seq; scan from the right, the usual gap is short.
        out: list[Frame] = []
        for frame in reversed(self._frames):
            if frame.seq <= seq:
                break
            out.append(frame)
        out.reverse()
        return out


class Outbox:
    """A subscriber's backlog: references to shared frames, bounded.

    ``head`` is the unsent tail of a frame the socket took only part of: it must go
    first and can never be dropped. Conflatable frames (``key`` given) replace the
    queued frame with the same key, so at most one per key is ever queued, and the
    replacement moves to the back so ``seq`` order is kept. Other frames count against
    ``max_messages`` and ``max_bytes``; ``push`` returns ``False`` instead of exceeding
    them. Worst-case memory: ``max_bytes`` + one frame per conflation key + ``head``.
    """

    __slots__ = ("max_messages", "max_bytes", "head", "_queue", "_keyed", "_ordered", "_bytes")

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.head: memoryview | None = None
        self._queue: deque[bytes] = deque()
        self._keyed: dict[str, bytes] = {}
        self._ordered = 0
        self._bytes = 0

    def __bool__(self) -> bool:
        return self.head is not None or bool(self._queue)

    def __len__(self) -> int:
        return len(self._queue) + (self.head is not None)

    @property
    def ordered_count(self) -> int:
        return self._ordered

    @property
    def ordered_bytes(self) -> int:
        return self._bytes

    def push(self, data: bytes, key: str | None = None) -> bool:
        if key is not None:
            old = self._keyed.get(key)
            if old is not None:
                self._remove(old)
            self._keyed[key] = data
            self._queue.append(data)
            return True
        if self._ordered + 1 > self.max_messages or self._bytes + len(data) > self.max_bytes:
            return False
        self._ordered += 1
        self._bytes += len(data)
        self._queue.append(data)
        return True

    def _remove(self, old: bytes) -> None:
        # Identity, not equality: every frame is its own bytes object.
        q = self._queue
        if q and q[-1] is old:
            q.pop()
            return
        for i in range(len(q) - 1, -1, -1):
            if q[i] is old:
                del q[i]
                return
        raise AssertionError("keyed frame missing from the queue")

    def reset(self, data: bytes) -> None:
        """Drop everything queued (not ``head``) and queue ``data`` alone (a resync or close)."""
        self._queue.clear()
        self._keyed.clear()
        self._queue.append(data)
        self._ordered = 1
        self._bytes = len(data)

    def peek(self) -> bytes | memoryview | None:
        """What to write next, or ``None`` when empty."""
        if self.head is not None:
            return self.head
        return self._queue[0] if self._queue else None

    def consumed(self, n: int) -> None:
        """Record that ``n`` bytes of ``peek()`` were written."""
        if self.head is not None:
            if n >= len(self.head):
                self.head = None
            else:
                self.head = self.head[n:]
            return
        data = self._queue.popleft()
        for key, value in self._keyed.items():
            if value is data:
                del self._keyed[key]
                break
        else:
            self._ordered -= 1
            self._bytes -= len(data)
        if n < len(data):
            self.head = memoryview(data)[n:]


class Subscriber:
    """The hub's view of one connection: its channels, its socket send and its outbox."""

    __slots__ = (
        "hub",
        "channels",
        "outbox",
        "_send",
        "_on_backlog",
        "_on_kill",
        "closed",
        "idle",
        "resyncs",
        "conflated",
    )

    def __init__(
        self,
        hub: Hub,
        send: SendFn,
        on_backlog: Callable[[], None],
        on_kill: Callable[[int, str], None],
        outbox: Outbox,
    ) -> None:
        self.hub = hub
        self.channels: set[str] = set()
        self.outbox = outbox
        self._send = send
        self._on_backlog = on_backlog
        self._on_kill = on_kill
        self.closed = False
        self.idle = True
        """Open and nothing queued: ``publish`` may write straight to the socket. One
        flag on the subscriber itself, so the hot loop touches no other object; it is
        cleared whenever a backlog starts or the subscriber closes, and set again only
        by ``drained``."""
        self.resyncs = 0
        """Consecutive resyncs since the outbox was last empty."""
        self.conflated = 0

    def deliver(self, data: bytes, key: str | None = None) -> None:
        """Send ``data`` now if the socket takes it, else queue it; never blocks.

        This is the per-subscriber cost of a broadcast, so the common case is one
        attribute test and one system call.
        """
        if self.closed:
            return
        outbox = self.outbox
        if outbox.head is None and not outbox._queue:
            self._write(data, key)
            return
        if key is not None and key in outbox._keyed:
            self.conflated += 1
        if not outbox.push(data, key):
            self._overflow()

    def deliver_final(self, data: bytes) -> None:
        """Queue a last frame (an error, the close frame) even after ``closed`` is set.

        If the backlog cannot take it, the backlog is dropped: the close must get out,
        stale data need not.
        """
        outbox = self.outbox
        if outbox.head is None and not outbox._queue:
            self._write(data, None)
        elif not outbox.push(data):
            outbox.reset(data)

    def _write(self, data: bytes, key: str | None) -> None:
        try:
            n = self._send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            # The peer is gone (reset, broken pipe); the transport aborts the connection.
            self.kill(1006, "connection lost")
            return
        if n != len(data):
            self._backlog(data, n, key)

    def _backlog(self, data: bytes, n: int, key: str | None) -> None:
        """The socket took ``n`` bytes of ``data`` (maybe 0): queue the rest, start the writer."""
        self.idle = False
        if n:
            self.outbox.head = memoryview(data)[n:]
        elif not self.outbox.push(data, key):
            # Only a frame larger than the whole outbox gets here.
            self._overflow()
        self._on_backlog()

    def _overflow(self) -> None:
        self.resyncs += 1
        if self.resyncs > self.hub.max_resyncs:
            self.kill(
                CloseCode.SLOW_CONSUMER,
                f"slow consumer: outbox overflowed {self.resyncs} times without catching up",
            )
            return
        self.hub.stats_resyncs += 1
        self.outbox.reset(self.hub.snapshot_frame(self.channels, "resync"))

    def drained(self) -> None:
        """Called by the writer when the outbox is empty again: the subscriber caught up."""
        assert not self.outbox
        self.resyncs = 0
        self.idle = not self.closed

    def release(self) -> None:
        """Forget the transport (its socket and callbacks) once the connection is over.

        The callbacks are bound methods of the connection, which holds this subscriber:
        a reference cycle. Breaking it lets reference counting free a closed connection
        at once, instead of leaving it to Python's cycle collector, whose full passes
        over tens of thousands of connections are long pauses.
        """
        self.closed = True
        self.idle = False
        self._send = _closed_send
        self._on_backlog = _nothing
        self._on_kill = _ignore_kill

    def kill(self, code: int, reason: str) -> None:
        """Stop delivering and ask the transport to close with ``code`` and ``reason``."""
        if self.closed:
            return
        self.closed = True
        self.idle = False
        self.hub.detach(self)
        self._on_kill(code, reason)


@dataclass(frozen=True, slots=True)
class HubStatistics:
    seq: int
    subscribers: int
    backlogged: int
    replay_frames: int
    replay_evicted_through: int
    resyncs: int
    published: int
    pending: int = 0
    """Frames published but not yet delivered to everyone (a batch in slices)."""


class Hub:
    """Channels and their subscribers; ``publish`` is the engine's only entry point.

    ``conflated`` names the channels whose frames may be replaced by newer ones in a
    slow subscriber's outbox (ticks); every other channel is ordered and goes into the
    replay buffer. ``seq`` is one counter for the whole hub, so a client's last ``seq``
    is a position in one stream whatever it subscribed to; ``epoch`` names that stream
    (it changes when the process restarts, so an old ``seq`` is never misread).
    """

    def __init__(
        self,
        *,
        snapshot: SnapshotProvider = _no_snapshot,
        conflated: Iterable[str] = (LIVE_MULTIPLIER,),
        replay_capacity: int = 4096,
        outbox_messages: int = 256,
        outbox_bytes: int = 256 * 1024,
        max_resyncs: int = 3,
        epoch: str | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.conflated = frozenset(conflated)
        self.replay = ReplayBuffer(replay_capacity)
        self.outbox_messages = outbox_messages
        self.outbox_bytes = outbox_bytes
        self.max_resyncs = max_resyncs
        self.epoch = epoch or secrets.token_hex(8)
        self.seq = 0
        self.latest: dict[str, Frame] = {}
        """The newest frame of each conflated channel (what a resuming client gets)."""
        self._subs: dict[str, dict[Subscriber, None]] = {}
        # One tuple per channel for publish to iterate (a snapshot: a subscriber killed
        # mid-loop cannot disturb it). (Un)subscribe only drops it; the next publish
        # rebuilds it, so 10,000 clients subscribing cost O(N) in all, not O(N^2).
        self._fanout: dict[str, tuple[Subscriber, ...]] = {}
        self._all: dict[Subscriber, None] = {}
        self.stats_resyncs = 0
        self.stats_published = 0
        self.on_pending: Callable[[], None] | None = None
        """Set by a driver that delivers in slices: ``publish`` then queues its frame
        and calls this when the queue was empty; the driver calls ``flush``."""
        self._pending: list[Frame] = []
        self._work: Sequence[Any] | None = None
        """The batch being flushed: its subscribers (one frame for all, ``_work_frame``)
        or each recipient with its frames in ``seq`` order; ``_work_at`` is the next."""
        self._work_frame: Frame | None = None
        self._work_at = 0
        self._joined: dict[tuple[int, ...], bytes] = {}
        """A batch's frames joined once per distinct run of ``seq`` (most subscribers of
        the public channels share one)."""
        self.on_subscribe: Callable[[str], None] | None = None
        """Called with each channel a subscriber joins, after its snapshot or replay
        (the server uses it to announce a user's balance on first interest)."""
        self.on_frame: Callable[[Frame], None] | None = None
        """Called with every frame ``publish`` builds, at once and before it is queued or
        fanned out (feed edges: ``crashd.api.edge.relay`` forwards each one, byte for
        byte, in ``seq`` order)."""

    # -- the engine side -------------------------------------------------------------

    def publish(self, channel: str, payload: Mapping[str, Any]) -> int:
        """Assign the next ``seq``, encode once, deliver to every subscriber; never blocks.

        The message on the wire is ``{"seq": N, "channel": channel, **payload}``;
        ``payload`` should carry a ``"type"``. Returns the ``seq``.
        """
        if "seq" in payload or "channel" in payload:
            raise ValueError("the hub owns the envelope: a payload cannot set 'seq' or 'channel'")
        self.seq += 1
        seq = self.seq
        body = {"seq": seq, "channel": channel}
        body.update(payload)
        data = encode_text(encode_json(body))
        frame = Frame(seq, channel, data)
        if self.on_frame is not None:
            # Before it is queued: edges get every frame at once and in ``seq`` order,
            # whatever slices the local fan-out takes.
            self.on_frame(frame)
        self._accept(frame)
        return seq

    def relay(self, frame: Frame) -> None:
        """Deliver a frame another hub built (a feed edge: the engine's frames, with the
        engine's ``seq``), exactly as ``publish`` delivers its own; never blocks."""
        if frame.seq <= self.seq:
            raise ValueError(f"seq must increase: {frame.seq} after {self.seq}")
        self.seq = frame.seq
        self._accept(frame)

    def _accept(self, frame: Frame) -> None:
        """Keep a new frame for resumes, then deliver it: now, or (under a driver) queued
        for the driver's sliced ``flush``."""
        self.stats_published += 1
        if frame.channel in self.conflated:
            self.latest[frame.channel] = frame
        else:
            self.replay.append(frame)
        if self.on_pending is not None:
            self._pending.append(frame)
            if len(self._pending) == 1 and self._work is None:
                self.on_pending()
            return
        self._fan_out(frame)

    def _fan_out(self, frame: Frame) -> None:
        """Deliver one frame to every subscriber of its channel, now."""
        channel = frame.channel
        subs = self._fanout.get(channel)
        if subs is None:
            subs = self._fanout[channel] = tuple(self._subs.get(channel, ()))
        self._deliver_one(subs, frame.data, channel if channel in self.conflated else None)

    @staticmethod
    def _deliver_one(subs: Iterable[Subscriber], data: bytes, key: str | None) -> None:
        # The hot loop: Subscriber.deliver inlined for the common case (idle outbox,
        # whole frame taken), about half the interpreter cost per subscriber.
        size = len(data)
        for sub in subs:
            if sub.idle:
                try:
                    n = sub._send(data)
                except BlockingIOError:
                    n = 0
                except OSError:
                    sub.kill(1006, "connection lost")
                    continue
                if n != size:
                    sub._backlog(data, n, key)
            else:
                sub.deliver(data, key)

    # -- sliced delivery (under a driver) --------------------------------------------

    def flush(self, budget: int | None = None) -> bool:
        """Deliver queued frames to at most ``budget`` subscribers (``None``: the whole
        batch); ``True`` while frames remain. Frames queued together form one batch,
        planned when it starts: each recipient gets its frames in ``seq`` order, in one
        ``send`` when it has several and its socket is idle. Frames queued while a batch
        is being delivered wait for the next one, so no subscriber sees them out of order.
        """
        if self._work is None:
            if not self._pending:
                return False
            self._plan(self._pending)
            self._pending = []
        work = self._work
        assert work is not None
        at = self._work_at
        end = len(work) if budget is None else min(len(work), at + max(1, budget))
        frame = self._work_frame
        if frame is not None:
            # One frame for everyone (a tick alone): the plain fast loop over a slice.
            key = frame.channel if frame.channel in self.conflated else None
            self._deliver_one(work[at:end], frame.data, key)
        else:
            self._deliver_many(work[at:end])
        if end < len(work):
            self._work_at = end
            return True
        self._work = self._work_frame = None
        self._joined.clear()
        return bool(self._pending)

    def flush_all(self) -> None:
        """Deliver everything queued, now (before a (un)subscribe changes who gets what)."""
        while self.flush():
            pass

    def _subscribers_of(self, channel: str) -> tuple[Subscriber, ...]:
        subs = self._fanout.get(channel)
        if subs is None:
            subs = self._fanout[channel] = tuple(self._subs.get(channel, ()))
        return subs

    def _plan(self, frames: list[Frame]) -> None:
        self._work_at = 0
        if len(frames) == 1:
            self._work_frame = frames[0]
            self._work = self._subscribers_of(frames[0].channel)
            return
        per: dict[Subscriber, list[Frame]] = {}
        for f in frames:
            for sub in self._subscribers_of(f.channel):
                got = per.get(sub)
                if got is None:
                    per[sub] = [f]
                else:
                    got.append(f)
        self._work_frame = None
        self._work = [(sub, tuple(fs)) for sub, fs in per.items()]

    def _deliver_many(self, work: Sequence[tuple[Subscriber, tuple[Frame, ...]]]) -> None:
        conflated = self.conflated
        joined = self._joined
        for sub, frames in work:
            if len(frames) == 1:
                f = frames[0]
                self._deliver_one((sub,), f.data, f.channel if f.channel in conflated else None)
                continue
            if not sub.idle:
                for f in frames:
                    sub.deliver(f.data, f.channel if f.channel in conflated else None)
                continue
            seqs = tuple(f.seq for f in frames)
            data = joined.get(seqs)
            if data is None:
                data = joined[seqs] = b"".join(f.data for f in frames)
            try:
                n = sub._send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                sub.kill(1006, "connection lost")
                continue
            if n == len(data):
                continue
            if n:
                # Part of the batch went out: the rest, as one piece, heads the outbox.
                sub._backlog(data, n, None)
            else:
                # Nothing went out: queue frame by frame, so ticks still conflate.
                sub.idle = False
                for f in frames:
                    sub.deliver(f.data, f.channel if f.channel in conflated else None)
                sub._on_backlog()

    # -- the transport side ----------------------------------------------------------

    def attach(
        self, send: SendFn, on_backlog: Callable[[], None], on_kill: Callable[[int, str], None]
    ) -> Subscriber:
        """A new subscriber (not yet on any channel) for one connection."""
        sub = Subscriber(
            self, send, on_backlog, on_kill, Outbox(self.outbox_messages, self.outbox_bytes)
        )
        self._all[sub] = None
        return sub

    def detach(self, sub: Subscriber) -> None:
        """Remove ``sub`` from every channel; idempotent."""
        self._all.pop(sub, None)
        if sub.channels:
            self._remove(sub, list(sub.channels))

    def subscribe(
        self,
        sub: Subscriber,
        channels: Iterable[str],
        *,
        since_seq: int | None = None,
        epoch: str | None = None,
    ) -> int | None:
        """Add ``sub`` to ``channels`` and bring it up to date, atomically.

        Returns how many frames a resume replayed, or ``None`` when a snapshot was sent.

        Without ``since_seq``: a snapshot (``"reason": "subscribe"``). With it (a resume):
        every ordered message after ``since_seq`` on these channels exactly once, plus the
        newest frame of each conflated one, in ``seq`` order; or, when the gap is no
        longer in the replay buffer or the ``epoch`` differs, a snapshot with
        ``"reason": "resume_gap"`` / ``"epoch_changed"``. Nothing can be published in
        between, because nothing here awaits.
        """
        # Queued frames first, under the subscriptions they were published for: the
        # snapshot or replay below covers everything up to ``seq``.
        self.flush_all()
        new = [c for c in dict.fromkeys(channels) if c not in sub.channels]
        for channel in new:
            self._subs.setdefault(channel, {})[sub] = None
            self._fanout.pop(channel, None)
            sub.channels.add(channel)
        wanted = set(new)
        if not wanted:
            return 0
        try:
            return self._bring_up_to_date(sub, wanted, since_seq, epoch)
        finally:
            if self.on_subscribe is not None:
                for channel in new:
                    self.on_subscribe(channel)

    def _bring_up_to_date(
        self, sub: Subscriber, wanted: set[str], since_seq: int | None, epoch: str | None
    ) -> int | None:
        if since_seq is None:
            sub.deliver(self.snapshot_frame(wanted, "subscribe"))
            return None
        if epoch is not None and epoch != self.epoch:
            sub.deliver(self.snapshot_frame(wanted, "epoch_changed"))
            return None
        missed = self.replay.since(since_seq) if since_seq <= self.seq else None
        if missed is None:
            sub.deliver(self.snapshot_frame(wanted, "resume_gap"))
            return None
        frames = [f for f in missed if f.channel in wanted]
        frames.extend(f for c, f in self.latest.items() if c in wanted and f.seq > since_seq)
        frames.sort(key=lambda f: f.seq)
        for f in frames:
            sub.deliver(f.data, f.channel if f.channel in self.conflated else None)
        return len(frames)

    def unsubscribe(self, sub: Subscriber, channels: Iterable[str]) -> None:
        self.flush_all()
        self._remove(sub, [c for c in channels if c in sub.channels])

    def _remove(self, sub: Subscriber, channels: list[str]) -> None:
        for channel in channels:
            sub.channels.discard(channel)
            subs = self._subs.get(channel)
            if subs is None:
                continue
            subs.pop(sub, None)
            self._fanout.pop(channel, None)
            if not subs:
                del self._subs[channel]

    def snapshot_frame(self, channels: Iterable[str], reason: str) -> bytes:
        """A snapshot of ``channels`` as of the current ``seq`` (no new ``seq`` is used).

        The client treats it as "the state including every message up to ``seq``" and
        ignores any later message whose ``seq`` is not above it.
        """
        body = {
            "type": "snapshot",
            "seq": self.seq,
            "epoch": self.epoch,
            "reason": reason,
            "channels": {c: dict(self.snapshot(c)) for c in sorted(channels)},
        }
        return encode_text(encode_json(body))

    def subscriber_count(self, channel: str) -> int:
        return len(self._subs.get(channel, ()))

    def subscribers(self, channel: str) -> tuple[Subscriber, ...]:
        return tuple(self._subs.get(channel, ()))

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            seq=self.seq,
            subscribers=len(self._all),
            backlogged=sum(1 for s in self._all if s.outbox),
            replay_frames=len(self.replay),
            replay_evicted_through=self.replay.evicted_through,
            resyncs=self.stats_resyncs,
            published=self.stats_published,
            pending=len(self._pending) + (0 if self._work is None else 1),
        )

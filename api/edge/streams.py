"""Edges on other machines: the engine's records in a Redis stream per feed epoch.

Keys (``prefix`` defaults to ``crashd``):

* ``{prefix}:feed:epoch`` — the current epoch's name;
* ``{prefix}:feed:{epoch}`` — its stream: one entry per hand-over of the relay (a
  frame and the keyframes that follow it, or a keyframe alone), its records one after
  the other in the field ``r``; entry id ``{seq}-{n}`` (``seq`` of its first record,
  ``n`` counting the entries of one ``seq`` from 1), trimmed (``MINID ~``) to the
  engine's replay window; its last entry is an ``EPOCH`` record naming the next epoch
  when the engine moves on;
* ``{prefix}:feed:wants`` — edges' ``WANT``s (``MAXLEN ~ 10000``).

The engine (``StreamOutlet``) queues records without blocking and writes them in one
pipelined round trip per wake-up. A frame and its keyframes share one entry because
Redis answers a blocked ``XREAD`` after each ``XADD``: as two entries, every frame cost
each edge two reads (measured: ``python -m bench fanout --edges 2``, docs/scale-out.md). When Redis goes away it keeps what it could not write
(bounded) and retries; when Redis comes back without the stream (a restart: Redis holds
frames, never money) the feed starts a new epoch, because what the edges missed is gone.

An edge (``follow_stream``) reads the epoch, the stream from its first entry (filling
its replay buffer, so a client may resume on it at once), then ``XREAD``s from its
last id. A silent stream makes it look at the epoch key again; an ``EPOCH`` record or a
changed key is an epoch change; a ``seq`` that skips one is a gap (``EdgeHub``).
"""

from __future__ import annotations

import collections
import logging
import secrets
from collections.abc import Callable, Sequence

import trio

from .links import Entry, LinkError, StreamLink
from .mirror import EdgeHub
from .records import Kind, Record, RecordError, decode, decode_all
from .relay import FeedRelay

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "crashd"
WANTS_MAXLEN = 10_000
MAX_PENDING = 200_000
"""Entries (a frame and its keyframes each) the engine keeps while Redis is away; beyond it the oldest are dropped (the
edges see a gap and resynchronise)."""


def epoch_key(prefix: str) -> str:
    return f"{prefix}:feed:epoch"


def stream_key(prefix: str, epoch: str) -> str:
    return f"{prefix}:feed:{epoch}"


def wants_key(prefix: str) -> str:
    return f"{prefix}:feed:wants"


class StreamOutlet:
    """The relay's outlet into Redis (see the module docstring)."""

    def __init__(
        self,
        relay: FeedRelay,
        link: StreamLink,
        *,
        prefix: str = DEFAULT_PREFIX,
        on_epoch: Callable[[str], None] | None = None,
        max_pending: int = MAX_PENDING,
        retry_s: float = 0.2,
        keep: dict[str, bytes] | None = None,
        watch_s: float = 1.0,
    ) -> None:
        self.relay = relay
        self.link = link
        self.prefix = prefix
        self.on_epoch = on_epoch
        """Called with the new epoch when Redis lost the stream: the server moves its
        own hub (and Unix edges) to it too, so every edge and client agrees."""
        self.max_pending = max_pending
        self.retry_s = retry_s
        self.keep = dict(keep or {})
        """Other keys to (re)write with every new stream (a restarted Redis lost them)."""
        self.watch_s = watch_s
        self._lost = False
        self.epoch = relay.hub.epoch
        self._pending: collections.deque[Entry] = collections.deque()
        self._last = (-1, 0)
        self._wake = trio.Event()
        self._open = False
        self.stats_written = 0
        self.stats_dropped = 0
        self.stats_epochs = 0
        self.stats_failures = 0
        relay.outlets.append(self)

    def _entry(self, records: Sequence[Record]) -> Entry:
        first = records[0].seq
        seq, n = self._last
        n = n + 1 if first == seq else 1
        self._last = (first, n)
        data = records[0].encode() if len(records) == 1 else b"".join(r.encode() for r in records)
        return (f"{first}-{n}", data)

    def send(self, records: Sequence[Record]) -> None:
        if not self._open:
            return  # not streaming (yet, or between epochs): the new stream starts afresh
        pending = self._pending
        pending.append(self._entry(records))
        while len(pending) > self.max_pending:
            pending.popleft()
            self.stats_dropped += 1
        self._wake.set()

    async def _start_stream(self) -> None:
        """Name this epoch in Redis and begin its stream with a keyframe."""
        link = self.link
        previous = await link.get(epoch_key(self.prefix))
        self._pending.clear()
        self._last = (-1, 0)
        self._open = True
        first = self._entry([self.relay.state_now(), *self.relay.revocations()])
        await link.append(stream_key(self.prefix, self.epoch), [first])
        for key, value in self.keep.items():
            await link.set(key, value)
        await link.set(epoch_key(self.prefix), self.epoch.encode())
        if previous is not None and previous.decode() != self.epoch:
            old = stream_key(self.prefix, previous.decode())
            if await link.exists(old):
                # Tell the old stream's readers where the feed went (they switch at once
                # instead of noticing a silence).
                end = Record(Kind.EPOCH, self.relay.hub.seq, "", self.epoch.encode())
                await link.append(old, [("*", end.encode())], maxlen=1 << 20)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write records until cancelled; ``started()`` once the stream exists."""
        while True:
            try:
                await self._start_stream()
                break
            except LinkError as exc:
                log.warning("relay: Redis unavailable (%s); retrying", exc)
                await trio.sleep(self.retry_s)
        try:
            # Wants of an earlier engine are stale: edges ask again for what they need.
            await self.link.delete(wants_key(self.prefix))
        except LinkError:
            pass
        task_status.started()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._answer_wants)
            nursery.start_soon(self._watch)
            await self._write_loop()

    async def _watch(self) -> None:
        """A Redis that restarted between two writes accepts the next one into a new,
        empty stream: only the epoch key's absence tells. Look every ``watch_s``."""
        while True:
            await trio.sleep(self.watch_s)
            try:
                current = await self.link.get(epoch_key(self.prefix))
            except LinkError:
                continue  # the writer meets it too, and recovers
            if self._open and (current is None or current.decode() != self.epoch):
                self._lost = True
                self._wake.set()

    async def _write_loop(self) -> None:
        while True:
            if self._lost:
                await self._new_epoch()
                continue
            if not self._pending:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            batch = [self._pending[i] for i in range(min(1000, len(self._pending)))]
            hub = self.relay.hub
            # Keep what a resume may still ask for, and always the keyframes of the
            # current seq: before the epoch's first frame (seq 0) ``evicted + 1`` would
            # trim every keyframe as it is written, and a joining edge never syncs.
            minid = f"{min(hub.replay.evicted_through + 1, hub.seq)}-0"
            try:
                await self.link.append(stream_key(self.prefix, self.epoch), batch, minid=minid)
            except LinkError as exc:
                self.stats_failures += 1
                log.warning("relay: writing to Redis failed (%s); retrying", exc)
                await self._recover()
                continue
            for _ in batch:
                self._pending.popleft()
            self.stats_written += len(batch)

    async def _recover(self) -> None:
        """Wait for Redis; continue the stream if it survived, else start an epoch."""
        while True:
            await trio.sleep(self.retry_s)
            try:
                current = await self.link.get(epoch_key(self.prefix))
                alive = await self.link.exists(stream_key(self.prefix, self.epoch))
            except LinkError:
                continue
            if alive and current is not None and current.decode() == self.epoch:
                return  # a blip: the stream is there; the pending records follow
            await self._new_epoch()
            return

    async def _new_epoch(self) -> None:
        """Redis lost the stream: move the feed to a new epoch and begin its stream."""
        new = secrets.token_hex(8)
        log.warning(
            "relay: Redis lost the feed stream (restarted?): new epoch %s (was %s)",
            new,
            self.epoch,
        )
        self._open = False
        self._lost = False
        self.stats_epochs += 1
        self.epoch = new
        if self.on_epoch is not None:
            self.on_epoch(new)
        while True:
            try:
                await self._start_stream()
            except LinkError:
                await trio.sleep(self.retry_s)
                continue
            return

    async def _answer_wants(self) -> None:
        key = wants_key(self.prefix)
        after = "0-0"
        while True:
            try:
                entries = await self.link.read(key, after, block_ms=1000, count=1000)
            except LinkError:
                await trio.sleep(self.retry_s)
                continue
            for entry_id, raw in entries:
                after = entry_id
                try:
                    record = decode(raw)
                except RecordError:
                    continue
                if record.kind is Kind.WANT:
                    self.relay.answer_want(record.channel)


async def follow_stream(
    link: StreamLink,
    hub: EdgeHub,
    on_epoch: Callable[[str], None],
    *,
    on_revoke: Callable[[str], None] | None = None,
    prefix: str = DEFAULT_PREFIX,
    block_ms: int = 1000,
    silence_s: float = 2.5,
    retry_s: float = 0.2,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``hub`` in step with the engine's stream until cancelled (see the module
    docstring); ``started()`` once the hub can serve. ``on_revoke(key_id)``: a key was
    revoked at the engine (close its connections)."""
    started = False
    begun = False
    epoch: str | None = None
    after = "0-0"
    fresh = True
    wants: collections.deque[str] = collections.deque()
    wake = trio.Event()

    def want(channel: str) -> None:
        wants.append(channel)
        wake.set()

    hub.want = want

    async def send_wants() -> None:
        nonlocal wake
        while True:
            with trio.move_on_after(2.0):
                await wake.wait()
            wake = trio.Event()
            # Everything asked for, plus what is still missing (a want may be lost
            # while the engine or Redis restarts): asking twice costs a keyframe.
            channels = list(dict.fromkeys([*wants, *sorted(hub._omitted)]))
            wants.clear()
            if not channels:
                continue
            entries = [("*", Record(Kind.WANT, 0, c, b"").encode()) for c in channels]
            try:
                await link.append(wants_key(prefix), entries, maxlen=WANTS_MAXLEN)
            except LinkError:
                wants.extend(channels)
                await trio.sleep(retry_s)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_wants)
        while True:
            try:
                current = await link.get(epoch_key(prefix))
            except LinkError as exc:
                log.warning("edge: Redis unavailable (%s); retrying", exc)
                await trio.sleep(retry_s)
                continue
            if current is None:
                await trio.sleep(retry_s)  # no engine has streamed here yet
                continue
            if current.decode() != epoch:
                epoch, after, fresh = current.decode(), "0-0", True
            silent = 0.0
            while silent < silence_s:
                try:
                    entries = await link.read(
                        stream_key(prefix, epoch), after, block_ms=block_ms, count=1000
                    )
                except LinkError as exc:
                    log.warning("edge: reading the feed stream failed (%s); retrying", exc)
                    await trio.sleep(retry_s)
                    break
                if not entries:
                    silent += block_ms / 1000
                    continue
                silent = 0.0
                moved = False
                for entry_id, raw in entries:
                    after = entry_id
                    try:
                        records = decode_all(raw)
                    except RecordError:
                        log.warning("edge: a malformed entry in the stream: skipped")
                        continue
                    for record in records:
                        kind = record.kind
                        if kind is Kind.EPOCH:
                            epoch, after, fresh = record.data.decode(), "0-0", True
                            moved = True
                            break
                        if kind is Kind.REVOKE:
                            if on_revoke is not None:
                                on_revoke(record.channel)
                            continue
                        if fresh:
                            if begun:
                                on_epoch(epoch)
                            start = record.seq - 1 if kind is Kind.FRAME else record.seq
                            hub.start(epoch, max(0, start))
                            begun, fresh = True, False
                        if kind is Kind.FRAME or kind is Kind.STATE or kind is Kind.USER:
                            hub.apply(record, contiguous=True)
                    if moved:
                        break
                if not started and hub.synced:
                    started = True
                    task_status.started()
                if moved:
                    continue

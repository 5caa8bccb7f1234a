"""Edges on the engine's machine: records over a Unix stream socket.

The engine (``UnixRelayServer``) accepts edges on a socket path and writes every record
to each of them with one non-blocking ``send`` of shared bytes, as the hub writes frames
to subscribers; an edge that cannot keep up gets a bounded backlog, drained by a writer
task, and is dropped when it overflows (it reconnects and catches up). Each connection
starts with the catch-up (``HELLO``, the replay buffer, the newest ticks, a keyframe),
queued in the same step that adds the edge to the fan-out, so nothing falls between.

An edge (``follow_unix``) reconnects whenever the connection ends or stays silent past
``idle_timeout`` (the engine sends a keyframe at least every second); a ``HELLO`` in
another epoch is an epoch change, one whose replay buffer no longer reaches back to
the edge's ``seq`` is a gap (``EdgeHub``). Its ``WANT``s travel back on the same socket.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from .mirror import EdgeHub
from .records import Kind, Record, RecordError, RecordReader
from .relay import FeedRelay

log = logging.getLogger(__name__)

MAX_BACKLOG_BYTES = 64 * 1024 * 1024
"""An edge further behind than this is dropped (it reconnects and catches up)."""


class _EdgeLink:
    """One connected edge: a socket and its bounded backlog."""

    def __init__(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        self.sock = sock
        self.nursery = nursery
        self.backlog: collections.deque[memoryview] = collections.deque()
        self.backlog_bytes = 0
        self.closed = False
        self._writing = False
        self.cancel = trio.CancelScope()

    def deliver(self, data: bytes) -> None:
        if self.closed:
            return
        if not self.backlog:
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self.drop()
                return
            if n == len(data):
                return
            data_view = memoryview(data)[n:]
        else:
            data_view = memoryview(data)
        self.backlog.append(data_view)
        self.backlog_bytes += len(data_view)
        if self.backlog_bytes > MAX_BACKLOG_BYTES:
            log.warning("relay: an edge fell %d bytes behind: dropped", self.backlog_bytes)
            self.drop()
            return
        if not self._writing:
            self._writing = True
            self.nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        try:
            while self.backlog and not self.closed:
                chunk = self.backlog[0]
                try:
                    n = self.sock.send(chunk)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.sock)
                    continue
                except OSError:
                    self.drop()
                    return
                self.backlog_bytes -= n
                if n == len(chunk):
                    self.backlog.popleft()
                else:
                    self.backlog[0] = chunk[n:]
        finally:
            self._writing = False

    def drop(self) -> None:
        self.closed = True
        self.backlog.clear()
        self.cancel.cancel()


class UnixRelayServer:
    """The relay's outlet for edges on this machine (see the module docstring)."""

    def __init__(self, relay: FeedRelay, path: Path) -> None:
        self.relay = relay
        self.path = path
        self._links: set[_EdgeLink] = set()
        self.stats_connects = 0
        relay.outlets.append(self)

    def send(self, records: Sequence[Record]) -> None:
        if not self._links:
            return
        data = b"".join(r.encode() for r in records)
        for link in list(self._links):
            link.deliver(data)

    @property
    def edges(self) -> int:
        return len(self._links)

    def drop_all(self) -> None:
        """End every edge's connection (an epoch change: they reconnect to a new HELLO)."""
        for link in list(self._links):
            link.drop()

    async def serve(self, *, task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)  # a stale socket of a previous run
            listener.bind(str(self.path))
            os.chmod(self.path, 0o600)
            listener.listen(64)
            listener.setblocking(False)
            async with trio.open_nursery() as nursery:
                task_status.started(self.path)
                while True:
                    await trio.lowlevel.wait_readable(listener)
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        continue
                    sock.setblocking(False)
                    nursery.start_soon(self._serve_edge, sock, nursery)
        finally:
            self.drop_all()
            trio.lowlevel.notify_closing(listener)
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _serve_edge(self, sock: socket.socket, nursery: trio.Nursery) -> None:
        link = _EdgeLink(sock, nursery)
        # Catch-up and joining the fan-out in one step: no record can fall in between.
        link.deliver(b"".join(r.encode() for r in self.relay.catch_up()))
        self._links.add(link)
        self.stats_connects += 1
        reader = RecordReader()
        try:
            with link.cancel:
                while not link.closed:
                    await trio.lowlevel.wait_readable(sock)
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    for record in reader.feed(data):
                        if record.kind is Kind.WANT:
                            answer = self.relay.want(record.channel)
                            if answer is not None:
                                link.deliver(answer.encode())
        except RecordError as exc:
            log.warning("relay: an edge sent garbage (%s): dropped", exc)
        finally:
            link.closed = True
            self._links.discard(link)
            trio.lowlevel.notify_closing(sock)
            sock.close()


async def follow_unix(
    path: Path,
    hub: EdgeHub,
    on_epoch: Callable[[str], None],
    *,
    on_revoke: Callable[[str], None] | None = None,
    idle_timeout: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``hub`` in step with the engine at ``path`` until cancelled; ``started()``
    once the hub can serve (its first keyframe). ``on_epoch(new)`` is called before the
    hub moves to another epoch (the driver closes every connection); ``on_revoke(key_id)``
    when a key was revoked at the engine (the driver closes its connections)."""
    started = False
    begun = False
    delay = 0.05
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            try:
                await _connect(sock, path)
            except OSError:
                await trio.sleep(delay)
                delay = min(1.0, delay * 2)
                continue
            wants = _Wants(sorted(hub._omitted))
            hub.want = wants.add
            reader = RecordReader()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(wants.send_all, sock)
                while True:
                    with trio.move_on_after(idle_timeout) as idle:
                        await trio.lowlevel.wait_readable(sock)
                    if idle.cancelled_caught:
                        log.warning(
                            "edge: the engine said nothing for %.1f s: reconnecting", idle_timeout
                        )
                        break
                    try:
                        data = sock.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    except OSError:
                        break
                    if not data:
                        break
                    delay = 0.05
                    for record in reader.feed(data):
                        if record.kind is Kind.HELLO:
                            epoch = record.channel
                            evicted = int(record.data)
                            if not begun or epoch != hub.epoch:
                                if begun:
                                    on_epoch(epoch)
                                hub.start(epoch, evicted)
                                begun = True
                            elif hub.seq < evicted:
                                hub.gap()
                        elif record.kind is Kind.REVOKE:
                            if on_revoke is not None:
                                on_revoke(record.channel)
                        elif record.kind in (Kind.FRAME, Kind.STATE, Kind.USER):
                            hub.apply(record, contiguous=False)
                            if not started and hub.synced:
                                started = True
                                task_status.started()
                nursery.cancel_scope.cancel()
        except RecordError as exc:
            log.warning("edge: bad record from the engine (%s): reconnecting", exc)
        finally:
            trio.lowlevel.notify_closing(sock)
            sock.close()


async def _connect(sock: socket.socket, path: Path) -> None:
    try:
        sock.connect(str(path))
    except BlockingIOError:
        await trio.lowlevel.wait_writable(sock)
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err)) from None


class _Wants:
    """``WANT``s waiting to go to the engine on one connection (the hub's ``want``)."""

    def __init__(self, channels: Sequence[str]) -> None:
        self.queue: collections.deque[str] = collections.deque(channels)
        self._wake = trio.Event()

    def add(self, channel: str) -> None:
        self.queue.append(channel)
        self._wake.set()

    async def send_all(self, sock: socket.socket) -> None:
        while True:
            while self.queue:
                data = memoryview(Record(Kind.WANT, 0, self.queue[0], b"").encode())
                while data:
                    try:
                        data = data[sock.send(data) :]
                    except BlockingIOError:
                        await trio.lowlevel.wait_writable(sock)
                    except OSError:
                        return
                self.queue.popleft()
            await self._wake.wait()
            self._wake = trio.Event()

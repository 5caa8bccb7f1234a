"""The feed listener: a thin Trio driver around wsproto (inbound) and the hub (outbound).

Each connection is one task that reads (wsproto parses what the client sends: the
HTTP upgrade, masked frames, pings, close). Outbound data never goes through wsproto
or through this task: the hub writes pre-encoded frames straight into the socket from
the publisher's task, and only when the kernel buffer is full does this module start a
writer task for that connection (``_drain``) until its outbox is empty again.

Sockets are plain non-blocking stdlib sockets; Trio is used for what it is good at,
waiting (``wait_readable``/``wait_writable``), timeouts and structured shutdown. A
single heartbeat task serves every connection.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from crashd.api.wire import FEED_PATH, SCOPE_GAME_STATE, CloseCode

from .access import Authenticate, ConnectRateLimited, Principal, channel_denial
from .frames import OPCODE_PONG, encode_close, encode_frame
from .hub import Hub, Subscriber
from .protocol import (
    Ack,
    Auth,
    ClientError,
    RateLimiter,
    Subscribe,
    Unsubscribe,
    control,
    error_frame,
    parse_client_message,
)

log = logging.getLogger(__name__)

DEFAULT_FEED_PORT = 8001
_HEARTBEAT_KEY = "~heartbeat"


@dataclass(frozen=True, slots=True)
class FeedConfig:
    """Limits and timers of the feed listener; every one is in docs/feed.md."""

    path: str = FEED_PATH
    max_connections: int = 20_000
    max_message_bytes: int = 4096
    """Largest client message (all frames of it); beyond it the connection is closed 1009."""
    max_handshake_bytes: int = 8192
    handshake_timeout: float = 10.0
    auth_timeout: float = 10.0
    heartbeat_interval: float = 15.0
    heartbeat_timeout: float = 45.0
    """A connection with no ``ack`` for this long is closed with 4008."""
    close_timeout: float = 2.0
    """How long a closing connection may take to flush and answer our close frame."""
    max_subscriptions: int = 64
    rate: float = 20.0
    """Client messages per second allowed (sustained)…"""
    burst: float = 50.0
    """…and in a burst."""
    max_strikes: int = 5
    """Errors answered before the connection is closed (4000, or 4029 for rate limits)."""
    backlog: int = 4096
    send_buffer_bytes: int | None = 64 * 1024
    """SO_SNDBUF per connection (the kernel doubles it). Bounds kernel memory per slow
    client (autotuning would let each grow to ``tcp_wmem`` max, 4 MiB here) and makes a
    stalled reader show up as a backlog within ~100 KiB; ``None`` keeps the default."""


_ACCEPT_TRANSIENT = frozenset(
    {
        errno.ECONNABORTED,
        errno.EPROTO,
        errno.EPERM,
        errno.EINTR,
        errno.ENETDOWN,
        errno.ENOPROTOOPT,
        errno.EHOSTDOWN,
        errno.ENONET,
        errno.EHOSTUNREACH,
        errno.EOPNOTSUPP,
        errno.ENETUNREACH,
    }
)
"""accept(2) errors that concern only the connection being accepted (Linux man page:
"treat them like EAGAIN by retrying")."""


class _Closed(Exception):
    """The peer went away during the handshake; unwinds the connection task quietly."""


class FeedConnection:
    """One client: handshake, auth, subscriptions, heartbeat state, close."""

    def __init__(self, server: FeedServer, sock: socket.socket) -> None:
        self.server = server
        self.hub = server.hub
        self.config = server.config
        self.sock = sock
        self.handshake: WSConnection | None = WSConnection(ConnectionType.SERVER)
        # After the upgrade only the frame-level connection is kept: the HTTP/1.1
        # handshake state (h11) would otherwise stay alive for the connection's life,
        # a few KiB times thousands of subscribers.
        self.ws: Connection | None = None
        self.sub: Subscriber | None = None
        self.principal: Principal | None = None
        self.accepted_at = trio.current_time()
        self.last_ack = self.accepted_at
        self.closing = False
        self.scope = trio.CancelScope()
        self.nursery: trio.Nursery | None = None
        self.writing = False
        self._accepted = False
        self.strikes = 0
        self.limiter = RateLimiter(self.config.rate, self.config.burst, self.accepted_at)
        self._message: list[str | bytes | bytearray] = []
        self._message_size = 0

    # -- outbound: everything goes through the subscriber so order is one queue ------

    def send(self, data: bytes) -> None:
        assert self.sub is not None
        self.sub.deliver(data)

    def _on_backlog(self) -> None:
        if not self.writing and self.nursery is not None:
            self.writing = True
            self.nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        """The writer: empties the outbox as the socket accepts data, then exits."""
        assert self.sub is not None
        outbox = self.sub.outbox
        try:
            while True:
                chunk = outbox.peek()
                if chunk is None:
                    break
                try:
                    n = self.sock.send(chunk)
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(self.sock)
                    continue
                except OSError:
                    self.abort()
                    return
                outbox.consumed(n)
            self.sub.drained()
        finally:
            self.writing = False

    def _on_kill(self, code: int, reason: str) -> None:
        if code == 1006:
            self.abort()
        else:
            self.close(code, reason)

    def abort(self) -> None:
        """Drop the connection now, without a close handshake (the peer is gone)."""
        self.closing = True
        if self.sub is not None:
            self.sub.kill(1006, "aborted")
        self.scope.cancel()

    def close(self, code: int, reason: str, error: bytes | None = None) -> None:
        """Send ``error`` (if any) and a close frame, stop delivering; never blocks.

        The read loop keeps going until the client answers with its close frame or
        ``close_timeout`` passes, so the close is clean when the peer cooperates and
        bounded when it does not.
        """
        if self.closing:
            return
        self.closing = True
        assert self.sub is not None
        sub = self.sub
        frames = ([error] if error is not None else []) + [encode_close(code, reason)]
        for frame in frames:
            sub.deliver_final(frame)
        sub.kill(code, reason)  # detach from the hub: nothing is delivered after close
        self.scope.deadline = min(
            self.scope.deadline, trio.current_time() + self.config.close_timeout
        )
        self.server.stats_closes[code] = self.server.stats_closes.get(code, 0) + 1

    # -- the connection task -----------------------------------------------------------

    async def run(self) -> None:
        credential: str | None = None
        try:
            with trio.move_on_after(self.config.handshake_timeout):
                credential = await self._handshake()
            if not self._accepted:
                return
            self.sub = self.hub.attach(self.sock.send, self._on_backlog, self._on_kill)
            self.server.connections.add(self)
            with self.scope:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    if credential is not None:
                        self._authenticate(credential)
                    # Frames that came in the same packets as the upgrade request.
                    if not self._handle_events():
                        await self._read_loop()
                    await self._flush()
                    nursery.cancel_scope.cancel()
        except _Closed:
            pass
        except Exception:
            # A bug met while serving one client must not take the feed down for all
            # of them (Trio would propagate it to the listener's nursery): log it, and
            # this connection alone ends.
            log.exception("feed connection failed")
            self.server.stats_failures += 1
        finally:
            self.server.connections.discard(self)
            if self.sub is not None:
                self.sub.kill(1006, "connection ended")  # idempotent: detaches, stops sends
                self.sub.release()
            self.nursery = None
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()

    async def _recv(self) -> bytes:
        """The next bytes from the client; ``b""`` at EOF or when the connection broke."""
        while True:
            await trio.lowlevel.wait_readable(self.sock)
            try:
                return self.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                return b""  # reset by the peer: the same as EOF for us

    async def _send_raw(self, data: bytes) -> None:
        """Only for the handshake, before the connection has a subscriber."""
        view = memoryview(data)
        while view:
            await trio.lowlevel.wait_writable(self.sock)
            try:
                view = view[self.sock.send(view) :]
            except BlockingIOError:
                continue
            except OSError:
                raise _Closed from None

    async def _handshake(self) -> str | None:
        """Read the HTTP upgrade; accept or reject it. Returns a header credential."""
        size = 0
        while True:
            data = await self._recv()
            if not data:
                raise _Closed
            size += len(data)
            if size > self.config.max_handshake_bytes:
                await self._reject(431, "request headers too large")
                return None
            assert self.handshake is not None
            try:
                self.handshake.receive_data(data)
                for event in self.handshake.events():
                    if isinstance(event, Request):
                        return await self._on_request(event)
            except RemoteProtocolError as exc:
                await self._send_raw(self.handshake.send(exc.event_hint) if exc.event_hint else b"")
                return None

    async def _reject(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"5"))
        assert self.handshake is not None
        try:
            out = self.handshake.send(
                RejectConnection(status_code=status, headers=headers, has_body=True)
            )
            out += self.handshake.send(RejectData(data=body, body_finished=True))
        except LocalProtocolError:
            # The upgrade request itself was not even HTTP; a raw 400 is all we can say.
            out = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        await self._send_raw(out)

    async def _on_request(self, request: Request) -> str | None:
        path = request.target.split("?", 1)[0]
        if path != self.config.path:
            await self._reject(404, f"the feed is at {self.config.path}")
            return None
        if len(self.server.connections) >= self.config.max_connections:
            await self._reject(503, "feed connection limit reached, retry later")
            return None
        credential = None
        for name, value in request.extra_headers:
            if name.lower() == b"authorization" and value[:7].lower() == b"bearer ":
                credential = value[7:].decode("latin-1").strip()
        # No permessage-deflate: every subscriber gets the same uncompressed bytes.
        assert self.handshake is not None
        accept = self.handshake.send(AcceptConnection(extensions=[]))
        self.ws, self.handshake = self.handshake.connection, None
        await self._send_raw(accept)
        self._accepted = True
        return credential

    def _authenticate(self, credential: str) -> None:
        try:
            principal = self.server.authenticate(credential)
        except ConnectRateLimited:
            self.close(
                CloseCode.TRY_AGAIN_LATER,
                "connect rate limited",
                error_frame(
                    "rate_limited", "too many connections for this credential; retry later"
                ),
            )
            return
        if principal is None:
            self.close(
                CloseCode.UNAUTHORIZED,
                "invalid credential",
                error_frame("unauthorized", "the API key or feed token is not valid (or expired)"),
            )
            return
        if SCOPE_GAME_STATE not in principal.scopes:
            self.close(
                CloseCode.FORBIDDEN,
                "missing scope read:game_state",
                error_frame("forbidden", f"the credential lacks the {SCOPE_GAME_STATE!r} scope"),
            )
            return
        self.principal = principal
        self.last_ack = trio.current_time()
        config = self.config
        self.send(
            control(
                {
                    "type": "welcome",
                    "epoch": self.hub.epoch,
                    "seq": self.hub.seq,
                    "partner_id": principal.partner_id,
                    "environment": principal.environment,
                    "heartbeat_interval_ms": round(config.heartbeat_interval * 1000),
                    "heartbeat_timeout_ms": round(config.heartbeat_timeout * 1000),
                    "max_message_bytes": config.max_message_bytes,
                }
            )
        )

    async def _read_loop(self) -> None:
        auth_deadline = self.accepted_at + self.config.auth_timeout
        while True:
            if self.principal is None and not self.closing:
                with trio.move_on_at(auth_deadline):
                    if self._receive(await self._recv()):
                        return
                    continue
                self.close(
                    CloseCode.UNAUTHORIZED,
                    "authentication timeout",
                    error_frame("unauthorized", 'send {"type": "auth", "token": ...} first'),
                )
                continue
            if self._receive(await self._recv()):
                return

    def _receive(self, data: bytes) -> bool:
        """Process bytes from the client (``b""`` is EOF); True when the connection is over."""
        assert self.ws is not None
        if self.ws.state is ConnectionState.CLOSED:
            return True
        self.ws.receive_data(data or None)
        return self._handle_events()

    def _handle_events(self) -> bool:
        assert self.ws is not None
        for event in self.ws.events():
            if isinstance(event, CloseConnection):
                if self.closing or self.ws.state is ConnectionState.CLOSED:
                    return True  # the answer to our close, or EOF: nothing more to say
                if self.ws.state is ConnectionState.OPEN:
                    # No close frame arrived: wsproto reports bytes that are not valid
                    # WebSocket (1002) or not UTF-8 (1007) as a close event. Say why.
                    self.close(
                        event.code,
                        event.reason or "protocol error",
                        error_frame("protocol_error", f"invalid WebSocket data: {event.reason}"),
                    )
                else:
                    self.close(CloseCode.NORMAL, "bye")  # the client's close: answer it
                return True
            if self.closing:
                continue  # after our close frame only the peer's close matters
            if isinstance(event, Ping):
                self.send(encode_frame(OPCODE_PONG, bytes(event.payload)))
            elif isinstance(event, (TextMessage, BytesMessage)):
                self._message.append(event.data)
                self._message_size += len(event.data)
                if self._message_size > self.config.max_message_bytes:
                    self._message, self._message_size = [], 0
                    self.close(
                        CloseCode.MESSAGE_TOO_BIG,
                        "message too big",
                        error_frame(
                            "message_too_big",
                            f"client messages are limited to {self.config.max_message_bytes} bytes",
                        ),
                    )
                    continue
                if event.message_finished:
                    parts, self._message, self._message_size = self._message, [], 0
                    if isinstance(event, BytesMessage):
                        self._strike(
                            ClientError("binary_not_supported", "send JSON in text frames")
                        )
                    else:
                        self._on_text("".join(parts))  # type: ignore[arg-type]
        return False

    def _strike(self, err: ClientError, close_code: int = CloseCode.INVALID_MESSAGES) -> None:
        self.strikes += 1
        frame = error_frame(err.code, err.message, err.request_id)
        if self.strikes >= self.config.max_strikes:
            self.close(close_code, f"too many errors, last: {err.code}", frame)
        else:
            self.send(frame)

    def _on_text(self, text: str) -> None:
        now = trio.current_time()
        if not self.limiter.allow(now):
            self._strike(
                ClientError("rate_limited", f"at most {self.config.rate:g} messages per second"),
                CloseCode.RATE_LIMITED,
            )
            return
        try:
            message = parse_client_message(text)
        except ClientError as err:
            self._strike(err)
            return
        if self.principal is None:
            if isinstance(message, Auth):
                self._authenticate(message.token)
            else:
                self.close(
                    CloseCode.UNAUTHORIZED,
                    "not authenticated",
                    error_frame("unauthorized", 'send {"type": "auth", "token": ...} first'),
                )
            return
        if isinstance(message, Ack):
            if 0 < message.heartbeat_id <= self.server.heartbeat_id:
                self.last_ack = now
            else:
                self._strike(
                    ClientError("invalid_message", f"no heartbeat {message.heartbeat_id} was sent")
                )
        elif isinstance(message, Subscribe):
            self._subscribe(message)
        elif isinstance(message, Unsubscribe):
            assert self.sub is not None
            self.hub.unsubscribe(self.sub, message.channels)
            self.send(control(self._reply("unsubscribed", message.request_id)))
        elif isinstance(message, Auth):
            self._strike(ClientError("invalid_message", "already authenticated"))

    def _reply(self, kind: str, request_id: Any) -> dict[str, Any]:
        assert self.sub is not None
        body: dict[str, Any] = {"type": kind, "channels": sorted(self.sub.channels)}
        if request_id is not None:
            body["id"] = request_id
        return body

    def _subscribe(self, message: Subscribe) -> None:
        assert self.sub is not None and self.principal is not None
        for channel in message.channels:
            denial = channel_denial(self.principal, channel)
            if denial is not None:
                self._strike(ClientError(*denial, request_id=message.request_id))
                return
        if len(self.sub.channels | set(message.channels)) > self.config.max_subscriptions:
            self._strike(
                ClientError(
                    "too_many_subscriptions",
                    f"at most {self.config.max_subscriptions} channels per connection",
                    message.request_id,
                )
            )
            return
        new = [c for c in message.channels if c not in self.sub.channels]
        body = self._reply("subscribed", message.request_id)
        body["channels"] = sorted(self.sub.channels | set(new))
        self.send(control(body))
        replayed = self.hub.subscribe(
            self.sub, new, since_seq=message.resume_seq, epoch=message.resume_epoch
        )
        if message.resume_seq is not None and replayed is not None:
            # The replay is complete: from here on the stream is live.
            resumed: dict[str, Any] = {"type": "resumed", "replayed": replayed, "seq": self.hub.seq}
            if message.request_id is not None:
                resumed["id"] = message.request_id
            self.send(control(resumed))

    async def _flush(self) -> None:
        """Give the writer ``close_timeout`` to get the last frames (our close) out."""
        assert self.sub is not None
        with trio.move_on_after(self.config.close_timeout):
            while self.sub.outbox:
                await trio.sleep(0.005)


@dataclass(frozen=True, slots=True)
class FeedStatistics:
    connections: int
    authenticated: int
    backlogged: int
    closes: dict[int, int]
    """Connections closed by the server, by close code."""
    failures: int
    """Connections ended by an unexpected error (logged)."""


class FeedServer:
    """The listener's shared state: the hub, connections and the heartbeat task.

    ``serve_feed`` is enough to run the feed; construct a ``FeedServer`` yourself to
    also read ``statistics()`` or ``disconnect()`` connections (key revocation).
    """

    def __init__(self, hub: Hub, authenticate: Authenticate, config: FeedConfig) -> None:
        self.hub = hub
        self.authenticate = authenticate
        self.config = config
        self.connections: set[FeedConnection] = set()
        self.heartbeat_id = 0
        self.stats_closes: dict[int, int] = {}
        self.stats_failures = 0

    async def heartbeats(self) -> None:
        """Every interval: drop connections that stopped acking, beat the others.

        One task for all connections, and the beat is one shared frame: the same
        fan-out as a tick. A beat waiting in a slow client's outbox is replaced by the
        next one (only the newest needs an ack).
        """
        interval = self.config.heartbeat_interval
        while True:
            await trio.sleep(interval)
            now = trio.current_time()
            self.heartbeat_id += 1
            frame = control({"type": "heartbeat", "id": self.heartbeat_id})
            for conn in list(self.connections):
                if conn.principal is None or conn.closing or conn.sub is None:
                    continue
                if now - conn.last_ack > self.config.heartbeat_timeout:
                    conn.close(
                        CloseCode.HEARTBEAT_TIMEOUT,
                        "heartbeat timeout",
                        error_frame(
                            "heartbeat_timeout",
                            f"no ack for {self.config.heartbeat_timeout:g} s; "
                            'answer {"type": "heartbeat", "id": N} with {"type": "ack", "id": N}',
                        ),
                    )
                else:
                    conn.sub.deliver(frame, _HEARTBEAT_KEY)

    async def accept_loop(self, listener: socket.socket, nursery: trio.Nursery) -> None:
        while True:
            await trio.lowlevel.wait_readable(listener)
            # Accept everything that is waiting: connection storms cost one wakeup.
            while True:
                try:
                    sock, _ = listener.accept()
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                        # Out of descriptors: back off instead of spinning; clients retry.
                        log.warning("feed: cannot accept (%s); backing off", exc)
                        await trio.sleep(0.1)
                        break
                    if exc.errno in _ACCEPT_TRANSIENT:
                        continue  # that one connection is gone, not the listener
                    raise
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if self.config.send_buffer_bytes is not None:
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_SNDBUF, self.config.send_buffer_bytes
                    )
                nursery.start_soon(FeedConnection(self, sock).run)

    def statistics(self) -> FeedStatistics:
        conns = list(self.connections)
        return FeedStatistics(
            connections=len(conns),
            authenticated=sum(1 for c in conns if c.principal is not None),
            backlogged=sum(1 for c in conns if c.sub is not None and c.sub.outbox),
            closes=dict(self.stats_closes),
            failures=self.stats_failures,
        )

    def disconnect(
        self, which: Callable[[Principal], bool], reason: str = "credential revoked"
    ) -> int:
        """Close (4001) every connection whose principal matches; returns how many.

        Credentials are checked when a connection opens; this is how the REST side
        makes a revoked API key or an expired feed token take effect on open ones.
        """
        closed = 0
        for conn in list(self.connections):
            if conn.principal is not None and not conn.closing and which(conn.principal):
                conn.close(
                    CloseCode.UNAUTHORIZED,
                    reason,
                    error_frame("unauthorized", f"{reason}; reconnect with a valid one"),
                )
                closed += 1
        return closed

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``host:port`` until cancelled; ``task_status.started(bound_port)``."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(self.config.backlog)
            listener.setblocking(False)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.heartbeats)
                nursery.start_soon(self.accept_loop, listener, nursery)
                task_status.started(listener.getsockname()[1])
                try:
                    await trio.sleep_forever()
                finally:
                    with trio.CancelScope(shield=True):
                        await self.shutdown()
        finally:
            trio.lowlevel.notify_closing(listener)
            listener.close()

    async def shutdown(self) -> None:
        """Close every connection with 1001 and give them ``close_timeout`` to finish."""
        for conn in list(self.connections):
            if conn.sub is not None:
                conn.close(CloseCode.GOING_AWAY, "server shutting down")
        with trio.move_on_after(self.config.close_timeout):
            while self.connections:
                await trio.sleep(0.01)


async def serve_feed(
    hub: Hub,
    host: str,
    port: int,
    authenticate: Authenticate,
    *,
    config: FeedConfig = FeedConfig(),
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` for feed connections until cancelled.

    Reports the bound port with ``task_status.started(port)`` (so ``port=0`` works);
    ``await nursery.start(serve_feed, hub, host, 0, authenticate)`` returns it.
    """
    await FeedServer(hub, authenticate, config).serve(host, port, task_status=task_status)

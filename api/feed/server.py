"""The feed listener: a thin Trio driver around wsproto, ``FeedSession`` and the hub.

Each connection is one task that reads. wsproto parses what the client sends (the HTTP
upgrade, masked frames, pings, close); the connection's ``FeedSession`` (session.py)
decides what each message means; this module carries its decisions out against the
hub and the socket. Outbound data never goes through this task: the hub writes
pre-encoded frames straight into the socket from the publisher's task, and only when
the kernel buffer is full does this module start a writer task for that connection
(``_drain``) until its outbox is empty again.

Sockets are plain non-blocking stdlib sockets; Trio is used for what it is good at,
waiting (readable, writable, an event, a deadline), timeouts and structured shutdown. A
single heartbeat task serves every connection.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import h11
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
from wsproto.frame_protocol import CloseReason
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from crashd.api.security.keys import Principal
from crashd.api.wire import FEED_PATH, READY_PATH

from .access import Authenticate, ConnectRateLimited
from .hub import Hub
from .protocol import ClientError, Order, control, parse_client_message
from .session import (
    Action,
    Binary,
    ClientEvent,
    Close,
    ConnectRefused,
    Dropped,
    Event,
    Execute,
    FeedSession,
    HeaderCredential,
    Heartbeat,
    InvalidData,
    Join,
    Leave,
    Lost,
    PeerClosed,
    Replayed,
    Revoked,
    Send,
    ShuttingDown,
    State,
    Timer,
    TooBig,
    Verdict,
    Verify,
)

log = logging.getLogger(__name__)


class OrderHandler(Protocol):
    """Runs a feed order for a principal and returns its ``result`` message."""

    async def answer(
        self, principal: Principal, message: dict[str, Any], request_id: Any
    ) -> dict[str, Any]: ...


def order_refusal(order: Order, code: str, detail: str) -> dict[str, Any]:
    """A ``result`` refusing an order before it could run (the problem body as REST's)."""
    from crashd.api.rest.problems import CODES

    kind = CODES[code]
    body = {
        "type": f"urn:crashd:problem:{code}",
        "title": kind.title,
        "status": kind.status,
        "detail": detail,
        "code": code,
        "request_id": None,
    }
    key = order.message.get("key")
    result: dict[str, Any] = {
        "type": "result",
        "key": key if isinstance(key, str) else None,
        "status": kind.status,
        "replayed": False,
        "body": body,
    }
    if order.request_id is not None:
        result["id"] = order.request_id
    return result


DEFAULT_FEED_PORT = 8001
KEY_REVOKED_REASON = "key revoked"


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
    burst: int = 50
    """…and in a burst."""
    max_orders_in_flight: int = 16
    """Orders of one connection being run at once (each is answered in turn)."""
    max_strikes: int = 5
    """Errors answered before the connection is closed (4000, or 4029 for rate limits)."""
    fanout_slice: int = 256
    """Subscribers one fan-out slice delivers to before the loop may run other tasks
    (a cash-out waits for at most one slice, about a millisecond, to be priced)."""
    backlog: int = 4096
    send_buffer_bytes: int | None = 64 * 1024
    """SO_SNDBUF per connection (the kernel doubles it). Bounds kernel memory per slow
    client (autotuning would let each grow to ``tcp_wmem`` max, 4 MiB here) and makes a
    stalled reader show up as a backlog within ~100 KiB; ``None`` keeps the default."""
    reuse_port: bool = False
    """``SO_REUSEPORT`` on the listener: several feed edges on one machine share one port
    and the kernel spreads new connections over them (``crashd edge``)."""


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


async def _recv(sock: socket.socket) -> bytes:
    """The next bytes from the client; ``b""`` at EOF or when the connection broke."""
    while True:
        await trio.lowlevel.wait_readable(sock)
        try:
            return sock.recv(65536)
        except BlockingIOError:
            continue
        except OSError:
            return b""  # reset by the peer: the same as EOF for us


async def _send_all(sock: socket.socket, data: bytes) -> None:
    """Only for the handshake, before the connection has a subscriber."""
    view = memoryview(data)
    while view:
        await trio.lowlevel.wait_writable(sock)
        try:
            view = view[sock.send(view) :]
        except BlockingIOError:
            continue
        except OSError:
            raise _Closed from None


def _parse(text: str) -> ClientEvent:
    try:
        return parse_client_message(text)
    except ClientError as err:
        return err  # the session answers it (a strike)


class _Upgrade:
    """The HTTP/1.1 upgrade of one socket: read the request, accept or refuse it.

    Only the frame-level ``Connection`` outlives it: the handshake's h11 state would
    otherwise stay alive for the connection's life, a few KiB times thousands of
    subscribers.
    """

    def __init__(self, server: FeedServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.handshake = WSConnection(ConnectionType.SERVER)

    async def run(self) -> tuple[Connection | None, str | None]:
        """The accepted connection and the header credential; ``(None, None)`` if refused."""
        size = 0
        raw: list[bytes] = []
        while True:
            data = await _recv(self.sock)
            if not data:
                raise _Closed
            size += len(data)
            if size > self.server.config.max_handshake_bytes:
                await self._reject(431, "request headers too large")
                return None, None
            raw.append(data)
            try:
                self.handshake.receive_data(data)
                for event in self.handshake.events():
                    if isinstance(event, Request):
                        return await self._on_request(event)
            except RemoteProtocolError as exc:
                if self.server.readiness is not None and await self._probe(b"".join(raw)):
                    return None, None
                hint = self.handshake.send(exc.event_hint) if exc.event_hint else b""
                await _send_all(self.sock, hint)
                return None, None

    async def _reject(self, status: int, text: str) -> None:
        body = (text + "\n").encode()
        headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"5"))
        try:
            out = self.handshake.send(
                RejectConnection(status_code=status, headers=headers, has_body=True)
            )
            out += self.handshake.send(RejectData(data=body, body_finished=True))
        except LocalProtocolError:
            # The upgrade request itself was not even HTTP; a raw 400 is all we can say.
            out = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        await _send_all(self.sock, out)

    async def _probe(self, raw: bytes) -> bool:
        """Answer a plain ``GET /readyz`` (not an upgrade: wsproto refused it) with the
        server's readiness; ``False``: not that request (wsproto's refusal stands)."""
        assert self.server.readiness is not None
        http = h11.Connection(h11.SERVER)
        try:
            http.receive_data(raw)
            event = http.next_event()
        except h11.RemoteProtocolError:
            return False
        if not isinstance(event, h11.Request) or event.method not in (b"GET", b"HEAD"):
            return False
        if event.target.split(b"?", 1)[0] != READY_PATH.encode():
            return False
        why = self.server.readiness()
        body = json.dumps(
            {
                "status": "ready" if why is None else "not_ready",
                "checks": {"stream": "ok" if why is None else why},
            }
        ).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            (b"connection", b"close"),
        ]
        out = http.send(h11.Response(status_code=200 if why is None else 503, headers=headers))
        out = (out or b"") + (http.send(h11.Data(data=body)) if event.method == b"GET" else b"")
        await _send_all(self.sock, out + (http.send(h11.EndOfMessage()) or b""))
        return True

    async def _on_request(self, request: Request) -> tuple[Connection | None, str | None]:
        config = self.server.config
        path = request.target.split("?", 1)[0]
        if path != config.path:
            await self._reject(404, f"the feed is at {config.path}")
            return None, None
        why = self.server.readiness() if self.server.readiness is not None else None
        if why is not None:
            # Out of rotation: a new client is better served by another edge (or by a
            # retry) than by a state that stopped. Connected clients stay.
            await self._reject(503, f"this edge is not ready: {why}")
            return None, None
        if len(self.server.connections) >= config.max_connections:
            await self._reject(503, "feed connection limit reached, retry later")
            return None, None
        credential = None
        for name, value in request.extra_headers:
            if name.lower() == b"authorization" and value[:7].lower() == b"bearer ":
                credential = value[7:].decode("latin-1").strip()
        # No permessage-deflate: every subscriber gets the same uncompressed bytes.
        accept = self.handshake.send(AcceptConnection(extensions=[]))
        ws = self.handshake.connection
        assert ws is not None  # wsproto made it when it accepted
        await _send_all(self.sock, accept)
        return ws, credential


class FeedConnection:
    """One accepted WebSocket: the I/O of its ``FeedSession``.

    Reads frames into wsproto, gives each client message to the session and carries
    out the session's actions: frames through the hub's subscriber (one queue, so
    order holds), subscriptions in the hub, the close. It keeps no protocol state of
    its own: what the client may do is the session's, whether the close handshake is
    under way is wsproto's (``ws.state``).
    """

    def __init__(
        self, server: FeedServer, sock: socket.socket, ws: Connection, accepted_at: float
    ) -> None:
        self.server = server
        self.hub = server.hub
        self.config = server.config
        self.sock = sock
        self.ws = ws
        self.sub = self.hub.attach(sock.send, self._on_backlog, self._on_kill)
        self.session = FeedSession(
            self.config,
            accepted_at,
            epoch=self.hub.epoch,
            channels=self.sub.channels,
            heartbeat_id=server.heartbeat_id,
        )
        self.scope = trio.CancelScope()
        self.nursery: trio.Nursery | None = None
        self._writer: trio.Event | None = None
        """Set when the running writer task (``_drain``) exits; ``None``: no writer."""
        self._text: list[str] = []
        self._size = 0
        self._orders_in_flight = 0
        """Characters (text) or bytes (binary) of the client message being assembled."""

    # -- carrying out the session's actions ---------------------------------------------

    def tell(self, now: float, event: Event) -> None:
        """Report an event that cannot lead to an authentication (from any task)."""
        self._carry_out_now(self.session.handle(now, event))

    def _carry_out_now(self, actions: list[Action]) -> None:
        for action in actions:
            self._do(action)

    async def _carry_out(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Verify):
                if not self.sub.closed:
                    await self._authenticate(action.credential)
            else:
                self._do(action)

    def _do(self, action: Action) -> None:
        sub = self.sub
        if isinstance(action, Close):
            self._close(action)
        elif sub.closed:
            # The hub dropped the subscriber, or the peer went, while this list was
            # being carried out: nothing else goes out (and it must not rejoin a channel).
            return
        elif isinstance(action, Send):
            sub.deliver(action.data, action.key)
        elif isinstance(action, Join):
            resume = action.resume
            replayed = self.hub.subscribe(
                sub,
                action.channels,
                since_seq=None if resume is None else resume.seq,
                epoch=None if resume is None else resume.epoch,
            )
            if resume is not None and replayed is not None:
                # The replay is complete: from here on the stream is live.
                self.tell(trio.current_time(), Replayed(replayed, self.hub.seq, action.request_id))
        elif isinstance(action, Leave):
            self.hub.unsubscribe(sub, action.channels)
        elif isinstance(action, Execute):
            self._execute(action)
        else:
            raise AssertionError(f"{action!r} needs the connection's own task")

    def _execute(self, action: Execute) -> None:
        """Run an order in its own task (the read loop goes on), at most
        ``max_orders_in_flight`` at a time per connection; over it, the order is
        answered at once with ``rate_limited``."""
        order = action.order
        principal = self.session.principal
        desk = self.server.orders
        if desk is None or principal is None or self.nursery is None:
            self._answer(order_refusal(order, "engine_unavailable", "orders are not taken here"))
            return
        if self._orders_in_flight >= self.config.max_orders_in_flight:
            self._answer(
                order_refusal(
                    order,
                    "rate_limited",
                    f"at most {self.config.max_orders_in_flight} orders in flight per connection",
                )
            )
            return
        self._orders_in_flight += 1
        self.nursery.start_soon(self._run_order, desk, principal, order)

    async def _run_order(self, desk: OrderHandler, principal: Principal, order: Order) -> None:
        try:
            result = await desk.answer(principal, order.message, order.request_id)
        finally:
            self._orders_in_flight -= 1
        self._answer(result)

    def _answer(self, result: dict[str, Any]) -> None:
        if not self.sub.closed:
            self.sub.deliver(control(result))

    async def _authenticate(self, credential: str) -> None:
        """Ask the server's authenticator and report the verdict to the session.

        Awaited in this connection's task, so a credential looked up in a database (in
        a thread) holds up this connection only, never the event loop.
        """
        event: Event
        try:
            found = self.server.authenticate(credential)
            principal = await found if isinstance(found, Awaitable) else found
        except ConnectRateLimited:
            event = ConnectRefused()
        else:
            event = Verdict(principal, self.hub.seq)  # the seq as of the welcome
        self.tell(trio.current_time(), event)

    def _close(self, action: Close) -> None:
        """Send the error (if any) and wsproto's close frame, stop delivering; never blocks.

        The read loop keeps going until the client answers with its close frame or
        ``close_timeout`` passes, so the close is clean when the peer cooperates and
        bounded when it does not.
        """
        if self.scope.cancel_called:
            return  # torn down (the peer is gone): there is no one to tell
        sub = self.sub
        if action.error is not None:
            sub.deliver_final(action.error)
        # OPEN, or REMOTE_CLOSING when this answers the client's close; any other state
        # means wsproto's handshake already ended and there is no frame left to send.
        if self.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
            sub.deliver_final(self.ws.send(CloseConnection(action.code, action.reason)))
        sub.kill(action.code, action.reason)  # detach from the hub: nothing after close
        self.scope.deadline = min(
            self.scope.deadline, trio.current_time() + self.config.close_timeout
        )
        closes = self.server.stats_closes
        closes[action.code] = closes.get(action.code, 0) + 1

    # -- outbound: everything goes through the subscriber so order is one queue --------

    def _on_backlog(self) -> None:
        if self._writer is None and self.nursery is not None:
            self._writer = trio.Event()
            self.nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        """The writer: empties the outbox as the socket accepts data, then exits."""
        outbox = self.sub.outbox
        try:
            while (chunk := outbox.peek()) is not None:
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
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.set()

    def _on_kill(self, code: int, reason: str) -> None:
        if code == CloseReason.ABNORMAL_CLOSURE:
            self.abort()  # the socket failed: no close handshake is possible
        else:
            self.tell(trio.current_time(), Dropped(code, reason))

    def abort(self) -> None:
        """Drop the connection now, without a close handshake (the peer is gone)."""
        self.session.handle(trio.current_time(), Lost())
        self.sub.kill(CloseReason.ABNORMAL_CLOSURE, "aborted")
        self.scope.cancel()

    async def _flush(self) -> None:
        """Give the writer ``close_timeout`` to get the last frames (our close) out."""
        with trio.move_on_after(self.config.close_timeout):
            # A non-empty outbox always has a writer: it is started with the backlog.
            while self.sub.outbox and self._writer is not None:
                await self._writer.wait()

    # -- the connection task -------------------------------------------------------------

    async def run(self, credential: str | None) -> None:
        """Read and answer until the conversation is over (the close handshake is done
        or the peer went away); the scope's close deadline bounds it from outside."""
        self.server.connections.add(self)
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    over = await self._until_authenticated(credential)
                    # The loop is here rather than in a helper, and runs without a
                    # cancel scope of its own: a connection's task keeps its frames
                    # and scopes alive while it waits, times thousands of connections.
                    while not over:
                        over = await self._receive(await _recv(self.sock))
                    await self._flush()
                    nursery.cancel_scope.cancel()
        finally:
            self.server.leave(self)
            self.sub.kill(CloseReason.ABNORMAL_CLOSURE, "connection ended")  # idempotent
            self.sub.release()
            self.nursery = None

    async def _until_authenticated(self, credential: str | None) -> bool:
        """The conversation while the session has a deadline (the auth timeout); True
        when the conversation is already over."""
        first = True
        while (deadline := self.session.next_deadline()) is not None:
            with trio.move_on_at(deadline) as timer:
                if first:
                    first = False
                    over = await self._start(credential)
                else:
                    over = await self._receive(await _recv(self.sock))
            if timer.cancelled_caught:
                self.tell(trio.current_time(), Timer())
            elif over:
                return True
        return False

    async def _start(self, credential: str | None) -> bool:
        """Verify the upgrade request's credential (if any), then handle the frames that
        came with the request; True when the conversation is already over."""
        if credential is not None:
            now = trio.current_time()
            await self._carry_out(self.session.handle(now, HeaderCredential(credential)))
        return await self._handle_events()

    async def _receive(self, data: bytes) -> bool:
        """Process bytes from the client (``b""`` is EOF); True when the connection is over."""
        if self.ws.state is ConnectionState.CLOSED:
            return True
        self.ws.receive_data(data or None)
        return await self._handle_events()

    async def _handle_events(self) -> bool:
        ws, session = self.ws, self.session
        for event in ws.events():
            if isinstance(event, CloseConnection):
                now = trio.current_time()
                if ws.state is ConnectionState.OPEN:
                    # No close frame arrived: wsproto reports bytes that are not valid
                    # WebSocket (1002) or not UTF-8 (1007) as a close event.
                    self.tell(now, InvalidData(event.code, event.reason))
                elif ws.state is ConnectionState.REMOTE_CLOSING:
                    self.tell(now, PeerClosed())
                else:
                    session.handle(now, Lost())  # EOF, or the answer to our close
                return True
            if ws.state is not ConnectionState.OPEN:
                continue  # after our close frame only the peer's close matters
            if isinstance(event, Ping):
                self.sub.deliver(ws.send(event.response()))  # wsproto's own pong
            elif isinstance(event, (TextMessage, BytesMessage)):
                self._size += len(event.data)
                if isinstance(event, TextMessage):
                    self._text.append(event.data)
                if self._size > self.config.max_message_bytes:
                    self._text, self._size = [], 0
                    self.tell(trio.current_time(), TooBig())
                    continue
                if event.message_finished:
                    text, self._text, self._size = "".join(self._text), [], 0
                    now = trio.current_time()
                    if isinstance(event, BytesMessage):
                        self.tell(now, Binary())
                    else:
                        await self._carry_out(session.handle(now, _parse(text)))
        return False


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

    def __init__(
        self,
        hub: Hub,
        authenticate: Authenticate,
        config: FeedConfig,
        orders: OrderHandler | None = None,
        *,
        readiness: Callable[[], str | None] | None = None,
    ) -> None:
        self.hub = hub
        self.authenticate = authenticate
        self.config = config
        self.orders = orders
        """Who runs orders (``crashd.api.feed.orders.OrderDesk``); ``None``: none taken."""
        self.readiness = readiness
        """Why the feed is not ready now (``None``: it is), for a server whose hub is fed
        from elsewhere (an edge: ``EdgeHub.stale``). Set: ``GET /readyz`` on the feed
        port answers it (200 or 503), and while not ready new upgrades get 503."""
        self.connections: set[FeedConnection] = set()
        self.heartbeat_id = 0
        self.stats_closes: dict[int, int] = {}
        self.stats_failures = 0
        self._emptied = trio.Event()
        """Set when the last connection leaves (replaced once it is stale)."""

    def leave(self, conn: FeedConnection) -> None:
        """A connection's task is ending."""
        self.connections.discard(conn)
        if not self.connections:
            self._emptied.set()

    async def _wait_no_connections(self) -> None:
        while self.connections:
            if self._emptied.is_set():  # from an earlier moment without connections
                self._emptied = trio.Event()
            await self._emptied.wait()

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
            beat = Heartbeat(
                self.heartbeat_id, control({"type": "heartbeat", "id": self.heartbeat_id})
            )
            for conn in list(self.connections):
                conn.tell(now, beat)

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
                nursery.start_soon(self._serve_socket, sock, trio.current_time())

    async def _serve_socket(self, sock: socket.socket, accepted_at: float) -> None:
        """One connection's task, from the upgrade request to the closed socket."""
        # This frame waits as long as the connection lives: it holds nothing of the
        # handshake (the upgrade's h11 state is gone once it returns).
        ws: Connection | None = None
        credential: str | None = None
        try:
            with trio.move_on_after(self.config.handshake_timeout):
                ws, credential = await _Upgrade(self, sock).run()
            if ws is not None:
                await FeedConnection(self, sock, ws, accepted_at).run(credential)
        except _Closed:
            pass
        except Exception:
            # A bug met while serving one client must not take the feed down for all
            # of them (Trio would propagate it to the listener's nursery): log it, and
            # this connection alone ends.
            log.exception("feed connection failed")
            self.stats_failures += 1
        finally:
            trio.lowlevel.notify_closing(sock)
            sock.close()

    def statistics(self) -> FeedStatistics:
        conns = list(self.connections)
        return FeedStatistics(
            connections=len(conns),
            authenticated=sum(1 for c in conns if c.session.principal is not None),
            backlogged=sum(1 for c in conns if c.sub.outbox),
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
        now = trio.current_time()
        closed = 0
        for conn in list(self.connections):
            session = conn.session
            principal = session.principal
            if session.state is State.AUTHENTICATED and principal is not None and which(principal):
                conn.tell(now, Revoked(reason))
                closed += 1
        return closed

    def disconnect_key(self, key_id: str) -> int:
        """Close (4001) the connections opened with API key ``key_id`` or a feed token
        it issued (a revoked key): the engine's and every edge's one rule."""
        return self.disconnect(lambda p: p.key_id == key_id, KEY_REVOKED_REASON)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on ``host:port`` until cancelled; ``task_status.started(bound_port)``."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.config.reuse_port:
                listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            listener.bind((host, port))
            listener.listen(self.config.backlog)
            listener.setblocking(False)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.fan_out)
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

    async def fan_out(self) -> None:
        """The hub's one delivery task: from now on ``publish`` queues, and this flushes
        the queue a slice of subscribers at a time, with a checkpoint between slices so
        requests and the engine's own tick are never held up by a whole broadcast."""
        hub = self.hub
        wake = trio.Event()

        def pending() -> None:
            wake.set()

        hub.on_pending = pending
        try:
            while True:
                await wake.wait()
                wake = trio.Event()
                while hub.flush(self.config.fanout_slice):
                    await trio.lowlevel.checkpoint()
        finally:
            # Back to delivering at once; what is queued goes out now (shutdown's
            # going-away frames must come after it).
            hub.on_pending = None
            hub.flush_all()

    async def shutdown(self) -> None:
        """Close every connection with 1001 and give them ``close_timeout`` to finish."""
        now = trio.current_time()
        for conn in list(self.connections):
            conn.tell(now, ShuttingDown())
        with trio.move_on_after(self.config.close_timeout):
            await self._wait_no_connections()


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

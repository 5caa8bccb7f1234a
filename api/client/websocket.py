"""A minimal WebSocket client connection: wsproto over a Trio stream, no background task.

Why not trio-websocket (which the server tests use)? Its handshake does not notice a
peer that closes the TCP connection before answering: the client then waits for the
whole connect timeout, so a client reconnecting into a flapping network or a server
that is restarting would sit out 10 s per attempt instead of backing off. Here every
read is the caller's own ``receive_some``: end-of-stream at any point is seen at once.

It does only what the feed needs: text messages, answering pings and the closing
handshake. One reader (the caller of :meth:`receive`); sends may come from any task.
"""

from __future__ import annotations

import ssl
from collections import deque
from collections.abc import Sequence
from urllib.parse import urlsplit

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Event,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError

MAX_MESSAGE_BYTES = 1 << 20
"""A server message larger than this is a protocol error (feed messages are small)."""


class ConnectionLost(Exception):
    """The connection ended: a close frame (``code``, ``reason``) or a dead socket (1006)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"{code} {reason}".strip())
        self.code = code
        self.reason = reason


class HandshakeRejected(Exception):
    """The server answered the upgrade with an HTTP status instead of switching protocols."""

    def __init__(self, status_code: int) -> None:
        super().__init__(f"WebSocket upgrade refused with HTTP {status_code}")
        self.status_code = status_code


class WebSocket:
    def __init__(self, stream: trio.abc.Stream, ws: WSConnection, pending: deque[Event]) -> None:
        self._stream = stream
        self._ws = ws
        self._events = pending
        self._send_lock = trio.Lock()
        self._parts: list[str] = []
        self._size = 0

    @classmethod
    async def connect(cls, url: str, headers: Sequence[tuple[str, str]] = ()) -> WebSocket:
        """Open ``ws://`` or ``wss://`` ``url`` and complete the upgrade. The caller
        bounds the time (``trio.fail_after``): this waits as long as it is allowed."""
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
        secure = parts.scheme == "wss"
        port = parts.port or (443 if secure else 80)
        stream: trio.abc.Stream
        if secure:
            stream = await trio.open_ssl_over_tcp_stream(
                parts.hostname, port, ssl_context=ssl.create_default_context()
            )
        else:
            stream = await trio.open_tcp_stream(parts.hostname, port)
        try:
            ws = WSConnection(ConnectionType.CLIENT)
            host = parts.netloc.rsplit("@", 1)[-1]
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            await stream.send_all(
                ws.send(
                    Request(
                        host=host,
                        target=target,
                        extra_headers=[
                            (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers
                        ],
                    )
                )
            )
            pending: deque[Event] = deque()
            status: int | None = None
            while True:
                data = await stream.receive_some(65536)
                if not data:
                    raise ConnectionLost(1006, "connection closed during the handshake")
                ws.receive_data(bytes(data))
                for event in ws.events():
                    if isinstance(event, AcceptConnection):
                        status = 101
                    elif isinstance(event, RejectConnection):
                        raise HandshakeRejected(event.status_code)
                    elif isinstance(event, RejectData):
                        continue
                    else:
                        pending.append(event)  # frames that came with the 101
                if status == 101:
                    return cls(stream, ws, pending)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise

    async def receive(self) -> str:
        """The next text message. Raises :class:`ConnectionLost` when the connection ends."""
        while True:
            while self._events:
                event = self._events.popleft()
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    self._size += len(event.data)
                    if self._size > MAX_MESSAGE_BYTES:
                        await self.aclose(1009, "message too big")
                        raise ConnectionLost(1009, "server message too big")
                    if event.message_finished:
                        text, self._parts, self._size = "".join(self._parts), [], 0
                        return text
                elif isinstance(event, Ping):
                    await self._send_bytes(self._ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    if self._ws.state is ConnectionState.REMOTE_CLOSING:
                        try:
                            await self._send_bytes(self._ws.send(event.response()))
                        except (trio.BrokenResourceError, trio.ClosedResourceError):
                            pass
                    await trio.aclose_forcefully(self._stream)
                    raise ConnectionLost(event.code, event.reason or "")
                # Binary messages and pongs mean nothing to the feed's client.
            try:
                data = await self._stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            # b"" is end-of-stream: wsproto turns it into a 1006 close event.
            self._ws.receive_data(bytes(data) if data else None)
            self._events.extend(self._ws.events())

    async def send(self, text: str) -> None:
        try:
            data = self._ws.send(TextMessage(data=text))
        except LocalProtocolError:
            raise ConnectionLost(1006, "connection is closing") from None
        await self._send_bytes(data)

    async def _send_bytes(self, data: bytes) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ConnectionLost(1006, f"send failed: {exc}") from None

    async def send_close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake from any task; the reader then gets the server's
        answer as :class:`ConnectionLost` with the code."""
        if self._ws.state is ConnectionState.OPEN:
            try:
                await self._send_bytes(self._ws.send(CloseConnection(code=code, reason=reason)))
            except (ConnectionLost, LocalProtocolError):
                pass

    def _state(self) -> ConnectionState:
        return self._ws.state

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and wait briefly for the server's; then close the socket.
        The caller bounds the wait (``trio.move_on_after``); the socket is closed anyway.
        Only for the reading task (or when nothing reads): it reads the answer itself."""
        try:
            if self._ws.state is ConnectionState.OPEN:
                await self._send_bytes(self._ws.send(CloseConnection(code=code, reason=reason)))
                # (read through a call: mypy would keep the narrowed OPEN state)
                while self._state() is not ConnectionState.CLOSED:
                    data = await self._stream.receive_some(65536)
                    self._ws.receive_data(bytes(data) if data else None)
                    for _ in self._ws.events():
                        pass
                    if not data:
                        break
        except (
            ConnectionLost,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
            LocalProtocolError,
        ):
            pass
        finally:
            await trio.aclose_forcefully(self._stream)

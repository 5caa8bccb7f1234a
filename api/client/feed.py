"""``FeedClient``: the live feed (docs/feed.md) from Python, on Trio and wsproto.

What it does for you, so an integration is a loop over ``messages()``:

* authenticates with an API key (``Authorization`` header, for servers) or a feed
  token (first message, as a browser would; a token *provider* fetches a fresh one
  for every connection, since tokens live 5 minutes);
* answers every ``heartbeat`` with its ``ack`` as soon as it is read, and treats a
  connection that has been silent for two heartbeat intervals as dead;
* reconnects after any non-fatal loss with exponential backoff and full jitter
  (:class:`~crashd.api.client.backoff.Backoff`), and re-subscribes with ``resume`` from the
  last ``seq`` and ``epoch`` it applied, so the server replays what was missed;
* delivers stream messages in ``seq`` order, each once (:class:`StreamCursor` drops
  any ``seq`` already applied), including the snapshots that stand in for a gap
  (``resume_gap``, ``epoch_changed``, ``resync``).

Structure (Trio): ``await nursery.start(client.run)`` in a nursery you own, or
``async with open_feed(...) as client``. ``run`` returns only by cancellation or
``aclose()``; it raises :class:`FeedError` on a fatal refusal (bad credential, missing
scope, repeated protocol errors: reconnecting cannot fix those) and
:class:`FeedUnavailable` after ``max_attempts`` consecutive failed connections.

Backpressure: delivered messages wait in a bounded buffer (``buffer``). A consumer
that stops reading stops the client reading the socket, and the server then handles
it as any slow subscriber (ticks conflated, a ``resync`` snapshot, or a 4009/4008
close that this client answers by reconnecting and resuming). Memory stays bounded.
"""

from __future__ import annotations

import json
import logging
import random as _random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio

from crashd.api.security.signing import sign_order

from .backoff import Backoff, RandomFn
from .messages import (
    ChannelMessage,
    FeedError,
    FeedUnavailable,
    Snapshot,
    StreamMessage,
    parse_stream_message,
)
from .stream import StreamCursor
from .websocket import ConnectionLost, HandshakeRejected, WebSocket

log = logging.getLogger(__name__)

TokenProvider = Callable[[], Awaitable[str]]
"""An async function returning a fresh feed token (e.g. ``RestClient.feed_token_string``)."""

FATAL_CLOSE_CODES: dict[int, str] = {
    1002: "protocol_error",
    1007: "protocol_error",
    1009: "message_too_big",
    4000: "invalid_message",
    4001: "unauthorized",
    4003: "forbidden",
    4029: "rate_limited",
}
"""Close codes that mean "this client is refused": reconnecting would be refused again
(or would repeat the client's own bug), so ``run`` raises :class:`FeedError` instead.
Every other loss (1001 restart, 1006 network, 4008 heartbeat, 4009 slow) reconnects."""

_RETRY_HANDSHAKE_STATUS = frozenset({429, 500, 502, 503, 504})
"""HTTP answers to the upgrade that are worth retrying (503: the server is full)."""


class _Dead(Exception):
    """The connection went silent for longer than the heartbeat allows."""


@dataclass(frozen=True, slots=True)
class ClientStatistics:
    connects: int
    """Connections that reached ``welcome`` (1 + successful reconnects)."""
    connected: bool
    delivered: int
    """Stream messages handed to ``messages()``."""
    duplicates: int
    """Channel messages dropped because their ``seq`` was already applied."""
    heartbeats_acked: int
    resumes: int
    """Reconnects whose replay completed (the server said ``resumed``)."""
    resync_snapshots: int
    """Snapshots that replaced a gap (``resume_gap``, ``epoch_changed``, ``resync``)."""
    last_seq: int | None
    epoch: str | None


@dataclass(frozen=True)
class OrderResult:
    """An order's answer: the REST answer's status and body (``replayed``: from the
    stored reply of an earlier request with the same key)."""

    key: str
    status: int
    replayed: bool
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(slots=True)
class _Pending:
    done: trio.Event
    error: FeedError | None = None
    result: dict[str, Any] | None = None


class FeedClient:
    """A self-healing subscription to the feed. See the module docstring and docs/sdk.md."""

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        token: str | TokenProvider | None = None,
        channels: Iterable[str] = (),
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        random: RandomFn = _random.random,
        buffer: int = 1024,
        connect_timeout: float = 10.0,
        request_timeout: float = 10.0,
        signing_secret: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if (api_key is None) == (token is None):
            raise ValueError("give exactly one of api_key (header) or token (first message)")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None: retry forever)")
        self.url = url
        self._api_key = api_key
        self._signing_secret = signing_secret
        self._clock = clock
        self._token = token
        self.backoff = backoff if backoff is not None else Backoff()
        self.max_attempts = max_attempts
        self._random = random
        self.connect_timeout = connect_timeout
        self.request_timeout = request_timeout
        self._send, self._receive = trio.open_memory_channel[StreamMessage](buffer)
        self._channels: dict[str, None] = dict.fromkeys(channels)
        """The channels the user wants, in the order asked."""
        self._covered: set[str] = set()
        """Channels whose state the cursor covers (a snapshot or a completed resume was
        applied for them): on reconnect these resume, the others subscribe afresh."""
        self._cursor = StreamCursor()
        self._ws: WebSocket | None = None
        self._connected = trio.Event()
        """Set while a connection is up (replaced when it goes)."""
        self._conn_epoch = ""
        self._pending: dict[int, _Pending] = {}
        self._resuming: dict[int, list[str]] = {}
        self._next_id = 0
        self._last_error: dict[str, Any] | None = None
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._ran = False
        self._closing = False
        self._connects = 0
        self._delivered = 0
        self._acked = 0
        self._resumes = 0
        self._resyncs = 0

    # -- the user's side -------------------------------------------------------------

    def messages(self) -> trio.MemoryReceiveChannel[StreamMessage]:
        """The stream, in ``seq`` order without duplicates: ``async for msg in client.messages()``.

        Ends when the client is closed. One consumer (clone it for more, each clone then
        gets a share of the messages, not a copy).
        """
        return self._receive

    @property
    def channels(self) -> tuple[str, ...]:
        return tuple(self._channels)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            connects=self._connects,
            connected=self.connected,
            delivered=self._delivered,
            duplicates=self._cursor.duplicates,
            heartbeats_acked=self._acked,
            resumes=self._resumes,
            resync_snapshots=self._resyncs,
            last_seq=self._cursor.last_seq,
            epoch=self._cursor.epoch,
        )

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Add channels; each starts with a ``subscribe`` snapshot in ``messages()``.

        While connected, waits for the server's answer and raises :class:`FeedError` if it
        refuses (``unknown_channel``, ``forbidden_channel`` …; the channels are then not
        kept). While disconnected, the channels are subscribed on the next connection.
        """
        new = [c for c in dict.fromkeys(channels) if c not in self._channels]
        if not new:
            return
        self._channels.update(dict.fromkeys(new))
        ws = self._ws
        if ws is None:
            return
        try:
            await self._request(ws, {"type": "subscribe", "channels": new})
        except FeedError:
            for channel in new:
                self._channels.pop(channel, None)
            raise

    async def order(self, kind: str, *, key: str | None = None, **members: Any) -> OrderResult:
        """Send an order (``"bet"``, ``"cashout"`` or ``"auto_cashout"``, with its REST
        body's members, docs/feed.md, Orders) and return its answer. ``key`` is its
        idempotency key (default: a fresh UUID); if the connection drops before the
        answer, the order is sent again with the same key on the next connection, so it
        acts once. On an API-key connection each attempt is signed (``signing_secret``)."""
        if kind not in ("bet", "cashout", "auto_cashout"):
            raise ValueError(f"unknown order type {kind!r}")
        key = key or uuid.uuid4().hex
        order: dict[str, Any] = {"type": kind, "key": key, **members}
        while True:
            ws = self._ws
            if ws is None:
                await self._connected.wait()
                continue
            message = order
            if self._api_key is not None:
                if self._signing_secret is None:
                    raise ValueError("orders on an API-key connection need signing_secret")
                message = sign_order(self._signing_secret, order, int(self._clock()))
            request_id = self._new_id()
            pending = self._pending[request_id] = _Pending(trio.Event())
            try:
                await ws.send(json.dumps({**message, "id": request_id}))
                with trio.fail_after(self.request_timeout):
                    await pending.done.wait()
            except ConnectionLost:
                continue
            finally:
                self._pending.pop(request_id, None)
            if pending.result is None:
                continue  # the connection went before the answer: again, same key
            r = pending.result
            return OrderResult(key, int(r["status"]), bool(r.get("replayed")), r["body"])

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        """Remove channels; their messages stop (any already in flight are dropped)."""
        gone = [c for c in dict.fromkeys(channels) if c in self._channels]
        for channel in gone:
            self._channels.pop(channel, None)
            self._covered.discard(channel)
        ws = self._ws
        if gone and ws is not None:
            await self._request(ws, {"type": "unsubscribe", "channels": gone})

    async def aclose(self) -> None:
        """Close the connection with a normal close (1000) and stop ``run``; idempotent."""
        self._closing = True
        ws = self._ws
        if ws is not None and self._scope is not None:
            with trio.move_on_after(2.0) as scope:
                scope.shield = True
                # The reader sees the server's answering close and ``run`` returns.
                await ws.send_close(1000, "client closing")
                await self._stopped.wait()
        if self._scope is not None:
            self._scope.cancel()
        self._send.close()

    # -- the connection loop ---------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, stay connected, deliver. ``task_status.started()`` once the first
        connection is authenticated and its subscriptions are sent."""
        if self._ran:
            raise RuntimeError("FeedClient.run can run once (make a new client to connect again)")
        self._ran = True
        failures = 0
        started = False

        def ready() -> None:
            nonlocal started, failures
            failures = 0  # a connection that got this far resets the backoff
            if not started:
                started = True
                task_status.started()

        try:
            with trio.CancelScope() as self._scope:
                while not self._closing:
                    try:
                        await self._session(ready)
                    except ConnectionLost as exc:
                        self._raise_if_fatal(exc.code, exc.reason)
                        log.info(
                            "feed connection closed (%s %s): reconnecting", exc.code, exc.reason
                        )
                    except HandshakeRejected as exc:
                        if exc.status_code not in _RETRY_HANDSHAKE_STATUS:
                            raise FeedError("handshake_rejected", str(exc)) from None
                        log.info("feed handshake refused with %s: retrying", exc.status_code)
                    except (OSError, trio.BrokenResourceError, trio.TooSlowError, _Dead) as exc:
                        log.info(
                            "feed connection lost (%s): reconnecting", exc or type(exc).__name__
                        )
                    finally:
                        self._disconnected()
                    if self._closing:
                        break
                    if self.max_attempts is not None and failures >= self.max_attempts - 1:
                        raise FeedUnavailable(
                            f"no feed connection after {self.max_attempts} attempts to {self.url}"
                        )
                    await trio.sleep(self.backoff.delay(failures, self._random))
                    failures += 1
        finally:
            self._scope = None
            self._stopped.set()
            self._send.close()

    def _raise_if_fatal(self, code: int | None, reason: str | None) -> None:
        if code is None or code not in FATAL_CLOSE_CODES:
            return
        err = self._last_error or {}
        raise FeedError(
            str(err.get("code") or FATAL_CLOSE_CODES[code]),
            str(err.get("message") or reason or ""),
            close_code=code,
        )

    async def _credential_token(self) -> str:
        token = self._token
        assert token is not None
        return token if isinstance(token, str) else await token()

    async def _session(self, ready: Callable[[], None]) -> None:
        headers = [] if self._api_key is None else [("Authorization", f"Bearer {self._api_key}")]
        first_message = None if self._token is None else await self._credential_token()
        self._last_error = None
        with trio.fail_after(self.connect_timeout):
            ws = await WebSocket.connect(self.url, headers)
        try:
            if first_message is not None:
                await ws.send(json.dumps({"type": "auth", "token": first_message}))
            welcome = await self._welcome(ws)
            self._conn_epoch = str(welcome["epoch"])
            interval = float(welcome.get("heartbeat_interval_ms", 15_000)) / 1000
            # The server beats every interval: two missed beats (plus slack for a
            # loaded machine) and the link is dead even if TCP has not noticed.
            idle_limit = 2 * interval + 1.0
            self._ws = ws
            self._connects += 1
            self._connected.set()
            await self._subscribe_all(ws)
            ready()
            await self._read_loop(ws, idle_limit)
        finally:
            with trio.move_on_after(1.0) as cleanup:
                cleanup.shield = True
                await ws.aclose(1000, "client closing")

    async def _welcome(self, ws: WebSocket) -> dict[str, Any]:
        with trio.fail_after(self.connect_timeout):
            while True:
                obj = json.loads(await ws.receive())
                if obj.get("type") == "welcome":
                    return obj  # type: ignore[no-any-return]
                if obj.get("type") == "error":
                    self._last_error = obj  # the close that follows says whether it is fatal

    async def _subscribe_all(self, ws: WebSocket) -> None:
        """Subscribe this new connection: resume the covered channels, snapshot the rest."""
        resume = [c for c in self._channels if c in self._covered]
        fresh = [c for c in self._channels if c not in self._covered]
        point = self._cursor.resume_point
        if resume and point is not None:
            request_id = self._new_id()
            self._resuming[request_id] = resume
            await ws.send(
                json.dumps(
                    {
                        "type": "subscribe",
                        "channels": resume,
                        "id": request_id,
                        "resume": {"seq": point.seq, "epoch": point.epoch},
                    }
                )
            )
        else:
            fresh = resume + fresh
        if fresh:
            await ws.send(
                json.dumps({"type": "subscribe", "channels": fresh, "id": self._new_id()})
            )

    async def _read_loop(self, ws: WebSocket, idle_limit: float) -> None:
        while True:
            with trio.move_on_after(idle_limit) as idle:
                text = await ws.receive()
            if idle.cancelled_caught:
                raise _Dead(f"nothing received for {idle_limit:.1f} s")
            obj = json.loads(text)
            kind = obj.get("type")
            if kind == "heartbeat":
                # Acked the moment it is read, before anything else can block.
                await ws.send(json.dumps({"type": "ack", "id": obj["id"]}))
                self._acked += 1
                continue
            stream = parse_stream_message(obj)
            if stream is not None:
                await self._deliver(stream)
            else:
                self._on_control(obj)

    async def _deliver(self, message: StreamMessage) -> None:
        if isinstance(message, ChannelMessage) and message.channel not in self._channels:
            return  # unsubscribed while it was in flight
        if not self._cursor.accept(message, self._conn_epoch):
            return
        if isinstance(message, Snapshot):
            self._covered.update(c for c in message.channels if c in self._channels)
            if message.is_resync:
                self._resyncs += 1
        self._delivered += 1
        try:
            await self._send.send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            # Nobody will read any more (the consumer closed its end, or aclose ran):
            # that is a close, not a network failure to reconnect from.
            self._closing = True
            raise ConnectionLost(1000, "the consumer closed messages()") from None

    def _on_control(self, obj: dict[str, Any]) -> None:
        kind = obj.get("type")
        request_id = obj.get("id")
        if kind == "resumed" and isinstance(request_id, int):
            self._covered.update(
                c for c in self._resuming.pop(request_id, ()) if c in self._channels
            )
            self._resumes += 1
        if kind == "error":
            self._last_error = obj
            log.warning("feed error %s: %s", obj.get("code"), obj.get("message"))
        if isinstance(request_id, int) and kind in (
            "subscribed",
            "unsubscribed",
            "error",
            "result",
        ):
            pending = self._pending.get(request_id)
            if pending is not None:
                if kind == "error":
                    pending.error = FeedError(str(obj.get("code")), str(obj.get("message", "")))
                if kind == "result":
                    pending.result = obj
                pending.done.set()

    async def _request(self, ws: WebSocket, body: dict[str, Any]) -> None:
        request_id = self._new_id()
        pending = self._pending[request_id] = _Pending(trio.Event())
        try:
            await ws.send(json.dumps({**body, "id": request_id}))
            with trio.fail_after(self.request_timeout):
                await pending.done.wait()
        except ConnectionLost:
            return  # the next connection subscribes from self._channels
        finally:
            self._pending.pop(request_id, None)
        if pending.error is not None:
            raise pending.error

    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _disconnected(self) -> None:
        self._ws = None
        self._connected = trio.Event()
        self._resuming.clear()
        # Requests waiting on this connection are answered by the next one's subscribe.
        for pending in self._pending.values():
            pending.done.set()


@asynccontextmanager
async def open_feed(url: str, **options: Any) -> AsyncIterator[FeedClient]:
    """``async with open_feed(url, api_key=…, channels=[…]) as client:`` — a
    :class:`FeedClient` running in its own nursery, connected on entry, closed on exit.

    If the client gives up (:class:`FeedError`, :class:`FeedUnavailable`), the block is
    cancelled and that exception is raised as itself, not wrapped in an exception group.
    """
    client = FeedClient(url, **options)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(client.run)
            try:
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1 and isinstance(
            group.exceptions[0], (FeedError, FeedUnavailable)
        ):
            raise group.exceptions[0] from None
        raise

"""The feed against a real listener on 127.0.0.1, with real WebSocket clients.

Three independent client implementations talk to it: trio-websocket, the
``websockets`` library (asyncio, run in a thread) and ``RawClient`` below (wsproto
over a bare socket), which can do what polite clients cannot: stop reading, vanish
without a close frame, send garbage.
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import websockets
from trio_websocket import ConnectionClosed, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from crashd.api.feed import FEED_PATH, CloseCode, FeedConfig, FeedServer, Principal, serve_feed
from crashd.api.feed.hub import Hub
from crashd.api.rest.routes.feed import feed_authenticator
from crashd.api.security import feedtokens
from crashd.api.security.keys import ApiKey, Authenticator, KeyStore
from crashd.api.security.ratelimit import Policy
from crashd.api.wire import LIVE_MULTIPLIER, ROUND_UPDATES

GAME = frozenset({"read:game_state"})
TOKENS = {
    "key-p1": Principal("key_p1", "p1", "sandbox", GAME | {"read:balance"}),
    "key-p2": Principal("key_p2", "p2", "sandbox", GAME | {"read:balance"}),
    "key-noscope": Principal("key_p3", "p3", "sandbox", frozenset({"write:bet"})),
}


def authenticate(credential: str) -> Principal | None:
    """A small real credential store: the REST side supplies the production one."""
    return TOKENS.get(credential)


def state(channel: str) -> dict[str, Any]:
    return {"state_of": channel}


@asynccontextmanager
async def feed(
    config: FeedConfig = FeedConfig(), **hub_args: Any
) -> AsyncIterator[tuple[Hub, int]]:
    hub = Hub(snapshot=state, **hub_args)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_feed(
                hub, "127.0.0.1", 0, authenticate, config=config, task_status=task_status
            )
        )
        yield hub, port
        nursery.cancel_scope.cancel()


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"closed {code}: {reason}")
        self.code = code
        self.reason = reason


class RawClient:
    """A WebSocket client on wsproto and a bare Trio socket, for misbehaving on purpose."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.pending: list[Any] = []
        self.partial: list[str] = []
        self.closed: Closed | None = None

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        path: str = FEED_PATH,
        headers: list[tuple[bytes, bytes]] | None = None,
        rcvbuf: int | None = None,
    ) -> RawClient:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            # Before connect, so the window is small from the start.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        client = cls(sock)
        await client.raw(
            client.ws.send(Request(host="127.0.0.1", target=path, extra_headers=headers or []))
        )
        while True:
            events = await client._events()
            for i, event in enumerate(events):
                if isinstance(event, AcceptConnection):
                    client.pending = events[i + 1 :]  # frames that came with the answer
                    return client
                if isinstance(event, RejectConnection):
                    raise Closed(event.status_code, "rejected")

    async def raw(self, data: bytes) -> None:
        await self.sock.send(data)

    async def send_json(self, obj: Any) -> None:
        await self.raw(self.ws.send(Message(data=json.dumps(obj))))

    async def _events(self) -> list[Any]:
        data = await self.sock.recv(65536)
        self.ws.receive_data(data or None)
        return list(self.ws.events())

    async def recv(self) -> dict[str, Any]:
        """The next JSON message; raises ``Closed`` with the server's close code."""
        while True:
            while self.pending:
                event = self.pending.pop(0)
                if isinstance(event, TextMessage):
                    # wsproto hands over frames as their bytes arrive; join the parts.
                    self.partial.append(event.data)
                    if event.message_finished:
                        text, self.partial = "".join(self.partial), []
                        return json.loads(text)
                    continue
                if isinstance(event, CloseConnection):
                    self.closed = Closed(event.code, event.reason or "")
                    raise self.closed
            if self.closed:
                raise self.closed
            self.pending.extend(await self._events())

    async def recv_until_closed(self) -> tuple[list[dict[str, Any]], Closed]:
        got = []
        with trio.fail_after(10):
            while True:
                try:
                    got.append(await self.recv())
                except Closed as closed:
                    return got, closed

    async def auth(self, token: str = "key-p1") -> dict[str, Any]:
        await self.send_json({"type": "auth", "token": token})
        return await self.recv()

    def abort(self) -> None:
        """Vanish: no close frame, just a reset."""
        self.sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
        )
        self.sock.close()


async def subscribed_client(
    port: int, channels: list[str], **resume: Any
) -> tuple[RawClient, list[dict[str, Any]]]:
    client = await RawClient.connect(port)
    welcome = await client.auth()
    assert welcome["type"] == "welcome"
    message: dict[str, Any] = {"type": "subscribe", "channels": channels, "id": 1}
    if resume:
        message["resume"] = resume
    await client.send_json(message)
    reply = await client.recv()
    assert reply["type"] == "subscribed" and reply["id"] == 1
    return client, [welcome, reply]


def tick(i: int) -> dict[str, Any]:
    return {"type": "tick", "round_id": 1, "m": 100 + i, "t": time.time()}


# -- delivery -------------------------------------------------------------------------


async def test_many_clients_of_three_implementations_receive_identical_sequences() -> None:
    async with feed() as (hub, port):
        raws = [await subscribed_client(port, [LIVE_MULTIPLIER, ROUND_UPDATES]) for _ in range(12)]
        trio_results: list[list[dict[str, Any]]] = []
        n_messages = 150

        async def trio_ws_client(ready: trio.Event) -> None:
            async with open_websocket_url(f"ws://127.0.0.1:{port}{FEED_PATH}") as ws:
                await ws.send_message(json.dumps({"type": "auth", "token": "key-p1"}))
                await ws.send_message(
                    json.dumps({"type": "subscribe", "channels": [LIVE_MULTIPLIER, ROUND_UPDATES]})
                )
                got = [json.loads(await ws.get_message()) for _ in range(3)]
                assert [m["type"] for m in got] == ["welcome", "subscribed", "snapshot"]
                ready.set()
                trio_results.append([json.loads(await ws.get_message()) for _ in range(n_messages)])

        def websockets_client(
            port: int, ready: trio.Event, token: trio.lowlevel.TrioToken
        ) -> list[dict[str, Any]]:
            async def run() -> list[dict[str, Any]]:
                # Header auth, as a server-side partner would do it.
                async with websockets.connect(
                    f"ws://127.0.0.1:{port}{FEED_PATH}",
                    additional_headers={"Authorization": "Bearer key-p1"},
                    compression=None,
                ) as ws:
                    assert json.loads(await ws.recv())["type"] == "welcome"
                    await ws.send(
                        json.dumps(
                            {"type": "subscribe", "channels": [ROUND_UPDATES, LIVE_MULTIPLIER]}
                        )
                    )
                    assert json.loads(await ws.recv())["type"] == "subscribed"
                    assert json.loads(await ws.recv())["type"] == "snapshot"
                    trio.from_thread.run_sync(ready.set, trio_token=token)
                    return [json.loads(await ws.recv()) for _ in range(n_messages)]

            return asyncio.run(run())

        ws_results: list[list[dict[str, Any]]] = []
        async with trio.open_nursery() as nursery:
            readies = [trio.Event() for _ in range(6)]
            for ready in readies[:3]:
                nursery.start_soon(trio_ws_client, ready)

            async def in_thread(ready: trio.Event) -> None:
                ws_results.append(
                    await trio.to_thread.run_sync(
                        websockets_client, port, ready, trio.lowlevel.current_trio_token()
                    )
                )

            for ready in readies[3:]:
                nursery.start_soon(in_thread, ready)
            for ready in readies:
                await ready.wait()
            for raw, _ in raws:
                assert (await raw.recv())["type"] == "snapshot"
            for i in range(n_messages):
                hub.publish(ROUND_UPDATES if i % 10 == 0 else LIVE_MULTIPLIER, tick(i))
                if i % 20 == 0:
                    await trio.sleep(0.001)  # let readers run, so ticks are not conflated
        raw_results = [[await raw.recv() for _ in range(n_messages)] for raw, _ in raws]
        everyone = raw_results + trio_results + ws_results
        assert len(everyone) == 18
        expected = list(range(1, n_messages + 1))
        for got in everyone:
            assert [m["seq"] for m in got] == expected
            assert got == everyone[0]


async def test_the_snapshot_on_subscribe_lets_a_late_joiner_start_from_the_current_state() -> None:
    async with feed() as (hub, port):
        for i in range(5):
            hub.publish(LIVE_MULTIPLIER, tick(i))
        client, _ = await subscribed_client(port, [LIVE_MULTIPLIER])
        snap = await client.recv()
        assert snap["type"] == "snapshot" and snap["reason"] == "subscribe"
        assert snap["seq"] == 5 and snap["channels"] == {
            LIVE_MULTIPLIER: {"state_of": LIVE_MULTIPLIER}
        }
        hub.publish(LIVE_MULTIPLIER, tick(5))
        assert (await client.recv())["seq"] == 6


async def test_unsubscribe_stops_a_channel() -> None:
    async with feed() as (hub, port):
        client, _ = await subscribed_client(port, [LIVE_MULTIPLIER, ROUND_UPDATES])
        await client.recv()
        await client.send_json({"type": "unsubscribe", "channels": [LIVE_MULTIPLIER], "id": "u"})
        assert await client.recv() == {
            "type": "unsubscribed",
            "channels": [ROUND_UPDATES],
            "id": "u",
        }
        hub.publish(LIVE_MULTIPLIER, tick(0))
        hub.publish(ROUND_UPDATES, {"type": "crashed"})
        assert (await client.recv())["seq"] == 2


async def test_user_channels_are_private_to_their_partner() -> None:
    async with feed() as (hub, port):
        mine, _ = await subscribed_client(port, ["user:p1:alice"])
        assert (await mine.recv())["type"] == "snapshot"
        other = await RawClient.connect(port)
        await other.auth("key-p2")
        await other.send_json({"type": "subscribe", "channels": ["user:p1:alice"], "id": 9})
        err = await other.recv()
        assert err["type"] == "error" and err["code"] == "forbidden_channel" and err["id"] == 9
        hub.publish("user:p1:alice", {"type": "balance", "balance": 1000})
        assert (await mine.recv())["balance"] == 1000
        # p2's connection still works and saw nothing of p1's user.
        hub.publish(ROUND_UPDATES, {"type": "betting"})
        await other.send_json({"type": "subscribe", "channels": [ROUND_UPDATES]})
        assert (await other.recv())["type"] == "subscribed"
        assert (await other.recv())["type"] == "snapshot"


# -- resume ---------------------------------------------------------------------------


async def test_a_killed_client_resumes_and_gets_every_missed_message_exactly_once() -> None:
    async with feed() as (hub, port):
        client, _ = await subscribed_client(port, [LIVE_MULTIPLIER, ROUND_UPDATES])
        await client.recv()  # snapshot
        for i in range(20):
            hub.publish(ROUND_UPDATES, {"type": "event", "i": i})
        seen = [await client.recv() for _ in range(12)]  # killed mid-stream
        client.abort()
        last = seen[-1]["seq"]
        for i in range(20, 40):
            hub.publish(ROUND_UPDATES if i % 2 else LIVE_MULTIPLIER, {"type": "event", "i": i})
        await trio.sleep(0.05)
        assert hub.statistics().subscribers == 0, "the dead connection was detached"

        again, _ = await subscribed_client(
            port, [LIVE_MULTIPLIER, ROUND_UPDATES], seq=last, epoch=hub.epoch
        )
        got = [await again.recv() for _ in range(8 + 10 + 1)]
        resumed = await again.recv()
        assert resumed == {"type": "resumed", "replayed": 19, "seq": hub.seq, "id": 1}
        hub.publish(ROUND_UPDATES, {"type": "event", "i": 40})
        got.append(await again.recv())
        seqs = [m["seq"] for m in seen + got]
        assert seqs == sorted(set(seqs)), "no duplicates, in order"
        ordered = [m["i"] for m in seen + got if m["channel"] == ROUND_UPDATES]
        assert ordered == list(range(20)) + list(range(21, 40, 2)) + [40]
        assert [m["i"] for m in got if m["channel"] == LIVE_MULTIPLIER] == [38], "newest tick only"


async def test_a_resume_older_than_the_replay_buffer_gets_a_marked_snapshot() -> None:
    async with feed(replay_capacity=8) as (hub, port):
        for i in range(30):
            hub.publish(ROUND_UPDATES, {"type": "event", "i": i})
        client, _ = await subscribed_client(port, [ROUND_UPDATES], seq=3, epoch=hub.epoch)
        snap = await client.recv()
        assert snap["type"] == "snapshot" and snap["reason"] == "resume_gap" and snap["seq"] == 30
        hub.publish(ROUND_UPDATES, {"type": "event", "i": 30})
        assert (await client.recv())["seq"] == 31


# -- slow consumers and heartbeats ----------------------------------------------------


async def test_a_client_that_never_reads_does_not_delay_the_others() -> None:
    config = FeedConfig(heartbeat_interval=60, send_buffer_bytes=16 * 1024)
    async with feed(config, outbox_messages=64, outbox_bytes=64 * 1024) as (hub, port):
        stalled = await RawClient.connect(port, rcvbuf=4096)
        await stalled.auth()
        await stalled.send_json({"type": "subscribe", "channels": [LIVE_MULTIPLIER, ROUND_UPDATES]})
        readers = [
            await subscribed_client(port, [LIVE_MULTIPLIER, ROUND_UPDATES]) for _ in range(8)
        ]
        for reader, _ in readers:
            await reader.recv()
        lateness: list[float] = []
        n = 200
        pad = "x" * 4000  # big messages fill the stalled client's buffers quickly

        async def read(reader: RawClient) -> None:
            for _ in range(n):
                msg = await reader.recv()
                lateness.append(time.time() - msg["t"])

        async with trio.open_nursery() as nursery:
            for reader, _ in readers:
                nursery.start_soon(read, reader)
            for i in range(n):
                channel = ROUND_UPDATES if i % 4 == 0 else LIVE_MULTIPLIER
                hub.publish(channel, {"type": "event", "i": i, "t": time.time(), "pad": pad})
                await trio.sleep(0.005)
        assert len(lateness) == n * len(readers)
        # Loose on purpose: the figure belongs to the bench; this checks "not held up".
        assert statistics.median(lateness) < 0.25 and max(lateness) < 2.0
        stats = hub.statistics()
        assert stats.resyncs > 0 or stats.subscribers == len(readers), (
            "the stalled one was resynced or dropped"
        )


async def test_a_hopeless_reader_is_resynced_then_closed_with_4009() -> None:
    config = FeedConfig(heartbeat_interval=60, send_buffer_bytes=8 * 1024, close_timeout=5)
    async with feed(config, outbox_messages=8, outbox_bytes=1 << 20, max_resyncs=1) as (hub, port):
        stalled = await RawClient.connect(port, rcvbuf=4096)
        await stalled.auth()
        await stalled.send_json({"type": "subscribe", "channels": [ROUND_UPDATES]})
        await trio.sleep(0.05)
        pad = "x" * 2000
        with trio.fail_after(10):
            while hub.subscriber_count(ROUND_UPDATES):
                hub.publish(ROUND_UPDATES, {"type": "event", "pad": pad})
                await trio.sleep(0)  # let the writer task run; the client still reads nothing
        got, closed = await stalled.recv_until_closed()
        assert closed.code == CloseCode.SLOW_CONSUMER and "slow consumer" in closed.reason
        # It was resynced first; the resync snapshot itself may have been dropped with
        # the rest of the backlog to let the close frame out.
        assert hub.statistics().resyncs >= 1
        seqs = [m["seq"] for m in got if "seq" in m]
        assert seqs == sorted(seqs), "what did arrive is in order"
        await assert_server_still_serves(hub, port)


async def test_a_client_that_stops_acking_heartbeats_is_dropped() -> None:
    # Short timers, but with slack: a loaded CI machine must not drop the polite client.
    config = FeedConfig(heartbeat_interval=0.05, heartbeat_timeout=0.8)
    async with feed(config) as (hub, port):
        silent, _ = await subscribed_client(port, [ROUND_UPDATES])
        polite, _ = await subscribed_client(port, [ROUND_UPDATES])
        beats = 0

        async def ack_forever() -> None:
            nonlocal beats
            while True:
                msg = await polite.recv()
                if msg["type"] == "heartbeat":
                    beats += 1
                    await polite.send_json({"type": "ack", "id": msg["id"]})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ack_forever)
            got, closed = await silent.recv_until_closed()
            assert closed.code == CloseCode.HEARTBEAT_TIMEOUT
            assert got[-1]["type"] == "error" and got[-1]["code"] == "heartbeat_timeout"
            assert any(m["type"] == "heartbeat" for m in got)
            await trio.sleep(1.0)  # longer than the timeout: the polite client stays
            nursery.cancel_scope.cancel()
        assert beats >= 10
        assert hub.statistics().subscribers == 1, "the acking client is still there"


# -- bad input ------------------------------------------------------------------------


async def expect_close(client: RawClient, code: int, error: str) -> None:
    got, closed = await client.recv_until_closed()
    assert closed.code == code, (closed, got)
    errors = [m for m in got if m["type"] == "error"]
    assert errors and errors[-1]["code"] == error, got


async def assert_server_still_serves(hub: Hub, port: int) -> None:
    client, _ = await subscribed_client(port, [ROUND_UPDATES])
    await client.recv()
    seq = hub.publish(ROUND_UPDATES, {"type": "ok"})
    assert (await client.recv())["seq"] == seq


async def test_wrong_or_missing_credentials_are_refused_with_4001_or_4003() -> None:
    config = FeedConfig(auth_timeout=0.2)
    async with feed(config) as (hub, port):
        wrong = await RawClient.connect(port)
        await wrong.send_json({"type": "auth", "token": "nope"})
        await expect_close(wrong, CloseCode.UNAUTHORIZED, "unauthorized")

        header = await RawClient.connect(port, headers=[(b"authorization", b"Bearer nope")])
        await expect_close(header, CloseCode.UNAUTHORIZED, "unauthorized")

        premature = await RawClient.connect(port)
        await premature.send_json({"type": "subscribe", "channels": [LIVE_MULTIPLIER]})
        await expect_close(premature, CloseCode.UNAUTHORIZED, "unauthorized")

        silent = await RawClient.connect(port)
        await expect_close(silent, CloseCode.UNAUTHORIZED, "unauthorized")

        unscoped = await RawClient.connect(port)
        await unscoped.send_json({"type": "auth", "token": "key-noscope"})
        await expect_close(unscoped, CloseCode.FORBIDDEN, "forbidden")
        await assert_server_still_serves(hub, port)


async def test_malformed_messages_get_errors_then_4000() -> None:
    async with feed() as (hub, port):
        client = await RawClient.connect(port)
        await client.auth()
        await client.send_json({"type": "subscribe", "channels": ["no_such_channel"], "id": 3})
        err = await client.recv()
        assert (
            err
            == {
                "type": "error",
                "code": "unknown_channel",
                "id": 3,
                "message": err["message"],
            }
            and "live_multiplier" in err["message"]
        )
        await client.raw(client.ws.send(Message(data="{not json")))
        assert (await client.recv())["code"] == "bad_json"
        await client.send_json({"type": "dance"})
        assert (await client.recv())["code"] == "unknown_type"
        await client.raw(client.ws.send(Message(data=b"\x00\x01")))
        assert (await client.recv())["code"] == "binary_not_supported"
        await client.send_json([1, 2])
        await expect_close(client, CloseCode.INVALID_MESSAGES, "invalid_message")
        await assert_server_still_serves(hub, port)


async def test_garbage_bytes_and_oversized_messages_are_closed_with_documented_codes() -> None:
    async with feed(FeedConfig(max_message_bytes=1024)) as (hub, port):
        # Not WebSocket at all: an HTTP error, then the socket closes.
        sock = trio.socket.socket()
        await sock.connect(("127.0.0.1", port))
        await sock.send(b"\x16\x03\x01garbage\r\n\r\n")
        with trio.fail_after(5):
            reply = await sock.recv(1024)
        assert reply.startswith(b"HTTP/1.1 400")
        sock.close()

        # A WebSocket connection that then sends bytes which are not frames (unmasked).
        client = await RawClient.connect(port)
        await client.auth()
        await client.raw(b"\x81\x05hello")
        await expect_close(client, CloseCode.PROTOCOL_ERROR, "protocol_error")

        # Invalid UTF-8 in a text frame.
        client = await RawClient.connect(port)
        await client.auth()
        await client.raw(b"\x81\x82\x00\x00\x00\x00\xff\xfe")
        await expect_close(client, CloseCode.INVALID_PAYLOAD, "protocol_error")

        # Oversized, including when split into many small fragments.
        for fragments in (1, 64):
            client = await RawClient.connect(port)
            await client.auth()
            chunk = "x" * (2048 // fragments)
            for i in range(fragments):
                await client.raw(
                    client.ws.send(Message(data=chunk, message_finished=i == fragments - 1))
                )
            await expect_close(client, CloseCode.MESSAGE_TOO_BIG, "message_too_big")

        # Wrong path and a plain HTTP request are refused at the handshake.
        with pytest.raises(Closed) as refused:
            await RawClient.connect(port, path="/api/v1/nope")
        assert refused.value.code == 404
        await assert_server_still_serves(hub, port)


async def test_a_subscribe_storm_is_rate_limited_then_closed_with_4029() -> None:
    async with feed(FeedConfig(rate=10, burst=20)) as (hub, port):
        client = await RawClient.connect(port)
        await client.auth()
        storm = b"".join(
            client.ws.send(
                Message(data=json.dumps({"type": "subscribe", "channels": [f"user:p1:u{i}"]}))
            )
            for i in range(300)
        )
        await client.raw(storm)
        got, closed = await client.recv_until_closed()
        assert closed.code == CloseCode.RATE_LIMITED
        codes = {m.get("code") for m in got if m["type"] == "error"}
        assert "rate_limited" in codes
        assert len([m for m in got if m["type"] == "error"]) <= 5, (
            "errors are bounded, not amplified"
        )
        assert hub.statistics().subscribers <= 1
        await assert_server_still_serves(hub, port)


async def test_resets_and_deeply_nested_json_do_not_disturb_the_server() -> None:
    async with feed() as (hub, port):
        for _ in range(5):
            client, _ = await subscribed_client(port, [LIVE_MULTIPLIER])
            await client.send_json({"type": "ack", "id": 1})  # unread reply pending
            client.abort()  # RST while the server may be reading or writing
        deep = await RawClient.connect(port)
        await deep.auth()
        await deep.raw(deep.ws.send(Message(data="[" * 3000)))
        err = await deep.recv()
        assert err["type"] == "error" and err["code"] == "bad_json"
        for i in range(3):
            hub.publish(LIVE_MULTIPLIER, tick(i))
        await assert_server_still_serves(hub, port)


async def test_too_many_subscriptions_is_an_error() -> None:
    async with feed(FeedConfig(max_subscriptions=3)) as (hub, port):
        client = await RawClient.connect(port)
        await client.auth()
        await client.send_json(
            {"type": "subscribe", "channels": ["user:p1:a", "user:p1:b", "user:p1:c", "user:p1:d"]}
        )
        assert (await client.recv())["code"] == "too_many_subscriptions"


async def test_connection_limit_answers_503_and_pings_get_pongs() -> None:
    async with feed(FeedConfig(max_connections=2)) as (hub, port):
        a = await RawClient.connect(port)
        b = await RawClient.connect(port)
        with pytest.raises(Closed) as refused:
            await RawClient.connect(port)
        assert refused.value.code == 503
        await a.raw(a.ws.send(Ping(b"hi")))
        with trio.fail_after(5):
            while True:
                events = await a._events()
                if any(type(e).__name__ == "Pong" and e.payload == b"hi" for e in events):
                    break
        del b


async def test_websockets_client_closes_cleanly_and_shutdown_says_going_away() -> None:
    hub = Hub(snapshot=state)
    codes: list[int | None] = []

    def client(port: int) -> None:
        async def run() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}{FEED_PATH}") as ws:
                await ws.send(json.dumps({"type": "auth", "token": "key-p1"}))
                assert json.loads(await ws.recv())["type"] == "welcome"
            codes.append(ws.close_code)

        asyncio.run(run())

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_feed(
                hub, "127.0.0.1", 0, authenticate, task_status=task_status
            )
        )
        await trio.to_thread.run_sync(client, port)
        assert codes == [1000]
        lingering = await RawClient.connect(port)
        await lingering.auth()
        nursery.cancel_scope.cancel()
    got, closed = await lingering.recv_until_closed()
    assert closed.code == CloseCode.GOING_AWAY


async def test_trio_websocket_client_sees_close_codes() -> None:
    async with feed() as (hub, port):
        async with open_websocket_url(f"ws://127.0.0.1:{port}{FEED_PATH}") as ws:
            await ws.send_message(json.dumps({"type": "auth", "token": "bad"}))
            assert json.loads(await ws.get_message())["code"] == "unauthorized"
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason is not None
            assert closed.value.reason.code == CloseCode.UNAUTHORIZED


async def test_revoking_a_credential_closes_its_open_connections() -> None:
    hub = Hub(snapshot=state)
    server = FeedServer(hub, authenticate, FeedConfig())
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        p1, _ = await subscribed_client(port, [ROUND_UPDATES])
        p2 = await RawClient.connect(port)
        await p2.auth("key-p2")
        assert server.statistics().authenticated == 2
        assert server.disconnect(lambda principal: principal.partner_id == "p1") == 1
        got, closed = await p1.recv_until_closed()
        assert closed.code == CloseCode.UNAUTHORIZED and got[-1]["code"] == "unauthorized"
        await p2.send_json({"type": "subscribe", "channels": [ROUND_UPDATES]})
        assert (await p2.recv())["type"] == "subscribed"
        stats = server.statistics()
        assert stats.closes == {CloseCode.UNAUTHORIZED: 1} and stats.failures == 0
        nursery.cancel_scope.cancel()


# -- the REST side's authenticator: a key store on disk -------------------------------


class SlowKeyStore(KeyStore):
    """A key store whose lookup of one secret blocks its thread until the test lets go,
    as a database stuck on a lock or a slow disk would."""

    def __init__(self, database: Path) -> None:
        super().__init__(database)
        self.slow_secret: str | None = None
        self.entered = trio.Event()
        self.release = threading.Event()

    def lookup_with_expiry(
        self, secret: str, now: float | None = None
    ) -> tuple[ApiKey | None, float | None]:
        if secret == self.slow_secret:
            # Only a worker thread of Trio's can do this: on the event loop it would raise.
            trio.from_thread.run_sync(self.entered.set)
            self.release.wait(timeout=30)
        return super().lookup_with_expiry(secret, now)


def bearer(secret: str) -> list[tuple[bytes, bytes]]:
    return [(b"authorization", f"Bearer {secret}".encode())]


async def test_a_slow_key_lookup_holds_up_its_own_handshake_and_nothing_else(
    tmp_path: Path,
) -> None:
    store = SlowKeyStore(tmp_path / "keys.sqlite3")
    try:
        fast = store.create("sandbox", "read:game_state", partner_id="acme")
        slow = store.create("sandbox", "read:game_state", partner_id="acme")
        store.slow_secret = slow.secret
        authenticate = feed_authenticator(Authenticator(store, frozenset({"sandbox"})))
        hub = Hub(snapshot=state)
        server = FeedServer(hub, authenticate, FeedConfig())
        order: list[str] = []
        welcomed = trio.Event()

        async def slow_client(port: int) -> None:
            client = await RawClient.connect(port, headers=bearer(slow.secret))
            order.append(f"slow: {(await client.recv())['type']}")
            welcomed.set()

        async with trio.open_nursery() as nursery:
            port = await nursery.start(server.serve, "127.0.0.1", 0)
            reader = await RawClient.connect(port, headers=bearer(fast.secret))
            assert (await reader.recv())["type"] == "welcome"
            await reader.send_json({"type": "subscribe", "channels": [ROUND_UPDATES]})
            assert [(await reader.recv())["type"] for _ in range(2)] == ["subscribed", "snapshot"]

            nursery.start_soon(slow_client, port)
            with trio.fail_after(10):
                await store.entered.wait()  # its lookup now blocks a worker thread
            for i in range(5):
                seq = hub.publish(ROUND_UPDATES, {"type": "event", "i": i})
                with trio.fail_after(10):
                    assert (await reader.recv())["seq"] == seq
                order.append(f"reader: {seq}")
            assert server.statistics().authenticated == 1, "the slow one is still waiting"
            order.append("database answers")
            store.release.set()
            with trio.fail_after(10):
                await welcomed.wait()
            nursery.cancel_scope.cancel()
        assert order == [
            "reader: 1",
            "reader: 2",
            "reader: 3",
            "reader: 4",
            "reader: 5",
            "database answers",
            "slow: welcome",
        ]
    finally:
        store.release.set()
        store.close()


async def test_the_rest_authenticator_rate_limits_keys_with_1013_and_checks_feed_tokens(
    tmp_path: Path,
) -> None:
    store = KeyStore(tmp_path / "keys.sqlite3")
    try:
        key = store.create("sandbox", "read:game_state,read:balance", partner_id="acme")
        second = store.create("sandbox", "read:game_state", partner_id="acme")
        authenticator = Authenticator(store, frozenset({"sandbox"}))
        token = feedtokens.issue(
            store.derive_secret(feedtokens.SECRET_LABEL),
            feedtokens.FeedClaims(
                key.key.id,
                "acme",
                "sandbox",
                frozenset({"read:game_state"}),
                int(time.time()) + 300,
            ),
        )
        authenticate = feed_authenticator(authenticator, Policy("feed_connect", 2, 60.0))
        hub = Hub(snapshot=state)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                lambda task_status: serve_feed(
                    hub, "127.0.0.1", 0, authenticate, task_status=task_status
                )
            )
            for _ in range(2):
                client = await RawClient.connect(port, headers=bearer(key.secret))
                welcome = await client.recv()
                assert (welcome["type"], welcome["partner_id"]) == ("welcome", "acme")
            refused = await RawClient.connect(port, headers=bearer(key.secret))
            await expect_close(refused, CloseCode.TRY_AGAIN_LATER, "rate_limited")
            other = await RawClient.connect(port, headers=bearer(second.secret))
            assert (await other.recv())["type"] == "welcome", "the limit is per key"
            unknown = await RawClient.connect(port, headers=bearer("ck_test_" + "x" * 32))
            await expect_close(unknown, CloseCode.UNAUTHORIZED, "unauthorized")

            # Feed tokens are not counted (their issue is), and die with their key.
            browser = await RawClient.connect(port)
            assert (await browser.auth(token))["type"] == "welcome"
            store.revoke(key.key.id)
            late = await RawClient.connect(port)
            await late.send_json({"type": "auth", "token": token})
            await expect_close(late, CloseCode.UNAUTHORIZED, "unauthorized")
            nursery.cancel_scope.cancel()
    finally:
        store.close()

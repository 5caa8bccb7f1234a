"""``FeedClient`` against real feed listeners on 127.0.0.1.

Two kinds of server: the feed listener alone (``serve_feed`` with a hub this test
publishes into, so it decides exactly which ``seq`` exists when), and a whole
``crashd`` (the game publishing). Between client and server sits a TCP proxy the test
can cut: a connection killed mid-stream is a real dead socket to the client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from crashd.api.client import (
    Backoff,
    ChannelMessage,
    FeedClient,
    FeedError,
    FeedUnavailable,
    RestClient,
    Snapshot,
    StreamMessage,
    open_feed,
)
from crashd.api.feed import FEED_PATH, FeedConfig, FeedServer, Principal
from crashd.api.feed.hub import Hub
from crashd.api.wire import LIVE_MULTIPLIER, ROUND_UPDATES
from support.client import CuttableProxy, make_signed_key, quick_config
from support.servers import running_server, wait_until

GAME = frozenset({"read:game_state", "read:balance"})
KEYS = {"key-p1": Principal("key_p1", "p1", "sandbox", GAME)}
ALICE = "user:p1:alice"
FAST = Backoff(base=0.02, cap=0.2)


def state(channel: str) -> dict[str, Any]:
    return {"state_of": channel}


@asynccontextmanager
async def feed_server(
    config: FeedConfig = FeedConfig(), **hub_args: Any
) -> AsyncIterator[tuple[Hub, FeedServer, int]]:
    hub = Hub(snapshot=state, **hub_args)
    server = FeedServer(hub, KEYS.get, config)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(server.serve, "127.0.0.1", 0)
        yield hub, server, port
        nursery.cancel_scope.cancel()


class Collector:
    """Reads a client's ``messages()`` into a list, as an application would."""

    def __init__(self, client: FeedClient) -> None:
        self.client = client
        self.messages: list[StreamMessage] = []

    async def run(self) -> None:
        async for message in self.client.messages():
            self.messages.append(message)

    def seqs(self, channels: set[str] | None = None) -> list[int]:
        return [
            m.seq
            for m in self.messages
            if isinstance(m, ChannelMessage) and (channels is None or m.channel in channels)
        ]

    def snapshots(self) -> list[Snapshot]:
        return [m for m in self.messages if isinstance(m, Snapshot)]


def ws_url(port: int) -> str:
    return f"ws://127.0.0.1:{port}{FEED_PATH}"


async def test_resume_after_a_killed_connection_delivers_every_missed_message_once(
    tmp_path: Path,
) -> None:
    async with feed_server() as (hub, _, port), trio.open_nursery() as nursery:
        proxy = CuttableProxy(port)
        proxy_port = await nursery.start(proxy.serve)
        client = FeedClient(
            ws_url(proxy_port), api_key="key-p1", channels=[ROUND_UPDATES, ALICE], backoff=FAST
        )
        collector = Collector(client)
        await nursery.start(client.run)
        nursery.start_soon(collector.run)
        assert await wait_until(lambda: len(collector.snapshots()) == 1)

        wanted: list[int] = []

        def publish(n: int) -> None:
            for i in range(n):
                wanted.append(hub.publish(ROUND_UPDATES, {"type": "round", "i": i}))
                wanted.append(hub.publish(ALICE, {"type": "balance", "balance": i}))
                hub.publish("user:p1:bob", {"type": "balance", "balance": i})  # not subscribed
                hub.publish(
                    LIVE_MULTIPLIER, {"type": "tick", "multiplier": 100 + i}
                )  # not subscribed

        publish(20)
        assert await wait_until(lambda: collector.seqs() == wanted)
        for _ in range(3):
            # The link dies mid-stream and stays down while the game goes on.
            proxy.down = True
            proxy.cut()
            assert await wait_until(lambda: not client.connected)
            publish(30)
            await trio.sleep(0.15)  # a few refused reconnects
            proxy.down = False
            assert await wait_until(lambda: client.connected)
            publish(5)
            assert await wait_until(lambda: len(collector.seqs()) >= len(wanted))
        assert collector.seqs() == wanted  # every one, once, in order
        stats = client.statistics()
        assert stats.connects == 4 and stats.resumes == 3 and stats.resync_snapshots == 0
        assert len(collector.snapshots()) == 1  # only the first subscribe's
        await client.aclose()
        nursery.cancel_scope.cancel()


async def test_gap_too_old_and_server_restart_resync_by_snapshot() -> None:
    async with feed_server(replay_capacity=8) as (hub, _, port), trio.open_nursery() as nursery:
        proxy = CuttableProxy(port)
        await nursery.start(proxy.serve)
        async with open_feed(
            ws_url(proxy.port), api_key="key-p1", channels=[ROUND_UPDATES], backoff=FAST
        ) as client:
            collector = Collector(client)
            nursery.start_soon(collector.run)
            assert await wait_until(lambda: len(collector.snapshots()) == 1)
            proxy.down = True
            proxy.cut()
            assert await wait_until(lambda: not client.connected)
            for i in range(20):  # more than the replay buffer keeps
                hub.publish(ROUND_UPDATES, {"type": "round", "i": i})
            proxy.down = False
            assert await wait_until(lambda: len(collector.snapshots()) == 2)
            gap = collector.snapshots()[1]
            assert (gap.reason, gap.seq, gap.is_resync) == ("resume_gap", hub.seq, True)
            after = hub.publish(ROUND_UPDATES, {"type": "round", "i": "after"})
            assert await wait_until(lambda: collector.seqs()[-1:] == [after])

            # The server restarts: a new hub, a new epoch, seq counting from 0 again.
            async with feed_server() as (hub2, _, port2):
                proxy.target_port = port2
                for i in range(3):
                    hub2.publish(ROUND_UPDATES, {"type": "round", "i": i})
                proxy.cut()
                assert await wait_until(lambda: len(collector.snapshots()) == 3)
                restarted = collector.snapshots()[2]
                assert (restarted.reason, restarted.epoch, restarted.seq) == (
                    "epoch_changed",
                    hub2.epoch,
                    3,
                )
                # Low seqs of the new epoch are news, not duplicates of the old epoch's.
                fresh = hub2.publish(ROUND_UPDATES, {"type": "round", "i": "new epoch"})
                assert await wait_until(lambda: collector.seqs()[-1:] == [fresh])
                assert fresh == 4 and client.statistics().epoch == hub2.epoch
                proxy.target_port = port  # let the client go back before hub2 closes
        nursery.cancel_scope.cancel()


async def test_heartbeats_are_acked_so_a_long_lived_client_is_not_dropped() -> None:
    config = FeedConfig(heartbeat_interval=0.1, heartbeat_timeout=0.5)
    async with feed_server(config) as (hub, server, port):
        # Control: a client that never acks is dropped within this configuration…
        async with open_websocket_url(
            ws_url(port), extra_headers=[(b"Authorization", b"Bearer key-p1")]
        ) as ws:
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
            assert closed.value.reason.code == 4008
        # …while the SDK's client, running three times as long, stays on one connection.
        async with open_feed(ws_url(port), api_key="key-p1", channels=[ROUND_UPDATES]) as client:
            await trio.sleep(1.5)
            stats = client.statistics()
            assert stats.connects == 1 and stats.connected
            assert stats.heartbeats_acked >= 8
        # 4008 for the control only; 1000 is the server answering the SDK client's clean close.
        assert server.statistics().closes == {4008: 1, 1000: 1}


async def test_refusals_are_raised_not_retried() -> None:
    async with feed_server() as (_, _, port):
        with pytest.raises(FeedError) as refused:
            async with open_feed(ws_url(port), api_key="wrong-key", backoff=FAST):
                pass
        assert (refused.value.code, refused.value.close_code) == ("unauthorized", 4001)

        async with open_feed(ws_url(port), api_key="key-p1", channels=[ROUND_UPDATES]) as client:
            with pytest.raises(FeedError) as bad_channel:
                await client.subscribe(["user:p2:mallory"])
            assert bad_channel.value.code == "forbidden_channel"
            assert client.channels == (ROUND_UPDATES,)  # still subscribed to what it had

    # Nothing listens any more: a bounded number of attempts, then FeedUnavailable.
    client = FeedClient(ws_url(port), api_key="key-p1", backoff=FAST, max_attempts=3)
    with trio.fail_after(10), pytest.raises(FeedUnavailable):
        await client.run()


async def test_two_clients_see_the_same_game_and_one_survives_kills(tmp_path: Path) -> None:
    """A whole crashd: client A direct with the API key, client B through a cuttable
    link with feed tokens from REST (a fresh one per connection). B loses its
    connection twice mid-round and must still see exactly A's ordered stream."""
    config = quick_config(tmp_path)
    async with running_server(config) as info:
        key, signing = make_signed_key(config, "read:game_state,read:balance,write:bet")
        async with (
            RestClient(info.url, key, signing_secret=signing) as rest,
            trio.open_nursery() as nursery,
        ):
            token = await rest.feed_token()
            proxy = CuttableProxy(int(token.ws_url.rsplit(":", 1)[1].split("/")[0]))
            await nursery.start(proxy.serve)
            channels = [ROUND_UPDATES, LIVE_MULTIPLIER]
            async with (
                open_feed(token.ws_url, api_key=key, channels=channels) as a,
                open_feed(
                    ws_url(proxy.port),
                    token=rest.feed_token_string,
                    channels=channels,
                    backoff=FAST,
                ) as b,
            ):
                ca, cb = Collector(a), Collector(b)
                nursery.start_soon(ca.run)
                nursery.start_soon(cb.run)

                def crashes(c: Collector) -> int:
                    return sum(
                        1
                        for m in c.messages
                        if isinstance(m, ChannelMessage) and m.type == "crashed"
                    )

                for _ in range(2):
                    # Kill B while the multiplier is rising, keep it away for a while.
                    assert await wait_until(
                        lambda: any(
                            isinstance(m, ChannelMessage) and m.type == "tick"
                            for m in cb.messages[-3:]
                        ),
                        timeout=15,
                    )
                    proxy.down = True
                    proxy.cut()
                    await trio.sleep(0.5)
                    proxy.down = False
                    assert await wait_until(lambda: b.connected)
                start = crashes(ca)
                assert await wait_until(
                    lambda: crashes(ca) >= start + 2 and crashes(cb) >= start + 2, timeout=30
                )
                assert b.statistics().connects == 3 and b.statistics().resumes == 2
            nursery.cancel_scope.cancel()

        ordered = {ROUND_UPDATES}
        first = max(ca.snapshots()[0].seq, cb.snapshots()[0].seq)
        last = min(ca.seqs(ordered)[-1], cb.seqs(ordered)[-1])

        def in_range(seqs: list[int]) -> list[int]:
            return [s for s in seqs if first < s <= last]

        assert in_range(ca.seqs(ordered)) == in_range(cb.seqs(ordered)) != []

        # The payloads too, not just the numbers.
        def bodies(c: Any) -> list[Any]:
            return [
                m.data
                for m in c.messages
                if isinstance(m, ChannelMessage)
                and m.channel == ROUND_UPDATES
                and first < m.seq <= last
            ]

        assert bodies(ca) == bodies(cb)
        for c in (ca, cb):
            every = c.seqs()
            assert every == sorted(set(every))  # ticks included: increasing, no duplicates


async def test_close_is_prompt_even_while_waiting_to_reconnect() -> None:
    async with feed_server() as (_, _, port):
        pass  # the port is free again: nothing listens there
    client = FeedClient(
        ws_url(port), api_key="key-p1", backoff=Backoff(base=30.0, cap=30.0), random=lambda: 0.99
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.run)
        await trio.sleep(0.2)  # first attempt refused; now in a ~30 s backoff
        with trio.fail_after(1):
            await client.aclose()
    assert not client.connected
    async for _ in client.messages():
        raise AssertionError("a closed client delivers nothing")


async def test_orders_through_the_sdk_on_both_credentials(tmp_path: Path) -> None:
    """A partner's server (API key, each order signed) and a player's browser (a user
    token) both bet through FeedClient.order; a lost answer is retried with its key."""
    from crashd.api.client import RestClient
    from support.client import make_signed_key, quick_config
    from support.servers import running_server

    config = quick_config(tmp_path)
    async with running_server(config) as info:
        key, signing = make_signed_key(config, "read:game_state,read:balance,write:bet")
        async with RestClient(info.url, key, signing_secret=signing) as api:
            await api.faucet("sam", 1_000)
            await api.faucet("sue", 1_000)
            ws_url = (await api.feed_token()).ws_url
            async with open_feed(ws_url, api_key=key, signing_secret=signing) as server_side:
                placed = await server_side.order("bet", key="sam-1", user_id="sam", amount=100)
                assert placed.ok and placed.body["stake"] == 100, placed
                again = await server_side.order("bet", key="sam-1", user_id="sam", amount=100)
                assert again.replayed and again.body == placed.body
            token = await api.user_token("sue")
            async with open_feed(ws_url, token=token.token) as browser:
                mine = await browser.order("bet", amount=50)
                assert mine.ok and mine.body["stake"] == 50
                theirs = await browser.order("bet", user_id="sam", amount=1)
                assert (theirs.status, theirs.body["code"]) == (403, "insufficient_scope")
            assert (await api.balance("sam")).available == 900
            assert (await api.balance("sue")).available == 950

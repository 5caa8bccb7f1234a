"""Feed edges: the engine's feed served by other hubs, checked against the engine's own.

The model: the engine's hub is the reference. Whatever topology a client is served by
— the engine itself, two edges on one port fed over a Unix socket, or two edges fed
through Redis Streams — and wherever it reconnects, every channel message it gets is
byte for byte the engine's message with that ``seq``, and from the moment a snapshot
covers a channel it gets every ordered message of that channel exactly once, in order
(ticks: a subsequence, in order). The same client scripts run in all three topologies
at once, against one engine, and must observe the same sequences.

The sans-IO ``EdgeHub`` is tested on its own first: gaps, keyframes, user channels, an
edge behind its client.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, connect_websocket_url, open_websocket_url

from crashd.api.edge.mirror import EdgeHub
from crashd.api.edge.records import Kind, Record, RecordReader
from crashd.api.edge.relay import REVOKED_KEPT, FeedRelay
from crashd.api.edge.server import EdgeInfo, run_edge
from crashd.api.feed.frames import decode_server_frame
from crashd.api.feed.hub import Hub
from crashd.api.wire import LIVE_MULTIPLIER, ROUND_UPDATES
from crashd.engine.bounds import KEYFRAME_EVERY_S, STALE_AFTER_S
from support.game import Api, fund, game_config
from support.servers import REPO, make_key, running_server

SCOPES = "read:game_state,read:balance,write:bet"


# -- the hub of an edge, without sockets ----------------------------------------------


class Pipe:
    """A subscriber's socket: takes everything, read back as messages."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def send(self, data: bytes | memoryview) -> int:
        self.buffer += data
        return len(data)

    def messages(self) -> list[dict[str, Any]]:
        out = []
        while (parsed := decode_server_frame(bytes(self.buffer))) is not None:
            _, payload, length = parsed
            del self.buffer[:length]
            out.append(json.loads(payload))
        return out


def _nothing(*args: Any) -> None:
    pass


class Live:
    """A live state whose public view changes when told."""

    def __init__(self) -> None:
        self.version = 0
        self._public: dict[str, Any] = {"version": 0}

    def public(self) -> dict[str, Any]:
        return self._public

    def rest_body(self) -> bytes:
        return json.dumps({"rest": self.version}).encode()

    def change(self) -> None:
        self.version += 1
        self._public = {"version": self.version}


class Wire:
    """An engine hub and its relay, with the records it sent (an outlet)."""

    def __init__(self) -> None:
        self.live = Live()
        self.hub = Hub(
            snapshot=lambda c: self.live.public() if not c.startswith("user:") else {"u": c}
        )
        self.relay = FeedRelay(self.hub, self.live)
        self.records: list[Record] = []
        self.relay.outlets.append(self)

    def send(self, records: Any) -> None:
        self.records.extend(records)

    def take(self) -> list[Record]:
        out, self.records = self.records, []
        return out


def test_an_edge_sends_the_engines_bytes_and_resumes_like_it() -> None:
    wire = Wire()
    edge = EdgeHub()
    edge.start(wire.hub.epoch, 0)
    engine_pipe, edge_pipe = Pipe(), Pipe()
    engine_sub = wire.hub.attach(engine_pipe.send, _nothing, _nothing)
    edge_sub = edge.attach(edge_pipe.send, _nothing, _nothing)
    for i in range(20):
        wire.hub.publish(ROUND_UPDATES if i % 3 else LIVE_MULTIPLIER, {"type": "x", "i": i})
        if i == 0:
            wire.live.change()  # a keyframe follows this frame
        for record in wire.take():
            edge.apply(record, contiguous=True)
        if i == 1:
            wire.hub.subscribe(engine_sub, [ROUND_UPDATES], since_seq=0)
            edge.subscribe(edge_sub, [ROUND_UPDATES], since_seq=0)
    assert edge.synced and edge.seq == wire.hub.seq and edge.epoch == wire.hub.epoch
    assert bytes(edge_pipe.buffer) == bytes(engine_pipe.buffer)  # the same bytes
    assert [f.data for f in edge.replay.since(0) or []] == [
        f.data for f in wire.hub.replay.since(0) or []
    ]


def test_an_edge_whose_keyframes_stop_is_stale_until_the_next_one() -> None:
    """The engine's keyframes are the edge's sign of life: past ``STALE_AFTER_S``
    without one, its state is no longer the engine's live state; the next one (or the
    first of a new epoch) makes it fresh again."""
    now = [100.0]
    wire = Wire()
    edge = EdgeHub(clock=lambda: now[0])
    edge.start(wire.hub.epoch, 0)
    assert edge.stale() == "no state from the engine yet"
    wire.hub.publish(ROUND_UPDATES, {"type": "x"})
    wire.live.change()
    wire.hub.publish(ROUND_UPDATES, {"type": "y"})  # a keyframe follows this frame
    for record in wire.take():
        edge.apply(record, contiguous=True)
    assert edge.synced and edge.stale() is None
    now[0] += STALE_AFTER_S
    assert edge.stale() is None  # at the limit: still fresh
    wire.hub.publish(ROUND_UPDATES, {"type": "z"})  # frames alone are no keyframe
    for record in wire.take():
        edge.apply(record, contiguous=True)
    now[0] += 0.5
    why = edge.stale()
    assert why is not None and "its stream stopped" in why, why
    edge.apply(wire.relay.state_now(), contiguous=True)
    assert edge.stale() is None
    edge.start("another-epoch", 0)  # a new epoch: nothing known until its keyframe
    assert edge.stale() == "no state from the engine yet"
    doc = (REPO / "docs" / "scale-out.md").read_text()
    assert f"`KEYFRAME_EVERY_S` ({KEYFRAME_EVERY_S:g} s)" in doc  # the failure table's figures
    assert f"`STALE_AFTER_S` ({STALE_AFTER_S:g} s" in doc


def test_a_gap_holds_the_edge_until_a_keyframe_then_everyone_resyncs() -> None:
    wire = Wire()
    wire.live.change()
    wire.hub.publish(ROUND_UPDATES, {"type": "x"})
    edge = EdgeHub()
    edge.start(wire.hub.epoch, 0)
    for record in wire.take():
        edge.apply(record, contiguous=True)
    pipe = Pipe()
    sub = edge.attach(pipe.send, _nothing, _nothing)
    edge.subscribe(sub, [ROUND_UPDATES])
    assert [m["reason"] for m in pipe.messages()] == ["subscribe"]
    wire.hub.publish(ROUND_UPDATES, {"type": "lost"})
    wire.take()  # the transport lost it
    wire.hub.publish(ROUND_UPDATES, {"type": "after the hole"})
    for record in wire.take():
        edge.apply(record, contiguous=True)
    assert edge.holding and pipe.messages() == []  # nothing delivered across the hole
    wire.live.change()
    wire.hub.publish(ROUND_UPDATES, {"type": "with a keyframe"})
    for record in wire.take():
        edge.apply(record, contiguous=True)
    (resync,) = pipe.messages()
    assert resync["type"] == "snapshot" and resync["reason"] == "resync"
    assert resync["seq"] == wire.hub.seq and not edge.holding
    # No resume can be served across the hole: it is a gap for everyone.
    later = edge.attach(Pipe().send, _nothing, _nothing)
    assert edge.subscribe(later, [ROUND_UPDATES], since_seq=1) is None


def test_user_channels_wait_for_their_keyframe() -> None:
    wire = Wire()
    wire.live.change()
    wire.hub.publish(ROUND_UPDATES, {"type": "x"})
    wanted: list[str] = []
    edge = EdgeHub(want=wanted.append)
    edge.start(wire.hub.epoch, 0)
    for record in wire.take():
        edge.apply(record, contiguous=True)
    pipe = Pipe()
    sub = edge.attach(pipe.send, _nothing, _nothing)
    user = "user:acme:zoe"
    edge.subscribe(sub, [ROUND_UPDATES, user])
    (first,) = pipe.messages()
    assert set(first["channels"]) == {ROUND_UPDATES}  # no claim about the user yet
    assert wanted == [user]
    answer = wire.relay.want(user)
    assert answer is not None and answer.kind is Kind.USER
    edge.apply(answer, contiguous=True)
    (second,) = pipe.messages()
    assert second["channels"] == {user: {"u": user}} and second["reason"] == "subscribe"
    # Watched now: each of its frames is followed by its keyframe, so it stays current.
    wire.hub.publish(user, {"type": "balance"})
    kinds = [r.kind for r in wire.take()]
    assert kinds[:2] == [Kind.FRAME, Kind.USER]


def test_a_client_ahead_of_the_edge_resumes_without_a_snapshot() -> None:
    wire = Wire()
    wire.live.change()
    for i in range(5):
        wire.hub.publish(ROUND_UPDATES, {"type": "x", "i": i})
    records = wire.take()
    edge = EdgeHub()
    edge.start(wire.hub.epoch, 0)
    for record in records[:3]:
        edge.apply(record, contiguous=True)
    pipe = Pipe()
    sub = edge.attach(pipe.send, _nothing, _nothing)
    assert edge.subscribe(sub, [ROUND_UPDATES], since_seq=4, epoch=wire.hub.epoch) == 0
    for record in records[3:]:
        edge.apply(record, contiguous=True)
    assert [m["seq"] for m in pipe.messages()] == [3, 4, 5]  # it drops 3 and 4 itself


def test_under_sliced_fan_out_edges_get_every_frame_at_once_and_serve_the_same_bytes() -> None:
    """The feed server's mode on both sides (``publish``/``relay`` queue, a task flushes
    in slices): the relay still hands edges every frame as it is published, in ``seq``
    order and byte for byte, and an edge's subscribers end with the engine's bytes."""
    wire = Wire()
    edge = EdgeHub()
    edge.start(wire.hub.epoch, 0)
    wire.hub.on_pending = _nothing
    edge.on_pending = _nothing
    engine_pipes = [Pipe() for _ in range(5)]
    edge_pipes = [Pipe() for _ in range(5)]
    wire.live.change()
    wire.hub.publish(ROUND_UPDATES, {"type": "first"})
    for record in wire.take():
        edge.apply(record, contiguous=True)
    for hub, pipes in ((wire.hub, engine_pipes), (edge, edge_pipes)):
        for pipe in pipes:
            sub = hub.attach(pipe.send, _nothing, _nothing)
            hub.subscribe(sub, [LIVE_MULTIPLIER, ROUND_UPDATES], since_seq=0)
    for i in range(30):
        wire.hub.publish(LIVE_MULTIPLIER if i % 4 else ROUND_UPDATES, {"type": "x", "i": i})
        if i % 7 == 0:
            wire.hub.flush(budget=2)  # the engine's fan-out runs a slice now and then
    frames = [r for r in wire.take() if r.kind is Kind.FRAME]
    # Every frame went to the edges at publish time, whatever the engine's fan-out did.
    assert [r.seq for r in frames] == list(range(2, wire.hub.seq + 1))
    for record in frames:
        edge.apply(record, contiguous=True)
    before = [bytes(p.buffer) for p in edge_pipes]
    assert edge.statistics().pending > 0  # queued on the edge too, for its own slices
    while edge.flush(budget=2):
        pass
    wire.hub.flush_all()
    assert edge.seq == wire.hub.seq
    joined = b"".join(r.data for r in frames)
    for pipe, old in zip(edge_pipes, before, strict=True):
        assert bytes(pipe.buffer) == old + joined  # the engine's bytes, in seq order
    assert {bytes(p.buffer) for p in edge_pipes} == {bytes(p.buffer) for p in engine_pipes}


def test_a_resync_on_an_edge_comes_after_the_frames_its_fan_out_still_queued() -> None:
    wire = Wire()
    wire.live.change()
    wire.hub.publish(ROUND_UPDATES, {"type": "x"})
    edge = EdgeHub()
    edge.start(wire.hub.epoch, 0)
    edge.on_pending = _nothing
    for record in wire.take():
        edge.apply(record, contiguous=True)
    pipe = Pipe()
    sub = edge.attach(pipe.send, _nothing, _nothing)
    edge.subscribe(sub, [ROUND_UPDATES])
    wire.hub.publish(ROUND_UPDATES, {"type": "queued"})
    for record in wire.take():
        edge.apply(record, contiguous=True)  # queued for the fan-out, not flushed yet
    wire.hub.publish(ROUND_UPDATES, {"type": "lost"})
    wire.take()  # the transport lost it
    wire.live.change()
    wire.hub.publish(ROUND_UPDATES, {"type": "with a keyframe"})
    for record in wire.take():
        edge.apply(record, contiguous=True)
    edge.flush_all()
    got = [(m["type"], m.get("reason")) for m in pipe.messages()]
    assert got == [("snapshot", "subscribe"), ("queued", None), ("snapshot", "resync")]


def test_a_user_keyframe_on_an_edge_comes_after_the_frames_its_fan_out_still_queued() -> None:
    wire = Wire()
    wire.live.change()
    wire.hub.publish(ROUND_UPDATES, {"type": "x"})
    edge = EdgeHub(want=_nothing)
    edge.start(wire.hub.epoch, 0)
    edge.on_pending = _nothing
    for record in wire.take():
        edge.apply(record, contiguous=True)
    pipe = Pipe()
    sub = edge.attach(pipe.send, _nothing, _nothing)
    user = "user:acme:zoe"
    edge.subscribe(sub, [ROUND_UPDATES, user])  # the user's keyframe is wanted
    wire.hub.publish(ROUND_UPDATES, {"type": "queued"})
    for record in wire.take():
        edge.apply(record, contiguous=True)  # queued for the fan-out, not flushed yet
    answer = wire.relay.want(user)
    assert answer is not None
    edge.apply(answer, contiguous=True)
    edge.flush_all()
    got = [(m["type"], m["seq"]) for m in pipe.messages()]
    assert [t for t, _ in got] == ["snapshot", "queued", "snapshot"]
    assert [s for _, s in got] == sorted(s for _, s in got)


def test_records_survive_any_split_of_the_byte_stream() -> None:
    records = [
        Record(Kind.FRAME, 7, "round_updates", b"\x81\x03abc"),
        Record(Kind.WANT, 0, "user:p:u", b""),
        Record(Kind.HELLO, 9, "epoch", b"3"),
    ]
    data = b"".join(r.encode() for r in records)
    rng = random.Random(7)
    for _ in range(50):
        reader = RecordReader()
        out: list[Record] = []
        pos = 0
        while pos < len(data):
            step = rng.randint(1, 9)
            out.extend(reader.feed(data[pos : pos + step]))
            pos += step
        assert out == records


# -- the model: three topologies, one engine -------------------------------------------


@dataclass
class Script:
    channels: list[str]
    hops: list[int]
    """Reconnect after this many channel messages (cumulative)."""
    targets: list[int]
    """Which endpoint of the topology each connection goes to."""


@dataclass
class Observation:
    ordered: list[tuple[int, str]] = field(default_factory=list)
    """(seq, raw text) of every ordered channel message applied, in order."""
    ticks: list[tuple[int, str]] = field(default_factory=list)
    covered: dict[str, int] = field(default_factory=dict)
    """Channel → seq of the first snapshot that covered it."""
    snapshots: list[tuple[int, str, tuple[str, ...]]] = field(default_factory=list)
    epoch: str | None = None
    last_seq: int = 0
    duplicates: int = 0
    connections: int = 0


class Recorder:
    """The reference: one connection to the engine, every channel, never dropped."""

    def __init__(self) -> None:
        self.frames: dict[int, str] = {}
        self.last = 0
        self.ready = trio.Event()


async def _auth(ws: Any) -> dict[str, Any]:
    while True:
        msg = json.loads(await ws.get_message())
        if msg.get("type") == "welcome":
            return msg  # type: ignore[no-any-return]
        assert msg.get("type") != "error", msg


async def record(url: str, secret: str, channels: list[str], recorder: Recorder) -> None:
    async with open_websocket_url(url, extra_headers=[("Authorization", f"Bearer {secret}")]) as ws:
        await _auth(ws)
        await ws.send_message(json.dumps({"type": "subscribe", "channels": channels, "id": 1}))
        while True:
            text = await ws.get_message()
            msg = json.loads(text)
            if msg.get("type") == "heartbeat":
                await ws.send_message(json.dumps({"type": "ack", "id": msg["id"]}))
            elif msg.get("type") == "snapshot":
                recorder.last = msg["seq"]
                recorder.ready.set()
            elif "seq" in msg and "channel" in msg:
                recorder.frames[msg["seq"]] = text
                recorder.last = msg["seq"]


async def run_script(
    urls: list[str], secret: str, script: Script, obs: Observation, stop: list[int]
) -> None:
    """Follow ``script``; return once the client has applied a ``seq`` ≥ ``stop[0]``."""
    received = 0
    hop = 0
    while True:
        url = urls[script.targets[min(hop, len(script.targets) - 1)] % len(urls)]
        limit = script.hops[hop] if hop < len(script.hops) else None
        async with open_websocket_url(
            url, extra_headers=[("Authorization", f"Bearer {secret}")]
        ) as ws:
            obs.connections += 1
            welcome = await _auth(ws)
            resume = [c for c in script.channels if c in obs.covered]
            fresh = [c for c in script.channels if c not in obs.covered]
            if resume:
                assert welcome["epoch"] == obs.epoch, "no epoch change in this test"
                await ws.send_message(
                    json.dumps(
                        {
                            "type": "subscribe",
                            "channels": resume,
                            "id": 1,
                            "resume": {"seq": obs.last_seq, "epoch": obs.epoch},
                        }
                    )
                )
            if fresh:
                await ws.send_message(json.dumps({"type": "subscribe", "channels": fresh, "id": 2}))
            try:
                while limit is None or received < limit:
                    text = await ws.get_message()
                    msg = json.loads(text)
                    kind = msg.get("type")
                    if kind == "heartbeat":
                        await ws.send_message(json.dumps({"type": "ack", "id": msg["id"]}))
                        continue
                    assert kind != "error", msg
                    if kind == "snapshot":
                        newly = tuple(c for c in msg["channels"] if c not in obs.covered)
                        assert msg["reason"] == "subscribe" and newly, f"unexpected {msg}"
                        obs.snapshots.append((msg["seq"], msg["reason"], newly))
                        for c in newly:
                            obs.covered[c] = msg["seq"]
                        if obs.epoch is None:
                            obs.epoch = msg["epoch"]
                        obs.last_seq = max(obs.last_seq, msg["seq"])
                        continue
                    if "seq" not in msg or "channel" not in msg:
                        continue  # resumed, subscribed: control messages
                    received += 1
                    if msg["seq"] <= obs.last_seq:
                        obs.duplicates += 1  # the stream rule: already applied
                        continue
                    obs.last_seq = msg["seq"]
                    target = obs.ticks if msg["channel"] == LIVE_MULTIPLIER else obs.ordered
                    target.append((msg["seq"], text))
                    if obs.last_seq >= stop[0]:
                        return
            except ConnectionClosed:
                pass
        hop += 1


async def bettor(api: Api, users: list[str], done: trio.Event) -> None:
    """Bets every round for every user, some cashed out by hand: user channel traffic."""
    for user in users:
        await fund(api, user, 1_000_000)
    rng = random.Random(1)
    while not done.is_set():
        state = await api.wait_status("betting", timeout=30)
        tickets = []
        for user in users:
            r = await api.post("/api/v1/bets", {"user_id": user, "amount": rng.randint(100, 900)})
            if r.status_code == 201:
                tickets.append((user, r.json()["ticket_id"]))
        await api.wait_status("running", timeout=30)
        for user, ticket in tickets[: len(tickets) // 2]:
            await api.post(f"/api/v1/bets/{ticket}/cashout", {"user_id": user})
        await api.wait_round_over(state["round_id"])


def expected_ordered(recorder: Recorder, channels: list[str], start: int, end: int) -> list[int]:
    wanted = set(channels) - {LIVE_MULTIPLIER}
    out = []
    for seq in sorted(recorder.frames):
        if start < seq <= end:
            channel = json.loads(recorder.frames[seq])["channel"]
            if channel in wanted:
                out.append(seq)
    return out


@pytest.mark.slow
async def test_every_topology_serves_the_engines_stream(tmp_path: Path, redis_url: str) -> None:
    prefix = f"test-{tmp_path.name}"
    config = game_config(
        tmp_path,
        relay_socket=tmp_path / "relay.sock",
        redis_url=redis_url,
        redis_prefix=prefix,
        tick_hz=10,
    )
    users = [f"u{i}" for i in range(4)]
    channels_of_all = [ROUND_UPDATES, LIVE_MULTIPLIER, *(f"user:acme:{u}" for u in users)]
    async with running_server(config) as info, trio.open_nursery() as nursery:
        _, secret = make_key(config, SCOPES)
        # The bettor's nursery closes before its client does: cancelled with the test's
        # nursery, it unwinds first (a client closed under a request in flight is a
        # ReadError, not a cancellation: CI hit it at teardown).
        async with (
            httpx.AsyncClient(base_url=info.url, timeout=10) as client,
            trio.open_nursery() as players,
        ):
            api = Api(client, secret)
            r = await client.post("/api/v1/feed/token", headers=api.headers)
            engine_url = r.json()["ws_url"]
            recorder = Recorder()
            nursery.start_soon(record, engine_url, secret, channels_of_all, recorder)
            await recorder.ready.wait()
            done = trio.Event()
            players.start_soon(bettor, api, users, done)

            edge_config = config.with_overrides(redis_url=None)
            unix_a: EdgeInfo = await nursery.start(run_edge, edge_config)
            unix_b: EdgeInfo = await nursery.start(
                run_edge, edge_config.with_overrides(feed_port=unix_a.port)
            )  # the same port: SO_REUSEPORT, the kernel picks the edge
            redis_config = config.with_overrides(relay_socket=None)
            redis_edges: list[EdgeInfo] = [
                await nursery.start(run_edge, redis_config) for _ in range(2)
            ]
            topologies = {
                "engine": [engine_url],
                "unix": [unix_a.url],
                "redis": [e.url for e in redis_edges],
            }
            rng = random.Random(19)
            scripts = []
            for i in range(6):
                user_channels = [f"user:acme:{users[i % len(users)]}"] if i % 2 else []
                hops = sorted(rng.sample(range(5, 80), 4))
                scripts.append(
                    Script(
                        [ROUND_UPDATES, LIVE_MULTIPLIER, *user_channels],
                        hops,
                        [rng.randrange(2) for _ in range(len(hops) + 1)],
                    )
                )
            # Let the game run a while before the clients start.
            with trio.fail_after(60):
                while recorder.last < 60:
                    await trio.sleep(0.05)
            stop = [recorder.last + 400]
            observed: dict[str, list[Observation]] = {t: [] for t in topologies}
            with trio.fail_after(120):
                async with trio.open_nursery() as clients:
                    for name, urls in topologies.items():
                        for script in scripts:
                            obs = Observation()
                            observed[name].append(obs)
                            clients.start_soon(run_script, urls, secret, script, obs, stop)
            done.set()
            # Both edges behind the shared port served connections.
            assert unix_a.feed.stats_closes or unix_a.hub.statistics().subscribers
            for name, observations in observed.items():
                for script, obs in zip(scripts, observations, strict=True):
                    assert obs.connections == len(script.hops) + 1, (name, obs.connections)
                    start = max(obs.covered[c] for c in script.channels)
                    # Byte for byte the engine's messages.
                    for seq, text in obs.ordered + obs.ticks:
                        assert recorder.frames[seq] == text, (name, seq)
                    # Every ordered message once, in order, from its channel's cover on.
                    got = [seq for seq, _ in obs.ordered if seq > start]
                    assert got == expected_ordered(recorder, script.channels, start, obs.last_seq)
                    assert [s for s, _ in obs.ticks] == sorted({s for s, _ in obs.ticks})
            # The same scripts observe the same sequences, wherever they were served.
            for i in range(len(scripts)):
                runs = [observed[name][i] for name in topologies]
                lo = max(max(o.covered.values()) for o in runs)
                hi = min(o.last_seq for o in runs)
                views = [[t for s, t in o.ordered if lo < s <= hi] for o in runs]
                assert views[0] == views[1] == views[2], i
            # Not a vacuous run: resumes across edges, user channels, frames of every kind.
            for observations in observed.values():
                assert sum(len(o.ordered) for o in observations) > 100
                assert sum(o.duplicates for o in observations) >= 0
            user_frames = [s for s, t in observed["redis"][1].ordered if "user:acme" in t]
            assert user_frames, "the user channel carried the bettor's money"
            stats = [e.hub.edge_statistics() for e in (unix_a, unix_b, *redis_edges)]
            assert all(s.gaps == 0 for s in stats), stats
            nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_edges_share_one_port(tmp_path: Path) -> None:
    config = game_config(tmp_path, relay_socket=tmp_path / "relay.sock")
    async with running_server(config), trio.open_nursery() as nursery:
        _, secret = make_key(config, SCOPES)
        a: EdgeInfo = await nursery.start(run_edge, config)
        b: EdgeInfo = await nursery.start(run_edge, config.with_overrides(feed_port=a.port))
        assert a.port == b.port
        async with trio.open_nursery() as conns:
            sockets = []
            for _ in range(40):
                ws = await connect_websocket_url(
                    conns, a.url, extra_headers=[("Authorization", f"Bearer {secret}")]
                )
                await _auth(ws)
                sockets.append(ws)
            served = a.feed.statistics().connections, b.feed.statistics().connections
            assert min(served) > 0 and sum(served) == 40, served
            for ws in sockets:
                await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_an_edge_joining_before_the_first_frame_syncs_on_a_keyframe(redis_url: str) -> None:
    """An engine that has published nothing yet (seq 0) still leaves keyframes in the
    stream for an edge that joins later (trimming to the replay window once dropped
    each one as it was written: such an edge waited for the first frame)."""
    from crashd.api.edge.links import open_link
    from crashd.api.edge.streams import StreamOutlet, follow_stream

    class Live:
        def public(self) -> dict[str, Any]:
            return {"status": "betting"}

        def rest_body(self) -> bytes:
            return b"{}"

    prefix = f"test-seq0-{random.randrange(1 << 30)}"
    hub = Hub(snapshot=lambda channel: {})
    relay = FeedRelay(hub, Live(), tick_s=0.02, keyframe_every_s=0.05)
    async with open_link(redis_url) as link, trio.open_nursery() as nursery:
        outlet = StreamOutlet(relay, link, prefix=prefix)
        await nursery.start(outlet.run)
        nursery.start_soon(relay.run)
        with trio.fail_after(10):
            while outlet.stats_written < 5:  # several keyframes, no frame
                await trio.sleep(0.02)
        assert hub.seq == 0
        edge = EdgeHub()
        with trio.fail_after(5):
            await nursery.start(
                lambda task_status: follow_stream(
                    link, edge, lambda epoch: None, prefix=prefix, task_status=task_status
                )
            )
        assert edge.synced and edge.epoch == hub.epoch
        nursery.cancel_scope.cancel()


def test_a_revoked_key_goes_to_every_edge_and_to_every_joining_one() -> None:
    wire = Wire()
    wire.relay.revoke("key_a")
    assert [(r.kind, r.channel) for r in wire.take()] == [(Kind.REVOKE, "key_a")]
    for i in range(REVOKED_KEPT + 1):
        wire.relay.revoke(f"key_{i}")
    wire.relay.revoke("key_3")  # again: the newest
    catch_up = wire.relay.catch_up()
    revokes = [r.channel for r in catch_up if r.kind is Kind.REVOKE]
    assert len(revokes) == REVOKED_KEPT and revokes[-1] == "key_3" and "key_0" not in revokes
    assert catch_up[-len(revokes) - 1].kind is Kind.STATE  # after the keyframe
    doc = (REPO / "docs" / "scale-out.md").read_text()
    assert f"newest {REVOKED_KEPT:,} revocations\n(`REVOKED_KEPT`)" in doc


@pytest.mark.slow
async def test_a_key_revoked_at_the_engine_closes_its_connections_on_every_edge(
    tmp_path: Path, redis_url: str
) -> None:
    """An edge over the Unix socket and one over Redis close the connections the key
    opened, with the engine's close code; another key's connections stay."""
    config = game_config(
        tmp_path,
        relay_socket=tmp_path / "relay.sock",
        redis_url=redis_url,
        redis_prefix=f"test-revoke-{tmp_path.name}",
    )
    async with running_server(config) as info, trio.open_nursery() as nursery:
        victim_id, victim = make_key(config, SCOPES)
        _, bystander = make_key(config, SCOPES)
        _, admin_secret = make_key(config, "admin:control")
        unix_edge: EdgeInfo = await nursery.start(run_edge, config.with_overrides(redis_url=None))
        redis_edge: EdgeInfo = await nursery.start(
            run_edge, config.with_overrides(relay_socket=None)
        )
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            r = await client.post("/api/v1/feed/token", headers=Api(client, victim).headers)
            engine_url = r.json()["ws_url"]
            urls = [engine_url, unix_edge.url, redis_edge.url]
            opened = []
            for url in urls:
                for secret in (victim, bystander):
                    ws = await connect_websocket_url(
                        nursery, url, extra_headers=[("Authorization", f"Bearer {secret}")]
                    )
                    await _auth(ws)
                    opened.append((url, secret, ws))
            r = await Api(client, admin_secret).post(
                f"/api/v1/admin/keys/{victim_id}/revoke", {"note": "leaked"}
            )
            assert r.status_code == 200, r.text
            assert r.json()["feed_connections_closed"] == 1  # the engine's own
        with trio.fail_after(15):
            for url, secret, ws in opened:
                if secret != victim:
                    continue
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
                assert closed.value.reason.code == 4001, (url, closed.value.reason)
        for url, secret, ws in opened:
            if secret == bystander:
                assert ws.closed is None, url
                with trio.fail_after(10):
                    await ws.ping()
                await ws.aclose()
        nursery.cancel_scope.cancel()


async def test_reads_on_trio_sockets_honour_the_urls_database_and_report_errors(
    redis_url: str,
) -> None:
    """``TrioReads`` (the edges' ``XREAD``) reads the database the URL names, as redis-py
    writes it, and a refused command is a ``LinkError`` (that connection not reused)."""
    from crashd.api.edge.links import LinkError, open_link

    key = f"test-reads-{random.randrange(1 << 30)}"
    sep = "&" if "?" in redis_url else "?"
    async with open_link(f"{redis_url}{sep}db=3") as db3, open_link(redis_url) as db0:
        await db3.append(key, [("5-1", b"five"), ("6-1", b"six")])
        assert await db3.read(key, "0-0") == [("5-1", b"five"), ("6-1", b"six")]
        assert await db3.read(key, "5-1", block_ms=100) == [("6-1", b"six")]
        assert await db3.read(key, "6-1", block_ms=50) == []  # a blocking read times out
        assert await db0.read(key, "0-0") == []  # another database
        await db0.set(key, b"a string")
        with pytest.raises(LinkError, match="WRONGTYPE"):
            await db0.read(key, "0-0")
        assert await db3.read(key, "0-0", count=1) == [("5-1", b"five")]
        await db0.delete(key)
        await db3.delete(key)

"""The fan-out hub without sockets: seq, replay, conflation, outbox bounds, resync.

Subscribers write into ``Pipe``, a real in-memory byte buffer with a capacity, standing
in for a socket's kernel buffer: ``send`` takes what fits and raises
``BlockingIOError`` when full, exactly the contract the hub relies on.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crashd.api.feed.frames import OPCODE_TEXT, decode_server_frame, encode_close, encode_text
from crashd.api.feed.hub import Frame, Hub, Outbox, ReplayBuffer, Subscriber
from crashd.api.wire import LIVE_MULTIPLIER, ROUND_UPDATES, CloseCode


class Pipe:
    """A bounded byte buffer with a non-blocking ``send``, read back as frames."""

    def __init__(self, capacity: int = 1 << 30) -> None:
        self.capacity = capacity
        self.buffer = bytearray()
        self.messages: list[dict[str, Any]] = []

    def send(self, data: bytes | memoryview) -> int:
        room = self.capacity - len(self.buffer)
        if room <= 0:
            raise BlockingIOError
        taken = bytes(data[:room])
        self.buffer += taken
        return len(taken)

    def read(self) -> list[dict[str, Any]]:
        """Consume the buffer (the client reads), returning the new complete messages."""
        out = []
        while (parsed := decode_server_frame(bytes(self.buffer))) is not None:
            opcode, payload, length = parsed
            del self.buffer[:length]
            assert opcode == OPCODE_TEXT
            out.append(json.loads(payload))
        self.messages.extend(out)
        return out


class Peer:
    """A subscriber wired to a pipe, with a writer that drains when told to."""

    def __init__(self, hub: Hub, capacity: int = 1 << 30) -> None:
        self.pipe = Pipe(capacity)
        self.backlogs = 0
        self.kills: list[tuple[int, str]] = []
        self.sub: Subscriber = hub.attach(self.pipe.send, self._on_backlog, self._on_kill)

    def _on_backlog(self) -> None:
        self.backlogs += 1

    def _on_kill(self, code: int, reason: str) -> None:
        self.kills.append((code, reason))

    def drain(self) -> None:
        """What the transport's writer task does once the socket is writable again."""
        outbox = self.sub.outbox
        while (chunk := outbox.peek()) is not None:
            try:
                n = self.pipe.send(chunk)
            except BlockingIOError:
                return
            outbox.consumed(n)
        self.sub.drained()

    def read_all(self) -> list[dict[str, Any]]:
        """Let the client read everything, draining the outbox in between."""
        while True:
            self.pipe.read()
            if not self.sub.outbox:
                self.pipe.read()
                return self.pipe.messages
            self.drain()


def stream(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in messages if "channel" in m]


def state(channel: str) -> dict[str, Any]:
    return {"channel": channel}


CHANNELS = [LIVE_MULTIPLIER, ROUND_UPDATES, "user:p1:u1"]
publishes = st.lists(st.sampled_from(CHANNELS), max_size=120)


@given(publishes)
def test_seq_is_contiguous_and_every_subscriber_sees_its_channels_in_order(chs: list[str]) -> None:
    hub = Hub(snapshot=state)
    everyone, ordered_only = Peer(hub), Peer(hub)
    hub.subscribe(everyone.sub, CHANNELS)
    hub.subscribe(ordered_only.sub, [ROUND_UPDATES])
    seqs = [hub.publish(c, {"type": "x", "i": i}) for i, c in enumerate(chs)]
    assert seqs == list(range(1, len(chs) + 1))
    got = stream(everyone.read_all())
    assert [m["seq"] for m in got] == seqs
    got = stream(ordered_only.read_all())
    assert [m["seq"] for m in got] == [
        s for s, c in zip(seqs, chs, strict=True) if c == ROUND_UPDATES
    ]
    # The subscribe-time snapshot comes first and is marked.
    assert everyone.pipe.messages[0]["type"] == "snapshot"
    assert everyone.pipe.messages[0]["reason"] == "subscribe"


@given(publishes, publishes, st.integers(1, 64))
def test_resume_replays_every_missed_ordered_message_exactly_once(
    before: list[str], after: list[str], capacity: int
) -> None:
    hub = Hub(snapshot=state, replay_capacity=capacity)
    first = Peer(hub)
    hub.subscribe(first.sub, CHANNELS)
    for c in before:
        hub.publish(c, {"type": "x"})
    seen = stream(first.read_all())
    last = seen[-1]["seq"] if seen else 0
    hub.detach(first.sub)  # the client is killed
    missed = [(hub.publish(c, {"type": "x"}), c) for c in after]

    second = Peer(hub)
    hub.subscribe(second.sub, CHANNELS, since_seq=last, epoch=hub.epoch)
    got = second.read_all()
    ordered_missed = [s for s, c in missed if c != LIVE_MULTIPLIER]
    evicted = hub.replay.evicted_through
    if ordered_missed and ordered_missed[0] <= evicted or (not ordered_missed and last < evicted):
        # Too old: a snapshot, marked as such, as of the newest seq.
        assert got == [got[0]] and got[0]["type"] == "snapshot"
        assert got[0]["reason"] == "resume_gap" and got[0]["seq"] == hub.seq
        return
    got_seqs = [m["seq"] for m in got]
    assert got_seqs == sorted(set(got_seqs)), "in order, no duplicates"
    assert [s for s in got_seqs if s in set(ordered_missed)] == ordered_missed
    ticks = [s for s, c in missed if c == LIVE_MULTIPLIER]
    got_ticks = [m["seq"] for m in got if m["channel"] == LIVE_MULTIPLIER]
    assert got_ticks == ticks[-1:], "missed ticks are conflated to the newest"


def test_resume_from_another_epoch_gets_a_snapshot() -> None:
    hub = Hub(snapshot=state)
    hub.publish(ROUND_UPDATES, {"type": "x"})
    peer = Peer(hub)
    hub.subscribe(peer.sub, [ROUND_UPDATES], since_seq=0, epoch="not-this-process")
    (msg,) = peer.read_all()
    assert msg["type"] == "snapshot" and msg["reason"] == "epoch_changed"


@given(
    st.lists(st.sampled_from([LIVE_MULTIPLIER, ROUND_UPDATES]), max_size=200), st.integers(0, 300)
)
def test_a_stalled_subscriber_gets_the_newest_tick_and_every_ordered_message(
    chs: list[str], capacity: int
) -> None:
    hub = Hub(snapshot=state, outbox_messages=10_000, outbox_bytes=1 << 30)
    peer = Peer(hub, capacity=capacity)  # the client reads nothing while we publish
    hub.subscribe(peer.sub, [LIVE_MULTIPLIER, ROUND_UPDATES])
    pub = [(hub.publish(c, {"type": "x"}), c) for c in chs]
    peer.pipe.capacity = 1 << 30
    got = stream(peer.read_all())
    seqs = [m["seq"] for m in got]
    assert seqs == sorted(set(seqs))
    assert [m["seq"] for m in got if m["channel"] == ROUND_UPDATES] == [
        s for s, c in pub if c == ROUND_UPDATES
    ]
    ticks = [s for s, c in pub if c == LIVE_MULTIPLIER]
    if ticks:
        assert ticks[-1] in seqs, "the newest tick is always delivered"


@given(
    st.lists(
        st.tuples(st.sampled_from([LIVE_MULTIPLIER, ROUND_UPDATES]), st.integers(0, 300)),
        max_size=300,
    ),
    st.integers(1, 20),
    st.integers(200, 4000),
)
def test_outbox_and_replay_memory_stay_bounded(
    pubs: list[tuple[str, int]], max_messages: int, max_bytes: int
) -> None:
    hub = Hub(
        snapshot=state, replay_capacity=16, outbox_messages=max_messages, outbox_bytes=max_bytes
    )
    peer = Peer(hub, capacity=0)  # never reads
    hub.subscribe(peer.sub, [LIVE_MULTIPLIER, ROUND_UPDATES])
    biggest = 0
    for channel, pad in pubs:
        hub.publish(channel, {"type": "x", "pad": "p" * pad})
        biggest = max(
            biggest, len(hub.latest[LIVE_MULTIPLIER].data) if LIVE_MULTIPLIER in hub.latest else 0
        )
        box = peer.sub.outbox
        snapshot = len(hub.snapshot_frame(peer.sub.channels, "resync"))
        assert box.ordered_count <= max(max_messages, 1)
        assert box.ordered_bytes <= max(max_bytes, snapshot)
        assert len(box) <= max_messages + 1 + 1  # + one conflated tick + a partial head
        assert len(hub.replay) <= 16
        if peer.kills:
            break
    if peer.kills:
        assert peer.kills[0][0] == CloseCode.SLOW_CONSUMER
        assert peer.sub not in hub.subscribers(ROUND_UPDATES)


def test_overflow_resyncs_with_a_snapshot_then_disconnects_a_hopeless_reader() -> None:
    hub = Hub(snapshot=state, outbox_messages=4, outbox_bytes=1 << 20, max_resyncs=2)
    peer = Peer(hub, capacity=0)
    hub.subscribe(peer.sub, [ROUND_UPDATES])
    for _ in range(5):
        hub.publish(ROUND_UPDATES, {"type": "x"})
    assert hub.statistics().resyncs == 1
    peer.pipe.capacity = 1 << 30
    got = peer.read_all()
    resync = [m for m in got if m.get("reason") == "resync"]
    # Subscribe snapshot + seq 1..3 fill the outbox; seq 4 overflows it: the backlog is
    # replaced by a snapshot as of seq 4, and the stream continues from there.
    assert len(resync) == 1 and resync[0]["seq"] == 4
    assert [m["seq"] for m in got[got.index(resync[0]) + 1 :]] == [5]
    # Once it has caught up, the count of consecutive resyncs starts again.
    assert peer.sub.resyncs == 0
    peer.pipe.capacity = len(peer.pipe.buffer)  # stalls again, for good
    for _ in range(20):
        hub.publish(ROUND_UPDATES, {"type": "x"})
    assert peer.kills and peer.kills[0][0] == CloseCode.SLOW_CONSUMER
    assert "slow consumer" in peer.kills[0][1]
    assert hub.subscribers(ROUND_UPDATES) == ()


def test_a_partially_sent_frame_is_finished_before_anything_else() -> None:
    hub = Hub(snapshot=state)
    peer = Peer(hub)
    hub.subscribe(peer.sub, [LIVE_MULTIPLIER])
    peer.pipe.read()
    peer.pipe.capacity = len(peer.pipe.buffer) + 10  # takes 10 bytes of the next frame
    for i in range(50):
        hub.publish(LIVE_MULTIPLIER, {"type": "tick", "i": i})
    peer.pipe.capacity = 1 << 30
    got = stream(peer.read_all())
    assert [m["i"] for m in got] == [0, 49], "the cut frame, then only the newest tick"
    assert peer.backlogs == 1


@given(st.lists(st.one_of(st.none(), st.sampled_from(["a", "b"])), max_size=60))
def test_outbox_keeps_one_frame_per_key_in_push_order(keys: list[str | None]) -> None:
    box = Outbox(max_messages=1000, max_bytes=1 << 20)
    frames = [(encode_text(str(i).encode()), k) for i, k in enumerate(keys)]
    for data, key in frames:
        assert box.push(data, key)
    out = []
    while (chunk := box.peek()) is not None:
        out.append(bytes(chunk))
        box.consumed(len(chunk))
    newest = {k: d for d, k in frames if k is not None}
    expected = [d for d, k in frames if k is None or newest[k] is d]
    assert out == expected


def test_replay_buffer_reports_a_gap_instead_of_guessing() -> None:
    buf = ReplayBuffer(3)
    for seq in (2, 4, 6, 8):
        buf.append(Frame(seq, ROUND_UPDATES, b""))
    assert [f.seq for f in buf.since(2) or []] == [4, 6, 8]
    assert buf.since(1) is None
    assert buf.since(8) == []


def test_close_frame_reason_is_cut_to_fit_a_control_frame() -> None:
    frame = encode_close(4009, "é" * 200)
    parsed = decode_server_frame(frame)
    assert parsed is not None
    opcode, payload, _ = parsed
    assert len(payload) <= 125
    payload[2:].decode()


def test_a_payload_cannot_forge_the_envelope() -> None:
    hub = Hub()
    with pytest.raises(ValueError):
        hub.publish(ROUND_UPDATES, {"type": "x", "seq": 1})
    assert hub.seq == 0, "nothing was published"


# -- sliced delivery (the feed server's mode: publish queues, a task flushes) ----------

ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("pub"), st.sampled_from(CHANNELS)),
        st.tuples(st.just("flush"), st.integers(1, 3)),
        st.tuples(
            st.just("sub"), st.integers(0, 2), st.sets(st.sampled_from(CHANNELS), min_size=1)
        ),
        st.tuples(
            st.just("unsub"), st.integers(0, 2), st.sets(st.sampled_from(CHANNELS), min_size=1)
        ),
    ),
    max_size=80,
)


def _play(actions: list[Any], sliced: bool) -> list[list[dict[str, Any]]]:
    hub = Hub(snapshot=state, epoch="e")
    if sliced:
        hub.on_pending = lambda: None
    peers = [Peer(hub) for _ in range(3)]
    for action in actions:
        if action[0] == "pub":
            hub.publish(action[1], {"type": "x"})
        elif action[0] == "flush":
            if sliced:
                hub.flush(action[1])
        elif action[0] == "sub":
            hub.subscribe(peers[action[1]].sub, sorted(action[2]))
        else:
            hub.unsubscribe(peers[action[1]].sub, sorted(action[2]))
    hub.flush_all()
    return [p.read_all() for p in peers]


@given(ACTIONS)
def test_sliced_delivery_shows_every_client_what_immediate_delivery_does(
    actions: list[Any],
) -> None:
    """Whatever the slices and wherever a (un)subscribe falls: the same messages, in
    the same order, with the same snapshots, as when every publish is delivered at once."""
    assert _play(actions, sliced=True) == _play(actions, sliced=False)


class CountingPipe(Pipe):
    def __init__(self, capacity: int = 1 << 30) -> None:
        super().__init__(capacity)
        self.sends = 0

    def send(self, data: bytes | memoryview) -> int:
        self.sends += 1
        return super().send(data)


def test_frames_queued_together_reach_a_subscriber_in_one_send() -> None:
    hub = Hub(snapshot=state)
    hub.on_pending = lambda: None
    pipes = [CountingPipe() for _ in range(3)]
    subs = [hub.attach(p.send, lambda: None, lambda c, r: None) for p in pipes]
    for sub in subs:
        hub.subscribe(sub, [LIVE_MULTIPLIER, ROUND_UPDATES])
    before = [p.sends for p in pipes]
    hub.publish(ROUND_UPDATES, {"type": "cashouts"})
    hub.publish(LIVE_MULTIPLIER, {"type": "tick"})
    assert [p.sends for p in pipes] == before, "queued, not sent"
    assert hub.flush(budget=2) is True  # two subscribers now, one left
    assert hub.flush(budget=2) is False
    assert [p.sends - b for p, b in zip(pipes, before, strict=True)] == [1, 1, 1]
    for p in pipes:
        assert [m["type"] for m in stream(p.read())] == ["cashouts", "tick"]


@given(st.integers(0, 400), st.lists(st.sampled_from(CHANNELS[:2]), min_size=2, max_size=6))
def test_a_batch_the_socket_takes_in_part_is_finished_in_order(
    capacity: int, chs: list[str]
) -> None:
    hub = Hub(snapshot=state, outbox_messages=10_000, outbox_bytes=1 << 30)
    hub.on_pending = lambda: None
    peer = Peer(hub, capacity=1 << 30)
    hub.subscribe(peer.sub, CHANNELS[:2])
    peer.pipe.read()
    peer.pipe.capacity = capacity  # the kernel buffer takes only part of the batch
    seqs = [hub.publish(c, {"type": "x", "pad": "y" * 50}) for c in chs]
    hub.flush_all()
    peer.pipe.capacity = 1 << 30
    got = [m["seq"] for m in stream(peer.read_all())]
    assert got == sorted(set(got))
    ordered = [s for s, c in zip(seqs, chs, strict=True) if c == ROUND_UPDATES]
    assert [s for s in got if s in ordered] == ordered
    ticks = [s for s, c in zip(seqs, chs, strict=True) if c == LIVE_MULTIPLIER]
    if ticks:
        assert ticks[-1] in got, "the newest tick is always delivered"


def test_the_documented_fanout_slice_is_the_code() -> None:
    from crashd.api.feed.server import FeedConfig
    from support.servers import REPO

    doc = (REPO / "docs" / "feed.md").read_text()
    slice_ = FeedConfig().fanout_slice
    assert f"| `fanout_slice` | {slice_} |" in doc and f"`fanout_slice` ({slice_})" in doc

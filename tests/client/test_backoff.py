"""The SDK's pure parts: the full-jitter backoff and the client's stream cursor.

No sockets: both are plain functions of their inputs (the random source is passed in),
so Hypothesis can check their bounds and the ordering rule directly.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crashd.api.client.backoff import Backoff
from crashd.api.client.messages import ChannelMessage, Snapshot
from crashd.api.client.stream import StreamCursor

backoffs = st.builds(
    lambda base, factor: Backoff(base=base, cap=base * factor),
    st.floats(min_value=1e-3, max_value=10.0),
    st.floats(min_value=1.0, max_value=1e4),
)
attempts = st.integers(min_value=0, max_value=10_000)
unit = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)


@given(backoffs, attempts, unit)
def test_delay_is_within_the_full_jitter_window(backoff: Backoff, attempt: int, r: float) -> None:
    delay = backoff.delay(attempt, lambda: r)
    assert 0.0 <= delay <= backoff.ceiling(attempt) <= backoff.cap
    assert backoff.ceiling(attempt) == min(backoff.cap, backoff.base * 2.0 ** min(attempt, 62))


@given(backoffs, attempts)
def test_window_grows_until_the_cap(backoff: Backoff, attempt: int) -> None:
    assert backoff.ceiling(attempt) <= backoff.ceiling(attempt + 1)
    assert backoff.ceiling(0) == backoff.base


@given(backoffs, attempts, st.floats(allow_nan=False))
def test_a_misbehaving_random_cannot_break_the_bounds(
    backoff: Backoff, attempt: int, r: float
) -> None:
    assert 0.0 <= backoff.delay(attempt, lambda: r) <= backoff.cap


def test_jitter_spreads_over_the_whole_window() -> None:
    # Full jitter, not "equal jitter": the extremes of random map to 0 and the ceiling.
    b = Backoff(base=1.0, cap=8.0)
    assert b.delay(3, lambda: 0.0) == 0.0
    assert b.delay(3, lambda: 0.999999) == pytest.approx(8.0, rel=1e-5)
    assert b.delay(10, lambda: 0.5) == 4.0  # capped window: 8 s, not 1024 s


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0.0)
    with pytest.raises(ValueError):
        Backoff(base=2.0, cap=1.0)
    with pytest.raises(ValueError):
        Backoff().ceiling(-1)


def msg(seq: int, channel: str = "round_updates") -> ChannelMessage:
    return ChannelMessage(seq, channel, "x", {"seq": seq, "channel": channel, "type": "x"})


def snap(seq: int, epoch: str = "e1", reason: str = "subscribe") -> Snapshot:
    return Snapshot(seq, epoch, reason, {"round_updates": {}})


@given(
    st.lists(st.integers(min_value=1, max_value=60), max_size=80),
    st.integers(min_value=0, max_value=30),
)
def test_cursor_delivers_strictly_increasing_seqs_exactly_once(
    arrivals: list[int], start: int
) -> None:
    """Whatever a server (or several reconnects) sends, the user sees each seq above the
    snapshot once, in increasing order: the seqs that arrived in order, duplicates dropped."""
    cursor = StreamCursor()
    assert cursor.accept(snap(start), "e1")
    delivered = [m.seq for m in map(msg, arrivals) if cursor.accept(m, "e1")]
    assert delivered == sorted(set(delivered))
    assert all(s > start for s in delivered)
    expected, high = [], start
    for s in arrivals:
        if s > high:
            expected.append(s)
            high = s
    assert delivered == expected
    assert cursor.duplicates == len(arrivals) - len(expected)


def test_cursor_resume_point_and_epochs() -> None:
    cursor = StreamCursor()
    assert cursor.resume_point is None
    cursor.accept(snap(10), "e1")
    assert cursor.accept(msg(11), "e1") and not cursor.accept(msg(11), "e1")
    assert (cursor.resume_point.seq, cursor.resume_point.epoch) == (11, "e1")  # type: ignore[union-attr]
    # A restarted server: its messages cannot be placed until its snapshot arrives…
    assert not cursor.accept(msg(3), "e2")
    # …which moves the cursor into the new stream, even though its seq is lower.
    assert cursor.accept(snap(2, "e2", "epoch_changed"), "e2")
    assert cursor.accept(msg(3), "e2")
    assert (cursor.resume_point.seq, cursor.resume_point.epoch) == (3, "e2")  # type: ignore[union-attr]
    # A snapshot of a channel added later never moves the cursor backwards.
    assert cursor.accept(snap(1, "e2"), "e2") and cursor.last_seq == 3

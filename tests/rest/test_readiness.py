"""The readiness probe's engine check judges the engine's *recent* ticks: the last
``RECENT_TICKS`` of those run in the last ``RECENT_TICKS_S``. A paused game runs no
ticks, so a late tick in the round before the pause must age out (CI once saw a paused
game answer 503 for a tick that was late before the pause began)."""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import trio
from hypothesis import given
from hypothesis import strategies as st

from crashd.api.ops.health import (
    MAX_TICK_LATENESS_S,
    RECENT_TICKS,
    RECENT_TICKS_S,
    engine_check,
)

LATE = MAX_TICK_LATENESS_S + 0.05


@dataclass
class FakeEngine:
    """The attributes ``engine_check`` reads of ``crashd.engine.driver.Engine``."""

    finished: bool = False
    tick_lateness: collections.deque[float] = field(default_factory=collections.deque)
    tick_times: collections.deque[float] = field(default_factory=collections.deque)

    def overdue_s(self) -> float:
        return 0.0

    def tick(self, at: float, lateness: float) -> None:
        self.tick_lateness.append(lateness)
        self.tick_times.append(at)


def services(engine: FakeEngine) -> Any:
    return SimpleNamespace(game=SimpleNamespace(game=SimpleNamespace(engine=engine)))


async def test_a_late_tick_before_a_pause_ages_out() -> None:
    now = trio.current_time()
    engine = FakeEngine()
    for i in range(50):  # a round at 20 Hz, its last tick late, then the pause
        engine.tick(now - 3.0 + i * 0.05, LATE if i == 49 else 0.001)
    assert not engine_check(services(engine)).ok
    paused = FakeEngine()
    for i in range(50):
        paused.tick(now - RECENT_TICKS_S - 3.0 + i * 0.05, LATE if i == 49 else 0.001)
    check = engine_check(services(paused))
    assert check.ok, check.reason


async def test_a_late_tick_followed_by_enough_ticks_on_time_ages_out() -> None:
    now = trio.current_time()
    engine = FakeEngine()
    engine.tick(now - 6.0, LATE)
    for i in range(RECENT_TICKS - 1):
        engine.tick(now - 5.0 + i * 0.05, 0.001)
    assert not engine_check(services(engine)).ok  # one of the last RECENT_TICKS
    engine.tick(now, 0.001)
    assert engine_check(services(engine)).ok


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=0.0, max_value=3 * RECENT_TICKS_S),  # seconds ago
            st.sampled_from([0.0, 0.01, MAX_TICK_LATENESS_S, LATE, 2.0]),
        ),
        max_size=3 * RECENT_TICKS,
    )
)
async def test_ready_exactly_when_no_recent_tick_was_late(ticks: list[tuple[float, float]]) -> None:
    now = trio.current_time()
    ordered = sorted(ticks, key=lambda t: -t[0])  # oldest first, as the driver appends
    engine = FakeEngine()
    for ago, lateness in ordered:
        engine.tick(now - ago, lateness)
    recent = [late for ago, late in ordered[-RECENT_TICKS:] if ago < RECENT_TICKS_S - 0.5]
    old = [late for ago, late in ordered if ago > RECENT_TICKS_S + 0.5]
    check = engine_check(services(engine))
    if any(late > MAX_TICK_LATENESS_S for late in recent):
        assert not check.ok and "ticks are late" in check.reason
    if check.ok is False:
        # Only a tick among the last RECENT_TICKS and within the window can be the cause.
        assert any(
            late > MAX_TICK_LATENESS_S
            for ago, late in ordered[-RECENT_TICKS:]
            if ago <= RECENT_TICKS_S + 0.5
        ), (check.reason, old)


def test_the_operations_guide_states_the_bounds() -> None:
    text = re.sub(r"\s+", " ", (Path(__file__).parents[2] / "docs" / "operations.md").read_text())
    assert (
        f"the last {RECENT_TICKS} ticks of the last {RECENT_TICKS_S:g} s were under "
        f"{MAX_TICK_LATENESS_S * 1000:g} ms late"
    ) in text

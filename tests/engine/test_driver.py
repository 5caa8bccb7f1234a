"""The Trio driver under ``MockClock(autojump_threshold=0)``: hours of game time in
seconds, and every instant checked to the millisecond."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
import trio
import trio.testing

from crashd.engine.bounds import MAX_MULTIPLIER
from crashd.engine.curve import ms_at
from crashd.engine.driver import Engine, EngineNotRunning
from crashd.engine.fairness import ChainReader, build_chain, crash_point
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.events import (
    BetAccepted,
    BetLost,
    BetRefunded,
    BettingOpened,
    CashedOut,
    Crashed,
    Event,
    Rejected,
    RoundSettled,
    RoundVoided,
    RunningStarted,
    Stopped,
    Tick,
    TooLate,
)
from crashd.engine.round.tables import Phase

SALT = "crashd-test-salt"
READER = ChainReader(build_chain(bytes(range(1, 33)), 2_000, interval=100))
FAST = RoundConfig(betting_ms=1_000, pause_ms=500, max_bets_per_user=2, max_profit=50_000)


def crash_of(round_id: int) -> int:
    return crash_point(READER.game_hash(round_id), SALT)


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


class Recorder:
    """An observer that keeps everything, with the engine clock at each delivery."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.events: list[Event] = []
        self.seen_at: list[int] = []
        engine.add_observer(self)

    def __call__(self, events: Sequence[Event]) -> None:
        now = self.engine.now_ms()
        self.events.extend(events)
        self.seen_at.extend([now] * len(events))

    def of(self, kind: type) -> list:
        return [e for e in self.events if isinstance(e, kind)]


def new_engine(first_game: int = 1, config: RoundConfig = FAST, tick_hz: int = 20) -> Engine:
    return Engine(
        games=READER.games(first_game),
        salt=SALT,
        first_game=first_game,
        config=config,
        tick_hz=tick_hz,
    )


async def test_a_thousand_rounds_land_on_the_exact_millisecond(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rounds = 1_000
    engine = new_engine(first_game=7, tick_hz=5)
    rec = Recorder(engine)
    rng = random.Random(3)
    answers: list[tuple[str, int, Event]] = []  # (what was expected, asked at, answer)
    send, receive = trio.open_memory_channel[Sequence[Event]](10**6)
    engine.add_observer(send.send_nowait)

    async def cash_out_at(ms: int, ticket: str, expect: str) -> None:
        await trio.sleep_until(engine.time_of(ms))
        (answer,) = await engine.cash_out(ticket)
        answers.append((expect, ms, answer))

    async def player(nursery: trio.Nursery) -> None:
        n = 0
        async for batch in receive:
            for e in batch:
                if isinstance(e, BettingOpened):
                    for user in range(3):
                        n += 1
                        target = rng.choice(
                            [
                                None,
                                101,
                                rng.randint(101, 300),
                                crash_of(e.round_id),
                                crash_of(e.round_id) + 1,
                            ]
                        )
                        if target is not None and target > MAX_MULTIPLIER:
                            target = None
                        await engine.place_bet(
                            f"r{e.round_id}-{user}", user, rng.randint(1, 5_000), target
                        )
                elif isinstance(e, RunningStarted):
                    crash_at = e.at_ms + ms_at(min(crash_of(e.round_id), MAX_MULTIPLIER))
                    if crash_at > e.at_ms:
                        nursery.start_soon(cash_out_at, crash_at - 1, f"r{e.round_id}-0", "early")
                    nursery.start_soon(cash_out_at, crash_at, f"r{e.round_id}-1", "crash")
                    # A bet placed while running goes to the next round, and says so.
                    (queued,) = await engine.place_bet(f"q{e.round_id}", 9, 10)
                    assert isinstance(queued, BetAccepted) and queued.queued
                    assert queued.round_id == e.round_id + 1
                elif isinstance(e, Crashed) and e.round_id == 7 + rounds - 1:
                    engine.stop()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(player, nursery)
        await nursery.start(engine.run)
        await engine.wait_finished()
        send.close()

    events = rec.events
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    crashes = rec.of(Crashed)
    assert [c.round_id for c in crashes] == list(range(7, 7 + rounds))
    starts = {e.round_id: e.at_ms for e in rec.of(RunningStarted)}
    for c in crashes:
        assert c.game_hash == READER.game_hash(c.round_id)
        assert c.crash_point == crash_point(c.game_hash, SALT)
        assert c.at_ms == starts[c.round_id] + ms_at(min(c.crash_point, MAX_MULTIPLIER))
    # The engine published each timed event at the very millisecond it happened.
    for e, seen in zip(events, rec.seen_at, strict=True):
        if isinstance(e, (Crashed, CashedOut, Tick, RunningStarted, BettingOpened)):
            assert seen == e.at_ms, e
    # Rounds follow each other without drift: next opens exactly when the pause ends.
    opened = {e.round_id: e.at_ms for e in rec.of(BettingOpened)}
    for c in crashes[:-1]:
        assert opened[c.round_id + 1] == c.pause_ends_at_ms
    # Manual cashouts one ms before the crash win; at the crash ms they are too late.
    assert len(answers) >= rounds
    for expect, asked, answer in answers:
        assert answer.at_ms == asked
        if expect == "early":
            assert isinstance(answer, (CashedOut, Rejected)), answer
            if isinstance(answer, Rejected):  # already won by its auto target
                assert answer.reason == "already_cashed_out"
        else:
            assert isinstance(answer, (TooLate, Rejected)), answer
    # Every accepted bet has exactly one outcome; auto targets pay exactly.
    accepted = {e.ticket for e in rec.of(BetAccepted)}
    settled = [e.ticket for e in events if isinstance(e, (CashedOut, BetLost, BetRefunded))]
    assert sorted(settled) == sorted(accepted)
    for e in rec.of(CashedOut):
        assert e.payout == e.stake * e.multiplier // 100
        assert e.at_ms == starts[e.round_id] + e.elapsed_ms
    (stopped,) = rec.of(Stopped)
    assert stopped.next_game == 7 + rounds and engine.next_game == 7 + rounds
    assert engine.statistics().rounds_played == rounds - 1


@pytest.mark.parametrize("hz", [20, 100])
async def test_ticks_sit_on_an_absolute_grid(
    autojump_clock: trio.testing.MockClock, hz: int
) -> None:
    engine = new_engine(tick_hz=hz)
    rec = Recorder(engine)
    stalls: list[tuple[int, int]] = []  # (tick it stalled on, engine ms it woke at)

    def stall(events: Sequence[Event]) -> None:
        # Make the loop late twice in round 2: 37 ms, then more than two periods.
        for e in events:
            if isinstance(e, Tick) and e.round_id == 2 and e.elapsed_ms > 0 and len(stalls) < 2:
                gap = 37 if not stalls else 2 * 1000 // hz + 4
                stalls.append((e.at_ms, e.at_ms + gap))
                autojump_clock.jump(gap / 1000)

    engine.add_observer(stall)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        while not rec.of(Crashed) or rec.of(Crashed)[-1].round_id < 4:
            await trio.sleep(1)
        engine.stop()
    starts = {e.round_id: e.at_ms for e in rec.of(RunningStarted)}
    assert len(stalls) == 2
    for rid in (1, 2, 3, 4):
        ticks = [t.at_ms for t in rec.of(Tick) if t.round_id == rid]
        crash = [c for c in rec.of(Crashed) if c.round_id == rid][0]
        expected = []
        for k in range(10**6):
            at = starts[rid] + k * 1000 // hz
            if at >= crash.at_ms:
                break
            # A tick the loop overslept is taken once, late, when it wakes; the grid
            # itself never moves (absolute deadlines: no drift).
            late = [woke for since, woke in stalls if since < at <= woke]
            expected.append(late[0] if late else at)
        assert ticks == sorted(set(expected))


async def test_commands_are_handled_at_once(autojump_clock: trio.testing.MockClock) -> None:
    engine = new_engine(tick_hz=1)  # a tick a second: a cashout must not wait for one
    rec = Recorder(engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        # Find a round long enough to cash out 1,234 ms in.
        rid = next(r for r in range(1, 2_000) if ms_at(min(crash_of(r), MAX_MULTIPLIER)) > 2_000)
        while engine.sequencer.current.round_id < rid:
            await trio.sleep(0.5)
        (acc,) = await engine.place_bet("me", "u", 1_000)
        assert isinstance(acc, BetAccepted) and acc.round_id == rid and not acc.queued
        start = engine.sequencer.current.closes_at_ms
        await trio.sleep_until(engine.time_of(start + 1_234))
        before = trio.current_time()
        (won,) = await engine.cash_out("me")
        assert trio.current_time() == before
        assert isinstance(won, CashedOut) and won.at_ms == start + 1_234
        assert won.elapsed_ms == 1_234 and won.kind == "manual"
        assert won in rec.events  # published too, in order
        (again,) = await engine.cash_out("me")
        assert isinstance(again, Rejected) and again.reason == "already_cashed_out"
        engine.stop(void=True)


async def test_snapshot_keeps_the_secret_until_the_crash(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = new_engine()
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.place_bet("a", ("partner", "sandbox", 1), 500)
        snap = engine.snapshot()
        assert snap.status == "betting" and snap.betting_closes_at_ms == 1_000
        assert [p.ticket for p in snap.top] == ["a"] and snap.participant_count == 1
        assert [p.ticket for p in engine.user_bets(("partner", "sandbox", 1))] == ["a"]
        assert [p.ticket for p in engine.participants(0, 10)] == ["a"]
        game_hash = READER.game_hash(1)
        while engine.sequencer.current.phase is not Phase.CRASHED:
            snap = engine.snapshot()
            public = snap.to_public_dict()
            assert public["crash_point"] is None and public["game_hash"] is None
            assert game_hash not in repr(public)
            if snap.status == "running":
                assert snap.elapsed_ms == engine.now_ms() - 1_000
            await trio.sleep(0.05)
        snap = engine.snapshot()
        assert snap.status == "crashed" and snap.game_hash == game_hash
        assert snap.crash_point == crash_of(1) and snap.pause_ends_at_ms is not None
        assert snap.to_public_dict()["top"][0]["user"] == ["partner", "sandbox", 1]
        engine.stop()


async def test_graceful_stop_ends_after_the_crash(autojump_clock: trio.testing.MockClock) -> None:
    engine = new_engine()
    rec = Recorder(engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.place_bet("a", "u", 100)
        await trio.sleep(1.0)  # running (or crashed at 1.00x)
        await engine.place_bet("q", "u", 100)  # queued for round 2
        engine.stop()
        (rej,) = await engine.place_bet("late", "v", 100)
        assert isinstance(rej, Rejected) and rej.reason == "engine_stopping"
        await engine.wait_finished()
        finished_at = engine.now_ms()
    kinds = [type(e) for e in rec.events if not isinstance(e, Tick)]
    assert kinds[-1] is Stopped and Crashed in kinds
    (refund,) = rec.of(BetRefunded)
    assert refund.ticket == "q" and refund.round_id == 2
    (crashed,) = rec.of(Crashed)
    assert finished_at == crashed.at_ms  # run() returned at the crash, not a pause later
    assert engine.next_game == 2


async def test_stop_with_void_refunds_now(autojump_clock: trio.testing.MockClock) -> None:
    engine = new_engine()
    rec = Recorder(engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.place_bet("a", "u", 100)
        await trio.sleep(0.2)
        answer = engine.stop(void=True)
        assert [type(e) for e in answer] == [BetRefunded, RoundVoided, Stopped]
        await engine.wait_finished()
        assert engine.now_ms() == 200
    assert rec.events[-1] == answer[-1]


async def test_void_round_wakes_the_loop_and_goes_on(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = new_engine()
    rec = Recorder(engine)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await engine.place_bet("a", "u", 100)
        await trio.sleep(0.3)
        events = engine.void_round()
        assert [type(e) for e in events] == [BetRefunded, RoundVoided, BettingOpened]
        assert events[-1].round_id == 2 and events[-1].at_ms == 300
        await trio.sleep(1.001)  # round 2's betting closes on its own schedule
        assert [e.at_ms for e in rec.of(RunningStarted)] == [1_300]
        engine.stop(void=True)


async def test_a_failing_observer_stops_the_engine(autojump_clock: trio.testing.MockClock) -> None:
    engine = new_engine()

    def broken(events: Sequence[Event]) -> None:
        if any(isinstance(e, RoundSettled) for e in events):
            raise ValueError("ledger bug")

    engine.add_observer(broken)
    with pytest.raises(RuntimeError, match="observer") as info:
        await engine.run()
    assert isinstance(info.value.__cause__, ValueError)


async def test_commands_need_a_running_engine() -> None:
    engine = new_engine()
    with pytest.raises(EngineNotRunning):
        await engine.cash_out("x")


async def test_observers_cannot_reenter_but_can_snapshot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    engine = new_engine()
    seen: list[object] = []

    def observer(events: Sequence[Event]) -> None:
        if any(isinstance(e, RunningStarted) for e in events):
            snap = engine.snapshot()  # consistent with the batch being delivered
            seen.append((snap.status, snap.crash_point))
            try:
                engine.stop()
            except RuntimeError as exc:
                seen.append(str(exc))

    engine.add_observer(observer)
    async with trio.open_nursery() as nursery:
        await nursery.start(engine.run)
        await trio.sleep(1.5)
        engine.stop(void=True)
    assert seen[0] in (("running", None), ("crashed", crash_of(1)))
    assert "inside an observer" in str(seen[1])

"""Unit tests of the pure round state machine: one rule per test, exact instants."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crashd.engine.bounds import MAX_MULTIPLIER
from crashd.engine.curve import ms_at, multiplier_at
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
from crashd.engine.round.machine import BetState, Round, SeqCounter
from crashd.engine.round.sequencer import Sequencer
from crashd.engine.round.tables import COMMANDS, LEGAL, REASONS, TRANSITIONS, Command, Phase
from support.servers import REPO

HASH = "6774ddd3dfe94e2c966d4ca5c5ed6dcd1f6a4fdab87ad12677ee7c5b96d6a3f5"
CFG = RoundConfig(betting_ms=1000, pause_ms=500)


def new_round(crash: int, config: RoundConfig = CFG) -> Round:
    r = Round(
        round_id=7,
        game_hash=HASH,
        crash_point=crash,
        config=config,
        opens_at_ms=0,
        seq=SeqCounter(),
    )
    r.open([])
    return r


def only(events: list[Event], kind: type) -> list:
    return [e for e in events if isinstance(e, kind)]


def start_of(r: Round) -> int:
    r.advance(r.closes_at_ms)
    assert r.phase is Phase.RUNNING and r.started_at_ms == r.closes_at_ms
    return r.started_at_ms


# -- tables ----------------------------------------------------------------------------


def test_tables_cover_every_phase_and_command() -> None:
    for phase in Phase:
        assert set(COMMANDS[phase]) == set(Command)
        for reason in COMMANDS[phase].values():
            assert reason is LEGAL or reason in REASONS
    # Every reason code is stable snake_case.
    assert all(r.isidentifier() and r == r.lower() for r in REASONS)
    assert TRANSITIONS[Phase.ENDED] == {} and TRANSITIONS[Phase.VOIDED] == {}


def test_phases_follow_the_clock() -> None:
    r = new_round(250)
    assert r.next_deadline_ms() == 1000
    events = r.advance(999)
    assert events == [] and r.phase is Phase.BETTING
    events = r.advance(1000)
    assert [type(e) for e in events] == [RunningStarted]
    crash_at = 1000 + ms_at(250)
    assert r.next_deadline_ms() == crash_at
    assert r.advance(crash_at - 1) == [] and r.phase is Phase.RUNNING
    events = r.advance(crash_at)
    assert [type(e) for e in events] == [Crashed, RoundSettled]
    crashed = events[0]
    assert isinstance(crashed, Crashed)
    assert crashed.at_ms == crash_at and crashed.crash_point == 250
    assert crashed.game_hash == HASH and crashed.pause_ends_at_ms == crash_at + 500
    r.advance(crash_at + 500)
    assert r.phase is Phase.ENDED and r.next_deadline_ms() is None


def test_time_never_goes_backwards() -> None:
    r = new_round(250)
    r.advance(10)
    with pytest.raises(AssertionError):
        r.advance(9)


# -- bets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stake", "target", "reason"),
    [
        (0, None, "stake_too_small"),
        (1001, None, "stake_too_large"),
        (10, 100, "invalid_target"),
        (10, MAX_MULTIPLIER + 1, "invalid_target"),
    ],
)
def test_bet_limits(stake: int, target: int | None, reason: str) -> None:
    r = new_round(250, dataclasses.replace(CFG, min_stake=1, max_stake=1000))
    (event,) = r.place_bet(0, "t", "u", stake, target)
    assert isinstance(event, Rejected) and event.reason == reason
    assert r.bets == {} and r.total_stake == 0


def test_bets_per_user_and_duplicate_tickets() -> None:
    r = new_round(250, dataclasses.replace(CFG, max_bets_per_user=2, max_bets_per_round=3))
    assert isinstance(r.place_bet(0, "a", "u", 10)[0], BetAccepted)
    assert r.place_bet(0, "a", "v", 10)[0].reason == "duplicate_ticket"  # type: ignore[attr-defined]
    assert isinstance(r.place_bet(0, "b", "u", 10)[0], BetAccepted)
    assert r.place_bet(0, "c", "u", 10)[0].reason == "too_many_bets"  # type: ignore[attr-defined]
    assert isinstance(r.place_bet(0, "c", "v", 10)[0], BetAccepted)
    assert r.place_bet(0, "d", "w", 10)[0].reason == "round_full"  # type: ignore[attr-defined]


def test_rejected_command_changes_nothing() -> None:
    r = new_round(250)
    r.place_bet(0, "a", "u", 10, 200)
    before = (
        r.phase,
        dict((t, dataclasses.astuple(b)) for t, b in r.bets.items()),
        r.total_stake,
        r.open_stake,
        r.total_payout,
    )
    for events in (
        r.cash_out(5, "a"),
        r.cash_out(5, "zz"),
        r.set_auto_cashout(5, "a", 50),
        r.place_bet(5, "a", "x", 10),
        r.set_auto_cashout(5, "nope", 300),
    ):
        assert [type(e) for e in events] == [Rejected]
    after = (
        r.phase,
        dict((t, dataclasses.astuple(b)) for t, b in r.bets.items()),
        r.total_stake,
        r.open_stake,
        r.total_payout,
    )
    assert before == after


def test_auto_cashout_can_be_changed_only_while_betting() -> None:
    r = new_round(250)
    r.place_bet(0, "a", "u", 10, 200)
    assert r.set_auto_cashout(1, "a", 150)[0].target == 150  # type: ignore[attr-defined]
    assert r.set_auto_cashout(2, "a", None)[0].target is None  # type: ignore[attr-defined]
    start_of(r)
    (rej,) = r.set_auto_cashout(1001, "a", 120)
    assert isinstance(rej, Rejected) and rej.reason == "round_closed"


# -- cashouts --------------------------------------------------------------------------


def test_manual_cashout_strictly_before_the_crash_instant() -> None:
    r = new_round(250)
    r.place_bet(0, "a", "u", 1000)
    r.place_bet(0, "b", "v", 1000)
    start = start_of(r)
    crash_at = start + ms_at(250)
    (won,) = r.cash_out(crash_at - 1, "a")
    assert isinstance(won, CashedOut) and won.kind == "manual" and won.at_ms == crash_at - 1
    assert won.multiplier == multiplier_at(ms_at(250) - 1) < 250
    assert won.payout == 1000 * won.multiplier // 100
    events = r.cash_out(crash_at, "b")  # the crash is settled first, then the answer
    assert [type(e) for e in events] == [Crashed, BetLost, RoundSettled, TooLate]
    assert events[-1].crashed_at == 250  # type: ignore[attr-defined]
    # One definitive answer each time, never two, never silence.
    assert r.cash_out(crash_at + 1, "a")[0].reason == "already_cashed_out"  # type: ignore[attr-defined]
    assert isinstance(r.cash_out(crash_at + 2, "b")[0], TooLate)


def test_cashout_before_running_is_refused() -> None:
    r = new_round(250)
    r.place_bet(0, "a", "u", 10)
    (rej,) = r.cash_out(10, "a")
    assert isinstance(rej, Rejected) and rej.reason == "round_not_running"
    assert r.bets["a"].state is BetState.OPEN


def test_crash_at_one_is_instant() -> None:
    r = new_round(100)
    r.place_bet(0, "a", "u", 10, 101)
    events = r.advance(1000)
    assert [type(e) for e in events] == [RunningStarted, Crashed, BetLost, RoundSettled]
    assert events[1].at_ms == 1000  # type: ignore[attr-defined]


@pytest.mark.parametrize("crash", [101, 200, 374, 20_000, 20_001, 1_000_000])
def test_auto_cashout_wins_iff_target_at_most_crash(crash: int) -> None:
    r = new_round(crash)
    r.place_bet(0, "eq", "u1", 1000, crash)
    r.place_bet(0, "above", "u2", 1000, crash + 1)
    r.place_bet(0, "below", "u3", 1000, max(101, crash - 1))
    start = start_of(r)
    events = r.advance(start + ms_at(crash) + 10)
    won = {e.ticket: e for e in only(events, CashedOut)}
    assert set(won) == {"eq", "below"}
    assert won["eq"].multiplier == crash and won["eq"].payout == 10 * crash
    for e in won.values():
        assert e.kind == "auto" and e.at_ms == start + ms_at(e.multiplier)
    assert [e.ticket for e in only(events, BetLost)] == ["above"]
    # Cashouts at the crash millisecond come before the crash event.
    kinds = [type(e) for e in events]
    assert kinds.index(Crashed) > max(i for i, k in enumerate(kinds) if k is CashedOut)


def test_crash_point_above_the_curve_stops_at_max() -> None:
    r = new_round(MAX_MULTIPLIER * 7)
    r.place_bet(0, "a", "u", 100, MAX_MULTIPLIER)
    start = start_of(r)
    events = r.advance(start + ms_at(MAX_MULTIPLIER))
    (won,) = only(events, CashedOut)
    (crashed,) = only(events, Crashed)
    assert won.multiplier == MAX_MULTIPLIER
    assert crashed.crash_point == MAX_MULTIPLIER * 7 and crashed.multiplier == MAX_MULTIPLIER


def test_ticks_report_the_multiplier_of_their_moment() -> None:
    r = new_round(1000)
    assert r.tick(500) == []  # no ticks while betting
    start = start_of(r)
    (tick,) = r.tick(start + 1234)
    assert isinstance(tick, Tick)
    assert tick.elapsed_ms == 1234 and tick.multiplier == multiplier_at(1234)


# -- max profit ------------------------------------------------------------------------


def test_force_point_cashes_everyone_out_exactly() -> None:
    cfg = dataclasses.replace(CFG, max_profit=1000)
    r = new_round(10_000, cfg)
    r.place_bet(0, "a", "u1", 500)
    r.place_bet(0, "b", "u2", 500)
    r.place_bet(0, "c", "u3", 1000, 130)
    start = start_of(r)
    # Open 2000 at start: force point 100 * (2000 + 1000) // 2000 = 150.
    assert r.force_point() == 150
    events = r.advance(start + ms_at(130))
    (auto,) = only(events, CashedOut)
    assert auto.multiplier == 130 and auto.payout == 1300
    # Headroom 3000 - 1300 over open 1000: 170.
    assert r.force_point() == 170
    events = r.advance(start + ms_at(170))
    forced = only(events, CashedOut)
    assert {e.ticket for e in forced} == {"a", "b"}
    assert all(
        e.kind == "forced" and e.multiplier == 170 and e.at_ms == start + ms_at(170) for e in forced
    )
    assert r.total_payout == 1300 + 850 + 850 <= r.total_stake + 1000


def test_zero_max_profit_returns_stakes_at_start() -> None:
    r = new_round(500, dataclasses.replace(CFG, max_profit=0))
    r.place_bet(0, "a", "u", 333)
    # The force point is 1.00x: due at the first instant of running.
    started, won = r.advance(r.closes_at_ms)
    assert isinstance(started, RunningStarted)
    assert isinstance(won, CashedOut) and won.payout == 333 and won.kind == "forced"
    assert won.at_ms == started.at_ms and won.multiplier == 100


# -- void ------------------------------------------------------------------------------


def test_void_refunds_open_bets_keeps_wins_and_reveals() -> None:
    r = new_round(1000)
    r.place_bet(0, "a", "u1", 100)
    r.place_bet(0, "b", "u2", 100)
    start = start_of(r)
    r.cash_out(start + 100, "a")
    events = r.void(start + 200, "operator")
    assert [type(e) for e in events] == [BetRefunded, RoundVoided]
    assert events[0].ticket == "b"  # type: ignore[attr-defined]
    assert events[1].game_hash == HASH and events[1].crash_point == 1000  # type: ignore[attr-defined]
    assert r.bets["a"].state is BetState.WON and r.bets["b"].state is BetState.REFUNDED
    assert r.void(start + 300, "again")[0].reason == "round_voided"  # type: ignore[attr-defined]


def test_a_crashed_round_cannot_be_voided() -> None:
    r = new_round(100)
    r.advance(1000)
    (rej,) = r.void(1001, "operator")
    assert isinstance(rej, Rejected) and rej.reason == "round_settled"


# -- secrecy ---------------------------------------------------------------------------


def test_nothing_before_the_crash_reveals_it() -> None:
    r = new_round(777)
    events = r.place_bet(0, "a", "u", 10, 800) + r.advance(1000)
    events += r.tick(1500) + r.cash_out(1600, "zz")
    snap = r.snapshot(1600).to_public_dict()
    assert snap["crash_point"] is None and snap["game_hash"] is None
    text = repr(events) + repr(snap) + repr([e.to_public_dict() for e in events])
    assert HASH not in text and "777" not in text
    assert all(not hasattr(e, "crash_point") for e in events)
    crashed = r.advance(1000 + ms_at(777))
    assert only(crashed, Crashed)[0].game_hash == HASH
    assert r.snapshot(1000 + ms_at(777)).game_hash == HASH


# -- sequencer -------------------------------------------------------------------------


def chain_sequencer(config: RoundConfig = CFG, length: int = 50) -> tuple[Sequencer, ChainReader]:
    reader = ChainReader(build_chain(bytes(range(32)), length, interval=10))
    seq = Sequencer(config=config, games=reader.games(1), salt="salt", first_game=1)
    return seq, reader


def test_rounds_use_chain_games_in_order_and_seq_is_contiguous() -> None:
    seq, reader = chain_sequencer()
    events = seq.start(0)
    now = 0
    while seq.current.round_id < 6:
        now = seq.next_deadline_ms() or now
        events += seq.advance(now)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    crashes = only(events, Crashed)
    assert [c.round_id for c in crashes] == [1, 2, 3, 4, 5]
    for c in crashes:
        assert c.game_hash == reader.game_hash(c.round_id)
        assert c.crash_point == crash_point(c.game_hash, "salt")
    opened = only(events, BettingOpened)
    for prev, nxt in zip(crashes, opened[1:], strict=True):
        assert nxt.at_ms == prev.pause_ends_at_ms  # no drift between rounds


def test_bets_while_running_are_queued_for_the_next_round() -> None:
    seq, _ = chain_sequencer()
    seq.start(0)
    seq.advance(1000)
    assert seq.current.phase in (Phase.RUNNING, Phase.CRASHED)
    (acc,) = seq.place_bet(1000, "q", "u", 50, 150)
    assert isinstance(acc, BetAccepted) and acc.queued and acc.round_id == 2
    assert seq.cash_out(1000, "q")[0].reason == "round_not_running"  # type: ignore[attr-defined]
    assert seq.set_auto_cashout(1000, "q", 300)[0].round_id == 2
    now = 1000
    while seq.current.round_id == 1:
        now = seq.next_deadline_ms() or now
        events = seq.advance(now)
    (opened,) = only(events, BettingOpened)
    assert opened.round_id == 2 and opened.bets == 1
    assert seq.current.bets["q"].auto_cashout == 300


def test_stop_finishes_after_the_crash_and_refunds_the_queue() -> None:
    seq, _ = chain_sequencer()
    seq.start(0)
    seq.place_bet(0, "a", "u", 50)
    seq.advance(1000)
    seq.place_bet(1000, "q", "u", 50)  # queued (or, if round 1 crashed at 1.00x, also)
    events = seq.stop(1000)
    refunds = only(events, BetRefunded)
    assert [e.ticket for e in refunds] == ["q"]
    assert seq.place_bet(1001, "late", "v", 50)[0].reason == "engine_stopping"  # type: ignore[attr-defined]
    now = 1001
    while not seq.finished:
        now = seq.next_deadline_ms() or now
        events += seq.advance(now)
    (stopped,) = only(events, Stopped)
    assert stopped.next_game == 2 and stopped.round_id == 1
    assert seq.next_deadline_ms() is None


def test_stop_with_void_refunds_the_current_round() -> None:
    seq, _ = chain_sequencer()
    seq.start(0)
    seq.place_bet(0, "a", "u", 50)
    events = seq.stop(10, void=True)
    assert [type(e) for e in events] == [BetRefunded, RoundVoided, Stopped]
    assert seq.finished


@settings(max_examples=300)
@given(
    salt=st.integers(0, 10**6).map(lambda n: f"salt-{n}"),
    stop_at=st.integers(0, 60_000),
    grace_ms=st.integers(0, 10_000),
)
def test_a_stop_with_grace_ends_within_it_in_every_phase(
    salt: str, stop_at: int, grace_ms: int
) -> None:
    """Stopped at any instant with ``grace_ms``: the engine has finished by
    ``stop_at + grace_ms``; the round was voided iff it was still betting or would have
    run past the grace; every open bet ends exactly once (won, lost or refunded)."""
    reader = ChainReader(build_chain(bytes(range(32)), 20, interval=10))
    seq = Sequencer(config=CFG, games=reader.games(1), salt=salt, first_game=1)
    events = seq.start(0)
    events += seq.place_bet(0, "a", "u", 50, 150)
    events += seq.place_bet(0, "b", "v", 50)
    events += seq.advance(stop_at)
    current = seq.current
    phase, crash_at = current.phase, current.crash_at_ms
    events += seq.stop(stop_at, grace_ms=grace_ms, reason="shutdown")
    now = stop_at
    while not seq.finished:
        deadline = seq.next_deadline_ms()
        assert deadline is not None and deadline <= stop_at + grace_ms
        now = deadline
        events += seq.advance(now)
    (stopped,) = only(events, Stopped)
    assert stopped.at_ms <= stop_at + grace_ms
    voided = only(events, RoundVoided)
    expect_void = phase is Phase.BETTING or (
        phase is Phase.RUNNING and crash_at is not None and crash_at - stop_at > grace_ms
    )
    assert bool(voided) == expect_void
    if expect_void:
        assert voided[0].round_id == current.round_id and voided[0].reason == "shutdown"
    # Each ticket of the current round ends exactly once.
    for ticket in ("a", "b"):
        if ticket not in current.bets:
            continue  # round 1 is over: these played there
        ends = [
            e
            for e in events
            if isinstance(e, (CashedOut, BetLost, BetRefunded))
            and e.ticket == ticket
            and e.round_id == current.round_id
        ]
        assert len(ends) == 1, (ticket, ends)


def test_a_stall_does_not_play_rounds_in_the_past() -> None:
    seq, _ = chain_sequencer(dataclasses.replace(CFG, max_lateness_ms=100))
    seq.start(0)
    seq.place_bet(0, "a", "u", 50, 101)
    events = seq.advance(1100)  # 100 ms late: still on schedule
    assert only(events, RunningStarted)[0].at_ms == 1000
    seq2, _ = chain_sequencer(dataclasses.replace(CFG, max_lateness_ms=100))
    seq2.start(0)
    events = seq2.advance(1101)  # later than that: starts when handled
    assert only(events, RunningStarted)[0].at_ms == 1101


def test_the_chain_running_out_stops_cleanly() -> None:
    seq, _ = chain_sequencer(length=2)
    events = seq.start(0)
    now = 0
    for _ in range(100):
        if seq.finished:
            break
        now = seq.next_deadline_ms() or now
        events += seq.advance(now)
        if not seq.finished and seq.current.phase is Phase.RUNNING:
            events += seq.place_bet(now, f"q{now}", "u", 10)
    assert seq.finished
    assert only(events, Stopped)[0].next_game == 3
    accepted = {e.ticket for e in only(events, BetAccepted)}
    settled = {e.ticket for e in events if isinstance(e, (CashedOut, BetLost, BetRefunded))}
    assert accepted == settled


def test_the_documented_tables_are_the_code() -> None:

    from crashd.engine.round.tables import describe_tables

    doc = (REPO / "docs" / "round-engine.md").read_text()
    begin, end = "<!-- tables:begin -->\n", "<!-- tables:end -->"
    assert doc[doc.index(begin) + len(begin) : doc.index(end)] == describe_tables()


@settings(max_examples=100)
@given(stakes=st.lists(st.integers(1, 10_000), min_size=0, max_size=60))
def test_snapshot_size_is_bounded_and_its_summary_exact(stakes: list[int]) -> None:
    """The snapshot lists at most TOP_PARTICIPANTS bets, the largest by stake (earlier
    first on ties), with exact counts and totals; the pages and per-user index give
    every bet."""
    from crashd.engine.bounds import TOP_PARTICIPANTS

    cfg = dataclasses.replace(CFG, max_bets_per_user=100, max_stake=10_000)
    r = new_round(500, cfg)
    for i, stake in enumerate(stakes):
        r.place_bet(0, f"t{i}", f"u{i % 3}", stake)
    snap = r.snapshot(0)
    assert snap.participant_count == len(stakes) and snap.total_stake == sum(stakes)
    expected = sorted(range(len(stakes)), key=lambda i: (-stakes[i], i))[:TOP_PARTICIPANTS]
    assert [p.ticket for p in snap.top] == [f"t{i}" for i in expected]
    everything = [p.ticket for p in r.participants(0, 1000)]
    assert everything == [f"t{i}" for i in range(len(stakes))]
    assert [p.ticket for p in r.participants(5, 3)] == everything[5:8]
    for u in range(3):
        assert [p.ticket for p in r.bets_of(f"u{u}")] == [
            f"t{i}" for i in range(len(stakes)) if i % 3 == u
        ]


def test_a_target_change_of_a_withdrawn_bet_is_refused() -> None:
    """A withdrawn bet (its funding failed) stays in the round as refunded while betting;
    changing or cancelling its target is input (its ticket is the caller's), refused
    with ``bet_refunded``, never an assertion, and changes nothing."""
    r = new_round(300)
    r.place_bet(100, "t1", "ann", 1_000, 150)
    [refunded] = only(r.withdraw(200, "t1", "funding_failed"), BetRefunded)
    assert r.bets["t1"].state is BetState.REFUNDED
    for target in (200, None):
        events = r.set_auto_cashout(300, "t1", target)
        [rejected] = only(events, Rejected)
        assert rejected.reason == "bet_refunded" and rejected.ticket == "t1"
        assert r.bets["t1"].auto_cashout == 150 and r.bets["t1"].state is BetState.REFUNDED
    assert (r.total_stake, r.open_stake) == (0, 0)

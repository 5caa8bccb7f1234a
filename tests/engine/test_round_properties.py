"""Property tests of the round engine: random command sequences against a reference model.

``RoundMachine`` drives one pure ``Round`` with bets, auto targets, cashouts, ticks,
voids and clock jumps (many of them landing on the exact instants that matter: the
crash millisecond and the one before, a target's millisecond, the force point's), and
compares every reply, event by event, with ``Model``: a deliberately naive restatement
of the rules (lists and sums recomputed from scratch, the force point found by binary
search instead of the engine's closed form). ``SequencerMachine`` plays many rounds
along a real chain and checks the cross-round invariants. Both check the invariants of
issue 3 after every step.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass

from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from crashd.engine.bounds import MAX_MULTIPLIER
from crashd.engine.curve import ms_at, multiplier_at
from crashd.engine.fairness import ChainReader, build_chain, crash_point
from crashd.engine.reasons import GAME_PAUSED
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.events import (
    AutoCashoutChanged,
    BetAccepted,
    BetLost,
    BetRefunded,
    BettingOpened,
    CashedOut,
    Crashed,
    Event,
    Paused,
    Rejected,
    Resumed,
    RoundSettled,
    RoundVoided,
    RunningStarted,
    Stopped,
    Tick,
    TooLate,
)
from crashd.engine.round.machine import Round, SeqCounter
from crashd.engine.round.sequencer import Sequencer
from crashd.engine.round.tables import Phase

TICKETS = [f"t{i}" for i in range(8)]
USERS = ["u0", "u1", ("p", "prod", 7)]


# -- the reference model ---------------------------------------------------------------


@dataclass
class MBet:
    ticket: str
    user: Hashable
    stake: int
    target: int | None
    outcome: str | None = None  # won / lost / refunded
    payout: int = 0


class Model:
    """The rules, restated as plainly as possible. Replies are normalised tuples."""

    def __init__(self, crash: int, cfg: RoundConfig) -> None:
        self.crash, self.stop, self.cfg = crash, min(crash, MAX_MULTIPLIER), cfg
        self.phase = "betting"
        self.closes = cfg.betting_ms
        self.start: int | None = None
        self.pause_end: int | None = None
        self.bets: dict[str, MBet] = {}

    def force(self) -> int | None:
        if self.cfg.max_profit is None:
            return None
        open_stake = sum(b.stake for b in self.bets.values() if b.outcome is None)
        if open_stake == 0:
            return None
        paid = sum(b.payout for b in self.bets.values())
        limit = 100 * (sum(b.stake for b in self.bets.values()) + self.cfg.max_profit - paid)
        ok = lambda m: open_stake * m <= limit  # noqa: E731
        if ok(MAX_MULTIPLIER + 1):
            return None
        assert ok(100)
        lo, hi = 100, MAX_MULTIPLIER
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
        return lo

    def win(self, b: MBet, m: int, at: int, kind: str, out: list) -> None:
        b.outcome, b.payout = "won", b.stake * m // 100
        out.append(("cashed", b.ticket, m, b.payout, at, kind))

    def advance(self, now: int) -> list:
        out: list = []
        if self.phase == "betting" and now >= self.closes:
            late = now - self.closes
            self.start = self.closes if late <= self.cfg.max_lateness_ms else now
            self.phase = "running"
            out.append(("running", self.start))
        while self.phase == "running":
            assert self.start is not None
            points: list = [
                (b.target, 0, i)
                for i, b in enumerate(self.bets.values())
                if b.outcome is None and b.target is not None
            ]
            f = self.force()
            if f is not None:
                points.append((f, 1, 0))
            points.append((self.stop, 2, 0))
            m, rank, i = min(points)
            at = self.start + ms_at(m)
            if at > now:
                break
            if rank == 0:
                self.win(list(self.bets.values())[i], m, at, "auto", out)
            elif rank == 1:
                for b in self.bets.values():
                    if b.outcome is None:
                        self.win(b, m, at, "forced", out)
            else:
                self.phase, self.pause_end = "crashed", at + self.cfg.pause_ms
                out.append(("crashed", at, self.crash))
                for b in self.bets.values():
                    if b.outcome is None:
                        b.outcome = "lost"
                        out.append(("lost", b.ticket))
                out.append(
                    (
                        "settled",
                        sum(b.stake for b in self.bets.values()),
                        sum(b.payout for b in self.bets.values()),
                    )
                )
        if self.phase == "crashed" and self.pause_end is not None and now >= self.pause_end:
            self.phase = "ended"
        return out

    def closed_reason(self) -> str:
        return "round_voided" if self.phase == "voided" else "round_closed"

    def place_bet(self, now: int, t: str, u: Hashable, stake: int, target: int | None) -> list:
        out = self.advance(now)
        c = self.cfg
        if self.phase != "betting":
            reason: str | None = self.closed_reason()
        elif t in self.bets:
            reason = "duplicate_ticket"
        elif stake < c.min_stake:
            reason = "stake_too_small"
        elif stake > c.max_stake:
            reason = "stake_too_large"
        elif target is not None and not 101 <= target <= MAX_MULTIPLIER:
            reason = "invalid_target"
        elif sum(1 for b in self.bets.values() if b.user == u) >= c.max_bets_per_user:
            reason = "too_many_bets"
        elif len(self.bets) >= c.max_bets_per_round:
            reason = "round_full"
        else:
            reason = None
        if reason:
            return out + [("rejected", "place_bet", t, reason)]
        self.bets[t] = MBet(t, u, stake, target)
        return out + [("accepted", t)]

    def set_auto(self, now: int, t: str, target: int | None) -> list:
        out = self.advance(now)
        command = "set_auto_cashout" if target is not None else "cancel_auto_cashout"
        if t not in self.bets:
            return out + [("rejected", command, t, "unknown_ticket")]
        if self.phase in ("crashed", "ended"):
            return out + [("rejected", command, t, "round_settled")]
        if self.phase != "betting":
            return out + [("rejected", command, t, self.closed_reason())]
        if target is not None and not 101 <= target <= MAX_MULTIPLIER:
            return out + [("rejected", command, t, "invalid_target")]
        self.bets[t].target = target
        return out + [("auto", t, target)]

    def cash_out(self, now: int, t: str) -> list:
        out = self.advance(now)
        b = self.bets.get(t)
        if b is None:
            return out + [("rejected", "cash_out", t, "unknown_ticket")]
        if self.phase == "betting":
            return out + [("rejected", "cash_out", t, "round_not_running")]
        if b.outcome == "won":
            return out + [("rejected", "cash_out", t, "already_cashed_out")]
        if b.outcome == "refunded":
            return out + [("rejected", "cash_out", t, "bet_refunded")]
        if b.outcome == "lost":
            return out + [("too_late", t, self.stop)]
        assert self.phase == "running" and self.start is not None
        self.win(b, multiplier_at(now - self.start), now, "manual", out)
        return out

    def void(self, now: int) -> list:
        out = self.advance(now)
        if self.phase in ("crashed", "ended"):
            return out + [("rejected", "void", None, "round_settled")]
        if self.phase == "voided":
            return out + [("rejected", "void", None, "round_voided")]
        self.phase = "voided"
        for b in self.bets.values():
            if b.outcome is None:
                b.outcome = "refunded"
                out.append(("refunded", b.ticket))
        return out + [("voided",)]

    def tick(self, now: int) -> list:
        out = self.advance(now)
        if self.phase == "running":
            assert self.start is not None
            out.append(("tick", now, multiplier_at(now - self.start)))
        return out


def normalise(e: Event) -> tuple:
    match e:
        case BetAccepted():
            return ("accepted", e.ticket)
        case Rejected():
            return ("rejected", e.command, e.ticket, e.reason)
        case AutoCashoutChanged():
            return ("auto", e.ticket, e.target)
        case RunningStarted():
            return ("running", e.at_ms)
        case CashedOut():
            return ("cashed", e.ticket, e.multiplier, e.payout, e.at_ms, e.kind)
        case TooLate():
            return ("too_late", e.ticket, e.crashed_at)
        case Crashed():
            return ("crashed", e.at_ms, e.crash_point)
        case BetLost():
            return ("lost", e.ticket)
        case RoundSettled():
            return ("settled", e.total_stake, e.total_payout)
        case BetRefunded():
            return ("refunded", e.ticket)
        case RoundVoided():
            return ("voided",)
        case Tick():
            return ("tick", e.at_ms, e.multiplier)
    raise AssertionError(f"unexpected event {e!r}")


# -- invariants shared by both machines ------------------------------------------------


SECRET_FIELDS = {"crash_point", "game_hash"}


class EventLog:
    """Every event one machine has seen, with the issue's invariants over them."""

    def __init__(self, max_profit: int | None) -> None:
        self.events: list[Event] = []
        self.max_profit = max_profit
        self.revealed: set[int] = set()  # round ids whose crash/void was emitted

    def add(self, events: list[Event], secrets: dict[int, tuple[int, str]]) -> None:
        for e in events:
            assert e.seq == (self.events[-1].seq + 1 if self.events else e.seq), "seq gap"
            if e.round_id not in self.revealed and e.round_id in secrets:
                # Secrecy: nothing before a round's crash names its hash or crash point.
                if isinstance(e, (Crashed, RoundVoided)):
                    self.revealed.add(e.round_id)
                else:
                    point, game_hash = secrets[e.round_id]
                    assert not SECRET_FIELDS & {f.name for f in dataclasses.fields(e)}
                    assert game_hash not in repr(e) and game_hash not in repr(e.to_public_dict())
            if isinstance(e, CashedOut):
                assert e.payout == e.stake * e.multiplier // 100
                event(f"cashed out: {e.kind}")
            elif isinstance(e, (TooLate, Rejected)):
                event(f"answer: {getattr(e, 'reason', 'too_late')}")
            self.events.append(e)

    def check_round(
        self,
        round_id: int,
        crash: int,
        started: int | None,
        targets: dict[str, int | None],
        finished: bool,
    ) -> None:
        stop = min(crash, MAX_MULTIPLIER)
        mine = [e for e in self.events if e.round_id == round_id]
        accepted = {e.ticket for e in mine if isinstance(e, BetAccepted)}
        outcomes: dict[str, list[Event]] = {}
        stake = payout = 0
        for e in mine:
            if isinstance(e, BetAccepted):
                stake += e.stake
            if isinstance(e, (CashedOut, BetLost, BetRefunded)):
                outcomes.setdefault(e.ticket, []).append(e)
            if isinstance(e, CashedOut):
                payout += e.payout
                assert started is not None
                crash_at = started + ms_at(stop)
                if e.kind == "manual":
                    assert e.at_ms < crash_at, "manual cashout at or after the crash instant"
                    assert e.multiplier < stop
                else:
                    assert e.at_ms <= crash_at and e.multiplier <= stop
                    assert e.at_ms == started + ms_at(e.multiplier)
                target = targets.get(e.ticket)
                if e.kind == "auto":
                    assert e.multiplier == target and target <= crash
                if e.kind == "forced" and target is not None:
                    assert e.multiplier <= target
            if isinstance(e, BetLost):
                target = targets.get(e.ticket)
                assert target is None or target > crash, "a target <= crash point lost"
        # Settled exactly once, never twice; every accepted bet once the round is over.
        assert all(len(v) == 1 for v in outcomes.values())
        assert set(outcomes) <= accepted
        if finished:
            assert set(outcomes) == accepted
        if self.max_profit is not None:
            assert payout <= stake + self.max_profit


# -- one round against the model -------------------------------------------------------


crash_points = st.one_of(
    st.just(100),
    st.integers(100, 130),
    st.integers(100, 1_000),
    st.integers(100, 100_000),
    st.integers(MAX_MULTIPLIER - 3, MAX_MULTIPLIER * 3),
)


class RoundMachine(RuleBasedStateMachine):
    @initialize(
        crash=crash_points,
        max_profit=st.one_of(st.none(), st.integers(0, 5_000)),
        per_user=st.integers(1, 2),
        per_round=st.integers(1, 6),
        lateness=st.sampled_from([0, 40, 10**9]),
        allow_void=st.sampled_from([False, False, False, True]),
        game_hash=st.binary(min_size=32, max_size=32).map(bytes.hex),
        data=st.data(),
    )
    def setup(
        self,
        crash: int,
        max_profit: int | None,
        per_user: int,
        per_round: int,
        lateness: int,
        allow_void: bool,
        game_hash: str,
        data: st.DataObject,
    ) -> None:
        self.cfg = RoundConfig(
            min_stake=5,
            max_stake=2_000,
            max_profit=max_profit,
            max_bets_per_user=per_user,
            max_bets_per_round=per_round,
            betting_ms=1_000,
            pause_ms=300,
            max_lateness_ms=lateness,
        )
        self.crash, self.game_hash, self.allow_void = crash, game_hash, allow_void
        self.round = Round(
            round_id=1,
            game_hash=game_hash,
            crash_point=crash,
            config=self.cfg,
            opens_at_ms=0,
            seq=SeqCounter(),
        )
        self.model = Model(crash, self.cfg)
        self.log = EventLog(max_profit)
        self.now = 0
        self.log.add(self.round.open([]), {1: (crash, game_hash)})
        # Most runs start with a few bets, so the running phase has something to settle.
        for _ in range(data.draw(st.integers(0, 6))):
            self.place_bet(
                data,
                data.draw(st.sampled_from(TICKETS)),
                data.draw(st.sampled_from(USERS)),
                data.draw(st.integers(5, 2_000)),
            )

    def apply(self, got: list[Event], want: list) -> None:
        self.log.add(got, {1: (self.crash, self.game_hash)})
        assert [normalise(e) for e in got] == want

    def state(self) -> tuple:
        r = self.round
        return (
            r.phase,
            [dataclasses.astuple(b) for b in r.bets.values()],
            r.total_stake,
            r.open_stake,
            r.total_payout,
        )

    def command(self, run_real, run_model) -> None:  # type: ignore[no-untyped-def]
        """Catch up first, then check a refused command changed nothing."""
        self.apply(self.round.advance(self.now), self.model.advance(self.now))
        before = self.state()
        got = run_real()
        self.apply(got, run_model())
        if len(got) == 1 and isinstance(got[0], (Rejected, TooLate)):
            assert self.state() == before

    def targets(self) -> st.SearchStrategy[int | None]:
        c = self.crash
        return st.one_of(
            st.none(),
            st.integers(95, 400),
            st.integers(c - 2, c + 2),
            st.integers(101, 10**6),
            st.just(MAX_MULTIPLIER),
        )

    @rule(
        data=st.data(),
        ticket=st.sampled_from(TICKETS),
        user=st.sampled_from(USERS),
        stake=st.integers(0, 2_100),
    )
    def place_bet(self, data: st.DataObject, ticket: str, user: Hashable, stake: int) -> None:
        target = data.draw(self.targets())
        self.command(
            lambda: self.round.place_bet(self.now, ticket, user, stake, target),
            lambda: self.model.place_bet(self.now, ticket, user, stake, target),
        )

    @rule(data=st.data(), ticket=st.sampled_from(TICKETS))
    def set_auto(self, data: st.DataObject, ticket: str) -> None:
        target = data.draw(self.targets())
        self.command(
            lambda: self.round.set_auto_cashout(self.now, ticket, target),
            lambda: self.model.set_auto(self.now, ticket, target),
        )

    @rule(data=st.data(), dt=st.one_of(st.just(0), st.integers(0, 3_000)))
    def cash_out(self, data: st.DataObject, dt: int) -> None:
        # Mostly a bet that exists, a little later: the interesting cashouts.
        held = sorted(self.model.bets)
        ticket = data.draw(
            st.sampled_from(held)
            if held and data.draw(st.integers(0, 4))
            else st.sampled_from(TICKETS)
        )
        self.now += dt
        if self.model.phase == "betting" and data.draw(st.booleans()):
            self.now = max(self.now, self.model.closes + data.draw(st.integers(0, 2_000)))
        self.command(
            lambda: self.round.cash_out(self.now, ticket),
            lambda: self.model.cash_out(self.now, ticket),
        )

    @precondition(lambda self: self.allow_void)
    @rule()
    def void(self) -> None:
        self.command(
            lambda: self.round.void(self.now, "operator"), lambda: self.model.void(self.now)
        )

    @rule(dt=st.one_of(st.integers(0, 50), st.integers(0, 2_000), st.integers(0, 300_000)))
    def wait(self, dt: int) -> None:
        self.now += dt
        self.apply(self.round.advance(self.now), self.model.advance(self.now))

    @rule(dt=st.integers(0, 120))
    def tick(self, dt: int) -> None:
        self.now += dt
        self.apply(self.round.tick(self.now), self.model.tick(self.now))

    @rule(data=st.data())
    def jump_to_an_edge(self, data: st.DataObject) -> None:
        """Land on an instant that matters, or one ms either side of it."""
        m = self.model
        start = m.start if m.start is not None else m.closes
        points = [m.stop] + [b.target for b in m.bets.values() if b.target is not None]
        f = m.force()
        if f is not None:
            points.append(f)
        instants = [m.closes, m.closes + self.cfg.max_lateness_ms] + [
            start + ms_at(p) for p in points
        ]
        when = data.draw(st.sampled_from(instants)) + data.draw(st.integers(-1, 1))
        self.now = max(self.now, when)
        self.apply(self.round.advance(self.now), self.model.advance(self.now))

    @invariant()
    def agrees_with_the_model(self) -> None:
        if not hasattr(self, "round"):
            return
        r, m = self.round, self.model
        assert r.phase.value == m.phase
        assert {t: b.state.value for t, b in r.bets.items()} == {
            t: (b.outcome or "open") for t, b in m.bets.items()
        }
        assert r.total_payout == sum(b.payout for b in m.bets.values())
        if r.phase is Phase.RUNNING:
            assert r.force_point() == m.force()
            deadline = r.next_deadline_ms()
            assert deadline is not None and deadline > self.now
            snap = r.snapshot(self.now)
            assert snap.crash_point is None and snap.game_hash is None

    def teardown(self) -> None:
        if not hasattr(self, "round"):
            return
        # Play the round out, then every accepted bet must have exactly one outcome.
        # Twice: a late start (past max_lateness) starts the run at the handling moment.
        for _ in range(2):
            self.now += 10**6
            self.apply(self.round.advance(self.now), self.model.advance(self.now))
        assert self.round.phase in (Phase.ENDED, Phase.VOIDED)
        targets = {t: b.auto_cashout for t, b in self.round.bets.items()}
        event(
            f"bets in the round: {min(len(self.round.bets), 3)}{'+' if len(self.round.bets) >= 3 else ''}"
        )
        if any(
            t == self.crash and self.round.bets[k].state.value == "won" for k, t in targets.items()
        ):
            event("a target equal to the crash point won")
        self.log.check_round(1, self.crash, self.round.started_at_ms, targets, finished=True)


RoundMachine.TestCase.settings = settings(settings.default, stateful_step_count=40)
TestRoundMachine = RoundMachine.TestCase


# -- many rounds along a chain ---------------------------------------------------------


SALT = "0000000000000000004d6ec16dafe9d8370958664c1dc422f452892264c59526"
READER = ChainReader(build_chain(bytes(range(32)), 2_000, interval=100))


class SequencerMachine(RuleBasedStateMachine):
    @initialize(
        first_game=st.integers(1, 1_900),
        max_profit=st.one_of(st.none(), st.integers(0, 3_000)),
        per_user=st.integers(1, 2),
    )
    def setup(self, first_game: int, max_profit: int | None, per_user: int) -> None:
        self.cfg = RoundConfig(
            min_stake=1,
            max_stake=1_000,
            max_profit=max_profit,
            max_bets_per_user=per_user,
            max_bets_per_round=5,
            betting_ms=500,
            pause_ms=200,
            max_lateness_ms=100,
        )
        self.seq = Sequencer(
            config=self.cfg, games=READER.games(first_game), salt=SALT, first_game=first_game
        )
        self.first_game = first_game
        self.log = EventLog(max_profit)
        self.now = 0
        self.targets: dict[str, int | None] = {}
        self.n = 0
        self.cashouts_asked: list[tuple[str, int]] = []  # (ticket, seq after which answered)
        self.apply(self.seq.start(0))

    def secrets(self) -> dict[int, tuple[int, str]]:
        rid = self.seq.current.round_id
        h = READER.game_hash(rid)
        return {rid: (crash_point(h, SALT), h)}

    def apply(self, events: list[Event]) -> list[Event]:
        self.log.add(events, self.secrets())
        return events

    @rule(
        user=st.sampled_from(USERS),
        stake=st.integers(0, 1_100),
        auto=st.one_of(st.none(), st.integers(100, 400)),
    )
    def place_bet(self, user: Hashable, stake: int, auto: int | None) -> None:
        target = auto
        self.n += 1
        ticket = f"b{self.n}"
        events = self.apply(self.seq.place_bet(self.now, ticket, user, stake, target))
        answer = [e for e in events if getattr(e, "ticket", None) == ticket]
        assert len(answer) == 1 and isinstance(answer[0], (BetAccepted, Rejected))
        if isinstance(answer[0], BetAccepted):
            self.targets[ticket] = target

    @rule(data=st.data())
    def cash_out(self, data: st.DataObject) -> None:
        if not self.targets:
            return
        live = sorted(self.seq.current.bets) if not self.seq.finished else []
        if self.seq.current.phase is Phase.BETTING and live and data.draw(st.booleans()):
            self.now = max(
                self.now, self.seq.current.closes_at_ms + data.draw(st.integers(0, 3_000))
            )
        pool = live if live and data.draw(st.integers(0, 3)) else sorted(self.targets)
        ticket = data.draw(st.sampled_from(pool))
        events = self.apply(self.seq.cash_out(self.now, ticket))
        # Exactly one answer to the request, and it is the last event returned.
        answer = events[-1]
        assert isinstance(answer, (CashedOut, TooLate, Rejected)) and answer.ticket == ticket
        assert answer.at_ms == self.now
        if isinstance(answer, CashedOut):
            assert answer.kind == "manual"

    @rule(data=st.data())
    def set_auto(self, data: st.DataObject) -> None:
        if not self.targets:
            return
        ticket = data.draw(st.sampled_from(sorted(self.targets)))
        target = data.draw(st.one_of(st.none(), st.integers(90, 500)))
        events = self.apply(self.seq.set_auto_cashout(self.now, ticket, target))
        if isinstance(events[-1], AutoCashoutChanged):
            self.targets[ticket] = target

    @rule(dt=st.one_of(st.integers(0, 300), st.integers(0, 30_000)))
    def wait(self, dt: int) -> None:
        self.now += dt
        self.apply(self.seq.tick(self.now))

    @rule()
    def jump_to_next_deadline(self) -> None:
        deadline = self.seq.next_deadline_ms()
        if deadline is not None:
            self.now = max(self.now, deadline)
            self.apply(self.seq.advance(self.now))

    @precondition(lambda self: not self.seq.finished)
    @rule(void=st.booleans())
    def stop(self, void: bool) -> None:
        self.apply(self.seq.stop(self.now, void=void))

    @precondition(lambda self: not self.seq.stopping)
    @rule()
    def void_round(self) -> None:
        self.apply(self.seq.void_round(self.now, "operator"))

    @precondition(lambda self: not self.seq.stopping)
    @rule()
    def pause(self) -> None:
        was = self.seq.paused
        queued = sorted(self.seq.queued)
        events = self.apply(self.seq.pause(self.now))
        assert self.seq.paused
        mine = [e for e in events if isinstance(e, Paused)]
        if was:
            assert mine == []  # pausing a paused game changes nothing
        else:
            # The bets queued for the next round are refunded at once.
            assert len(mine) == 1 and mine[0].refunded == len(queued)
            refunded = [e.ticket for e in events if isinstance(e, BetRefunded)]
            assert sorted(refunded) == queued and not self.seq.queued

    @rule()
    def resume(self) -> None:
        was = self.seq.paused
        events = self.apply(self.seq.resume(self.now))
        if self.seq.finished:
            return
        assert not self.seq.paused
        assert [type(e) for e in events if isinstance(e, Resumed)] == ([Resumed] if was else [])
        # A game paused between rounds opens the next one now, on the chain.
        if was and any(isinstance(e, Resumed) for e in events):
            assert self.seq.current.phase not in (Phase.ENDED, Phase.VOIDED)

    @invariant()
    def a_paused_game_opens_no_round(self) -> None:
        if not hasattr(self, "seq"):
            return
        paused = False
        for e in self.log.events:
            if isinstance(e, Paused):
                paused = True
            elif isinstance(e, Resumed):
                paused = False
            elif isinstance(e, BettingOpened):
                assert not paused, e
            elif isinstance(e, Rejected) and e.reason == GAME_PAUSED:
                assert paused, e
            elif isinstance(e, BetAccepted) and paused:
                # While paused, only the round still open for betting takes bets.
                assert not e.queued, e
        assert paused == self.seq.paused
        if self.seq.paused and not self.seq.finished:
            assert (self.seq.next_deadline_ms() is None) == self.seq.idle

    @invariant()
    def rounds_follow_the_chain(self) -> None:
        if not hasattr(self, "seq"):
            return
        opened = [e.round_id for e in self.log.events if isinstance(e, BettingOpened)]
        assert opened == list(range(self.first_game, self.first_game + len(opened)))
        for e in self.log.events:
            if isinstance(e, (Crashed, RoundVoided)):
                assert e.game_hash == READER.game_hash(e.round_id)
                assert e.crash_point == crash_point(e.game_hash, SALT)

    def teardown(self) -> None:
        if not hasattr(self, "seq"):
            return
        if not self.seq.finished:
            self.apply(self.seq.stop(self.now))
        for _ in range(10):
            deadline = self.seq.next_deadline_ms()
            if deadline is None:
                break
            self.now = max(self.now, deadline)
            self.apply(self.seq.advance(self.now))
        assert self.seq.finished
        stopped = [e for e in self.log.events if isinstance(e, Stopped)]
        assert len(stopped) == 1
        # After the stop, only answers to commands: nothing is played or settled.
        after = self.log.events[self.log.events.index(stopped[0]) + 1 :]
        assert all(isinstance(e, (Rejected, TooLate)) for e in after)
        assert stopped[0].next_game == self.seq.current.round_id + 1
        rounds = sorted({e.round_id for e in self.log.events if isinstance(e, BettingOpened)})
        for rid in rounds:
            starts = [
                e.at_ms
                for e in self.log.events
                if isinstance(e, RunningStarted) and e.round_id == rid
            ]
            h = READER.game_hash(rid)
            self.log.check_round(
                rid,
                crash_point(h, SALT),
                starts[0] if starts else None,
                self.targets,
                finished=True,
            )
        # Queued bets refunded at the stop belong to the never-opened next round.
        accepted = {e.ticket for e in self.log.events if isinstance(e, BetAccepted)}
        settled = [
            e.ticket for e in self.log.events if isinstance(e, (CashedOut, BetLost, BetRefunded))
        ]
        assert sorted(settled) == sorted(accepted)


SequencerMachine.TestCase.settings = settings(settings.default, stateful_step_count=40)
TestSequencerMachine = SequencerMachine.TestCase

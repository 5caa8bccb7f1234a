"""The round state machine: pure, sans-IO, like h11's connection object.

A ``Round`` never reads a clock, does I/O or draws randomness. Time arrives as an
argument (``now_ms``, integer milliseconds of the engine clock, never going backwards);
commands go in as method calls; events come out as lists; ``next_deadline_ms()`` says
when the driver must call ``advance`` again. A ``Sequencer`` strings rounds together:
it draws each round's game from the chain, holds the queue of bets placed for the next
round, and numbers every event with one contiguous ``seq``.

Rules (DESIGN.md, docs/round-engine.md):

* Phases go ``betting -> running -> crashed -> ended`` (or ``-> voided``), by the
  ``TRANSITIONS`` table; which command is legal in which phase is the ``COMMANDS``
  table. A refused command yields one ``Rejected`` event with a stable reason code and
  changes nothing else.
* The crash instant is fixed when the round starts running: ``start + ms_at(C)``, from
  the exact curve inverse, not quantised to ticks.
* Above the multiplier axis, everything that is *due* happens in multiplier order:
  auto-cashouts at their target ``A``, the max-profit force point ``F``, the crash at
  ``C``. At a tie, cashouts come first, so a target equal to the crash point wins.
  Each happens at the exact millisecond its multiplier is reached, whenever the driver
  gets round to handling it.
* A manual cashout is priced at ``now_ms`` and accepted iff ``now_ms`` is strictly
  before the crash instant.

The crash point and game hash sit in private attributes and appear only in ``Crashed``
and ``RoundVoided``, and in a snapshot taken after one of them. ``next_deadline_ms()``
*does* depend on the crash instant: it is for the driver's timer only, never publish it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from enum import Enum

from crashd.engine.bounds import MAX_MULTIPLIER, MIN_AUTO_CASHOUT, MIN_MULTIPLIER, TOP_PARTICIPANTS
from crashd.engine.curve import ms_at, multiplier_at
from crashd.engine.reasons import (
    ALREADY_CASHED_OUT,
    BET_REFUNDED,
    DUPLICATE_TICKET,
    INVALID_TARGET,
    ROUND_FULL,
    STAKE_TOO_LARGE,
    STAKE_TOO_SMALL,
    TOO_MANY_BETS,
    UNKNOWN_TICKET,
)

from .config import RoundConfig
from .events import (
    AutoCashoutChanged,
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
    Tick,
    TooLate,
    public_value,
)
from .tables import COMMANDS, LEGAL, PUBLIC_STATUS, REASONS, TRANSITIONS, Command, Phase, Trigger


class BetState(str, Enum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"
    REFUNDED = "refunded"


@dataclass(slots=True)
class Bet:
    """One funded bet. Mutable, private to the round or the sequencer's queue."""

    ticket: str
    user: Hashable
    stake: int
    auto_cashout: int | None
    placed_at_ms: int
    state: BetState = BetState.OPEN
    multiplier: int | None = None
    payout: int | None = None


@dataclass(frozen=True, slots=True)
class BetInfo:
    """What anyone may see of a bet (the auto-cashout target stays private)."""

    ticket: str
    user: Hashable
    stake: int
    status: str
    cashed_out_at: int | None
    payout: int | None

    def to_public_dict(self) -> dict[str, object]:
        return {
            "ticket": self.ticket,
            "user": public_value(self.user),
            "stake": self.stake,
            "status": self.status,
            "cashed_out_at": self.cashed_out_at,
            "payout": self.payout,
        }


@dataclass(frozen=True, slots=True)
class RoundSnapshot:
    """The state behind ``GET /game/state``. Crash point and hash are ``None`` until
    the round has crashed (or was voided)."""

    round_id: int
    status: str
    now_ms: int
    elapsed_ms: int
    multiplier: int
    betting_closes_at_ms: int
    started_at_ms: int | None
    crashed_at_ms: int | None
    pause_ends_at_ms: int | None
    crash_point: int | None
    game_hash: str | None
    participant_count: int
    """Bets in the round (withdrawn unfunded bets are not counted)."""
    cashed_out_count: int
    total_stake: int
    total_payout: int
    top: tuple[BetInfo, ...]
    """The largest bets by stake (at most ``TOP_PARTICIPANTS``), largest first: the
    snapshot's size does not grow with the round's (``Round.participants`` pages
    through all of them)."""
    next_round_bets: int
    paused: bool = False
    """The operator paused the game: no round opens after this one until resumed."""

    def to_public_dict(self) -> dict[str, object]:
        return {
            "round_id": self.round_id,
            "status": self.status,
            "now_ms": self.now_ms,
            "elapsed_ms": self.elapsed_ms,
            "current_multiplier": self.multiplier,
            "betting_closes_at_ms": self.betting_closes_at_ms,
            "started_at_ms": self.started_at_ms,
            "crashed_at_ms": self.crashed_at_ms,
            "pause_ends_at_ms": self.pause_ends_at_ms,
            "crash_point": self.crash_point,
            "game_hash": self.game_hash,
            "participant_count": self.participant_count,
            "cashed_out_count": self.cashed_out_count,
            "total_stake": self.total_stake,
            "total_payout": self.total_payout,
            "top": [p.to_public_dict() for p in self.top],
            "next_round_bets": self.next_round_bets,
            "paused": self.paused,
        }


def _info(b: Bet) -> BetInfo:
    return BetInfo(b.ticket, b.user, b.stake, b.state.value, b.multiplier, b.payout)


class SeqCounter:
    """The one source of ``seq`` numbers, shared by a sequencer and its rounds."""

    __slots__ = ("next",)

    def __init__(self, first: int = 1) -> None:
        assert first >= 1
        self.next = first

    def take(self) -> int:
        value = self.next
        self.next += 1
        return value


def check_new_bet(config: RoundConfig, stake: int, auto_cashout: int | None) -> str | None:
    """Limits every bet must meet, in the order the reasons are reported."""
    if stake < config.min_stake:
        return STAKE_TOO_SMALL
    if stake > config.max_stake:
        return STAKE_TOO_LARGE
    return check_target(auto_cashout)


def check_target(target: int | None) -> str | None:
    if target is not None and not MIN_AUTO_CASHOUT <= target <= MAX_MULTIPLIER:
        return INVALID_TARGET
    return None


class Round:
    """One game of the chain, from its betting window to the end of its crash pause."""

    def __init__(
        self,
        *,
        round_id: int,
        game_hash: str,
        crash_point: int,
        config: RoundConfig,
        opens_at_ms: int,
        seq: SeqCounter,
    ) -> None:
        assert crash_point >= MIN_MULTIPLIER
        self.round_id = round_id
        self.config = config
        self.phase = Phase.BETTING
        self.opens_at_ms = opens_at_ms
        self.closes_at_ms = opens_at_ms + config.betting_ms
        self.started_at_ms: int | None = None
        self.crashed_at_ms: int | None = None
        self.pause_ends_at_ms: int | None = None
        self.ended_at_ms: int | None = None
        # Secret until the crash: never put these in an event or snapshot before it.
        self._game_hash = game_hash
        self._crash_point = crash_point
        # Where the curve stops: the engine prices nothing above MAX_MULTIPLIER.
        self._stop_multiplier = min(crash_point, MAX_MULTIPLIER)
        self._crash_at_ms: int | None = None
        self._seq = seq
        self._now_ms = opens_at_ms
        self._opened = False
        self._bets: dict[str, Bet] = {}
        self._user_bets: dict[Hashable, int] = {}
        self._autos: list[tuple[int, int, str]] = []  # heap of (target, order, ticket)
        self.total_stake = 0
        self.open_stake = 0
        self.total_payout = 0
        self.winners = 0
        self._withdrawn = 0
        self._by_user: dict[Hashable, list[str]] = {}
        self._top: list[tuple[int, int, str]] = []
        self._last_force_point: int | None = None
        self._capped: set[str] = set()
        """Open bets whose heap entry is their max-win cap, not their own target."""

    # -- introspection -------------------------------------------------------------

    @property
    def now_ms(self) -> int:
        return self._now_ms

    @property
    def bets(self) -> Mapping[str, Bet]:
        return self._bets

    @property
    def crash_at_ms(self) -> int | None:
        """When the running round will crash (engine clock); ``None`` until it runs.
        Secret like the crash point: for the engine's own scheduling only."""
        return self._crash_at_ms

    def next_deadline_ms(self) -> int | None:
        """When ``advance`` must next be called; ``None`` once the round is over.

        Secret-bearing while running (it can be the crash instant): driver-only."""
        if self.phase is Phase.BETTING:
            return self.closes_at_ms
        if self.phase is Phase.RUNNING:
            multiplier, _, _ = self._next_point()
            assert self.started_at_ms is not None
            return self.started_at_ms + ms_at(multiplier)
        if self.phase is Phase.CRASHED:
            return self.pause_ends_at_ms
        return None

    def revealed(self) -> tuple[int, str] | None:
        """``(crash_point, game_hash)`` once public (crashed or voided), else ``None``."""
        if self.phase in (Phase.CRASHED, Phase.ENDED, Phase.VOIDED):
            return self._crash_point, self._game_hash
        return None

    def snapshot(
        self, now_ms: int, next_round_bets: int = 0, paused: bool = False
    ) -> RoundSnapshot:
        """The public state at ``now_ms``; the caller must have advanced to it."""
        assert now_ms >= self._now_ms
        deadline = self.next_deadline_ms()
        assert deadline is None or now_ms < deadline, "advance() before snapshot()"
        elapsed, multiplier = 0, MIN_MULTIPLIER
        if self.phase is Phase.RUNNING:
            assert self.started_at_ms is not None
            elapsed = now_ms - self.started_at_ms
            multiplier = multiplier_at(elapsed)
        elif self.phase in (Phase.CRASHED, Phase.ENDED):
            elapsed = ms_at(self._stop_multiplier)
            multiplier = self._stop_multiplier
        revealed = self.revealed()
        return RoundSnapshot(
            round_id=self.round_id,
            status=PUBLIC_STATUS[self.phase],
            now_ms=now_ms,
            elapsed_ms=elapsed,
            multiplier=multiplier,
            betting_closes_at_ms=self.closes_at_ms,
            started_at_ms=self.started_at_ms,
            crashed_at_ms=self.crashed_at_ms,
            pause_ends_at_ms=self.pause_ends_at_ms,
            crash_point=revealed[0] if revealed else None,
            game_hash=revealed[1] if revealed else None,
            participant_count=self.participant_count,
            cashed_out_count=self.winners,
            total_stake=self.total_stake,
            total_payout=self.total_payout,
            top=tuple(_info(self._bets[t]) for _, _, t in sorted(self._top, reverse=True)),
            next_round_bets=next_round_bets,
            paused=paused,
        )

    @property
    def participant_count(self) -> int:
        return len(self._bets) - self._withdrawn

    def bets_of(self, user: Hashable) -> tuple[BetInfo, ...]:
        """One user's bets in this round, in the order placed (O(their bets))."""
        return tuple(_info(self._bets[t]) for t in self._by_user.get(user, ()))

    def participants(self, offset: int, limit: int) -> tuple[BetInfo, ...]:
        """A page of every bet in placement order (O(offset + limit))."""
        assert offset >= 0 and limit >= 0
        page = itertools.islice(self._bets.values(), offset, offset + limit)
        return tuple(_info(b) for b in page)

    # -- time ----------------------------------------------------------------------

    def open(self, carried: list[Bet]) -> list[Event]:
        """Open for bets, taking the bets queued for this round (already accepted)."""
        assert not self._opened
        self._opened = True
        assert len(carried) <= self.config.max_bets_per_round
        for bet in carried:
            assert bet.state is BetState.OPEN and bet.ticket not in self._bets
            self._add_bet(bet)
        return [
            BettingOpened(
                self._seq.take(),
                self.opens_at_ms,
                self.round_id,
                closes_at_ms=self.closes_at_ms,
                bets=len(carried),
            )
        ]

    def advance(self, now_ms: int) -> list[Event]:
        """Everything due at or before ``now_ms``, each at its own exact instant."""
        assert self._opened
        assert now_ms >= self._now_ms, f"time went backwards: {now_ms} < {self._now_ms}"
        self._now_ms = now_ms
        events: list[Event] = []
        # Bound: every pass changes the phase or settles at least one bet.
        for _ in range(len(self._bets) + 4):
            if self.phase is Phase.BETTING:
                if now_ms < self.closes_at_ms:
                    break
                late = now_ms - self.closes_at_ms
                start = self.closes_at_ms if late <= self.config.max_lateness_ms else now_ms
                self._start_running(start, events)
            elif self.phase is Phase.RUNNING:
                assert self.started_at_ms is not None
                multiplier, rank, ticket = self._next_point()
                instant = self.started_at_ms + ms_at(multiplier)
                if instant > now_ms:
                    break
                if rank == 0:
                    assert ticket is not None
                    heapq.heappop(self._autos)
                    kind = "max_win" if ticket in self._capped else "auto"
                    self._cash_out(self._bets[ticket], multiplier, kind, instant, events)
                elif rank == 1:
                    for bet in [b for b in self._bets.values() if b.state is BetState.OPEN]:
                        self._cash_out(bet, multiplier, "forced", instant, events)
                else:
                    self._crash(instant, events)
            elif self.phase is Phase.CRASHED:
                assert self.pause_ends_at_ms is not None
                if now_ms < self.pause_ends_at_ms:
                    break
                self._transition(Trigger.END_PAUSE)
                self.ended_at_ms = self.pause_ends_at_ms
            else:
                break
        else:
            raise AssertionError("advance() did not converge")
        return events

    def tick(self, now_ms: int) -> list[Event]:
        """Advance, then report the multiplier at ``now_ms`` if still running."""
        events = self.advance(now_ms)
        if self.phase is Phase.RUNNING:
            assert self.started_at_ms is not None
            elapsed = now_ms - self.started_at_ms
            multiplier = multiplier_at(elapsed)
            assert multiplier < self._stop_multiplier or self._crash_at_ms is None
            events.append(
                Tick(
                    self._seq.take(),
                    now_ms,
                    self.round_id,
                    elapsed_ms=elapsed,
                    multiplier=multiplier,
                )
            )
        return events

    # -- commands ------------------------------------------------------------------

    def place_bet(
        self, now_ms: int, ticket: str, user: Hashable, stake: int, auto_cashout: int | None = None
    ) -> list[Event]:
        events = self.advance(now_ms)
        reason = COMMANDS[self.phase][Command.PLACE_BET]
        if reason is LEGAL and ticket in self._bets:
            reason = DUPLICATE_TICKET
        if reason is LEGAL:
            reason = check_new_bet(self.config, stake, auto_cashout)
        if reason is LEGAL and self._user_bets.get(user, 0) >= self.config.max_bets_per_user:
            reason = TOO_MANY_BETS
        if reason is LEGAL and len(self._bets) >= self.config.max_bets_per_round:
            reason = ROUND_FULL
        if reason is not LEGAL:
            events.append(self._reject(now_ms, Command.PLACE_BET, ticket, user, reason))
            return events
        self._add_bet(Bet(ticket, user, stake, auto_cashout, now_ms))
        events.append(
            BetAccepted(
                self._seq.take(),
                now_ms,
                self.round_id,
                ticket=ticket,
                user=user,
                stake=stake,
                auto_cashout=auto_cashout,
                queued=False,
            )
        )
        return events

    def set_auto_cashout(self, now_ms: int, ticket: str, target: int | None) -> list[Event]:
        """Set (or, with ``None``, cancel) a bet's auto-cashout target; betting only."""
        command = Command.SET_AUTO_CASHOUT if target is not None else Command.CANCEL_AUTO_CASHOUT
        events = self.advance(now_ms)
        bet = self._bets.get(ticket)
        reason = UNKNOWN_TICKET if bet is None else COMMANDS[self.phase][command]
        if reason is LEGAL:
            reason = check_target(target)
        if reason is not LEGAL:
            events.append(self._reject(now_ms, command, ticket, bet.user if bet else None, reason))
            return events
        assert bet is not None and bet.state is BetState.OPEN
        bet.auto_cashout = target
        events.append(
            AutoCashoutChanged(
                self._seq.take(), now_ms, self.round_id, ticket=ticket, user=bet.user, target=target
            )
        )
        return events

    def cash_out(self, now_ms: int, ticket: str) -> list[Event]:
        """A manual cashout, priced at ``now_ms``: exactly one answer, always."""
        events = self.advance(now_ms)
        bet = self._bets.get(ticket)
        reason = UNKNOWN_TICKET if bet is None else COMMANDS[self.phase][Command.CASH_OUT]
        if reason is not LEGAL:
            events.append(
                self._reject(now_ms, Command.CASH_OUT, ticket, bet.user if bet else None, reason)
            )
            return events
        assert bet is not None
        if bet.state is BetState.WON:
            events.append(
                self._reject(now_ms, Command.CASH_OUT, ticket, bet.user, ALREADY_CASHED_OUT)
            )
        elif bet.state is BetState.REFUNDED:
            events.append(self._reject(now_ms, Command.CASH_OUT, ticket, bet.user, BET_REFUNDED))
        elif bet.state is BetState.LOST:
            events.append(
                TooLate(
                    self._seq.take(),
                    now_ms,
                    self.round_id,
                    ticket=ticket,
                    user=bet.user,
                    crashed_at=self._stop_multiplier,
                )
            )
        else:
            # Open bets exist only while running: the crash settles every one of them.
            assert self.phase is Phase.RUNNING and self.started_at_ms is not None
            assert self._crash_at_ms is not None and now_ms < self._crash_at_ms
            multiplier = multiplier_at(now_ms - self.started_at_ms)
            assert multiplier < self._stop_multiplier
            self._cash_out(bet, multiplier, "manual", now_ms, events)
        return events

    def void(self, now_ms: int, reason: str) -> list[Event]:
        """Call the round off: refund every open bet, reveal the burnt game."""
        events = self.advance(now_ms)
        refusal = COMMANDS[self.phase][Command.VOID]
        if refusal is not LEGAL:
            events.append(self._reject(now_ms, Command.VOID, None, None, refusal))
            return events
        self._transition(Trigger.VOID)
        self.ended_at_ms = now_ms
        refunded = 0
        for bet in self._bets.values():
            if bet.state is BetState.OPEN:
                bet.state = BetState.REFUNDED
                self.open_stake -= bet.stake
                refunded += 1
                events.append(
                    BetRefunded(
                        self._seq.take(),
                        now_ms,
                        self.round_id,
                        ticket=bet.ticket,
                        user=bet.user,
                        stake=bet.stake,
                        reason=reason,
                    )
                )
        assert self.open_stake == 0
        events.append(
            RoundVoided(
                self._seq.take(),
                now_ms,
                self.round_id,
                reason=reason,
                refunded=refunded,
                crash_point=self._crash_point,
                game_hash=self._game_hash,
            )
        )
        return events

    def withdraw(self, now_ms: int, ticket: str, reason: str) -> list[Event]:
        """Take back an open bet that its caller could not fund (its ledger confirm
        failed): as if never placed, so it neither wins nor loses. Before the crash only;
        afterwards there is nothing to withdraw (and nothing is returned)."""
        events = self.advance(now_ms)
        bet = self._bets.get(ticket)
        if (
            bet is None
            or bet.state is not BetState.OPEN
            or self.phase not in (Phase.BETTING, Phase.RUNNING)
        ):
            return events
        bet.state = BetState.REFUNDED
        # Out of both totals: the stake never reached escrow, so it buys no headroom
        # under max profit (closed bets' stakes and payouts are unchanged).
        self.open_stake -= bet.stake
        self.total_stake -= bet.stake
        self._user_bets[bet.user] -= 1
        self._withdrawn += 1
        events.append(
            BetRefunded(
                self._seq.take(),
                now_ms,
                self.round_id,
                ticket=ticket,
                user=bet.user,
                stake=bet.stake,
                reason=reason,
            )
        )
        return events

    # -- internals -----------------------------------------------------------------

    def _transition(self, trigger: Trigger) -> None:
        nxt = TRANSITIONS[self.phase].get(trigger)
        assert nxt is not None, f"illegal transition {trigger.value} from {self.phase.value}"
        self.phase = nxt

    def _reject(
        self, now_ms: int, command: Command, ticket: str | None, user: Hashable | None, reason: str
    ) -> Rejected:
        assert reason in REASONS
        return Rejected(
            self._seq.take(),
            now_ms,
            self.round_id,
            command=command.value,
            ticket=ticket,
            user=user,
            reason=reason,
        )

    def _add_bet(self, bet: Bet) -> None:
        self._bets[bet.ticket] = bet
        self._user_bets[bet.user] = self._user_bets.get(bet.user, 0) + 1
        self._by_user.setdefault(bet.user, []).append(bet.ticket)
        self.total_stake += bet.stake
        self.open_stake += bet.stake
        # The largest stakes, for snapshots: a bounded min-heap (ties: earlier first).
        entry = (bet.stake, -len(self._bets), bet.ticket)
        if len(self._top) < TOP_PARTICIPANTS:
            heapq.heappush(self._top, entry)
        elif entry > self._top[0]:
            heapq.heapreplace(self._top, entry)

    def _start_running(self, at_ms: int, events: list[Event]) -> None:
        self._transition(Trigger.CLOSE_BETTING)
        self.started_at_ms = at_ms
        self._crash_at_ms = at_ms + ms_at(self._stop_multiplier)
        # Targets cannot change once running, so the heap is built once. A bet's max
        # win acts as a target of its own (the lower of the two applies).
        self._autos = []
        for i, b in enumerate(self._bets.values()):
            if b.state is not BetState.OPEN:
                continue
            cap = self.win_cap(b.stake)
            if b.auto_cashout is not None and (cap is None or b.auto_cashout <= cap):
                self._autos.append((b.auto_cashout, i, b.ticket))
            elif cap is not None:
                self._autos.append((cap, i, b.ticket))
                self._capped.add(b.ticket)
        heapq.heapify(self._autos)
        events.append(
            RunningStarted(
                self._seq.take(),
                at_ms,
                self.round_id,
                bets=len(self._bets),
                total_stake=self.total_stake,
            )
        )

    def win_cap(self, stake: int) -> int | None:
        """The largest multiplier at which a bet of ``stake`` stays within ``max_win``
        (its payout ``stake * m // 100`` at most ``stake + max_win``); ``None`` without
        a cap or when the cap lies beyond the curve."""
        max_win = self.config.max_win
        if max_win is None:
            return None
        # stake * m // 100 <= W  <=>  stake * m <= 100 * W + 99 (the payout is floored).
        point = (100 * (stake + max_win) + 99) // stake
        return point if point <= MAX_MULTIPLIER else None

    def force_point(self) -> int | None:
        """The largest multiplier at which cashing out every open bet keeps the round's
        total payout within ``total_stake + max_profit``; ``None`` when there is no cap,
        no open bet, or the point lies beyond the curve.

        Bounded with the exact rational ``open_stake * m / 100`` (at least the sum of
        the floored payouts), so it is integer arithmetic, O(1), and never over the cap.
        """
        if self.config.max_profit is None or self.open_stake == 0:
            return None
        headroom = self.total_stake + self.config.max_profit - self.total_payout
        point = 100 * headroom // self.open_stake
        assert point >= MIN_MULTIPLIER, (headroom, self.open_stake)
        return point if point <= MAX_MULTIPLIER else None

    def _next_point(self) -> tuple[int, int, str | None]:
        """The next thing due on the multiplier axis: ``(multiplier, rank, ticket)``,
        rank 0 an auto-cashout, 1 the force point, 2 the crash; ties go to lower rank."""
        autos = self._autos
        while autos and self._bets[autos[0][2]].state is not BetState.OPEN:
            heapq.heappop(autos)  # cashed out by hand or forced: drop lazily
        best: tuple[int, int, str | None] = (self._stop_multiplier, 2, None)
        if autos and autos[0][0] <= best[0]:
            best = (autos[0][0], 0, autos[0][2])
        force = self.force_point()
        if force is not None and (force, 1, None) < best:
            best = (force, 1, None)
        return best

    def _cash_out(
        self, bet: Bet, multiplier: int, kind: str, at_ms: int, events: list[Event]
    ) -> None:
        assert bet.state is BetState.OPEN and self.phase is Phase.RUNNING
        assert self.started_at_ms is not None
        assert MIN_MULTIPLIER <= multiplier <= self._stop_multiplier
        force_before = self.force_point()
        payout = bet.stake * multiplier // 100
        bet.state, bet.multiplier, bet.payout = BetState.WON, multiplier, payout
        self.open_stake -= bet.stake
        self.total_payout += payout
        self.winners += 1
        if self.config.max_profit is not None:
            assert self.total_payout <= self.total_stake + self.config.max_profit
            # Cashing out at or below the force point can only push it later.
            force_after = self.force_point()
            assert force_before is None or force_after is None or force_after >= force_before
        events.append(
            CashedOut(
                self._seq.take(),
                at_ms,
                self.round_id,
                ticket=bet.ticket,
                user=bet.user,
                stake=bet.stake,
                multiplier=multiplier,
                payout=payout,
                elapsed_ms=at_ms - self.started_at_ms,
                kind=kind,
            )
        )

    def _crash(self, at_ms: int, events: list[Event]) -> None:
        assert at_ms == self._crash_at_ms
        self._transition(Trigger.CRASH)
        self.crashed_at_ms = at_ms
        self.pause_ends_at_ms = at_ms + self.config.pause_ms
        events.append(
            Crashed(
                self._seq.take(),
                at_ms,
                self.round_id,
                crash_point=self._crash_point,
                multiplier=self._stop_multiplier,
                elapsed_ms=ms_at(self._stop_multiplier),
                game_hash=self._game_hash,
                pause_ends_at_ms=self.pause_ends_at_ms,
            )
        )
        winners = 0
        for bet in self._bets.values():
            if bet.state is BetState.OPEN:
                bet.state = BetState.LOST
                self.open_stake -= bet.stake
                events.append(
                    BetLost(
                        self._seq.take(),
                        at_ms,
                        self.round_id,
                        ticket=bet.ticket,
                        user=bet.user,
                        stake=bet.stake,
                    )
                )
            elif bet.state is BetState.WON:
                winners += 1
        assert self.open_stake == 0
        events.append(
            RoundSettled(
                self._seq.take(),
                at_ms,
                self.round_id,
                bets=len(self._bets),
                winners=winners,
                total_stake=self.total_stake,
                total_payout=self.total_payout,
            )
        )

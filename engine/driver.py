"""The Trio driver around the pure ``Sequencer``: clock, timers, observers.

The core decides *what* happens; this module decides *when*: it owns the engine clock
(integer ms derived from ``trio.current_time()``, so ``MockClock`` drives it in tests),
wakes on absolute deadlines (``trio.sleep_until``; a tick is ``start + k * period``, never
``sleep(period)``, so the loop cannot drift), and hands every event, in ``seq`` order, to
the registered observers.

Commands (``place_bet``, ``cash_out``, …) are handled immediately, in the calling task:
the core is pure and fast, so there is no queue to wait in and no tick to wait for. The
call reads the clock, lets the core catch up to that instant (a crash that is due is
settled first), applies the command, publishes, and re-arms the loop's timer if the
next deadline moved earlier. Between the clock read and the publish there is no
checkpoint, so the decision and its ``seq`` are atomic with respect to every other task.

Observers are synchronous and must not block: ``observer(events) -> None``. They run
inside the loop (and inside command calls), so a slow one would slow the engine; the
ledger writer and the WebSocket hub copy what they need into their own bounded queues.
An observer that raises is a bug: the engine stops and ``run`` re-raises it.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass

import trio
import trio.testing

from .round.config import RoundConfig
from .round.events import (
    BettingOpened,
    Crashed,
    Event,
    Paused,
    Resumed,
    RoundSettled,
    RoundVoided,
    RunningStarted,
    Stopped,
    Tick,
)
from .round.machine import BetInfo, RoundSnapshot
from .round.sequencer import Sequencer
from .round.tables import Phase

Observer = Callable[[Sequence[Event]], None]

DEFAULT_TICK_HZ = 20

DEFAULT_SPIN_MS = 1
"""Trio sleeps in epoll, whose timeout is whole milliseconds rounded *up*: a plain
``sleep_until`` wakes 0-1 ms late, on average half a millisecond, before any scheduling
noise. So the loop sleeps until ``spin_ms`` before a deadline and covers the last
stretch by yielding to the scheduler (other tasks and I/O still run) until the clock
reaches it: about half a millisecond of CPU per wake-up (1% of a core at 20 Hz)."""

_MS_EPSILON = 1e-6
"""A nanosecond, in ms. ``sleep_until(t0 + d / 1000)`` wakes at a float that, minus
``t0`` and times 1000, can land a hair below ``d``; without this the engine would see
``d - 1`` on waking from the timer for ``d``."""


_PHASE_OR_TICK = (
    Tick,
    BettingOpened,
    RunningStarted,
    Crashed,
    RoundVoided,
    RoundSettled,
    Stopped,
    Paused,
    Resumed,
)

_IDLE_WAKE_MS = 2**62
"""The wake instant while paused between rounds: no deadline, any command re-arms."""


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    ticks: int
    timer_wakeups: int
    commands: int
    events: int
    rounds_played: int
    observers: int
    max_tick_lateness_s: float


class EngineNotRunning(RuntimeError):
    """A command arrived before ``run`` started the engine clock."""


class Engine:
    """Rounds back to back along a chain, driven by Trio.

    ``games`` yields ``(game_number, game_hash)`` starting at ``first_game`` (after a
    restart, the caller resumes from the next unused game: ``next_game`` after a stop).
    """

    def __init__(
        self,
        *,
        games: Iterable[tuple[int, str] | tuple[int, str, str]],
        salt: str,
        first_game: int,
        config: RoundConfig | None = None,
        tick_hz: int = DEFAULT_TICK_HZ,
        first_seq: int = 1,
        lateness_samples: int = 100_000,
        spin_ms: int | None = None,
    ) -> None:
        """``spin_ms``: see ``DEFAULT_SPIN_MS``; ``None`` picks it on the system clock
        and 0 on a ``MockClock`` (whose time never moves while a task is spinning)."""
        if not 1 <= tick_hz <= 1000:
            raise ValueError("tick_hz must be in 1..1000")
        if spin_ms is not None and not 0 <= spin_ms <= 10:
            raise ValueError("spin_ms must be in 0..10")
        self._spin_ms = spin_ms
        self.tick_hz = tick_hz
        self._seq = Sequencer(
            config=config if config is not None else RoundConfig(),
            games=iter(games),
            salt=salt,
            first_game=first_game,
            first_seq=first_seq,
        )
        self._observers: list[Observer] = []
        self._t0: float | None = None
        self._wake_ms: int | None = None
        self._sleep_scope: trio.CancelScope | None = None
        self._observer_error: BaseException | None = None
        self._publishing = False
        self._finished = trio.Event()
        self._ticks = 0
        self._timer_wakeups = 0
        self._commands = 0
        self._events = 0
        self.changes = 0
        """Published event batches so far (a reader caching the state compares it)."""
        self.phase_changes = 0
        """Published batches that held a phase change or a tick."""
        self._max_tick_lateness = 0.0
        # Bounded: the bench reads these; a server running for weeks keeps the latest.
        self.tick_lateness: collections.deque[float] = collections.deque(maxlen=lateness_samples)
        self.tick_times: collections.deque[float] = collections.deque(maxlen=lateness_samples)
        """When each of ``tick_lateness``'s ticks ran (Trio time): a paused game ticks
        no more, and a judge of "recent" ticks must not go by its last round forever."""
        self.on_tick_lateness: Callable[[float], None] | None = None
        """Called with each tick's lateness (s), as it is measured: the operator's
        histogram (``crashd.api.ops.metrics``); must not block."""

    # -- observers and introspection -------------------------------------------------

    def add_observer(self, observer: Observer) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: Observer) -> None:
        self._observers.remove(observer)

    def now_ms(self) -> int:
        """The engine clock: whole ms since ``run`` started."""
        if self._t0 is None:
            raise EngineNotRunning("the engine clock starts with run()")
        return math.floor((trio.current_time() - self._t0) * 1000 + _MS_EPSILON)

    def time_of(self, ms: int) -> float:
        """The ``trio.current_time()`` value of engine instant ``ms``."""
        assert self._t0 is not None
        return self._t0 + ms / 1000

    @property
    def config(self) -> RoundConfig:
        """The config a bet placed now is held to: the round taking bets, else the next
        round's (``reconfigure``)."""
        if self._t0 is not None and not self._seq.finished:
            current = self._seq.current
            if current.phase is Phase.BETTING:
                return current.config
        return self._seq.config

    @property
    def next_config(self) -> RoundConfig:
        """The config the next round to open will play with."""
        return self._seq.config

    def reconfigure(self, config: RoundConfig) -> None:
        """Limits and max profit for the rounds that open from now on (the open round
        keeps its own). Synchronous and instant: no event, nothing to wait for."""
        self._seq.reconfigure(config)

    @property
    def paused(self) -> bool:
        return self._seq.paused

    @property
    def sequencer(self) -> Sequencer:
        """The pure core, for inspection (tests, the state endpoint's extras)."""
        return self._seq

    @property
    def next_game(self) -> int:
        return self._seq.next_game

    @property
    def finished(self) -> bool:
        return self._seq.finished

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            ticks=self._ticks,
            timer_wakeups=self._timer_wakeups,
            commands=self._commands,
            events=self._events,
            rounds_played=self._seq.rounds_played,
            observers=len(self._observers),
            max_tick_lateness_s=self._max_tick_lateness,
        )

    def overdue_s(self) -> float:
        """How far past its timer the loop is (s): 0 while it sleeps towards a deadline
        still ahead, or waits with none (paused, finished). A loop that keeps missing
        its wake-ups is what the readiness check reports."""
        if self._t0 is None or self._wake_ms is None or self._wake_ms == _IDLE_WAKE_MS:
            return 0.0
        return max(0.0, trio.current_time() - self.time_of(self._wake_ms))

    def snapshot(self) -> RoundSnapshot:
        """The public state now (``GET /game/state``): never the crash point or hash
        of a round that has not crashed."""
        if self._publishing:
            # Called by an observer (say, the hub resyncing a subscriber): the state as
            # of the events being delivered, without advancing (which would publish
            # from inside a publish and break seq order for the other observers).
            return self._seq.snapshot(self._seq.current.now_ms)
        now = self.now_ms()
        self._publish(self._seq.advance(now))
        return self._seq.snapshot(now)

    def user_bets(self, user: Hashable) -> tuple[BetInfo, ...]:
        """One user's bets in the current round, as of the last event published."""
        return self._seq.user_bets(user)

    def participants(self, offset: int, limit: int) -> tuple[BetInfo, ...]:
        """A page of the current round's bets, as of the last event published."""
        return self._seq.participants(offset, limit)

    def last_snapshot(self) -> RoundSnapshot:
        """The state as of the last event published, without advancing the clock: what
        a feed snapshot must show so it agrees with the ``seq`` it is sent at."""
        return self._seq.snapshot(self._seq.current.now_ms)

    # -- commands --------------------------------------------------------------------
    #
    # Each is a checkpoint in Trio's sense: cancellation before the decision means the
    # command was not applied; after the decision it is applied and answered.

    async def place_bet(
        self,
        ticket: str,
        user: Hashable,
        stake: int,
        auto_cashout: int | None = None,
        *,
        round_id: int | None = None,
    ) -> tuple[Event, ...]:
        """Join the round in betting, or the next one (``BetAccepted.queued``);
        ``round_id``: that round only (see ``Sequencer.place_bet``)."""
        await trio.lowlevel.checkpoint_if_cancelled()
        answer = self._command(
            lambda now: self._seq.place_bet(now, ticket, user, stake, auto_cashout, round_id)
        )
        await trio.lowlevel.cancel_shielded_checkpoint()
        return answer

    async def set_auto_cashout(self, ticket: str, target: int) -> tuple[Event, ...]:
        await trio.lowlevel.checkpoint_if_cancelled()
        answer = self._command(lambda now: self._seq.set_auto_cashout(now, ticket, target))
        await trio.lowlevel.cancel_shielded_checkpoint()
        return answer

    async def cancel_auto_cashout(self, ticket: str) -> tuple[Event, ...]:
        await trio.lowlevel.checkpoint_if_cancelled()
        answer = self._command(lambda now: self._seq.cancel_auto_cashout(now, ticket))
        await trio.lowlevel.cancel_shielded_checkpoint()
        return answer

    async def cash_out(self, ticket: str) -> tuple[Event, ...]:
        """Priced by the engine clock at this moment: ``CashedOut``, ``TooLate`` or a
        ``Rejected`` with its reason; exactly one of them."""
        await trio.lowlevel.checkpoint_if_cancelled()
        answer = self._command(lambda now: self._seq.cash_out(now, ticket))
        await trio.lowlevel.cancel_shielded_checkpoint()
        return answer

    def stop(
        self, *, void: bool = False, grace_ms: int | None = None, reason: str = "engine_stopping"
    ) -> tuple[Event, ...]:
        """Stop taking bets and end ``run`` after the current round crashes; with
        ``void``, end now, refunding every open bet of the current round; with
        ``grace_ms``, end within that long (see ``Sequencer.stop``)."""
        return self._command(
            lambda now: self._seq.stop(now, void=void, grace_ms=grace_ms, reason=reason)
        )

    def withdraw_bet(self, ticket: str, reason: str) -> tuple[Event, ...]:
        """Take back a bet whose funding failed (see ``Round.withdraw``)."""
        return self._command(lambda now: self._seq.withdraw_bet(now, ticket, reason))

    def pause(self) -> tuple[Event, ...]:
        """Open no round after the current one until ``resume`` (see ``Sequencer.pause``)."""
        return self._command(self._seq.pause)

    def resume(self) -> tuple[Event, ...]:
        return self._command(self._seq.resume)

    def void_round(self, reason: str = "operator") -> tuple[Event, ...]:
        """Void the current round (refund its open bets) and go on with the next."""
        return self._command(lambda now: self._seq.void_round(now, reason))

    async def wait_finished(self) -> None:
        await self._finished.wait()

    def _command(self, apply: Callable[[int], list[Event]]) -> tuple[Event, ...]:
        if self._publishing:
            raise RuntimeError("engine commands cannot be issued from inside an observer")
        now = self.now_ms()
        self._commands += 1
        due = self._seq.advance(now)  # what was due first: a crash beats a late cashout
        answer = apply(now)
        self._publish(due + answer)
        self._rearm()
        return tuple(answer)

    # -- the loop ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Play rounds until stopped (or the chain runs out); started once the first
        round is open for bets."""
        if self._t0 is not None:
            raise RuntimeError("an Engine runs once")
        self._t0 = trio.current_time()
        if self._spin_ms is None:
            mock = isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock)
            self._spin_ms = 0 if mock else DEFAULT_SPIN_MS
        spin = self._spin_ms / 1000
        self._publish(self._seq.start(0))
        task_status.started()
        period_num = 1000  # tick k of a run is at started_at + k * 1000 // hz: no drift
        tick_round = -1
        tick_index = 0
        try:
            while True:
                self._raise_observer_error()
                now = self.now_ms()
                events = self._seq.advance(now)
                current = None if self._seq.finished else self._seq.current
                next_tick: int | None = None
                if current is not None and current.phase is Phase.RUNNING:
                    started = current.started_at_ms
                    assert started is not None
                    if tick_round != current.round_id:
                        tick_round, tick_index = current.round_id, 0
                    if started + tick_index * period_num // self.tick_hz <= now:
                        events += current.tick(now)
                        self._ticks += 1
                        # Skip ticks the loop was too late for: no burst to catch up.
                        while started + tick_index * period_num // self.tick_hz <= now:
                            tick_index += 1
                    if current.phase is Phase.RUNNING:
                        next_tick = started + tick_index * period_num // self.tick_hz
                self._publish(events)
                self._raise_observer_error()
                if self._seq.finished:
                    break
                deadline = self._seq.next_deadline_ms()
                if deadline is None:  # paused between rounds: until a command
                    assert self._seq.idle
                    self._wake_ms = _IDLE_WAKE_MS
                    with trio.CancelScope() as scope:
                        self._sleep_scope = scope
                        await trio.sleep_forever()
                    self._sleep_scope = None
                    self._wake_ms = None
                    continue
                assert deadline > now
                wake = deadline if next_tick is None else min(deadline, next_tick)
                self._wake_ms = wake
                target = self.time_of(wake)
                with trio.CancelScope() as scope:
                    self._sleep_scope = scope
                    if spin:
                        await trio.sleep_until(target - spin)
                        while trio.current_time() < target:
                            await trio.lowlevel.checkpoint()
                    else:
                        await trio.sleep_until(target)
                self._sleep_scope = None
                self._wake_ms = None
                if not scope.cancelled_caught:
                    self._timer_wakeups += 1
                    if wake == next_tick:
                        ran = trio.current_time()
                        lateness = ran - target
                        self.tick_lateness.append(lateness)
                        self.tick_times.append(ran)
                        if self.on_tick_lateness is not None:
                            self.on_tick_lateness(lateness)
                        self._max_tick_lateness = max(self._max_tick_lateness, lateness)
        finally:
            self._finished.set()

    def _rearm(self) -> None:
        """Wake the loop early if a command brought the next deadline forward."""
        if self._sleep_scope is None or self._wake_ms is None:
            return
        deadline = self._seq.next_deadline_ms()
        if deadline is None or deadline < self._wake_ms:
            self._sleep_scope.cancel()

    def _publish(self, events: list[Event]) -> None:
        if not events:
            return
        self._events += len(events)
        # Counted before the observers run, so one reading them from inside a publish
        # (a feed snapshot) already knows the state moved on.
        self.changes += 1
        if any(isinstance(e, _PHASE_OR_TICK) for e in events):
            self.phase_changes += 1
        batch = tuple(events)
        self._publishing = True
        try:
            for observer in tuple(self._observers):
                try:
                    observer(batch)
                except BaseException as exc:
                    if self._finished.is_set():
                        raise  # no loop left to stop: fail the command that published
                    if self._observer_error is None:
                        self._observer_error = exc
                    if self._sleep_scope is not None:
                        self._sleep_scope.cancel()
        finally:
            self._publishing = False

    def _raise_observer_error(self) -> None:
        if self._observer_error is not None:
            raise RuntimeError("an engine observer raised") from self._observer_error

"""The sequencer: round after round along the hash chain, pure like ``Round``."""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field

from crashd.engine.fairness import crash_point as fair_crash_point
from crashd.engine.reasons import (
    DUPLICATE_TICKET,
    ENGINE_STOPPING,
    GAME_PAUSED,
    ROUND_CLOSED,
    ROUND_FULL,
    ROUND_NOT_RUNNING,
    TOO_MANY_BETS,
    UNKNOWN_TICKET,
)

from .config import RoundConfig
from .events import (
    AutoCashoutChanged,
    BetAccepted,
    BetRefunded,
    Event,
    Paused,
    Rejected,
    Resumed,
    Stopped,
)
from .machine import (
    Bet,
    BetInfo,
    BetState,
    Round,
    RoundSnapshot,
    SeqCounter,
    check_new_bet,
    check_target,
)
from .tables import Command, Phase


@dataclass(slots=True)
class _Queue:
    """Bets accepted for the round after the current one, in arrival order."""

    bets: dict[str, Bet] = field(default_factory=dict)
    per_user: dict[Hashable, int] = field(default_factory=dict)

    def add(self, bet: Bet) -> None:
        self.bets[bet.ticket] = bet
        self.per_user[bet.user] = self.per_user.get(bet.user, 0) + 1

    def take_all(self) -> list[Bet]:
        bets = list(self.bets.values())
        self.bets.clear()
        self.per_user.clear()
        return bets


class Sequencer:
    """Round after round along the chain: pure, like ``Round``.

    Round ``N`` plays game ``N`` of the chain, so a revealed hash's chain position is
    its round id. ``games`` yields ``(game_number, game_hash)`` from ``first_game`` on.
    Bets placed while a round runs (or in its crash pause) are accepted for the next
    round (``BetAccepted.queued``) and carried into it when it opens.
    """

    def __init__(
        self,
        *,
        config: RoundConfig,
        games: Iterator[tuple[int, str] | tuple[int, str, str]],
        salt: str,
        first_game: int,
        first_seq: int = 1,
    ) -> None:
        assert first_game >= 1
        self.config = config
        self.salt = salt
        self._games = games
        self._next_game = first_game
        self._seq = SeqCounter(first_seq)
        self._queue = _Queue()
        self._current: Round | None = None
        self.previous: Round | None = None
        self.stopping = False
        self.finished = False
        self.paused = False
        """Set by ``pause``: no round opens after the current one until ``resume``."""
        self.rounds_played = 0

    @property
    def current(self) -> Round:
        assert self._current is not None, "start() first"
        return self._current

    @property
    def next_seq(self) -> int:
        return self._seq.next

    @property
    def next_game(self) -> int:
        """The first game number no round has used: where a restart resumes."""
        return self._next_game

    @property
    def queued(self) -> Mapping[str, Bet]:
        return self._queue.bets

    def start(self, now_ms: int) -> list[Event]:
        assert self._current is None
        events: list[Event] = []
        self._open_round(now_ms, events)
        return events

    def next_deadline_ms(self) -> int | None:
        """When ``advance`` must next be called; ``None`` when nothing is due until a
        command (finished, or paused between rounds)."""
        if self.finished:
            return None
        deadline = self.current.next_deadline_ms()
        assert deadline is not None or (self.paused and self.idle)
        return deadline

    @property
    def idle(self) -> bool:
        """Paused between rounds: the last round is over and none is open."""
        return self.paused and self.current.phase in (Phase.ENDED, Phase.VOIDED)

    def reconfigure(self, config: RoundConfig) -> None:
        """Play rounds that open from now on with ``config`` (limits, max profit); the
        round already open keeps its own, and bets accepted stay accepted. Bets placed
        for the next round are checked against the new config from now on."""
        self.config = config

    def advance(self, now_ms: int) -> list[Event]:
        events: list[Event] = []
        if self.finished:
            return events
        # Bound: a long stall may cross a few rounds; each pass ends one.
        for _ in range(1_000_000):
            current = self.current
            events += current.advance(now_ms)
            if self.stopping and current.phase in (Phase.CRASHED, Phase.ENDED):
                assert current.crashed_at_ms is not None
                self._finish(current.crashed_at_ms, events)
                break
            if current.phase is not Phase.ENDED or self.paused:
                break
            assert current.ended_at_ms is not None
            late = now_ms - current.ended_at_ms
            opens = current.ended_at_ms if late <= self.config.max_lateness_ms else now_ms
            self._open_round(opens, events)
            if self.finished:
                break
        else:
            raise AssertionError("Sequencer.advance did not converge")
        return events

    def tick(self, now_ms: int) -> list[Event]:
        events = self.advance(now_ms)
        if not self.finished:
            events += self.current.tick(now_ms)
        return events

    def place_bet(
        self,
        now_ms: int,
        ticket: str,
        user: Hashable,
        stake: int,
        auto_cashout: int | None = None,
        round_id: int | None = None,
    ) -> list[Event]:
        """Join the round in betting, or queue for the next one. ``round_id``: into
        that round only — refused with ``round_closed`` unless it is the round taking
        bets now, or the next one while the current round is past betting (a seamless
        bet whose debit named its round must play in it or not at all)."""
        events = self.advance(now_ms)
        if self.stopping or self.finished:
            events.append(self._reject(now_ms, Command.PLACE_BET, ticket, user, ENGINE_STOPPING))
            return events
        current = self.current
        if self.paused and current.phase is not Phase.BETTING:
            events.append(self._reject(now_ms, Command.PLACE_BET, ticket, user, GAME_PAUSED))
            return events
        if round_id is not None:
            taking = current.round_id if current.phase is Phase.BETTING else self._next_game
            if round_id != taking:
                events.append(
                    Rejected(
                        self._seq.take(),
                        now_ms,
                        round_id,
                        command=Command.PLACE_BET.value,
                        ticket=ticket,
                        user=user,
                        reason=ROUND_CLOSED,
                    )
                )
                return events
        if ticket in self._queue.bets or (self.previous and ticket in self.previous.bets):
            events.append(self._reject(now_ms, Command.PLACE_BET, ticket, user, DUPLICATE_TICKET))
            return events
        if current.phase is Phase.BETTING:
            events += current.place_bet(now_ms, ticket, user, stake, auto_cashout)
            return events
        # Betting is closed: the bet is for the next round.
        reason = DUPLICATE_TICKET if ticket in current.bets else None
        if reason is None:
            reason = check_new_bet(self.config, stake, auto_cashout)
        if reason is None and self._queue.per_user.get(user, 0) >= self.config.max_bets_per_user:
            reason = TOO_MANY_BETS
        if reason is None and len(self._queue.bets) >= self.config.max_bets_per_round:
            reason = ROUND_FULL
        if reason is not None:
            events.append(
                Rejected(
                    self._seq.take(),
                    now_ms,
                    self._next_game,
                    command=Command.PLACE_BET.value,
                    ticket=ticket,
                    user=user,
                    reason=reason,
                )
            )
            return events
        self._queue.add(Bet(ticket, user, stake, auto_cashout, now_ms))
        events.append(
            BetAccepted(
                self._seq.take(),
                now_ms,
                self._next_game,
                ticket=ticket,
                user=user,
                stake=stake,
                auto_cashout=auto_cashout,
                queued=True,
            )
        )
        return events

    def set_auto_cashout(self, now_ms: int, ticket: str, target: int | None) -> list[Event]:
        """Set a target, or cancel it with ``None`` (same as ``cancel_auto_cashout``)."""
        events = self.advance(now_ms)
        command = Command.SET_AUTO_CASHOUT if target is not None else Command.CANCEL_AUTO_CASHOUT
        queued = self._queue.bets.get(ticket)
        if queued is not None:
            reason = check_target(target)
            if reason is not None:
                events.append(
                    Rejected(
                        self._seq.take(),
                        now_ms,
                        self._next_game,
                        command=command.value,
                        ticket=ticket,
                        user=queued.user,
                        reason=reason,
                    )
                )
            else:
                queued.auto_cashout = target
                events.append(
                    AutoCashoutChanged(
                        self._seq.take(),
                        now_ms,
                        self._next_game,
                        ticket=ticket,
                        user=queued.user,
                        target=target,
                    )
                )
            return events
        round_ = self._round_of(ticket)
        if round_ is None:
            events.append(self._reject(now_ms, command, ticket, None, UNKNOWN_TICKET))
        else:
            events += round_.set_auto_cashout(now_ms, ticket, target)
        return events

    def cancel_auto_cashout(self, now_ms: int, ticket: str) -> list[Event]:
        return self.set_auto_cashout(now_ms, ticket, None)

    def cash_out(self, now_ms: int, ticket: str) -> list[Event]:
        events = self.advance(now_ms)
        queued = self._queue.bets.get(ticket)
        if queued is not None:
            events.append(
                Rejected(
                    self._seq.take(),
                    now_ms,
                    self._next_game,
                    command=Command.CASH_OUT.value,
                    ticket=ticket,
                    user=queued.user,
                    reason=ROUND_NOT_RUNNING,
                )
            )
            return events
        round_ = self._round_of(ticket)
        if round_ is None:
            events.append(self._reject(now_ms, Command.CASH_OUT, ticket, None, UNKNOWN_TICKET))
        else:
            events += round_.cash_out(now_ms, ticket)
        return events

    def stop(
        self,
        now_ms: int,
        *,
        void: bool = False,
        grace_ms: int | None = None,
        reason: str = "engine_stopping",
    ) -> list[Event]:
        """Accept no more bets; refund the queue; finish after the current round crashes,
        or at once (voiding the current round) with ``void``.

        ``grace_ms`` bounds the stop instead: a round still taking bets is voided at
        once (none of its bets can play), a running round plays on only if it crashes
        within ``grace_ms`` (the engine knows when it will) and is voided now otherwise,
        so the stop ends within ``grace_ms`` in every phase. A void refunds every open
        bet exactly once and reveals the burnt game; bets already cashed out keep
        their win."""
        events = self.advance(now_ms)
        if self.finished:
            return events
        self.stopping = True
        self._refund_queue(now_ms, reason, events)
        current = self.current
        if grace_ms is not None and not void:
            crash_at = current.crash_at_ms
            void = current.phase is Phase.BETTING or (
                current.phase is Phase.RUNNING
                and crash_at is not None
                and crash_at - now_ms > grace_ms
            )
        if void and current.phase in (Phase.BETTING, Phase.RUNNING):
            events += current.void(now_ms, reason)
        if current.phase in (Phase.CRASHED, Phase.ENDED, Phase.VOIDED):
            self._finish(now_ms, events)
        return events

    def void_round(self, now_ms: int, reason: str) -> list[Event]:
        """Void the current round and carry on with the next one."""
        events = self.advance(now_ms)
        if self.finished:
            return events
        current = self.current
        events += current.void(now_ms, reason)
        if current.phase is Phase.VOIDED:
            if self.stopping:
                self._finish(now_ms, events)
            elif not self.paused:
                self._open_round(now_ms, events)
        return events

    def pause(self, now_ms: int) -> list[Event]:
        """Let the current round play to its end, then open no other until ``resume``.
        Bets for the next round are refused (``game_paused``) and those already queued
        for it are refunded now; the current round still takes bets while betting.
        Pausing a paused game changes nothing."""
        events = self.advance(now_ms)
        if self.finished or self.paused:
            return events
        self.paused = True
        refunded = len(self._queue.bets)
        self._refund_queue(now_ms, "paused", events)
        events.append(Paused(self._seq.take(), now_ms, self.current.round_id, refunded=refunded))
        return events

    def resume(self, now_ms: int) -> list[Event]:
        """Undo ``pause``: if the paused round is over, the next one opens now."""
        events = self.advance(now_ms)
        if self.finished or not self.paused:
            return events
        self.paused = False
        events.append(Resumed(self._seq.take(), now_ms, self.current.round_id))
        if self.current.phase in (Phase.ENDED, Phase.VOIDED):
            self._open_round(now_ms, events)
        return events

    def withdraw_bet(self, now_ms: int, ticket: str, reason: str) -> list[Event]:
        """Take back an unfunded bet, queued or open (see ``Round.withdraw``)."""
        events = self.advance(now_ms)
        queued = self._queue.bets.pop(ticket, None)
        if queued is not None:
            self._queue.per_user[queued.user] -= 1
            queued.state = BetState.REFUNDED
            events.append(
                BetRefunded(
                    self._seq.take(),
                    now_ms,
                    self._next_game,
                    ticket=ticket,
                    user=queued.user,
                    stake=queued.stake,
                    reason=reason,
                )
            )
            return events
        round_ = self._round_of(ticket)
        if round_ is not None:
            events += round_.withdraw(now_ms, ticket, reason)
        return events

    def find_bet(self, ticket: str) -> Bet | None:
        """The bet with this ticket, queued or in the current or previous round."""
        queued = self._queue.bets.get(ticket)
        if queued is not None:
            return queued
        round_ = self._round_of(ticket)
        return round_.bets[ticket] if round_ is not None else None

    def snapshot(self, now_ms: int) -> RoundSnapshot:
        return self.current.snapshot(
            now_ms, next_round_bets=len(self._queue.bets), paused=self.paused
        )

    def user_bets(self, user: Hashable) -> tuple[BetInfo, ...]:
        """A user's bets in the current round (O(their bets))."""
        return self.current.bets_of(user)

    def queued_bets_of(self, user: Hashable) -> int:
        """How many bets ``user`` has queued for the next round (O(1))."""
        return self._queue.per_user.get(user, 0)

    def participants(self, offset: int, limit: int) -> tuple[BetInfo, ...]:
        """A page of the current round's bets in placement order."""
        return self.current.participants(offset, limit)

    # -- internals -----------------------------------------------------------------

    def _round_of(self, ticket: str) -> Round | None:
        if self._current is not None and ticket in self._current.bets:
            return self._current
        if self.previous is not None and ticket in self.previous.bets:
            return self.previous
        return None

    def _reject(
        self, now_ms: int, command: Command, ticket: str | None, user: Hashable | None, reason: str
    ) -> Rejected:
        round_id = self._current.round_id if self._current is not None else self._next_game
        return Rejected(
            self._seq.take(),
            now_ms,
            round_id,
            command=command.value,
            ticket=ticket,
            user=user,
            reason=reason,
        )

    def _open_round(self, at_ms: int, events: list[Event]) -> None:
        game = next(self._games, None)
        if game is None:  # the chain is used up: nothing more can be played fairly
            self.stopping = True
            self._refund_queue(at_ms, "chain_exhausted", events)
            self._finish(at_ms, events)
            return
        # (number, hash) or, across chains with salts of their own, (number, hash, salt).
        number, game_hash = game[0], game[1]
        salt = game[2] if len(game) > 2 else self.salt
        assert number == self._next_game, f"chain gave game {number}, expected {self._next_game}"
        self._next_game += 1
        if self._current is not None:
            self.previous = self._current
            self.rounds_played += 1
        self._current = Round(
            round_id=number,
            game_hash=game_hash,
            crash_point=fair_crash_point(game_hash, salt),
            config=self.config,
            opens_at_ms=at_ms,
            seq=self._seq,
        )
        events += self._current.open(self._queue.take_all())

    def _refund_queue(self, now_ms: int, reason: str, events: list[Event]) -> None:
        for bet in self._queue.take_all():
            bet.state = BetState.REFUNDED
            events.append(
                BetRefunded(
                    self._seq.take(),
                    now_ms,
                    self._next_game,
                    ticket=bet.ticket,
                    user=bet.user,
                    stake=bet.stake,
                    reason=reason,
                )
            )

    def _finish(self, at_ms: int, events: list[Event]) -> None:
        assert not self.finished and not self._queue.bets
        self.finished = True
        last = self._current.round_id if self._current is not None else self._next_game - 1
        events.append(Stopped(self._seq.take(), at_ms, last, next_game=self._next_game))

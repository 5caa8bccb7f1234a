"""What the engine did in each round, kept for its transcript.

``Recorder.observe`` is an engine observer: for every event that matters to a round's
settlement it appends a reference to that round's list, and nothing else (one type test
and one append per event, on the tick path). Everything else happens later, off the
tick path, on the ledger writer's thread: ``RoundRecord`` turns a round's events into
the seal and the transcript in the formats of ``documents``.

A round's record is handed out by ``take(round_id)`` (once its transcript is built) and
the recorder keeps a bounded number of rounds, so a round nobody settles (the engine
stopped first) does not stay in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from crashd.engine.round.events import (
    AutoCashoutChanged,
    BetAccepted,
    BetLost,
    BetRefunded,
    BettingOpened,
    CashedOut,
    Crashed,
    Event,
    RoundSettled,
    RoundVoided,
    RunningStarted,
)

from .documents import SealedBet, seal_body

KEPT = (
    BetAccepted,
    AutoCashoutChanged,
    CashedOut,
    BetRefunded,
    BetLost,
    BettingOpened,
    RunningStarted,
    Crashed,
    RoundVoided,
    RoundSettled,
)
MAX_ROUNDS = 16
"""Rounds recorded at once (the live one, the next one's queue, and a few waiting for
their settlement to commit)."""


class Recorder:
    """Per round, the engine events its transcript is built from (pure, bounded)."""

    def __init__(self, max_rounds: int = MAX_ROUNDS) -> None:
        self._rounds: dict[int, list[Event]] = {}
        self._max_rounds = max_rounds
        self._kept = frozenset(KEPT)

    def observe(self, events: Sequence[Event]) -> None:
        kept = self._kept
        rounds = self._rounds
        for event in events:
            if type(event) in kept:
                log = rounds.get(event.round_id)
                if log is None:
                    if len(rounds) >= self._max_rounds:
                        del rounds[min(rounds)]
                    log = rounds[event.round_id] = []
                log.append(event)

    def events(self, round_id: int) -> Sequence[Event] | None:
        """The round's events so far (the live list: read it only once the round's
        events are all in, i.e. from an op queued after them)."""
        return self._rounds.get(round_id)

    def take(self, round_id: int) -> list[Event] | None:
        """The round's events, forgotten here (its transcript is being written)."""
        return self._rounds.pop(round_id, None)


@dataclass(frozen=True, slots=True)
class RoundRecord:
    """A round's settlement as the engine decided it, in documents' terms: instants in
    Unix ms of the engine clock (``epoch``), players by pseudonym."""

    round_id: int
    opened_at: int
    closes_at: int
    started_at: int | None
    log: tuple[dict[str, Any], ...]
    """Commands in the order the engine handled them: bets, target changes, manual
    cash-outs, withdrawals (``"queued"`` when the round had not opened yet)."""
    sealed: tuple[SealedBet, ...]
    """The bets in play when betting closed, in placement order, targets as then."""
    settlement: tuple[dict[str, Any], ...]
    """Every bet's outcome, in the order decided."""
    crash: dict[str, Any] | None
    void: dict[str, Any] | None
    crash_point: int
    game_hash: str

    def seal(self) -> dict[str, Any] | None:
        """The unsigned seal, or ``None`` if the round never started."""
        if self.started_at is None:
            return None
        return seal_body(
            self.round_id, self.opened_at, self.closes_at, self.started_at, list(self.sealed)
        )


def build_record(
    round_id: int,
    events: Sequence[Event],
    epoch: Callable[[int], int],
    player: Callable[[object], str],
) -> RoundRecord:
    """The record of a round from its events (all of them: through its crash or void)."""
    log: list[dict[str, Any]] = []
    settlement: list[dict[str, Any]] = []
    bets: dict[str, dict[str, Any]] = {}
    order: list[str] = []
    withdrawn_before_start: set[str] = set()
    opened = started = False
    opened_at = closes_at = 0
    started_at: int | None = None
    crash: dict[str, Any] | None = None
    void: dict[str, Any] | None = None
    crash_point = 0
    game_hash = ""
    # A void's refunds are the run of BetRefunded right before its RoundVoided; every
    # other BetRefunded of a round is a withdrawal (a bet whose funding failed).
    void_refunds: set[int] = set()
    for i, event in enumerate(events):
        if isinstance(event, RoundVoided):
            j = i - 1
            while j >= 0 and isinstance(events[j], BetRefunded) and events[j].at_ms == event.at_ms:
                void_refunds.add(j)
                j -= 1
    for i, event in enumerate(events):
        at = epoch(event.at_ms)
        if isinstance(event, BettingOpened):
            opened, opened_at, closes_at = True, at, epoch(event.closes_at_ms)
        elif isinstance(event, BetAccepted):
            entry = {
                "at": at,
                "op": "bet",
                "ticket_id": event.ticket,
                "player": player(event.user),
                "stake": event.stake,
                "auto_cashout": event.auto_cashout,
                "queued": not opened,
            }
            log.append(entry)
            bets[event.ticket] = {**entry}
            order.append(event.ticket)
        elif isinstance(event, AutoCashoutChanged):
            log.append(
                {
                    "at": at,
                    "op": "target",
                    "ticket_id": event.ticket,
                    "auto_cashout": event.target,
                    "queued": not opened,
                }
            )
            if event.ticket in bets:
                bets[event.ticket]["auto_cashout"] = event.target
        elif isinstance(event, RunningStarted):
            started, started_at = True, at
        elif isinstance(event, CashedOut):
            if event.kind == "manual":
                log.append({"at": at, "op": "cashout", "ticket_id": event.ticket})
            settlement.append(
                {
                    "ticket_id": event.ticket,
                    "outcome": "won",
                    "cashout": event.kind,
                    "at": at,
                    "elapsed_ms": event.elapsed_ms,
                    "multiplier": event.multiplier,
                    "payout": event.payout,
                }
            )
        elif isinstance(event, BetRefunded):
            if i in void_refunds:
                settlement.append(
                    {"ticket_id": event.ticket, "outcome": "refunded", "payout": event.stake}
                )
            else:
                log.append(
                    {
                        "at": at,
                        "op": "withdraw",
                        "ticket_id": event.ticket,
                        "reason": event.reason,
                        "queued": not opened,
                    }
                )
                settlement.append({"ticket_id": event.ticket, "outcome": "withdrawn"})
                if not started:
                    withdrawn_before_start.add(event.ticket)
        elif isinstance(event, BetLost):
            settlement.append({"ticket_id": event.ticket, "outcome": "lost", "payout": 0})
        elif isinstance(event, Crashed):
            crash = {"at": at, "elapsed_ms": event.elapsed_ms, "multiplier": event.multiplier}
            crash_point, game_hash = event.crash_point, event.game_hash
        elif isinstance(event, RoundVoided):
            void = {"at": at, "reason": event.reason, "by": "engine"}
            crash_point, game_hash = event.crash_point, event.game_hash
    sealed = tuple(
        SealedBet(t, bets[t]["player"], bets[t]["stake"], bets[t]["auto_cashout"], bets[t]["at"])
        for t in _play_order(order, bets)
        if t not in withdrawn_before_start
    )
    return RoundRecord(
        round_id,
        opened_at,
        closes_at,
        started_at,
        tuple(log),
        sealed if started else (),
        tuple(settlement),
        crash,
        void,
        crash_point,
        game_hash,
    )


def _play_order(order: list[str], bets: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The engine's order of a round's bets: those carried from the queue (in the order
    accepted), then those placed while it was betting."""
    return [t for t in order if bets[t]["queued"]] + [t for t in order if not bets[t]["queued"]]

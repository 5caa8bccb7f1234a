"""Events the round engine emits: frozen, numbered, serialisable without knowing internals.

Every event carries ``seq`` (contiguous over the life of a sequencer, across rounds),
``at_ms`` (the engine-clock instant the event happened *logically*: an auto-cashout
reports the exact millisecond its target was reached, even when the driver handled it a
little later) and ``round_id`` (the chain game number of the round it belongs to).

``to_public_dict()`` gives a JSON-safe dict: integers for money and multipliers, user
keys as lists. Only ``Crashed`` and ``RoundVoided`` carry the game hash and crash point;
nothing emitted before them lets anyone derive either.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, fields
from typing import ClassVar


def public_value(value: object) -> object:
    """A JSON-safe form of an event field (user keys are opaque hashables)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (tuple, list)):
        return [public_value(v) for v in value]
    return str(value)


CASHOUT_KINDS = ("manual", "auto", "max_win", "forced")
"""``CashedOut.kind``: how a bet was cashed out (docs/round-engine.md, docs/feed.md)."""


@dataclass(frozen=True, slots=True)
class Event:
    TYPE: ClassVar[str] = "event"

    seq: int
    at_ms: int
    round_id: int

    def to_public_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"type": self.TYPE}
        for f in fields(self):
            out[f.name] = public_value(getattr(self, f.name))
        return out


@dataclass(frozen=True, slots=True)
class BettingOpened(Event):
    """Phase change: a round opened for bets (``bets`` were queued for it already)."""

    TYPE: ClassVar[str] = "betting_opened"
    closes_at_ms: int
    bets: int


@dataclass(frozen=True, slots=True)
class BetAccepted(Event):
    """A funded bet joined ``round_id``; ``queued`` when it was placed while the
    previous round was running or crashed and waits for this one to open."""

    TYPE: ClassVar[str] = "bet_accepted"
    ticket: str
    user: Hashable
    stake: int
    auto_cashout: int | None
    queued: bool


@dataclass(frozen=True, slots=True)
class Rejected(Event):
    """A command was refused and changed nothing. ``reason`` is a stable snake_case
    code (see ``crashd.engine.round.REASONS``); ``round_id`` is the round that was asked."""

    TYPE: ClassVar[str] = "rejected"
    command: str
    ticket: str | None
    user: Hashable | None
    reason: str


@dataclass(frozen=True, slots=True)
class AutoCashoutChanged(Event):
    TYPE: ClassVar[str] = "auto_cashout_changed"
    ticket: str
    user: Hashable
    target: int | None


@dataclass(frozen=True, slots=True)
class RunningStarted(Event):
    """Phase change: betting closed, the multiplier starts rising at ``at_ms``."""

    TYPE: ClassVar[str] = "running_started"
    bets: int
    total_stake: int


@dataclass(frozen=True, slots=True)
class Tick(Event):
    TYPE: ClassVar[str] = "tick"
    elapsed_ms: int
    multiplier: int


@dataclass(frozen=True, slots=True)
class CashedOut(Event):
    """A bet won: ``payout = stake * multiplier // 100``. ``kind`` is one of
    ``CASHOUT_KINDS``: ``manual`` (priced at the handling moment), ``auto`` (exactly
    its target), ``max_win`` (the bet's max-win cap) or ``forced`` (the max-profit
    force point)."""

    TYPE: ClassVar[str] = "cashed_out"
    ticket: str
    user: Hashable
    stake: int
    multiplier: int
    payout: int
    elapsed_ms: int
    kind: str


@dataclass(frozen=True, slots=True)
class TooLate(Event):
    """The answer to a cashout of a bet that had already lost: the round crashed at
    ``crashed_at`` (hundredths) before the request was handled."""

    TYPE: ClassVar[str] = "too_late"
    REASON: ClassVar[str] = "too_late"
    ticket: str
    user: Hashable
    crashed_at: int


@dataclass(frozen=True, slots=True)
class Crashed(Event):
    """Phase change: the round crashed. Reveals the game hash and the crash point as
    the verifiers compute it; ``multiplier`` is where the curve stopped, which differs
    only when the crash point is above the engine's ``MAX_MULTIPLIER``."""

    TYPE: ClassVar[str] = "crashed"
    crash_point: int
    multiplier: int
    elapsed_ms: int
    game_hash: str
    pause_ends_at_ms: int


@dataclass(frozen=True, slots=True)
class BetLost(Event):
    TYPE: ClassVar[str] = "bet_lost"
    ticket: str
    user: Hashable
    stake: int


@dataclass(frozen=True, slots=True)
class RoundSettled(Event):
    """Every bet of the round has its outcome; totals for the ledger and the feed."""

    TYPE: ClassVar[str] = "round_settled"
    bets: int
    winners: int
    total_stake: int
    total_payout: int


@dataclass(frozen=True, slots=True)
class BetRefunded(Event):
    """A bet's stake goes back to the player: its round was voided, or it was queued
    for a round that will not be played because the engine is stopping."""

    TYPE: ClassVar[str] = "bet_refunded"
    ticket: str
    user: Hashable
    stake: int
    reason: str


@dataclass(frozen=True, slots=True)
class RoundVoided(Event):
    """The round was called off; open bets were refunded (bets already cashed out
    keep their win). Its game is burnt, so its hash and crash point are revealed."""

    TYPE: ClassVar[str] = "round_voided"
    reason: str
    refunded: int
    crash_point: int
    game_hash: str


@dataclass(frozen=True, slots=True)
class Stopped(Event):
    """The sequencer plays no more rounds; ``round_id`` was the last one played and
    ``next_game`` is where a restart resumes the chain."""

    TYPE: ClassVar[str] = "stopped"
    next_game: int


@dataclass(frozen=True, slots=True)
class Paused(Event):
    """The operator paused the game: ``round_id`` plays to its end, then no round opens
    until ``Resumed``; the ``refunded`` bets queued for the next round were refunded."""

    TYPE: ClassVar[str] = "paused"
    refunded: int


@dataclass(frozen=True, slots=True)
class Resumed(Event):
    """The game goes on: the next round opens now (if the paused one had ended)."""

    TYPE: ClassVar[str] = "resumed"

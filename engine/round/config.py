"""Operator settings of a round: stake limits, max profit, bets per user, phase lengths.

One frozen dataclass, validated once at construction, so the round state machine can
trust every value it reads from it. All money is integer minor units; all durations are
integer milliseconds of the engine clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RoundConfig:
    min_stake: int = 1
    """Smallest stake accepted for one bet (``stake_too_small`` below it)."""
    max_stake: int = 1_000_000_00
    """Largest stake accepted for one bet (``stake_too_large`` above it)."""
    max_profit: int | None = None
    """Cap on the players' total profit in one round (Bustabit's max profit); ``None``
    for no cap. When the round's open liability would exceed it, every open bet is
    cashed out at that multiplier: the force point."""
    max_win: int | None = None
    """Cap on one bet's profit (payout minus stake); ``None`` for no cap. A bet still
    open when its profit would exceed it is cashed out at the largest multiplier that
    stays within it (``kind="max_win"``), like an auto-cashout target set for it."""
    max_bets_per_user: int = 1
    """Bets one user key may hold in one round (Aviator allows two)."""
    max_bets_per_round: int = 10_000
    """Bound on the bets of one round and on the queue for the next (``round_full``):
    every queue has a bound."""
    betting_ms: int = 5_000
    """Length of the betting window."""
    pause_ms: int = 3_000
    """Pause after a crash, during which the revealed result is shown."""
    max_lateness_ms: int = 250
    """How late a timer phase change (betting closes, next round opens) may be handled
    and still take effect at its scheduled instant. Handled later than that (the
    process was stalled), it takes effect at the handling moment instead, so the engine
    never plays a round "in the past" that nobody could watch or cash out of."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_stake <= self.max_stake:
            raise ValueError("need 1 <= min_stake <= max_stake")
        if self.max_profit is not None and self.max_profit < 0:
            raise ValueError("max_profit must not be negative")
        if self.max_win is not None and self.max_win < 0:
            raise ValueError("max_win must not be negative")
        if self.max_bets_per_user < 1:
            raise ValueError("max_bets_per_user must be at least 1")
        if self.max_bets_per_round < 1:
            raise ValueError("max_bets_per_round must be at least 1")
        if self.betting_ms < 0 or self.pause_ms < 0 or self.max_lateness_ms < 0:
            raise ValueError("durations must not be negative")
        if self.betting_ms + self.pause_ms < 1:
            # Else a 1.00x crash would open, run, crash and end rounds without end
            # inside a single millisecond.
            raise ValueError("betting_ms + pause_ms must be at least 1 ms")

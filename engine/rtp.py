"""Return to player, observed against the theoretical 99%: pure, never adjusts the game.

Each settled bet is one binomial trial: a bet of stake ``s`` that plays for multiplier
``m`` (hundredths) wins ``s * m / 100`` with probability ``P(crash >= m) = 0.99 / m``
(the fairness formula, DESIGN.md) and nothing otherwise, so under a fair game its
expected return is ``0.99 s`` whatever ``m`` is, and its variance is
``(s m)^2 p (1 - p)``. Which ``m`` a bet played for:

* a winner: the multiplier it was cashed out at (by hand, auto, the max-win cap or the
  round's force point);
* a loser with an auto-cashout target: that target;
* a loser without one: the crash point plus 0.01x, the least it can have been holding
  out for (so its variance is the smallest possible: the band is, if anything, narrow,
  and alerts err on the side of too many).

A 1.00x cash-out (a force point at the start of the round) wins with certainty: it
counts with its full stake as expected return and no variance.

Over a window of the last ``N`` crashed rounds the observed RTP (payouts / stakes) is
compared with the expected one (≈ 0.99) ± ``z`` standard deviations of the sum (normal
approximation of the sum of the bets' binomial trials); outside that band the monitor
is in alert. Voided rounds are left out (their open bets were refunded, never at risk;
their cash-outs would count the survivors only).
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterable
from dataclasses import dataclass

from .fairness import HOUSE_EDGE_NUMERATOR
from .round.machine import Bet, BetState

THEORETICAL_RTP = HOUSE_EDGE_NUMERATOR / 100
"""0.99: every bet's expected return per unit staked under the fairness formula."""


@dataclass(frozen=True, slots=True)
class RoundOutcome:
    """One crashed round, as the monitor keeps it."""

    round_id: int
    bets: int
    stake: int
    payout: int
    expected: float
    """Sum of the bets' expected payouts under a fair game."""
    variance: float
    """Sum of the bets' payout variances under a fair game."""


def bet_trial(stake: int, multiplier: int) -> tuple[float, float]:
    """(expected payout, variance) of a bet of ``stake`` playing for ``multiplier``."""
    if multiplier <= 100:
        return float(stake), 0.0
    win = stake * multiplier / 100
    p = min(1.0, THEORETICAL_RTP * 100 / multiplier)
    return win * p, win * win * p * (1 - p)


def round_outcome(round_id: int, crash_point: int, bets: Iterable[Bet]) -> RoundOutcome:
    """A crashed round's trials (bets withdrawn unfunded are not trials)."""
    n = stake = payout = 0
    expected = variance = 0.0
    for bet in bets:
        if bet.state is BetState.WON:
            assert bet.multiplier is not None and bet.payout is not None
            m = bet.multiplier
            payout += bet.payout
        elif bet.state is BetState.LOST:
            m = bet.auto_cashout if bet.auto_cashout is not None else crash_point + 1
        else:
            continue
        e, v = bet_trial(bet.stake, m)
        n += 1
        stake += bet.stake
        expected += e
        variance += v
    return RoundOutcome(round_id, n, stake, payout, expected, variance)


@dataclass(frozen=True, slots=True)
class RtpReading:
    rounds: int
    bets: int
    stake: int
    payout: int
    observed: float | None
    """Payouts / stakes over the window; ``None`` before any stake."""
    expected: float | None
    low: float | None
    high: float | None
    """The band: expected ± z standard deviations (as ratios of the stake)."""
    alert: bool
    """Observed RTP outside the band (with at least ``min_bets`` bets in the window)."""


class RtpWindow:
    """The last ``rounds`` crashed rounds, with running sums (O(1) per round)."""

    def __init__(self, rounds: int = 1000, z: float = 4.0, min_bets: int = 100) -> None:
        if rounds < 1 or z <= 0 or min_bets < 1:
            raise ValueError("need rounds >= 1, z > 0, min_bets >= 1")
        self.size = rounds
        self.z = z
        self.min_bets = min_bets
        self._window: collections.deque[RoundOutcome] = collections.deque()
        self._bets = self._stake = self._payout = 0
        self._expected = self._variance = 0.0

    def add(self, outcome: RoundOutcome) -> None:
        self._window.append(outcome)
        self._bets += outcome.bets
        self._stake += outcome.stake
        self._payout += outcome.payout
        self._expected += outcome.expected
        self._variance += outcome.variance
        if len(self._window) > self.size:
            old = self._window.popleft()
            self._bets -= old.bets
            self._stake -= old.stake
            self._payout -= old.payout
            self._expected -= old.expected
            self._variance -= old.variance

    def reading(self) -> RtpReading:
        if self._stake == 0:
            return RtpReading(len(self._window), 0, 0, 0, None, None, None, None, False)
        observed = self._payout / self._stake
        expected = self._expected / self._stake
        spread = self.z * math.sqrt(max(0.0, self._variance)) / self._stake
        low, high = expected - spread, expected + spread
        alert = self._bets >= self.min_bets and not low <= observed <= high
        return RtpReading(
            len(self._window),
            self._bets,
            self._stake,
            self._payout,
            observed,
            expected,
            low,
            high,
            alert,
        )

"""Limits and the RTP window, pure: validation, the bankroll cap, the band."""

from __future__ import annotations

import pytest

from crashd.engine.limits import Limits, LimitsError, max_profit_for
from crashd.engine.rtp import RoundOutcome, RtpWindow, bet_trial


def test_limits_are_checked_together() -> None:
    with pytest.raises(LimitsError, match="min_stake"):
        Limits(min_stake=10, max_stake=5)
    with pytest.raises(LimitsError, match="max_win"):
        Limits(max_stake=10_000, max_win=99)
    assert Limits(max_stake=10_000, max_win=100).max_win == 100
    with pytest.raises(LimitsError, match="not a limit"):
        Limits().changed(max_loss=1)


def test_the_bankroll_cap_is_a_share_and_never_negative() -> None:
    limits = Limits(max_profit_mode="bankroll", max_profit_bp=125)
    assert max_profit_for(limits, 1_000_000) == 12_500
    assert max_profit_for(limits, -5) == 0
    assert max_profit_for(Limits(max_profit=0), 10**9) is None
    assert max_profit_for(Limits(max_profit=700), 10**9) == 700


def test_every_trial_expects_99_percent_and_the_band_catches_a_rigged_game() -> None:
    for m in (101, 200, 1_000, 100_000):
        expected, variance = bet_trial(10_000, m)
        assert expected == pytest.approx(9_900) and variance > 0
    assert bet_trial(10_000, 100) == (10_000.0, 0.0)
    fair, rigged = RtpWindow(rounds=100, z=4, min_bets=10), RtpWindow(rounds=100, z=4, min_bets=10)
    e, v = bet_trial(1_000, 200)
    for i in range(100):
        # 100 bets per round at 2.00x: a fair game pays about half of them...
        fair.add(RoundOutcome(i, 100, 100_000, 99_000, 100 * e, 100 * v))
        # ...a rigged one a third.
        rigged.add(RoundOutcome(i, 100, 100_000, 66_000, 100 * e, 100 * v))
    assert not fair.reading().alert and rigged.reading().alert
    reading = fair.reading()
    assert reading.low is not None and reading.high is not None
    assert reading.low < 0.99 < reading.high and reading.rounds == 100

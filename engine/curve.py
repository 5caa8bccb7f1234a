"""The multiplier curve: ``floor(100 * e^(0.00006 * ms))`` in integer hundredths.

This is Bustabit's curve, which clients already draw themselves. The float evaluation is
part of the definition: ``multiplier_at`` is computed exactly as a JavaScript client
computes it (IEEE doubles), and ``ms_at`` is the exact inverse *of that function*, found
by correcting an analytic estimate against it, so the two can never disagree by a
millisecond.
"""

from __future__ import annotations

import math

from .bounds import MAX_MULTIPLIER, MIN_MULTIPLIER

GROWTH_PER_MS = 0.00006
"""Exponent rate: 2.00x at 11,553 ms, 100x at 76,753 ms (README figures are checked against ms_at)."""


def multiplier_at(elapsed_ms: int) -> int:
    """The multiplier, in hundredths, after ``elapsed_ms`` milliseconds of running."""
    if elapsed_ms <= 0:
        return MIN_MULTIPLIER
    return math.floor(100 * math.exp(GROWTH_PER_MS * elapsed_ms))


def ms_at(multiplier: int) -> int:
    """The smallest integer ms at which ``multiplier_at`` reaches ``multiplier``.

    Exact: ``multiplier_at(ms_at(m)) >= m`` and ``multiplier_at(ms_at(m) - 1) < m``
    for every ``m`` in ``[101, MAX_MULTIPLIER]``; ``ms_at(100) == 0``.
    """
    if multiplier <= MIN_MULTIPLIER:
        return 0
    if multiplier > MAX_MULTIPLIER:
        raise ValueError(f"multiplier {multiplier} is above the maximum {MAX_MULTIPLIER}")
    ms = max(0, math.ceil(math.log(multiplier / 100) / GROWTH_PER_MS))
    # The estimate is off by at most a step or two of float rounding; walk to the edge.
    while ms > 0 and multiplier_at(ms - 1) >= multiplier:
        ms -= 1
    while multiplier_at(ms) < multiplier:
        ms += 1
    return ms


def format_multiplier(hundredths: int) -> str:
    """``374`` -> ``"3.74"``: the two-decimal form players and verifiers print."""
    return f"{hundredths // 100}.{hundredths % 100:02d}"

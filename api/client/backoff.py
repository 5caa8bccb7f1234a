"""Exponential backoff with full jitter: the pure part of every retry in the SDK.

"Full jitter" (AWS Architecture Blog, *Exponential Backoff And Jitter*): the n-th wait
is uniform in ``[0, min(cap, base * 2**n)]``. Clients that lost the same server at the
same moment then come back spread over the whole window instead of in synchronised
waves, and the window still grows, so a server that stays down is not hammered.

No clock and no global random state here: the caller passes a ``random`` function
(``random.random`` in production, a fixed one in tests), so every delay is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

RandomFn = Callable[[], float]
"""Returns a float in ``[0, 1)``, like ``random.random``."""

_MAX_EXPONENT = 62
"""``2.0 ** n`` overflows a float near n = 1024; any window this wide is past ``cap``."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits between attempts: ``delay(n)`` for the n-th retry (n = 0, 1, 2, …)."""

    base: float = 0.25
    """Seconds: the window of the first retry."""
    cap: float = 15.0
    """Seconds: no window is ever wider than this."""

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= self.base):
            raise ValueError(f"backoff needs 0 < base <= cap, got base={self.base}, cap={self.cap}")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the n-th wait: ``min(cap, base * 2**n)``."""
        if attempt < 0:
            raise ValueError("attempt must not be negative")
        return min(self.cap, self.base * 2.0 ** min(attempt, _MAX_EXPONENT))

    def delay(self, attempt: int, random: RandomFn) -> float:
        """A full-jitter wait for the n-th retry: uniform in ``[0, ceiling(n)]``."""
        # Clamp: a custom random that returns 1.0 (or a little more) must not exceed cap.
        return self.ceiling(attempt) * min(max(random(), 0.0), 1.0)

"""When the outbox sends a credit or a rollback again: exponential backoff with jitter,
up to a horizon. Pure: the attempt number, the clock and the random draw come in.

Attempt ``n`` (1 for the first retry) waits ``d/2 + u·d/2`` with
``d = min(cap, base · 2^(n-1))`` and ``u`` uniform in [0, 1) ("equal jitter": never
less than half the exponential delay, so a failing wallet is not hammered, and spread
out, so the retries of many transactions that failed together do not arrive together).
Once the next attempt would fall after the transaction's horizon (by default 24 h after
it was queued), it is parked instead: ``failed``, for the operator to resolve.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_ms: int = 500
    """The first retry's delay (before jitter)."""
    cap_ms: int = 300_000
    """The longest delay between two attempts (5 minutes)."""

    def __post_init__(self) -> None:
        if not 1 <= self.base_ms <= self.cap_ms:
            raise ValueError("need 1 <= base_ms <= cap_ms")

    def delay_ms(self, attempt: int, draw: float) -> int:
        """The wait before retry ``attempt`` (1, 2, …); ``draw`` uniform in [0, 1)."""
        assert attempt >= 1 and 0.0 <= draw < 1.0
        exponent = min(attempt - 1, 40)  # 2^40 ms is past any cap: no huge ints
        d = min(self.cap_ms, self.base_ms * (1 << exponent))
        return d // 2 + int(draw * (d - d // 2))

    def next_attempt_ms(
        self, attempt: int, now_ms: int, give_up_at_ms: int, draw: float
    ) -> int | None:
        """When to send retry ``attempt``, or ``None`` if that is past ``give_up_at_ms``
        (the transaction is parked)."""
        at = now_ms + self.delay_ms(attempt, draw)
        return None if at > give_up_at_ms else at

"""Per-key rate limits: GCRA (generic cell rate algorithm), one float per active key.

Pure: ``now`` is an argument. GCRA is a token bucket expressed as a single
"theoretical arrival time" (TAT): a request is allowed if it would not push the TAT more
than the burst beyond now. A key whose TAT is in the past holds no information, so it is
forgotten: memory is O(active keys), and ``sweep`` bounds it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Policy:
    """``limit`` requests per ``window_s`` seconds, all of which may arrive at once."""

    name: str
    limit: int
    window_s: float

    @property
    def interval(self) -> float:
        return self.window_s / self.limit

    def header(self) -> str:
        """IETF ``RateLimit-Policy`` (draft-ietf-httpapi-ratelimit-headers, structured)."""
        return f'"{self.name}";q={self.limit};w={math.ceil(self.window_s)}'


@dataclass(frozen=True)
class Decision:
    allowed: bool
    policy: Policy
    remaining: int
    reset_s: int
    """Seconds until the bucket is full again (``RateLimit`` ``t``, ``X-RateLimit-Reset`` base)."""
    retry_after_s: int
    """Seconds until one more request would be allowed (0 when allowed)."""

    def headers(self, now_epoch: float) -> dict[str, str]:
        headers = {
            "RateLimit-Policy": self.policy.header(),
            "RateLimit": f'"{self.policy.name}";r={self.remaining};t={self.reset_s}',
            "X-RateLimit-Limit": str(self.policy.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(now_epoch + self.reset_s)),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class RateLimiter:
    """GCRA over many keys: ``check(key, policy, now)`` decides and records one request."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._tat: dict[tuple[str, str], float] = {}
        self.max_keys = max_keys

    def __len__(self) -> int:
        return len(self._tat)

    def check(self, key: str, policy: Policy, now: float, cost: int = 1) -> Decision:
        interval = policy.interval
        burst_span = policy.window_s  # limit * interval
        slot = (key, policy.name)
        tat = max(self._tat.get(slot, now), now)
        new_tat = tat + cost * interval
        if new_tat - now > burst_span + 1e-9:
            retry = math.ceil(new_tat - now - burst_span)
            return Decision(False, policy, 0, math.ceil(tat - now), max(1, retry))
        if len(self._tat) >= self.max_keys and slot not in self._tat:
            self.sweep(now)
        self._tat[slot] = new_tat
        remaining = int((burst_span - (new_tat - now)) / interval + 1e-9)
        return Decision(True, policy, max(0, remaining), math.ceil(new_tat - now), 0)

    def sweep(self, now: float) -> int:
        """Forget keys whose bucket is full again; returns how many were dropped."""
        idle = [slot for slot, tat in self._tat.items() if tat <= now]
        for slot in idle:
            del self._tat[slot]
        return len(idle)

"""The per-partner circuit breaker: stop sending bets to a wallet that is failing, say
why, and resume by itself. Pure: the clock comes in as an argument.

A *failure* is a call without a usable answer (timeout, dropped connection, 5xx, broken
or badly signed answer). A refusal (``insufficient_funds``…) is an answer: the wallet is
up. States and transitions are data, as the round's are::

    closed    --(failures in a row reach the threshold)-->  open
    open      --(the cool-down has passed)-------------->  half_open
    half_open --(the probe call succeeded)-------------->  closed
    half_open --(the probe call failed)----------------->  open (cool-down doubled, capped)

While ``open``, new bets are refused with ``wallet_unavailable`` (why, and when bets
resume); the outbox waits too. In ``half_open`` one call at a time goes through as the
probe — a bet or an outbox retry, whichever comes first.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class BreakerState(str, Enum):
    CLOSED = "closed"
    """Calls flow."""
    OPEN = "open"
    """The wallet is failing: nothing is sent until the cool-down has passed."""
    HALF_OPEN = "half_open"
    """One probe call at a time; its answer decides."""


class Trigger(str, Enum):
    TRIP = "trip"
    COOL_DOWN = "cool_down"
    PROBE_OK = "probe_ok"
    PROBE_FAILED = "probe_failed"


TRANSITIONS: dict[BreakerState, dict[Trigger, BreakerState]] = {
    BreakerState.CLOSED: {Trigger.TRIP: BreakerState.OPEN},
    BreakerState.OPEN: {Trigger.COOL_DOWN: BreakerState.HALF_OPEN},
    BreakerState.HALF_OPEN: {
        Trigger.PROBE_OK: BreakerState.CLOSED,
        Trigger.PROBE_FAILED: BreakerState.OPEN,
    },
}


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    probe: bool = False
    """This call is the half-open probe: report its answer with ``record``."""
    reason: str = ""
    retry_after_ms: int = 0


@dataclass(frozen=True, slots=True)
class BreakerStatus:
    state: BreakerState
    reason: str
    """Why it opened (the last failures), empty while closed."""
    failures: int
    resumes_at_ms: int | None


class Breaker:
    def __init__(
        self, *, threshold: int = 5, cooldown_ms: int = 5_000, max_cooldown_ms: int = 60_000
    ) -> None:
        if threshold < 1 or not 1 <= cooldown_ms <= max_cooldown_ms:
            raise ValueError("need threshold >= 1 and 1 <= cooldown_ms <= max_cooldown_ms")
        self.threshold = threshold
        self.base_cooldown_ms = cooldown_ms
        self.max_cooldown_ms = max_cooldown_ms
        self.state = BreakerState.CLOSED
        self._failures = 0
        self._cooldown_ms = cooldown_ms
        self._opened_at: int | None = None
        self._probing = False
        self._last_failure = ""
        self.trips = 0

    def _go(self, trigger: Trigger) -> None:
        nxt = TRANSITIONS[self.state].get(trigger)
        assert nxt is not None, f"breaker: {trigger.value} from {self.state.value}"
        self.state = nxt

    def _resumes_at(self) -> int | None:
        if self._opened_at is None:
            return None
        return self._opened_at + self._cooldown_ms

    def _reason(self) -> str:
        return (
            f"the wallet failed {self._failures} call(s) in a row (last: {self._last_failure}); "
            "bets resume by themselves once it answers again"
        )

    def allow(self, now_ms: int) -> Verdict:
        """May a call go out now?"""
        if self.state is BreakerState.OPEN:
            resumes = self._resumes_at()
            assert resumes is not None
            if now_ms < resumes:
                return Verdict(False, reason=self._reason(), retry_after_ms=resumes - now_ms)
            self._go(Trigger.COOL_DOWN)
        if self.state is BreakerState.HALF_OPEN:
            if self._probing:
                return Verdict(
                    False, reason=self._reason() + " (a probe call is out)", retry_after_ms=1000
                )
            self._probing = True
            return Verdict(True, probe=True)
        return Verdict(True)

    def release(self, probe: bool) -> None:
        """A call that ``allow`` let through was not made after all: no verdict."""
        if probe:
            self._probing = False

    def record(self, now_ms: int, ok: bool, what: str = "", *, probe: bool = False) -> None:
        """The answer to a call that ``allow`` let through: ``ok`` if it was usable
        (including a refusal); ``what`` describes a failure."""
        if probe:
            self._probing = False
        if ok:
            self._failures = 0
            if self.state is BreakerState.HALF_OPEN and probe:
                self._go(Trigger.PROBE_OK)
                self._cooldown_ms = self.base_cooldown_ms
                self._opened_at = None
            return
        self._failures += 1
        self._last_failure = what or "no usable answer"
        if self.state is BreakerState.HALF_OPEN and probe:
            self._go(Trigger.PROBE_FAILED)
            self._cooldown_ms = min(self.max_cooldown_ms, self._cooldown_ms * 2)
            self._opened_at = now_ms
            self.trips += 1
        elif self.state is BreakerState.CLOSED and self._failures >= self.threshold:
            self._go(Trigger.TRIP)
            self._opened_at = now_ms
            self.trips += 1

    def status(self, now_ms: int) -> BreakerStatus:
        reason = "" if self.state is BreakerState.CLOSED else self._reason()
        return BreakerStatus(self.state, reason, self._failures, self._resumes_at())

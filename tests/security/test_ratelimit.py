"""GCRA rate limits: bursts, steady rates, headers, forgetting idle keys."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crashd.api.security.ratelimit import Policy, RateLimiter

POLICY = Policy("default", limit=10, window_s=1.0)


def test_burst_then_refuse_then_recover() -> None:
    limiter = RateLimiter()
    decisions = [limiter.check("k", POLICY, now=100.0) for _ in range(11)]
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert [d.remaining for d in decisions[:10]] == list(range(9, -1, -1))
    refused = decisions[-1]
    assert refused.retry_after_s >= 1
    headers = refused.headers(now_epoch=100.0)
    assert headers["Retry-After"] == str(refused.retry_after_s)
    assert headers["RateLimit-Policy"] == '"default";q=10;w=1'
    assert headers["X-RateLimit-Remaining"] == "0"
    # One interval later exactly one more request fits.
    assert limiter.check("k", POLICY, now=100.1).allowed
    assert not limiter.check("k", POLICY, now=100.1).allowed


def test_keys_are_independent() -> None:
    limiter = RateLimiter()
    for _ in range(10):
        limiter.check("a", POLICY, now=0.0)
    assert not limiter.check("a", POLICY, now=0.0).allowed
    assert limiter.check("b", POLICY, now=0.0).allowed


def test_idle_keys_are_forgotten() -> None:
    limiter = RateLimiter()
    for i in range(1000):
        limiter.check(f"key{i}", POLICY, now=0.0)
    assert len(limiter) == 1000
    assert limiter.sweep(now=0.05) == 0
    assert limiter.sweep(now=10.0) == 1000
    assert len(limiter) == 0


def test_memory_is_bounded() -> None:
    limiter = RateLimiter(max_keys=50)
    for i in range(500):
        limiter.check(f"key{i}", POLICY, now=float(i))
    assert len(limiter) <= 51


@given(st.lists(st.floats(min_value=0, max_value=0.5), min_size=1, max_size=200))
def test_never_more_than_limit_plus_rate_in_any_window(gaps: list[float]) -> None:
    """Allowed requests in [t, t + w) never exceed limit + w / interval (GCRA's bound)."""
    limiter = RateLimiter()
    now, allowed_at = 0.0, []
    for gap in gaps:
        now += gap
        if limiter.check("k", POLICY, now).allowed:
            allowed_at.append(now)
    for i, start in enumerate(allowed_at):
        in_window = sum(1 for t in allowed_at[i:] if t < start + POLICY.window_s)
        assert in_window <= 2 * POLICY.limit

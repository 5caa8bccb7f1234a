"""The curve and its exact inverse."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from crashd.engine.bounds import MAX_MULTIPLIER
from crashd.engine.curve import format_multiplier, ms_at, multiplier_at


def test_known_points() -> None:
    assert multiplier_at(0) == 100
    assert multiplier_at(-5) == 100
    # 2.00x at ~11.55 s, 100x at ~76.8 s (DESIGN.md).
    assert ms_at(200) == 11553
    assert ms_at(10_000) == 76753
    assert multiplier_at(11552) == 199
    assert multiplier_at(11553) == 200


def test_definition_matches_formula() -> None:
    for ms in (1, 17, 1000, 12345, 60_000, 230_000):
        assert multiplier_at(ms) == math.floor(100 * math.e ** (0.00006 * ms)) or multiplier_at(
            ms
        ) == math.floor(100 * math.exp(0.00006 * ms))


@given(st.integers(min_value=101, max_value=MAX_MULTIPLIER))
def test_inverse_is_exact(m: int) -> None:
    ms = ms_at(m)
    assert multiplier_at(ms) >= m
    assert multiplier_at(ms - 1) < m


@given(st.integers(min_value=0, max_value=250_000))
def test_monotone(ms: int) -> None:
    assert multiplier_at(ms) <= multiplier_at(ms + 1)


@given(st.integers(min_value=0, max_value=230_000))
def test_inverse_of_a_reached_value_is_not_later(ms: int) -> None:
    m = multiplier_at(ms)
    assert ms_at(m) <= ms


def test_every_multiplier_up_to_10x_is_exact() -> None:
    for m in range(101, 1001):
        ms = ms_at(m)
        assert multiplier_at(ms) >= m > multiplier_at(ms - 1)


def test_inverse_bounds() -> None:
    assert ms_at(100) == 0
    assert ms_at(1) == 0
    try:
        ms_at(MAX_MULTIPLIER + 1)
    except ValueError:
        pass
    else:
        raise AssertionError("ms_at above the maximum must raise")


def test_format() -> None:
    assert format_multiplier(374) == "3.74"
    assert format_multiplier(100) == "1.00"
    assert format_multiplier(100_000_00) == "100000.00"
    assert format_multiplier(105) == "1.05"

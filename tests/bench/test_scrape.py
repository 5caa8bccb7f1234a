"""The server's histograms as the benches read them from ``/metrics``: a window between
two scrapes, and a quantile known only to its bucket."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from bench import scrape


def _body(observations: list[float]) -> tuple[Histogram, CollectorRegistry]:
    registry = CollectorRegistry()
    h = Histogram("x_seconds", "x", ("environment",), buckets=(0.001, 0.01, 0.1), registry=registry)
    for v in observations:
        h.labels("sandbox").observe(v)
    return h, registry


def test_a_quantile_is_the_upper_bound_of_its_bucket() -> None:
    h, registry = _body([0.0005] * 98 + [0.05, 0.05])
    got = scrape.histograms(generate_latest(registry).decode())["x_seconds"]
    assert got.count == 100
    assert scrape.quantile_bound(got, 0.50) == 0.001
    assert scrape.quantile_bound(got, 0.98) == 0.001
    assert scrape.quantile_bound(got, 0.99) == 0.1


def test_the_window_holds_only_what_came_between_the_scrapes() -> None:
    h, registry = _body([0.0005] * 1000)
    before = scrape.histograms(generate_latest(registry).decode())["x_seconds"]
    for _ in range(10):
        h.labels("sandbox").observe(0.05)
    after = scrape.histograms(generate_latest(registry).decode())["x_seconds"]
    w = scrape.window(before, after)
    assert w.count == 10
    assert scrape.quantile_bound(w, 0.5) == 0.1  # all ten in (0.01, 0.1]
    assert math.isclose(w.total, 0.5)
    # Over the whole life the slow ten vanish below p99.
    assert scrape.quantile_bound(after, 0.99) == 0.001


def test_past_the_last_bucket_and_nothing_observed() -> None:
    h, registry = _body([5.0])
    got = scrape.histograms(generate_latest(registry).decode())["x_seconds"]
    assert scrape.quantile_bound(got, 0.99) == math.inf
    empty = scrape.window(got, got)
    assert math.isnan(scrape.quantile_bound(empty, 0.99))

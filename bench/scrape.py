"""The server's own histograms, read from its ``/metrics`` (Prometheus text) before and
after a measured window: what the server measured from inside, beside what the load
generator measured from outside.

A Prometheus histogram keeps cumulative bucket counts, so a quantile of the window is
known only to its bucket: ``quantile_bound`` answers the upper bound of the bucket the
quantile falls in (``p99 ≤ 10 ms``), never an interpolated figure the data does not hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Buckets:
    """One histogram's cumulative counts by upper bound (``le``), and its count and sum."""

    bounds: tuple[float, ...]
    cumulative: tuple[float, ...]
    count: float
    total: float


def histograms(text: str) -> dict[str, Buckets]:
    """Every histogram in a ``/metrics`` body by name, its label sets summed (the bench's
    server has one environment and the histograms it reads have no other labels)."""
    out: dict[str, Buckets] = {}
    for family in text_string_to_metric_families(text):
        if family.type != "histogram":
            continue
        by_le: dict[float, float] = {}
        count = total = 0.0
        for sample in family.samples:
            if sample.name.endswith("_bucket"):
                le = float(sample.labels["le"])
                by_le[le] = by_le.get(le, 0.0) + sample.value
            elif sample.name.endswith("_count"):
                count += sample.value
            elif sample.name.endswith("_sum"):
                total += sample.value
        bounds = tuple(sorted(by_le))
        out[family.name] = Buckets(bounds, tuple(by_le[b] for b in bounds), count, total)
    return out


def window(before: Buckets | None, after: Buckets) -> Buckets:
    """What was observed between two scrapes of one histogram."""
    if before is None:
        return after
    if before.bounds != after.bounds:
        raise ValueError("the histogram's buckets changed between the scrapes")
    return Buckets(
        after.bounds,
        tuple(a - b for a, b in zip(after.cumulative, before.cumulative, strict=True)),
        after.count - before.count,
        after.total - before.total,
    )


def quantile_bound(h: Buckets, q: float) -> float:
    """The upper bound of the bucket holding quantile ``q`` (``inf``: past the last
    finite bucket; ``nan``: nothing observed)."""
    if h.count <= 0:
        return math.nan
    want = q * h.count
    for bound, seen in zip(h.bounds, h.cumulative, strict=True):
        if seen >= want:
            return bound
    return math.inf

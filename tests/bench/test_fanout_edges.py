"""``python -m bench fanout --edges 2``: the feed over an engine and two edges, measured
beside the single hub in one run.

The rows: every edges point is paired with the single hub's at the same N and at the
same subscribers per process, its cost compared as a ratio (the 1.1x target), the
engine's cost per frame followed across N, the correctness check made on it. And a
real point, end to end: the launcher starts the engine and two edges on one port, the C
load generator's subscribers are spread over them, and every one gets every tick once,
in order (Unix socket, and Redis when the tests have one).
"""

from __future__ import annotations

import argparse
import os
import sys

import pytest

from bench import fanout, fanout_edges
from support.redis import SKIP_NO_REDIS, URL_ENV, server_binary


def _point(server: str, n: int, cost: float, **changes: object) -> fanout.Point:
    values: dict[str, object] = dict(
        server=server, rate=20.0, n=n, run=0, connected=n, received=n * 40, expected=n * 40,
        loss=0, delivered_per_s=n * 20, p50_ms=1.0, p99_ms=3.0, max_ms=4.0,
        cpu_us_per_msg=cost, rss_mb=30.0, client_cpu_share=0.01, passed=True, note="",
    )  # fmt: skip
    values.update(changes)
    return fanout.Point(**values)  # type: ignore[arg-type]


def _rows(points: list[fanout.Point]) -> dict[str, fanout.Row]:
    args = argparse.Namespace(duration=2.0, runs=1, load_average="0.10 0.10 0.10")
    sustained = {(p.server, p.rate): p.n for p in points if p.passed}
    return {r.key: r for r in fanout.edges_rows(points, sustained, 2, args)}


def test_an_edge_is_compared_with_the_single_hub_of_the_same_run() -> None:
    points = [
        _point("crashd", 500, 5.0),
        _point("crashd", 1000, 4.0),
        _point("edges-unix", 500, 6.0, engine_us_per_frame=400.0, edge_subscribers="249+251"),
        _point("edges-unix", 1000, 4.4, engine_us_per_frame=420.0, edge_subscribers="490+510"),
    ]
    rows = _rows(points)
    assert set(rows) == {"edges/edges-unix/20/500", "edges/edges-unix/20/1000"}
    big = rows["edges/edges-unix/20/1000"]
    assert big.ratios["edge µs/msg × hub (target ≤ 1.1)"] == pytest.approx(1.1)
    # The same subscribers per process: the hub's N=500 beside each edge's ~500.
    assert big.ratios["edge µs/msg × hub, same subscribers per process"] == pytest.approx(0.88)
    assert big.ratios["engine µs/frame × at the smallest N"] == pytest.approx(1.05)
    assert big.metrics["projected_subscribers_per_core_n"] == pytest.approx(1e6 / (4.4 * 20))
    assert big.params["spread"] == "490+510" and big.role == "subject"
    small = rows["edges/edges-unix/20/500"]
    assert small.checks and all(small.checks.values())
    table = fanout.edges_table(points, {("edges-unix", 20.0): 1000}, 2)
    assert "| edges-unix | 20 Hz | 1,000 | 490+510 | 4.40 | 4.00 | 1.10 | 5.00 | 0.88 |" in table


def test_a_lost_or_repeated_tick_fails_the_edges_check() -> None:
    for broken in ({"loss": 3, "received": 7997}, {"dups": 1}, {"connected": 499}):
        rows = _rows([_point("edges-redis", 500, 6.0, passed=False, **broken)])
        assert not all(rows["edges/edges-redis/20/500"].checks.values()), broken


def _loadgen() -> object:
    loadgen, why = fanout.build_c("loadgen")
    if loadgen is None:
        pytest.skip(why)
    return loadgen


@pytest.mark.slow
@pytest.mark.parametrize("server", ["edges-unix", "edges-redis"])
def test_two_edges_deliver_every_tick_once_in_order(server: str, redis_url_or_none: str) -> None:
    loadgen = _loadgen()
    cpus = sorted(os.sched_getaffinity(0))
    pin = (cpus[0], cpus[-1]) if len(cpus) >= 2 else (None, None)
    p = fanout.measure_point(
        server,
        60,
        20.0,
        1.0,
        0,
        loadgen,
        None,
        pin,
        2,
        redis_url_or_none,  # type: ignore[arg-type]
    )
    assert p.connected == 60 and p.received == p.expected == 60 * 20, p
    assert p.loss == 0 and p.dups == 0, p
    spread = [int(x) for x in p.edge_subscribers.split("+")]
    assert len(spread) == 2 and sum(spread) == 60
    assert p.cpu_us_per_msg > 0 and p.engine_us_per_frame > 0


@pytest.fixture
def redis_url_or_none(request: pytest.FixtureRequest) -> str | None:
    if "redis" not in request.node.callspec.params["server"]:
        return None
    if os.environ.get(URL_ENV) is None and server_binary() is None:
        pytest.skip(SKIP_NO_REDIS)
    url: str = request.getfixturevalue("redis_url")
    return url


def test_the_edges_servers_are_the_launchers() -> None:
    assert all(fanout_edges.is_edges(s) for s in fanout.EDGE_SERVERS)
    cmd = fanout_edges.command("edges-redis", 2, "unix:///r.sock", ["1", "20", "3", "1", "121"])
    assert cmd[:2] == [sys.executable, "-m"] and cmd[4:8] == [
        "--serve-edges",
        "redis",
        "2",
        "unix:///r.sock",
    ]

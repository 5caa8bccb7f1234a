"""Each bench's ``run(ctx)`` turns its share of the budget (or ``--quick``) into its own
command's flags: a smaller budget, smaller sizes; quick, the smallest. The measurement
is replaced by a stub: this checks the planning, not the figures."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from bench import api, fairness, fanout, ledger, tick
from bench.suite import Context, Row


def _plan(module: Any, monkeypatch: pytest.MonkeyPatch, ctx: Context) -> Any:
    seen: list[Any] = []

    def stub(*args: Any) -> Any:
        seen.append(args)
        if module is api:
            return [], args[0], []
        return []

    monkeypatch.setattr(module, "execute" if module is api else "measure", stub)
    module.run(ctx)
    [call] = seen
    return call


def _ctx(tmp_path: Path, seconds: float = 0, quick: bool = False) -> Context:
    return Context("x", quick=quick, seconds=seconds, out=tmp_path)


def test_tick_scales_its_ticks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    quick = _plan(tick, monkeypatch, _ctx(tmp_path, quick=True))[0]
    small = _plan(tick, monkeypatch, _ctx(tmp_path, 60))[0]
    full = _plan(tick, monkeypatch, _ctx(tmp_path, 240))[0]
    assert isinstance(full, argparse.Namespace)
    assert quick.ticks <= small.ticks < full.ticks <= 2000
    assert quick.heap < full.heap
    # The planned wall time (5 configurations per rate) fits the share.
    assert sum(5 * full.ticks / hz for hz in (20, 100)) <= 240


def test_ledger_scales_its_seconds_and_growth(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    quick = _plan(ledger, monkeypatch, _ctx(tmp_path, quick=True))[0]
    small = _plan(ledger, monkeypatch, _ctx(tmp_path, 60))[0]
    full = _plan(ledger, monkeypatch, _ctx(tmp_path, 210))[0]
    assert quick.quick and not full.quick
    assert small.seconds < full.seconds <= 2.0
    assert quick.then_growth < full.then_growth
    assert full.postgres and quick.postgres  # the peer is always tried


def test_fanout_scales_its_points(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    quick = _plan(fanout, monkeypatch, _ctx(tmp_path, quick=True))[0]
    full = _plan(fanout, monkeypatch, _ctx(tmp_path, 270))[0]
    big = _plan(fanout, monkeypatch, _ctx(tmp_path, 1200))[0]
    assert quick.ladder == "200" and quick.rates == "20"
    # Every server, and the feed spread over an engine and two edges beside them.
    assert set(quick.servers.split(",")) == {*fanout.DEFAULT_SERVERS, *fanout.EDGE_SERVERS}
    assert quick.edges == full.edges == 2 and set(full.servers.split(",")) >= {"edges-unix"}
    assert quick.duration <= full.duration < big.duration <= 15
    assert Path(full.out).is_relative_to(tmp_path)


def test_api_scales_its_rows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    quick = _plan(api, monkeypatch, _ctx(tmp_path, quick=True))[0]
    full = _plan(api, monkeypatch, _ctx(tmp_path, 90))[0]
    assert quick.seconds < full.seconds <= 10


def test_fairness_scales_its_sizes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    quick = _plan(fairness, monkeypatch, _ctx(tmp_path, quick=True))
    small = _plan(fairness, monkeypatch, _ctx(tmp_path, 10))
    full = _plan(fairness, monkeypatch, _ctx(tmp_path, 90))
    assert quick[0] <= small[0] < full[0] == 500_000
    assert quick[1] <= small[1] < full[1] == 10_000_000


def test_every_run_says_what_it_is_equivalent_to(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for module in (tick, ledger, fanout, api, fairness):
        ctx = _ctx(tmp_path, quick=True)
        _plan(module, monkeypatch, ctx)
        assert any(n.startswith("equivalent: python -m bench ") for n in ctx.notes), module


def test_rows_belong_to_their_bench() -> None:
    rows = tick.to_rows(
        [
            tick.Result(20, False, "-", 10, [0.01] * 10, [], 0, 0, 0.0, bare=True),
            tick.Result(20, True, "tuned", 10, [0.02] * 10, [50.0], 3, 0, 0.1, bets=2),
        ],
        argparse.Namespace(load=500, ticks=10, heap=100),
        (10.0, 0.01, 1000, 100),
    )
    assert all(isinstance(r, Row) and r.bench == "tick" for r in rows)
    loaded = rows[1]
    assert loaded.ratios["p99 × bare floor"] == pytest.approx(2.0)
    assert all(loaded.checks.values()) and loaded.headline

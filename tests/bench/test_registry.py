"""The registry: every entry is a module with ``main`` and ``run``; ``python -m bench``
lists them one line each; the budget is shared by the entries' weights."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from bench import runner
from bench.suite import BENCHES, COMMANDS, DEFAULT_BUDGET_MIN, bench, shares

REPO_BENCHES = {"fairness", "tick", "ledger", "fanout", "api"}


def test_the_existing_benches_are_registered_once() -> None:
    names = [b.name for b in BENCHES]
    assert len(names) == len(set(names))
    assert REPO_BENCHES <= set(names)
    assert not set(names) & set(COMMANDS), "a bench may not shadow a suite command"


@pytest.mark.parametrize("entry", BENCHES, ids=lambda b: b.name)
def test_every_entry_exposes_the_convention(entry: object) -> None:
    b = bench(getattr(entry, "name"))  # noqa: B009
    module = b.load()
    assert callable(module.main) and callable(module.run)
    assert list(inspect.signature(module.main).parameters) == ["argv"]
    assert list(inspect.signature(module.run).parameters) == ["ctx"]
    plot = getattr(module, "plot", None)
    if plot is not None:
        assert list(inspect.signature(plot).parameters) == ["rows", "directory"]
    assert b.summary and "\n" not in b.summary and b.minutes > 0


def test_the_default_budget_is_shared_by_weight() -> None:
    split = shares(DEFAULT_BUDGET_MIN)
    assert set(split) == {b.name for b in BENCHES}
    assert sum(split.values()) == pytest.approx(DEFAULT_BUDGET_MIN * 60)
    assert sum(b.minutes for b in BENCHES if b.name in REPO_BENCHES) <= DEFAULT_BUDGET_MIN
    # A selection shares the whole budget between the benches chosen.
    two = shares(6, ["ledger", "api"])
    assert set(two) == {"ledger", "api"}
    assert sum(two.values()) == pytest.approx(360)
    assert two["ledger"] / two["api"] == pytest.approx(
        bench("ledger").minutes / bench("api").minutes
    )


def test_select_keeps_registry_order_and_refuses_unknown_names() -> None:
    assert runner.select("api,fairness", "") == ["fairness", "api"]
    assert "tick" not in runner.select("", "tick")
    with pytest.raises(SystemExit):
        runner.select("nosuchbench", "")


def test_the_listing_has_one_line_per_bench() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench"],
        capture_output=True,
        text=True,
        cwd=runner.res.ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    for b in BENCHES:
        mine = [line for line in lines if line.split()[:1] == [b.name]]
        assert len(mine) == 1 and b.summary in mine[0]
    for command in COMMANDS:
        assert any(line.split()[:1] == [command] for line in lines)


def test_an_unknown_name_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "nosuchbench"],
        capture_output=True,
        text=True,
        cwd=runner.res.ROOT,
        timeout=60,
    )
    assert out.returncode == 2 and "nosuchbench" in out.stderr

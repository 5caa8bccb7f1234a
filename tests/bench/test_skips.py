"""A peer that cannot run here is skipped with a line saying why, and recorded in the
results: never left out silently."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from bench import fairness, fanout, ledger, plots, runner
from bench.suite import Context


def test_ctx_skip_prints_and_records(capsys: pytest.CaptureFixture[str]) -> None:
    ctx = Context("ledger")
    ctx.skip("the raw PostgreSQL peer", "pgbench not found")
    out = capsys.readouterr()
    assert "ledger: skipped the raw PostgreSQL peer: pgbench not found" in out.out
    assert "ledger: skipped the raw PostgreSQL peer: pgbench not found" in out.err
    assert [s.to_json() for s in ctx.skips] == [
        {"bench": "ledger", "what": "the raw PostgreSQL peer", "why": "pgbench not found"}
    ]


def test_without_cryptography_the_ed25519_peer_is_skipped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "cryptography.hazmat.primitives.asymmetric.ed25519", None)
    why = fairness.ed25519()
    assert isinstance(why, str) and "cryptography" in why
    rows = fairness.measure(1_000, 0, 0)
    assert "(Ed25519 peer skipped:" in capsys.readouterr().out
    assert {r.key for r in rows} == {"sha256", "links", "crash_points"}
    assert all("× Ed25519 sign" not in r.ratios for r in rows)


def test_without_postgresql_the_peer_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "_pg_bindir", lambda: None)
    why = ledger.postgres_rates(["FULL"], 1.0)
    assert isinstance(why, str) and "PostgreSQL" in why


def test_without_node_the_ws_peer_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout.shutil, "which", lambda name: None)
    where, why = fanout.install_node_ws()
    assert where is None and "Node" in why


def test_without_matplotlib_the_plots_are_skipped(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    synthetic_doc: dict[str, Any],
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(plots, "unavailable", lambda: "matplotlib is not installed")
    assert runner.draw_plots(synthetic_doc, tmp_path) == []
    assert "all: skipped the PNG plots: matplotlib is not installed" in capsys.readouterr().err
    assert synthetic_doc["skips"][-1]["what"] == "the PNG plots"

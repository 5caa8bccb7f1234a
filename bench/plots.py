"""PNG plots drawn from rows with matplotlib (the ``bench`` extra: ``pip install -e
'.[bench]'``). matplotlib is imported only here and only when a plot is drawn, so the
suite runs, and type-checks, without it; ``unavailable()`` says why not.

Each bench module's ``plot(rows, directory)`` calls one function here; each returns
``[(file, title), ...]``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.suite import Row

DPI = 110
COLORS = {
    "crashd": "#1f77b4",
    "websockets": "#ff7f0e",
    "node-ws": "#2ca02c",
    "c-floor": "#7f7f7f",
    "hypercorn": "#9467bd",
}


def unavailable() -> str:
    """Empty when matplotlib can be used, else why not."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    return ""


def pyplot() -> Any:
    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # No timestamps in the file: the same rows draw the same bytes.
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    pyplot().close(fig)
    return path


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def fanout(rows: list[Row], directory: Path) -> list[tuple[Path, str]]:
    """p99 latency from the scheduled tick against subscribers, per server, one panel
    per tick rate, with the pass line at 100 ms."""
    points = [r for r in rows if r.key.startswith("point/")]
    if not points:
        return []
    plt = pyplot()
    rates = sorted({float(r.params["rate_hz"] or 0) for r in points})
    fig, axes = plt.subplots(1, len(rates), figsize=(5.2 * len(rates), 4.0), squeeze=False)
    for ax, rate in zip(axes[0], rates, strict=True):
        servers = dict.fromkeys(str(r.params["server"]) for r in points)
        for server in servers:
            mine = sorted(
                (r.metrics["n"], r.metrics["p99_ms"], bool(r.params.get("passed")))
                for r in points
                if r.params["server"] == server
                and r.params["rate_hz"] == rate
                and r.metrics.get("p99_ms", -1) >= 0
            )
            if not mine:
                continue
            color = COLORS.get(server, "#333333")
            ax.plot([m[0] for m in mine], [max(m[1], 0.1) for m in mine], "-", color=color)
            for n, p99, passed in mine:
                ax.plot(n, max(p99, 0.1), "o" if passed else "x", color=color, ms=6)
            ax.plot([], [], "o-", color=color, label=server)
        ax.axhline(100, color="#c00000", ls="--", lw=1, label="pass limit (100 ms)")
        ax.set_yscale("log")
        ax.set_xlim(left=0)
        ax.set_xlabel("subscribers on one server core")
        ax.set_ylabel("p99 latency from the scheduled tick (ms)")
        ax.set_title(f"fan-out at {rate:g} Hz (x: a point that failed)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    title = "Fan-out: p99 latency against subscribers per server"
    return [(_save(fig, directory / "fanout-p99.png"), title)]


def _ecdf(ax: Any, values: list[float], label: str, **style: Any) -> None:
    values = sorted(_finite(values))
    if not values:
        return
    n = len(values)
    ax.step(values, [(i + 1) / n for i in range(n)], where="post", label=label, **style)


def tick(rows: list[Row], directory: Path) -> list[tuple[Path, str]]:
    """Distributions (ECDF, log time axis) of tick lateness and cashout latency, per
    configuration; the bare loop is the floor."""
    runs = [r for r in rows if "lateness_ms" in r.samples]
    if not runs:
        return []
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in runs:
        style: dict[str, Any] = {"lw": 1.2}
        if r.params.get("bare"):
            style |= {"color": "black", "ls": ":"}
        elif r.params.get("hz") != 20:
            style |= {"ls": "--"}
        _ecdf(left, [max(x, 1e-4) for x in r.samples["lateness_ms"]], r.label, **style)
        if r.samples.get("cashout_us"):
            _ecdf(right, r.samples["cashout_us"], r.label, **style)
    left.set_xscale("log")
    left.set_xlabel("tick lateness: wake time − deadline (ms)")
    left.set_ylabel("fraction of ticks at or below")
    left.axvline(2.0, color="#c00000", ls="--", lw=1, label="target p99 (2 ms)")
    left.set_title("tick lateness")
    right.set_xscale("log")
    right.set_xlabel("cashout: call to answer (µs)")
    right.set_ylabel("fraction of cashouts at or below")
    right.set_title("cashout latency under load")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    title = "Tick: distributions of tick lateness and cashout latency"
    return [(_save(fig, directory / "tick-latency.png"), title)]


def ledger(rows: list[Row], directory: Path) -> list[tuple[Path, str]]:
    """The store's deposits/s against the number of ops the ledger holds, and the file
    size beside it."""
    growth = sorted(
        (r for r in rows if r.key.startswith("growth/")), key=lambda r: r.metrics["ops_n"]
    )
    if not growth:
        return []
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = [r.metrics["ops_n"] for r in growth]
    ax.plot(
        xs, [r.metrics["deposits_per_s"] for r in growth], "o-", label="deposits/s (store alone)"
    )
    ax.set_xlabel("ops the ledger holds")
    ax.set_ylabel("deposits/s, random ids, 1,000 per commit")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    size = ax.twinx()
    size.plot(xs, [r.metrics["file_mb"] for r in growth], "s--", color="#7f7f7f", label="file MB")
    size.set_ylabel("database file (MB)")
    size.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = size.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=8, loc="lower left")
    ax.set_title("ledger throughput against ledger size")
    title = "Ledger: throughput against ledger size"
    return [(_save(fig, directory / "ledger-growth.png"), title)]


def api(rows: list[Row], directory: Path) -> list[tuple[Path, str]]:
    """Requests/s and latency of each REST row beside the hello route (the floor)."""
    shown = [r for r in rows if "req_per_s" in r.metrics and not r.key.startswith("wrk")]
    if not shown:
        return []
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r.key.replace("_", " ") for r in shown]
    colors = ["#7f7f7f" if r.role == "limit" else "#1f77b4" for r in shown]
    left.bar(names, [r.metrics["req_per_s"] for r in shown], color=colors)
    for i, r in enumerate(shown):
        left.annotate(
            f"{r.ratios.get('× hello', float('nan')):.2f}× hello",
            (i, r.metrics["req_per_s"]),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    left.set_ylabel("requests/s (16 keep-alive connections)")
    left.set_title("throughput: the write path against the hello floor")
    width = 0.38
    xs = list(range(len(shown)))
    right.bar([x - width / 2 for x in xs], [r.metrics["p50_ms"] for r in shown], width, label="p50")
    right.bar([x + width / 2 for x in xs], [r.metrics["p99_ms"] for r in shown], width, label="p99")
    right.set_xticks(xs, names)
    right.set_ylabel("latency (ms; bet path: reserve + confirm)")
    right.set_title("latency")
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.grid(True, axis="y", alpha=0.3)
    title = "REST API: the write path against the hello floor"
    return [(_save(fig, directory / "api-write-path.png"), title)]

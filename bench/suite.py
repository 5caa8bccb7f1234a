"""The suite's shared vocabulary: the registry, the row schema, a run's context, progress.

**The registry** is ``BENCHES`` below: one ``Bench`` entry per module ``bench/NAME.py``.
Adding a benchmark is one entry (name, one-line summary, its share of the default
budget in minutes). ``python -m bench`` lists it, ``python -m bench NAME`` runs its
``main``, ``python -m bench all`` runs its ``run`` in a child process, and
``report``/``compare`` read its rows from the results document.

**What a bench module exposes**:

* ``main(argv: list[str]) -> int`` — the standalone command with its own flags, printing
  its own tables (``python -m bench NAME --help``);
* ``run(ctx: Context) -> list[Row]`` — the suite's entry: measure within
  ``ctx.seconds`` (its share of ``--budget``), or a few seconds when ``ctx.quick``
  (a smoke run: small sizes, every correctness check still made), print the same
  tables as ``main``, and return the figures as rows. A peer or limit that cannot run
  here is reported with ``ctx.skip(what, why)`` (printed, and recorded in the results),
  never left out silently. Progress goes through ``ctx.progress.update(done, total,
  what)``;
* optionally ``plot(rows: list[Row], directory: Path) -> list[tuple[Path, str]]`` —
  PNGs drawn from its rows (matplotlib, through ``bench.plots``) as (file, title), so
  ``report`` can redraw them from a results file.

**A row** (``Row``, JSON-able through ``Row.to_json``) is one line of one table:
``bench`` and a ``key`` stable across runs (``compare`` matches rows by them), the
``table`` it belongs to, a ``label``, ``metrics`` (name -> number; the name's suffix is
its unit: ``_per_s``, ``_ms``, ``_us``, ``_s``, ``_mb``, ``_kib``, ``_n``, ``_share``),
``ratios`` against the peer or limit measured in the same run (column title -> ratio,
e.g. ``{"× raw sqlite3": 0.031}``), ``role`` (``subject``, ``peer`` or ``limit``),
``params`` (the configuration), ``checks`` (correctness checks made on the run:
name -> passed; ``all`` fails when one did not), ``samples`` (raw distributions for
plots, bounded), ``headline`` (the row goes into the README's section) with
``primary`` (the columns the README shows; all when empty), and a ``note``.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO, cast

SCHEMA = 1
"""Version of the results document (``bench.results``) and of the row schema."""

DEFAULT_BUDGET_MIN = 15.0
"""What ``python -m bench all`` takes by default on a 2-core machine, in minutes."""

ROLES = ("subject", "peer", "limit")
MAX_SAMPLES = 20_000
"""Samples kept per distribution in a row (evenly thinned beyond)."""

Scalar = str | int | float | bool | None
JSON = dict[str, Any]


# -- the registry ------------------------------------------------------------------------


@dataclass(frozen=True)
class Bench:
    name: str
    """The module ``bench/NAME.py`` and the command ``python -m bench NAME``."""
    summary: str
    """One line for ``python -m bench``'s list."""
    minutes: float
    """Its share of the default budget (``DEFAULT_BUDGET_MIN``): ``--budget B`` gives it
    ``B * minutes / sum(minutes of all)``."""

    @property
    def module(self) -> str:
        return f"bench.{self.name}"

    def load(self) -> BenchModule:
        import importlib

        return cast(BenchModule, importlib.import_module(self.module))


BENCHES: tuple[Bench, ...] = (
    Bench(
        "fairness",
        "chain links, crash points; signed receipts, seals, transcripts/s beside SHA-256, Ed25519",
        1.5,
    ),
    Bench("tick", "tick lateness and cashout latency of the real engine, bare loop as floor", 4.0),
    Bench("ledger", "durable transfers/s and group commit beside raw sqlite3 and PostgreSQL", 3.5),
    Bench("fanout", "WebSocket subscribers sustained beside websockets, Node ws, a C floor", 4.5),
    Bench("api", "REST reads and the signed bet path beside the framework's hello route", 1.5),
    Bench("game", "players betting, cashing out, watching the feed; every settlement checked", 2.5),
    Bench(
        "cluster", "engine → edge frame delay (Unix, Redis) and bets through an API process", 1.5
    ),
)
"""Every benchmark ``all`` runs, in order. One entry per module (see the docstring)."""

COMMANDS = {
    "all": "run every benchmark, write results JSON and plots (--quick: CI smoke run)",
    "report": "README section and docs/benchmarks.md from a results JSON",
    "compare": "two results JSON side by side, with ratios",
}


def bench(name: str) -> Bench:
    for b in BENCHES:
        if b.name == name:
            return b
    raise KeyError(name)


def shares(budget_min: float, names: Iterable[str] | None = None) -> dict[str, float]:
    """Seconds each bench gets out of ``budget_min`` minutes (weights from the registry;
    when ``names`` selects some, they share the whole budget)."""
    chosen = [b for b in BENCHES if names is None or b.name in set(names)]
    total = sum(b.minutes for b in chosen) or 1.0
    return {b.name: budget_min * 60 * b.minutes / total for b in chosen}


class BenchModule(Protocol):
    def main(self, argv: list[str]) -> int: ...

    def run(self, ctx: Context) -> list[Row]: ...


# -- rows --------------------------------------------------------------------------------


@dataclass
class Row:
    bench: str
    table: str
    key: str
    label: str
    metrics: dict[str, float] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)
    role: str = "subject"
    params: dict[str, Scalar] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    headline: bool = False
    primary: list[str] = field(default_factory=list)
    note: str = ""

    def to_json(self) -> JSON:
        return {
            "bench": self.bench,
            "table": self.table,
            "key": self.key,
            "label": self.label,
            "metrics": {k: _num(v) for k, v in self.metrics.items()},
            "ratios": {k: _num(v) for k, v in self.ratios.items()},
            "role": self.role,
            "params": dict(self.params),
            "checks": dict(self.checks),
            "samples": {k: thin([_num(x) for x in v]) for k, v in self.samples.items()},
            "headline": self.headline,
            "primary": list(self.primary),
            "note": self.note,
        }

    @classmethod
    def from_json(cls, data: JSON) -> Row:
        return cls(
            bench=str(data["bench"]),
            table=str(data["table"]),
            key=str(data["key"]),
            label=str(data["label"]),
            metrics={k: _float(v) for k, v in data.get("metrics", {}).items()},
            ratios={k: _float(v) for k, v in data.get("ratios", {}).items()},
            role=str(data.get("role", "subject")),
            params=dict(data.get("params", {})),
            checks={k: bool(v) for k, v in data.get("checks", {}).items()},
            samples={k: [_float(x) for x in v] for k, v in data.get("samples", {}).items()},
            headline=bool(data.get("headline", False)),
            primary=[str(p) for p in data.get("primary", [])],
            note=str(data.get("note", "")),
        )


def _num(value: float) -> float | None:
    """JSON has no NaN or infinity: they are written as null."""
    value = float(value)
    return value if math.isfinite(value) else None


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)


def thin(values: Sequence[Any], limit: int = MAX_SAMPLES) -> list[Any]:
    """At most ``limit`` values, evenly spaced (sorted input stays sorted)."""
    if len(values) <= limit:
        return list(values)
    step = len(values) / limit
    return [values[int(i * step)] for i in range(limit)]


def ratio(a: float, b: float) -> float:
    """``a / b``, NaN when either is missing or ``b`` is zero."""
    if not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return float("nan")
    return a / b


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def validate_row(data: Any) -> list[str]:
    """What is wrong with one row's JSON (empty when it is well-formed)."""
    problems: list[str] = []
    if not isinstance(data, dict):
        return ["a row is not an object"]
    for name in ("bench", "table", "key", "label"):
        if not isinstance(data.get(name), str) or not data.get(name):
            problems.append(f"row {data.get('key')!r}: {name} missing or not a string")
    for name in ("metrics", "ratios"):
        values = data.get(name, {})
        if not isinstance(values, dict) or not all(
            isinstance(k, str) and (v is None or isinstance(v, int | float))
            for k, v in values.items()
        ):
            problems.append(f"row {data.get('key')!r}: {name} must map names to numbers")
    if data.get("role", "subject") not in ROLES:
        problems.append(f"row {data.get('key')!r}: role {data.get('role')!r} not in {ROLES}")
    checks = data.get("checks", {})
    if not isinstance(checks, dict) or not all(isinstance(v, bool) for v in checks.values()):
        problems.append(f"row {data.get('key')!r}: checks must map names to booleans")
    return problems


# -- a run's context ---------------------------------------------------------------------


@dataclass
class Skip:
    bench: str
    what: str
    why: str

    def to_json(self) -> JSON:
        return {"bench": self.bench, "what": self.what, "why": self.why}


class Progress:
    """A progress bar on stderr: redrawn in place on a terminal, a line per tenth
    otherwise, so a CI log stays short. ``part(lo, hi)`` gives a bar for one phase that
    fills ``lo``..``hi`` of this one."""

    def __init__(self, label: str, stream: TextIO | None = None, enabled: bool = True) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.started = time.monotonic()
        self.lo, self.hi = 0.0, 1.0
        self._state = {"decile": -1}
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def part(self, lo: float, hi: float) -> Progress:
        sub = copy.copy(self)
        span = self.hi - self.lo
        sub.lo, sub.hi = self.lo + span * lo, self.lo + span * hi
        return sub

    def update(self, done: float, total: float, what: str = "") -> None:
        if not self.enabled:
            return
        own = min(1.0, max(0.0, done / total)) if total > 0 else 0.0
        fraction = self.lo + (self.hi - self.lo) * own
        elapsed = time.monotonic() - self.started
        width = 24
        filled = round(fraction * width)
        bar = "#" * filled + "." * (width - filled)
        line = f"  {self.label:<9}[{bar}] {fraction:4.0%} {_clock(elapsed)}" + (
            f"  {what}" if what else ""
        )
        if self._tty:
            self.stream.write("\r\x1b[2K" + line[:160])
            if fraction >= 1.0:
                self.stream.write("\n")
        else:
            decile = int(fraction * 10)
            if decile <= self._state["decile"]:
                return
            self._state["decile"] = decile
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self, what: str = "done") -> None:
        self.update(1, 1, what)


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


@dataclass
class Context:
    """What ``run(ctx)`` is given: how long it may take and where its artefacts go."""

    name: str
    quick: bool = False
    seconds: float = 60.0
    """Its share of the budget (wall seconds); a quick run ignores it."""
    out: Path = Path(".")
    """This run's directory (results, plots, logs); a bench may write files here."""
    progress: Progress = field(default_factory=lambda: Progress("bench", enabled=False))
    skips: list[Skip] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def skip(self, what: str, why: str) -> None:
        """A peer, limit or part that cannot run here: printed (stderr and stdout) and
        recorded in the results, never dropped silently."""
        self.skips.append(Skip(self.name, what, why))
        line = f"{self.name}: skipped {what}: {why}"
        print(line, flush=True)
        if sys.stderr is not sys.stdout:
            print(line, file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"{self.name}: {text}", flush=True)


def clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))

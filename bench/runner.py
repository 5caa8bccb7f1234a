"""``python -m bench all``: every registered benchmark, one results document, plots.

Each bench runs in a child process of its own (``python -m bench _worker NAME``), so
one bench's GC tuning, CPU pinning or crash cannot touch the next. Its tables go to
``NAME.log`` in the run's directory; progress bars and every skipped peer's line go to
the terminal. The run's directory (default ``bench/results/<UTC time>-<commit>[-quick]``,
ignored by git) receives ``results.json`` (rewritten after each bench, so an
interrupted run keeps what it measured), the logs and the PNG plots; the document is
also copied to ``bench/results/latest.json``.

``--budget MIN`` (default 15: what fits a 2-core machine) is shared between the benches
by the weights in ``bench.suite.BENCHES``; each bench scales its sizes to its share.
``--quick`` is the smoke run: every bench starts, runs a few seconds, and its
correctness checks must pass; no speed is asserted. The exit status is 1 when a bench
failed or a check did not pass.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import results as res
from bench.suite import (
    BENCHES,
    DEFAULT_BUDGET_MIN,
    Context,
    Progress,
    Row,
    Skip,
    bench,
    shares,
)

QUICK_TIMEOUT_S = 240.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench all",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_MIN,
        metavar="MIN",
        help=f"minutes for the whole run (default {DEFAULT_BUDGET_MIN:g})",
    )
    p.add_argument("--quick", action="store_true", help="smoke run: seconds per bench")
    p.add_argument("--only", default="", help="comma-separated benches to run (default: all)")
    p.add_argument("--skip", default="", help="comma-separated benches to leave out")
    p.add_argument("--out", type=Path, help="the run's directory (default under bench/results/)")
    p.add_argument("--no-plots", action="store_true", help="do not draw the PNG plots")
    return p


def select(only: str, skip: str) -> list[str]:
    names = [b.name for b in BENCHES]
    chosen = [n.strip() for n in only.split(",") if n.strip()] or names
    left_out = {n.strip() for n in skip.split(",") if n.strip()}
    unknown = (set(chosen) | left_out) - set(names)
    if unknown:
        raise SystemExit(
            f"python -m bench all: unknown benchmarks {sorted(unknown)}; choose from "
            + ", ".join(names)
        )
    return [n for n in names if n in chosen and n not in left_out]


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    names = select(args.only, args.skip)
    budget = shares(args.budget, names)
    doc = res.new_document(["all", *argv], quick=args.quick, budget_min=args.budget)
    stamp = doc["started_at"].replace(":", "").replace("-", "")
    out: Path = args.out or res.RESULTS_DIR / (
        f"{stamp}-{doc['git']['short'] or 'nogit'}" + ("-quick" if args.quick else "")
    )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    started = time.monotonic()
    plan = "quick: a few seconds each" if args.quick else f"budget {args.budget:g} min"
    print(
        f"python -m bench all: {len(names)} benchmarks ({plan}); commit "
        f"{doc['git']['short']}{' (dirty tree)' if doc['git']['dirty'] else ''}; "
        f"results in {out}",
        file=sys.stderr,
        flush=True,
    )
    for i, name in enumerate(names, 1):
        b = bench(name)
        planned = budget[name]
        when = "quick" if args.quick else f"~{planned / 60:.1f} min"
        print(f"[{i}/{len(names)}] {name}: {b.summary} ({when})", file=sys.stderr, flush=True)
        entry = run_child(name, quick=args.quick, seconds=planned, out=out)
        doc["benches"].append(entry.pop("_entry"))
        doc["rows"] += entry["rows"]
        doc["skips"] += entry["skips"]
        last = doc["benches"][-1]
        summary = (
            f"    {name}: {last['status']}, {last['rows']} rows in {last['seconds']:.0f} s"
            + (f", {len(entry['skips'])} skipped" if entry["skips"] else "")
        )
        print(summary, file=sys.stderr, flush=True)
        for failed in last["failed_checks"]:
            print(f"    CHECK FAILED: {failed}", file=sys.stderr, flush=True)
        res.dump(doc, path)
    if not args.no_plots:
        doc["plots"] = draw_plots(doc, out)
    doc["finished_at"] = res.now()
    doc["wall_s"] = round(time.monotonic() - started, 1)
    doc["machine"]["loadavg_end"] = res.loadavg()
    res.dump(doc, path)
    if out.resolve().is_relative_to(res.RESULTS_DIR):
        shutil.copyfile(path, res.RESULTS_DIR / "latest.json")
    bad = [b for b in doc["benches"] if b["status"] != "ok"]
    checks = sum(len(r["checks"]) for r in doc["rows"])
    failed = sum(len(b["failed_checks"]) for b in doc["benches"])
    print(
        f"\npython -m bench all: {len(doc['rows'])} rows, {checks - failed}/{checks} checks "
        f"passed, {len(doc['skips'])} peers or parts skipped, {len(bad)} benches not ok; "
        f"{doc['wall_s']:.0f} s wall\nwrote {path}",
        file=sys.stderr,
        flush=True,
    )
    for s in doc["skips"]:
        print(f"  skipped: {s['bench']}: {s['what']}: {s['why']}", file=sys.stderr)
    print(f"report: python -m bench report {path}", file=sys.stderr)
    return 1 if bad else 0


def run_child(name: str, *, quick: bool, seconds: float, out: Path) -> dict[str, Any]:
    """One bench in its own process; its stdout to NAME.log, its stderr (progress bars,
    skip lines, tracebacks) to ours."""
    rows_file = out / f"{name}.rows.json"
    rows_file.unlink(missing_ok=True)
    log = out / f"{name}.log"
    ctx = json.dumps({"quick": quick, "seconds": seconds, "out": str(out)})
    cmd = [sys.executable, "-m", "bench", "_worker", name, ctx, str(rows_file)]
    timeout = QUICK_TIMEOUT_S if quick else 2 * seconds + 300
    t0 = time.monotonic()
    status = "ok"
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=res.ROOT, stdout=f, stderr=None)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
            status = "timeout"
            print(f"    {name}: killed after {timeout:.0f} s", file=sys.stderr)
    elapsed = time.monotonic() - t0
    data: dict[str, Any] = {"rows": [], "skips": [], "notes": []}
    if rows_file.exists():
        data = json.loads(rows_file.read_text())
        rows_file.unlink()
    elif status == "ok":
        status = "error"
    failed = [
        f"{r['key']}: {check}"
        for r in data["rows"]
        for check, passed in r["checks"].items()
        if not passed
    ]
    if status == "ok" and (code != 0 or failed):
        status = "failed"
    return {
        "rows": data["rows"],
        "skips": data["skips"],
        "_entry": {
            "name": name,
            "status": status,
            "planned_s": round(seconds, 1),
            "seconds": round(elapsed, 1),
            "exit_code": code,
            "rows": len(data["rows"]),
            "failed_checks": failed,
            "notes": data["notes"],
            "log": log.name,
        },
    }


def worker(argv: list[str]) -> int:
    """``python -m bench _worker NAME CONTEXT_JSON ROWS_FILE``: run one bench's ``run``."""
    name, raw, rows_file = argv
    options = json.loads(raw)
    b = bench(name)
    ctx = Context(
        name=name,
        quick=bool(options["quick"]),
        seconds=float(options["seconds"]),
        out=Path(options["out"]),
        progress=Progress(name),
    )
    try:
        rows: list[Row] = b.load().run(ctx)
    except Exception:
        traceback.print_exc()
        print(f"{name}: the bench raised; see the traceback above", file=sys.stderr)
        return 1
    for row in rows:
        if row.bench != name:
            raise ValueError(f"{name}: row {row.key!r} says it belongs to {row.bench!r}")
    Path(rows_file).write_text(
        json.dumps(
            {
                "rows": [r.to_json() for r in rows],
                "skips": [s.to_json() for s in ctx.skips],
                "notes": ctx.notes,
            },
            allow_nan=False,
        )
    )
    return 0


def draw_plots(doc: dict[str, Any], out: Path) -> list[dict[str, str]]:
    """Every bench's ``plot(rows, directory)``, if it has one; skipped with a line when
    matplotlib is not installed."""
    from bench import plots

    why = plots.unavailable()
    if why:
        skip = Skip("all", "the PNG plots", why)
        print(f"all: skipped {skip.what}: {skip.why}", file=sys.stderr)
        doc["skips"].append(skip.to_json())
        return []
    drawn = []
    for b in BENCHES:
        rows = res.rows_of(doc, b.name)
        plot = getattr(b.load(), "plot", None)
        if not rows or plot is None:
            continue
        for file, title in plot(rows, out):
            drawn.append({"bench": b.name, "file": file.name, "title": title})
            print(f"  plot: {file}", file=sys.stderr)
    return drawn

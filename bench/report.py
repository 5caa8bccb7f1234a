"""``python -m bench report RESULTS.json``: the README's performance section and
docs/benchmarks.md, generated from one results document.

* the README section (the headline rows of each bench, the plots) is printed, or
  written to ``--readme FILE``, or put in place between the markers
  ``<!-- bench:begin -->`` and ``<!-- bench:end -->`` of ``--update-readme README.md``;
* docs/benchmarks.md (every table, every row, the machine, what was skipped, the
  convention a bench module follows) is written to ``--docs`` (default
  docs/benchmarks.md; ``--docs -`` prints it, ``--no-docs`` skips it);
* ``--plots DIR`` redraws the PNG plots from the document's rows into DIR.

Every table carries the command, machine and commit that produced it. The same
document always renders the same text: ``render_readme_section(doc)`` and
``render_docs(doc)`` are what the tests compare the committed files with.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path

from bench import results as res
from bench.suite import BENCHES, DEFAULT_BUDGET_MIN, JSON, Row

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"
ROOT = res.ROOT
DOCS = ROOT / "docs" / "benchmarks.md"

UNITS = (
    ("_per_s", "/s"),
    ("_us_per_op", " µs/op"),
    ("_us_per_msg", " µs/msg"),
    ("_per_msg", "/msg"),
    ("_per_op", "/op"),
    ("_ms", " ms"),
    ("_us", " µs"),
    ("_s", " s"),
    ("_mb", " MB"),
    ("_kib", " KiB"),
    ("_share", ""),
    ("_n", ""),
)
WORDS = {
    "cpu": "CPU",
    "wal": "WAL",
    "gcs": "GCs",
    "gc": "GC",
    "rss": "RSS",
    "req": "req",
    "ops": "ops",
}


def column_title(name: str) -> str:
    """``ack_p99_ms`` -> ``ack p99 ms``; ``transfers_per_s`` -> ``transfers/s``."""
    for suffix, unit in UNITS:
        if name.endswith(suffix) or name == suffix[1:]:
            base, tail = name[: -len(suffix)], unit
            break
    else:
        base, tail = name, ""
    if not base:  # the name is a unit alone: ``us_per_op`` -> ``µs/op``
        return tail.strip()
    words = [WORDS.get(w, w) for w in base.split("_") if w]
    return " ".join(words) + tail


def fmt(name: str, value: float) -> str:
    """A figure as a table shows it: thousands separators for rates and counts, three
    significant digits for times and sizes, a percentage for shares."""
    if not math.isfinite(value):
        return "–"
    if name.endswith("_share"):
        return f"{value:.0%}"
    if "×" in name or name.endswith("_ratio"):
        a = abs(value)
        if a >= 100:
            return f"{value:,.0f}"
        if a >= 0.1 or a == 0:
            return f"{value:.2f}"
        # Two significant digits for small ratios: 0.0025, not 0.00.
        return f"{value:.{1 - math.floor(math.log10(a))}f}"
    if name.endswith("_n") or (name.endswith("_per_s") and abs(value) >= 100):
        return f"{value:,.0f}"
    a = abs(value)
    if a >= 1000:
        return f"{value:,.0f}"
    if a >= 100:
        return f"{value:.0f}"
    if a >= 10:
        return f"{value:.1f}"
    if a >= 1:
        return f"{value:.2f}"
    if a == 0:
        return "0"
    return f"{value:.3f}"


# -- the run's identity ------------------------------------------------------------------


def machine_line(doc: JSON) -> str:
    m = doc["machine"]
    memory = m.get("memory_bytes")
    parts = [
        str(m.get("cpu_model") or "unknown CPU"),
        f"{m.get('cores')} cores"
        + (
            f" ({m['cpus_usable']} usable)"
            if m.get("cpus_usable") not in (None, m.get("cores"))
            else ""
        ),
        f"{memory / 2**30:.0f} GiB" if memory else None,
        str(m.get("kernel") or ""),
        f"{m.get('implementation', 'Python')} {m.get('python')}",
    ]
    return ", ".join(p for p in parts if p)


def commit_line(doc: JSON) -> str:
    g = doc["git"]
    if not g.get("commit"):
        return "no git commit"
    dirty = " (tree dirty: uncommitted changes)" if g.get("dirty") else ""
    return f"commit `{g.get('short')}`{dirty}"


def caption(doc: JSON) -> str:
    """The line under every table: command, machine, commit, date."""
    date = str(doc.get("started_at") or "")[:10]
    return (
        f"<sub>`{doc['command']['line']}` · {commit_line(doc)} · {date} · {machine_line(doc)}</sub>"
    )


def quick_warning(doc: JSON) -> str:
    if doc.get("mode") != "quick":
        return ""
    return (
        "> **A `--quick` run**: a smoke test of every bench with small sizes on a shared "
        "machine. Its figures show that everything runs and checks out, not what the "
        "engine does: regenerate from a full `python -m bench all` on a quiet machine "
        "before choosing by them.\n"
    )


# -- tables --------------------------------------------------------------------------------


def tables_of(rows: list[Row]) -> dict[str, list[Row]]:
    tables: dict[str, list[Row]] = {}
    for r in rows:
        tables.setdefault(r.table, []).append(r)
    return tables


def bench_order(doc: JSON) -> list[str]:
    known = [b.name for b in BENCHES]
    present = list(dict.fromkeys(r["bench"] for r in doc["rows"]))
    return [n for n in known if n in present] + [n for n in present if n not in known]


def markdown_table(rows: list[Row], *, compact: bool) -> str:
    """One Markdown table: the label, then every metric and ratio the rows carry (with
    ``compact``, only the rows' ``primary`` columns, when they name any)."""
    columns: list[str] = []
    for r in rows:
        names = [*r.metrics, *r.ratios]
        if compact and r.primary:
            names = [n for n in r.primary if n in r.metrics or n in r.ratios]
        columns += [n for n in names if n not in columns]
    header = ["what", *(column_title(c) if not c.startswith("×") else c for c in columns)]
    show_notes = not compact and any(r.note for r in rows)
    if show_notes:
        header.append("note")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        label = r.label + (
            " *(limit)*" if r.role == "limit" else " *(peer)*" if r.role == "peer" else ""
        )
        cells = [label]
        for c in columns:
            value = r.metrics.get(c, r.ratios.get(c))
            cells.append("" if value is None else fmt(c, value))
        if show_notes:
            cells.append(r.note.replace("|", "\\|"))
        lines.append("| " + " | ".join(cell.replace("\n", " ") for cell in cells) + " |")
    return "\n".join(lines)


def _skips(doc: JSON, bench: str | None = None) -> list[str]:
    return [
        f"{s['what']} ({s['bench']}): {s['why']}"
        for s in doc["skips"]
        if bench is None or s["bench"] == bench
    ]


def _plots(doc: JSON, bench: str, base: str) -> list[str]:
    return [
        f"![{p['title']}]({base}{p['file']})" for p in doc.get("plots", []) if p["bench"] == bench
    ]


def _failed(doc: JSON) -> list[str]:
    return [f"{b['name']}: {c}" for b in doc["benches"] for c in b.get("failed_checks", [])]


def _command_of(bench: str) -> str:
    return f"python -m bench {bench}"


def render_readme_section(doc: JSON, plots_base: str = "bench/published/") -> str:
    """The README's performance section: per bench, the headline rows of each table,
    with the command, machine and commit under each; the plots; what was skipped."""
    out = [
        f"<!-- generated by `python -m bench report` from a results file "
        f"({doc['command']['line']}, {doc.get('started_at')}): do not edit by hand -->",
        "",
        f"Every figure below comes from one run of `{doc['command']['line']}`, each beside "
        "the peer or limit measured in the same run (ratios: `×`). "
        "[docs/benchmarks.md](docs/benchmarks.md) has every row, the machine in full and "
        "how to reproduce; `python -m bench NAME --help` says what each bench measures.",
        "",
    ]
    warning = quick_warning(doc)
    if warning:
        out += [warning]
    for name in bench_order(doc):
        rows = res.rows_of(doc, name)
        tables = {t: [r for r in rs if r.headline] for t, rs in tables_of(rows).items()}
        tables = {t: rs for t, rs in tables.items() if rs}
        if not tables:
            continue
        out += [f"### {name} — `{_command_of(name)}`", ""]
        for title, trs in tables.items():
            out += [f"**{title}**", "", markdown_table(trs, compact=True), "", caption(doc), ""]
        out += [p + "\n" for p in _plots(doc, name, plots_base)]
        skipped = _skips(doc, name)
        if skipped:
            out += ["Skipped in this run: " + "; ".join(skipped) + ".", ""]
    failed = _failed(doc)
    if failed:
        out += ["**Checks that failed in this run:** " + "; ".join(failed), ""]
    return "\n".join(out).rstrip() + "\n"


CONVENTION = """\
## Running the suite

```sh
pip install -e '.[bench]'            # matplotlib for the plots, cryptography for the Ed25519 peer
python -m bench                      # the list, one line per benchmark
python -m bench NAME --help          # what one benchmark measures, its flags
python -m bench NAME                 # one benchmark on its own, its tables on stdout
python -m bench all                  # everything, ~15 min on 2 cores: JSON, logs and PNGs
python -m bench all --budget 5       # the same, every bench scaled to fit 5 minutes
python -m bench all --quick          # the smoke run (< 3 min): runs everything, checks, no speed asserted
python -m bench all --only ledger,api
python -m bench report bench/results/latest.json --update-readme README.md   # README section + this page
python -m bench compare OLD.json NEW.json                                    # ratios, figure by figure
```

`all` runs each bench in a child process of its own, writes
`bench/results/<time>-<commit>[-quick]/` (ignored by git): `results.json`, one log per
bench (its printed tables) and the plots; `bench/results/latest.json` is the last
run. The document records every row, the machine (CPU model, cores, memory, kernel,
Python, the versions of the packages and tools involved, the load average before and
after), the git commit and whether the tree was dirty, and the exact command line. A
peer that cannot run on the machine (no Node, no compiler, no PostgreSQL, no
`cryptography`, no matplotlib) is skipped with a printed line, recorded in the document
and listed under its tables: never silently. The exit status is 1 when a bench failed
or one of its correctness checks did not pass (money conserved, bets settled once,
messages in order: each bench checks what it can).

To publish: run `python -m bench all` on a quiet machine, copy its directory to
`bench/published/` (`results.json` and the PNGs), then
`python -m bench report bench/published/results.json --update-readme README.md`
rewrites the README's section (between `<!-- bench:begin -->` and
`<!-- bench:end -->`) and this page; tests/bench checks both match the committed file.

## Adding a benchmark

A benchmark is a module `bench/NAME.py` and one entry in `BENCHES` in
`bench/suite.py`: `Bench("NAME", "one line for the list", minutes)`, where `minutes` is
its share of the default 15-minute budget. The module exposes:

| what | signature | used by |
|---|---|---|
| the command | `main(argv: list[str]) -> int` (argparse; prints its tables) | `python -m bench NAME` |
| the suite's entry | `run(ctx: bench.suite.Context) -> list[bench.suite.Row]` | `all` (in a child process) |
| plots (optional) | `plot(rows: list[Row], directory: Path) -> list[tuple[Path, str]]` | `all`, `report --plots` |

`run` measures within `ctx.seconds` (its share of `--budget`), or for a few seconds when
`ctx.quick` is set (small sizes, every correctness check still made); it prints the
same tables as `main`, reports progress with `ctx.progress.update(done, total, what)`,
and calls `ctx.skip(what, why)` for a peer or part that cannot run here. Files it
writes go under `ctx.out`.

A `Row` is JSON-able (`Row.to_json()`):

| field | meaning |
|---|---|
| `bench`, `key` | which bench, and an id stable across runs: `compare` matches rows by them |
| `table`, `label` | the table the row belongs to (its title) and the row's first column |
| `metrics` | name → number; the suffix is the unit: `_per_s`, `_ms`, `_us`, `_s`, `_mb`, `_kib`, `_n` (a count), `_share` (0..1) |
| `ratios` | column title → ratio against a peer or limit measured in the same run, e.g. `"× raw sqlite3"` |
| `role` | `subject` (crashd), `peer` (another implementation) or `limit` (a floor or ceiling) |
| `params` | the configuration (rates, sizes, modes) |
| `checks` | correctness check → passed; a `false` fails `all` |
| `samples` | raw distributions (at most 20,000 values each) for plots |
| `headline`, `primary` | the row goes into the README's section, showing these columns |
| `note` | a remark shown beside the row |
"""


def render_docs(doc: JSON, plots_base: str = "../bench/published/") -> str:
    """docs/benchmarks.md: how to run and extend the suite, then every table of the
    run, each with its command, machine and commit."""
    m, g = doc["machine"], doc["git"]
    out = [
        "# Benchmarks",
        "",
        "<!-- generated by `python -m bench report` from a results file: do not edit by "
        "hand (tests/bench checks it) -->",
        "",
        "`python -m bench` is crashd's benchmark suite: each figure is measured beside "
        "the peer or limit it is compared with, in the same run, on the same machine, "
        "and reported as a ratio.",
        "",
        CONVENTION,
        "## The benchmarks",
        "",
        "| bench | what it measures | minutes of the default run |",
        "|---|---|---|",
        *(
            f"| `{b.name}` | {b.summary} | "
            f"{DEFAULT_BUDGET_MIN * b.minutes / sum(x.minutes for x in BENCHES):.1f} |"
            for b in BENCHES
        ),
        "",
        "Each one's `python -m bench NAME --help` says how, and with which flags.",
        "",
        "## The published run",
        "",
    ]
    warning = quick_warning(doc)
    if warning:
        out += [warning]
    packages = ", ".join(f"{k} {v}" for k, v in m.get("packages", {}).items() if v)
    tools = ", ".join(f"{k}: {v}" for k, v in m.get("tools", {}).items() if v)
    out += [
        "| | |",
        "|---|---|",
        f"| command | `{doc['command']['line']}` (mode {doc.get('mode')}, budget {doc.get('budget_min')} min) |",
        f"| git | {commit_line(doc)} on `{g.get('branch')}` |",
        f"| when | {doc.get('started_at')} to {doc.get('finished_at')} ({doc.get('wall_s')} s) |",
        f"| machine | {machine_line(doc)} |",
        f"| OS | {m.get('os')} |",
        f"| load average | {m.get('loadavg_start')} before, {m.get('loadavg_end')} after |",
        f"| packages | {packages} |",
        f"| tools | {tools} |",
        "",
        "| bench | status | planned | took | rows | checks failed |",
        "|---|---|---|---|---|---|",
    ]
    for b in doc["benches"]:
        out.append(
            f"| {b['name']} | {b['status']} | {b['planned_s']:.0f} s | {b['seconds']:.0f} s "
            f"| {b['rows']} | {len(b.get('failed_checks', []))} |"
        )
    out.append("")
    skipped = _skips(doc)
    if skipped:
        out += ["Skipped in this run:", ""] + [f"- {s}" for s in skipped] + [""]
    failed = _failed(doc)
    if failed:
        out += ["**Checks that failed:**", ""] + [f"- {f}" for f in failed] + [""]
    for name in bench_order(doc):
        rows = res.rows_of(doc, name)
        out += [f"## {name} — `{_command_of(name)}`", ""]
        notes: list[str] = next(
            (b.get("notes", []) for b in doc["benches"] if b["name"] == name), []
        )
        out += [f"- {n}" for n in notes]
        out += [""] if notes else []
        for title, trs in tables_of(rows).items():
            out += [f"### {title}", "", markdown_table(trs, compact=False), "", caption(doc), ""]
            checks = sorted({c for r in trs for c in r.checks})
            if checks:
                passed = {c: all(r.checks.get(c, True) for r in trs) for c in checks}
                out += [
                    "Checked: "
                    + "; ".join(f"{c} ({'passed' if ok else 'FAILED'})" for c, ok in passed.items())
                    + ".",
                    "",
                ]
        out += [p + "\n" for p in _plots(doc, name, plots_base)]
    return "\n".join(out).rstrip() + "\n"


def replace_between_markers(text: str, section: str) -> str:
    """``text`` with what lies between ``BEGIN`` and ``END`` replaced by ``section``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} … {END} markers")
    return text[: start + len(BEGIN)] + "\n" + section + text[end:]


def between_markers(text: str) -> str | None:
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return None
    return text[start + len(BEGIN) : end].lstrip("\n")


def _relative(target_dir: Path, from_dir: Path) -> str:
    rel = os.path.relpath(target_dir, from_dir).replace(os.sep, "/")
    return "" if rel == "." else rel + "/"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench report",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", type=Path, help="a results.json written by python -m bench all")
    p.add_argument("--readme", type=Path, help="write the README section to this file")
    p.add_argument(
        "--update-readme",
        type=Path,
        metavar="README",
        help="replace the section between the bench markers of this file",
    )
    p.add_argument("--docs", default=str(DOCS), help="where docs/benchmarks.md goes ('-': stdout)")
    p.add_argument("--no-docs", action="store_true", help="do not write docs/benchmarks.md")
    p.add_argument("--plots", type=Path, help="redraw the plots from the rows into this directory")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    try:
        doc = res.load(args.results)
    except res.ResultsError as exc:
        print(f"python -m bench report: {exc}", file=sys.stderr)
        return 2
    if args.plots is not None:
        from bench.runner import draw_plots

        doc["plots"] = draw_plots(doc, args.plots)
    images = (args.plots or args.results.parent).resolve()
    readme_dir = (args.update_readme or Path("README.md")).resolve().parent
    section = render_readme_section(doc, _relative(images, readme_dir))
    if args.update_readme is not None:
        text = args.update_readme.read_text()
        try:
            args.update_readme.write_text(replace_between_markers(text, section))
        except ValueError as exc:
            print(f"python -m bench report: {args.update_readme}: {exc}", file=sys.stderr)
            return 2
        print(f"updated {args.update_readme}", file=sys.stderr)
    elif args.readme is not None:
        args.readme.write_text(section)
        print(f"wrote {args.readme}", file=sys.stderr)
    else:
        sys.stdout.write(section)
    if not args.no_docs:
        if args.docs == "-":
            sys.stdout.write(render_docs(doc, _relative(images, DOCS.parent)))
        else:
            docs = Path(args.docs)
            docs.write_text(render_docs(doc, _relative(images, docs.resolve().parent)))
            print(f"wrote {docs}", file=sys.stderr)
    return 0

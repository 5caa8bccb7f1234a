"""``python -m bench compare OLD.json NEW.json``: two runs side by side.

Rows are matched by (bench, key); for every figure (metric or ratio) present in both,
the table shows old, new and new ÷ old, and whether that is better or worse when the
figure's unit says which way is up (``/s`` and counts of subscribers sustained: higher
is better; times, CPU per op, memory: lower is better) and the change is larger than
``--threshold`` (default 5%). Rows or figures in only one run are counted below the
table. Both runs' command, commit and machine head the output: figures from different
machines compare the machines as much as the code.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from bench import results as res
from bench.report import column_title, commit_line, fmt, machine_line
from bench.suite import JSON, Row


@dataclass(frozen=True)
class Change:
    bench: str
    key: str
    label: str
    figure: str
    old: float
    new: float

    @property
    def ratio(self) -> float:
        if not (math.isfinite(self.old) and math.isfinite(self.new)) or self.old == 0:
            return float("nan")
        return self.new / self.old

    def verdict(self, threshold: float = 0.05) -> str:
        """``better``, ``worse`` or empty (within the threshold, or no direction)."""
        up = higher_is_better(self.figure)
        r = self.ratio
        if up is None or not math.isfinite(r) or abs(r - 1) <= threshold:
            return ""
        return "better" if (r > 1) == up else "worse"


def higher_is_better(figure: str) -> bool | None:
    if figure.startswith("×"):
        return None  # a ratio to a peer: which way is up depends on the figures in it
    if figure.endswith("_per_s") or figure in {"sustained_n"}:
        return True
    if figure.endswith(("_ms", "_us", "_s", "_mb", "_kib", "_per_op", "_per_msg")):
        return False
    return None


def changes(old: list[Row], new: list[Row]) -> tuple[list[Change], list[str], list[str]]:
    """Every figure present in both runs, matched row by row; and the rows only in the
    old run, and only in the new one (as ``bench/key``)."""
    before = {(r.bench, r.key): r for r in old}
    after = {(r.bench, r.key): r for r in new}
    out = []
    for k, n in after.items():
        o = before.get(k)
        if o is None:
            continue
        for figure, value in n.metrics.items():
            if figure in o.metrics:
                out.append(Change(n.bench, n.key, n.label, figure, o.metrics[figure], value))
        for figure, value in n.ratios.items():
            if figure in o.ratios:
                out.append(Change(n.bench, n.key, n.label, figure, o.ratios[figure], value))
    gone = [f"{b}/{k}" for b, k in before if (b, k) not in after]
    added = [f"{b}/{k}" for b, k in after if (b, k) not in before]
    return out, gone, added


def render(old_doc: JSON, new_doc: JSON, threshold: float = 0.05) -> str:
    found, gone, added = changes(res.rows_of(old_doc), res.rows_of(new_doc))
    lines = []
    for side, doc in (("old", old_doc), ("new", new_doc)):
        lines.append(
            f"{side}: `{doc['command']['line']}` · {commit_line(doc)} · {doc.get('started_at')} · "
            f"{machine_line(doc)} · mode {doc.get('mode')}"
        )
    if old_doc["machine"].get("cpu_model") != new_doc["machine"].get("cpu_model"):
        lines.append("(different CPUs: the ratios compare machines as well as code)")
    lines += [
        "",
        "| bench | row | figure | old | new | new ÷ old | |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in found:
        title = c.figure if c.figure.startswith("×") else column_title(c.figure)
        r = c.ratio
        lines.append(
            f"| {c.bench} | {c.label} | {title} | {fmt(c.figure, c.old)} | {fmt(c.figure, c.new)} "
            f"| {'–' if not math.isfinite(r) else f'{r:.3f}'} | {c.verdict(threshold)} |"
        )
    better = sum(c.verdict(threshold) == "better" for c in found)
    worse = sum(c.verdict(threshold) == "worse" for c in found)
    lines += [
        "",
        f"{len(found)} figures in both runs: {better} better, {worse} worse by more than "
        f"{threshold:.0%}; {len(gone)} rows only in the old run, {len(added)} only in the new.",
    ]
    if gone:
        lines.append("only in old: " + ", ".join(gone[:20]) + (" …" if len(gone) > 20 else ""))
    if added:
        lines.append("only in new: " + ", ".join(added[:20]) + (" …" if len(added) > 20 else ""))
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench compare",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("old", type=Path)
    p.add_argument("new", type=Path)
    p.add_argument("--threshold", type=float, default=0.05, help="relative change that counts")
    args = p.parse_args(argv)
    try:
        old, new = res.load(args.old), res.load(args.new)
    except res.ResultsError as exc:
        print(f"python -m bench compare: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(render(old, new, args.threshold))
    return 0

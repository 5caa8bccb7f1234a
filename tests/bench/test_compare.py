"""``python -m bench compare``: figures matched row by row, ratios, which way is better."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import compare
from bench import results as res


def _faster(doc: dict[str, Any]) -> dict[str, Any]:
    new = copy.deepcopy(doc)
    new["git"]["short"] = "fedcba9"
    for row in new["rows"]:
        if row["key"] == "FULL/group/100":
            row["metrics"]["transfers_per_s"] = 50_000.0
            row["metrics"]["ack_p99_ms"] = 22.5
    new["rows"] = [r for r in new["rows"] if r["key"] != "FULL/per-op/100"]
    new["rows"].append(
        {"bench": "ledger", "table": "t", "key": "new/row", "label": "new", "metrics": {"a_n": 1}}
    )
    return new


def test_figures_present_in_both_runs_are_matched(synthetic_doc: dict[str, Any]) -> None:
    new = _faster(synthetic_doc)
    found, gone, added = compare.changes(res.rows_of(synthetic_doc), res.rows_of(new))
    by = {(c.key, c.figure): c for c in found}
    rate = by[("FULL/group/100", "transfers_per_s")]
    assert rate.ratio == 2.0 and rate.verdict() == "better"
    latency = by[("FULL/group/100", "ack_p99_ms")]
    assert latency.ratio == 2.0 and latency.verdict() == "worse"  # lower is better
    same = by[("raw/FULL", "rows_per_s")]
    assert same.ratio == 1.0 and same.verdict() == ""
    assert ("FULL/group/100", "× raw sqlite3") in by  # ratios are figures too
    assert by[("FULL/group/100", "× raw sqlite3")].verdict() == ""  # no direction
    assert gone == ["ledger/FULL/per-op/100"] and added == ["ledger/new/row"]


def test_a_missing_figure_has_no_ratio() -> None:
    c = compare.Change("b", "k", "l", "p99_ms", float("nan"), 3.0)
    assert math.isnan(c.ratio) and c.verdict() == ""
    assert compare.higher_is_better("sustained_n") is True
    assert compare.higher_is_better("cpu_us_per_op") is False


def test_the_table_names_both_runs(synthetic_doc: dict[str, Any]) -> None:
    text = compare.render(synthetic_doc, _faster(synthetic_doc))
    assert "old: `python -m bench all` · commit `0123456`" in text
    assert "new: `python -m bench all` · commit `fedcba9`" in text
    assert (
        "| ledger | FULL, group commit, 100 callers | transfers/s | 25,000 | 50,000 | 2.000 | better |"
        in text
    )
    assert "1 rows only in the old run, 1 only in the new" in text


def test_compare_runs_from_the_command_line(tmp_path: Path, synthetic_doc: dict[str, Any]) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    res.dump(synthetic_doc, old)
    res.dump(_faster(synthetic_doc), new)
    out = subprocess.run(
        [sys.executable, "-m", "bench", "compare", str(old), str(new)],
        capture_output=True,
        text=True,
        cwd=res.ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == compare.render(synthetic_doc, _faster(synthetic_doc))
    (tmp_path / "bad.json").write_text("[]")
    bad = subprocess.run(
        [sys.executable, "-m", "bench", "compare", str(old), str(tmp_path / "bad.json")],
        capture_output=True,
        text=True,
        cwd=res.ROOT,
        timeout=60,
    )
    assert bad.returncode == 2 and "not a results document" in bad.stderr

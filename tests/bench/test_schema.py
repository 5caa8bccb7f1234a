"""Rows and the results document: what ``all`` writes is what ``report`` and ``compare``
read back, JSON without NaN, checked by ``validate``."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bench import results as res
from bench.runner import worker
from bench.suite import Progress, Row, percentile, ratio, thin, validate_row


def test_a_row_survives_json(synthetic_rows: list[Row]) -> None:
    for row in synthetic_rows:
        data = json.loads(json.dumps(row.to_json(), allow_nan=False))
        assert not validate_row(data)
        back = Row.from_json(data)
        assert back.key == row.key and back.table == row.table and back.params == row.params
        for name, value in row.metrics.items():
            if math.isfinite(value):
                assert back.metrics[name] == value
            else:
                assert data["metrics"][name] is None and math.isnan(back.metrics[name])


def test_samples_are_bounded_and_evenly_thinned() -> None:
    row = Row("x", "t", "k", "l", samples={"v": [float(i) for i in range(100_000)]})
    kept = row.to_json()["samples"]["v"]
    assert len(kept) == 20_000 and kept == sorted(kept) and kept[0] == 0.0
    assert thin([1, 2, 3], 10) == [1, 2, 3]


@pytest.mark.parametrize(
    "bad",
    [
        {"bench": "x", "table": "t", "key": "k", "label": ""},
        {"bench": "x", "table": "t", "key": "k", "label": "l", "metrics": {"a": "fast"}},
        {"bench": "x", "table": "t", "key": "k", "label": "l", "role": "hero"},
        {"bench": "x", "table": "t", "key": "k", "label": "l", "checks": {"c": "yes"}},
        [],
    ],
)
def test_malformed_rows_are_named(bad: Any) -> None:
    assert validate_row(bad)


def test_a_document_validates_and_loads(tmp_path: Path, synthetic_doc: dict[str, Any]) -> None:
    assert res.validate(synthetic_doc) == []
    path = tmp_path / "results.json"
    res.dump(synthetic_doc, path)
    doc = res.load(path)
    assert [r.key for r in res.rows_of(doc, "ledger")] == [
        "raw/FULL",
        "FULL/group/100",
        "FULL/per-op/100",
    ]


def test_a_document_with_problems_is_refused(tmp_path: Path, synthetic_doc: dict[str, Any]) -> None:
    synthetic_doc["rows"].append(dict(synthetic_doc["rows"][0]))
    assert any("twice" in p for p in res.validate(synthetic_doc))
    assert res.validate({"kind": "something else"})
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(res.ResultsError):
        res.load(path)


def test_a_new_document_records_machine_git_and_command() -> None:
    doc = res.new_document(["all", "--quick"], quick=True, budget_min=15)
    assert doc["command"]["line"] == "python -m bench all --quick"
    assert doc["mode"] == "quick" and doc["rows"] == [] and res.validate(doc) == []
    m = doc["machine"]
    for key in ("cpu_model", "cores", "memory_bytes", "kernel", "python", "packages", "tools"):
        assert key in m
    assert m["packages"]["trio"]
    assert set(doc["git"]) >= {"commit", "dirty", "branch"}
    json.dumps(doc, allow_nan=False)


def test_ratio_and_percentile_handle_missing_values() -> None:
    assert ratio(2, 4) == 0.5
    assert math.isnan(ratio(1, 0)) and math.isnan(ratio(float("nan"), 1))
    assert percentile([3, 1, 2], 50) == 2 and math.isnan(percentile([], 99))


def test_progress_off_a_terminal_writes_a_line_per_tenth() -> None:
    stream = io.StringIO()
    bar = Progress("ledger", stream=stream)
    for i in range(101):
        bar.update(i, 100, f"step {i}")
    phase = bar.part(0.5, 1.0)
    phase.update(0, 10)  # 50%: already shown, nothing new
    bar.done()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].split()[2] == "100%"
    assert all(line.lstrip().startswith("ledger") for line in lines)


def test_the_worker_writes_rows_skips_and_notes(tmp_path: Path) -> None:
    """One bench's ``run`` through the suite's child entry point, in quick mode
    (fairness: about a second), and the rows it wrote are valid, checks passing."""
    out = tmp_path / "rows.json"
    ctx = json.dumps({"quick": True, "seconds": 10, "out": str(tmp_path)})
    assert worker(["fairness", ctx, str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["rows"] and all(not validate_row(r) for r in data["rows"])
    assert all(r["bench"] == "fairness" for r in data["rows"])
    assert all(all(r["checks"].values()) for r in data["rows"])
    assert any(r["role"] == "limit" for r in data["rows"])
    assert any(n.startswith("equivalent: python -m bench fairness") for n in data["notes"])
    for skip in data["skips"]:
        assert skip["why"]  # a skipped peer always says why

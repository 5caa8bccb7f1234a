"""``python -m bench report``: the README section and docs/benchmarks.md, rendered from
a synthetic document, and the committed files checked against the committed run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import report
from bench import results as res

README = res.ROOT / "README.md"
PUBLISHED = res.PUBLISHED / "results.json"


def test_the_readme_section_has_headline_rows_and_says_where_they_come_from(
    synthetic_doc: dict[str, Any],
) -> None:
    text = report.render_readme_section(synthetic_doc)
    # Headline rows only; the compact columns the rows name.
    assert "FULL, group commit, 100 callers" in text
    assert "one transaction per op" not in text
    assert "| what | transfers/s | × raw sqlite3 |" in text
    assert "| FULL, group commit, 100 callers | 25,000 | 0.028 |" in text
    assert "raw sqlite3 *(limit)* | 900,000 |" in text
    # Every table: the command, the commit, the machine.
    tables = text.count("| what |")
    assert tables == 3
    captions = [line for line in text.splitlines() if line.startswith("<sub>")]
    assert len(captions) == tables
    for line in captions:
        assert "`python -m bench all`" in line and "`0123456`" in line
        assert "Test CPU 3000" in line and "2 cores" in line and "24 GiB" in line
    # Benches in registry order, plots linked, the skipped peer named with its reason.
    assert text.index("### tick") < text.index("### ledger")
    assert "![Tick distributions](bench/published/tick-latency.png)" in text
    assert "the raw PostgreSQL peer (ledger): pgbench not found" in text
    assert "--quick" not in text
    assert text == report.render_readme_section(synthetic_doc), "rendering is deterministic"


def test_a_quick_run_is_labelled_and_a_failed_check_is_shown(
    synthetic_doc: dict[str, Any],
) -> None:
    synthetic_doc["mode"] = "quick"
    synthetic_doc["benches"][0]["failed_checks"] = ["FULL/group/100: audit"]
    text = report.render_readme_section(synthetic_doc)
    assert "A `--quick` run" in text
    assert "Checks that failed in this run:** ledger: FULL/group/100: audit" in text


def test_the_docs_page_has_every_row_the_machine_and_the_convention(
    synthetic_doc: dict[str, Any],
) -> None:
    text = report.render_docs(synthetic_doc)
    assert text.startswith("# Benchmarks\n")
    assert "FULL, one transaction per op, 100 callers" in text  # not a headline: still here
    assert "slow \\| on purpose" in text  # notes escaped inside a table
    assert "| ack p99 ms |" in text.replace(" | mean group | ", " | ")
    assert "–" in text  # a NaN figure shows as a dash
    assert "Debian GNU/Linux 12" in text and "trio 0.35.0" in text and "node: v20.0.0" in text
    assert "## Adding a benchmark" in text and "run(ctx: bench.suite.Context)" in text
    assert "Checked: audit: money conserved (passed)." in text
    assert "![Tick distributions](../bench/published/tick-latency.png)" in text


@pytest.mark.parametrize(
    ("name", "value", "shown"),
    [
        ("transfers_per_s", 25_123.4, "25,123"),
        ("ack_p99_ms", 11.25, "11.2"),
        ("late_p99_ms", 0.2954, "0.295"),
        ("server_cpu_share", 0.99, "99%"),
        ("commands_n", 12.0, "12"),
        ("× hello", 0.42, "0.42"),
        ("× raw sqlite3", 0.00246, "0.0025"),
        ("p99_ms", float("nan"), "–"),
    ],
)
def test_figures_are_formatted_by_their_unit(name: str, value: float, shown: str) -> None:
    assert report.fmt(name, value) == shown


def test_column_titles_come_from_metric_names() -> None:
    assert report.column_title("transfers_per_s") == "transfers/s"
    assert report.column_title("ack_p99_ms") == "ack p99 ms"
    assert report.column_title("cpu_us_per_msg") == "CPU µs/msg"
    assert report.column_title("sustained_n") == "sustained"


def test_the_section_goes_between_the_markers() -> None:
    text = f"# x\n\n{report.BEGIN}\nold\n{report.END}\n\nrest\n"
    updated = report.replace_between_markers(text, "new section\n")
    assert report.between_markers(updated) == "new section\n"
    assert updated.startswith("# x\n") and updated.endswith(f"{report.END}\n\nrest\n")
    with pytest.raises(ValueError):
        report.replace_between_markers("no markers", "x")


def test_report_writes_the_section_and_the_docs(
    tmp_path: Path, synthetic_doc: dict[str, Any]
) -> None:
    path = tmp_path / "results.json"
    res.dump(synthetic_doc, path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\n{report.END}\noutro\n")
    docs = tmp_path / "benchmarks.md"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "report",
            str(path),
            "--update-readme",
            str(readme),
            "--docs",
            str(docs),
        ],
        capture_output=True,
        text=True,
        cwd=res.ROOT,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    section = report.between_markers(readme.read_text())
    # Plots are linked relative to the file that shows them.
    assert section == report.render_readme_section(synthetic_doc, plots_base="")
    assert docs.read_text() == report.render_docs(synthetic_doc, plots_base="")


def test_the_committed_docs_page_is_what_report_generates() -> None:
    docs = report.DOCS
    assert PUBLISHED.exists(), f"{PUBLISHED} is the run the docs are generated from"
    expected = report.render_docs(res.load(PUBLISHED))
    assert docs.read_text() == expected, (
        "docs/benchmarks.md is stale: python -m bench report bench/published/results.json"
    )


def test_the_readmes_section_is_what_report_generates() -> None:
    section = report.between_markers(README.read_text())
    if section is None:
        pytest.skip(
            f"README.md has no {report.BEGIN} / {report.END} markers yet: the section "
            "is not generated"
        )
    expected = report.render_readme_section(res.load(PUBLISHED))
    assert section == expected, (
        "README's bench section is stale: python -m bench report "
        "bench/published/results.json --update-readme README.md"
    )


def test_every_plot_the_published_run_names_is_committed() -> None:
    doc = res.load(PUBLISHED)
    for plot in doc["plots"]:
        assert (PUBLISHED.parent / plot["file"]).exists(), plot


def test_plots_are_drawn_from_rows(tmp_path: Path, synthetic_doc: dict[str, Any]) -> None:
    pytest.importorskip("matplotlib", reason="the bench extra (matplotlib) is not installed")
    from bench.runner import draw_plots

    drawn = draw_plots(synthetic_doc, tmp_path)
    assert [p["bench"] for p in drawn] == ["tick"]  # the only bench with plottable rows
    png = tmp_path / drawn[0]["file"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

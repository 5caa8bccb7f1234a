"""The curve figures the docs quote are the engine's: every "N.NNx at T ms" in the README
and docs/ is checked against ``crashd.engine.curve.ms_at`` (the first millisecond at which the
multiplier is reached), so a figure cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from crashd.engine.bounds import MAX_MULTIPLIER
from crashd.engine.curve import ms_at
from support.servers import REPO

ROOT = REPO
FIGURE = re.compile(r"(\d[\d,]*)\.(\d\d)x at ([\d,]+) ms")


def _documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def test_every_quoted_curve_point_is_the_engines() -> None:
    seen = 0
    for path in _documents():
        for match in FIGURE.finditer(path.read_text(encoding="utf-8")):
            hundredths = int(match[1].replace(",", "")) * 100 + int(match[2])
            quoted_ms = int(match[3].replace(",", ""))
            assert quoted_ms == ms_at(hundredths), (
                f"{path.name}: {match[0]!r}, but the engine first reaches "
                f"{hundredths / 100:.2f}x at {ms_at(hundredths):,} ms"
            )
            seen += 1
    assert seen >= 3, "the README's curve section quotes at least three points"


def test_readme_states_the_multiplier_cap() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"capped at {MAX_MULTIPLIER // 100:,}.{MAX_MULTIPLIER % 100:02d}x" in text

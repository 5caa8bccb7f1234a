"""``python -m bench cluster``: without Redis the Redis parts are skipped with a line saying
so (and recorded), the Unix transport still measured; one small real run of the Unix
delay point delivers every frame the child engine published, through the real relay and
edge hub. No speed is asserted."""

from __future__ import annotations

import pytest

from bench import cluster
from bench.suite import Skip, validate_row


def test_percentile_is_nearest_rank() -> None:
    assert cluster.percentile([], 50) != cluster.percentile([], 50)  # NaN
    assert cluster.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert cluster.percentile([float(x) for x in range(101)], 99) == 99.0


@pytest.mark.slow
def test_without_redis_only_the_unix_point_is_measured(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cluster.shutil, "which", lambda name: None)
    args = cluster.parser().parse_args(["--seconds", "1", "--frames-per-s", "50"])
    skips: list[Skip] = []
    rows = cluster.measure(args, None, skips)
    out = capsys.readouterr().out
    assert "skipped the Redis transports and API processes" in out
    assert [s.what for s in skips] == ["the Redis transports and API processes"]
    assert [r.key for r in rows] == ["delay/unix"]
    (row,) = rows
    assert validate_row(row.to_json()) == []
    assert row.checks == {"every frame arrived": True}
    assert row.params["frames_per_s"] == 50.0

"""The operator's documents hold: every metric the Grafana dashboard and the Prometheus
alerts use is exported by a real server's /metrics, the Dockerfile in
docs/operations.md builds (where a Docker daemon runs), the systemd unit names real
commands."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from support.game import Api, fund, game_config
from support.servers import REPO, make_key, running_server

DOCS = REPO / "docs"
_NAME = re.compile(r"\b(crashd_[a-z0-9_]+)")
_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created", "_info")


def dashboard_metrics() -> set[str]:
    doc = json.loads((DOCS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p["targets"]]
    alerts = (DOCS / "prometheus.yml").read_text()
    return set(_NAME.findall(" ".join(exprs))) | set(_NAME.findall(alerts))


def exported(text: str) -> set[str]:
    """Every sample name, and every family declared by a ``# TYPE`` line (a labelled
    counter has no sample until its first event, but it is exported)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            names.add(line.split()[2])
        elif line and not line.startswith("#"):
            names.add(line.split("{")[0].split(" ")[0])
    return names


def is_exported(metric: str, names: set[str]) -> bool:
    if metric in names or any(metric + s in names for s in _SUFFIXES):
        return True
    return any(metric.endswith(s) and metric[: -len(s)] in names for s in _SUFFIXES)


async def test_every_metric_the_dashboard_uses_is_exported(tmp_path: Path) -> None:
    config = game_config(tmp_path)
    async with running_server(config) as info:
        _, player = make_key(config, "read:game_state,read:balance,write:bet")
        _, scraper = make_key(config, "admin:metrics")
        async with httpx.AsyncClient(base_url=info.url, timeout=20) as client:
            api = Api(client, player)
            await fund(api, "d")
            await api.wait_status("betting")
            placed = await api.place("d", 100)
            await api.wait_status("running")
            await api.post(f"/api/v1/bets/{placed['ticket_id']}/cashout", {"user_id": "d"})
            await api.wait_round_over(placed["round_id"])
            text = (await Api(client, scraper).get("/metrics")).text
    names = exported(text)
    wanted = dashboard_metrics()
    assert len(wanted) > 20
    missing = sorted(m for m in wanted if not is_exported(m, names))
    assert not missing, missing


def fenced(section: str, language: str) -> str:
    text = (DOCS / "operations.md").read_text()
    start = text.index(f"<!-- {section}:begin -->")
    block = text[start : text.index(f"<!-- {section}:end -->")]
    match = re.search(rf"```{language}\n(.*?)```", block, re.S)
    assert match is not None, section
    return match.group(1)


def test_the_systemd_unit_runs_the_zipapp_with_a_config_file() -> None:
    unit = fenced("systemd", "ini")
    assert "ExecStart=/usr/bin/python3 -I -S /opt/crashd/crashd.pyz serve --config" in unit
    assert "KillSignal=SIGTERM" in unit and "TimeoutStopSec=" in unit


def test_the_dockerfile_builds(tmp_path: Path) -> None:
    dockerfile = fenced("dockerfile", "dockerfile")
    assert "crashd.pyz" in dockerfile and "STOPSIGNAL SIGTERM" in dockerfile
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("docker is not installed here: the Dockerfile is checked where it is")
    if subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode != 0:
        pytest.skip("no Docker daemon runs here: the Dockerfile is checked where one does")
    subprocess.run([str(REPO / ".ci" / "zipapp-smoke"), str(tmp_path / "crashd.pyz")], check=True)
    (tmp_path / "Dockerfile").write_text(dockerfile)
    build = subprocess.run(
        [docker, "build", "-t", "crashd-docs-check", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if build.returncode != 0 and "pull" in build.stderr.lower():
        pytest.skip(f"the base image cannot be pulled here: {build.stderr.strip()[-200:]}")
    assert build.returncode == 0, build.stderr

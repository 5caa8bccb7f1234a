"""The README's command-line walkthrough, run as written against a real ``crashd serve``.

Each line of the walkthrough block is run by bash in the server's working directory,
so the README cannot drift from what the commands do. The one step that depends on
timing, the cashout, is retried while the round is still taking bets, as the README
tells a reader to do.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support.servers import REPO


def walkthrough() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(
        r"<!-- walkthrough:start -->\s*```sh\n(.*?)```\s*<!-- walkthrough:end -->", text, re.S
    )
    assert block is not None, "README walkthrough block not found"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_opens_with_the_two_commands() -> None:
    text = (REPO / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, re.S)
    assert first_block is not None
    lines = [line for line in first_block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2
    assert lines[0].endswith("pip install -e . && crashd serve")
    assert lines[1].endswith("pip install -e '.[test]' && pytest")
    ci = (REPO / ".ci" / "run").read_text()
    assert lines[1] in ci


def test_readme_walkthrough_runs(tmp_path: Path) -> None:
    bindir = str(Path(sys.executable).parent)
    env = {
        **os.environ,
        "PATH": bindir + os.pathsep + os.environ.get("PATH", ""),
        "CRASHD_PORT": "0",
        "CRASHD_FEED_PORT": "0",
        "CRASHD_CHAIN_LENGTH": "300",
        "CRASHD_BETTING_MS": "1500",
        "CRASHD_PAUSE_MS": "300",
        "CRASHD_STOP_WAIT_S": "1",
        "PYTHONPATH": str(REPO),
    }
    server = subprocess.Popen(
        [str(Path(bindir) / "crashd"), "serve"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert line.startswith("crashd: listening on "), line
        env["CRASHD_URL"] = line.split("listening on ", 1)[1].strip()
        lines = []
        for command in walkthrough():
            if "/cashout" in command:
                # Retried while the round is still betting, as the README tells a reader.
                command = (
                    f"for attempt in $(seq 300); do if OUT=$({command} 2>&1); then break; fi; "
                    'case "$OUT" in *too_late*) break;; *round_not_running*) sleep 0.1;; '
                    '*) echo "$OUT" >&2; exit 1;; esac; done; echo "$OUT"'
                )
            lines.append(command)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", "\n".join(lines)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "cashed_out" in out or "too_late" in out, out
        assert '"available"' in out and '"ticket_id"' in out, out
    finally:
        server.terminate()
        server.wait(timeout=30)

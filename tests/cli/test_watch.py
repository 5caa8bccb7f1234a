"""``crashd watch``: the pure view (verification, rendering) and the command against a
real server, run as a subprocess with stdout on a pipe (line mode)."""

from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path

import httpx
import trio

from crashd.api.cli.watch import (
    MISMATCH,
    UNVERIFIED,
    VERIFIED,
    WatchState,
    render_screen,
    result_line,
    verify,
)
from crashd.api.client import ChannelMessage, Snapshot
from crashd.engine.fairness import crash_point
from support.client import make_signed_key, quick_config
from support.servers import REPO, running_server

SALT = "0000000000000000004d6ec16dafe9d8370958664c1dc422f452892264c59526"
HASH = "6774ddd3dfe94e2c966d4ca5c5ed6dcd1f6a4fdab87ad12677ee7c5b96d6a3f5"  # 3.74x (DESIGN.md)


def crashed(seq: int, round_id: int, point: int, game_hash: str) -> ChannelMessage:
    body = {
        "seq": seq,
        "channel": "round_updates",
        "type": "crashed",
        "round_id": round_id,
        "crash_point": point,
        "multiplier": point,
        "game_hash": game_hash,
    }
    return ChannelMessage(seq, "round_updates", "crashed", body)


def test_results_are_recomputed_and_mismatches_marked() -> None:
    assert verify(1, 374, HASH, SALT, None).verification == VERIFIED
    lie = verify(1, 375, HASH, SALT, None)
    assert (lie.verification, lie.expected) == (MISMATCH, 374)
    assert "MISMATCH" in result_line(lie) and "3.74x" in result_line(lie)
    assert verify(1, 374, HASH, None, None).verification == UNVERIFIED
    # The chain runs backwards: round k's hash hashes (as hex text) to round k-1's.
    previous = hashlib.sha256(HASH.encode()).hexdigest()
    assert verify(2, 374, HASH, SALT, previous).chained is True
    assert verify(2, 374, HASH, SALT, "00" * 32).chained is False
    assert verify(1, 374, HASH, SALT, None, terminating_hash=previous).chained is True
    assert verify(1, 374, HASH, SALT, None).chained is None  # nothing to link to: not a failure


def test_state_follows_the_stream_and_renders_ansi() -> None:
    state = WatchState(SALT, history=3)
    state.apply(
        Snapshot(
            5,
            "e",
            "subscribe",
            {"round_updates": {"round_id": 9, "status": "running", "multiplier": 153}},
        )
    )
    assert (state.round_id, state.phase, state.multiplier) == (9, "running", 153)
    state.apply(
        ChannelMessage(
            6, "live_multiplier", "tick", {"type": "tick", "round_id": 9, "multiplier": 250}
        )
    )
    result = state.apply(crashed(7, 9, 375, HASH))
    assert result is not None and result.verification == MISMATCH and state.live_results == 1
    screen = render_screen(state, "http://x")
    assert screen.startswith("\x1b[H") and "\x1b[31m" in screen and "round 9" in screen
    for i in range(5):  # the scroll keeps the newest `history` results
        state.apply(crashed(10 + i, 10 + i, 374, HASH))
    assert [r.round_id for r in state.results] == [12, 13, 14]


async def test_watch_once_prints_verified_results_from_a_real_server(tmp_path: Path) -> None:
    config = quick_config(tmp_path)
    async with running_server(config) as info:
        key, _ = make_signed_key(config, "read:game_state")
        env = {**os.environ, "CRASHD_API_KEY": key, "PYTHONPATH": str(REPO)}
        with trio.fail_after(40):
            done = await trio.run_process(
                [sys.executable, "-m", "crashd.api", "watch", "--url", info.url, "--once", "2"],
                capture_stdout=True,
                capture_stderr=True,
                env=env,
                check=False,
            )
        out = done.stdout.decode()
        assert done.returncode == 0, (out, done.stderr.decode())
        lines = [ln for ln in out.splitlines() if "crashed @" in ln and "(history)" not in ln]
        assert len(lines) == 2, out
        async with httpx.AsyncClient(
            base_url=info.url, headers={"Authorization": f"Bearer {key}"}
        ) as http:
            salt = (await http.get("/api/v1/fairness")).json()["salt"]
            for line in lines:
                m = re.match(r"round (\d+)  crashed @ (\d+)\.(\d\d)x  verified  chained", line)
                assert m, line
                rnd = (await http.get(f"/api/v1/game/rounds/{m[1]}")).json()
                assert (
                    rnd["crash_point"]
                    == int(m[2]) * 100 + int(m[3])
                    == crash_point(rnd["game_hash"], salt)
                )
        assert "running" in out and "betting" in out  # the phases went by too
        assert "\x1b[" not in out  # not a terminal: no escape codes


async def test_watch_without_a_key_is_a_usage_error() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CRASHD_API_KEY"}
    env["PYTHONPATH"] = str(REPO)
    done = await trio.run_process(
        [sys.executable, "-m", "crashd.api", "watch"],
        capture_stdout=True,
        capture_stderr=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2 and b"CRASHD_API_KEY" in done.stderr

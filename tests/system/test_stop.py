"""A default stop ends within 10 s in every phase, against a real ``crashd serve``.

``docker stop`` sends SIGKILL 10 s after SIGTERM, so a graceful stop that can take
longer is often a kill. Each test starts a real server process with the *default*
``stop_wait_s`` and ``graceful_timeout``, on a chain whose first game the test chose
(a salt picked so the game crashes where the phase needs it), sends SIGTERM in one
phase and checks: exit 0 within 10 s, every bet settled exactly once as the rules say
(voided rounds refunded, a round that crashes within ``stop_wait_s`` played to its
crash), the ledger audits clean.
"""

from __future__ import annotations

import hashlib
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from crashd.api.config import Config
from crashd.engine.chainstore import ChainFile
from crashd.engine.chainstore import save as save_chain
from crashd.engine.curve import ms_at
from crashd.engine.fairness import ChainReader, build_chain, crash_point
from crashd.engine.ledger import open_ledger
from support.game import Api, fund
from support.servers import PYTHON, make_config, make_key, start_process

STOP_BOUND_S = 10.0
"""Docker's default wait between SIGTERM and SIGKILL."""
SCOPES = "read:game_state,read:balance,write:bet"


def chain_with_first_game(path: Path, low: int, high: int) -> int:
    """A chain whose game 1 crashes in [low, high] hundredths; returns its crash point."""
    spec = build_chain(hashlib.sha256(b"crashd stop tests").digest(), length=100, interval=10)
    first = ChainReader(spec).game_hash(1)
    for attempt in range(1_000_000):
        salt = f"stop-{attempt}"
        point = crash_point(first, salt)
        if low <= point <= high:
            save_chain(path, ChainFile(spec=spec, salt=salt))
            return point
    raise AssertionError("no salt found")


def config_for(tmp_path: Path, **overrides: Any) -> Config:
    defaults = Config()
    config = make_config(
        tmp_path,
        chain_length=100,
        stop_wait_s=defaults.stop_wait_s,
        graceful_timeout=defaults.graceful_timeout,
    )
    return config.with_overrides(**overrides)


async def start(config: Config) -> tuple[trio.Process, str]:
    return await start_process(
        [
            PYTHON,
            "-m",
            "crashd.api",
            "serve",
            "--port",
            "0",
            "--feed-port",
            "0",
            "--database",
            str(config.database),
            "--chain-file",
            str(config.chain_file),
            "--betting-ms",
            str(config.betting_ms),
            "--pause-ms",
            str(config.pause_ms),
            "--log-level",
            "warning",
        ],
    )


async def stop(proc: trio.Process) -> float:
    """SIGTERM; the seconds until the process exited (it must exit 0)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        with trio.fail_after(STOP_BOUND_S + 20):
            code = await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
    assert code == 0
    return time.monotonic() - sent


async def settled(config: Config, ticket: str) -> tuple[str | None, int | None, int]:
    """(outcome, multiplier, balance of 'pat') from the ledger after the stop; audits."""
    async with open_ledger(config.database, recover=False) as ledger:
        audit = await ledger.audit()
        assert audit.ok, audit.problems
        bet = await ledger.bet(ticket)
        assert bet is not None
        balance = await ledger.balance(environment="sandbox", partner_id="acme", user_id="pat")
        rnd = await ledger.round(1)
        assert rnd is not None and rnd.state in ("crashed", "voided")
        if rnd.state == "voided":
            assert rnd.void_reason == "shutdown" and rnd.game_hash is not None
        return bet.outcome, bet.multiplier, balance.posted


async def test_stop_while_betting_voids_the_round_at_once(tmp_path: Path) -> None:
    config = config_for(tmp_path, betting_ms=60_000)
    chain_with_first_game(config.chain_file, 101, 1_000_000)
    _, secret = make_key(config, SCOPES)
    proc, url = await start(config)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        api = Api(client, secret)
        await fund(api, "pat", 1_000)
        placed = await api.place("pat", 400)
        assert placed["round_id"] == 1 and not placed["queued"]
    took = await stop(proc)
    print(f"stop took {took:.2f} s")
    assert took < STOP_BOUND_S, f"stop took {took:.1f} s"
    assert await settled(config, placed["ticket_id"]) == ("refunded", None, 1_000)


async def test_stop_while_running_a_long_round_voids_it(tmp_path: Path) -> None:
    # Game 1 crashes at 20x or more: over 49 s of running, far past stop_wait_s.
    config = config_for(tmp_path, betting_ms=800)
    chain_with_first_game(config.chain_file, 2_000, 100_000_000)
    _, secret = make_key(config, SCOPES)
    proc, url = await start(config)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        api = Api(client, secret)
        await fund(api, "pat", 1_000)
        placed = await api.place("pat", 400, auto=100_000_00)
        await api.wait_status("running")
    took = await stop(proc)
    print(f"stop took {took:.2f} s")
    assert took < STOP_BOUND_S, f"stop took {took:.1f} s"
    assert await settled(config, placed["ticket_id"]) == ("refunded", None, 1_000)


async def test_stop_while_running_a_round_that_crashes_soon_plays_it_out(tmp_path: Path) -> None:
    # Game 1 crashes between 1.20x and 1.50x: 3.0-6.8 s of running. The stop is sent
    # once the crash is under 4 s away, so the round plays to its crash: the auto
    # cash-out at 1.10x is paid, nothing is voided.
    config = config_for(tmp_path, betting_ms=800)
    point = chain_with_first_game(config.chain_file, 120, 150)
    _, secret = make_key(config, SCOPES)
    proc, url = await start(config)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        api = Api(client, secret)
        await fund(api, "pat", 1_000)
        placed = await api.place("pat", 400, auto=110)
        state = await api.wait_status("running")
        wait_s = max(0.0, (ms_at(point) - state["elapsed_ms"] - 4_000) / 1000)
        await trio.sleep(wait_s)
    took = await stop(proc)
    print(f"stop took {took:.2f} s")
    assert took < STOP_BOUND_S, f"stop took {took:.1f} s"
    assert await settled(config, placed["ticket_id"]) == ("won", 110, 1_000 - 400 + 440)


async def test_stop_in_the_pause_after_a_crash_is_immediate(tmp_path: Path) -> None:
    config = config_for(tmp_path, betting_ms=300, pause_ms=60_000)
    chain_with_first_game(config.chain_file, 101, 110)
    _, secret = make_key(config, SCOPES)
    proc, url = await start(config)
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        api = Api(client, secret)
        await fund(api, "pat", 1_000)
        placed = await api.place("pat", 400)
        await api.wait_round_over(placed["round_id"])
        await api.wait_status("crashed")
    took = await stop(proc)
    print(f"stop took {took:.2f} s")
    assert took < STOP_BOUND_S, f"stop took {took:.1f} s"
    assert await settled(config, placed["ticket_id"]) == ("lost", None, 600)

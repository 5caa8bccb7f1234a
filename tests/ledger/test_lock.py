"""One process per ledger: a second opener — in this process, another process, or a
second ``crashd serve`` — is refused before it migrates, audits or recovers anything;
a holder that dies (even by SIGKILL) leaves no stale lock."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from crashd.engine.ledger import LedgerInUse, open_ledger
from crashd.engine.ledger.store import Store
from support.game import game_config
from support.servers import PYTHON, REPO, running_server

HOLDER = """
import sys, time
from crashd.engine.ledger.store import Store
store = Store(sys.argv[1])
print("holding", flush=True)
time.sleep(120)
"""


def rounds(database: Path) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(database)
    try:
        return conn.execute("SELECT id, state, void_reason FROM rounds ORDER BY id").fetchall()
    finally:
        conn.close()


def test_a_second_store_in_this_process_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    first = Store(path)
    try:
        with pytest.raises(LedgerInUse, match=f"pid {os.getpid()}"):
            Store(path)
    finally:
        first.close()
    Store(path).close()  # released on close


def test_another_process_holding_it_is_named_and_its_death_frees_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "holding"
        with pytest.raises(LedgerInUse, match=f"pid {child.pid}"):
            Store(path)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    Store(path).close()


async def second_server(database: Path, chain_file: Path) -> tuple[int, str]:
    done = await trio.run_process(
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
            str(database),
            "--chain-file",
            str(chain_file),
            "--chain-length",
            "200",
            "--log-level",
            "warning",
        ],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return done.returncode, done.stderr.decode()


async def test_a_second_server_on_the_same_database_or_chain_touches_nothing(
    tmp_path: Path,
) -> None:
    config = game_config(tmp_path, betting_ms=60_000)  # the first server's round stays open
    other = tmp_path / "other"
    other.mkdir()
    async with running_server(config):
        before: list[tuple[object, ...]] = []
        with trio.fail_after(10):  # the first round's start commits just after start-up
            while not before:
                before = rounds(config.database)
                await trio.sleep(0.02)
        assert before[-1][1] == "open"
        for database, chain, what in [
            (config.database, other / "chain.json", "database"),  # same ledger
            (other / "db.sqlite3", config.chain_file, "hash chain"),  # same chain
        ]:
            # An operator's mistake: one line, exit 2, no traceback, nothing touched.
            code, err = await second_server(database, chain)
            assert code == 2, err
            # (A new chain's creation may print progress first; the refusal is one line.)
            last = err.strip().splitlines()[-1]
            assert last.startswith("crashd serve: error: another process"), err
            assert (
                "Traceback" not in err
                and f"pid {os.getpid()}" in last
                and f"one crashd per {what}" in last
            )
        # Its recovery never ran: the first server's open round is still open.
        assert rounds(config.database)[: len(before)] == before
        assert not (other / "db.sqlite3").exists()
    async with open_ledger(config.database, sweep_interval_s=None) as ledger:
        assert (await ledger.audit()).ok

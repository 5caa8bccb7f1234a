"""Kill test: SIGKILL a process running a realistic ledger load at seeded random
moments, restart it, and check nothing acknowledged was lost and nothing moved twice.

Each cycle starts ``tests/support/ledger_load_child.py`` on the same database, lets it run for
a seeded random time (sometimes short enough to land in start-up recovery) and kills
it with SIGKILL. Then, on the database as the kill left it:

- ``PRAGMA integrity_check`` is ok;
- every acknowledged op is there, committed, with the sequence number it was
  acknowledged with; acknowledged cashouts are paid with the acknowledged payout;
- the audit passes (double entry, cached balances = transfers, no player below zero,
  escrow = unsettled stakes, conservation per environment);
- what the next start's recovery reports equals what the kill left unfinished (open
  rounds, unsettled stakes), and each settled bet has exactly one settlement transfer.

On both backends (``db``): a SQLite file, and a PostgreSQL database whose child holds
the leader lease (each restart takes it over from the killed one, a new term).

Default: 20 kills (``CRASHD_KILLS=N`` for more; 100 with the thorough profile).
``CRASHD_KILL_SEED`` replays a run; the seed is printed either way.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from crashd.engine.ledger import open_ledger
from crashd.engine.ledger.database import SNAPSHOT
from crashd.engine.ledger.schema import key_hash
from crashd.engine.ledger.store import audit
from support.postgres import Backend
from support.servers import REPO

CHILD = REPO / "tests" / "support" / "ledger_load_child.py"


def kills_wanted() -> int:
    if "CRASHD_KILLS" in os.environ:
        return int(os.environ["CRASHD_KILLS"])
    return 100 if os.environ.get("HYPOTHESIS_PROFILE") == "thorough" else 20


def run_and_kill(db: Path | str, seed: int, delay: float, log: Path) -> tuple[list[str], int]:
    """Run the child for ``delay`` seconds of wall time, SIGKILL it, return its
    complete stdout lines (a line cut by the kill is dropped) and its return code."""
    with open(log, "ab") as err:
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(db), str(seed)], stdout=subprocess.PIPE, stderr=err
        )
        assert proc.stdout is not None
        chunks: list[bytes] = []

        def drain() -> None:
            assert proc.stdout is not None
            for chunk in iter(lambda: proc.stdout.read(65536), b""):  # type: ignore[union-attr]
                chunks.append(chunk)

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        reader.join(timeout=30)
    text = b"".join(chunks).decode(errors="replace")
    lines = text.split("\n")[:-1]  # the last element is "" or a line the kill cut short
    return lines, code


def unfinished(conn: Any) -> tuple[int, int, int]:
    """(rounds recovery must void, bets it must refund, amount it must refund)."""
    rounds = conn.execute("SELECT count(*) FROM rounds WHERE settled_at IS NULL").fetchone()[0]
    bets, amount = conn.execute(
        "SELECT count(*), coalesce(sum(stake), 0) FROM bets WHERE outcome IS NULL"
    ).fetchone()
    return rounds, bets, amount


def created(db: Backend) -> bool:
    """Did the child get as far as creating the ledger (the kill may come first)?"""
    if not db.postgres and not Path(db.target).exists():
        return False
    conn = db.connect()
    try:
        if db.postgres:
            if not conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]:
                return False
        else:
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")
            }
            # All or nothing: the schema is created in one transaction.
            assert tables == set() or "accounts" in tables, tables
            if "meta" not in tables:
                return False
        return (
            conn.execute("SELECT 1 FROM meta WHERE key = 'schema_version'").fetchone() is not None
        )
    finally:
        conn.close()


def check_database(db: Backend, acks: list[dict[str, Any]]) -> tuple[int, int, int]:
    conn = db.connect()
    try:
        if not db.postgres:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        for a in acks:
            row = conn.execute(
                "SELECT id, ok, kind FROM ops WHERE key_hash = ? AND key = ?",
                (key_hash(a["key"]), a["key"]),
            ).fetchone()
            assert row is not None, f"acknowledged op lost: {a}"
            assert row[0] == a["seq"] and row[1] == 1, (a, row)
            if a["type"] == "bet_settled" and a["outcome"] == "won":
                bet = conn.execute(
                    "SELECT outcome, payout, settled_op FROM bets WHERE ticket_id = ?",
                    (a["ticket_id"],),
                ).fetchone()
                assert bet == ("won", a["payout"], a["seq"]), (a, bet)
            elif a["type"] == "bet_confirmed":
                bet = conn.execute(
                    "SELECT stake, confirmed_op FROM bets WHERE ticket_id = ?", (a["ticket_id"],)
                ).fetchone()
                assert bet == (a["stake"], a["seq"]), (a, bet)
            elif a["type"] == "round_settled":
                rnd = conn.execute(
                    "SELECT state, settled_op FROM rounds WHERE id = ?", (a["round_id"],)
                ).fetchone()
                assert rnd == ("crashed", a["seq"]), (a, rnd)
        report = audit(conn, SNAPSHOT) if db.postgres else audit(conn)
        assert report.ok, report.problems
        # Exactly one settlement transfer per settled bet: nothing refunded or paid twice.
        for outcome, kind in (("refunded", "refund"), ("lost", "loss"), ("won", "stake_return")):
            n_bets = conn.execute(
                "SELECT count(*) FROM bets WHERE outcome = ?", (outcome,)
            ).fetchone()[0]
            n_transfers = conn.execute(
                "SELECT count(*) FROM transfers WHERE kind = ?", (kind,)
            ).fetchone()[0]
            assert n_bets == n_transfers, (outcome, n_bets, n_transfers)
        return unfinished(conn)
    finally:
        conn.close()


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing(db: Backend, tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASHD_KILL_SEED", random.randrange(2**32)))
    kills = kills_wanted()
    print(f"\nkill test: seed={seed} kills={kills} (replay: CRASHD_KILL_SEED={seed})")
    rng = random.Random(seed)
    log = tmp_path / "child-stderr.log"
    expected_recovery: tuple[int, int, int] = (0, 0, 0)
    total_acks = recoveries_seen = voided = refunded = 0
    for cycle in range(kills):
        # A third of the kills land early: during interpreter start-up, schema checks
        # or recovery itself; the rest in the middle of the load.
        delay = rng.uniform(0.05, 0.7) if rng.random() < 0.33 else rng.uniform(0.7, 1.6)
        lines, code = run_and_kill(db.target, rng.randrange(2**31), delay, log)
        assert code == -signal.SIGKILL, (
            f"child exited by itself ({code}); see {log}:\n{log.read_text()[-3000:]}"
        )
        acks = [json.loads(line[4:]) for line in lines if line.startswith("ACK ")]
        recovered = [json.loads(line[10:]) for line in lines if line.startswith("RECOVERED ")]
        if recovered:
            # Recovery undid exactly what the previous kill left unfinished.
            r = recovered[0]
            got = (r["rounds_voided"], r["bets_refunded"], r["refunded_amount"])
            assert got == expected_recovery, (cycle, got, expected_recovery)
            recoveries_seen += 1
            voided += r["rounds_voided"]
            refunded += r["bets_refunded"]
        else:
            assert not acks
        if not created(db):
            # Killed before the database (or its schema, made in one transaction)
            # was created: nothing can have been acknowledged.
            assert not acks, acks
            continue
        expected_recovery = check_database(db, acks)
        total_acks += len(acks)

    # A last, clean start: recovery finishes the job and the books are closed.
    async def final() -> None:
        async with open_ledger(db.target, sweep_interval_s=None) as ledger:
            assert ledger.recovery is not None
            r = ledger.recovery
            assert (r.rounds_voided, r.bets_refunded, r.refunded_amount) == expected_recovery
            report = await ledger.audit()
            assert report.ok, report.problems

    trio.run(final)
    conn = db.connect()
    assert unfinished(conn) == (0, 0, 0)
    assert conn.execute("SELECT count(*) FROM rounds WHERE state = 'open'").fetchone()[0] == 0
    conn.close()
    print(
        f"kill test: {kills} kills, {total_acks} acknowledgements checked, "
        f"{recoveries_seen} recoveries seen ({voided} rounds voided, {refunded} bets refunded)"
    )
    assert total_acks > 0

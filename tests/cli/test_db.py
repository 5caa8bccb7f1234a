"""``crashd db check`` and ``crashd db backup`` on real database files, including a
backup taken while the ledger is committing, and every refusal."""

from __future__ import annotations

import json
import sqlite3
import stat
from pathlib import Path

import pytest
import trio

from crashd.api import database as apidb
from crashd.api.cli.db import backup_database, check_database
from crashd.api.cli.main import main
from crashd.api.security.keys import KeyStore
from crashd.engine.ledger import open_ledger

P = dict(environment="sandbox", partner_id="acme")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


async def make_database(path: Path) -> None:
    """A database as ``crashd serve`` leaves it: money in the ledger, a key, a pepper."""
    async with open_ledger(path, sweep_interval_s=None) as ledger:
        await ledger.psp_deposit("d1", user_id="ann", amount=5_000, **P)
        await ledger.faucet_credit("f1", user_id="bob", amount=700, partner_id="acme")
        await ledger.psp_withdrawal("w1", user_id="ann", amount=1_200, **P)
        await ledger.bankroll_move(
            "b1", environment="sandbox", direction="deposit", amount=300, actor="k"
        )
    store = KeyStore(path)
    store.create(environment="sandbox", scopes="read:game_state")
    store.close()


async def test_check_reports_a_sound_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "crashd.sqlite3"
    await make_database(db)
    code, out, err = run(capsys, "db", "check", "--database", str(db))
    assert (code, err) == (0, ""), out
    assert "database check: ok" in out and "sum of balances 0" in out
    assert "players+house+escrow 4,800 = PSP net 3,800 + faucet 700 + capital 300" in out, out
    code, out, _ = run(capsys, "db", "check", "--database", str(db), "--json")
    doc = json.loads(out)
    assert code == 0 and doc["ok"] and doc["problems"] == []
    books = doc["audit"]
    assert books["psp_net"]["sandbox"] == 5_000 - 1_200
    assert books["faucet_total"]["sandbox"] == 700
    assert books["capital_total"]["sandbox"] == 300
    assert books["internal_total"]["sandbox"] == 3_800 + 700 + 300


async def test_check_finds_a_tampered_balance(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "crashd.sqlite3"
    await make_database(db)
    conn = sqlite3.connect(db)
    conn.execute("UPDATE accounts SET posted = posted + 1 WHERE user_id = 'ann'")
    conn.commit()
    conn.close()
    code, out, _ = run(capsys, "db", "check", "--database", str(db))
    assert code == 1
    assert "PROBLEMS" in out and "posted" in out and "problem:" in out


def test_check_refuses_what_is_not_a_ledger(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "none.sqlite3"
    code, _, err = run(capsys, "db", "check", "--database", str(missing))
    assert code == 2 and "no database at" in err and "Traceback" not in err
    assert not missing.exists()  # looking did not create it
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database " * 200)
    code, out, _ = run(capsys, "db", "check", "--database", str(garbage))
    assert code == 1 and "not a readable SQLite database" in out
    empty = tmp_path / "other.sqlite3"
    sqlite3.connect(empty).execute("CREATE TABLE t (x)").connection.close()
    code, out, _ = run(capsys, "db", "check", "--database", str(empty))
    assert code == 1 and "no ledger schema" in out


async def test_backup_is_a_checked_private_copy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "crashd.sqlite3"
    await make_database(db)
    dest = tmp_path / "backups" / "crashd-1.sqlite3"
    dest.parent.mkdir()
    code, out, err = run(capsys, "db", "backup", str(dest), "--database", str(db))
    assert (code, err) == (0, ""), out
    assert "the copy: ok" in out
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    pepper = apidb.pepper_path(dest)
    assert pepper.read_bytes() == apidb.pepper_path(db).read_bytes()
    assert stat.S_IMODE(pepper.stat().st_mode) == 0o600
    # The copy is a working ledger with the same money and the same keys.
    async with open_ledger(dest, sweep_interval_s=None) as copy:
        assert (await copy.balance(user_id="ann", **P)).available == 3_800
        assert (await copy.balance(user_id="bob", **P)).available == 700
        assert (await copy.audit()).ok
    assert [k.environment for k in KeyStore(dest).list()] == ["sandbox"]
    # Never over an existing file, never onto the database itself.
    before = dest.read_bytes()
    code, _, err = run(capsys, "db", "backup", str(dest), "--database", str(db))
    assert code == 2 and "never overwrites" in err and dest.read_bytes() == before
    code, _, err = run(capsys, "db", "backup", str(db), "--database", str(db))
    assert code == 2 and "the database itself" in err
    code, _, err = run(
        capsys, "db", "backup", str(tmp_path / "nodir" / "x.sqlite3"), "--database", str(db)
    )
    assert code == 2 and "cannot create" in err


async def test_backup_while_the_ledger_commits_is_consistent(tmp_path: Path) -> None:
    """An online backup taken in the middle of a stream of commits is one commit's
    state: its audit holds, and it holds a prefix of the acknowledged deposits."""
    db = tmp_path / "crashd.sqlite3"
    dest = tmp_path / "copy.sqlite3"
    acked: list[int] = []
    async with open_ledger(db, sweep_interval_s=None) as ledger:

        async def depositor(worker: int) -> None:
            for i in range(150):
                await ledger.psp_deposit(f"d{worker}-{i}", user_id=f"u{worker}", amount=1 + i, **P)
                acked.append(1 + i)

        async with trio.open_nursery() as nursery:
            for w in range(8):
                nursery.start_soon(depositor, w)
            while len(acked) < 300:
                await trio.sleep(0.001)
            await trio.to_thread.run_sync(backup_database, db, dest)
    report = check_database(dest)
    assert report.ok and report.audit is not None, report.problems
    # At least what was acknowledged before the backup began; at most everything.
    assert 300 <= report.audit.transfers <= 8 * 150
    assert 0 < report.audit.psp_net["sandbox"] <= sum(acked)

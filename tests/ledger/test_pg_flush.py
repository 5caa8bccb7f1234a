"""Every PostgreSQL flush mode (copy, unnest, executemany, pipeline) writes the same
ledger: a mixed workload gives the same answers and the same rows as on SQLite, and
the audit passes. Real PostgreSQL (skipped with the reason where none)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from crashd.engine.ledger import open_ledger
from crashd.engine.ledger.schema import LEDGER_TABLES
from crashd.engine.ledger.writer import Ledger
from support.postgres import Backend

P = dict(environment="production", partner_id="acme")
TABLES = LEDGER_TABLES  # every table of the ledger, on both backends


async def workload(ledger: Ledger) -> list[Any]:
    out: list[Any] = []
    out.append(await ledger.psp_deposit("d1", user_id="a", amount=5000, **P))
    out.append(await ledger.psp_withdrawal("w1", user_id="a", amount=700, **P))
    out.append(
        await ledger.psp_withdrawal_reversal("w1r", environment="production", withdrawal_id="w1")
    )
    out.append(
        await ledger.bankroll_move(
            "b1", environment="production", direction="deposit", amount=900, actor="k", note="n"
        )
    )
    out.append(
        await ledger.audit_record(
            "a1", environment="production", actor="k", action="paused", after='{"x":1}'
        )
    )
    out.append(await ledger.round_start("s1", round_id=1))
    for n in range(3):
        out.append(
            await ledger.bet_place(
                f"p{n}", user_id="a", hold_id=f"h{n}", ticket_id=f"t{n}", amount=100 + n,
                round_id=1, **P,
            )
        )  # fmt: skip
    out.append(await ledger.settle_win("win", ticket_id="t0", multiplier=175))
    out.append(await ledger.round_settle("x1", round_id=1, crash_point=180, game_hash="a" * 64))
    return [r.to_json() for r in out]


def dump(conn: Any, columns: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    return {
        t: [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
            for r in conn.execute(f"SELECT {', '.join(cols)} FROM {t} ORDER BY 1").fetchall()]
        for t, cols in columns.items()
    }  # fmt: skip


@pytest.mark.parametrize("mode", ["copy", "unnest", "executemany", "pipeline"])
async def test_every_flush_mode_writes_what_sqlite_writes(
    mode: str, pg: Backend, tmp_path: Path
) -> None:
    async with open_ledger(tmp_path / "l.sqlite3", sweep_interval_s=None, clock=lambda: 7) as lite:
        expected = await workload(lite)
    async with open_ledger(pg.target, sweep_interval_s=None, clock=lambda: 7, pg_flush=mode) as led:
        got = await workload(led)
        assert (await led.audit()).ok
    assert got == expected
    import sqlite3

    a = sqlite3.connect(tmp_path / "l.sqlite3")
    b = pg.connect()
    try:
        columns = {t: [r[1] for r in a.execute(f"PRAGMA table_info({t})")] for t in TABLES}
        pg_columns = {
            t: [r[0] for r in b.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (t,)
            )]
            for t in TABLES
        }  # fmt: skip
        assert {t: sorted(c) for t, c in columns.items()} == {
            t: sorted(c) for t, c in pg_columns.items()
        }, "both backends have the same columns"
        assert dump(b, columns) == dump(a, columns)
    finally:
        a.close()
        b.close()


async def test_a_fresh_writer_reads_its_first_groups_accounts_at_once(db: Backend) -> None:
    """A reopened ledger's first groups touch accounts it has not cached (a deposit's
    two at least: read in one statement on PostgreSQL) beside one it must create: each
    balance continues from its stored row, the new one starts at zero, and the audit
    passes."""
    users = [f"u{n}" for n in range(5)]
    async with open_ledger(db.target, sweep_interval_s=None) as ledger:
        for n, user in enumerate(users):
            await ledger.psp_deposit(f"first-{user}", user_id=user, amount=100 + n, **P)
    async with open_ledger(db.target, sweep_interval_s=None) as ledger:
        async with trio.open_nursery() as nursery:
            for user in [*users, "newcomer"]:
                nursery.start_soon(
                    partial(ledger.psp_deposit, f"second-{user}", user_id=user, amount=10, **P)
                )
        for n, user in enumerate(users):
            assert (await ledger.balance(user_id=user, **P)).posted == 100 + n + 10
        assert (await ledger.balance(user_id="newcomer", **P)).posted == 10
        assert (await ledger.audit()).ok


COLUMNS = ("id", "op", "environment", "debit", "credit", "amount", "kind", "hold", "ts")


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("op", 999_999),  # no such op
        ("hold", 999_999),  # no such hold
        ("debit", 999_999),  # no such account
        ("environment", "sandbox"),  # both accounts are production's
    ],
)
@pytest.mark.parametrize("how", ["insert", "copy"])
async def test_a_transfer_with_a_reference_that_does_not_hold_is_refused(
    column: str, value: object, how: str, pg: Backend
) -> None:
    """A transfer's references are checked by one trigger per statement (no row-level
    foreign key): an unknown op, hold or account, or an account of another environment,
    is refused as a foreign key violation, by COPY as by INSERT, and nothing is written;
    the same row with only a new id is accepted."""
    import psycopg

    async with open_ledger(pg.target, sweep_interval_s=None, clock=lambda: 7) as led:
        await workload(led)
    conn = psycopg.connect(pg.target, autocommit=True)
    names = ", ".join(COLUMNS)

    def write(row: tuple[object, ...]) -> None:
        if how == "insert":
            conn.execute(
                f"INSERT INTO transfers ({names}) VALUES ({', '.join(['%s'] * len(row))})", row
            )
        else:
            with conn.cursor() as cur, cur.copy(f"COPY transfers ({names}) FROM STDIN") as copy:
                copy.write_row(row)

    try:
        fks = conn.execute(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'transfers'::regclass "
            "AND contype = 'f'"
        ).fetchone()
        assert fks == (0,), "the trigger alone checks a transfer's references"
        before = conn.execute("SELECT count(*), sum(amount) FROM transfers").fetchone()
        good = conn.execute(
            f"SELECT {names} FROM transfers WHERE hold IS NOT NULL ORDER BY id LIMIT 1"
        ).fetchone()
        assert good is not None
        fresh = dict(zip(COLUMNS, good, strict=True)) | {"id": 1_000_000}
        with pytest.raises(psycopg.errors.ForeignKeyViolation), conn.transaction():
            write(tuple((fresh | {column: value}).values()))
        with conn.transaction():
            write(tuple(fresh.values()))
            assert conn.execute("SELECT count(*) FROM transfers").fetchone() == (before[0] + 1,)
            raise psycopg.Rollback()
        assert conn.execute("SELECT count(*), sum(amount) FROM transfers").fetchone() == before
    finally:
        conn.close()

"""``python -m bench ledger --growth``'s ledgers grown beside the measured one: a fresh
ledger started again every ``FRESH_SPAN`` ops, and (PostgreSQL) the floor without a key
index. Their shape and their resets, never their speed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import ledger as bench_ledger
from crashd.engine.ledger.store import Store


def test_the_fresh_ledger_beside_a_sqlite_growth_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_ledger, "FRESH_SPAN", 2_000)
    path = tmp_path / "growth.sqlite3"
    points = bench_ledger.growth(path, "FULL", 5_000, step=1_000, fresh=True)
    assert [n for n, _, _ in points] == [1_000, 2_000, 3_000, 4_000, 5_000]
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5 and all("ledger ÷ fresh" in line for line in lines)
    # The grown ledger holds every op; the fresh one is gone with the run.
    store = Store(path)
    try:
        assert store.conn.execute("SELECT count(*) FROM ops").fetchone()[0] == 5_000
    finally:
        store.close()
    assert not list(tmp_path.glob("growth.sqlite3.fresh*"))


def test_the_fresh_ledger_is_made_again_from_an_empty_file_at_its_span(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each time the fresh ledger reaches its span it is removed and made again, so it
    never holds more than ``FRESH_SPAN`` ops when a step is timed."""
    monkeypatch.setattr(bench_ledger, "FRESH_SPAN", 2_000)
    made: list[bool] = []
    real_store = bench_ledger.Store

    def noting(path: Path, sync: str) -> Store:
        if path.name.endswith(".fresh"):
            made.append(path.exists())
        return real_store(path, sync)  # type: ignore[arg-type]

    monkeypatch.setattr(bench_ledger, "Store", noting)
    bench_ledger.growth(tmp_path / "g.sqlite3", "FULL", 6_000, step=1_000, fresh=True)
    # At 0, 2,000 and 4,000 ops (not again after the last step), each from no file.
    assert made == [False, False, False]


def test_the_postgresql_growth_grows_a_fresh_ledger_and_the_floor_beside_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from support.postgres import server_url

    server, why = server_url()
    if server is None:
        pytest.skip(why)
    import psycopg

    def held(url: str) -> tuple[int, int]:
        """(ops, whether ops has its unique key index) of the database at ``url``."""
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT count(*) FROM ops").fetchone()
            keyed = conn.execute(
                "SELECT count(*) FROM pg_constraint WHERE conname = 'ops_key_hash_key'"
            ).fetchone()
            assert row is not None and keyed is not None
            return row[0], keyed[0]

    dropped: list[tuple[int, int]] = []
    drop = bench_ledger.drop_database

    def drop_and_count(server: str, url: str) -> None:
        dropped.append(held(url))
        drop(server, url)

    monkeypatch.setattr(bench_ledger, "FRESH_SPAN", 2_000)
    monkeypatch.setattr(bench_ledger, "drop_database", drop_and_count)
    with psycopg.connect(server, autocommit=True) as admin:
        before = {r[0] for r in admin.execute("SELECT datname FROM pg_database")}
    points = bench_ledger.pg_growth(server, "FULL", 4_000, step=1_000, floor=True, fresh=True)
    assert [n for n, _, _ in points] == [1_000, 2_000, 3_000, 4_000]
    lines = capsys.readouterr().out.splitlines()
    assert all("ledger ÷ fresh" in line and "ledger ÷ floor" in line for line in lines[:-1])
    with psycopg.connect(server, autocommit=True) as admin:
        made = {r[0] for r in admin.execute("SELECT datname FROM pg_database")} - before
        try:
            # The fresh ledger was made again at 2,000 ops and its first dropped; at the
            # end the fresh and the floor (every op, no unique key index) were dropped,
            # and only the grown ledger, which holds every op, is left, named.
            assert sorted(dropped) == [(2_000, 1), (2_000, 1), (4_000, 0)]
            [ledger] = made
            assert held(psycopg.conninfo.make_conninfo(server, dbname=ledger)) == (4_000, 1)
            assert lines[-1] == f"the grown ledger: database {ledger}"
        finally:
            for name in made:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_scale_out_states_the_fresh_span_the_bench_uses() -> None:
    from support.servers import REPO

    doc = (REPO / "docs" / "scale-out.md").read_text()
    stated = re.findall(r"started again from empty every ([\d,]+) ops", doc)
    assert stated, "docs/scale-out.md no longer states the fresh ledger's span"
    assert {int(n.replace(",", "")) for n in stated} == {bench_ledger.FRESH_SPAN}

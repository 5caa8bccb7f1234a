"""The correctness checks the benches make on their own runs (what ``--quick`` relies
on): they pass on good runs and catch bad ones."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench import fanout, ledger, tick
from crashd.engine.round.events import (
    BetAccepted,
    BetLost,
    CashedOut,
    Event,
    RoundSettled,
    Tick,
)


def _round(seq: int = 0) -> list[Event]:
    return [
        BetAccepted(seq + 1, 0, 1, "a", "u1", 100, None, False),
        BetAccepted(seq + 2, 0, 1, "b", "u2", 200, None, False),
        Tick(seq + 3, 10, 1, 50, 105),
        CashedOut(seq + 4, 20, 1, "a", "u1", 100, 150, 150, 100, "manual"),
        Tick(seq + 5, 30, 1, 100, 110),
        BetLost(seq + 6, 40, 1, "b", "u2", 200),
        RoundSettled(seq + 7, 40, 1, 2, 1, 300, 150),
    ]


def test_the_tick_checker_passes_a_consistent_round() -> None:
    checker = tick.Checker()
    checker(_round())
    assert checker.finish() == [] and checker.accepted == 2


def test_the_tick_checker_catches_a_bet_settled_twice() -> None:
    events = _round()
    events.insert(6, BetLost(100, 40, 1, "a", "u1", 100))
    checker = tick.Checker()
    checker(events[:6] + [BetLost(7, 40, 1, "a", "u1", 100)])
    assert any("settled twice" in p for p in checker.problems)


def test_the_tick_checker_catches_wrong_money_and_disorder() -> None:
    events = _round()
    events[3] = CashedOut(4, 20, 1, "a", "u1", 100, 150, 999, 100, "manual")
    events[6] = RoundSettled(7, 40, 1, 2, 1, 300, 150)
    checker = tick.Checker()
    checker(events)
    assert any("payout" in p for p in checker.problems)
    assert any("settled (300, 150)" in p for p in checker.problems)
    late = tick.Checker()
    late(_round()[:3] + [Tick(2, 5, 1, 5, 101)])
    assert any("seq" in p for p in late.problems)
    assert any("out of order" in p for p in late.problems)


def test_the_tick_checker_catches_a_bet_never_settled() -> None:
    checker = tick.Checker()
    checker(_round()[:2])
    assert any("never settled" in p for p in checker.finish())


def _point(**changes: object) -> fanout.Point:
    values: dict[str, object] = dict(
        server="crashd",
        rate=20.0,
        n=200,
        run=0,
        connected=200,
        received=8000,
        expected=8000,
        loss=0,
        delivered_per_s=4000,
        p50_ms=1.0,
        p99_ms=3.0,
        max_ms=4.0,
        cpu_us_per_msg=6.0,
        rss_mb=30.0,
        client_cpu_share=0.01,
        passed=True,
        note="",
        dups=0,
    )
    values.update(changes)
    return fanout.Point(**values)  # type: ignore[arg-type]


def _fanout_rows(points: list[fanout.Point]) -> dict[str, object]:
    args = argparse.Namespace(duration=2.0, runs=1)
    sustained = {(p.server, p.rate): p.n if p.passed else 0 for p in points}
    return {r.key: r for r in fanout.to_rows(points, sustained, [200], args)}


def test_fanout_checks_every_tick_arrived_once_in_order() -> None:
    rows = _fanout_rows([_point(), _point(server="websockets", cpu_us_per_msg=12.0)])
    crashd = rows["sustained/crashd/20"]
    assert all(crashd.checks.values()) and crashd.checks  # type: ignore[attr-defined]
    assert crashd.ratios == {"× websockets": 1.0}  # type: ignore[attr-defined]
    assert rows["sustained/websockets/20"].role == "peer"  # type: ignore[attr-defined]
    assert "point/crashd/20/200/0" in rows
    reordered = _fanout_rows([_point(dups=3, passed=False)])["sustained/crashd/20"]
    assert not all(reordered.checks.values())  # type: ignore[attr-defined]


def test_a_redelivered_deposit_posts_once(tmp_path: Path) -> None:
    assert ledger.redelivery_check(tmp_path / "l.sqlite3", "NORMAL") == []


def test_a_replayed_settle_settles_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "bulk.sqlite3"
    ledger.bulk_settle_rate(path, "NORMAL", 10)
    assert ledger.bulk_settle_check(path, "NORMAL", 10) == []


def test_a_ledger_run_counts_only_its_timed_part(tmp_path: Path) -> None:
    """``run_ledger`` times from the end of its warm-up (the players' accounts made,
    the first groups committed): every deposit it acknowledged is one transfer, the
    warm-up's included, and the figures are the timed part's alone."""
    import trio

    from crashd.engine.ledger.store import Store

    path = tmp_path / "l.sqlite3"
    run = trio.run(ledger.run_ledger, path, "NORMAL", True, 20, 0.2)
    assert run.transfers == len(run.ack_ms) > 0
    assert run.warm_transfers >= ledger.USERS
    assert run.groups == len(run.commit_ms) > 0
    store = Store(path, "NORMAL")
    try:
        assert store.audit().ok
        row = store.conn.execute("SELECT count(*) FROM transfers").fetchone()
        assert row is not None and row[0] == run.warm_transfers + run.transfers
        held = store.conn.execute("SELECT count(*) FROM accounts WHERE kind = 'player'")
        assert held.fetchone() == (ledger.USERS,)
    finally:
        store.close()


def test_the_recommended_postgresql_settings_are_the_benchs() -> None:
    """docs/scale-out.md's server settings are those the bench's cluster runs with."""
    from support.servers import REPO

    doc = (REPO / "docs" / "scale-out.md").read_text()
    block = doc.split("<!-- pg-settings:begin -->", 1)[1].split("<!-- pg-settings:end -->")[0]
    lines = [ln.strip() for ln in block.splitlines() if "=" in ln]
    documented = {ln.replace(" ", "") for ln in lines}
    assert documented == set(ledger.PG_SETTINGS)

"""The ledger through its async interface: group commit, idempotency, holds, rounds,
recovery, start-up checks, and the database-level guards (append-only history,
environments never mixing). Each test runs on both backends (``db``: a real SQLite file,
and a PostgreSQL database of its own, skipped with the reason where there is none);
those about SQLite's file and pragmas run on SQLite. No mocks."""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path

import pytest
import trio

from crashd.engine.ledger import open_ledger
from crashd.engine.ledger.model import (
    AlreadyReversed,
    AlreadySettled,
    BetInRound,
    EnvironmentNotAllowed,
    HoldExpired,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidMultiplier,
    InvalidRequest,
    LedgerClosed,
    LedgerCorrupt,
    RoundClosed,
    RoundOutOfOrder,
    RoundStillOpen,
    UnknownHold,
)
from crashd.engine.ledger.writer import Ledger
from support.postgres import Backend

HASH = "f" * 64
P = dict(environment="production", partner_id="acme")
S = dict(environment="sandbox", partner_id="acme")


class Clock:
    """Injectable wall clock (ms) so hold expiry is tested without sleeping."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000

    def __call__(self) -> int:
        return self.now


def opener(db: Backend | Path, clock: Clock | None = None, **kw: object):  # type: ignore[no-untyped-def]
    target = db.target if isinstance(db, Backend) else db / "ledger.sqlite3"
    return open_ledger(target, clock=clock or Clock(), sweep_interval_s=None, **kw)  # type: ignore[arg-type]


async def available(ledger: Ledger, user: str, env: dict[str, str] = P) -> int:
    return (await ledger.balance(user_id=user, **env)).available


async def bet(
    ledger: Ledger,
    user: str,
    n: str,
    stake: int,
    round_id: int | None,
    auto: int | None = None,
    env: dict[str, str] = P,
) -> str:
    await ledger.bet_reserve(
        f"res-{n}", user_id=user, hold_id=f"h-{n}", amount=stake, ttl_ms=10_000, **env
    )
    await ledger.bet_confirm(
        f"conf-{n}",
        user_id=user,
        hold_id=f"h-{n}",
        ticket_id=f"t-{n}",
        auto_cashout=auto,
        round_id=round_id,
        **env,
    )
    return f"t-{n}"


async def test_group_commit_answers_each_caller_after_one_shared_commit(db: Backend) -> None:
    async with opener(db) as ledger:
        await ledger.psp_deposit("d0", user_id="alice", amount=1000, **P)
        groups_before = ledger.statistics().groups
        results: dict[int, object] = {}

        async def reserve(i: int) -> None:
            try:
                results[i] = await ledger.bet_reserve(
                    f"r{i}", user_id="alice", hold_id=f"h{i}", amount=100, ttl_ms=5000, **P
                )
            except InsufficientFunds as err:
                results[i] = err

        # 25 concurrent reserves of 100 against a balance of 1000: exactly 10 fit, and
        # the 15 refusals do not fail the others committed in the same group.
        async with trio.open_nursery() as nursery:
            for i in range(25):
                nursery.start_soon(reserve, i)
        ok = [r for r in results.values() if not isinstance(r, InsufficientFunds)]
        assert len(ok) == 10
        assert all(isinstance(r, InsufficientFunds) for r in results.values() if r not in ok)
        stats = ledger.statistics()
        assert stats.groups - groups_before < 25, "ops queued together share commits"
        assert stats.largest_group > 1
        assert await available(ledger, "alice") == 0


async def test_idempotency_replay_conflict_and_failure_stays_failed(db: Backend) -> None:
    async with opener(db) as ledger:
        first = await ledger.psp_deposit("evt-1", user_id="bob", amount=500, **P)
        again = await ledger.psp_deposit("evt-1", user_id="bob", amount=500, **P)
        assert again == first and again.replayed and not first.replayed
        assert await available(ledger, "bob") == 500, "a replay moves nothing"
        with pytest.raises(IdempotencyConflict):
            await ledger.psp_deposit("evt-1", user_id="bob", amount=501, **P)
        with pytest.raises(IdempotencyConflict):
            # Same id, different operation.
            await ledger.faucet_credit(
                "psp:production:evt-1", user_id="bob", amount=1, partner_id="acme"
            )
        with pytest.raises(InsufficientFunds) as refused:
            await ledger.psp_withdrawal("wd-1", user_id="bob", amount=800, **P)
        await ledger.psp_deposit("evt-2", user_id="bob", amount=500, **P)
        # Now there would be enough, but an id that failed stays failed.
        with pytest.raises(InsufficientFunds) as again_refused:
            await ledger.psp_withdrawal("wd-1", user_id="bob", amount=800, **P)
        assert again_refused.value == refused.value and again_refused.value.replayed
        assert await available(ledger, "bob") == 1000


async def test_invalid_request_is_not_recorded(db: Backend) -> None:
    async with opener(db) as ledger:
        with pytest.raises(InvalidRequest):
            await ledger.psp_deposit("evt-x", user_id="bob", amount=-5, **P)
        with pytest.raises(InvalidRequest):
            await ledger.psp_deposit(
                "evt-x", user_id="bob", amount=5, environment="staging", partner_id="acme"
            )
        with pytest.raises(InvalidRequest):
            await ledger.settle_win("w", ticket_id="t", multiplier=99)
        # Text SQLite cannot store (a lone surrogate) is refused up front: queued, it
        # would fail its whole commit group and stop the ledger.
        with pytest.raises(InvalidRequest, match="surrogate"):
            await ledger.psp_deposit("evt-\ud800", user_id="bob", amount=5, **P)
        with pytest.raises(InvalidRequest, match="user_id"):
            await ledger.psp_deposit("evt-y", user_id="b\udfffb", amount=5, **P)
        with pytest.raises(InvalidRequest, match="ticket_id"):
            await ledger.settle_loss("l", ticket_id="t\ud83d")
        # Non-ASCII text that is valid Unicode is fine.
        assert (await ledger.psp_deposit("evt-é", user_id="zoë", amount=1, **P)).amount == 1
        # The id was never bound, so the corrected request goes through.
        assert (await ledger.psp_deposit("evt-x", user_id="bob", amount=5, **P)).amount == 5


async def test_withdrawal_reversal_credits_back_once(db: Backend) -> None:
    async with opener(db) as ledger:
        await ledger.psp_deposit("d", user_id="c", amount=300, **P)
        await ledger.psp_withdrawal("w", user_id="c", amount=200, **P)
        assert await available(ledger, "c") == 100
        back = await ledger.psp_withdrawal_reversal(
            "rev1", environment="production", withdrawal_id="w"
        )
        assert (back.amount, back.balance) == (200, 300)
        with pytest.raises(AlreadyReversed):
            await ledger.psp_withdrawal_reversal(
                "rev2", environment="production", withdrawal_id="w"
            )
        audit = await ledger.audit()
        assert audit.ok and audit.psp_net["production"] == 300


async def test_environments_never_mix(db: Backend) -> None:
    async with opener(db) as ledger:
        await ledger.faucet_credit("f1", user_id="dana", amount=1000, partner_id="acme")
        await ledger.psp_deposit("d1", user_id="erin", amount=5, **P)
        assert await available(ledger, "dana", S) == 1000
        assert await available(ledger, "dana", P) == 0
        with pytest.raises(EnvironmentNotAllowed):
            await ledger.faucet_credit(
                "f2", user_id="dana", amount=1000, partner_id="acme", environment="production"
            )
        with pytest.raises(InsufficientFunds):
            await ledger.bet_reserve("r", user_id="dana", hold_id="h", amount=1, ttl_ms=1000, **P)
        # A sandbox hold cannot be confirmed as a production bet.
        await ledger.bet_reserve("r2", user_id="dana", hold_id="h2", amount=10, ttl_ms=1000, **S)
        with pytest.raises(UnknownHold):
            await ledger.bet_confirm("c2", user_id="dana", hold_id="h2", ticket_id="t", **P)
    # And the database itself refuses a cross-environment transfer.
    conn = db.connect()
    if not db.postgres:
        conn.execute("PRAGMA foreign_keys=ON")
    ids = dict(
        conn.execute(
            "SELECT environment || ':' || kind, id FROM accounts WHERE kind != 'player'"
        ).fetchall()
    )
    sandbox_player = conn.execute(
        "SELECT id FROM accounts WHERE kind='player' AND environment='sandbox'"
    ).fetchone()[0]
    op = conn.execute("SELECT max(id) FROM ops").fetchone()[0]
    with pytest.raises(db.integrity_error, match="(?i)foreign key"):
        conn.execute(
            "INSERT INTO transfers (id, op, environment, debit, credit, amount, kind, ts) "
            "VALUES ((SELECT max(id) + 1 FROM transfers), ?, 'sandbox', ?, ?, 5, 'deposit', 0)",
            (op, ids["production:psp"], sandbox_player),
        )
    conn.close()


async def test_history_is_append_only(db: Backend) -> None:
    clock = Clock()
    async with opener(db, clock) as ledger:
        await ledger.psp_deposit("d", user_id="e", amount=1000, **P)
        await ledger.round_start("s1", round_id=1)
        ticket = await bet(ledger, "e", "1", 100, 1)
        await ledger.settle_win("w", ticket_id=ticket, multiplier=200)
        await ledger.round_settle("x", round_id=1, crash_point=300, game_hash=HASH)
        await ledger.audit_record("a", environment="production", actor="k1", action="paused")
    conn = db.connect()
    forbidden = [
        "UPDATE audit_log SET note = 'nothing happened'",
        "DELETE FROM audit_log",
        "UPDATE transfers SET amount = amount + 1",
        "DELETE FROM transfers",
        "UPDATE ops SET ok = 0",
        "DELETE FROM ops",
        "UPDATE holds SET state = 'voided'",  # posted → voided: resolved twice
        "UPDATE holds SET amount = 1",
        "DELETE FROM holds",
        "UPDATE bets SET outcome = 'refunded', payout = stake",  # settled twice
        "UPDATE bets SET round_id = 2",
        "UPDATE bets SET stake = 1",
        "DELETE FROM bets",
        "UPDATE rounds SET state = 'open', ended_op = NULL",
        "UPDATE rounds SET crash_point = 1000",
        "DELETE FROM rounds",
        "DELETE FROM accounts",
        "UPDATE accounts SET user_id = 'mallory' WHERE kind = 'player'",
        "UPDATE accounts SET posted = -1 WHERE kind = 'player'",  # CHECK: never below zero
    ]
    if db.postgres:  # TRUNCATE skips row triggers: refused by statement triggers
        forbidden += [f"TRUNCATE {t} CASCADE" for t in ("transfers", "ops", "holds", "bets")]
        forbidden += ["TRUNCATE rounds CASCADE", "TRUNCATE accounts CASCADE"]
        forbidden += ["TRUNCATE audit_log"]
    for sql in forbidden:
        with pytest.raises(db.database_error):
            conn.execute(sql)
        conn.rollback()
    conn.close()


async def test_bankroll_moves_and_the_audit_log(db: Backend) -> None:
    """Schema version 5 on both backends: the capital account, the bankroll transfer
    kinds, and the operator's audit log written in the op's transaction, read back
    newest first, counted by the audit."""
    async with opener(db) as ledger:
        moved = await ledger.bankroll_move(
            "b1", environment="production", direction="deposit", amount=1000, actor="k1"
        )
        assert moved.house == 1000
        moved = await ledger.bankroll_move(
            "b2", environment="production", direction="withdrawal", amount=300, actor="k1"
        )
        assert moved.house == 700
        with pytest.raises(InsufficientFunds):
            await ledger.bankroll_move(
                "b3", environment="production", direction="withdrawal", amount=701, actor="k1"
            )
        await ledger.audit_record(
            "a1", environment="production", actor="k2", action="paused", after='{"p":1}'
        )
        assert await ledger.system_posted("production", "house") == 700
        entries = await ledger.audit_entries("production")
        assert [(e.action, e.actor) for e in entries] == [
            ("paused", "k2"),
            ("bankroll_withdrawal", "k1"),
            ("bankroll_deposit", "k1"),
        ]
        assert entries[0].after == '{"p":1}'
        only = await ledger.audit_entries("production", actions=["paused"], before=entries[0].seq)
        assert only == []
        assert await ledger.audit_entries("sandbox") == []
        recent = await ledger.recent_ops(["bankroll_move"])
        assert [(r[1], r[3], r[4]) for r in recent] == [
            ("b3", False, "insufficient_funds"),
            ("b2", True, None),
            ("b1", True, None),
        ]
        report = await ledger.audit()
        assert report.ok, report.problems
        assert report.capital_total["production"] == 700
    conn = db.connect()
    try:
        kinds = conn.execute("SELECT kind FROM transfers ORDER BY id").fetchall()
        assert [k[0] for k in kinds] == ["bankroll_deposit", "bankroll_withdrawal"]
        with pytest.raises(db.integrity_error):
            conn.execute(
                "INSERT INTO transfers VALUES (99, 1, 'production', 1, 2, 5, 'gift', NULL, 0)"
            )
    finally:
        conn.close()


async def test_account_identity_trigger_and_its_migration(tmp_path: Path) -> None:
    """The identity trigger fires on UPDATE OF the identity columns (balance updates do
    not run it), refuses a change even alongside a balance change, and a file made
    with the first version's trigger (on every UPDATE) gets the new one on open."""
    async with opener(tmp_path) as ledger:
        await ledger.psp_deposit("d", user_id="i", amount=10, **P)
    conn = sqlite3.connect(tmp_path / "ledger.sqlite3")
    conn.execute("DROP TRIGGER accounts_identity_columns")
    conn.execute(
        "CREATE TRIGGER accounts_identity BEFORE UPDATE ON accounts "
        "WHEN NEW.user_id IS NOT OLD.user_id "
        "BEGIN SELECT RAISE(ABORT, 'account identity is immutable'); END"
    )
    conn.commit()
    conn.close()
    async with opener(tmp_path) as ledger:
        await ledger.psp_deposit("d2", user_id="i", amount=5, **P)
        assert await available(ledger, "i") == 15
    conn = sqlite3.connect(tmp_path / "ledger.sqlite3")
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='trigger'")}
    assert "accounts_identity_columns" in names and "accounts_identity" not in names
    for sql in (
        "UPDATE accounts SET posted = posted, user_id = 'mallory' WHERE kind = 'player'",
        "UPDATE accounts SET environment = 'sandbox' WHERE kind = 'psp'",
        "UPDATE accounts SET kind = 'house', partner_id = '', user_id = '' WHERE kind = 'player'",
        "UPDATE accounts SET id = id + 1000",
    ):
        with pytest.raises(sqlite3.DatabaseError):
            conn.execute(sql)
        conn.rollback()
    conn.execute("UPDATE accounts SET user_id = user_id")  # names it, changes nothing: allowed
    conn.rollback()
    conn.close()


async def test_cancelled_caller_leaves_its_group_intact(db: Backend) -> None:
    """A caller cancelled while its op waits for the commit: the op may still commit
    (a retry with the same id answers it), and the other callers of the group are
    answered as usual."""
    async with opener(db) as ledger:
        results: list[object] = []

        async def deposit(n: int) -> None:
            results.append(await ledger.psp_deposit(f"c{n}", user_id="k", amount=1, **P))

        async with trio.open_nursery() as nursery:
            with trio.CancelScope() as scope:
                nursery.start_soon(deposit, 0)
                nursery.start_soon(deposit, 1)
                await trio.lowlevel.checkpoint()
                cancelled = trio.CancelScope()

                async def cancelled_caller() -> None:
                    with cancelled:
                        await ledger.psp_deposit("c-cancelled", user_id="k", amount=1, **P)

                nursery.start_soon(cancelled_caller)
                await trio.lowlevel.checkpoint()
                cancelled.cancel()
            assert not scope.cancelled_caught
        assert len(results) == 2
        replay = await ledger.psp_deposit("c-cancelled", user_id="k", amount=1, **P)
        assert replay.amount == 1
        assert await available(ledger, "k") == 3


async def test_hold_expiry_void_and_sweep(db: Backend) -> None:
    clock = Clock()
    async with opener(db, clock) as ledger:
        await ledger.psp_deposit("d", user_id="f", amount=100, **P)
        await ledger.bet_reserve("r1", user_id="f", hold_id="h1", amount=60, ttl_ms=1000, **P)
        await ledger.bet_reserve("r2", user_id="f", hold_id="h2", amount=40, ttl_ms=5000, **P)
        assert await available(ledger, "f") == 0
        with pytest.raises(InsufficientFunds):
            await ledger.bet_reserve("r3", user_id="f", hold_id="h3", amount=1, ttl_ms=1000, **P)
        clock.now += 1000  # h1 expires exactly now
        # Reads already discount the expired hold; the sweep then releases it.
        assert await available(ledger, "f") == 60
        swept = await ledger.release_expired_holds()
        assert (swept.released, swept.amount) == (1, 60)
        with pytest.raises(HoldExpired):
            await ledger.bet_confirm("c1", user_id="f", hold_id="h1", ticket_id="t1", **P)
        voided = await ledger.hold_void("v2", user_id="f", hold_id="h2", **P)
        assert voided.amount == 40
        assert await available(ledger, "f") == 100
        # The op touching the account releases its expired holds itself, no sweep needed.
        await ledger.bet_reserve("r4", user_id="f", hold_id="h4", amount=100, ttl_ms=10, **P)
        clock.now += 10
        r5 = await ledger.bet_reserve("r5", user_id="f", hold_id="h5", amount=100, ttl_ms=10, **P)
        assert r5.available == 0
        assert (await ledger.audit()).ok


async def test_round_life_cycle_payouts_and_reads(db: Backend) -> None:
    async with opener(db) as ledger:
        await ledger.psp_deposit("d", user_id="g", amount=10_000, **P)
        await ledger.psp_deposit("d2", user_id="h", amount=10_000, **P)
        # A bet for "the next round" joins the round when it starts.
        early = await bet(ledger, "g", "early", 100, None, auto=200)
        started = await ledger.round_start("s1", round_id=1)
        assert started.bets_joined == 1
        with pytest.raises(RoundStillOpen):
            await ledger.round_start("s2", round_id=2)
        manual = await bet(ledger, "g", "manual", 333, 1)
        loser = await bet(ledger, "h", "loser", 500, 1, auto=500)
        with pytest.raises(BetInRound):
            await ledger.bet_refund("ref", ticket_id=manual)
        cashout = await ledger.settle_win("cash", ticket_id=manual, multiplier=150)
        assert cashout.payout == 499  # 333 * 150 // 100, floored
        with pytest.raises(AlreadySettled):
            await ledger.settle_win("cash2", ticket_id=manual, multiplier=160)
        with pytest.raises(InvalidMultiplier):
            await ledger.round_settle(
                "x", round_id=1, crash_point=300, game_hash=HASH, wins=((early, 400),)
            )
        settled = await ledger.round_settle(
            "x2", round_id=1, crash_point=300, game_hash=HASH, wins=((early, 200),)
        )
        assert (settled.won, settled.lost, settled.paid, settled.collected) == (1, 1, 200, 500)
        with pytest.raises(RoundClosed):
            await bet(ledger, "h", "late", 10, 1)
        with pytest.raises(RoundOutOfOrder):
            await ledger.round_start("s0", round_id=1)
        await ledger.round_start("s3", round_id=3)  # game numbers may skip, never go back
        await ledger.round_void(
            "v3", round_id=3, reason="operator", crash_point=250, game_hash="a" * 64
        )
        # The burnt game is kept with the round; replaying the void changes nothing.
        view = await ledger.round(3)
        assert view is not None and (view.crash_point, view.game_hash) == (250, "a" * 64)
        again = await ledger.round_void(
            "v3", round_id=3, reason="operator", crash_point=250, game_hash="a" * 64
        )
        assert again.replayed
        with pytest.raises(IdempotencyConflict):
            await ledger.round_void("v3", round_id=3, reason="operator")
        with pytest.raises(InvalidRequest, match="together"):
            await ledger.round_void("v4", round_id=3, reason="operator", crash_point=250)
        assert await available(ledger, "g") == 10_000 - 100 - 333 + 499 + 200
        assert await available(ledger, "h") == 10_000 - 500 - 10  # the late hold is pending
        rounds = await ledger.finished_rounds(limit=1)
        assert [r.round_id for r in rounds] == [3] and rounds[0].state == "voided"
        older = await ledger.finished_rounds(limit=5, before=rounds[0].round_id)
        assert [(r.round_id, r.crash_point, r.game_hash) for r in older] == [(1, 300, HASH)]
        view = await ledger.bet(loser)
        assert view is not None and (view.outcome, view.payout, view.round_id) == ("lost", 0, 1)
        page1 = await ledger.user_bets(user_id="g", limit=1, **P)
        page2 = await ledger.user_bets(user_id="g", limit=5, before=page1[0].seq, **P)
        assert [b.ticket_id for b in page1 + page2] == [manual, early]
        audit = await ledger.audit()
        assert audit.ok and audit.total == 0


async def test_recovery_voids_interrupted_rounds_exactly_once(db: Backend) -> None:
    async with opener(db) as ledger:
        await ledger.psp_deposit("d", user_id="i", amount=5000, **P)
        await ledger.faucet_credit("f", user_id="j", amount=5000, partner_id="acme")
        await ledger.round_start("s1", round_id=7)
        kept = await bet(ledger, "i", "kept", 1000, 7)
        await bet(ledger, "i", "open", 400, 7)
        await bet(ledger, "j", "sand", 300, 7, env=S)
        await ledger.settle_win("cash", ticket_id=kept, multiplier=250)  # acknowledged cashout
        await ledger.round_crash("crash7", round_id=7, crash_point=300, game_hash=HASH)
        await ledger.round_start("s8", round_id=8)
        await bet(ledger, "i", "r8", 100, 8)
        await bet(ledger, "i", "next", 50, None)  # waiting for round 9
        # The process "dies" here: nothing else settles rounds 7 (crashed, unsettled) and 8.
    burnt = {7: (999, "c" * 64), 8: (333, "b" * 64)}
    async with opener(db, reveal=burnt.get) as ledger:
        rec = ledger.recovery
        assert rec is not None
        assert (rec.rounds_voided, rec.bets_refunded, rec.refunded_amount) == (2, 4, 850)
        assert rec.highest_round_id == 8
        assert await available(ledger, "i") == 5000 - 1000 + 2500
        assert await available(ledger, "j", S) == 5000
        view = await ledger.bet(kept)
        assert view is not None and (view.outcome, view.payout) == ("won", 2500)
        assert [(r.round_id, r.state) for r in await ledger.finished_rounds()] == [
            (8, "voided"),
            (7, "voided"),
        ]
        # The open round keeps its burnt game; the crashed one keeps what it crashed with.
        r8, r7 = await ledger.round(8), await ledger.round(7)
        assert r8 is not None and (r8.crash_point, r8.game_hash, r8.void_reason) == (
            333,
            "b" * 64,
            "recovery",
        )
        assert r7 is not None and (r7.crash_point, r7.game_hash) == (300, HASH)
        assert (await ledger.audit()).ok
    async with opener(db) as ledger:
        rec = ledger.recovery
        assert rec is not None
        assert (rec.rounds_voided, rec.bets_refunded, rec.refunded_amount) == (0, 0, 0)
        assert rec.highest_round_id == 8
        await ledger.round_start("s9", round_id=rec.highest_round_id + 1)


async def test_start_up_checks(tmp_path: Path) -> None:
    async with opener(tmp_path, synchronous="NORMAL") as ledger:
        await ledger.psp_deposit("d", user_id="k", amount=10, **P)
        assert ledger._store.conn.execute("PRAGMA synchronous").fetchone()[0] == 1
        assert ledger._store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert ledger._store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    # A balance edited behind the ledger's back is caught by the audit on open.
    conn = sqlite3.connect(tmp_path / "ledger.sqlite3")
    conn.execute("UPDATE accounts SET posted = posted + 1 WHERE kind = 'player'")
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorrupt):
        async with opener(tmp_path):
            pass
    # A file that is not a database at all is refused before anything is written.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ledger.sqlite3").write_bytes(b"not a database" * 512)
    with pytest.raises(sqlite3.DatabaseError):
        async with opener(bad):
            pass


async def test_close_drains_queued_ops(db: Backend) -> None:
    results = []
    async with opener(db) as ledger:

        async def deposit(i: int) -> None:
            results.append(await ledger.psp_deposit(f"e{i}", user_id="l", amount=1, **P))

        async with trio.open_nursery() as nursery:
            for i in range(50):
                nursery.start_soon(functools.partial(deposit, i))
    assert len(results) == 50
    async with opener(db) as ledger:
        assert await available(ledger, "l") == 50


async def test_callers_outside_the_ledger_scope_never_hang(db: Backend) -> None:
    """If the ledger is torn down (cancelled) while ops wait in its queue, their
    callers, living in another nursery, get ledger_unavailable instead of hanging."""
    outcomes: list[str] = []
    async with trio.open_nursery() as callers:
        with trio.CancelScope() as scope:
            async with opener(db) as ledger:

                async def deposit(i: int) -> None:
                    try:
                        await ledger.psp_deposit(f"e{i}", user_id="m", amount=1, **P)
                        outcomes.append("committed")
                    except LedgerClosed:
                        outcomes.append("unavailable")

                for i in range(200):
                    callers.start_soon(deposit, i)
                await trio.sleep(0)
                scope.cancel()
                await trio.sleep_forever()
    assert len(outcomes) == 200
    async with opener(db) as ledger:
        assert await available(ledger, "m") == outcomes.count("committed")

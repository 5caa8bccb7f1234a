"""The seamless wallet's ledger ops (crashd.engine.ledger.walletops) on a real store,
SQLite and PostgreSQL (skipped with the reason where there is none): each bet's life cycle, exactly-once closing, recovery, the operator's
resolution, and a Hypothesis state machine that checks, after every step, the audit
(double entry, the partner's wallet account against its transactions, every seamless
player's balance covering what the outbox owes) and the two-book conservation:
the wallet's money + crashd's (players' owed balances, escrow, house) = constant."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from crashd.engine.ledger.model import LedgerError, Result
from crashd.engine.ledger.ops import Recover, RoundSettle, RoundStart, RoundVoid, SettleWin
from crashd.engine.ledger.store import Store
from crashd.engine.ledger.wallet import (
    CANCELLED,
    FAILED,
    OK,
    PENDING,
    REFUSED,
    RESOLVED,
    WalletAttempted,
    WalletBetPlaced,
    WalletCall,
    WalletTxOpened,
    WalletTxsQueued,
)
from crashd.engine.ledger.walletops import (
    WalletAttempt,
    WalletBetPlace,
    WalletCallsLog,
    WalletClose,
    WalletDebitClose,
    WalletDebitOpen,
    WalletRecover,
    WalletResolve,
)
from crashd.engine.wallet.contract import credit_id, debit_id, rollback_id
from support.postgres import Backend, fresh_database, server_url, writer_store

ENV = "sandbox"
PARTNER = "acme"
HASH = "ab" * 32
FAR = 10**12


def call(kind: str, tx: str | None = None, outcome: str = "ok") -> WalletCall:
    return WalletCall(0, ENV, PARTNER, kind, "req", "{}", outcome, 1, tx_id=tx, user_id="u")


@pytest.fixture
def store(db: Backend) -> Iterator[Store]:
    with writer_store(db) as s:
        yield s


def one(store: Store, op: object, now: int = 1) -> Result:
    [answer] = store.apply_group([op], now)  # type: ignore[list-item]
    if isinstance(answer, LedgerError):
        raise answer
    report = store.audit()
    assert report.ok, report.problems
    return answer


def place(store: Store, ticket: str, user: str = "u", stake: int = 100, round_id: int = 1) -> None:
    tx = debit_id(ticket)
    opened = one(
        store,
        WalletDebitOpen(f"{ticket}:d", ENV, PARTNER, user, tx, ticket, round_id, stake, "EUR"),
    )
    assert isinstance(opened, WalletTxOpened) and opened.state == PENDING
    placed = one(
        store,
        WalletBetPlace(
            f"{ticket}:b",
            ENV,
            PARTNER,
            user,
            tx,
            "h" + ticket,
            ticket,
            stake,
            None,
            round_id,
            "w1",
            900,
            call("debit", tx),
        ),
    )
    assert isinstance(placed, WalletBetPlaced) and placed.stake == stake


def tx_row(store: Store, tx_id: str) -> tuple[str, int]:
    row = store.conn.execute(
        "SELECT state, attempts FROM wallet_txs WHERE tx_id = ?", (tx_id,)
    ).fetchone()
    return row[0], row[1]


def balance(store: Store, kind: str, user: str = "") -> int:
    row = store.conn.execute(
        "SELECT posted FROM accounts WHERE kind = ? AND user_id = ?", (kind, user)
    ).fetchone()
    return 0 if row is None else int(row[0])


def test_a_won_bet_is_owed_then_credited(store: Store) -> None:
    one(store, RoundStart("r1", 1))
    place(store, "t1", stake=100)
    assert balance(store, "wallet") == -100 and balance(store, "escrow") == 100
    one(store, SettleWin("w", "t1", 250))
    assert balance(store, "player", "u") == 250  # owed to the wallet
    queued = one(store, WalletClose("c", FAR, ("t1",)))
    assert isinstance(queued, WalletTxsQueued) and (queued.credits, queued.rollbacks) == (1, 0)
    again = one(store, WalletClose("c2", FAR, ("t1",), round_id=1))
    assert isinstance(again, WalletTxsQueued) and (again.credits, again.rollbacks) == (0, 0)
    credit = credit_id(debit_id("t1"))
    one(
        store,
        WalletAttempt(
            "a1", credit, 1, "retry", "timeout", 5, call=call("credit", credit, "unknown")
        ),
    )
    assert tx_row(store, credit) == (PENDING, 1)
    # The same attempt number again is refused (recorded at most once), nothing moves.
    with pytest.raises(LedgerError, match="after 1 attempts"):
        one(store, WalletAttempt("a1b", credit, 1, "ok", call=call("credit", credit)))
    done = one(store, WalletAttempt("a2", credit, 2, "ok", call=call("credit", credit)))
    assert isinstance(done, WalletAttempted) and done.state == OK
    assert balance(store, "player", "u") == 0 and balance(store, "wallet") == 150
    calls = store.conn.execute("SELECT count(*) FROM wallet_calls").fetchone()[0]
    # The debit, the three credit calls (the one whose record was refused was still made).
    assert calls == 4


def test_a_lost_bet_is_credited_zero_and_a_void_rolled_back(store: Store) -> None:
    one(store, RoundStart("r1", 1))
    place(store, "t1")
    place(store, "t2", user="v")
    one(store, RoundSettle("s", 1, 150, HASH))
    queued = one(store, WalletClose("c", FAR, round_id=1))
    assert isinstance(queued, WalletTxsQueued) and queued.credits == 2
    amounts = store.conn.execute(
        "SELECT amount, multiplier FROM wallet_txs WHERE kind = 'credit'"
    ).fetchall()
    assert amounts == [(0, None), (0, None)]
    one(store, RoundStart("r2", 2))
    place(store, "t3", round_id=2)
    one(store, RoundVoid("v", 2, "operator", 150, HASH))
    assert balance(store, "player", "u") == 100  # the refunded stake, owed back
    queued = one(store, WalletClose("c3", FAR, round_id=2))
    assert isinstance(queued, WalletTxsQueued) and queued.rollbacks == 1
    rb = rollback_id(debit_id("t3"))
    one(store, WalletAttempt("a", rb, 1, "ok", call=call("rollback", rb)))
    assert balance(store, "player", "u") == 0


def test_a_debit_that_will_not_play(store: Store) -> None:
    one(store, RoundStart("r1", 1))
    refused, cancelled = debit_id("t1"), debit_id("t2")
    one(store, WalletDebitOpen("o1", ENV, PARTNER, "u", refused, "t1", 1, 100, "EUR"))
    one(store, WalletDebitOpen("o2", ENV, PARTNER, "u", cancelled, "t2", 1, 100, "EUR"))
    one(
        store,
        WalletDebitClose(
            "x1",
            refused,
            REFUSED,
            "insufficient_funds",
            FAR,
            5,
            "insufficient_funds",
            "",
            call("debit", refused, "refused"),
        ),
    )
    one(
        store,
        WalletDebitClose(
            "x2",
            cancelled,
            CANCELLED,
            "wallet_timeout",
            FAR,
            call=call("debit", cancelled, "unknown"),
        ),
    )
    assert tx_row(store, refused) == (REFUSED, 1)
    assert store.conn.execute(
        "SELECT count(*) FROM wallet_txs WHERE kind='rollback'"
    ).fetchone() == (1,)
    rb = rollback_id(cancelled)
    one(store, WalletAttempt("a", rb, 1, "ok", call=call("rollback", rb)))
    assert balance(store, "wallet") == 0 and balance(store, "player", "u") == 0
    # A bet cannot be placed on a cancelled debit.
    with pytest.raises(LedgerError, match="already cancelled"):
        one(
            store,
            WalletBetPlace("b", ENV, PARTNER, "u", cancelled, "h2", "t2", 100, None, 1, None, None),
        )


def test_recovery_closes_what_a_crash_left(store: Store) -> None:
    one(store, RoundStart("r1", 1))
    place(store, "won")
    place(store, "open", user="v")
    one(store, WalletDebitOpen("o", ENV, PARTNER, "w", debit_id("cut"), "cut", 1, 70, "EUR"))
    one(store, SettleWin("win", "won", 300))  # cashed out; its credit not queued yet
    one(store, Recover("recover"))  # the ledger's: voids round 1, refunds "open"
    queued = one(store, WalletRecover("wr", FAR))
    assert isinstance(queued, WalletTxsQueued)
    assert (queued.credits, queued.rollbacks, queued.cancelled) == (1, 2, 1)
    again = one(store, WalletRecover("wr2", FAR))
    assert isinstance(again, WalletTxsQueued) and (again.credits, again.rollbacks) == (0, 0)
    assert tx_row(store, debit_id("cut")) == (CANCELLED, 0)


def test_the_operator_resolves_a_parked_transaction(store: Store, db: Backend) -> None:
    one(store, RoundStart("r1", 1))
    place(store, "t1")
    one(store, SettleWin("w", "t1", 200))
    one(store, WalletClose("c", FAR, ("t1",)))
    credit = credit_id(debit_id("t1"))
    one(
        store,
        WalletAttempt(
            "a1", credit, 1, "failed", "http_503", call=call("credit", credit, "unknown")
        ),
    )
    assert tx_row(store, credit) == (FAILED, 1)
    with pytest.raises(LedgerError, match="no such"):
        one(store, WalletResolve("x", credit, "other-partner", "retry", "", FAR))
    one(store, WalletResolve("r", credit, PARTNER, "retry", "wallet back", FAR))
    assert tx_row(store, credit) == (PENDING, 1)
    one(
        store,
        WalletAttempt(
            "a2", credit, 2, "failed", "tx_conflict", call=call("credit", credit, "refused")
        ),
    )
    one(store, WalletResolve("s", credit, PARTNER, "settle", "paid by hand", FAR))
    assert tx_row(store, credit) == (RESOLVED, 2)
    assert balance(store, "player", "u") == 0
    with pytest.raises(LedgerError, match="only a failed"):
        one(store, WalletResolve("s2", credit, PARTNER, "settle", "", FAR))
    # History cannot be rewritten behind the ledger's back.
    with pytest.raises(db.integrity_error, match="only moves forward"):
        store.conn.execute("UPDATE wallet_txs SET state = 'pending' WHERE tx_id = ?", (credit,))
    with pytest.raises(db.integrity_error, match="never deleted"):
        store.conn.execute("DELETE FROM wallet_txs")
    if db.postgres:  # TRUNCATE skips row triggers: refused by a statement trigger
        with pytest.raises(db.integrity_error, match="never deleted"):
            store.conn.execute("TRUNCATE wallet_txs CASCADE")
        with pytest.raises(db.integrity_error, match="append-only"):
            store.conn.execute("TRUNCATE wallet_calls")
        with pytest.raises(db.integrity_error, match="append-only"):
            store.conn.execute("UPDATE wallet_calls SET code = 'x'")
    with pytest.raises(db.integrity_error):
        store.conn.execute(
            "INSERT INTO wallet_txs (tx_id, kind, environment, partner_id, user_id, currency, "
            "ticket_id, ref_tx_id, amount, state, attempts, created_op, created_at, updated_at) "
            "VALUES ('rbk_x', 'rollback', 'sandbox', 'acme', 'u', 'EUR', 't1', ?, 100, 'pending', "
            "0, 1, 0, 0)",
            (debit_id("t1"),),
        )  # a second closing of the same debit


def test_the_call_log_keeps_reads_too(store: Store) -> None:
    one(store, WalletCallsLog("l", (call("balance"), call("session.verify"))))
    assert store.conn.execute("SELECT call FROM wallet_calls ORDER BY id").fetchall() == [
        ("balance",),
        ("session.verify",),
    ]


# -- the state machine ---------------------------------------------------------------------

USERS = ("u", "v", "w")


class WalletLedger(RuleBasedStateMachine):
    """Random interleavings of bets, debit outcomes, settlements, voids, closings,
    outbox answers, restarts and the operator's resolutions."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.stack = ExitStack()
        self.dir = self.stack.enter_context(tempfile.TemporaryDirectory())
        self.store = self.open_store()
        self.round = 0
        self.n = 0
        self.now = 1
        self.pending: list[str] = []  # tickets with a pending debit
        self.placed: list[str] = []  # tickets in the open round, unsettled
        self.wallet_money = 0  # the model of the wallet's own book (what the mock holds)
        self.spent = 0

    def open_store(self) -> Store:
        return self.stack.enter_context(
            writer_store(Backend("sqlite", Path(self.dir) / "l.sqlite3"))
        )

    def teardown(self) -> None:
        self.stack.close()

    def apply(self, op: object) -> Result | LedgerError:
        self.now += 1
        [answer] = self.store.apply_group([op], self.now)  # type: ignore[list-item]
        return answer

    @initialize()
    def open_round(self) -> None:
        self.round = 1
        assert isinstance(self.apply(RoundStart("r1", 1)), Result)

    @rule(user=st.sampled_from(USERS), stake=st.integers(1, 500))
    def debit(self, user: str, stake: int) -> None:
        self.n += 1
        ticket = f"t{self.n}"
        r = self.apply(
            WalletDebitOpen(
                f"{ticket}:d",
                ENV,
                PARTNER,
                user,
                debit_id(ticket),
                ticket,
                self.round,
                stake,
                "EUR",
            )
        )
        assert isinstance(r, WalletTxOpened)
        self.pending.append(ticket)

    @rule(data=st.data(), outcome=st.sampled_from(["ok", "refused", "cancelled"]))
    def answer_debit(self, data: st.DataObject, outcome: str) -> None:
        if not self.pending:
            return
        ticket = self.pending.pop(data.draw(st.integers(0, len(self.pending) - 1)))
        tx = debit_id(ticket)
        user, stake = self.store.conn.execute(
            "SELECT user_id, amount FROM wallet_txs WHERE tx_id = ?", (tx,)
        ).fetchone()
        if outcome == "ok":
            r = self.apply(
                WalletBetPlace(
                    f"{ticket}:b",
                    ENV,
                    PARTNER,
                    user,
                    tx,
                    "h" + ticket,
                    ticket,
                    stake,
                    None,
                    self.round,
                    None,
                    None,
                    call("debit", tx),
                )
            )
            assert isinstance(r, WalletBetPlaced)
            self.placed.append(ticket)
            self.wallet_money -= stake
        else:
            state = REFUSED if outcome == "refused" else CANCELLED
            r = self.apply(WalletDebitClose(f"{ticket}:x", tx, state, "c", FAR))
            assert isinstance(r, Result)

    @rule(data=st.data(), mult=st.integers(100, 1000))
    def cash_out(self, data: st.DataObject, mult: int) -> None:
        if not self.placed:
            return
        ticket = self.placed.pop(data.draw(st.integers(0, len(self.placed) - 1)))
        assert isinstance(self.apply(SettleWin(f"{ticket}:w", ticket, mult)), Result)
        if data.draw(st.booleans()):
            assert isinstance(self.apply(WalletClose(f"{ticket}:c", FAR, (ticket,))), Result)

    @rule(void=st.booleans(), close=st.booleans())
    def end_round(self, void: bool, close: bool) -> None:
        rid = self.round
        if void:
            r = self.apply(RoundVoid(f"v{rid}", rid, "operator", 1000, HASH))
        else:
            r = self.apply(RoundSettle(f"s{rid}", rid, 1000, HASH))
        assert isinstance(r, Result)
        if close:
            assert isinstance(self.apply(WalletClose(f"c{rid}", FAR, round_id=rid)), Result)
        self.placed.clear()
        self.round += 1
        assert isinstance(self.apply(RoundStart(f"r{self.round}", self.round)), Result)

    @rule()
    def restart(self) -> None:
        assert isinstance(self.apply(Recover(f"rec{self.now}")), Result)
        assert isinstance(self.apply(WalletRecover(f"wrec{self.now}", FAR)), Result)
        self.pending.clear()
        self.placed.clear()
        self.round += 1
        assert isinstance(self.apply(RoundStart(f"r{self.round}", self.round)), Result)

    @rule(data=st.data(), outcome=st.sampled_from(["ok", "retry", "failed", "resolve"]))
    def outbox(self, data: st.DataObject, outcome: str) -> None:
        rows = self.store.conn.execute(
            "SELECT c.tx_id, c.kind, c.amount, c.attempts, c.state, d.state, d.amount "
            "FROM wallet_txs c JOIN wallet_txs d ON d.tx_id = c.ref_tx_id "
            "WHERE c.state = 'pending' OR c.state = 'failed' ORDER BY c.id"
        ).fetchall()
        if not rows:
            return
        tx, kind, amount, attempts, state, debit_state, stake = data.draw(st.sampled_from(rows))
        delivered = amount if kind == "credit" else (stake if debit_state == "ok" else 0)
        if state == FAILED:
            action = "settle" if outcome == "ok" else "retry"
            r = self.apply(WalletResolve(f"{tx}:r{self.now}", tx, PARTNER, action, "", FAR))
            assert isinstance(r, Result)
            if action == "settle":
                self.wallet_money += delivered
            return
        if outcome == "resolve":
            outcome = "failed"
        r = self.apply(
            WalletAttempt(
                f"{tx}:{attempts + 1}",
                tx,
                attempts + 1,
                outcome,
                next_at=self.now + 5 if outcome == "retry" else None,
            )
        )
        assert isinstance(r, WalletAttempted)
        if outcome == "ok":
            self.wallet_money += delivered

    @invariant()
    def books_balance(self) -> None:
        report = self.store.audit()
        assert report.ok, report.problems
        crashd = self.store.conn.execute(
            "SELECT coalesce(sum(posted), 0) FROM accounts WHERE kind != 'wallet'"
        ).fetchone()[0]
        # Both books together hold what the wallet started with (0 here): money only
        # moves between them.
        assert self.wallet_money + crashd == 0
        wallet_account = self.store.conn.execute(
            "SELECT coalesce(sum(posted), 0) FROM accounts WHERE kind = 'wallet'"
        ).fetchone()[0]
        assert wallet_account == self.wallet_money
        # Every debit closed at most once, and never both credited and rolled back.
        doubles = self.store.conn.execute(
            "SELECT ref_tx_id FROM wallet_txs WHERE ref_tx_id IS NOT NULL "
            "GROUP BY ref_tx_id HAVING count(*) > 1"
        ).fetchall()
        assert doubles == []


class PgWalletLedger(WalletLedger):
    """The same machine on PostgreSQL: a database of its own per example."""

    def open_store(self) -> Store:
        url = self.stack.enter_context(fresh_database())
        return self.stack.enter_context(writer_store(Backend("postgresql", url)))


WalletLedger.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
TestWalletLedger = WalletLedger.TestCase
# Fewer examples on PostgreSQL (a database per example, a round trip per statement).
PgWalletLedger.TestCase.settings = settings(max_examples=20, stateful_step_count=40, deadline=None)
PG_URL, PG_WHY = server_url()
TestWalletLedgerPostgres = pytest.mark.skipif(PG_URL is None, reason=PG_WHY)(
    PgWalletLedger.TestCase
)

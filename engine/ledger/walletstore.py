"""SQL of the seamless wallet's tables (schema version 6): the planner's loads, the
group flush, the reads behind the reconciliation endpoints and the audit's wallet checks.

Blocking functions over a ``sqlite3`` connection or anything with its ``execute`` (the
PostgreSQL store's and reader's), called by ``Store`` (the one writer) and ``Reader``.
The statements are plain SQL (parameters, ``coalesce``, ``CASE``, ``GROUP BY``), so both
backends run them as they are.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .wallet import WalletCall, WalletOverlay, WalletTx

TX_COLS = (
    "tx_id, kind, environment, partner_id, user_id, currency, ticket_id, round_id, "
    "ref_tx_id, amount, multiplier, state, created_op, created_at, updated_at, code, "
    "attempts, next_at, give_up_at, wallet_tx_id, balance, closed_op, closed_by, note, id"
)
CALL_COLS = (
    "at, environment, partner_id, call, request_id, request, outcome, duration_ms, tx_id, "
    "user_id, status, response, code"
)
OPEN_DEBITS = "kind = 'debit' AND closed_by IS NULL AND state != 'refused'"
"""The partial index ``wallet_txs_open_debits``'s condition, spelled the same here so
the planner of any SQL engine can use it."""


def _tx(row: Sequence[Any]) -> WalletTx:
    tx = WalletTx(*row[:24])
    tx.row_id = row[24]
    return tx


def load_tx(conn: sqlite3.Connection, tx_id: str) -> WalletTx | None:
    row = conn.execute(f"SELECT {TX_COLS} FROM wallet_txs WHERE tx_id = ?", (tx_id,)).fetchone()
    return None if row is None else _tx(row)


def load_debits(conn: sqlite3.Connection, round_id: int) -> list[WalletTx]:
    rows = conn.execute(
        f"SELECT {TX_COLS} FROM wallet_txs WHERE round_id = ? AND kind = 'debit' ORDER BY id",
        (round_id,),
    )
    return [_tx(r) for r in rows]


def load_open_debits(conn: sqlite3.Connection) -> list[WalletTx]:
    rows = conn.execute(f"SELECT {TX_COLS} FROM wallet_txs WHERE {OPEN_DEBITS} ORDER BY id")
    return [_tx(r) for r in rows]


def flush(conn: sqlite3.Connection, wallet: WalletOverlay) -> None:
    """Write one group's wallet rows (new transactions in order: a debit before the
    credit or rollback that references it)."""
    if wallet.new_txs:
        conn.executemany(
            f"INSERT INTO wallet_txs ({TX_COLS.removesuffix(', id')}) "
            f"VALUES ({','.join('?' * 24)})",
            [
                (
                    t.tx_id,
                    t.kind,
                    t.environment,
                    t.partner_id,
                    t.user_id,
                    t.currency,
                    t.ticket_id,
                    t.round_id,
                    t.ref_tx_id,
                    t.amount,
                    t.multiplier,
                    t.state,
                    t.created_op,
                    t.created_at,
                    t.updated_at,
                    t.code,
                    t.attempts,
                    t.next_at,
                    t.give_up_at,
                    t.wallet_tx_id,
                    t.balance,
                    t.closed_op,
                    t.closed_by,
                    t.note,
                )
                for t in wallet.new_txs
            ],
        )
    if wallet.dirty_txs:
        conn.executemany(
            "UPDATE wallet_txs SET state=?, code=?, attempts=?, next_at=?, give_up_at=?, "
            "wallet_tx_id=?, balance=?, closed_op=?, closed_by=?, note=?, updated_at=? "
            "WHERE tx_id=?",
            [
                (
                    t.state,
                    t.code,
                    t.attempts,
                    t.next_at,
                    t.give_up_at,
                    t.wallet_tx_id,
                    t.balance,
                    t.closed_op,
                    t.closed_by,
                    t.note,
                    t.updated_at,
                    t.tx_id,
                )
                for t in wallet.dirty_txs.values()
            ],
        )
    if wallet.new_calls:
        conn.executemany(
            f"INSERT INTO wallet_calls ({CALL_COLS}) VALUES ({','.join('?' * 13)})",
            [
                (
                    c.at,
                    c.environment,
                    c.partner_id,
                    c.call,
                    c.request_id,
                    c.request,
                    c.outcome,
                    c.duration_ms,
                    c.tx_id,
                    c.user_id,
                    c.status,
                    c.response,
                    c.code,
                )
                for c in wallet.new_calls
            ],
        )
    if wallet.purge_calls_before is not None:
        conn.execute("DELETE FROM wallet_calls WHERE at < ?", (wallet.purge_calls_before,))


# -- reads -------------------------------------------------------------------------------


def _partners(partners: Sequence[str]) -> tuple[str, list[str]]:
    return f"partner_id IN ({','.join('?' * len(partners))})", list(partners)


def due(conn: sqlite3.Connection, partners: Sequence[str], now: int, limit: int) -> list[WalletTx]:
    """The credits and rollbacks of these partners the outbox should send now, oldest
    due first."""
    if not partners:
        return []
    where, args = _partners(partners)
    rows = conn.execute(
        f"SELECT {TX_COLS} FROM wallet_txs WHERE state = 'pending' AND next_at <= ? "
        f"AND {where} ORDER BY next_at, id LIMIT ?",
        (now, *args, limit),
    )
    return [_tx(r) for r in rows]


def next_due(conn: sqlite3.Connection, partners: Sequence[str], after: int) -> int | None:
    """When their first credit or rollback due after ``after`` is (``None``: none)."""
    if not partners:
        return None
    where, args = _partners(partners)
    row = conn.execute(
        f"SELECT min(next_at) FROM wallet_txs WHERE state = 'pending' AND next_at > ? AND {where}",
        (after, *args),
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


@dataclass(frozen=True)
class TxFilter:
    environment: str
    partner_id: str
    since: int | None = None
    until: int | None = None
    round_id: int | None = None
    user_id: str | None = None
    state: str | None = None
    kind: str | None = None
    after_id: int | None = None
    limit: int = 100


def _where(f: TxFilter, time_column: str) -> tuple[str, list[Any]]:
    clauses = ["environment = ?", "partner_id = ?"]
    args: list[Any] = [f.environment, f.partner_id]
    if f.since is not None:
        clauses.append(f"{time_column} >= ?")
        args.append(f.since)
    if f.until is not None:
        clauses.append(f"{time_column} < ?")
        args.append(f.until)
    if f.user_id is not None:
        clauses.append("user_id = ?")
        args.append(f.user_id)
    if f.after_id is not None:
        clauses.append("id > ?")
        args.append(f.after_id)
    return " AND ".join(clauses), args


def txs(conn: sqlite3.Connection, f: TxFilter) -> list[WalletTx]:
    where, args = _where(f, "created_at")
    if f.round_id is not None:
        where += " AND round_id = ?"
        args.append(f.round_id)
    if f.state is not None:
        where += " AND state = ?"
        args.append(f.state)
    if f.kind is not None:
        where += " AND kind = ?"
        args.append(f.kind)
    rows = conn.execute(
        f"SELECT {TX_COLS} FROM wallet_txs WHERE {where} ORDER BY id LIMIT ?", (*args, f.limit)
    )
    return [_tx(r) for r in rows]


def calls(
    conn: sqlite3.Connection, f: TxFilter, tx_id: str | None = None
) -> list[tuple[int, WalletCall]]:
    """(row id, call) of the call log, oldest first."""
    where, args = _where(f, "at")
    if tx_id is not None:
        where += " AND tx_id = ?"
        args.append(tx_id)
    if f.round_id is not None:
        where += " AND tx_id IN (SELECT tx_id FROM wallet_txs WHERE round_id = ?)"
        args.append(f.round_id)
    if f.kind is not None:
        where += " AND call = ?"
        args.append(f.kind)
    rows = conn.execute(
        f"SELECT id, {CALL_COLS} FROM wallet_calls WHERE {where} ORDER BY id LIMIT ?",
        (*args, f.limit),
    )
    return [(int(r[0]), WalletCall(*r[1:])) for r in rows]


def calls_of(conn: sqlite3.Connection, tx_ids: Sequence[str]) -> dict[str, list[WalletCall]]:
    out: dict[str, list[WalletCall]] = {t: [] for t in tx_ids}
    for i in range(0, len(tx_ids), 500):
        chunk = tx_ids[i : i + 500]
        rows = conn.execute(
            f"SELECT {CALL_COLS} FROM wallet_calls WHERE tx_id IN ({','.join('?' * len(chunk))}) "
            "ORDER BY id",
            chunk,
        )
        for r in rows:
            call = WalletCall(*r)
            assert call.tx_id is not None
            out[call.tx_id].append(call)
    return out


def summary(
    conn: sqlite3.Connection, environment: str, partner_id: str, since: int, until: int
) -> dict[str, dict[str, int]]:
    """Per kind and state: how many transactions were created in [since, until) and
    their total amount."""
    out: dict[str, dict[str, int]] = {}
    for kind, state, n, total in conn.execute(
        "SELECT kind, state, count(*), coalesce(sum(amount), 0) FROM wallet_txs "
        "WHERE environment = ? AND partner_id = ? AND created_at >= ? AND created_at < ? "
        "GROUP BY kind, state ORDER BY kind, state",
        (environment, partner_id, since, until),
    ):
        out.setdefault(kind, {})[f"{state}_count"] = int(n)
        out[kind][f"{state}_amount"] = int(total)
    return out


def owed(conn: sqlite3.Connection, environment: str, partner_id: str, user_id: str) -> int:
    """What the outbox still has to deliver to this player's wallet (credits and the
    rollbacks of placed bets that are pending or parked)."""
    row = conn.execute(
        "SELECT coalesce(sum(CASE WHEN c.kind = 'credit' THEN c.amount "
        "WHEN d.state = 'ok' THEN d.amount ELSE 0 END), 0) FROM wallet_txs c "
        "JOIN wallet_txs d ON d.tx_id = c.ref_tx_id "
        "WHERE c.environment = ? AND c.partner_id = ? AND c.user_id = ? "
        "AND (c.state = 'pending' OR c.state = 'failed')",
        (environment, partner_id, user_id),
    ).fetchone()
    return int(row[0])


def has_wallet_tables(conn: Any) -> bool:
    """Whether the ledger behind ``conn`` has the wallet's tables (a SQLite file an
    older build wrote gains them only when it is next opened for writing; a PostgreSQL
    database has them once a leader installed its schema)."""
    if isinstance(conn, sqlite3.Connection):
        sql = "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'wallet_txs'"
        return conn.execute(sql).fetchone() is not None
    row = conn.execute("SELECT to_regclass('wallet_txs') IS NOT NULL").fetchone()
    return bool(row and row[0])


def audit_problems(conn: sqlite3.Connection) -> list[str]:
    """The wallet's invariants, inside the audit's read transaction (none to check in
    a file an older build wrote, which has no wallet tables until it is opened for
    writing)."""
    problems: list[str] = []
    if not has_wallet_tables(conn):
        return problems
    for (tx_id,) in conn.execute(
        "SELECT d.tx_id FROM wallet_txs d LEFT JOIN bets b ON b.ticket_id = d.ticket_id "
        "WHERE d.kind = 'debit' AND d.state = 'ok' AND (b.id IS NULL OR b.stake != d.amount)"
    ):
        problems.append(f"wallet debit {tx_id}: ok without its bet")
    for (tx_id,) in conn.execute(
        "SELECT c.tx_id FROM wallet_txs c JOIN wallet_txs d ON d.tx_id = c.ref_tx_id "
        "WHERE d.closed_by IS NULL OR d.closed_by != c.tx_id OR d.kind != 'debit'"
    ):
        problems.append(f"wallet {tx_id}: its debit does not name it as its closing")
    for (tx_id,) in conn.execute(
        "SELECT c.tx_id FROM wallet_txs c JOIN wallet_txs d ON d.tx_id = c.ref_tx_id "
        "WHERE c.kind = 'credit' AND d.state != 'ok'"
    ):
        problems.append(f"wallet credit {tx_id}: its debit was never confirmed")
    # The partner's wallet account: minus every confirmed stake, plus every credit and
    # every rollback of a placed bet delivered (by the wallet or the operator).
    for env, partner, posted, derived in conn.execute(
        "SELECT a.environment, a.partner_id, a.posted, "
        "coalesce((SELECT sum(CASE WHEN c.kind = 'credit' THEN c.amount "
        "  WHEN d.state = 'ok' THEN d.amount ELSE 0 END) FROM wallet_txs c "
        "  JOIN wallet_txs d ON d.tx_id = c.ref_tx_id WHERE c.environment = a.environment "
        "  AND c.partner_id = a.partner_id AND (c.state = 'ok' OR c.state = 'resolved')), 0) "
        "- coalesce((SELECT sum(d.amount) FROM wallet_txs d WHERE d.kind = 'debit' "
        "  AND d.state = 'ok' AND d.environment = a.environment "
        "  AND d.partner_id = a.partner_id), 0) "
        "FROM accounts a WHERE a.kind = 'wallet'"
    ):
        if posted != derived:
            problems.append(
                f"{env}: wallet account of {partner} is {posted}, its transactions say {derived}"
            )
    # A seamless player's crashd balance covers what the outbox still owes their wallet.
    for env, partner, user, posted, due_amount in conn.execute(
        "SELECT c.environment, c.partner_id, c.user_id, max(coalesce(a.posted, 0)), "
        "sum(CASE WHEN c.kind = 'credit' THEN c.amount WHEN d.state = 'ok' THEN d.amount "
        "ELSE 0 END) FROM wallet_txs c JOIN wallet_txs d ON d.tx_id = c.ref_tx_id "
        "LEFT JOIN accounts a ON a.environment = c.environment AND a.kind = 'player' "
        "AND a.partner_id = c.partner_id AND a.user_id = c.user_id "
        "WHERE c.state = 'pending' OR c.state = 'failed' "
        "GROUP BY c.environment, c.partner_id, c.user_id"
    ):
        if posted < due_amount:
            problems.append(
                f"{env}: player {partner}/{user} holds {posted}, the outbox owes {due_amount}"
            )
    return problems

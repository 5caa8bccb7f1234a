"""SQLite execution: connections, start-up checks, the group flush, reads and audit.

Everything here is blocking and runs on one thread per connection: the ``Store`` (the
only writer) on the writer's worker thread, a ``Reader`` on the reader's. Neither
knows about Trio.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from crashd.engine.proclock import ProcessLock

from . import keyindex, walletstore
from .model import (
    Account,
    AccountKey,
    AuditEntry,
    AuditReport,
    Balance,
    Bet,
    BetOutcome,
    BetView,
    Hold,
    HoldState,
    LedgerCorrupt,
    LedgerError,
    LedgerInUse,
    OpRecord,
    PlayerBalance,
    ReplySlot,
    Result,
    Round,
    RoundState,
    RoundView,
    StoredReply,
)
from .ops import Op, apply, prefetch_keys
from .schema import BASE_VERSION, DDL, MIGRATIONS, SCHEMA_VERSION, STEPS, Step, key_hash
from .txn import Ids, Txn
from .wallet import WalletTx

log = logging.getLogger(__name__)

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
_SYNC_CODES = {"OFF": 0, "NORMAL": 1, "FULL": 2, "EXTRA": 3}
ACCOUNT_CACHE_MAX = 200_000
"""Bound on cached account rows (~200 bytes each); past it the cache starts over."""
_CHUNK = 500
"""Parameters per IN (...) query: below SQLite's 32766 limit with room to spare."""

_ACCOUNT_COLS = "id, environment, kind, partner_id, user_id, posted, pending"
_HOLD_COLS = "id, hold_id, op, debit, credit, amount, expires_at, state, resolved_op, resolved_at"
_BET_COLS = (
    "id, ticket_id, hold, account, stake, auto_cashout, round_id, confirmed_op, "
    "confirmed_at, outcome, multiplier, payout, settled_op, settled_at"
)
_ROUND_COLS = (
    "id, started_op, started_at, state, crash_point, game_hash, ended_op, ended_at, "
    "settled_op, settled_at, void_reason"
)


def connect(
    path: Path | str, synchronous: Synchronous, *, readonly: bool = False
) -> sqlite3.Connection:
    """Open a connection in autocommit mode (we issue BEGIN/COMMIT ourselves), WAL,
    foreign keys on, and assert the pragmas took: a silently ignored pragma would make
    every durability claim false."""
    assert synchronous in _SYNC_CODES, synchronous
    if not readonly:
        create_private(Path(path))
    conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30.0)
    conn.create_function("crashd_key_hash", 1, key_hash, deterministic=True)
    if not readonly:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise LedgerCorrupt(f"journal_mode is {mode!r}, expected 'wal'")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=30000")
    # A bigger page cache keeps the hot pages (accounts, the tables' newest) in memory.
    conn.execute("PRAGMA cache_size=-65536")
    got = conn.execute("PRAGMA synchronous").fetchone()[0]
    if got != _SYNC_CODES[synchronous]:
        raise LedgerCorrupt(f"synchronous reads back {got}, expected {synchronous}")
    if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
        raise LedgerCorrupt("foreign_keys did not turn on")
    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
        raise LedgerCorrupt("journal_mode is not WAL")
    return conn


def sqlite_statements(script: str) -> list[str]:
    """A script as its statements, split where SQLite's own parser says one is complete
    (``executescript`` would commit first: a step runs inside its transaction)."""
    statements: list[str] = []
    current = ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise ValueError(f"incomplete statement at the end of a script: {current.strip()[:80]!r}")
    return statements


def create_private(path: Path) -> None:
    """Create the database file owner-only (0600) if it does not exist yet. It holds
    every balance (and the API's hashed keys); SQLite gives its -wal and -shm files the
    database file's mode, so they are private too. An existing file is left as it is."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        pass  # exists already, or cannot be created: sqlite3.connect reports the latter


def _account(row: Any) -> Account:
    return Account(
        id=row[0], key=AccountKey(row[1], row[2], row[3], row[4]), posted=row[5], pending=row[6]
    )


def _hold(row: Any) -> Hold:
    return Hold(
        row[0], row[1], row[2], row[3], row[4], row[5], row[6], HoldState(row[7]), row[8], row[9]
    )


def _bet(row: Any) -> Bet:
    return Bet(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        None if row[9] is None else BetOutcome(row[9]),
        row[10],
        row[11],
        row[12],
        row[13],
    )


def _round(row: Any) -> Round:
    return Round(
        row[0],
        row[1],
        row[2],
        RoundState(row[3]),
        row[4],
        row[5],
        row[6],
        row[7],
        row[8],
        row[9],
        row[10],
    )


_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterable[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class Settlement(Protocol):
    """Who writes a round's transcript (``crashd.engine.notary``): called on the writer's
    thread with the rounds a group settled, before it is flushed, so each transcript
    commits in the same transaction as its round's settlement (``Txn.add_transcript``).
    An exception fails the whole group: no round is ever settled without its transcript."""

    def rounds_settled(self, txn: Txn, rounds: list[Round], now: int) -> None: ...


class Store:
    """The single writer's connection. Implements ``Backing`` for the planner."""

    def __init__(
        self,
        path: Path | str,
        synchronous: Synchronous = "FULL",
        settlement: Settlement | None = None,
    ) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.settlement = settlement
        # One writer across processes too (engine/proclock.py), before anything is read.
        self._lock = ProcessLock(self.path, "database", LedgerInUse)
        try:
            self.conn = connect(path, synchronous)
        except BaseException:
            self._lock.release()
            raise
        try:
            self.check_integrity()
            # In one transaction: a kill while a new file gets its schema leaves no
            # half-made schema behind (SQLite's DDL is transactional).
            self.conn.executescript("BEGIN IMMEDIATE;\n" + DDL + "\nCOMMIT;")
            self._init_meta()
            self._keys = keyindex.KeyIndex(self.conn, self.path)
            self.key_index = self._keys.opened
            self.ids = self._load_ids()
        except BaseException:
            self.close()
            raise
        self._init_state()

    def _init_state(self) -> None:
        # Committed account rows, shared with each group's Txn, which updates them in
        # place. Sound only because this is the one writer: nothing else changes
        # balances, and any failed group drops the whole cache (see apply_group).
        self._accounts: dict[AccountKey, Account] = {}
        self.report_balances = False
        """Set by the writer when someone listens: fill ``committed_balances``."""
        self.committed_balances: list[PlayerBalance] = []
        """After ``apply_group``: the player balances its commit changed."""
        self._accounts_by_id: dict[int, Account] = {}

    def audit(self) -> AuditReport:
        """The audit on the writer's own connection (start-up, before any op)."""
        return audit(self.conn)

    # -- start-up

    def check_integrity(self) -> None:
        rows = self.conn.execute("PRAGMA integrity_check").fetchall()
        if rows != [("ok",)]:
            raise LedgerCorrupt(f"integrity_check: {rows[:10]!r}")
        bad = self.conn.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            raise LedgerCorrupt(f"foreign_key_check: {bad[:10]!r}")

    def _init_meta(self) -> None:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is None:
            # A new file: DDL made it BASE_VERSION; the steps take it from there.
            self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(BASE_VERSION),))
            version = BASE_VERSION
        else:
            version = int(row[0])
            if version > SCHEMA_VERSION or version < 1:
                raise LedgerCorrupt(f"schema version {version}, this build knows {SCHEMA_VERSION}")
        while version < BASE_VERSION:
            self._migrate(version)
            version += 1
        for step in STEPS:
            if step.version > version:
                self._step(step)
                version = step.version

    def _step(self, step: Step) -> None:
        """A step past BASE_VERSION: its SQLite script and the version bump, one
        transaction (SQLite's DDL is transactional)."""
        c = self.conn
        statements = list(sqlite_statements(step.sqlite))
        if not statements:
            # Nothing to do here (a PostgreSQL-only step): the version bump alone, not
            # the checks below, which read the whole file.
            c.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(step.version),)
            )  # one statement: its own transaction (autocommit)
            log.info("ledger schema: version %d (nothing to do on SQLite)", step.version)
            return
        # A step may rebuild a table (SQLite's procedure): foreign keys off around it
        # (the pragma is ignored inside a transaction), checked before the commit.
        c.execute("PRAGMA foreign_keys=OFF")
        c.execute("BEGIN IMMEDIATE")
        try:
            for statement in statements:
                c.execute(statement)
            bad = c.execute("PRAGMA foreign_key_check").fetchall()
            if bad:
                raise LedgerCorrupt(f"step {step.version}: foreign_key_check: {bad[:5]!r}")
            c.execute(
                "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(step.version),)
            )
            c.execute("COMMIT")
        except BaseException:
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        finally:
            c.execute("PRAGMA foreign_keys=ON")
        log.info("ledger schema: version %d (%s)", step.version, step.what)
        self.check_integrity()

    def _migrate(self, version: int) -> None:
        """Rewrite table definitions from ``version`` to ``version + 1`` in one
        transaction, by SQLite's procedure for schema changes that leave stored rows
        as they are (writable_schema, then a schema_version bump so every connection
        re-reads the schema), and check the file afterwards. A crash midway rolls it
        back; the next start does it again."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            cookie = c.execute("PRAGMA schema_version").fetchone()[0]
            c.execute("PRAGMA writable_schema=ON")
            for table, old, new in MIGRATIONS[version]:
                sql = c.execute(
                    "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?", (table,)
                ).fetchone()[0]
                if old not in sql and _newest_form(table, version, new) in sql:
                    continue  # already in this form (a table created by a newer DDL)
                if old not in sql:
                    raise LedgerCorrupt(
                        f"migration {version}->{version + 1}: {table} is not "
                        "the version it should be"
                    )
                c.execute(
                    "UPDATE sqlite_schema SET sql = ? WHERE type = 'table' AND name = ?",
                    (sql.replace(old, new), table),
                )
            c.execute(f"PRAGMA schema_version={cookie + 1}")
            c.execute("PRAGMA writable_schema=OFF")
            c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version + 1),))
            c.execute("COMMIT")
        except BaseException:
            c.execute("PRAGMA writable_schema=OFF")
            if c.in_transaction:
                c.execute("ROLLBACK")
            raise
        self.check_integrity()

    def _load_ids(self) -> Ids:
        def nxt(table: str) -> int:
            return int(
                self.conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()[0]
            )

        return Ids(
            op=nxt("ops"),
            account=nxt("accounts"),
            transfer=nxt("transfers"),
            hold=nxt("holds"),
            bet=nxt("bets"),
        )

    def close(self) -> None:
        try:
            try:
                keys, self._keys = self._keys, None
                if keys is not None:
                    if self.conn.in_transaction:
                        keys.abandon()  # a failed group: as a kill leaves it
                    else:
                        keys.close()
            finally:
                self.conn.close()
        finally:
            self._lock.release()

    # -- Backing

    _keys: keyindex.KeyIndex | None = None
    """The ops' key index (SQLite; engine/ledger/keyindex.py). PostgreSQL's ops table
    holds its own unique index."""

    def _ops_by_hash(self, hashes: Sequence[bytes]) -> Iterable[Any]:
        """The ops rows (``OpRecord``'s columns) whose key hash is one of ``hashes``.
        The key index's filter first: it holds every committed op's key, so a key it
        does not hold (almost every new one) is nowhere, and is looked up neither in
        memory nor in the file. The rest: their op ids from the index (its memory, then
        its file), then those ops by id."""
        assert self._keys is not None
        maybe = self._keys.filter.maybe(hashes)
        if not maybe:
            return
        held = self._keys.find(maybe)
        rest = [h for h in maybe if h not in held] if held else maybe
        for chunk in _chunks(rest):
            held.update(self._keys.in_file(chunk))
        if held:
            yield from self._select_in(keyindex.OPS_BY_ID, "o.id", sorted(held.values()))

    def load_op(self, key: str) -> OpRecord | None:
        row = next(iter(self._ops_by_hash([key_hash(key)])), None)
        return (
            None
            if row is None
            else OpRecord(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6])
        )

    def load_account(self, key: AccountKey) -> Account | None:
        cached = self._accounts.get(key)
        if cached is not None:
            return cached
        row = self.conn.execute(
            f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE environment = ? AND kind = ? "
            "AND partner_id = ? AND user_id = ?",
            (key.environment, key.kind, key.partner_id, key.user_id),
        ).fetchone()
        if row is None:
            return None
        acct = _account(row)
        self._accounts[key] = acct
        self._accounts_by_id[acct.id] = acct
        return acct

    def _load_accounts(self, keys: Sequence[AccountKey]) -> None:
        """Cache the rows of ``keys`` (none of them cached) that exist. SQLite reads
        each by its unique index in-process, microseconds each; PostgreSQL's store
        reads them in one statement instead of one round trip each."""
        for key in keys:
            self.load_account(key)

    def load_account_by_id(self, account_id: int) -> Account:
        cached = self._accounts_by_id.get(account_id)
        if cached is not None:
            return cached
        row = self.conn.execute(
            f"SELECT {_ACCOUNT_COLS} FROM accounts WHERE id = ?", (account_id,)
        ).fetchone()
        assert row is not None, account_id
        acct = _account(row)
        self._accounts[acct.key] = acct
        self._accounts_by_id[acct.id] = acct
        return acct

    def load_hold(self, hold_id: str) -> Hold | None:
        row = self.conn.execute(
            f"SELECT {_HOLD_COLS} FROM holds WHERE hold_id = ?", (hold_id,)
        ).fetchone()
        return None if row is None else _hold(row)

    def load_hold_by_seq(self, seq: int) -> Hold:
        row = self.conn.execute(f"SELECT {_HOLD_COLS} FROM holds WHERE id = ?", (seq,)).fetchone()
        assert row is not None, seq
        return _hold(row)

    def load_bet(self, ticket_id: str) -> Bet | None:
        row = self.conn.execute(
            f"SELECT {_BET_COLS} FROM bets WHERE ticket_id = ?", (ticket_id,)
        ).fetchone()
        return None if row is None else _bet(row)

    def load_round(self, round_id: int) -> Round | None:
        row = self.conn.execute(
            f"SELECT {_ROUND_COLS} FROM rounds WHERE id = ?", (round_id,)
        ).fetchone()
        return None if row is None else _round(row)

    def highest_round_id(self) -> int:
        return int(self.conn.execute("SELECT coalesce(max(id), 0) FROM rounds").fetchone()[0])

    def unfinished_round_ids(self) -> list[int]:
        return [
            r[0]
            for r in self.conn.execute("SELECT id FROM rounds WHERE settled_at IS NULL ORDER BY id")
        ]

    def unsettled_bets(self, round_id: int | None) -> list[Bet]:
        if round_id is None:
            rows = self.conn.execute(
                f"SELECT {_BET_COLS} FROM bets WHERE round_id IS NULL AND outcome IS NULL ORDER BY id"
            )
        else:
            rows = self.conn.execute(
                f"SELECT {_BET_COLS} FROM bets WHERE round_id = ? AND outcome IS NULL ORDER BY id",
                (round_id,),
            )
        return [_bet(r) for r in rows]

    def expired_holds(self, account_id: int | None, now: int, limit: int) -> list[Hold]:
        if account_id is None:
            rows = self.conn.execute(
                f"SELECT {_HOLD_COLS} FROM holds WHERE state = 'pending' AND expires_at <= ? "
                "ORDER BY expires_at, id LIMIT ?",
                (now, limit),
            )
        else:
            rows = self.conn.execute(
                f"SELECT {_HOLD_COLS} FROM holds WHERE state = 'pending' AND debit = ? "
                "AND expires_at <= ? ORDER BY expires_at, id LIMIT ?",
                (account_id, now, limit),
            )
        return [_hold(r) for r in rows]

    def transfers_of_op(self, op_seq: int) -> list[tuple[int, int, int, str]]:
        return [
            (r[0], r[1], r[2], r[3])
            for r in self.conn.execute(
                "SELECT debit, credit, amount, kind FROM transfers WHERE op = ? ORDER BY id",
                (op_seq,),
            )
        ]

    def reversal_of(self, withdrawal_seq: int) -> int | None:
        row = self.conn.execute(
            "SELECT op FROM reversals WHERE withdrawal_op = ?", (withdrawal_seq,)
        ).fetchone()
        return None if row is None else int(row[0])

    def load_wallet_tx(self, tx_id: str) -> WalletTx | None:
        return walletstore.load_tx(self.conn, tx_id)

    def load_wallet_debits(self, round_id: int) -> list[WalletTx]:
        return walletstore.load_debits(self.conn, round_id)

    def load_wallet_open_debits(self) -> list[WalletTx]:
        return walletstore.load_open_debits(self.conn)

    def load_seal(self, round_id: int) -> tuple[str, str] | None:
        row = self.conn.execute(
            "SELECT document, bets FROM round_seals WHERE round_id = ?", (round_id,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def last_transcript(self) -> tuple[int, str] | None:
        row = self.conn.execute(
            "SELECT round_id, hash FROM round_transcripts ORDER BY round_id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    def round_bets(self, round_id: int) -> list[Bet]:
        rows = self.conn.execute(
            f"SELECT {_BET_COLS} FROM bets WHERE round_id = ? ORDER BY id", (round_id,)
        )
        return [_bet(r) for r in rows]

    # -- the group

    def _prefetch(self, txn: Txn, ops: Sequence[Op], op_keys: Sequence[str]) -> None:
        """Load in a few IN (...) queries what the group will touch, instead of one
        query per op: this is most of what makes group commit cheap per op."""
        keys, accounts, holds, tickets = prefetch_keys(ops, op_keys)
        found: set[str] = set()
        hashes = txn.key_hashes
        for k in keys:
            hashes[k] = key_hash(k)
        for r in self._ops_by_hash(sorted(hashes.values())):
            if r[1] in keys:  # (a hash collision with another key would not be)
                txn.prime_op(r[1], OpRecord(r[0], r[1], r[2], r[3], bool(r[4]), r[5], r[6]))
                found.add(r[1])
        txn.prime_absent_ops(keys - found)
        cached = self._accounts
        self._load_accounts([k for k in accounts if k not in cached])
        prime_account = txn.prime_account
        for account_key in accounts:
            prime_account(account_key, cached.get(account_key))  # None: no such account yet
        hold_found: set[str] = set()
        for r in self._select_in(f"SELECT {_HOLD_COLS} FROM holds", "hold_id", sorted(holds)):
            h = _hold(r)
            txn.prime_hold(h.hold_id, h)
            hold_found.add(h.hold_id)
        for h_id in holds - hold_found:
            txn.prime_hold(h_id, None)
        bet_found: set[str] = set()
        for r in self._select_in(f"SELECT {_BET_COLS} FROM bets", "ticket_id", sorted(tickets)):
            b = _bet(r)
            txn.prime_bet(b.ticket_id, b)
            bet_found.add(b.ticket_id)
        for t in tickets - bet_found:
            txn.prime_bet(t, None)

    def apply_group(
        self,
        ops: Sequence[Op],
        now: int,
        replies: Sequence[ReplySlot | None] | None = None,
        positions: Mapping[str, str] | None = None,
    ) -> list[Result | LedgerError]:
        """Plan every op, write them all, commit once. Returns one answer per op, in
        order, valid only because the commit succeeded (an exception means nothing of
        this group is durable and the caller must not answer anyone).

        ``replies`` (one slot or ``None`` per op) are the client replies to store with
        their ops, in the same transaction (see ``ReplySlot``); ``positions`` (name →
        value) are read positions in an outside stream, kept in the same transaction too
        (the engine's place in the command stream: ``crashd.api.cluster.desk``)."""
        txn = Txn(self, Ids(**vars(self.ids)))
        self._begin()
        try:
            op_keys = [op.key() for op in ops]
            self._prefetch(txn, ops, op_keys)
            answers = [apply(txn, op, now, key) for op, key in zip(ops, op_keys, strict=True)]
            if self.settlement is not None:
                settled = txn.settled_rounds()
                if settled:
                    self.settlement.rounds_settled(txn, settled, now)
            if replies is not None:
                self._keep_replies(txn, replies, answers, now)
            self._flush(txn)
            if positions:
                self.conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [(POSITION_PREFIX + name, value) for name, value in positions.items()],
                )
            self._commit()
        except BaseException:
            # The overlay may have changed cached rows in place: forget them all.
            self._accounts.clear()
            self._accounts_by_id.clear()
            self._rollback()
            if self._keys is not None:
                self._keys.rolled_back()
            raise
        if self._keys is not None:
            self._keys.committed()
        self.ids = txn.ids
        if self.report_balances:
            # Players whose balance this commit changed (a new account that only
            # recorded a refusal has nothing to report).
            dirty = txn.dirty_accounts
            self.committed_balances = [
                PlayerBalance(
                    a.key.environment, a.key.partner_id, a.key.user_id, a.posted, a.pending
                )
                for a in (*dirty.values(), *txn.new_accounts)
                if a.key.kind == "player" and (a.id in dirty or a.posted or a.pending)
            ]
        for acct in txn.new_accounts:
            self._accounts[acct.key] = acct
            self._accounts_by_id[acct.id] = acct
        if len(self._accounts) > ACCOUNT_CACHE_MAX:
            self._accounts.clear()
            self._accounts_by_id.clear()
        return answers

    def _keep_replies(
        self,
        txn: Txn,
        slots: Sequence[ReplySlot | None],
        answers: Sequence[Result | LedgerError],
        now: int,
    ) -> None:
        wanted = [s for s in slots if s is not None]
        if not wanted:
            return
        taken: dict[bytes, tuple[bytes, StoredReply]] = {}
        for r in self._select_in(
            "SELECT key, fingerprint, status, content_type, body FROM replies",
            "key",
            sorted({s.key for s in wanted}),
        ):
            taken[bytes(r[0])] = (bytes(r[1]), StoredReply(r[2], r[3], bytes(r[4])))
        for slot, answer in zip(slots, answers, strict=True):
            if slot is None:
                continue
            if slot.key in taken:
                # The client's retry raced past its own check (or a key hash collided):
                # the first reply stands, never overwritten.
                slot.existing = taken[slot.key]
                continue
            try:
                reply = slot.render(slot, answer)
            except Exception:
                # A reply that cannot be rendered is a bug of the caller's; it must not
                # fail the group (every other op's commit): keep nothing, answer live.
                log.exception("rendering a stored reply failed (nothing kept)")
                continue
            taken[slot.key] = (slot.fingerprint, reply)
            slot.stored = reply
            txn.new_replies.append(
                (slot.key, slot.fingerprint, reply.status, reply.content_type, reply.body, now)
            )

    def _select_in(self, select: str, column: str, values: Sequence[object]) -> Iterable[Any]:
        """Rows of ``select`` whose ``column`` is one of ``values``: a few IN (...)
        queries of at most ``_CHUNK`` parameters (PostgreSQL: one ``= ANY`` array)."""
        for chunk in _chunks(values):
            yield from self.conn.execute(
                f"{select} WHERE {column} IN ({','.join('?' * len(chunk))})", chunk
            )

    def _flush(self, txn: Txn) -> None:
        for statement, rows in flush_rows(txn):
            if rows:
                self._write(statement, rows)
                if statement is W_OPS:
                    self._index_keys(rows)
        if txn.wallet is not None and not txn.wallet.empty:
            # The wallet's rows (their ids are the tables' own) in plain statements on
            # both backends: a few per round, not per op (walletstore).
            walletstore.flush(self.conn, txn.wallet)

    def _write(self, statement: Write, rows: Sequence[tuple[object, ...]]) -> None:
        self.conn.executemany(statement.sqlite, rows)

    def _index_keys(self, ops: Sequence[tuple[object, ...]]) -> None:
        """The new ops' keys (key hash, id) to the key index, with this group."""
        if self._keys is not None:
            self._keys.stage([(r[2], r[0]) for r in ops])  # type: ignore[misc]

    # -- transaction boundaries (the PostgreSQL store adds its fence to _begin)

    def _begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def _commit(self) -> None:
        self.conn.execute("COMMIT")

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


# --------------------------------------------------------------------------- writes


@dataclass(frozen=True)
class Write:
    """One statement of the group flush, declared once for both backends: an INSERT of
    ``columns`` or, with ``key``, an UPDATE of ``columns`` by ``key``. ``types`` are
    the PostgreSQL types of ``columns`` (then ``key``), for its array forms."""

    table: str
    columns: tuple[str, ...]
    types: tuple[str, ...]
    key: str | None = None
    delete_below: bool = False
    """A DELETE of the rows whose ``key`` is below the one parameter, instead."""

    @property
    def sqlite(self) -> str:
        if self.delete_below:
            return f"DELETE FROM {self.table} WHERE {self.key} < ?"
        if self.key is None:
            cols = ", ".join(self.columns)
            return f"INSERT INTO {self.table} ({cols}) VALUES ({','.join('?' * len(self.columns))})"
        sets = ", ".join(f"{c}=?" for c in self.columns)
        return f"UPDATE {self.table} SET {sets} WHERE {self.key}=?"

    @property
    def postgres(self) -> str:
        """One row per execution (``executemany``, pipeline)."""
        return self.sqlite.replace("?", "%s")

    @property
    def copy(self) -> str:
        """An INSERT's rows as one COPY (PostgreSQL)."""
        assert self.key is None
        return f"COPY {self.table} ({', '.join(self.columns)}) FROM STDIN"

    @property
    def unnest(self) -> str:
        """Every row in one execution: one array parameter per column."""
        arrays = ", ".join(f"%b::{t}[]" for t in self.types)
        if self.key is None:
            return (
                f"INSERT INTO {self.table} ({', '.join(self.columns)}) "
                f"SELECT * FROM unnest({arrays})"
            )
        names = ", ".join((*self.columns, self.key))
        sets = ", ".join(f"{c}=v.{c}" for c in self.columns)
        return (
            f"UPDATE {self.table} SET {sets} FROM unnest({arrays}) AS v({names}) "
            f"WHERE {self.table}.{self.key} = v.{self.key}"
        )


_BIG, _TEXT, _BYTES = "bigint", "text", "bytea"
W_OPS = Write(
    "ops",
    ("id", "key", "key_hash", "kind", "fingerprint", "ok", "code", "result", "ts"),
    (_BIG, _TEXT, _BYTES, _TEXT, _BYTES, "smallint", _TEXT, _TEXT, _BIG),
)
W_ACCOUNTS = Write(
    "accounts",
    ("id", "environment", "kind", "partner_id", "user_id", "posted", "pending"),
    (_BIG, _TEXT, _TEXT, _TEXT, _TEXT, _BIG, _BIG),
)
W_ROUNDS = Write(
    "rounds",
    tuple(_ROUND_COLS.split(", ")),
    (_BIG, _BIG, _BIG, _TEXT, _BIG, _TEXT, *(_BIG,) * 4, _TEXT),
)
W_ROUND_UPDATES = Write(
    "rounds",
    (
        "state",
        "crash_point",
        "game_hash",
        "ended_op",
        "ended_at",
        "settled_op",
        "settled_at",
        "void_reason",
    ),
    (_TEXT, _BIG, _TEXT, _BIG, _BIG, _BIG, _BIG, _TEXT, _BIG),
    key="id",
)
W_HOLDS = Write(
    "holds",
    (*_HOLD_COLS.split(", "), "environment"),
    (_BIG, _TEXT, _BIG, _BIG, _BIG, _BIG, _BIG, _TEXT, _BIG, _BIG, _TEXT),
)
W_HOLD_UPDATES = Write(
    "holds", ("state", "resolved_op", "resolved_at"), (_TEXT, _BIG, _BIG, _BIG), key="id"
)
W_BETS = Write(
    "bets",
    tuple(_BET_COLS.split(", ")),
    (_BIG, _TEXT, _BIG, _BIG, _BIG, _BIG, _BIG, _BIG, _BIG, _TEXT, _BIG, _BIG, _BIG, _BIG),
)
W_BET_UPDATES = Write(
    "bets",
    ("auto_cashout", "round_id", "outcome", "multiplier", "payout", "settled_op", "settled_at"),
    (_BIG, _BIG, _TEXT, _BIG, _BIG, _BIG, _BIG, _BIG),
    key="id",
)
W_TRANSFERS = Write(
    "transfers",
    ("id", "op", "environment", "debit", "credit", "amount", "kind", "hold", "ts"),
    (_BIG, _BIG, _TEXT, _BIG, _BIG, _BIG, _TEXT, _BIG, _BIG),
)
W_REPLIES = Write(
    "replies",
    ("key", "fingerprint", "status", "content_type", "body", "created_at"),
    (_BYTES, _BYTES, _BIG, _TEXT, _BYTES, _BIG),
)
W_REVERSALS = Write("reversals", ("withdrawal_op", "op"), (_BIG, _BIG))
W_AUDIT = Write(
    "audit_log",
    ("id", "ts", "environment", "actor", "action", "before", "after", "note"),
    (_BIG, _BIG, _TEXT, _TEXT, _TEXT, _TEXT, _TEXT, _TEXT),
)
W_SEALS = Write(
    "round_seals", ("round_id", "document", "bets", "created_at"), (_BIG, _TEXT, _TEXT, _BIG)
)
W_TRANSCRIPTS = Write(
    "round_transcripts",
    ("round_id", "hash", "prev", "document", "created_at"),
    (_BIG, _TEXT, _TEXT, _TEXT, _BIG),
)
W_PURGE_REPLIES = Write("replies", (), (_BIG,), key="created_at", delete_below=True)
W_BALANCES = Write("accounts", ("posted", "pending"), (_BIG, _BIG, _BIG), key="id")


def flush_rows(txn: Txn) -> list[tuple[Write, Sequence[tuple[object, ...]]]]:
    """A group's writes, parents before children (immediate foreign-key checks pass)."""
    times = txn.op_times
    hashes = txn.key_hashes
    out: list[tuple[Write, Sequence[tuple[object, ...]]]] = [
        (
            W_OPS,
            [
                (
                    r[0],
                    r[1],
                    hashes.get(r[1]) or key_hash(r[1]),
                    r[2],
                    r[3],
                    1 if r[4] else 0,
                    r[5],
                    r[6],
                    times[r[0]],
                )
                for r in txn.new_ops
            ],
        ),
        (
            W_ACCOUNTS,
            [
                (
                    a.id,
                    a.key.environment,
                    a.key.kind,
                    a.key.partner_id,
                    a.key.user_id,
                    a.posted,
                    a.pending,
                )
                for a in txn.new_accounts
            ],
        ),
        (W_ROUNDS, [_round_row(r) for r in txn.new_rounds]),
        (
            W_ROUND_UPDATES,
            [
                (
                    r.state.value,
                    r.crash_point,
                    r.game_hash,
                    r.ended_op,
                    r.ended_at,
                    r.settled_op,
                    r.settled_at,
                    r.void_reason,
                    r.id,
                )
                for r in txn.dirty_rounds.values()
            ],
        ),
        (
            W_HOLDS,
            [
                (
                    h.id,
                    h.hold_id,
                    h.op,
                    h.debit,
                    h.credit,
                    h.amount,
                    h.expires_at,
                    h.state.value,
                    h.resolved_op,
                    h.resolved_at,
                    txn.account_by_id(h.debit).key.environment,
                )
                for h in txn.new_holds
            ],
        ),
        (
            W_HOLD_UPDATES,
            [(h.state.value, h.resolved_op, h.resolved_at, h.id) for h in txn.dirty_holds.values()],
        ),
        (W_BETS, [_bet_row(b) for b in txn.new_bets]),
        (
            W_BET_UPDATES,
            [
                (
                    b.auto_cashout,
                    b.round_id,
                    None if b.outcome is None else b.outcome.value,
                    b.multiplier,
                    b.payout,
                    b.settled_op,
                    b.settled_at,
                    b.id,
                )
                for b in txn.dirty_bets.values()
            ],
        ),
        (W_TRANSFERS, txn.new_transfers),
        (W_REPLIES, txn.new_replies),
    ]
    if txn.purge_replies_before is not None:
        out.append((W_PURGE_REPLIES, [(txn.purge_replies_before,)]))
    out += [
        (W_REVERSALS, txn.new_reversals),
        (W_SEALS, txn.new_seals),
        (W_TRANSCRIPTS, txn.new_transcripts),
        (W_AUDIT, txn.new_audit),
        (W_BALANCES, [(a.posted, a.pending, a.id) for a in txn.dirty_accounts.values()]),
    ]
    return out


def _round_row(r: Round) -> tuple[object, ...]:
    return (
        r.id,
        r.started_op,
        r.started_at,
        r.state.value,
        r.crash_point,
        r.game_hash,
        r.ended_op,
        r.ended_at,
        r.settled_op,
        r.settled_at,
        r.void_reason,
    )


def _bet_row(b: Bet) -> tuple[object, ...]:
    return (
        b.id,
        b.ticket_id,
        b.hold,
        b.account,
        b.stake,
        b.auto_cashout,
        b.round_id,
        b.confirmed_op,
        b.confirmed_at,
        None if b.outcome is None else b.outcome.value,
        b.multiplier,
        b.payout,
        b.settled_op,
        b.settled_at,
    )


# --------------------------------------------------------------------------- reads


POSITION_PREFIX = "position:"
"""``meta`` keys of the stream positions ``apply_group`` keeps."""


class Reader:
    """A second connection for reads: under WAL it sees the last commit and never
    waits for the writer."""

    threads = 1
    """How many reads may run at once (one connection here; the PostgreSQL reader's pool
    has more)."""

    def __init__(self, path: Path | str, synchronous: Synchronous = "FULL") -> None:
        self.conn = connect(path, synchronous, readonly=True)
        self.conn.execute("PRAGMA query_only=ON")

    def close(self) -> None:
        self.conn.close()

    def position(self, name: str) -> str | None:
        """A stream position kept by ``apply_group``, as of the last commit."""
        row = self.conn.execute(
            "SELECT value FROM meta WHERE key = ?", (POSITION_PREFIX + name,)
        ).fetchone()
        return None if row is None else str(row[0])

    def reply(self, key: bytes) -> tuple[bytes, StoredReply] | None:
        """(request fingerprint, stored reply) under a request key, if any."""
        row = self.conn.execute(
            "SELECT fingerprint, status, content_type, body FROM replies WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return bytes(row[0]), StoredReply(row[1], row[2], bytes(row[3]))

    def reply_keys(self, since: int) -> list[bytes]:
        """Keys of the replies stored since ``since`` (ms), for an in-memory index."""
        return [
            bytes(r[0])
            for r in self.conn.execute("SELECT key FROM replies WHERE created_at >= ?", (since,))
        ]

    def balance(self, key: AccountKey, now: int) -> Balance:
        row = self.conn.execute(
            "SELECT id, posted FROM accounts WHERE environment=? AND kind=? AND partner_id=? "
            "AND user_id=?",
            (key.environment, key.kind, key.partner_id, key.user_id),
        ).fetchone()
        if row is None:
            return Balance(0, 0, 0)
        # Expired holds no longer reserve anything, even before a sweep releases them.
        pending = self.conn.execute(
            "SELECT coalesce(sum(amount), 0) FROM holds WHERE debit=? AND state='pending' "
            "AND expires_at > ?",
            (row[0], now),
        ).fetchone()[0]
        return Balance(posted=row[1], pending=pending, available=row[1] - pending)

    _BET_VIEW = (
        "SELECT b.id, b.ticket_id, a.environment, a.partner_id, a.user_id, b.stake, "
        "b.auto_cashout, b.round_id, b.confirmed_at, b.outcome, b.multiplier, b.payout, "
        "b.settled_at FROM bets b JOIN accounts a ON a.id = b.account "
    )

    def hold(self, hold_id: str) -> tuple[str, str, str, str, int, int, str] | None:
        """(hold id, environment, partner, user, amount, expires_at, state) of a hold."""
        row = self.conn.execute(
            "SELECT h.hold_id, a.environment, a.partner_id, a.user_id, h.amount, h.expires_at, "
            "h.state FROM holds h JOIN accounts a ON a.id = h.debit WHERE h.hold_id = ?",
            (hold_id,),
        ).fetchone()
        return None if row is None else tuple(row)

    def bet(self, ticket_id: str) -> BetView | None:
        row = self.conn.execute(self._BET_VIEW + "WHERE b.ticket_id = ?", (ticket_id,)).fetchone()
        return None if row is None else BetView(*row)

    def user_bets(self, key: AccountKey, limit: int, before: int | None) -> list[BetView]:
        acct = self.conn.execute(
            "SELECT id FROM accounts WHERE environment=? AND kind=? AND partner_id=? AND user_id=?",
            (key.environment, key.kind, key.partner_id, key.user_id),
        ).fetchone()
        if acct is None:
            return []
        rows = self.conn.execute(
            self._BET_VIEW + "WHERE b.account = ? AND b.id < ? ORDER BY b.id DESC LIMIT ?",
            (acct[0], before if before is not None else 2**62, limit),
        )
        return [BetView(*r) for r in rows]

    def round_bets(self, round_id: int, unsettled_only: bool) -> list[BetView]:
        extra = "AND b.outcome IS NULL " if unsettled_only else ""
        rows = self.conn.execute(
            self._BET_VIEW + "WHERE b.round_id = ? " + extra + "ORDER BY b.id", (round_id,)
        )
        return [BetView(*r) for r in rows]

    def round(self, round_id: int) -> RoundView | None:
        row = self.conn.execute(
            "SELECT id, state, started_at, crash_point, game_hash, ended_at, settled_at, "
            "void_reason FROM rounds WHERE id = ?",
            (round_id,),
        ).fetchone()
        return None if row is None else RoundView(*row)

    def finished_rounds(self, limit: int, before: int | None) -> list[RoundView]:
        rows = self.conn.execute(
            "SELECT id, state, started_at, crash_point, game_hash, ended_at, settled_at, "
            "void_reason FROM rounds WHERE state != 'open' AND id < ? ORDER BY id DESC LIMIT ?",
            (before if before is not None else 2**62, limit),
        )
        return [RoundView(*r) for r in rows]

    def seal(self, round_id: int) -> str | None:
        row = self.conn.execute(
            "SELECT document FROM round_seals WHERE round_id = ?", (round_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    def transcript(self, round_id: int) -> tuple[str, str] | None:
        """(hash, document) of a round's transcript."""
        row = self.conn.execute(
            "SELECT hash, document FROM round_transcripts WHERE round_id = ?", (round_id,)
        ).fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def transcripts(self, first: int, last: int, limit: int) -> list[tuple[int, str]]:
        """(round id, document) of the transcripts of rounds ``first..last``, in order."""
        rows = self.conn.execute(
            "SELECT round_id, document FROM round_transcripts WHERE round_id >= ? "
            "AND round_id <= ? ORDER BY round_id LIMIT ?",
            (first, last, limit),
        )
        return [(int(r[0]), str(r[1])) for r in rows]

    def expired_hold_count(self, now: int) -> int:
        return int(
            self.conn.execute(
                "SELECT count(*) FROM holds WHERE state='pending' AND expires_at <= ?", (now,)
            ).fetchone()[0]
        )

    def audit(self) -> AuditReport:
        return audit(self.conn)

    def system_posted(self, environment: str, kind: str) -> int:
        """The posted balance of a system account (0 if it has none yet)."""
        row = self.conn.execute(
            "SELECT posted FROM accounts WHERE environment=? AND kind=? AND partner_id='' "
            "AND user_id=''",
            (environment, kind),
        ).fetchone()
        return 0 if row is None else int(row[0])

    def recent_ops(
        self, kinds: Sequence[str], limit: int, scan: int = 50_000
    ) -> list[tuple[int, str, str, bool, str | None, str, int]]:
        """The newest ops of these kinds among the last ``scan`` ops (bounded: ops has
        no index by kind, and adding one would cost every write)."""
        rows = self.conn.execute(
            "SELECT id, key, kind, ok, code, result, ts FROM "
            "(SELECT * FROM ops ORDER BY id DESC LIMIT ?) AS recent "
            f"WHERE kind IN ({','.join('?' * len(kinds))}) ORDER BY id DESC LIMIT ?",
            (scan, *kinds, limit),
        )
        return [(r[0], r[1], r[2], bool(r[3]), r[4], r[5], r[6]) for r in rows]

    _AUDIT_COLS = "id, ts, environment, actor, action, before, after, note"

    def audit_entries(
        self, environment: str, actions: Sequence[str], limit: int, before: int | None
    ) -> list[AuditEntry]:
        """Newest first; every action when ``actions`` is empty."""
        where = "environment = ? AND id < ?"
        args: list[object] = [environment, before if before is not None else 2**62]
        if actions:
            where += f" AND action IN ({','.join('?' * len(actions))})"
            args += list(actions)
        rows = self.conn.execute(
            f"SELECT {self._AUDIT_COLS} FROM audit_log WHERE {where} ORDER BY id DESC LIMIT ?",
            (*args, limit),
        )
        return [AuditEntry(*r) for r in rows]


def _newest_form(table: str, version: int, text: str) -> str:
    """``text``, written by migration ``version`` into ``table``, as the later
    migrations leave it: what a table created by today's DDL holds in its place (a
    later step may rewrite the same CHECK again)."""
    for later in range(version + 1, BASE_VERSION):
        for name, old, new in MIGRATIONS[later]:
            if name == table and old in text:
                text = text.replace(old, new)
    return text


def audit(conn: Any, begin: str = "BEGIN") -> AuditReport:
    """Check every invariant the schema cannot express by itself, in one read
    transaction (a consistent snapshot: WAL on SQLite, ``begin`` a repeatable-read
    transaction on PostgreSQL). ``conn`` is a sqlite3 connection or anything with its
    ``execute`` (the PostgreSQL store's)."""
    problems: list[str] = []
    conn.execute(begin)
    try:
        n_accounts = conn.execute("SELECT count(*) FROM accounts").fetchone()[0]
        n_transfers = conn.execute("SELECT count(*) FROM transfers").fetchone()[0]
        total = conn.execute("SELECT coalesce(sum(posted), 0) FROM accounts").fetchone()[0]
        if total != 0:
            problems.append(f"sum of balances is {total}, not 0")
        # Cached balances against the sum of their transfers.
        for acct, posted, derived in conn.execute(
            "SELECT a.id, a.posted, coalesce(c.s, 0) - coalesce(d.s, 0) FROM accounts a "
            "LEFT JOIN (SELECT credit AS id, sum(amount) AS s FROM transfers GROUP BY credit) c "
            "ON c.id = a.id "
            "LEFT JOIN (SELECT debit AS id, sum(amount) AS s FROM transfers GROUP BY debit) d "
            "ON d.id = a.id WHERE a.posted != coalesce(c.s, 0) - coalesce(d.s, 0)"
        ):
            problems.append(f"account {acct}: posted {posted} != transfers {derived}")
        for acct, pending, derived in conn.execute(
            "SELECT a.id, a.pending, coalesce(h.s, 0) FROM accounts a LEFT JOIN "
            "(SELECT debit AS id, sum(amount) AS s FROM holds WHERE state='pending' GROUP BY debit) h "
            "ON h.id = a.id WHERE a.pending != coalesce(h.s, 0)"
        ):
            problems.append(f"account {acct}: pending {pending} != holds {derived}")
        for acct, posted, pending in conn.execute(
            "SELECT id, posted, pending FROM accounts WHERE kind='player' AND posted < pending"
        ):
            problems.append(f"player {acct} below zero: posted {posted}, pending {pending}")
        psp_net: dict[str, int] = {}
        internal: dict[str, int] = {}
        faucet: dict[str, int] = {}
        capital: dict[str, int] = {}
        for env in ("sandbox", "production"):
            rows = dict(
                conn.execute(
                    "SELECT kind, coalesce(sum(posted), 0) FROM accounts WHERE environment=? "
                    "GROUP BY kind",
                    (env,),
                ).fetchall()
            )
            psp_net[env] = -rows.get("psp", 0)
            faucet[env] = -rows.get("faucet", 0)
            capital[env] = -rows.get("capital", 0)
            # What seamless wallets paid in (stakes) net of what went back to them.
            wallets = -rows.get("wallet", 0)
            internal[env] = rows.get("player", 0) + rows.get("house", 0) + rows.get("escrow", 0)
            if internal[env] != psp_net[env] + faucet[env] + capital[env] + wallets:
                problems.append(
                    f"{env}: internal {internal[env]} != psp {psp_net[env]} + faucet "
                    f"{faucet[env]} + capital {capital[env]} + wallets {wallets}"
                )
            escrow = rows.get("escrow", 0)
            open_stakes = conn.execute(
                "SELECT coalesce(sum(b.stake), 0) FROM bets b JOIN accounts a ON a.id = b.account "
                "WHERE b.outcome IS NULL AND a.environment = ?",
                (env,),
            ).fetchone()[0]
            if escrow != open_stakes:
                problems.append(f"{env}: escrow {escrow} != unsettled stakes {open_stakes}")
        # Every bet's transfers match its outcome exactly once.
        for (ticket,) in conn.execute(
            "SELECT b.ticket_id FROM bets b JOIN holds h ON h.id = b.hold WHERE h.state != 'posted' "
            "OR h.amount != b.stake OR h.debit != b.account"
        ):
            problems.append(f"bet {ticket}: hold not posted or mismatched")
        for ticket, got, want in conn.execute(
            "SELECT b.ticket_id, coalesce(sum(t.amount), 0), b.payout FROM bets b "
            "LEFT JOIN transfers t ON t.op = b.settled_op AND t.credit = b.account "
            "AND t.kind IN ('stake_return', 'win', 'refund') "
            "WHERE b.outcome IS NOT NULL GROUP BY b.id "
            "HAVING coalesce(sum(t.amount), 0) < b.payout"
        ):
            problems.append(f"bet {ticket}: paid {got} < payout {want}")
        for rid, n in conn.execute(
            "SELECT r.id, count(b.id) FROM rounds r JOIN bets b ON b.round_id = r.id "
            "WHERE r.settled_at IS NOT NULL AND b.outcome IS NULL GROUP BY r.id"
        ):
            problems.append(f"round {rid}: finished with {n} unsettled bets")
        n_open = conn.execute("SELECT count(*) FROM rounds WHERE state='open'").fetchone()[0]
        if n_open > 1:
            problems.append(f"{n_open} rounds open at once")
        problems.extend(walletstore.audit_problems(conn))
    finally:
        conn.execute("COMMIT")
    return AuditReport(
        accounts=n_accounts,
        transfers=n_transfers,
        total=total,
        psp_net=psp_net,
        internal_total=internal,
        faucet_total=faucet,
        problems=tuple(problems),
        capital_total=capital,
    )

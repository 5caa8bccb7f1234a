"""PostgreSQL execution: the same store, reads and audit as ``store`` (SQLite), on
psycopg 3's sync API.

The planner, the group flush's statements and every read are ``store``'s: this module
supplies a connection with sqlite3's ``execute`` shape (``?`` placeholders become
``%s`` once per statement text), the transaction boundaries with the lease's fence,
the schema's install and steps, and a pool for reads. Blocking, like ``store``: the
writer's connection is used only on the writer's thread, the pool by the reader's.

Group flush, four ways (``flush``; ``python -m bench ledger --backend postgresql``
measures them): ``executemany`` (psycopg pipelines each statement's rows), ``pipeline``
(every statement of the group and the COMMIT in one pipeline: one round trip),
``unnest`` (one statement per table, its rows as one binary array per column) and
``copy`` (each table's new rows as one COPY, the updates as ``unnest``). ``copy`` is
the default: the fastest measured, on the server and in Python (psycopg formats COPY
rows in C; it dumps arrays in Python), see docs/scale-out.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Literal

import psycopg
from psycopg.adapt import Loader
from psycopg_pool import ConnectionPool

from . import keyindex
from .database import SNAPSHOT, redacted
from .model import AccountKey, AuditReport, LedgerCorrupt, LedgerFenced, LedgerInUse
from .schema import BASE_VERSION, POSTGRES_DDL, SCHEMA_VERSION, STEPS
from .store import _ACCOUNT_COLS, Reader, Settlement, Store, Synchronous, Write, _account, audit

log = logging.getLogger(__name__)

FlushMode = Literal["copy", "unnest", "executemany", "pipeline"]
FENCED = "CF001"
"""The SQLSTATE ``crashd_fence`` raises (schema.POSTGRES_DDL)."""
READ_POOL = 4
"""Reader connections: reads run on this many threads at once."""
_COMMIT_LEVELS = {"OFF": "off", "NORMAL": "off", "FULL": "on", "EXTRA": "on"}
"""``synchronous`` → ``synchronous_commit``. FULL: a commit returns after its WAL is
flushed on the server; NORMAL/OFF: up to the server's wal_writer_delay of commits may
be lost if the *server* crashes (never if crashd does)."""


class _IntNumeric(Loader):
    """sum() of bigint is numeric in PostgreSQL: every sum the ledger reads is of
    integer money, so it loads as int (a Decimal would leak into reports)."""

    def load(self, data: Any) -> int:
        return int(bytes(data))


def connect(
    url: str, *, autocommit: bool = True, application: str = "crashd"
) -> psycopg.Connection[Any]:
    """A connection in autocommit mode (BEGIN/COMMIT are ours), numeric sums as int."""
    try:
        conn = psycopg.connect(url, autocommit=autocommit, application_name=application)
    except psycopg.Error as exc:
        raise LedgerCorrupt(f"cannot connect to {redacted(url)}: {exc}".strip()) from None
    conn.adapters.register_loader("numeric", _IntNumeric)
    return conn


class PgConn:
    """A psycopg connection with sqlite3's ``execute``/``executemany`` shape, so the
    store's and the audit's SQL (``?`` placeholders) runs unchanged."""

    def __init__(self, raw: psycopg.Connection[Any]) -> None:
        self.raw = raw
        self._texts: dict[str, str] = {}

    def _q(self, sql: str) -> str:
        text = self._texts.get(sql)
        if text is None:
            text = self._texts[sql] = sql.replace("?", "%s")
        return text

    def execute(self, sql: str, params: Sequence[object] | None = None) -> psycopg.Cursor[Any]:
        if not params:
            return self.raw.execute(sql)
        return self.raw.execute(self._q(sql), params)

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        with self.raw.cursor() as cur:
            cur.executemany(self._q(sql), rows)

    def commit(self) -> None:
        """sqlite3's shape: commit an open transaction (none in autocommit)."""
        if self.in_transaction:
            self.raw.execute("COMMIT")

    def rollback(self) -> None:
        if self.in_transaction:
            self.raw.execute("ROLLBACK")

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE

    def close(self) -> None:
        self.raw.close()


# --------------------------------------------------------------------------- schema


def install_schema(conn: psycopg.Connection[Any]) -> int:
    """Create the ledger's tables in an empty database, or take an existing one through
    the steps it lacks; each in one transaction with its version bump (PostgreSQL's DDL
    is transactional). Run by the lease holder only. Returns the version."""
    with conn.transaction():
        exists = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            conn.execute(POSTGRES_DDL)
            conn.execute("INSERT INTO meta VALUES ('schema_version', %s)", (str(BASE_VERSION),))
            log.info("ledger schema: created at version %d", BASE_VERSION)
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION or version < BASE_VERSION:
        raise LedgerCorrupt(f"schema version {version}, this build knows {SCHEMA_VERSION}")
    for step in STEPS:
        if step.version > version:
            with conn.transaction():
                if step.postgres.strip():
                    conn.execute(step.postgres)
                conn.execute(
                    "UPDATE meta SET value = %s WHERE key = 'schema_version'", (str(step.version),)
                )
            version = step.version
            log.info("ledger schema: version %d (%s)", step.version, step.what)
    return version


# --------------------------------------------------------------------------- the writer


class PgStore(Store):
    """The single writer's connection on PostgreSQL, fenced by the lease's term.

    ``lease`` is the leader lease this process holds (``lease.Lease``); every group's
    transaction starts with ``crashd_fence(term)``, so once a newer leader has bumped
    the term, this store's next group fails with ``LedgerFenced`` and nothing of it
    commits."""

    def __init__(
        self,
        url: str,
        synchronous: Synchronous = "FULL",
        *,
        term: int,
        flush: FlushMode = "copy",
        settlement: Settlement | None = None,
    ) -> None:
        self.url = url
        self.synchronous = synchronous
        self.settlement = settlement
        self.term = term
        self.flush_mode: FlushMode = flush
        raw = connect(url, application="crashd ledger writer")
        self.pg = PgConn(raw)
        # The store's reads and the audit run their SQL through ``conn``, as on SQLite.
        self.conn = self.pg  # type: ignore[assignment]
        try:
            level = _COMMIT_LEVELS[synchronous]
            raw.execute(f"SET synchronous_commit = {level}")
            got = raw.execute("SHOW synchronous_commit").fetchone()
            if got is None or got[0] != level:
                raise LedgerCorrupt(f"synchronous_commit reads back {got!r}, expected {level}")
            row = raw.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None or int(row[0]) != SCHEMA_VERSION:
                raise LedgerCorrupt(f"schema version {row!r}: not installed by the lease holder")
            self.ids = self._load_ids()
        except BaseException:
            raw.close()
            raise
        self._init_state()

    def check_integrity(self) -> None:
        """PostgreSQL checks its own pages (checksums, if the cluster has them); the
        ledger's invariants are the audit's."""

    def close(self) -> None:
        self.pg.close()

    def audit(self) -> AuditReport:
        return audit(self.pg, SNAPSHOT)

    def _begin(self) -> None:
        c = self.pg.raw
        try:
            c.execute("BEGIN")
            c.execute("SELECT crashd_fence(%s)", (self.term,))
        except psycopg.Error as exc:
            self._rollback()
            if exc.sqlstate == FENCED:
                raise LedgerFenced(str(exc).strip()) from None
            raise

    def _commit(self) -> None:
        self.pg.raw.execute("COMMIT")

    def _rollback(self) -> None:
        try:
            if self.pg.in_transaction and not self.pg.raw.closed:
                self.pg.raw.execute("ROLLBACK")
        except psycopg.Error:
            pass  # a broken connection has rolled back on the server already

    def _load_accounts(self, keys: Sequence[AccountKey]) -> None:
        # One statement for the group's uncached accounts, not one round trip each:
        # a fresh writer's first group, a takeover's, a round of players not seen
        # since the start. 1,000 deposits to 1,000 uncached accounts, measured: 68-75
        # ms one by one, 40-43 ms so; the next group, all cached, 30-35 ms.
        if not keys:
            return
        if len(keys) == 1:
            self.load_account(keys[0])
            return
        rows = self.pg.raw.execute(
            f"SELECT {_ACCOUNT_COLS} FROM accounts JOIN unnest("
            "%b::text[], %b::text[], %b::text[], %b::text[]) AS k (e, kd, p, u) "
            "ON environment = k.e AND kind = k.kd AND partner_id = k.p AND user_id = k.u",
            [list(column) for column in zip(*keys, strict=True)],
        )
        for row in rows:
            acct = _account(row)
            self._accounts[acct.key] = acct
            self._accounts_by_id[acct.id] = acct

    def _select_in(self, select: str, column: str, values: Sequence[object]) -> Iterable[Any]:
        # One statement text whatever the group's size (prepared once, not one text per
        # count of IN parameters). The array in binary (%b): psycopg's text form of 1,000
        # 16-byte key hashes cost 8.9 ms a lookup against 2.4 ms so (measured on the
        # ops' key hashes, the group's largest lookup).
        if not values:
            return ()
        return self.pg.raw.execute(f"{select} WHERE {column} = ANY(%b)", (list(values),))

    def _flush(self, txn: Any) -> None:
        if self.flush_mode == "pipeline":
            with self.pg.raw.pipeline():
                super()._flush(txn)
        else:
            super()._flush(txn)

    def _ops_by_hash(self, hashes: Sequence[bytes]) -> Iterable[Any]:
        # The ops table's own unique index, ops_key_hash_key.
        return self._select_in(keyindex.OPS_BY_ID, "o.key_hash", hashes)

    def _write(self, statement: Write, rows: Sequence[tuple[object, ...]]) -> None:
        raw = self.pg.raw
        mode = self.flush_mode
        if mode == "copy" and statement.key is None:
            with raw.cursor() as cur, cur.copy(statement.copy) as copy:
                for row in rows:
                    copy.write_row(row)
            return
        if mode in ("copy", "unnest") and not statement.delete_below:
            raw.execute(statement.unnest, [list(column) for column in zip(*rows, strict=True)])
        elif self.flush_mode == "pipeline" or len(rows) == 1:
            for row in rows:
                raw.execute(statement.postgres, row)
        else:
            with raw.cursor() as cur:
                cur.executemany(statement.postgres, rows)


# --------------------------------------------------------------------------- reads


class _Rows:
    """What a pooled ``execute`` returns: the rows, read before the connection went
    back to the pool."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[tuple[Any, ...]]) -> None:
        self._rows = rows

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self._rows)


class _Pooled:
    """sqlite3's ``execute`` over a pool: each statement on a connection of its own
    (autocommit, so each sees the last commit, as a SQLite reader under WAL does)."""

    def __init__(self, pool: ConnectionPool[Any]) -> None:
        self.pool = pool
        self._texts: dict[str, str] = {}

    def execute(self, sql: str, params: Sequence[object] = ()) -> _Rows:
        text = self._texts.get(sql)
        if text is None:
            text = self._texts[sql] = sql.replace("?", "%s")
        with self.pool.connection() as conn:
            cur = conn.execute(text, params or None)
            return _Rows(cur.fetchall() if cur.description is not None else [])


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("numeric", _IntNumeric)
    conn.execute("SET default_transaction_read_only = on")


class PgReader(Reader):
    """Reads on a pool of ``READ_POOL`` connections (read-only sessions)."""

    threads = READ_POOL

    def __init__(self, url: str, size: int = READ_POOL) -> None:
        self.pool: ConnectionPool[Any] = ConnectionPool(
            url,
            min_size=1,
            max_size=size,
            kwargs={"autocommit": True, "application_name": "crashd ledger reader"},
            configure=_configure,
            open=False,
        )
        try:
            self.pool.open(wait=True, timeout=30.0)
        except Exception as exc:
            raise LedgerCorrupt(f"cannot open read connections to {redacted(url)}: {exc}") from None
        self.conn = _Pooled(self.pool)  # type: ignore[assignment]

    def close(self) -> None:
        self.pool.close()

    def audit(self) -> AuditReport:
        with self.pool.connection() as conn:
            return audit(PgConn(conn), SNAPSHOT)


def wait_ready(url: str, timeout_s: float = 10.0) -> None:
    """Wait for a server that is starting (tests, the bench's throwaway cluster)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            psycopg.connect(url, connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


__all__ = ["FlushMode", "LedgerInUse", "PgReader", "PgStore", "connect", "install_schema"]

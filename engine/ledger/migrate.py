"""Move a ledger from a SQLite file to a PostgreSQL database (``crashd db migrate``).

The source is opened as the ledger's writer (``Store``: its ``flock``, and any schema
steps it lacks, so both sides are at ``SCHEMA_VERSION``), so no server can write to it
meanwhile; the target must be empty. The copier takes the target's leader lease (which
installs the schema and makes it term 1), copies every table in foreign-key order with
``COPY`` inside one transaction fenced by that term, and then checks the copy: the same
row count per table, the audit passing on the target, and the same books (totals per
environment) as the source's audit. A failure leaves the target as empty as it was
(the transaction rolls back; the schema stays, and a rerun on it is refused only if it
holds rows).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .database import SNAPSHOT, redacted
from .model import AuditReport, LedgerCorrupt
from .schema import LEDGER_TABLES
from .store import Store, audit

COPY_BATCH = 10_000
"""Rows read from SQLite per fetch while copying."""


class MigrationError(Exception):
    """The migration was refused or its check failed; one line for the operator."""


@dataclass
class MigrationReport:
    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    audit: AuditReport | None = None


def target_tables_in_use(url: str, tables: Sequence[str]) -> list[str]:
    """Those of ``tables`` in the target that already hold rows (a migration needs an
    empty target: it never merges two ledgers)."""
    from .pgstore import connect

    conn = connect(url, application="crashd migrate")
    try:
        used = []
        for table in tables:
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
            if exists and exists[0]:
                row = conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})").fetchone()
                if row and row[0]:
                    used.append(table)
        return used
    finally:
        conn.close()


def sqlite_to_postgres(
    source: Path,
    url: str,
    *,
    extra_tables: Sequence[str] = (),
    prepare: Callable[[], None] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> MigrationReport:
    """Copy the ledger at ``source`` into the empty PostgreSQL database ``url``.

    ``extra_tables`` (the API's tables) are copied after the ledger's, into tables that
    ``prepare`` creates on the target (their seed rows are replaced by the source's).
    ``progress(table, rows)`` is told after each table."""
    from .lease import Lease
    from .pgstore import PgConn

    started = time.perf_counter()
    report = MigrationReport(str(source), redacted(url))
    in_use = target_tables_in_use(url, (*LEDGER_TABLES, *extra_tables))
    if in_use:
        raise MigrationError(
            f"{redacted(url)} already holds a ledger (rows in {', '.join(in_use)}): "
            "migrate into an empty database"
        )
    store = Store(source)  # the source's writer lock: no server writes it meanwhile
    try:
        before = store.audit()
        if not before.ok:
            raise MigrationError("the source fails its audit: " + "; ".join(before.problems[:5]))
        lease = Lease.take(url)
        try:
            if prepare is not None:
                prepare()
            target = PgConn(_connect(url))
            try:
                with target.raw.transaction():
                    target.raw.execute("SELECT crashd_fence(%s)", (lease.term,))
                    for table in extra_tables:
                        target.raw.execute(f"DELETE FROM {table}")
                    for table in (*LEDGER_TABLES, *extra_tables):
                        report.rows[table] = _copy_table(store, target, table)
                        _advance_identity(target, table)
                        if progress is not None:
                            progress(table, report.rows[table])
                after = audit(target, SNAPSHOT)
                counted = {t: _count(target, t) for t in report.rows}
            finally:
                target.close()
        finally:
            lease.release()
    finally:
        store.close()
    if counted != report.rows:
        raise MigrationError(f"row counts differ after the copy: {counted} != {report.rows}")
    if not after.ok:
        raise MigrationError("the copy fails its audit: " + "; ".join(after.problems[:5]))
    books = (
        "accounts",
        "transfers",
        "total",
        "psp_net",
        "internal_total",
        "faucet_total",
        "capital_total",
    )
    if any(getattr(after, k) != getattr(before, k) for k in books):
        raise MigrationError(f"the books differ after the copy: {after} != {before}")
    report.audit = after
    report.seconds = time.perf_counter() - started
    return report


def _count(conn: Any, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])


def _connect(url: str) -> Any:
    from .pgstore import connect

    return connect(url, application="crashd migrate")


def _advance_identity(target: Any, table: str) -> None:
    """A table whose ids the database assigns (an identity column: the wallet's, where
    SQLite has a rowid) got the source's ids by COPY: its next id must come after them,
    or the first new row would collide with a copied one. (``setval`` is not undone if
    the copy rolls back: a rerun's ids then start higher, which nothing depends on.)"""
    for column, sequence in target.raw.execute(
        "SELECT column_name, pg_get_serial_sequence(table_name, column_name) "
        "FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s AND (is_identity = 'YES' OR column_default LIKE 'nextval(%%')",
        (table,),
    ).fetchall():
        target.raw.execute(
            f"SELECT setval(%s, coalesce((SELECT max({column}) FROM {table}), 0) + 1, false)",
            (sequence,),
        )


def _copy_table(store: Store, target: Any, table: str) -> int:
    columns = [r[1] for r in store.conn.execute(f"PRAGMA table_info({table})")]
    if not columns:
        raise LedgerCorrupt(f"the source has no table {table}")
    names = ", ".join(columns)
    cur = store.conn.execute(f"SELECT {names} FROM {table}")
    n = 0
    with target.raw.cursor() as pg, pg.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
        while rows := cur.fetchmany(COPY_BATCH):
            for row in rows:
                copy.write_row(row)
            n += len(rows)
    return n

"""``crashd db``: check, back up and migrate the server's database (operator only).

One SQLite file holds everything that must survive: the ledger (accounts, transfers,
holds, bets, rounds, idempotency records of every op) and the API's tables (keys,
idempotency records of requests); ``<database>.pepper`` beside it is needed to check
any API key. Both commands are safe while the server runs: under WAL a reader sees
the last commit and never blocks the ledger's writer.

- ``crashd db check``: ``PRAGMA integrity_check`` and ``foreign_key_check``, the schema
  version, and the ledger's audit (every invariant the schema cannot express: balances
  against their transfers, holds, escrow against open stakes, double entry per
  environment). Exit 0 when all hold, 1 when anything is wrong, 2 on bad input.
- ``crashd db backup DEST``: a consistent copy taken with SQLite's online backup (one
  read transaction, so the copy is the database as of one commit, whatever the writer
  does meanwhile), written to a new file created 0600, never over an existing one;
  the pepper is copied to ``DEST.pepper``; then the copy itself is checked as above.
  (A PostgreSQL database is backed up with PostgreSQL's tools: pg_dump, pg_basebackup.)
- ``crashd db migrate --to postgresql://…``: the SQLite ledger and the API's tables
  copied into an empty PostgreSQL database and checked there (engine/ledger/migrate.py,
  docs/scale-out.md); the pepper goes along to the target's pepper file.

On PostgreSQL (``--database postgresql://…``) ``check`` reads the same audit in one
repeatable-read snapshot; the file-level checks are PostgreSQL's own (data checksums).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crashd.api import database as apidb
from crashd.api.config import ConfigError, add_arguments, config_from_args
from crashd.engine.ledger.database import SNAPSHOT, is_postgres, redacted
from crashd.engine.ledger.model import AuditReport, LedgerInUse
from crashd.engine.ledger.schema import SCHEMA_VERSION
from crashd.engine.ledger.store import audit

from .usage import UsageError

_DB_SETTINGS = ("database", "pepper_file")
API_TABLES = ("api_keys", "api_key_revocations")
"""The API's own tables (crashd.api.security.keys), migrated with the ledger's."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "db",
        help="check or back up the database (safe while the server runs)",
        description="Check the database's integrity and the ledger's invariants, or take "
        "a consistent online backup.",
    )
    sub = parser.add_subparsers(dest="db_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    check = sub.add_parser(
        "check", help="integrity check and ledger audit; exit 1 if anything is wrong"
    )
    add_arguments(check, _DB_SETTINGS)
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=run_check)

    backup = sub.add_parser(
        "backup", help="consistent online copy (and the pepper), then check the copy"
    )
    add_arguments(backup, _DB_SETTINGS)
    backup.add_argument("dest", type=Path, metavar="DEST", help="the new file (must not exist)")
    backup.add_argument("--json", action="store_true", help="print one JSON object")
    backup.set_defaults(func=run_backup)

    migrate = sub.add_parser(
        "migrate",
        help="copy a SQLite database into an empty PostgreSQL database, then check it",
        description="Copy the SQLite ledger and API keys (--database FILE) into an empty "
        "PostgreSQL database (--to URL), check the copy (row counts, audit, the same "
        "books), and copy the pepper to the target's pepper file. Stop the server first: "
        "the source is locked while it is copied.",
    )
    add_arguments(migrate, _DB_SETTINGS)
    migrate.add_argument("--to", required=True, metavar="URL", help="postgresql://… (empty)")
    migrate.add_argument(
        "--to-pepper-file",
        type=Path,
        metavar="FILE",
        help="where the target's pepper goes (default: crashd.pepper; must not exist or "
        "must already be the same pepper)",
    )
    migrate.add_argument("--json", action="store_true", help="print one JSON object")
    migrate.set_defaults(func=run_migrate)


@dataclass(frozen=True)
class CheckReport:
    database: str
    integrity: str
    schema_version: int | None
    audit: AuditReport | None
    """The ledger's own audit (``None`` when the file has no ledger to audit)."""
    problems: tuple[str, ...]
    """Everything wrong: the file's checks and the audit's problems."""

    @property
    def ok(self) -> bool:
        return not self.problems


def _database(args: argparse.Namespace) -> Path | str:
    try:
        path = config_from_args(args, _DB_SETTINGS).database
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if is_postgres(path):
        return path
    assert isinstance(path, Path)
    if not path.is_file():
        # Never create an empty database by looking at one that is not there.
        raise UsageError(f"no database at {path}")
    return path


def _open_readonly(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=apidb.BUSY_TIMEOUT_MS / 1000)
    conn.execute("PRAGMA query_only = ON")
    conn.execute(f"PRAGMA busy_timeout = {apidb.BUSY_TIMEOUT_MS}")
    return conn


def check_postgres(url: str) -> CheckReport:
    """``crashd db check`` on PostgreSQL: the schema version and the audit, in one
    read-only repeatable-read snapshot (safe beside the running leader)."""
    try:
        conn = apidb.connect(url)
    except apidb.DatabaseError as exc:
        return CheckReport(redacted(url), "unreachable", None, None, (str(exc),))
    try:
        present = conn.execute("SELECT to_regclass('meta') IS NOT NULL").fetchone()[0]
        if not present:
            return CheckReport(
                redacted(url),
                "n/a (PostgreSQL)",
                None,
                None,
                ("no ledger schema in this database (has crashd serve ever run on it?)",),
            )
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row is not None else None
        problems: list[str] = []
        if version is not None and version > SCHEMA_VERSION:
            problems.append(f"schema version {version} is newer than this build ({SCHEMA_VERSION})")
        report = audit(conn, SNAPSHOT)
        problems.extend(report.problems)
        return CheckReport(redacted(url), "n/a (PostgreSQL)", version, report, tuple(problems))
    finally:
        conn.close()


def check_database(path: Path | str) -> CheckReport:
    """Everything ``crashd db check`` reports, read in consistent snapshots."""
    if is_postgres(path):
        return check_postgres(str(path))
    assert isinstance(path, Path)
    conn = _open_readonly(path)
    try:
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError as exc:
            return CheckReport(
                str(path),
                f"unreadable: {exc}",
                None,
                None,
                (f"not a readable SQLite database: {exc}",),
            )
        problems: list[str] = []
        integrity = "ok" if rows == [("ok",)] else "; ".join(str(r[0]) for r in rows[:10])
        if integrity != "ok":
            problems.append(f"integrity_check: {integrity}")
        bad = conn.execute("PRAGMA foreign_key_check").fetchall()
        if bad:
            problems.append(f"foreign_key_check: {len(bad)} rows, first {bad[:5]!r}")
        version = None
        if conn.execute(
            "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'meta'"
        ).fetchone():
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = int(row[0]) if row is not None else None
        if version is None:
            problems.append("no ledger schema in this file (has crashd serve ever run on it?)")
            return CheckReport(str(path), integrity, None, None, tuple(problems))
        if version > SCHEMA_VERSION:
            problems.append(f"schema version {version} is newer than this build ({SCHEMA_VERSION})")
        report = audit(conn)
        problems.extend(report.problems)
        return CheckReport(str(path), integrity, version, report, tuple(problems))
    finally:
        conn.close()


def _print_report(report: CheckReport, *, heading: str) -> None:
    print(f"{heading}: {'ok' if report.ok else 'PROBLEMS'}")
    print(f"  file            {report.database}")
    print(f"  integrity       {report.integrity}")
    version = report.schema_version
    note = (
        ""
        if version is None or version == SCHEMA_VERSION
        else f" (migrated to {SCHEMA_VERSION} on the next start)"
    )
    print(f"  schema version  {version}{note}")
    books = report.audit
    if books is not None:
        print(f"  accounts        {books.accounts:,}")
        print(f"  transfers       {books.transfers:,}")
        print(f"  sum of balances {books.total:,} (double entry: always 0)")
        for env in sorted(books.psp_net):
            print(
                f"  {env:<15} players+house+escrow {books.internal_total.get(env, 0):,} = "
                f"PSP net {books.psp_net[env]:,} + faucet {books.faucet_total.get(env, 0):,} "
                f"+ capital {books.capital_total.get(env, 0):,}"
            )
    for problem in report.problems:
        print(f"  problem: {problem}")


def _report_doc(report: CheckReport) -> dict[str, Any]:
    doc = asdict(report)
    doc["problems"] = list(report.problems)
    if report.audit is not None:
        doc["audit"]["problems"] = list(report.audit.problems)
    doc["ok"] = report.ok
    return doc


def run_check(args: argparse.Namespace) -> int:
    path = _database(args)
    report = check_database(path)
    if args.json:
        print(json.dumps(_report_doc(report), indent=1))
    else:
        _print_report(report, heading="database check")
    return 0 if report.ok else 1


def backup_database(source: Path, dest: Path) -> tuple[int, float]:
    """Copy ``source`` to the new file ``dest`` (0600) with SQLite's online backup;
    returns (bytes written, seconds). Removes a partial copy on failure."""
    try:
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(f"{dest} exists: a backup never overwrites a file") from None
    except OSError as exc:
        raise UsageError(f"cannot create {dest}: {exc.strerror}") from None
    os.close(fd)
    started = time.perf_counter()
    try:
        src = _open_readonly(source)
        try:
            dst = sqlite3.connect(dest, isolation_level=None)
            try:
                # pages=-1: the whole file in one step, inside one read transaction of
                # the source, so the copy is one commit's state however busy the writer.
                src.backup(dst, pages=-1)
            finally:
                dst.close()
        finally:
            src.close()
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return dest.stat().st_size, time.perf_counter() - started


def run_backup(args: argparse.Namespace) -> int:
    source = _database(args)
    if not isinstance(source, Path):
        raise UsageError(
            "crashd db backup copies a SQLite file; back a PostgreSQL database up with "
            "PostgreSQL's tools (pg_dump, pg_basebackup, WAL archiving)"
        )
    dest: Path = args.dest
    if dest.resolve() == source.resolve():
        raise UsageError("DEST is the database itself")
    pepper_dest = apidb.pepper_path(dest)
    if pepper_dest.exists():
        raise UsageError(f"{pepper_dest} exists: a backup never overwrites a file")
    size, seconds = backup_database(source, dest)
    pepper = apidb.pepper_path(source)
    copied_pepper = False
    if pepper.is_file():
        fd = os.open(pepper_dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, pepper.open("rb") as src:
            shutil.copyfileobj(src, out)
        copied_pepper = True
    report = check_database(dest)
    if args.json:
        print(
            json.dumps(
                {
                    "dest": str(dest),
                    "bytes": size,
                    "seconds": round(seconds, 3),
                    "pepper": str(pepper_dest) if copied_pepper else None,
                    "check": _report_doc(report),
                },
                indent=1,
            )
        )
    else:
        print(f"backed up {source} to {dest}: {size:,} bytes in {seconds:.2f} s (mode 0600)")
        if copied_pepper:
            print(
                f"pepper copied to {pepper_dest} (mode 0600): keep it with the backup, "
                "API keys cannot be checked without it"
            )
        else:
            print(f"no pepper beside {source} (no API key was ever created)")
        _print_report(report, heading="the copy")
    return 0 if report.ok else 1


def run_migrate(args: argparse.Namespace) -> int:
    from crashd.api.security.keys import KeyStore

    source = _database(args)
    if not isinstance(source, Path):
        raise UsageError("--database is the SQLite file to migrate from, not a URL")
    url: str = args.to
    if not is_postgres(url):
        raise UsageError(f"--to must be a postgresql:// URL, not {url!r}")
    try:
        from crashd.engine.ledger.migrate import MigrationError, sqlite_to_postgres
    except ImportError:
        raise UsageError("migrating needs psycopg: pip install 'crashd[postgres]'") from None
    config = config_from_args(args, _DB_SETTINGS)
    pepper = apidb.pepper_path(source, config.pepper_file)
    pepper_dest = apidb.pepper_path(url, args.to_pepper_file)
    if (
        pepper.is_file()
        and pepper_dest.exists()
        and pepper_dest.read_bytes() != pepper.read_bytes()
    ):
        raise UsageError(f"{pepper_dest} exists and holds another pepper: choose --to-pepper-file")

    def prepare() -> None:
        # The API's tables, created on the target by their owner (with the source's
        # pepper, so no new one is made); their rows come with the copy.
        KeyStore(url, pepper if pepper.is_file() else pepper_dest).close()

    def progress(table: str, rows: int) -> None:
        if not args.json:
            print(f"  {table:<20} {rows:>12,} rows")

    if not args.json:
        print(f"migrating {source} to {redacted(url)}")
    try:
        report = sqlite_to_postgres(
            source, url, extra_tables=API_TABLES, prepare=prepare, progress=progress
        )
    except (MigrationError, LedgerInUse, apidb.DatabaseError) as exc:
        raise UsageError(str(exc)) from None
    copied_pepper = False
    if pepper.is_file() and not pepper_dest.exists():
        fd = os.open(pepper_dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out, pepper.open("rb") as src:
            shutil.copyfileobj(src, out)
        copied_pepper = True
    check = check_postgres(url)
    if args.json:
        print(
            json.dumps(
                {
                    "source": report.source,
                    "target": report.target,
                    "rows": report.rows,
                    "seconds": round(report.seconds, 3),
                    "pepper": str(pepper_dest) if pepper.is_file() else None,
                    "check": _report_doc(check),
                },
                indent=1,
            )
        )
    else:
        print(f"copied {sum(report.rows.values()):,} rows in {report.seconds:.2f} s")
        if copied_pepper:
            print(f"pepper copied to {pepper_dest} (mode 0600): every crashd on it needs it")
        elif pepper.is_file():
            print(f"pepper already at {pepper_dest}")
        _print_report(check, heading="the copy")
        print(f"next: crashd serve --database '{redacted(url)}' --pepper-file {pepper_dest}")
    return 0 if check.ok else 1

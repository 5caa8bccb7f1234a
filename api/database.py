"""The API's connections to the shared database, and the pepper kept beside it.

The database is shared: the ledger owns its tables through its own connection and
writer; the API owns the ``api_*`` tables (keys) through the connections opened here.
On SQLite both sides use WAL, so readers never wait for the ledger's writer, and
``busy_timeout`` so the rare write here waits its turn instead of failing. On
PostgreSQL (``--database postgresql://…``) the same tables live in the ledger's
database, reached through psycopg with sqlite3's ``execute`` shape
(``crashd.engine.ledger.pgstore.PgConn``), so the SQL here serves both.

Every blocking call on these connections runs in a worker thread
(``trio.to_thread.run_sync``) except the tiny read of the key revocation counter,
which WAL makes non-blocking; the event loop drives the game clock and must not stall.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from crashd.engine.ledger.database import is_postgres, redacted
from crashd.engine.ledger.store import create_private

BUSY_TIMEOUT_MS = 5_000
PEPPER_BYTES = 32


class DatabaseError(Exception):
    """The database or its pepper file cannot be used; one line for the operator."""


Database = Path | str
"""A SQLite file or a ``postgresql://`` URL (``--database``)."""
DEFAULT_PEPPER = Path("crashd.pepper")
"""The pepper file of a PostgreSQL database, unless ``--pepper-file`` says otherwise."""


def errors(database: Database) -> tuple[type[Exception], ...]:
    """The driver errors a statement on ``database`` may raise."""
    if is_postgres(database):
        import psycopg

        return (psycopg.Error, sqlite3.Error)
    return (sqlite3.Error,)


def connect(path: Database) -> Any:
    """Open ``path`` in WAL mode, autocommit (transactions are explicit); a new file
    is created owner-only, like the ledger's (the same file). A URL opens a PostgreSQL
    connection of the same shape."""
    if is_postgres(path):
        try:
            from crashd.engine.ledger.pgstore import PgConn
            from crashd.engine.ledger.pgstore import connect as pg_connect
        except ImportError:
            raise DatabaseError(
                "a postgresql:// database needs psycopg: pip install 'crashd[postgres]'"
            ) from None
        try:
            return PgConn(pg_connect(str(path), application="crashd api"))
        except Exception as exc:
            raise DatabaseError(f"cannot open database {redacted(path)}: {exc}") from None
    assert isinstance(path, Path)
    try:
        create_private(path)
        conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: an acknowledged key revocation or idempotency record survives power loss,
        # like the ledger's transfers it guards.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise DatabaseError(f"cannot open database {path}: {exc}") from None
    return conn


class Connection:
    """One SQLite connection shared by worker threads, one statement group at a time."""

    def __init__(self, path: Database) -> None:
        self.path = path
        self.postgres = is_postgres(path)
        self._conn = connect(path)
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def read(self) -> Iterator[Any]:
        with self._lock:
            yield self._conn

    @contextlib.contextmanager
    def write(self) -> Iterator[Any]:
        """A write transaction (SQLite: ``BEGIN IMMEDIATE``): committed on success,
        rolled back on error."""
        with self._lock:
            self._conn.execute("BEGIN" if self.postgres else "BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def pepper_path(database: Database, configured: Path | None = None) -> Path:
    """``--pepper-file`` if given; else beside a SQLite file (``<database>.pepper``),
    or ``crashd.pepper`` in the working directory for a PostgreSQL database (every
    crashd on that database, leader and standby, needs the same file)."""
    if configured is not None:
        return configured
    if is_postgres(database):
        return DEFAULT_PEPPER
    assert isinstance(database, Path)
    return database.with_name(database.name + ".pepper")


def load_pepper(database: Database, *, create: bool, configured: Path | None = None) -> bytes:
    """The server-side secret mixed into key hashes: a stolen database alone does not
    let anyone test guessed keys offline. Kept in ``<database>.pepper`` (see
    ``pepper_path``), mode 0600, created once; two processes starting together agree
    on one pepper."""
    path = pepper_path(database, configured)
    if create and not path.exists():
        # Write a private temporary file, then link() it into place: link fails if the
        # pepper already exists, and a reader never sees a half-written file.
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_hex(PEPPER_BYTES).encode() + b"\n")
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race; use its pepper
            finally:
                os.unlink(tmp)
        except OSError as exc:
            raise DatabaseError(f"cannot create pepper file {path}: {exc}") from None
    try:
        text = path.read_text().strip()
        pepper = bytes.fromhex(text)
    except FileNotFoundError:
        raise DatabaseError(f"pepper file {path} is missing: API keys cannot be verified") from None
    except (OSError, ValueError) as exc:
        raise DatabaseError(f"cannot read pepper file {path}: {exc}") from None
    if len(pepper) != PEPPER_BYTES:
        raise DatabaseError(f"pepper file {path} is malformed")
    return pepper

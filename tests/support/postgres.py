"""A real PostgreSQL for the suite: the URL CI exports, or a throwaway cluster started
here, or a skip that says why.

``CRASHD_TEST_POSTGRES`` (set by ``.ci/run``, which starts a cluster with
``.ci/postgres``) names a server whose role may create databases. Without it, a cluster
is started with the same script when the server binaries are installed (Debian's
``postgresql`` package) and stopped at the end of the session. Each test gets a
database of its own (``fresh_database``), dropped afterwards.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parents[2]
ENV = "CRASHD_TEST_POSTGRES"

_state: dict[str, str | None] = {}


def _start() -> tuple[str | None, str]:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return None, "psycopg is not installed (pip install -e '.[test]')"
    url = os.environ.get(ENV)
    if url:
        return url, ""
    script = REPO / ".ci" / "postgres"
    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")) and not shutil.which("pg_config"):
        return None, (
            f"no PostgreSQL: set {ENV}=postgresql://… or install the server "
            "(apt-get install postgresql; .ci/run does)"
        )
    base = Path(tempfile.mkdtemp(prefix="crashd-pg-"))
    out = subprocess.run(
        [str(script), "start", str(base / "cluster"), "fsync=off"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        return None, f"could not start a throwaway PostgreSQL: {out.stderr.strip()[-300:]}"

    def stop() -> None:
        subprocess.run([str(script), "stop", str(base / "cluster")], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)

    atexit.register(stop)
    return out.stdout.strip(), ""


def server_url() -> tuple[str | None, str]:
    """(URL of a server to create databases on, or None; why not)."""
    if "url" not in _state:
        url, why = _start()
        _state["url"], _state["why"] = url, why
    return _state["url"], _state["why"] or ""


def with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@contextmanager
def fresh_database() -> Iterator[str]:
    """A new, empty database on the test server, dropped afterwards (with whatever
    sessions a test left on it)."""
    import pytest

    url, why = server_url()
    if url is None:
        pytest.skip(why)
    import psycopg

    name = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield with_database(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@dataclass
class Backend:
    """One ledger database for a test, on either backend: ``target`` is what
    ``open_ledger`` / ``--database`` take; ``connect()`` a raw connection to poke at it
    with ``?`` placeholders on both."""

    name: str
    target: Path | str

    @property
    def postgres(self) -> bool:
        return self.name == "postgresql"

    def connect(self) -> Any:
        if self.postgres:
            from crashd.engine.ledger.pgstore import PgConn, connect

            return PgConn(connect(str(self.target)))
        return sqlite3.connect(self.target, isolation_level=None)

    @property
    def integrity_error(self) -> type[Exception]:
        if self.postgres:
            import psycopg

            return psycopg.errors.IntegrityError
        return sqlite3.IntegrityError

    @property
    def database_error(self) -> tuple[type[Exception], ...]:
        if self.postgres:
            import psycopg

            return (psycopg.Error,)
        return (sqlite3.DatabaseError,)


BACKENDS = ("sqlite", "postgresql")


def read_connection(database: Path | str) -> Any:
    """A connection to a server's database that is safe while it runs (``?``
    placeholders on both): a SQLite file read-only, or a PostgreSQL session."""
    if str(database).startswith("postgresql://"):
        from crashd.engine.ledger.pgstore import PgConn, connect

        return PgConn(connect(str(database)))
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True)


@contextmanager
def backend(name: str, tmp_path: Path) -> Iterator[Backend]:
    if name == "sqlite":
        yield Backend(name, tmp_path / "ledger.sqlite3")
        return
    with fresh_database() as url:
        yield Backend(name, url)


@contextmanager
def writer_store(b: Backend, synchronous: str = "FULL") -> Iterator[Any]:
    """The ledger's one writer (``Store``) on ``b``: SQLite's, or PostgreSQL's holding
    the leader lease (which installs the schema) and fencing every group with its term,
    as in production."""
    from crashd.engine.ledger.store import Store

    if not b.postgres:
        store = Store(b.target, synchronous)  # type: ignore[arg-type]
        try:
            yield store
        finally:
            store.close()
        return
    from crashd.engine.ledger.lease import Lease
    from crashd.engine.ledger.pgstore import PgStore

    lease = Lease.take(str(b.target))
    try:
        pg = PgStore(str(b.target), synchronous, term=lease.term)  # type: ignore[arg-type]
        try:
            yield pg
        finally:
            pg.close()
    finally:
        lease.release()

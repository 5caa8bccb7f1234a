"""Which backend a ``--database`` value names: a PostgreSQL URL, or a SQLite file.

No driver is imported here: psycopg is needed only when a URL is given (the
``postgres`` extra), so the embedded default runs without it.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

URL_SCHEMES = ("postgresql://", "postgres://")
SNAPSHOT = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
"""PostgreSQL: one snapshot for a multi-statement read (the audit), as SQLite's BEGIN
under WAL gives."""


def is_postgres(database: Path | str) -> bool:
    """True for ``postgresql://…`` (or ``postgres://…``); a path is a SQLite file."""
    return isinstance(database, str) and database.startswith(URL_SCHEMES)


def redacted(database: Path | str) -> str:
    """The database for logs and messages: a URL without its password."""
    if not is_postgres(database):
        return str(database)
    parts = urlsplit(str(database))
    if parts.password is None:
        return str(database)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))

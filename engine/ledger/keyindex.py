"""The ops' key index on SQLite: a file of its own beside the ledger, derived from it,
written without fsync.

Why it is not in the ledger file: an op's idempotency key stays unique forever (a PSP
may redeliver an event days later), and clients' keys are random, so once their B-tree
is larger than a commit's working set every insert lands on an index page of its own.
In the ledger file each such page is written to the WAL and fsynced at every commit,
then written again by the checkpoint. Measured on this machine, 1,000 random 16-byte
keys per commit into a table of 3,000,000 (``synchronous=FULL``): 54.7 µs per op with
the unique index in the file, 15.4 µs with the same file at ``synchronous=OFF``, and
16.5–21.3 µs with the index here (12.8 µs for a fresh file). The fsyncs were the cost.

Why that is safe: the index holds nothing the ledger does not (every op's row keeps its
``key_hash``), so it is rebuilt from the ledger whenever it cannot be trusted, before
the writer plans anything. It is written in WAL mode at ``synchronous=OFF``: a killed
process loses nothing the OS was given, and only an OS crash or a power cut can lose
or tear what was not yet on disk. So ``open_index`` trusts the file only if

* it was closed cleanly (``close_index``: checkpointed and fsynced, then marked
  ``closed`` in the ledger by a durable commit), or
* it was last opened during this boot of the machine (``/proc/sys/kernel/random/boot_id``,
  recorded in the ledger before the index is written): the process died, the machine
  did not;

and then reconciles its tail with the ledger's. A kill between the two files' commits
leaves one a group ahead of the other: entries past the ledger's last op are deleted,
ledger ops past the index's last entry are added, and the last entry is checked against
the ledger's row. Anything else (no file, another boot, a mismatch) and the file is
deleted and built again from the ledger: one sorted pass (measured in the note of
issue 18 at 10,000,000 ops).

Uniqueness is the index's ``UNIQUE (key_hash)``: a second op with a key already held
fails its group, as the ledger's own constraint did before (schema version 9 drops it).
Only the writer (``Store``, holding the database lock) opens this file.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from .model import LedgerCorrupt

log = logging.getLogger(__name__)

SCHEMA = "keys"
"""The attached schema's name on the writer's connection."""

SUFFIX = ".keys"
"""The index file is the ledger's path plus this (with its own -wal and -shm)."""

CACHE_KIB = 262_144
"""The index's page cache (KiB): random inserts read the pages they dirty."""

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.op_keys (
    op       INTEGER PRIMARY KEY,
    key_hash BLOB NOT NULL CHECK (length(key_hash) = 16)
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS {SCHEMA}.op_keys_hash ON op_keys (key_hash);
"""

INSERT = f"INSERT INTO {SCHEMA}.op_keys (op, key_hash) VALUES (?, ?)"
"""A group's new ops into the index (in the group's transaction)."""

OPS_BY_KEY = (
    "SELECT o.id, o.key, o.kind, o.fingerprint, o.ok, o.code, o.result "
    f"FROM {SCHEMA}.op_keys AS k JOIN ops AS o ON o.id = k.op"
)
"""The ops' columns the planner loads, found by ``k.key_hash``."""


def index_path(ledger: Path) -> Path:
    return Path(str(ledger) + SUFFIX)


def boot_id() -> str | None:
    """This boot of the machine, or ``None`` where the OS does not say (then only a
    clean close makes the index trusted)."""
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


MARKER = "key_index"
"""The ledger's ``meta`` row that says when the index may be trusted: ``closed`` (it
was made durable by a clean close), or the boot it was last opened in. It lives in the
ledger file, which is fsynced, because the index file's own record of it could be
torn by the very crash it is meant to detect."""


def open_index(conn: sqlite3.Connection, ledger: Path) -> str:
    """Attach the index to the writer's connection (outside any transaction) and make
    it agree with the ledger. Returns what was done, for the log: ``"trusted"``, or
    why it was rebuilt."""
    path = index_path(ledger)
    boot = boot_id()
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (MARKER,)).fetchone()
    marker = None if row is None else row[0]
    trusted = marker == "closed" or (boot is not None and marker == boot)
    # Before the index is written at all, and durably: from here until a clean close, a
    # crash of the machine leaves the ledger saying the index needs rebuilding.
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (MARKER, boot or "unknown boot"),
    )
    reason: str | None
    if not path.exists():
        reason = "no index file"
    elif not trusted:
        reason = "not closed cleanly, and last opened in another boot"
    else:
        _attach(conn, path)
        reason = _reconcile(conn)
        if reason is not None:
            conn.execute(f"DETACH DATABASE {SCHEMA}")
    if reason is None:
        return "trusted"
    _remove(path)
    _attach(conn, path)
    _build(conn)
    if conn.execute("SELECT 1 FROM ops LIMIT 1").fetchone() is not None:
        log.warning("ops key index %s rebuilt from the ledger: %s", path, reason)
    return f"rebuilt: {reason}"


def close_index(conn: sqlite3.Connection) -> None:
    """Make everything the index holds durable (its WAL checkpointed into its file,
    both fsynced), then say so in the ledger: the next open trusts it whatever happens
    to the machine in between."""
    conn.execute(f"PRAGMA {SCHEMA}.synchronous=FULL")
    busy = conn.execute(f"PRAGMA {SCHEMA}.wal_checkpoint(TRUNCATE)").fetchone()[0]
    if busy:
        return  # not all of it durable: the next open rebuilds or trusts by its boot
    conn.execute("UPDATE meta SET value = 'closed' WHERE key = ?", (MARKER,))


def _attach(conn: sqlite3.Connection, path: Path) -> None:
    from .store import create_private

    create_private(path)
    conn.execute(f"ATTACH DATABASE ? AS {SCHEMA}", (str(path),))
    mode = conn.execute(f"PRAGMA {SCHEMA}.journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise LedgerCorrupt(f"the key index's journal_mode is {mode!r}, expected 'wal'")
    conn.execute(f"PRAGMA {SCHEMA}.synchronous=OFF")
    conn.execute(f"PRAGMA {SCHEMA}.cache_size=-{CACHE_KIB}")
    conn.executescript(_DDL)


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(str(path) + suffix)
        except FileNotFoundError:
            pass


def _reconcile(conn: sqlite3.Connection) -> str | None:
    """Bring a trusted index level with the ledger's tail; ``None`` if it then agrees,
    else why it must be rebuilt."""
    c = conn
    last = int(c.execute("SELECT coalesce(max(id), 0) FROM ops").fetchone()[0])
    c.execute("BEGIN IMMEDIATE")
    try:
        # The index committed a group the ledger did not (a kill between the two).
        c.execute(f"DELETE FROM {SCHEMA}.op_keys WHERE op > ?", (last,))
        held = int(c.execute(f"SELECT coalesce(max(op), 0) FROM {SCHEMA}.op_keys").fetchone()[0])
        # The ledger committed groups the index did not.
        c.execute(
            f"INSERT INTO {SCHEMA}.op_keys (op, key_hash) SELECT id, key_hash FROM ops "
            "WHERE id > ? ORDER BY id",
            (held,),
        )
        if last:
            mine = c.execute(f"SELECT key_hash FROM {SCHEMA}.op_keys WHERE op = ?", (last,))
            theirs = c.execute("SELECT key_hash FROM ops WHERE id = ?", (last,)).fetchone()
            if mine.fetchone() != theirs:
                c.execute("ROLLBACK")
                return f"its entry for op {last} is not the ledger's"
        c.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        c.execute("ROLLBACK")
        raise LedgerCorrupt(f"two ops of the ledger share a key hash: {exc}") from exc
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise
    if held < last:
        log.info("ops key index: ops %d..%d added from the ledger", held + 1, last)
    return None


def _build(conn: sqlite3.Connection) -> None:
    """Every op's key, from the ledger: rows in op order, then the unique index in one
    sort (far cheaper than as many random inserts)."""
    c = conn
    t0 = time.perf_counter()
    c.execute("BEGIN IMMEDIATE")
    try:
        c.execute(f"DROP INDEX {SCHEMA}.op_keys_hash")
        c.execute(
            f"INSERT INTO {SCHEMA}.op_keys (op, key_hash) SELECT id, key_hash FROM ops ORDER BY id"
        )
        c.execute(f"CREATE UNIQUE INDEX {SCHEMA}.op_keys_hash ON op_keys (key_hash)")
        c.execute("COMMIT")
    except sqlite3.IntegrityError as exc:
        c.execute("ROLLBACK")
        raise LedgerCorrupt(f"two ops of the ledger share a key hash: {exc}") from exc
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise
    n = c.execute(f"SELECT count(*) FROM {SCHEMA}.op_keys").fetchone()[0]
    log.info("ops key index: %d keys indexed in %.1f s", n, time.perf_counter() - t0)

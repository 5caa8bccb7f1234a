"""The ops' key index on SQLite: a file of its own beside the ledger, derived from it,
written without fsync, in sorted batches.

Why: an op's idempotency key stays unique forever (a PSP may redeliver an event days
later), and clients' keys are random. In the ledger file, once their B-tree outgrew a
commit's working set, each insert dirtied an index page of its own, fsynced in the WAL
at every commit and written again by the checkpoint (measured on this machine, 1,000
random 16-byte keys per commit into 3,000,000: 54.7 µs per op; 15.4 µs with the same
file at ``synchronous=OFF``: the fsyncs were most of it). Out of the ledger's file and
unsynced, the random page writes were still two syscalls per op (``strace -c``). So
keys go in by batches, sorted: a batch of ``BATCH`` keys lands on each leaf page of a
large index about once, not once per key.

How: a committed group's new keys join ``active``, an in-memory map. When it holds
``BATCH`` keys it is frozen (sorted), and every following group writes a slice of it
into the file, in the group's own transaction, a little faster than keys arrive, so
the frozen batch is written before the next one fills. Lookups ask the filter
(engine/ledger/keyfilter.py: every committed key, so a new key stops there), then both
batches, then the file. ``complete_through`` (in the file) is the op id up to which every op is in
the file; a kill loses the batches in memory and nothing else: the next open adds the
ops past ``complete_through`` from the ledger.

Why unsynced is safe: the index holds nothing the ledger does not (every op's row keeps
its ``key_hash``), so it is rebuilt from the ledger whenever it cannot be trusted,
before the writer plans anything. A killed process loses nothing the OS was given; only
an OS crash or a power cut can tear what was not on disk yet. So ``open`` trusts the
file only if the ledger (fsynced) says it was closed cleanly (checkpointed and fsynced,
then marked ``closed``) or was last opened during this boot of the machine
(``/proc/sys/kernel/random/boot_id``, recorded in the ledger before the index is
written to): the process died, the machine did not. Trusted, the file is caught up with
the ledger and checked; otherwise (no file, another boot, a file that is not this
ledger's) it is deleted and built again from the ledger in one sorted pass.

Uniqueness: the file's primary key, the in-memory batches and the planner's lookups
together, under the one writer (``Store``, holding the database lock): a second op with
a key already held is answered from the first. A ledger holding two ops with one key
hash (which only a hand-edited file could) is refused at open. Schema version 9 drops
the ledger table's own unique index.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import keyfilter
from .model import LedgerCorrupt

log = logging.getLogger(__name__)

SCHEMA = "keys"
"""The attached schema's name on the writer's connection."""

SUFFIX = ".keys"
"""The index file is the ledger's path plus this (with its own -wal and -shm)."""

BATCH = 200_000
"""Keys held in memory before a batch is frozen and written out, sorted. At 10,000,000
ops the index has ~90,000 leaf pages: a batch this size dirties ~0.4 of a page per
key instead of one. Memory: two batches at most, ~70 MB."""

DRAIN = 1.25
"""Each group writes this many frozen keys per key it adds: the frozen batch is out
before the next one is full."""

CACHE_KIB = 262_144
"""The index's page cache (KiB)."""

MARKER = "key_index"
"""The ledger's ``meta`` row that says when the index may be trusted: ``closed`` (made
durable by a clean close), or the boot it was last opened in. It lives in the ledger
file, which is fsynced, because the index file's own record could be torn by the very
crash it is meant to detect."""

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

_DDL = f"""
CREATE TABLE IF NOT EXISTS {SCHEMA}.op_keys (
    key_hash BLOB PRIMARY KEY CHECK (length(key_hash) = 16),
    op       INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS {SCHEMA}.index_state (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS {SCHEMA}.filter_slices (
    slice      INTEGER PRIMARY KEY,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    sealed_at  INTEGER
) STRICT;
CREATE TABLE IF NOT EXISTS {SCHEMA}.filter_chunks (
    slice   INTEGER NOT NULL,
    chunk   INTEGER NOT NULL,
    through INTEGER NOT NULL,
    bits    BLOB NOT NULL,
    PRIMARY KEY (slice, chunk)
) STRICT;
"""
_SAVE_SLICE = (
    f"INSERT INTO {SCHEMA}.filter_slices (slice, size, created_at, sealed_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (slice) DO UPDATE SET size = excluded.size, "
    "created_at = excluded.created_at, sealed_at = excluded.sealed_at"
)
_SAVE_CHUNK = (
    f"INSERT INTO {SCHEMA}.filter_chunks (slice, chunk, through, bits) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (slice, chunk) DO UPDATE SET through = excluded.through, bits = excluded.bits"
)
_READD = 10_000
"""Ledger ops read per step when the filter catches up at open."""

_INSERT = f"INSERT INTO {SCHEMA}.op_keys (key_hash, op) VALUES (?, ?)"
_SET_STATE = (
    f"INSERT INTO {SCHEMA}.index_state (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
COMPLETE = "complete_through"
"""Every op up to this id is in the file."""
WRITTEN = "written_through"
"""No op past this id is in the file (a batch's first slice raises it to the batch's
highest op): a file past the ledger's last op is not this ledger's as it stands."""

OP_COLUMNS = "o.id, o.key, o.kind, o.fingerprint, o.ok, o.code, o.result"
OPS_BY_KEY = f"SELECT {OP_COLUMNS} FROM {SCHEMA}.op_keys AS k JOIN ops AS o ON o.id = k.op"
"""The ops' columns the planner loads, found in the file by ``k.key_hash``."""
OPS_BY_ID = f"SELECT {OP_COLUMNS} FROM ops AS o"
"""The same columns from ops alone: by ``o.id`` for keys found in memory, and by
``o.key_hash`` on PostgreSQL, whose ops table holds its own unique index."""


def index_path(ledger: Path) -> Path:
    return Path(str(ledger) + SUFFIX)


def boot_id() -> str | None:
    """This boot of the machine, or ``None`` where the OS does not say (then only a
    clean close makes the index trusted)."""
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


class KeyIndex:
    """The writer's key index: the file (attached to the writer's connection as
    ``keys``) and the batches in memory. Blocking; the writer's thread only."""

    def __init__(self, conn: sqlite3.Connection, ledger: Path, batch: int | None = None) -> None:
        self.conn = conn
        self.path = index_path(ledger)
        self.batch = batch or BATCH
        self.active: dict[bytes, int] = {}
        self.frozen: list[tuple[bytes, int]] = []
        self._frozen_hashes: list[bytes] = []
        self._frozen_max = 0
        self.cursor = 0
        """How much of ``frozen`` is in the file."""
        self._staged: list[tuple[bytes, int]] = []
        self._next_cursor = 0
        self._saving: keyfilter.Saving | None = None
        self.filter_added = 0
        """Ops the open added to the filter from the ledger (for the log and the tests)."""
        self.opened = self._open()
        """What opening did, for the log and the tests: ``"trusted"`` or why rebuilt."""
        self.filter = self._load_filter()
        """Every committed op's key (engine/ledger/keyfilter.py): a key it does not hold
        is neither in memory nor in the file, and is not looked up in either."""

    # -- the planner's side

    def find(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        """The op ids of those of ``hashes`` held in memory (the rest: ask the file)."""
        found: dict[bytes, int] = {}
        active, frozen, fh = self.active, self.frozen, self._frozen_hashes
        for h in hashes:
            op = active.get(h)
            if op is None and fh:
                i = bisect.bisect_left(fh, h)
                if i < len(fh) and fh[i] == h:
                    op = frozen[i][1]
            if op is not None:
                found[h] = op
        return found

    # -- a group (inside its transaction, then after it)

    def stage(self, ops: Sequence[tuple[bytes, int]]) -> None:
        """The group's new ops (key hash, op id), and its slice of the frozen batch into
        the file, in the group's transaction. Nothing of it counts until ``committed``."""
        self._staged = list(ops)
        self._next_cursor = self.cursor
        self._saving = saving = self.filter.due(len(ops))
        _save_filter(self.conn, saving)
        if not self.frozen:
            return
        end = min(len(self.frozen), self.cursor + max(64, math.ceil(len(ops) * DRAIN)))
        if self.cursor == 0:
            self.conn.execute(_SET_STATE, (WRITTEN, self._frozen_max))
        self.conn.executemany(_INSERT, self.frozen[self.cursor : end])
        if end == len(self.frozen):
            self.conn.execute(_SET_STATE, (COMPLETE, self._frozen_max))
        self._next_cursor = end

    def committed(self) -> None:
        if self._staged:
            # Before any batch can write these keys to the file: the filter holds
            # every key the file does.
            self.filter.add([h for h, _ in self._staged], max(op for _, op in self._staged))
        self._saving = None
        self.active.update(self._staged)
        self._staged = []
        self.cursor = self._next_cursor
        if self.frozen and self.cursor == len(self.frozen):
            self.frozen, self._frozen_hashes, self.cursor = [], [], 0
        if not self.frozen and len(self.active) >= self.batch:
            self._freeze()

    def rolled_back(self) -> None:
        self._staged = []
        self._next_cursor = self.cursor
        if self._saving is not None:
            self.filter.not_saved(self._saving)  # its turn comes again
            self._saving = None

    def _freeze(self) -> None:
        self.frozen = sorted(self.active.items())
        self._frozen_hashes = [h for h, _ in self.frozen]
        self._frozen_max = max(self.active.values())
        self.active = {}
        self.cursor = self._next_cursor = 0

    # -- open and close

    def close(self) -> None:
        """Write out both batches, make the file durable (its WAL checkpointed into it,
        both fsynced), then say so in the ledger: the next open trusts it whatever
        happens to the machine in between."""
        c = self.conn
        rest = sorted([*self.frozen[self.cursor :], *self.active.items()])
        saving = self.filter.unsaved()
        try:
            with _transaction(c):
                c.executemany(_INSERT, rest)
                _set_through(c, _last_op(c))
                _save_filter(c, saving)
        except BaseException:
            self.filter.not_saved(saving)
            raise
        self.active, self.frozen, self._frozen_hashes, self.cursor = {}, [], [], 0
        c.execute(f"PRAGMA {SCHEMA}.synchronous=FULL")
        busy = c.execute(f"PRAGMA {SCHEMA}.wal_checkpoint(TRUNCATE)").fetchone()[0]
        if busy:
            return  # not all of it durable: the next open trusts it only in this boot
        c.execute("UPDATE meta SET value = 'closed' WHERE key = ?", (MARKER,))

    def _open(self) -> str:
        c, path = self.conn, self.path
        boot = boot_id()
        row = c.execute("SELECT value FROM meta WHERE key = ?", (MARKER,)).fetchone()
        marker = None if row is None else row[0]
        trusted = marker == "closed" or (boot is not None and marker == boot)
        # Before the file is written at all, and durably: from here until a clean close,
        # a crash of the machine leaves the ledger saying the index must be rebuilt.
        c.execute(
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
            self._attach()
            reason = self._catch_up()
            if reason is not None:
                c.execute(f"DETACH DATABASE {SCHEMA}")
        if reason is None:
            return "trusted"
        for suffix in ("", "-wal", "-shm"):
            try:
                os.remove(str(path) + suffix)
            except FileNotFoundError:
                pass
        self._attach()
        self._build()
        if c.execute("SELECT 1 FROM ops LIMIT 1").fetchone() is not None:
            log.warning("ops key index %s rebuilt from the ledger: %s", path, reason)
        return f"rebuilt: {reason}"

    def _attach(self) -> None:
        from .store import create_private

        c = self.conn
        create_private(self.path)
        c.execute(f"ATTACH DATABASE ? AS {SCHEMA}", (str(self.path),))
        mode = c.execute(f"PRAGMA {SCHEMA}.journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise LedgerCorrupt(f"the key index's journal_mode is {mode!r}, expected 'wal'")
        c.execute(f"PRAGMA {SCHEMA}.synchronous=OFF")
        c.execute(f"PRAGMA {SCHEMA}.cache_size=-{CACHE_KIB}")
        c.executescript(_DDL)

    def _catch_up(self) -> str | None:
        """Add the ledger's ops past ``complete_through`` (what a kill left in memory
        only) and check the file is this ledger's; ``None`` if it then agrees, else why
        it must be rebuilt."""
        c = self.conn
        last = _last_op(c)
        state = dict(c.execute(f"SELECT key, value FROM {SCHEMA}.index_state").fetchall())
        through, written = int(state.get(COMPLETE, 0)), int(state.get(WRITTEN, 0))
        if max(through, written) > last:
            return f"it holds ops up to {max(through, written)}, the ledger's last is {last}"
        if through:
            theirs = c.execute("SELECT key_hash FROM ops WHERE id = ?", (through,)).fetchone()
            mine = c.execute(
                f"SELECT op FROM {SCHEMA}.op_keys WHERE key_hash = ?", (theirs[0],)
            ).fetchone()
            if mine is None or mine[0] != through:
                return f"its entry for op {through} is not the ledger's"
        with _transaction(c):
            # Part of a frozen batch may be in already: those rows are skipped here and
            # checked, with the rest, just below.
            c.execute(
                f"INSERT INTO {SCHEMA}.op_keys (key_hash, op) "
                "SELECT key_hash, id FROM ops WHERE id > ? ORDER BY key_hash "
                "ON CONFLICT (key_hash) DO NOTHING",
                (through,),
            )
            clash = c.execute(
                f"SELECT o.id, k.op FROM ops AS o LEFT JOIN {SCHEMA}.op_keys AS k "
                "ON k.key_hash = o.key_hash WHERE o.id > ? AND (k.op IS NULL OR k.op != o.id) "
                "LIMIT 1",
                (through,),
            ).fetchone()
            if clash is not None:
                raise LedgerCorrupt(f"two ops of the ledger share a key hash: {clash}")
            _set_through(c, last)
        if through < last:
            log.info("ops key index: ops %d..%d added from the ledger", through + 1, last)
        return None

    def _build(self) -> None:
        """Every op's key from the ledger, in key order (each leaf page written once)."""
        c = self.conn
        t0 = time.perf_counter()
        try:
            with _transaction(c):
                c.execute(
                    f"INSERT INTO {SCHEMA}.op_keys (key_hash, op) "
                    "SELECT key_hash, id FROM ops ORDER BY key_hash"
                )
                _set_through(c, _last_op(c))
        except sqlite3.IntegrityError as exc:
            raise LedgerCorrupt(f"two ops of the ledger share a key hash: {exc}") from exc
        n = c.execute(f"SELECT count(*) FROM {SCHEMA}.op_keys").fetchone()[0]
        log.info("ops key index: %d keys indexed in %.1f s", n, time.perf_counter() - t0)

    def _load_filter(self) -> keyfilter.KeyFilter:
        """The filter saved in the file, then every op of the ledger past the op up to
        which it is complete (none saved: every op, in one pass over the ledger)."""
        c = self.conn
        t0 = time.perf_counter()
        last = _last_op(c)
        rows = c.execute(
            f"SELECT slice, size, created_at, sealed_at FROM {SCHEMA}.filter_slices ORDER BY slice"
        ).fetchall()
        chunks = c.execute(f"SELECT slice, chunk, through, bits FROM {SCHEMA}.filter_chunks")
        f = keyfilter.KeyFilter.load(rows, chunks, last)
        start = f.through
        cur = c.execute("SELECT id, key_hash FROM ops WHERE id > ? ORDER BY id", (start,))
        while step := cur.fetchmany(_READD):
            f.add([h for _, h in step], step[-1][0])
        self.filter_added = last - start
        if last == start:
            return f  # complete as saved: nothing to save again
        with _transaction(c):
            _save_filter(c, f.unsaved())  # see KeyFilter.load: before it answers anything
        log.info(
            "ops key filter: ops %d..%d added from the ledger in %.1f s",
            start + 1,
            last,
            time.perf_counter() - t0,
        )
        return f


@contextmanager
def _transaction(c: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on the writer's connection (both files), rolled back if
    anything in it fails."""
    c.execute("BEGIN IMMEDIATE")
    try:
        yield
        c.execute("COMMIT")
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise


def _save_filter(c: sqlite3.Connection, saving: keyfilter.Saving) -> None:
    if saving.rows:
        c.executemany(_SAVE_SLICE, saving.rows)
    if saving.chunks:
        c.executemany(_SAVE_CHUNK, saving.chunks)


def _set_through(c: sqlite3.Connection, op: int) -> None:
    c.executemany(_SET_STATE, [(COMPLETE, op), (WRITTEN, op)])


def _last_op(c: sqlite3.Connection) -> int:
    return int(c.execute("SELECT coalesce(max(id), 0) FROM ops").fetchone()[0])

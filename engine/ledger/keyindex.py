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
``BATCH`` keys it is frozen (sorted) and handed to the index's own writer: a thread with
its own connection to the file (``_Drain``), the file's only writer once it is open. It
writes the batch in slices of ``SLICE`` keys, one transaction each, beside the ledger
writer's groups instead of inside them: at 10,000,000 keys a batch costs ~5.5 µs a key
(each slice dirties leaf pages all over the index), which on the writer's own thread
was the share of a group that grew with the ledger. Each slice goes in as one statement
(the keys as one blob, the op ids as one JSON array), so the thread takes the GIL once
per slice, not once per key, and SQLite runs it on the other core. The filter's chunks
are saved by that thread too. Lookups ask the filter (engine/ledger/keyfilter.py: every
committed key, so a new key stops there), then both batches, then the file, through a
reader connection of the writer's own. A batch leaves memory only once the thread has
committed all of it. ``complete_through`` (in the file) is the op id up to which every
op is in the file; a kill loses the batches in memory and nothing else: the next open
adds the ops past ``complete_through`` from the ledger.

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
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import keyfilter
from .model import LedgerCorrupt

log = logging.getLogger(__name__)

SCHEMA = "keys"
"""The attached schema's name on the writer's connection while the index opens."""

SUFFIX = ".keys"
"""The index file is the ledger's path plus this (with its own -wal and -shm)."""

BATCH = 200_000
"""Keys held in memory before a batch is frozen and written out, sorted. At 10,000,000
ops the index has ~90,000 leaf pages: a batch this size dirties ~0.4 of a page per
key instead of one. Memory: two batches, ~70 MB (more only while the index's writer
is behind: see ``BEHIND``)."""

SLICE = 10_000
"""Keys of a frozen batch the index's writer puts in one transaction (~55 ms of its
thread at 10,000,000 keys): the filter's saves wait at most that long."""

BEHIND = 4
"""If the index's writer is still on the frozen batch when the active one holds this
many batches' keys, the ledger's writer waits for it: memory stays bounded on a
machine too loaded to give the thread its share."""

CACHE_KIB = 262_144
"""The index's page cache (KiB), on its writer's connection."""

BUSY_MS = 5_000
"""How long a connection to the index file waits for a lock (only the open, the close
and WAL recovery take one that others wait on)."""

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
# The statements below name no schema: the index's own connections run them, where the
# file is ``main``, and so does the writer's while the index is attached (``keys`` is
# then the only database holding these tables).
_SAVE_SLICE = (
    "INSERT INTO filter_slices (slice, size, created_at, sealed_at) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (slice) DO UPDATE SET size = excluded.size, "
    "created_at = excluded.created_at, sealed_at = excluded.sealed_at"
)
_SAVE_CHUNK = (
    "INSERT INTO filter_chunks (slice, chunk, through, bits) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (slice, chunk) DO UPDATE SET through = excluded.through, bits = excluded.bits"
)
_READD = 10_000
"""Ledger ops read per step when the filter catches up at open."""

_INSERT = (
    "INSERT INTO op_keys (key_hash, op) "
    "SELECT substr(?1, j.key * 16 + 1, 16), j.value FROM json_each(?2) AS j"
)
"""Sorted keys in one statement: their 16-byte hashes end to end in ``?1``, their op ids
as a JSON array in ``?2`` (in that order: json_each yields the array's elements in
order, and the insert takes them so). One statement holds the GIL once, not per key,
and was 2.4× ``executemany``'s speed on this machine even on one thread (1.07 against
2.58 µs a key into an in-memory table of 200,000)."""
_SET_STATE = (
    "INSERT INTO index_state (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_FIND = "SELECT key_hash, op FROM op_keys WHERE key_hash IN "
COMPLETE = "complete_through"
"""Every op up to this id is in the file."""
WRITTEN = "written_through"
"""No op past this id is in the file (a batch's first slice raises it to the batch's
highest op): a file past the ledger's last op is not this ledger's as it stands."""

OP_COLUMNS = "o.id, o.key, o.kind, o.fingerprint, o.ok, o.code, o.result"
OPS_BY_ID = f"SELECT {OP_COLUMNS} FROM ops AS o"
"""The ops' columns the planner loads: by ``o.id`` for the keys the index found, and by
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


class KeyIndexFailed(RuntimeError):
    """The index's writer thread failed (a full disk, say): the ledger's writer stops
    at its next group rather than go on with keys that may never reach the file."""


class KeyIndex:
    """The writer's key index: the batches in memory, a reader on the file, and the
    file's own writer (``_Drain``). The ledger's connection has the file attached only
    while the index opens. Blocking; called from the ledger writer's thread only."""

    def __init__(self, conn: sqlite3.Connection, ledger: Path, batch: int | None = None) -> None:
        self.conn = conn
        self.path = index_path(ledger)
        self.batch = batch or BATCH
        self.active: dict[bytes, int] = {}
        self.frozen: list[tuple[bytes, int]] = []
        self._frozen_hashes: list[bytes] = []
        self._staged: list[tuple[bytes, int]] = []
        self.filter_added = 0
        """Ops the open added to the filter from the ledger (for the log and the tests)."""
        self.opened = self._open()
        """What opening did, for the log and the tests: ``"trusted"`` or why rebuilt."""
        self.filter = self._load_filter()
        """Every committed op's key (engine/ledger/keyfilter.py): a key it does not hold
        is neither in memory nor in the file, and is not looked up in either."""
        # From here on the file has one writer, its own thread: the ledger's writer must
        # not keep it attached (its BEGIN IMMEDIATE would take the file's write lock too).
        conn.execute(f"DETACH DATABASE {SCHEMA}")
        self.reader = _connect(self.path, cache_kib=None)
        """The ledger writer's lookups in the file (each a read of its own: it sees
        every slice committed before it)."""
        self._drain: _Drain | None = None
        try:
            self._drain = _Drain(self.path)
        except BaseException:
            self.reader.close()
            raise

    # -- the planner's side

    def find(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        """The op ids of those of ``hashes`` held in memory (the rest: ``in_file``)."""
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

    def in_file(self, hashes: Sequence[bytes]) -> list[tuple[bytes, int]]:
        """(key hash, op id) of those of ``hashes`` in the file: one statement, so the
        caller keeps ``hashes`` within SQLite's parameter limit."""
        sql = _FIND + "(" + ",".join("?" * len(hashes)) + ")"
        return self.reader.execute(sql, hashes).fetchall()

    # -- a group (inside its transaction, then after it)

    def stage(self, ops: Sequence[tuple[bytes, int]]) -> None:
        """The group's new ops (key hash, op id). Nothing of it counts until
        ``committed``."""
        self._check()
        self._staged = list(ops)

    def committed(self) -> None:
        drain = self._running()
        if self._staged:
            # Before any batch can write these keys to the file: the filter holds
            # every key the file does.
            self.filter.add([h for h, _ in self._staged], max(op for _, op in self._staged))
            drain.save(self.filter.due(len(self._staged)))
        self.active.update(self._staged)
        self._staged = []
        if self.frozen and not drain.busy():
            # Its last slice is committed: every lookup from here on finds it in the file.
            self.frozen, self._frozen_hashes = [], []
        if len(self.active) >= self.batch:
            if self.frozen and len(self.active) >= BEHIND * self.batch:
                drain.wait()
                self._check()
                self.frozen, self._frozen_hashes = [], []
            if not self.frozen:
                self._freeze(drain)

    def rolled_back(self) -> None:
        self._staged = []

    def _freeze(self, drain: _Drain) -> None:
        self.frozen = sorted(self.active.items())
        self._frozen_hashes = [h for h, _ in self.frozen]
        self.active = {}
        drain.write(self.frozen)

    def settle(self) -> None:
        """Wait until the index's writer has written everything handed to it (and drop
        the frozen batch it wrote): for tests and benchmarks that look at the file."""
        self._running().wait()
        self._check()
        self.frozen, self._frozen_hashes = [], []

    @property
    def thread_cpu_s(self) -> float:
        """The index's writer thread's CPU time so far (0 once closed)."""
        return 0.0 if self._drain is None else self._drain.cpu_s

    def _running(self) -> _Drain:
        if self._drain is None:
            raise KeyIndexFailed("the key index is closed")
        return self._drain

    def _check(self) -> None:
        self._running().check()

    # -- open and close

    def close(self) -> None:
        """Write out both batches, make the file durable (its WAL checkpointed into it,
        both fsynced), then say so in the ledger: the next open trusts it whatever
        happens to the machine in between."""
        drain, self._drain = self._running(), None
        self.reader.close()
        k = drain.conn
        try:
            drain.finish()  # every batch and save handed to it written, its thread ended
            drain.check()
            saving = self.filter.unsaved()
            try:
                with _transaction(k):
                    _insert(k, sorted(self.active.items()))
                    _set_through(k, _last_op(self.conn))
                    _save_filter(k, saving)
            except BaseException:
                self.filter.not_saved(saving)
                raise
            self.active, self.frozen, self._frozen_hashes = {}, [], []
            k.execute("PRAGMA synchronous=FULL")
            busy = k.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        finally:
            k.close()
        if busy:
            return  # not all of it durable: the next open trusts it only in this boot
        self.conn.execute("UPDATE meta SET value = 'closed' WHERE key = ?", (MARKER,))

    def abandon(self) -> None:
        """Stop the index's writer where it is, writing nothing more (the ledger's
        writer failed mid-transaction, or a test stands in for a kill): the next open
        finds what a kill leaves."""
        drain, self._drain = self._drain, None
        self.reader.close()
        if drain is not None:
            drain.stop()

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
        _pragmas(c, f"{SCHEMA}.", CACHE_KIB)
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


class _Drain:
    """The index file's writer once it is open: a connection of its own, on a thread of
    its own (started by the index's open, ended by its close or ``stop``), which writes
    the frozen batch slice by slice and the filter's chunks as they come due. The
    ledger's writer hands it work and never waits for it, except at a clean close, in
    ``settle``, and when it is ``BEHIND``."""

    def __init__(self, path: Path) -> None:
        self.conn = _connect(path, cache_kib=CACHE_KIB)
        self.error: BaseException | None = None
        self._cv = threading.Condition()
        self._batch: list[tuple[bytes, int]] | None = None
        self._saves: list[keyfilter.Saving] = []
        self._saving = False
        """Saves taken from ``_saves``, being written."""
        self._stopping = False
        self.cpu_s = 0.0
        """The thread's CPU time so far, writing (for the growth bench: the cost it takes
        off the ledger writer's thread and puts on another core)."""
        self._thread = threading.Thread(target=self._run, name="crashd-key-index", daemon=True)
        self._thread.start()

    # -- the ledger writer's side

    def write(self, batch: list[tuple[bytes, int]]) -> None:
        """A frozen batch (sorted); one at a time (``busy`` until it is all written)."""
        with self._cv:
            assert self._batch is None, "a batch is being written already"
            self._batch = batch
            self._cv.notify_all()

    def save(self, saving: keyfilter.Saving) -> None:
        if saving.rows or saving.chunks:
            with self._cv:
                self._saves.append(saving)
                self._cv.notify_all()

    def check(self) -> None:
        """Raise ``KeyIndexFailed`` if the thread failed."""
        if self.error is not None:
            raise KeyIndexFailed(f"the key index's writer failed: {self.error!r}") from self.error

    def busy(self) -> bool:
        """Still writing the frozen batch (every lookup must find it in memory), or
        failed to (then the ledger's writer stops at its next group)."""
        with self._cv:
            return self._batch is not None

    def wait(self) -> None:
        """Until everything handed over is written (or the thread failed)."""
        with self._cv:
            while (self._batch is not None or self._saves or self._saving) and self.error is None:
                self._cv.wait()

    def finish(self) -> None:
        """Everything handed over written, then the thread ended (a clean close: the
        caller then has the connection to itself)."""
        self.wait()
        self._end()

    def stop(self) -> None:
        """The thread ended after the slice it is on, writing nothing more, and the
        connection closed (what is left in memory is lost, as in a kill)."""
        self._end()
        self.conn.close()

    def _end(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        self._thread.join()

    # -- its thread

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not (self._stopping or self._saves or self._batch is not None):
                        self._cv.wait()
                    if self._stopping:
                        return
                    batch = self._batch
                t0 = time.thread_time()
                self._save_due()
                if batch is not None:
                    self._write(batch)
                self.cpu_s += time.thread_time() - t0
        except BaseException as exc:  # handed to the ledger's writer, which stops
            log.exception("the key index's writer failed")
            with self._cv:
                self.error = exc
                self._cv.notify_all()

    def _save_due(self) -> None:
        with self._cv:
            saves, self._saves = self._saves, []
            self._saving = bool(saves)
        if saves:
            with _transaction(self.conn):
                for saving in saves:
                    _save_filter(self.conn, saving)
            with self._cv:
                # Written: ``wait`` may be waiting for exactly this.
                self._saving = False
                self._cv.notify_all()

    def _write(self, batch: list[tuple[bytes, int]]) -> None:
        c, top = self.conn, max(op for _, op in batch)
        for start in range(0, len(batch), SLICE):
            with self._cv:
                if self._stopping:
                    return
            end = start + SLICE
            with _transaction(c):
                if start == 0:
                    c.execute(_SET_STATE, (WRITTEN, top))
                _insert(c, batch[start:end])
                if end >= len(batch):
                    c.execute(_SET_STATE, (COMPLETE, top))
            self._save_due()  # the filter's chunks wait at most a slice
        with self._cv:
            self._batch = None
            self._cv.notify_all()


def _connect(path: Path, cache_kib: int | None) -> sqlite3.Connection:
    """A connection of the index's own to its file (which the open has made)."""
    c = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    try:
        c.execute(f"PRAGMA busy_timeout={BUSY_MS}")
        _pragmas(c, "", cache_kib)
    except BaseException:
        c.close()
        raise
    return c


def _pragmas(c: sqlite3.Connection, schema: str, cache_kib: int | None) -> None:
    """WAL (checked), unsynced, and the page cache, on ``schema`` (``"keys."`` while
    attached, ``""`` on the index's own connections)."""
    mode = c.execute(f"PRAGMA {schema}journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise LedgerCorrupt(f"the key index's journal_mode is {mode!r}, expected 'wal'")
    c.execute(f"PRAGMA {schema}synchronous=OFF")
    if cache_kib is not None:
        c.execute(f"PRAGMA {schema}cache_size=-{cache_kib}")


@contextmanager
def _transaction(c: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, rolled back if anything in it fails (on the writer's
    connection while the index is attached: both files)."""
    c.execute("BEGIN IMMEDIATE")
    try:
        yield
        c.execute("COMMIT")
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise


def _insert(c: sqlite3.Connection, rows: Sequence[tuple[bytes, int]]) -> None:
    if rows:
        c.execute(
            _INSERT, (b"".join(h for h, _ in rows), "[" + ",".join(str(op) for _, op in rows) + "]")
        )


def _save_filter(c: sqlite3.Connection, saving: keyfilter.Saving) -> None:
    if saving.rows:
        c.executemany(_SAVE_SLICE, saving.rows)
    if saving.chunks:
        c.executemany(_SAVE_CHUNK, saving.chunks)


def _set_through(c: sqlite3.Connection, op: int) -> None:
    c.executemany(_SET_STATE, [(COMPLETE, op), (WRITTEN, op)])


def _last_op(c: sqlite3.Connection) -> int:
    return int(c.execute("SELECT coalesce(max(id), 0) FROM ops").fetchone()[0])

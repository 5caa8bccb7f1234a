"""A Bloom filter over the ops' key hashes, in front of the key index's file
(engine/ledger/keyindex.py). Pure: it holds bits and says which chunks to save; the
index reads and writes them.

Why: a new op's key is almost never held already, but on a grown ledger asking the
file to say so cost 9.2 µs per key (a B-tree descent on a random page; measured on a
ledger of 3,000,000 ops, against 1.1 µs on a fresh one whose keys were all in memory).
The filter answers "not held" for all but ~0.3% of new keys without the file (1.3 µs per
key at 10,000,000 keys, measured with a bench beside it on this 2-core machine).

Safety: a key the filter says is absent is not looked up, so the filter must hold
every key the file holds, or a replay would become a second op. It is built to hold
*every committed op's key*, a superset of the file's: a key joins it when its group
commits, before any batch can write it to the file, and an open adds every op of the
ledger past the op up to which the saved filter is complete (``KeyFilter.through`` of
the oldest saved chunk). A false positive only costs a lookup.

Growth without a rescan: the filter is a list of slices (a scalable Bloom filter). New
keys join the last one; when it holds its capacity it is sealed and a slice twice its
size begins. Nothing is ever re-hashed, and the false-positive rate stays bounded:
~0.24% per full slice (4 probes, 16 bits per key), ~0.3% for the two slices of a
10,000,000-key ledger.

Saving without a stall: the bits are saved in chunks of ``CHUNK`` bytes, a few per
group (``due``), round the active slice every ``SAVE_SPAN`` ops, each chunk with the op
up to which it is complete. A sealed slice's chunks are saved once more after it is
sealed, and are then final. So a kill costs re-adding at most about 4/3 ``SAVE_SPAN``
ops at the next open (a sealed slice's last saves take a third of a span, the new
active slice's first round one span), not a rebuild."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PROBES = 4
"""Bits set and tested per key (the loops in ``add`` and ``maybe`` are unrolled for 4)."""

BITS_PER_KEY = 16
"""A slice's bits per key of its capacity: ~0.24% false positives when full."""

FIRST = 1 << 22
"""The first slice's capacity in keys (8 MiB of bits); each next one doubles. Large, so
that a 10,000,000-op ledger has two slices to test per key, not four."""

CHUNK = 1 << 16
"""Bytes per saved chunk (64 KiB)."""

SAVE_SPAN = 1_000_000
"""The active slice is saved whole every this many ops (~17 bytes per op for the 16 MiB
slice of a ledger past 4,194,304 ops); a kill re-adds up to about 4/3 of this many at
the next open."""

_LOW = (1 << 64) - 1


@dataclass
class Slice:
    bits: bytearray
    created_at: int
    """It holds no key of an op up to this one: the previous slice's ``sealed_at``, or
    lower, if an open added older ops to it (``KeyFilter.load``)."""
    sealed_at: int | None = None
    """The last op whose key it holds, once sealed; ``None`` while it takes keys."""
    keys: int = 0
    """Keys added (a key added twice counts twice: that only seals it sooner)."""

    @property
    def capacity(self) -> int:
        return len(self.bits) * 8 // BITS_PER_KEY

    @property
    def chunks(self) -> int:
        return len(self.bits) // CHUNK


Row = tuple[int, int, int, int | None]
"""A slice's saved row: (slice, size in bytes, created_at, sealed_at)."""
ChunkRow = tuple[int, int, int, bytes]
"""A saved chunk: (slice, chunk, through, bits)."""


@dataclass
class Saving:
    """Rows to write in one transaction, and what to restore if it rolls back."""

    rows: list[Row]
    chunks: list[ChunkRow]
    cursor: int
    credit: float
    finals: list[tuple[int, int]]
    rows_due: set[int]


class KeyFilter:
    """The filter. ``through``: every op up to this id has its key in it."""

    def __init__(self, first: int | None = None, slices: list[Slice] | None = None) -> None:
        """A new filter, or (``slices``: ``load``'s) the saved one's slices."""
        self.slices: list[Slice] = slices or []
        self.through = 0
        if not self.slices:
            self._new_slice(_size_for(first or FIRST), 0)
        self._final: deque[tuple[int, int]] = deque()
        """Chunks of sealed slices not saved since their slice was sealed."""
        self._cursor = 0
        """The active slice's next chunk to save."""
        self._credit = 0.0
        self._rows_due: set[int] = {0}
        """Slices whose row changed since it was saved."""

    def _new_slice(self, size: int, created_at: int) -> None:
        self.slices.append(Slice(bytearray(size), created_at))

    # -- keys

    def add(self, hashes: Sequence[bytes], through: int) -> None:
        """The keys of the ops up to ``through`` (a committed group's), into the active
        slice, sealed if that fills it."""
        live = self.slices[-1]
        bits, mask = live.bits, len(live.bits) * 8 - 1
        for h in hashes:
            x = int.from_bytes(h, "little")
            a, b = x & _LOW, (x >> 64) | 1
            # PROBES (4) unrolled, as in ``maybe``.
            p = a & mask
            bits[p >> 3] |= 1 << (p & 7)
            a += b
            p = a & mask
            bits[p >> 3] |= 1 << (p & 7)
            a += b
            p = a & mask
            bits[p >> 3] |= 1 << (p & 7)
            p = (a + b) & mask
            bits[p >> 3] |= 1 << (p & 7)
        live.keys += len(hashes)
        self.through = max(self.through, through)
        if live.keys >= live.capacity:
            live.sealed_at = self.through
            n = len(self.slices) - 1
            self._final.extend((n, c) for c in range(live.chunks))
            self._new_slice(len(live.bits) * 2, self.through)
            self._rows_due.update((n, n + 1))
            self._cursor = 0

    def maybe(self, hashes: Iterable[bytes]) -> list[bytes]:
        """Those of ``hashes`` the filter may hold (all it holds, and ~0.3% of the rest)."""
        out = []
        slices = [(s.bits, len(s.bits) * 8 - 1) for s in self.slices]
        for h in hashes:
            x = int.from_bytes(h, "little")
            a, b = x & _LOW, (x >> 64) | 1
            # PROBES (4) unrolled: this loop is on every group's path.
            c = a + b
            d = c + b
            e = d + b
            for bits, mask in slices:
                p = a & mask
                if not bits[p >> 3] >> (p & 7) & 1:
                    continue
                p = c & mask
                if not bits[p >> 3] >> (p & 7) & 1:
                    continue
                p = d & mask
                if not bits[p >> 3] >> (p & 7) & 1:
                    continue
                p = e & mask
                if not bits[p >> 3] >> (p & 7) & 1:
                    continue
                out.append(h)
                break
        return out

    # -- saving

    def due(self, ops: int) -> Saving:
        """What to save with a group of ``ops`` ops: the changed slices' rows, and the
        chunks whose turn it is (sealed slices' last saves first), complete ``through``
        the ops committed before the group. If the group does not commit, give it back
        (``not_saved``)."""
        saving = Saving([], [], self._cursor, self._credit, [], set(self._rows_due))
        live = len(self.slices) - 1
        self._credit += ops * (self.slices[live].chunks + len(self._final)) / SAVE_SPAN
        while self._credit >= 1:
            self._credit -= 1
            if self._final:
                s, c = self._final.popleft()
                saving.finals.append((s, c))
            else:
                s, c = live, self._cursor
                self._cursor = (self._cursor + 1) % self.slices[live].chunks
            saving.chunks.append(self._chunk(s, c))
        saving.rows = [self._row(s) for s in sorted(self._rows_due)]
        self._rows_due.clear()
        return saving

    def not_saved(self, saving: Saving) -> None:
        """``saving``'s transaction rolled back: what it would have saved is due again."""
        self._cursor, self._credit = saving.cursor, saving.credit
        self._final.extendleft(reversed(saving.finals))
        self._rows_due |= saving.rows_due

    def unsaved(self) -> Saving:
        """Everything not final yet (for a clean close): the next open re-adds nothing."""
        live = len(self.slices) - 1
        chunks = [self._chunk(s, c) for s, c in self._final]
        chunks += [self._chunk(live, c) for c in range(self.slices[live].chunks)]
        saving = Saving(
            [self._row(s) for s in range(len(self.slices))],
            chunks,
            self._cursor,
            self._credit,
            list(self._final),
            set(self._rows_due),
        )
        self._final.clear()
        self._rows_due.clear()
        return saving

    def _chunk(self, s: int, c: int) -> ChunkRow:
        return (s, c, self.through, bytes(self.slices[s].bits[c * CHUNK : (c + 1) * CHUNK]))

    def _row(self, s: int) -> Row:
        sl = self.slices[s]
        return (s, len(sl.bits), sl.created_at, sl.sealed_at)

    # -- loading

    @classmethod
    def load(cls, rows: Sequence[Row], chunks: Iterable[ChunkRow], last_op: int) -> KeyFilter:
        """The saved filter, complete ``through`` the oldest op any of its chunks lacks.
        A missing chunk is empty and lacks every op after its slice began; anything
        that does not add up (or claims ops past ``last_op``, the ledger's last) is
        dropped: a new filter, ``through`` 0.

        The caller then adds the ledger's ops past ``through`` and saves ``unsaved()``
        before the filter answers anything. Those ops go to the active slice, even the
        ones a sealed slice lacked; the active slice's saved chunks do not hold them yet,
        and claim to be complete past them, so they must be saved again at once."""
        if not _rows_add_up(rows, last_op):
            return cls()
        f = cls(slices=[Slice(bytearray(size), c, sealed) for _, size, c, sealed in rows])
        lacks: dict[tuple[int, int], int] = {
            (s, c): sl.created_at for s, sl in enumerate(f.slices) for c in range(sl.chunks)
        }
        for s, c, through, bits in chunks:
            if (s, c) not in lacks or len(bits) != CHUNK or not 0 <= through <= last_op:
                return cls()
            f.slices[s].bits[c * CHUNK : (c + 1) * CHUNK] = bits
            lacks[(s, c)] = through
        through = last_op
        for (s, c), t in lacks.items():
            sealed = f.slices[s].sealed_at
            if sealed is None or t < sealed:
                through = min(through, t)
                if sealed is not None:
                    f._final.append((s, c))
        f.through = through
        # The caller adds the ops past ``through`` to the active slice, some perhaps
        # older than the slice: it must say it holds them, or losing one of its chunks
        # later would lose them too.
        f.slices[-1].created_at = min(f.slices[-1].created_at, through)
        for sl in f.slices:
            sl.keys = sl.capacity if sl.sealed_at is not None else _estimate(sl.bits)
        # Every slice's row is saved again at the next save, the sealed slices' stale
        # chunks too: what was loaded is the state to keep.
        f._rows_due = set(range(len(f.slices)))
        return f


def _size_for(keys: int) -> int:
    """A slice's bytes for ``keys`` keys: a power of two, a whole number of chunks."""
    return max(CHUNK, 1 << math.ceil(math.log2(keys * BITS_PER_KEY / 8)))


def _rows_add_up(rows: Sequence[Row], last_op: int) -> bool:
    if not rows:
        return False
    for i, (s, size, created_at, sealed_at) in enumerate(rows):
        if s != i or size < CHUNK or size & (size - 1) or not 0 <= created_at <= last_op:
            return False
        last = i == len(rows) - 1
        if (sealed_at is None) != last or (sealed_at is not None and sealed_at > last_op):
            return False
    return True


def _estimate(bits: bytearray) -> int:
    """Keys in a slice, from the share of its bits set (a kill leaves no count)."""
    m = len(bits) * 8
    ones = int.from_bytes(bits, "little").bit_count()
    if ones >= m:
        return m
    return round(-m / PROBES * math.log(1 - ones / m))

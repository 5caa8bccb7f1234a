"""The key index's Bloom filter (engine/ledger/keyfilter.py), pure: whatever was saved
of it and whenever the process died, the filter loaded from what was saved, plus the
ops past its ``through``, holds every key ever added (a false negative would be a
replay posted as a second op). A Hypothesis state machine drives groups, commits,
rollbacks, kills, clean closes and lost rows, with slices and chunks a few bytes long so
that slices seal and chunks cycle within a few steps."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from crashd.engine.ledger import keyfilter
from crashd.engine.ledger.keyfilter import ChunkRow, KeyFilter, Row


def h(n: int) -> bytes:
    return hashlib.sha256(b"key %d" % n).digest()[:16]


@pytest.fixture
def tiny(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Chunks of 16 bytes, a first slice of 8 keys (one chunk), the active slice saved
    whole every 10 ops."""
    monkeypatch.setattr(keyfilter, "CHUNK", 16)
    monkeypatch.setattr(keyfilter, "FIRST", 8)
    monkeypatch.setattr(keyfilter, "SAVE_SPAN", 10)
    yield


def saved_after(
    f: KeyFilter,
    saving: keyfilter.Saving,
    rows: dict[int, Row],
    chunks: dict[tuple[int, int], ChunkRow],
) -> None:
    rows.update({r[0]: r for r in saving.rows})
    chunks.update({(c[0], c[1]): c for c in saving.chunks})


def test_every_key_added_is_held_and_few_others_are() -> None:
    f = KeyFilter()
    held = [h(n) for n in range(200_000)]
    for i in range(0, len(held), 1000):
        f.add(held[i : i + 1000], i + 1000)
    assert f.maybe(held) == held
    others = [h(n) for n in range(200_000, 300_000)]
    false = len(f.maybe(others))
    # One slice at a fifth of its capacity: the expected rate is ~0.01%.
    assert false < 100, false


def test_a_full_slice_is_sealed_and_the_next_is_twice_its_size(tiny: None) -> None:
    f = KeyFilter()
    assert [len(s.bits) for s in f.slices] == [16]  # 8 keys at 16 bits each
    f.add([h(n) for n in range(8)], 8)
    assert [(len(s.bits), s.created_at, s.sealed_at) for s in f.slices] == [
        (16, 0, 8),
        (32, 8, None),
    ]
    f.add([h(n) for n in range(8, 24)], 24)
    assert [len(s.bits) for s in f.slices] == [16, 32, 64]
    assert f.maybe([h(n) for n in range(24)]) == [h(n) for n in range(24)]


def test_a_clean_close_saves_all_and_the_load_re_adds_nothing(tiny: None) -> None:
    f = KeyFilter()
    rows: dict[int, Row] = {}
    chunks: dict[tuple[int, int], ChunkRow] = {}
    for n in range(0, 40, 4):
        saved_after(f, f.due(4), rows, chunks)
        f.add([h(i) for i in range(n, n + 4)], n + 4)
    saved_after(f, f.unsaved(), rows, chunks)
    g = KeyFilter.load(sorted(rows.values()), chunks.values(), 40)
    assert g.through == 40
    assert g.maybe([h(n) for n in range(40)]) == [h(n) for n in range(40)]
    assert [(s.created_at, s.sealed_at) for s in g.slices] == [
        (s.created_at, s.sealed_at) for s in f.slices
    ]


@pytest.mark.parametrize(
    "spoil",
    [
        "no rows",
        "a slice row lost",
        "a short chunk",
        "a chunk from the future",
        "a slice sealed in the future",
        "a chunk of no slice",
    ],
)
def test_saved_rows_that_do_not_add_up_give_a_new_filter(tiny: None, spoil: str) -> None:
    f = KeyFilter()
    for n in range(0, 30, 3):
        f.add([h(i) for i in range(n, n + 3)], n + 3)
    saving = f.unsaved()
    rows, chunks = list(saving.rows), list(saving.chunks)
    last = 30
    if spoil == "no rows":
        rows = []
    elif spoil == "a slice row lost":
        del rows[1]
    elif spoil == "a short chunk":
        s, c, t, b = chunks[0]
        chunks[0] = (s, c, t, b[:-1])
    elif spoil == "a chunk from the future":
        last = 29
        chunks = [(s, c, min(t, 29), b) for s, c, t, b in chunks]
        chunks[0] = (*chunks[0][:2], 30, chunks[0][3])
        rows = [(s, z, min(a, 29), None if e is None else min(e, 29)) for s, z, a, e in rows]
    elif spoil == "a slice sealed in the future":
        last = 20
        chunks = [(s, c, min(t, 20), b) for s, c, t, b in chunks]
    elif spoil == "a chunk of no slice":
        chunks.append((len(rows), 0, 30, bytes(16)))
    g = KeyFilter.load(rows, chunks, last)
    assert g.through == 0 and len(g.slices) == 1 and not any(g.slices[0].bits)


def test_a_lost_chunk_lacks_every_op_since_its_slice_began(tiny: None) -> None:
    f = KeyFilter()
    for n in range(0, 30, 3):
        f.add([h(i) for i in range(n, n + 3)], n + 3)
    saving = f.unsaved()
    live = len(saving.rows) - 1
    began = saving.rows[live][2]
    kept = [c for c in saving.chunks if not (c[0] == live and c[1] == 0)]
    g = KeyFilter.load(saving.rows, kept, 30)
    assert g.through == began


class FilterMachine(RuleBasedStateMachine):
    """Groups of new keys with their ops, each group's ``due`` saved if it commits and
    given back if it rolls back; kills (the filter loaded from what was saved, then the
    ledger's ops past its ``through`` added), clean closes, and saved chunks lost. The
    filter always holds every committed key."""

    def __init__(self) -> None:
        super().__init__()
        self.saved = (keyfilter.CHUNK, keyfilter.FIRST, keyfilter.SAVE_SPAN)
        keyfilter.CHUNK, keyfilter.FIRST, keyfilter.SAVE_SPAN = 16, 8, 10
        self.f = KeyFilter()
        self.ledger: list[bytes] = []
        """Committed ops' key hashes: op id i + 1 holds ``ledger[i]``."""
        self.rows: dict[int, Row] = {}
        self.chunks: dict[tuple[int, int], ChunkRow] = {}

    def teardown(self) -> None:
        keyfilter.CHUNK, keyfilter.FIRST, keyfilter.SAVE_SPAN = self.saved

    @rule(n=st.integers(1, 12), commits=st.booleans())
    def group(self, n: int, commits: bool) -> None:
        keys = [h(len(self.ledger) + i) for i in range(n)]
        saving = self.f.due(n)
        for c in saving.chunks:
            # Complete through the ops committed before the group: none of its own.
            assert c[2] == self.f.through <= len(self.ledger)
        if not commits:
            self.f.not_saved(saving)
            return
        saved_after(self.f, saving, self.rows, self.chunks)
        self.ledger += keys
        self.f.add(keys, len(self.ledger))

    def _reopen(self) -> None:
        last = len(self.ledger)
        self.f = KeyFilter.load(sorted(self.rows.values()), list(self.chunks.values()), last)
        assert 0 <= self.f.through <= last
        for i in range(self.f.through, last, 5):
            self.f.add(self.ledger[i : i + 5], min(i + 5, last))
        # As KeyIndex does at open: what the load changed is saved before any group.
        saved_after(self.f, self.f.unsaved(), self.rows, self.chunks)

    @rule()
    def kill(self) -> None:
        self._reopen()

    @rule()
    def close_cleanly(self) -> None:
        saved_after(self.f, self.f.unsaved(), self.rows, self.chunks)
        last = len(self.ledger)
        self._reopen()
        assert self.f.through == last  # nothing to add again

    @precondition(lambda self: len(self.chunks) > 1)
    @rule(data=st.data())
    def a_saved_chunk_is_lost(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.chunks)))
        del self.chunks[key]

    @invariant()
    def every_committed_key_is_held(self) -> None:
        assert self.f.maybe(self.ledger) == self.ledger


FilterMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_filter_machine = FilterMachine.TestCase


def test_the_docs_state_the_filter_as_the_module_has_it() -> None:
    """docs/ledger.md's filter bullet gives the first slice, the bits per key, the
    probes, the chunk and the save span: the module's, not a copy that drifts."""
    import re

    from support.servers import REPO

    doc = (REPO / "docs" / "ledger.md").read_text()
    bullet = doc.split("- **A Bloom filter in front of the file**", 1)[1].split("\n- ", 1)[0]
    bullet = " ".join(bullet.split())

    def stated(pattern: str) -> int:
        found = re.search(pattern, bullet)
        assert found is not None, f"the bullet no longer states {pattern!r}"
        return int(found[1].replace(",", ""))

    assert stated(r"the first for ([\d,]+) keys \(`keyfilter\.FIRST`\)") == keyfilter.FIRST
    assert stated(r"(\d+) bits per key \(`keyfilter\.BITS_PER_KEY`\)") == keyfilter.BITS_PER_KEY
    assert stated(r"(\d+) probes \(`keyfilter\.PROBES`\)") == keyfilter.PROBES
    assert stated(r"in (\d+) KiB chunks") * 1024 == keyfilter.CHUNK
    assert stated(r"every ([\d,]+) ops \(`keyfilter\.SAVE_SPAN`\)") == keyfilter.SAVE_SPAN

"""The ops' key index in its own file (engine/ledger/keyindex.py): batches held in
memory and written sorted, trusted after a clean close or a kill in the same boot and
then caught up from the ledger, rebuilt when it cannot be trusted, and in every case the
keys stay unique: a replay answers the first op, a reused key with another body is
refused, and nothing is written twice. A Hypothesis state machine drives groups, kills,
clean closes and reboots in any order. SQLite only (PostgreSQL keeps the index in its
ops table)."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from crashd.engine.ledger import keyfilter, keyindex
from crashd.engine.ledger.model import IdempotencyConflict, LedgerCorrupt
from crashd.engine.ledger.ops import PspDeposit
from crashd.engine.ledger.store import Store


def deposit(n: int, amount: int = 100) -> PspDeposit:
    return PspDeposit(f"event-{n}", "production", "acme", f"u{n % 7}", amount)


def killed(store: Store) -> None:
    """What a SIGKILL leaves: the files as they are, no clean close (the index's writer
    thread stopped wherever it was)."""
    if store._keys is not None:
        store._keys.abandon()
    store.conn.close()
    store._lock.release()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def index_rows(ledger: Path) -> list[tuple[int, bytes]]:
    conn = raw(keyindex.index_path(ledger))
    try:
        return sorted((op, h) for h, op in conn.execute("SELECT key_hash, op FROM op_keys"))
    finally:
        conn.close()


def ledger_rows(ledger: Path) -> list[tuple[int, bytes]]:
    conn = raw(ledger)
    try:
        return conn.execute("SELECT id, key_hash FROM ops ORDER BY id").fetchall()
    finally:
        conn.close()


def reboot(ledger: Path) -> None:
    """The machine went down with the index open: the ledger says another boot."""
    conn = raw(ledger)
    conn.execute("UPDATE meta SET value = 'an earlier boot' WHERE key = ?", (keyindex.MARKER,))
    conn.close()


def assert_keys_hold(store: Store, events: range) -> None:
    """Every op so far replays, and a reused key with another amount is refused."""
    answers = store.apply_group([deposit(n) for n in events], 0)
    assert all(getattr(a, "replayed", False) for a in answers), answers
    [refused] = store.apply_group([deposit(events[0], amount=999)], 0)
    assert isinstance(refused, IdempotencyConflict)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Batches of 10 keys: a few groups fill, freeze and write out several."""
    monkeypatch.setattr(keyindex, "BATCH", 10)
    yield


def test_a_new_ledger_gets_its_index_and_a_clean_close_is_trusted(ledger: Path) -> None:
    store = Store(ledger)
    assert store.key_index == "rebuilt: no index file"
    store.apply_group([deposit(n) for n in range(50)], 0)
    assert index_rows(ledger) == []  # the first batch is still in memory
    assert_keys_hold(store, range(50))
    store.close()
    assert index_rows(ledger) == ledger_rows(ledger) and len(index_rows(ledger)) == 50
    store = Store(ledger)
    assert store.key_index == "trusted"
    assert_keys_hold(store, range(50))
    store.close()
    assert len(ledger_rows(ledger)) == 50  # the replays and the refusals wrote no op


def test_the_ledgers_own_table_has_no_unique_key_index_any_more(ledger: Path) -> None:
    Store(ledger).close()
    conn = raw(ledger)
    try:
        indexes = conn.execute("PRAGMA index_list(ops)").fetchall()
    finally:
        conn.close()
    assert indexes == []  # only the rowid: every insert appends


def test_batches_are_written_out_sorted_as_groups_commit(ledger: Path, small_batches: None) -> None:
    store = Store(ledger)
    for n in range(0, 57, 3):
        store.apply_group([deposit(n + i) for i in range(3)], 0)
    assert store._keys is not None
    store._keys.settle()  # its thread has written every batch handed to it
    written = index_rows(ledger)
    assert len(written) == 48  # four batches of 12 out, the newest 9 keys in memory
    assert set(written) <= set(ledger_rows(ledger))
    assert_keys_hold(store, range(57))
    store.close()
    assert index_rows(ledger) == ledger_rows(ledger)


def test_a_kill_loses_the_batches_in_memory_and_the_open_adds_them(
    ledger: Path, small_batches: None
) -> None:
    store = Store(ledger)
    for n in range(0, 35, 5):
        store.apply_group([deposit(n + i) for i in range(5)], 0)
    killed(store)
    assert len(index_rows(ledger)) < 35
    store = Store(ledger)
    assert store.key_index == "trusted"
    assert index_rows(ledger) == ledger_rows(ledger)
    assert_keys_hold(store, range(35))
    store.close()


def test_an_index_left_open_in_another_boot_is_rebuilt(ledger: Path, small_batches: None) -> None:
    store = Store(ledger)
    store.apply_group([deposit(n) for n in range(40)], 0)
    store.apply_group([deposit(n) for n in range(40, 45)], 0)
    killed(store)
    reboot(ledger)
    idx = raw(keyindex.index_path(ledger))
    idx.execute("DELETE FROM op_keys WHERE op % 3 = 0")  # lost pages, anywhere
    idx.close()
    store = Store(ledger)
    assert store.key_index == "rebuilt: not closed cleanly, and last opened in another boot"
    assert index_rows(ledger) == ledger_rows(ledger)
    assert_keys_hold(store, range(45))
    store.close()


def test_a_restored_older_ledger_beside_a_newer_index_rebuilds_it(
    ledger: Path, tmp_path: Path, small_batches: None
) -> None:
    store = Store(ledger)
    store.apply_group([deposit(n) for n in range(20)], 0)
    copy = raw(tmp_path / "backup.sqlite3")
    store.conn.backup(copy, name="main")
    copy.close()
    store.apply_group([deposit(n) for n in range(20, 40)], 0)
    store.apply_group([deposit(n) for n in range(40, 45)], 0)
    store.close()
    (tmp_path / "backup.sqlite3").replace(ledger)
    store = Store(ledger)
    assert store.key_index.startswith("rebuilt: it holds ops up to")
    assert index_rows(ledger) == ledger_rows(ledger)
    # The keys the lost ops held are free again: their first use is a new op.
    [posted] = store.apply_group([deposit(30)], 0)
    assert getattr(posted, "replayed", None) is False
    assert_keys_hold(store, range(20))
    store.close()


def test_a_missing_or_foreign_index_file_is_rebuilt(ledger: Path, tmp_path: Path) -> None:
    store = Store(ledger)
    store.apply_group([deposit(n) for n in range(10)], 0)
    store.close()
    keyindex.index_path(ledger).unlink()
    store = Store(ledger)
    assert store.key_index == "rebuilt: no index file"
    assert_keys_hold(store, range(10))
    store.close()
    # Another ledger's index beside this one (a copied file).
    other = tmp_path / "other.sqlite3"
    store = Store(other)
    store.apply_group([PspDeposit(f"x{n}", "production", "acme", "u", 1) for n in range(10)], 0)
    store.close()
    keyindex.index_path(other).replace(keyindex.index_path(ledger))
    store = Store(ledger)
    assert store.key_index == "rebuilt: its entry for op 10 is not the ledger's"
    assert_keys_hold(store, range(10))
    store.close()


def test_a_ledger_with_two_ops_on_one_key_hash_is_refused(ledger: Path) -> None:
    store = Store(ledger)
    store.apply_group([deposit(n) for n in range(3)], 0)
    store.close()
    conn = raw(ledger)
    conn.execute(
        "INSERT INTO ops (id, key, key_hash, kind, fingerprint, ok, code, result, ts) "
        "SELECT 4, key, key_hash, kind, fingerprint, ok, code, result, ts FROM ops WHERE id = 1"
    )
    conn.close()
    with pytest.raises(LedgerCorrupt, match="share a key hash"):
        Store(ledger)  # trusted, caught up: the clash is found
    keyindex.index_path(ledger).unlink()
    with pytest.raises(LedgerCorrupt, match="share a key hash"):
        Store(ledger)  # rebuilt: the same


@pytest.fixture
def small_filter(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A filter of 16-byte chunks, a first slice of 64 keys, saved round every 100 ops."""
    monkeypatch.setattr(keyfilter, "CHUNK", 16)
    monkeypatch.setattr(keyfilter, "FIRST", 64)
    monkeypatch.setattr(keyfilter, "SAVE_SPAN", 100)
    yield


def test_a_clean_close_saves_the_filter_and_the_next_open_adds_nothing(
    ledger: Path, small_batches: None, small_filter: None
) -> None:
    store = Store(ledger)
    assert store._keys is not None and store._keys.filter_added == 0
    for n in range(0, 300, 30):
        store.apply_group([deposit(n + i) for i in range(30)], 0)
    assert len(store._keys.filter.slices) > 1  # sealed slices and an active one
    store.close()
    store = Store(ledger)
    assert store.key_index == "trusted" and store._keys is not None
    assert store._keys.filter_added == 0
    assert_keys_hold(store, range(300))
    store.close()


def test_a_kill_adds_to_the_filter_only_the_ops_since_it_was_saved(
    ledger: Path, small_batches: None, small_filter: None
) -> None:
    store = Store(ledger)
    for n in range(0, 1000, 20):
        store.apply_group([deposit(n + i) for i in range(20)], 0)
    killed(store)
    store = Store(ledger)
    assert store.key_index == "trusted" and store._keys is not None
    # The active slice is saved round every SAVE_SPAN ops, after a newly sealed one's
    # last saves (a third of a span): at most 4/3 of a span behind, and a group.
    assert 0 < store._keys.filter_added <= keyfilter.SAVE_SPAN * 4 // 3 + 20
    assert_keys_hold(store, range(1000))
    store.close()


def test_an_index_file_without_a_filter_gets_one_from_the_ledger(
    ledger: Path, small_batches: None
) -> None:
    store = Store(ledger)
    store.apply_group([deposit(n) for n in range(40)], 0)
    store.close()
    idx = raw(keyindex.index_path(ledger))
    idx.execute("DROP TABLE filter_chunks")  # as an index file written before the filter
    idx.execute("DROP TABLE filter_slices")
    idx.close()
    store = Store(ledger)
    assert store.key_index == "trusted" and store._keys is not None
    assert store._keys.filter_added == 40
    assert_keys_hold(store, range(40))
    store.close()


def test_the_file_is_asked_only_for_keys_the_filter_may_hold(
    ledger: Path, small_batches: None
) -> None:
    store = Store(ledger)
    for n in range(0, 100, 10):
        store.apply_group([deposit(n + i) for i in range(10)], 0)
    store.close()
    store = Store(ledger)  # every key in the file, none in memory
    assert store._keys is not None
    asked: list[str] = []
    store._keys.reader.set_trace_callback(asked.append)
    answers = store.apply_group([deposit(n) for n in range(1000, 1020)], 0)
    assert all(getattr(a, "replayed", None) is False for a in answers)
    assert not [q for q in asked if "op_keys" in q]  # new keys: not looked up
    assert_keys_hold(store, range(100))  # replays: found in the file
    assert [q for q in asked if "op_keys" in q]
    store.close()


def test_waiting_for_the_index_writer_ends_once_its_saves_are_written(
    ledger: Path, small_filter: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group hands the index's thread filter chunks to save while another connection
    holds the file's write lock: a wait for the thread (``settle``, as a clean close
    does) lasts until they are in the file, and ends then. (It once ended as soon as
    the thread took them, and a wait begun before that was woken by nothing.)"""
    import threading

    monkeypatch.setattr(keyindex, "BUSY_MS", 60_000)
    store = Store(ledger)
    assert store._keys is not None
    keys = store._keys
    blocker = raw(keyindex.index_path(ledger))
    blocker.execute("BEGIN IMMEDIATE")
    store.apply_group([deposit(n) for n in range(30)], 0)
    time.sleep(0.2)  # the thread has most likely taken the chunks, and waits for the lock
    done = threading.Event()

    def settle() -> None:
        keys.settle()
        done.set()

    t = threading.Thread(target=settle, daemon=True)
    t.start()
    assert not done.wait(0.5)  # the lock is held: the chunks cannot be in the file yet
    blocker.execute("ROLLBACK")
    t.join(60)
    assert done.is_set(), "the wait for the index's thread never ended"
    through = blocker.execute("SELECT max(through) FROM filter_chunks").fetchone()[0]
    blocker.close()
    assert through == 30  # the group's chunks are in
    store.close()


def test_a_writer_thread_behind_makes_the_ledgers_writer_wait_then_both_go_on(
    ledger: Path, small_batches: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection holds the index file's write lock, so the index's thread
    cannot write its batch: the groups go on (their keys in memory) until the active
    batch holds ``BEHIND`` batches' keys, then the ledger's writer waits for the thread.
    Once the lock is let go, both go on and every key answers its first op."""
    import threading

    monkeypatch.setattr(keyindex, "BUSY_MS", 60_000)
    store = Store(ledger)
    assert store._keys is not None
    blocker = raw(keyindex.index_path(ledger))
    blocker.execute("BEGIN IMMEDIATE")
    for n in range(0, 20, 5):  # 20 keys: the first batch of 10 frozen, handed over
        store.apply_group([deposit(n + i) for i in range(5)], 0)
    # Ops 11-20 are the active batch; it grows to one group short of BEHIND batches.
    last = 10 + keyindex.BEHIND * 10 - 5
    for n in range(20, last, 5):
        store.apply_group([deposit(n + i) for i in range(5)], 0)
    assert len(store._keys.active) == keyindex.BEHIND * 10 - 5 and store._keys.frozen
    done = threading.Event()

    def last_group() -> None:
        store.apply_group([deposit(last + i) for i in range(5)], 0)
        done.set()

    t = threading.Thread(target=last_group)
    t.start()
    # The lock is held: whatever the machine's speed, the group cannot finish.
    assert not done.wait(0.5)
    blocker.execute("ROLLBACK")
    blocker.close()
    t.join(30)
    assert done.is_set()
    assert len(store._keys.active) == 0  # the thread caught up; all 40 frozen, handed over
    assert_keys_hold(store, range(last + 5))
    store._keys.settle()
    store.close()
    assert index_rows(ledger) == ledger_rows(ledger)


def test_a_failed_index_writer_stops_the_ledgers_writer_and_moves_no_money(
    ledger: Path, small_batches: None
) -> None:
    """The index's thread fails (here its connection is gone under it, as a full disk
    or an I/O error would fail its statements): the next group is refused with
    ``KeyIndexFailed`` and commits nothing, and a restart picks up every op."""
    store = Store(ledger)
    assert store._keys is not None and store._keys._drain is not None
    store._keys._drain.conn.close()
    store.apply_group([deposit(n) for n in range(12)], 0)  # a batch frozen, handed over
    store._keys._drain.wait()  # the thread fails on it
    assert store._keys._drain.error is not None
    with pytest.raises(keyindex.KeyIndexFailed):
        store.apply_group([deposit(100)], 0)
    killed(store)
    assert [op for op, _ in ledger_rows(ledger)] == list(range(1, 13))  # deposit 100: none
    store = Store(ledger)
    assert store.key_index == "trusted"
    assert_keys_hold(store, range(12))
    store.close()


class KeyIndexMachine(RuleBasedStateMachine):
    """Groups of deposits (new keys, replays, reused keys with another amount), kills,
    clean closes, reboots and lost filter chunks in any order, with batches of 4 and a
    filter of a few bytes (slices sealed and chunks saved within a few groups): whatever
    happened, every key committed once answers its first op, the filter holds every key
    the ledger does, and a clean close leaves the file equal to the ledger."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "ledger.sqlite3"
        self.saved_batch = keyindex.BATCH
        self.saved_filter = (keyfilter.CHUNK, keyfilter.FIRST, keyfilter.SAVE_SPAN)
        keyindex.BATCH = 4
        keyfilter.CHUNK, keyfilter.FIRST, keyfilter.SAVE_SPAN = 16, 8, 10
        self.store: Store | None = Store(self.path)
        self.first: dict[int, tuple[int, int]] = {}
        """Event number → the amount its key was first used with, and that op's seq."""

    def teardown(self) -> None:
        if self.store is not None:
            self.store.close()
        keyindex.BATCH = self.saved_batch
        keyfilter.CHUNK, keyfilter.FIRST, keyfilter.SAVE_SPAN = self.saved_filter
        self.dir.cleanup()

    def _open(self) -> Store:
        if self.store is None:
            self.store = Store(self.path)
        return self.store

    def _deposit(self, events: list[int], amount: int) -> None:
        """Deposit each of ``events`` with ``amount`` and check every answer: a new key
        posts, the same key and amount replays its first op, another amount is refused."""
        answers = self._open().apply_group([deposit(n, amount) for n in events], 0)
        for n, answer in zip(events, answers, strict=True):
            if n not in self.first:
                assert getattr(answer, "replayed", None) is False, answer
                self.first[n] = (amount, answer.seq)  # type: ignore[union-attr]
            elif self.first[n][0] == amount:
                assert getattr(answer, "replayed", None) is True, answer
                assert answer.seq == self.first[n][1]  # type: ignore[union-attr]
            else:
                assert isinstance(answer, IdempotencyConflict), answer

    @rule(events=st.lists(st.integers(0, 60), min_size=1, max_size=9, unique=True))
    def group(self, events: list[int]) -> None:
        self._deposit(events, 100)

    @rule(n=st.integers(0, 60))
    def reuse_with_another_amount(self, n: int) -> None:
        self._deposit([n], 7)

    @rule()
    def kill(self) -> None:
        if self.store is not None:
            killed(self.store)
            self.store = None

    @rule()
    def close_cleanly(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None
            assert index_rows(self.path) == ledger_rows(self.path)

    @rule()
    def machine_reboots(self) -> None:
        if self.store is not None:
            killed(self.store)
            self.store = None
        reboot(self.path)

    @rule(data=st.data())
    def a_saved_filter_chunk_is_lost(self, data: st.DataObject) -> None:
        """Killed, and one of the filter's saved chunks gone from the file."""
        # Which chunks are saved depends on how far the index's thread got before the
        # kill, so the draw must not: Hypothesis replays a case by replaying its draws,
        # and a draw shaped by the thread's timing is refused as flaky generation.
        pick = data.draw(st.integers(0, 2**16))
        self.kill()
        if not keyindex.index_path(self.path).exists():
            return
        conn = raw(keyindex.index_path(self.path))
        try:
            saved = conn.execute("SELECT slice, chunk FROM filter_chunks ORDER BY 1, 2").fetchall()
            if saved:
                s, c = saved[pick % len(saved)]
                conn.execute("DELETE FROM filter_chunks WHERE slice = ? AND chunk = ?", (s, c))
        finally:
            conn.close()

    @invariant()
    def the_filter_holds_every_key_of_the_ledger(self) -> None:
        if self.store is not None and self.store._keys is not None:
            held = [h for _, h in ledger_rows(self.path)]
            assert self.store._keys.filter.maybe(held) == held

    @invariant()
    def every_key_answers_its_first_op(self) -> None:
        if self.store is not None and self.first:
            self._deposit(sorted(self.first), 100)


def test_the_docs_state_the_batch_and_the_slice_the_index_uses() -> None:
    """docs/ledger.md's section and docs/scale-out.md's Growth give the batch size, the
    keys per transaction of the index's writer and how far behind it may fall: they are
    the module's ``BATCH``, ``SLICE`` and ``BEHIND``, not a copy that drifts."""
    from support.servers import REPO

    ledger = (REPO / "docs" / "ledger.md").read_text()
    section = ledger.split("\n## The ops' key index (SQLite)\n", 1)[1].split("\n## ", 1)[0]
    batch = re.search(r"at\s+([\d,]+) keys \(`keyindex\.BATCH`\)", section)
    slice_ = re.search(r"([\d,]+)\s+keys \(`keyindex\.SLICE`\)", section)
    behind = re.search(r"holds\s+(\d+) batches' keys\s+\(`keyindex\.BEHIND`\)", section)
    assert batch and slice_ and behind, "the section no longer states them"
    assert int(batch[1].replace(",", "")) == keyindex.BATCH
    assert int(slice_[1].replace(",", "")) == keyindex.SLICE
    assert int(behind[1]) == keyindex.BEHIND
    growth = (REPO / "docs" / "scale-out.md").read_text()
    stated = re.findall(r"batch(?:es)? of ([\d,]+)", growth)
    assert stated, "scale-out.md's Growth no longer states the batch size"
    assert {int(n.replace(",", "")) for n in stated} == {keyindex.BATCH}


KeyIndexMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_key_index_machine = KeyIndexMachine.TestCase

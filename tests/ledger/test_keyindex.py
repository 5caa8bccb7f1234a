"""The ops' key index in its own file (engine/ledger/keyindex.py): trusted after a
clean close or a kill in the same boot, reconciled with the ledger's tail either way a
kill can leave the two files, rebuilt when it cannot be trusted, and in every case the
keys stay unique: a replay answers the first op, a reused key with another body is
refused, and nothing is written twice. SQLite only (PostgreSQL keeps the index in its
ops table)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from crashd.engine.ledger import keyindex
from crashd.engine.ledger.model import IdempotencyConflict, LedgerCorrupt
from crashd.engine.ledger.ops import PspDeposit
from crashd.engine.ledger.schema import key_hash
from crashd.engine.ledger.store import Store


def deposit(n: int, amount: int = 100) -> PspDeposit:
    return PspDeposit(f"event-{n}", "production", "acme", f"u{n % 7}", amount)


def killed(store: Store) -> None:
    """What a SIGKILL leaves: the files as they are, no clean close."""
    store.conn.close()
    store._lock.release()


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(str(path), isolation_level=None)


def index_rows(ledger: Path) -> list[tuple[int, bytes]]:
    conn = raw(keyindex.index_path(ledger))
    try:
        return conn.execute("SELECT op, key_hash FROM op_keys ORDER BY op").fetchall()
    finally:
        conn.close()


def ledger_rows(ledger: Path) -> list[tuple[int, bytes]]:
    conn = raw(ledger)
    try:
        return conn.execute("SELECT id, key_hash FROM ops ORDER BY id").fetchall()
    finally:
        conn.close()


def assert_keys_hold(store: Store, upto: int) -> None:
    """Every op so far replays, and a reused key with another amount is refused."""
    answers = store.apply_group([deposit(n) for n in range(upto)], 0)
    assert all(getattr(a, "replayed", False) for a in answers), answers
    [refused] = store.apply_group([deposit(0, amount=999)], 0)
    assert isinstance(refused, IdempotencyConflict)


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


def test_a_new_ledger_gets_its_index_and_a_clean_close_is_trusted(ledger: Path) -> None:
    store = Store(ledger)
    assert store.key_index == "rebuilt: no index file"
    store.apply_group([deposit(n) for n in range(50)], 0)
    store.close()
    assert index_rows(ledger) == ledger_rows(ledger) and len(index_rows(ledger)) == 50
    store = Store(ledger)
    assert store.key_index == "trusted"
    assert_keys_hold(store, 50)
    store.close()
    assert len(ledger_rows(ledger)) == 50  # the replays and the refusal wrote no op


def test_the_ledgers_own_table_has_no_unique_key_index_any_more(ledger: Path) -> None:
    Store(ledger).close()
    conn = raw(ledger)
    try:
        indexes = conn.execute("PRAGMA index_list(ops)").fetchall()
    finally:
        conn.close()
    assert indexes == []  # only the rowid: every insert appends


def test_a_kill_with_the_index_behind_the_ledger_is_caught_up(ledger: Path) -> None:
    store = Store(ledger)
    store.apply_group([deposit(n) for n in range(30)], 0)
    killed(store)
    # The ledger committed its last groups, the index did not get them.
    conn = raw(keyindex.index_path(ledger))
    conn.execute("DELETE FROM op_keys WHERE op > 10")
    conn.close()
    store = Store(ledger)
    assert store.key_index == "trusted"
    assert index_rows(ledger) == ledger_rows(ledger)
    assert_keys_hold(store, 30)
    store.close()


def test_a_kill_with_the_index_ahead_of_the_ledger_is_cut_back(ledger: Path) -> None:
    store = Store(ledger)
    store.apply_group([deposit(n) for n in range(20)], 0)
    killed(store)
    # The index committed a group the ledger never did: those keys were never used.
    conn = raw(keyindex.index_path(ledger))
    conn.executemany(
        "INSERT INTO op_keys (op, key_hash) VALUES (?, ?)",
        [(21 + i, key_hash(f"psp:production:event-{100 + i}")) for i in range(5)],
    )
    conn.close()
    store = Store(ledger)
    assert store.key_index == "trusted"
    assert index_rows(ledger) == ledger_rows(ledger)
    # The key the lost group held is free: its first real use is a new op.
    [posted] = store.apply_group([deposit(100)], 0)
    assert getattr(posted, "replayed", None) is False
    store.close()


def test_an_index_left_open_in_another_boot_is_rebuilt(ledger: Path) -> None:
    store = Store(ledger)
    store.apply_group([deposit(n) for n in range(40)], 0)
    killed(store)
    # The machine went down: the index may be torn where the OS had not written it.
    conn = raw(ledger)
    conn.execute("UPDATE meta SET value = 'an earlier boot' WHERE key = ?", (keyindex.MARKER,))
    conn.close()
    idx = raw(keyindex.index_path(ledger))
    idx.execute("DELETE FROM op_keys WHERE op % 3 = 0")  # lost pages, anywhere
    idx.close()
    store = Store(ledger)
    assert store.key_index == "rebuilt: not closed cleanly, and last opened in another boot"
    assert index_rows(ledger) == ledger_rows(ledger)
    assert_keys_hold(store, 40)
    store.close()


def test_a_missing_or_foreign_index_file_is_rebuilt(ledger: Path, tmp_path: Path) -> None:
    store = Store(ledger)
    store.apply_group([deposit(n) for n in range(10)], 0)
    store.close()
    keyindex.index_path(ledger).unlink()
    store = Store(ledger)
    assert store.key_index == "rebuilt: no index file"
    assert_keys_hold(store, 10)
    store.close()
    # Another ledger's index beside this one (a restored backup, a copied file).
    other = tmp_path / "other.sqlite3"
    store = Store(other)
    store.apply_group([PspDeposit(f"x{n}", "production", "acme", "u", 1) for n in range(10)], 0)
    store.close()
    keyindex.index_path(other).replace(keyindex.index_path(ledger))
    store = Store(ledger)
    assert store.key_index == "rebuilt: its entry for op 10 is not the ledger's"
    assert_keys_hold(store, 10)
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
        Store(ledger)
    keyindex.index_path(ledger).unlink()
    with pytest.raises(LedgerCorrupt, match="share a key hash"):
        Store(ledger)

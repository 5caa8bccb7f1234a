"""Schema versions: a ledger written by an older build opens, is migrated in place,
keeps every row and every guard; a newer one is refused. Real SQLite files."""

from __future__ import annotations

import re
import sqlite3
import stat
from pathlib import Path

import pytest

from crashd.engine.ledger import open_ledger
from crashd.engine.ledger.model import LedgerCorrupt, Posted
from crashd.engine.ledger.ops import PspDeposit
from crashd.engine.ledger.schema import BASE_VERSION, DDL, MIGRATIONS, SCHEMA_VERSION
from crashd.engine.ledger.store import Store, audit
from support.postgres import Backend


def undo_migrations(down_to: int) -> str:
    """Today's DDL with the table rewrites from ``down_to`` on undone, newest first."""
    ddl = DDL
    for version in range(BASE_VERSION - 1, down_to - 1, -1):
        for _table, old, new in MIGRATIONS[version]:
            assert new in ddl and old not in ddl
            ddl = ddl.replace(new, old)
    return ddl


def version_1_ddl() -> str:
    """Version 1's DDL: today's with every migration undone."""
    return undo_migrations(1)


def make_version_1(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(version_1_ddl())
    conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    conn.close()


def big_in_lists(conn: sqlite3.Connection) -> list[str]:
    """CHECKs with a constant IN list of three or more values (the slow form)."""
    found = []
    for name, sql in conn.execute("SELECT name, sql FROM sqlite_schema WHERE type = 'table'"):
        for values in re.findall(r"IN \(([^)]*)\)", sql):
            if values.count(",") >= 2:
                found.append(f"{name}: IN ({values})")
    return found


def test_version_1_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    make_version_1(path)
    old = sqlite3.connect(path)
    assert len(big_in_lists(old)) == 5
    old.close()
    # Money written by the version 1 schema.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(
        "INSERT INTO ops VALUES (1, 'psp:production:a', 'psp_deposit', x'00', 1, NULL, '{}', 0)"
    )
    conn.execute("INSERT INTO accounts VALUES (1, 'production', 'psp', '', '', -70, 0)")
    conn.execute("INSERT INTO accounts VALUES (2, 'production', 'player', 'p', 'u', 70, 0)")
    conn.execute("INSERT INTO transfers VALUES (1, 1, 'production', 1, 2, 70, 'deposit', NULL, 0)")
    conn.close()

    store = Store(path)
    try:
        assert store.conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone() == (str(SCHEMA_VERSION),)
        assert big_in_lists(store.conn) == []
        assert store.conn.execute("SELECT count(*) FROM transfers").fetchone() == (1,)
        assert audit(store.conn).ok
        [posted] = store.apply_group([PspDeposit("b", "production", "p", "u", 30)], 0)
        assert isinstance(posted, Posted) and posted.balance == 100
        # The guards are the same constraint as before, spelled differently.
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            store.conn.execute(
                "INSERT INTO transfers VALUES (9, 1, 'production', 1, 2, 5, 'gift', NULL, 0)"
            )
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            store.conn.execute(
                "INSERT INTO accounts VALUES (9, 'production', 'bank', 'p', 'v', 0, 0)"
            )
        assert store.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        store.close()
    # A second open finds nothing left to migrate.
    Store(path).close()


def test_new_ledgers_have_no_slow_checks(tmp_path: Path) -> None:
    store = Store(tmp_path / "ledger.sqlite3")
    try:
        assert big_in_lists(store.conn) == []
    finally:
        store.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute(
        "UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
    )
    conn.commit()
    conn.close()
    with pytest.raises(LedgerCorrupt, match="schema version"):
        Store(path)


def test_a_damaged_version_1_is_refused_unchanged(tmp_path: Path) -> None:
    """A table that is not what version 1 wrote: the migration stops, rolls back."""
    path = tmp_path / "ledger.sqlite3"
    make_version_1(path)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA writable_schema=ON")
    sql = conn.execute("SELECT sql FROM sqlite_schema WHERE name = 'holds'").fetchone()[0]
    conn.execute(
        "UPDATE sqlite_schema SET sql = ? WHERE name = 'holds'",
        (sql.replace("'expired'", "'lapsed'"),),
    )
    conn.close()
    with pytest.raises(LedgerCorrupt, match="migration 1->2: holds"):
        Store(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT value FROM meta").fetchone() == ("1",)
    assert len(big_in_lists(conn)) == 5
    conn.close()


async def test_a_new_database_is_private(tmp_path: Path) -> None:
    """Balances and hashed keys: owner-only, and SQLite's -wal/-shm files follow."""
    path = tmp_path / "ledger.sqlite3"
    async with open_ledger(path, sweep_interval_s=None) as ledger:
        await ledger.faucet_credit("f", partner_id="p", user_id="u", amount=1)
        for f in (path, tmp_path / "ledger.sqlite3-wal", tmp_path / "ledger.sqlite3-shm"):
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_version_2_bet_targets_become_changeable_until_settled(tmp_path: Path) -> None:
    """2 → 3: the trigger that froze a bet's auto-cashout target at confirmation is
    replaced by one that lets it change until the bet is settled, never after."""
    path = tmp_path / "ledger.sqlite3"
    Store(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    # Put back version 2's trigger and version number.
    conn.execute("DROP TRIGGER bets_one_way")
    conn.execute("""CREATE TRIGGER bets_settle_once BEFORE UPDATE ON bets
        WHEN NEW.auto_cashout IS NOT OLD.auto_cashout
        BEGIN SELECT RAISE(ABORT, 'a bet joins one round and is settled exactly once'); END""")
    conn.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")
    conn.close()
    store = Store(path)
    try:
        names = {
            r[0]
            for r in store.conn.execute("SELECT name FROM sqlite_schema WHERE type = 'trigger'")
        }
        assert "bets_one_way" in names and "bets_settle_once" not in names
        assert store.conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone() == (str(SCHEMA_VERSION),)
        from crashd.engine.ledger.model import BetRetargeted, BetSettled
        from crashd.engine.ledger.ops import BetConfirm, BetRefund, BetReserve, BetTarget

        store.apply_group(
            [
                PspDeposit("d", "production", "p", "u", 100),
                BetReserve("r", "production", "p", "u", "h", 50, 60_000),
                BetConfirm("c", "production", "p", "u", "h", "t", 150, None),
            ],
            0,
        )
        [changed] = store.apply_group([BetTarget("x", "t", 101)], 0)
        assert isinstance(changed, BetRetargeted) and changed.auto_cashout == 101
        assert store.conn.execute("SELECT auto_cashout FROM bets").fetchone() == (101,)
        [refunded] = store.apply_group([BetRefund("f", "t")], 0)
        assert isinstance(refunded, BetSettled)
        [late] = store.apply_group([BetTarget("y", "t", 200)], 0)
        assert getattr(late, "code", None) == "already_settled"
        with pytest.raises(sqlite3.IntegrityError, match="settled exactly once"):
            store.conn.execute("UPDATE bets SET auto_cashout = 300")
    finally:
        store.close()


def test_replies_are_kept_in_the_same_commit_and_purged(tmp_path: Path) -> None:
    """A reply slot's reply is stored in the op's own transaction (one commit), never
    overwritten by a second request under the same key; purging forgets old replies
    and leaves the ledger's history alone."""
    from crashd.engine.ledger.model import LedgerError, ReplySlot, Result, StoredReply
    from crashd.engine.ledger.ops import FaucetCredit, PurgeReplies
    from crashd.engine.ledger.store import Reader

    def render(slot: ReplySlot, answer: Result | LedgerError) -> StoredReply:
        return StoredReply(201, "application/json", repr(answer).encode())

    path = tmp_path / "ledger.sqlite3"
    store = Store(path)
    try:
        key = b"k" * 16
        slot = ReplySlot(key, b"fp-1", render)
        [posted] = store.apply_group([FaucetCredit("f1", "sandbox", "p", "u", 10)], 5, [slot])
        assert isinstance(posted, Posted) and slot.stored is not None and slot.existing is None
        reader = Reader(path)
        try:
            assert reader.reply(key) == (b"fp-1", slot.stored)
            assert reader.reply_keys(0) == [key]
            # The same key again (a retry that raced its own check): the first reply stands.
            again = ReplySlot(key, b"fp-2", render)
            store.apply_group([FaucetCredit("f2", "sandbox", "p", "u", 10)], 6, [again])
            assert again.stored is None and again.existing == (b"fp-1", slot.stored)
            assert reader.reply(key) == (b"fp-1", slot.stored)

            # A group whose render fails keeps nothing and still commits its money.
            def broken(slot: ReplySlot, answer: Result | LedgerError) -> StoredReply:
                raise RuntimeError("bug")

            bad = ReplySlot(b"b" * 16, b"fp", broken)
            store.apply_group([FaucetCredit("f3", "sandbox", "p", "u", 10)], 7, [bad])
            assert bad.stored is None and reader.reply(b"b" * 16) is None
            assert store.conn.execute("SELECT count(*) FROM transfers").fetchone() == (3,)
            store.apply_group([PurgeReplies("purge", 6)], 8)
            assert reader.reply(key) is None
            assert store.conn.execute("SELECT count(*) FROM ops").fetchone()[0] == 4
        finally:
            reader.close()
    finally:
        store.close()


def test_the_steps_are_consecutive_and_declared_for_both_backends() -> None:
    from crashd.engine.ledger.schema import STEPS

    assert [s.version for s in STEPS] == list(range(BASE_VERSION + 1, SCHEMA_VERSION + 1))
    for step in STEPS:
        assert step.what and isinstance(step.sqlite, str) and isinstance(step.postgres, str)


def test_every_ledger_table_is_migrated_to_postgres() -> None:
    """``LEDGER_TABLES`` (what ``crashd db migrate`` copies) names every table of both
    schemas but each backend's own (meta; PostgreSQL's leader row)."""
    from crashd.engine.ledger.schema import LEDGER_TABLES, POSTGRES_DDL, STEPS

    sqlite_tables = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", DDL))
    pg_tables = set(re.findall(r"CREATE TABLE (\w+)", POSTGRES_DDL))
    for step in STEPS:
        sqlite_tables |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", step.sqlite))
        pg_tables |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", step.postgres))
    sqlite_tables -= {"ops_rebuilt"}  # the rebuild's temporary name
    assert sqlite_tables - {"meta"} == set(LEDGER_TABLES)
    assert pg_tables - {"meta", "leader"} == set(LEDGER_TABLES)


def test_the_schema_diagram_names_every_table() -> None:
    """docs/ledger.md's table diagram (its "Schema" section's first block) lists exactly
    the tables of both schemas: ``LEDGER_TABLES`` and each backend's own."""
    from crashd.engine.ledger.schema import LEDGER_TABLES
    from support.servers import REPO

    doc = (REPO / "docs" / "ledger.md").read_text()
    section = doc.split("\n## Schema\n", 1)[1]
    block = section.split("```\n", 2)[1]
    drawn = re.findall(r"^([a-z_]+) +\(", block, flags=re.MULTILINE)
    assert len(drawn) == len(set(drawn)), "a table drawn twice"
    assert set(drawn) == {*LEDGER_TABLES, "meta", "leader"}


def test_base_version_ops_get_their_key_hash_and_still_replay(tmp_path: Path) -> None:
    """The key-hash step rebuilds ops (SQLite) around a 16-byte key hash: every op recorded
    before it still replays by its idempotency key, and a reused key is refused."""
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(DDL)
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(BASE_VERSION),))
    conn.close()
    # An op as the base version recorded it (no key_hash column yet).
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(
        "INSERT INTO ops VALUES (1, 'psp:production:e1', 'psp_deposit', x'00', 1, NULL, '{}', 0)"
    )
    raw.close()
    store = Store(path)
    try:
        assert store.conn.execute("SELECT value FROM meta").fetchone() == (str(SCHEMA_VERSION),)
        rec = store.load_op("psp:production:e1")
        assert rec is not None and rec.seq == 1
        names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_schema")}
        assert {"ops_no_update", "ops_no_delete"} <= names and "ops_rebuilt" not in names
        with pytest.raises(sqlite3.IntegrityError):
            store.conn.execute("UPDATE ops SET ok = 1")
        [answer] = store.apply_group([PspDeposit("e2", "production", "p", "u", 5)], 0)
        assert isinstance(answer, Posted) and answer.seq == 2
    finally:
        store.close()


def test_postgres_base_version_ops_get_their_key_hash(pg: Backend) -> None:
    """The same step on PostgreSQL, over a database left at ``BASE_VERSION`` with an op
    in it."""
    from crashd.engine.ledger.lease import Lease
    from crashd.engine.ledger.pgstore import PgStore, connect
    from crashd.engine.ledger.schema import POSTGRES_DDL

    raw = connect(str(pg.target))
    raw.execute(POSTGRES_DDL)
    raw.execute("INSERT INTO meta VALUES ('schema_version', %s)", (str(BASE_VERSION),))
    raw.execute(
        "INSERT INTO ops VALUES (1, 'psp:production:e1', 'psp_deposit', '\\x00', 1, NULL, '{}', 0)"
    )
    raw.close()
    lease = Lease.take(str(pg.target))  # the holder installs the steps
    try:
        store = PgStore(str(pg.target), term=lease.term)
        try:
            rec = store.load_op("psp:production:e1")
            assert rec is not None and rec.seq == 1
            [answer] = store.apply_group([PspDeposit("e1", "production", "p", "u", 5)], 0)
            assert getattr(answer, "code", None) == "idempotency_conflict"
        finally:
            store.close()
    finally:
        lease.release()


def ddl_of(version: int) -> str:
    """The DDL a build of ``version`` (4 or 5) ran: today's with the later table
    rewrites undone and the later tables and triggers cut out."""
    assert version in (4, 5)
    ddl = undo_migrations(version)
    # Version 6's wallet tables, and their triggers (the DDL's last statements).
    start = ddl.index("-- Version 6: the seamless wallet")
    end = ddl.index("CREATE TABLE IF NOT EXISTS reversals")
    ddl = ddl[:start] + ddl[end:]
    ddl = ddl[: ddl.index("-- A wallet transaction's identity")]
    if version == 4:  # version 5's audit log and its triggers
        start = ddl.index("-- Version 5: the operator's audit log")
        ddl = ddl[:start] + ddl[ddl.index("CREATE TABLE IF NOT EXISTS reversals") :]
        ddl = "\n".join(
            line
            for line in ddl.split("\n")
            if "audit_log_no_" not in line and "the audit log is append-only" not in line
        )
    assert ("audit_log" in ddl) == (version >= 5) and "wallet" not in ddl
    return ddl


@pytest.mark.parametrize("version", [4, 5])
def test_an_older_version_gains_the_wallet_in_place(tmp_path: Path, version: int) -> None:
    """5 → 6 (and 4 → 5 → 6): the account kind 'wallet' and the wallet transfer kinds
    join the CHECKs (rewritten in place: stored rows untouched); the wallet tables are
    created; version 5's capital account and bankroll transfers still pass their CHECKs."""
    path = tmp_path / "ledger.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(ddl_of(version))
    conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(version),))
    conn.execute(
        "INSERT INTO ops VALUES (1, 'psp:production:a', 'psp_deposit', x'00', 1, NULL, '{}', 0)"
    )
    conn.execute("INSERT INTO accounts VALUES (1, 'production', 'psp', '', '', -70, 0)")
    conn.execute("INSERT INTO accounts VALUES (2, 'production', 'player', 'p', 'u', 70, 0)")
    conn.execute("INSERT INTO transfers VALUES (1, 1, 'production', 1, 2, 70, 'deposit', NULL, 0)")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("INSERT INTO accounts VALUES (3, 'production', 'wallet', 'p', '', 0, 0)")
    if version == 5:
        conn.execute("INSERT INTO accounts VALUES (4, 'production', 'capital', '', '', 0, 0)")
    conn.close()
    store = Store(path)
    try:
        assert store.conn.execute(
            "SELECT value FROM meta WHERE key = 'schema_version'"
        ).fetchone() == (str(SCHEMA_VERSION),)
        tables = {
            r[0] for r in store.conn.execute("SELECT name FROM sqlite_schema WHERE type='table'")
        }
        assert {"wallet_txs", "wallet_calls", "audit_log"} <= tables
        # Every table is now exactly what a new database gets.
        fresh = Store(tmp_path / "fresh.sqlite3")
        try:
            schema = "SELECT name, sql FROM sqlite_schema WHERE type = 'table' ORDER BY name"
            assert store.conn.execute(schema).fetchall() == fresh.conn.execute(schema).fetchall()
        finally:
            fresh.close()
        store.conn.execute("INSERT INTO accounts VALUES (3, 'production', 'wallet', 'p', '', 0, 0)")
        if version == 4:
            store.conn.execute(
                "INSERT INTO accounts VALUES (4, 'production', 'capital', '', '', 0, 0)"
            )
        store.conn.execute(
            "INSERT INTO transfers VALUES (2, 1, 'production', 3, 2, 5, 'wallet_debit', NULL, 0)"
        )
        store.conn.execute(
            "INSERT INTO transfers VALUES (3, 1, 'production', 4, 1, 5, 'bankroll_deposit', NULL, 0)"
        )
        with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
            store.conn.execute(
                "INSERT INTO transfers VALUES (4, 1, 'production', 1, 2, 5, 'gift', NULL, 0)"
            )
        assert store.conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        store.close()
    # A second open finds nothing left to migrate.
    Store(path).close()


def test_both_backends_have_the_same_tables_columns_indexes_and_refusals(
    pg: Backend, tmp_path: Path
) -> None:
    """A new ledger on each backend, at ``SCHEMA_VERSION``: the same tables with the same
    columns, the same named indexes, and triggers refusing with the same messages (the
    wallet's and the settlement's included)."""
    from crashd.engine.ledger.lease import Lease
    from crashd.engine.ledger.schema import POSTGRES_DDL, STEPS

    store = Store(tmp_path / "ledger.sqlite3")
    try:
        c = store.conn
        tables = [r[0] for r in c.execute("SELECT name FROM sqlite_schema WHERE type='table'")]
        sqlite_columns = {
            t: sorted(r[1] for r in c.execute(f"PRAGMA table_info({t})")) for t in tables
        }
        sqlite_indexes = {
            r[0]
            for r in c.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'index' AND sql IS NOT NULL"
            )
        }
    finally:
        store.close()
    Lease.take(str(pg.target)).release()  # the first holder installs the schema
    conn = pg.connect()
    try:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema()"
        ).fetchall()
        pg_columns: dict[str, list[str]] = {}
        for table, column in rows:
            pg_columns.setdefault(table, []).append(column)
        pg_indexes = {
            r[0]
            for r in conn.execute(
                "SELECT indexname FROM pg_indexes i WHERE schemaname = current_schema() "
                "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"
            )
        }
    finally:
        conn.close()
    assert {t: sorted(c) for t, c in pg_columns.items() if t != "leader"} == sqlite_columns
    assert pg_indexes == sqlite_indexes and "wallet_txs_open_debits" in pg_indexes
    sqlite_sql = DDL + "".join(s.sqlite for s in STEPS)
    pg_sql = POSTGRES_DDL + "".join(s.postgres for s in STEPS)
    refusals = set(re.findall(r"RAISE\(ABORT, '([^']+)'\)", sqlite_sql))
    assert refusals == set(re.findall(r"crashd_refuse\('([^']+)'\)", pg_sql))
    assert {"wallet transactions are never deleted", "transcripts are append-only"} <= refusals

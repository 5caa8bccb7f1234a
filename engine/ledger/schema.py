"""The ledger's schema on both backends: tables, CHECK constraints and the triggers
that make history append-only, and every migration, declared here once per backend.

Rows that record money (``transfers``, ``ops``, ``reversals``) are insert-only: UPDATE
and DELETE raise. Rows with a life cycle (``holds``, ``bets``, ``rounds``) may change
only along their one-way transitions (pending → posted/voided/expired, unsettled →
settled, open → crashed → settled or voided), and their identifying columns never
change; DELETE raises. ``accounts`` keeps the running balances, written in the same
transaction as the transfers and audited against their sum.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

BASE_VERSION = 7
"""The version ``DDL`` (SQLite) and ``POSTGRES_DDL`` create; ``STEPS`` go on from it.
A SQLite file older than this reaches it by ``MIGRATIONS`` (the DDL's CREATE ... IF NOT
EXISTS adds the new tables); PostgreSQL support is newer than every such version, so
its DDL starts here."""

LEDGER_TABLES: tuple[str, ...] = (
    "ops",
    "audit_log",
    "accounts",
    "rounds",
    "holds",
    "bets",
    "transfers",
    "reversals",
    "replies",
    "wallet_txs",
    "wallet_calls",
    "round_seals",
    "round_transcripts",
)
"""Every table that holds the ledger's data, parents before children (the migration to
PostgreSQL copies them in this order; ``meta`` and ``leader`` are each backend's own).
A test checks it names every table of both schemas."""

# Multi-value CHECKs are spelled as OR chains, never ``IN (...)``: SQLite evaluates a
# constant IN list of three or more values by building a temporary index each time
# the constraint is checked, i.e. for every row written (measured: +2.3 µs per
# transfer row, an eighth of a whole deposit). Schema version 2 is that change alone.

DDL = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS ops (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    kind        TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    ok          INTEGER NOT NULL CHECK (ok IN (0, 1)),
    code        TEXT CHECK ((ok = 1) = (code IS NULL)),
    result      TEXT NOT NULL,
    ts          INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS accounts (
    id          INTEGER PRIMARY KEY,
    environment TEXT NOT NULL CHECK (environment IN ('sandbox', 'production')),
    kind        TEXT NOT NULL CHECK (kind = 'player' OR kind = 'house' OR kind = 'escrow'
        OR kind = 'psp' OR kind = 'faucet' OR kind = 'capital'
        OR kind = 'wallet'),
    partner_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL,
    posted      INTEGER NOT NULL,
    pending     INTEGER NOT NULL CHECK (pending >= 0),
    UNIQUE (environment, kind, partner_id, user_id),
    UNIQUE (id, environment),
    CHECK ((kind = 'player') = (user_id != '' AND partner_id != '')),
    CHECK (kind != 'player' OR posted >= pending),
    CHECK (kind != 'escrow' OR posted >= 0),
    CHECK (kind != 'faucet' OR environment = 'sandbox'),
    CHECK (kind = 'player' OR pending = 0)
) STRICT;

CREATE TABLE IF NOT EXISTS holds (
    id          INTEGER PRIMARY KEY,
    hold_id     TEXT NOT NULL UNIQUE,
    op          INTEGER NOT NULL REFERENCES ops(id),
    environment TEXT NOT NULL,
    debit       INTEGER NOT NULL,
    credit      INTEGER NOT NULL,
    amount      INTEGER NOT NULL CHECK (amount > 0),
    expires_at  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state = 'pending' OR state = 'posted' OR state = 'voided'
        OR state = 'expired'),
    resolved_op INTEGER REFERENCES ops(id),
    resolved_at INTEGER,
    CHECK (debit != credit),
    CHECK ((state = 'pending') = (resolved_at IS NULL)),
    -- Both sides in the hold's environment: sandbox and production never mix.
    FOREIGN KEY (debit, environment) REFERENCES accounts (id, environment),
    FOREIGN KEY (credit, environment) REFERENCES accounts (id, environment)
) STRICT;
CREATE INDEX IF NOT EXISTS holds_pending_by_account
    ON holds (debit, expires_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS holds_pending_by_expiry
    ON holds (expires_at) WHERE state = 'pending';

CREATE TABLE IF NOT EXISTS rounds (
    id          INTEGER PRIMARY KEY CHECK (id >= 1),
    started_op  INTEGER NOT NULL REFERENCES ops(id),
    started_at  INTEGER NOT NULL,
    state       TEXT NOT NULL CHECK (state = 'open' OR state = 'crashed' OR state = 'voided'),
    crash_point INTEGER CHECK (crash_point IS NULL OR crash_point >= 100),
    game_hash   TEXT,
    ended_op    INTEGER REFERENCES ops(id),
    ended_at    INTEGER,
    settled_op  INTEGER REFERENCES ops(id),
    settled_at  INTEGER,
    void_reason TEXT,
    CHECK (state != 'crashed' OR (crash_point IS NOT NULL AND game_hash IS NOT NULL)),
    CHECK ((state = 'open') = (ended_op IS NULL))
) STRICT;
CREATE INDEX IF NOT EXISTS rounds_unfinished ON rounds (id) WHERE settled_at IS NULL;

CREATE TABLE IF NOT EXISTS bets (
    id           INTEGER PRIMARY KEY,
    ticket_id    TEXT NOT NULL UNIQUE,
    hold         INTEGER NOT NULL UNIQUE REFERENCES holds(id),
    account      INTEGER NOT NULL REFERENCES accounts(id),
    stake        INTEGER NOT NULL CHECK (stake > 0),
    auto_cashout INTEGER CHECK (auto_cashout IS NULL OR auto_cashout >= 101),
    round_id     INTEGER REFERENCES rounds(id),
    confirmed_op INTEGER NOT NULL REFERENCES ops(id),
    confirmed_at INTEGER NOT NULL,
    outcome      TEXT CHECK (outcome IS NULL OR outcome = 'won' OR outcome = 'lost'
        OR outcome = 'refunded'),
    multiplier   INTEGER,
    payout       INTEGER CHECK (payout IS NULL OR payout >= 0),
    settled_op   INTEGER REFERENCES ops(id),
    settled_at   INTEGER,
    CHECK ((outcome IS NULL) = (settled_op IS NULL)),
    CHECK ((outcome IS NULL) = (payout IS NULL)),
    CHECK ((outcome = 'won') = (multiplier IS NOT NULL)),
    CHECK (outcome IS NULL OR outcome != 'won' OR payout = stake * multiplier / 100),
    CHECK (outcome IS NULL OR outcome != 'lost' OR payout = 0),
    CHECK (outcome IS NULL OR outcome != 'refunded' OR payout = stake)
) STRICT;
CREATE INDEX IF NOT EXISTS bets_unsettled_by_round ON bets (round_id) WHERE outcome IS NULL;
CREATE INDEX IF NOT EXISTS bets_by_account ON bets (account, id);
CREATE INDEX IF NOT EXISTS bets_by_round ON bets (round_id);

CREATE TABLE IF NOT EXISTS transfers (
    id     INTEGER PRIMARY KEY,
    op     INTEGER NOT NULL REFERENCES ops(id),
    environment TEXT NOT NULL,
    debit  INTEGER NOT NULL,
    credit INTEGER NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    kind   TEXT NOT NULL CHECK (kind = 'deposit' OR kind = 'withdrawal'
        OR kind = 'withdrawal_reversal' OR kind = 'faucet' OR kind = 'bet_stake'
        OR kind = 'stake_return' OR kind = 'win' OR kind = 'loss' OR kind = 'refund'
        OR kind = 'bankroll_deposit' OR kind = 'bankroll_withdrawal'
        OR kind = 'wallet_debit' OR kind = 'wallet_credit' OR kind = 'wallet_rollback'),
    hold   INTEGER REFERENCES holds(id),
    ts     INTEGER NOT NULL,
    CHECK (debit != credit),
    -- Both sides in the transfer's environment: a cross-environment transfer fails
    -- the foreign key. (Cheaper per row than a trigger doing the same lookups.)
    FOREIGN KEY (debit, environment) REFERENCES accounts (id, environment),
    FOREIGN KEY (credit, environment) REFERENCES accounts (id, environment)
) STRICT;
CREATE INDEX IF NOT EXISTS transfers_by_op ON transfers (op);

-- Version 4: the reply each client request got, stored in the same transaction as the
-- op that answered it (one durable commit per request), under a 16-byte hash of the
-- request's scoped Idempotency-Key. Not history: rows past the retention are deleted.
CREATE TABLE IF NOT EXISTS replies (
    key          BLOB PRIMARY KEY CHECK (length(key) = 16),
    fingerprint  BLOB NOT NULL,
    status       INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    body         BLOB NOT NULL,
    created_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS replies_by_age ON replies (created_at);

-- Version 5: the operator's audit log. One row per operator action (a limits change,
-- a pause, a void, a bankroll deposit, a chain published…), written by the op that
-- carried it out, in the same transaction, under that op's id: who (the key id), when,
-- the state before and after (JSON), append-only like the ledger's history. Portable
-- SQL: plain INTEGER/TEXT columns and a CHECK; the triggers below have an equivalent
-- in every SQL database.
CREATE TABLE IF NOT EXISTS audit_log (
    id          INTEGER PRIMARY KEY REFERENCES ops(id),
    ts          INTEGER NOT NULL,
    environment TEXT NOT NULL CHECK (environment = 'sandbox' OR environment = 'production'),
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    before      TEXT,
    after       TEXT,
    note        TEXT NOT NULL
) STRICT;
CREATE INDEX IF NOT EXISTS audit_log_by_action ON audit_log (environment, action, id);

-- Version 6: the seamless wallet (docs/wallet.md; crashd.engine.ledger.wallet). The
-- accounts gain kind 'wallet' (one per partner: the operator's wallet, as crashd's
-- clearing account for it), the transfers three kinds; and two tables:
-- wallet_txs, every debit, credit and rollback crashd must bring to a final answer
-- (history: kept, never deleted), and wallet_calls, every call made and its answer
-- (the reconciliation log: deleted past wallet_log_retention_days, by the one writer).
-- Portable SQL apart from STRICT and the triggers' RAISE: ids are TEXT, amounts and
-- instants (ms) INTEGER, states spelled out in CHECKs.
CREATE TABLE IF NOT EXISTS wallet_txs (
    id           INTEGER PRIMARY KEY,
    tx_id        TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL CHECK (kind = 'debit' OR kind = 'credit' OR kind = 'rollback'),
    environment  TEXT NOT NULL CHECK (environment = 'sandbox' OR environment = 'production'),
    partner_id   TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    currency     TEXT NOT NULL,
    ticket_id    TEXT NOT NULL,
    round_id     INTEGER,
    ref_tx_id    TEXT UNIQUE REFERENCES wallet_txs (tx_id),
    amount       INTEGER NOT NULL CHECK (amount >= 0),
    multiplier   INTEGER CHECK (multiplier IS NULL OR multiplier >= 100),
    state        TEXT NOT NULL CHECK (state = 'pending' OR state = 'ok' OR state = 'refused'
        OR state = 'cancelled' OR state = 'failed' OR state = 'resolved'),
    code         TEXT,
    attempts     INTEGER NOT NULL CHECK (attempts >= 0),
    next_at      INTEGER,
    give_up_at   INTEGER,
    wallet_tx_id TEXT,
    balance      INTEGER,
    created_op   INTEGER NOT NULL REFERENCES ops (id),
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    closed_op    INTEGER REFERENCES ops (id),
    closed_by    TEXT,
    note         TEXT,
    -- A debit opens; a credit or a rollback closes exactly one debit (ref_tx_id UNIQUE).
    CHECK ((kind = 'debit') = (ref_tx_id IS NULL)),
    CHECK (kind != 'debit' OR amount > 0),
    CHECK (kind = 'debit' OR (state != 'refused' AND state != 'cancelled')),
    CHECK (kind != 'debit' OR (state != 'failed' AND state != 'resolved')),
    CHECK (kind = 'credit' OR multiplier IS NULL)
) STRICT;
CREATE INDEX IF NOT EXISTS wallet_txs_by_partner ON wallet_txs (partner_id, created_at);
CREATE INDEX IF NOT EXISTS wallet_txs_by_user ON wallet_txs (partner_id, user_id, created_at);
CREATE INDEX IF NOT EXISTS wallet_txs_by_round ON wallet_txs (round_id);
CREATE INDEX IF NOT EXISTS wallet_txs_due ON wallet_txs (next_at) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS wallet_txs_failed ON wallet_txs (partner_id) WHERE state = 'failed';
CREATE INDEX IF NOT EXISTS wallet_txs_open_debits ON wallet_txs (id)
    WHERE kind = 'debit' AND closed_by IS NULL AND state != 'refused';

CREATE TABLE IF NOT EXISTS wallet_calls (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    environment TEXT NOT NULL,
    partner_id  TEXT NOT NULL,
    call        TEXT NOT NULL CHECK (call = 'session.verify' OR call = 'balance'
        OR call = 'debit' OR call = 'credit' OR call = 'rollback'),
    tx_id       TEXT,
    user_id     TEXT,
    request_id  TEXT NOT NULL,
    request     TEXT NOT NULL,
    status      INTEGER,
    response    TEXT,
    outcome     TEXT NOT NULL CHECK (outcome = 'ok' OR outcome = 'refused' OR outcome = 'unknown'),
    code        TEXT,
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0)
) STRICT;
CREATE INDEX IF NOT EXISTS wallet_calls_by_at ON wallet_calls (partner_id, at);
CREATE INDEX IF NOT EXISTS wallet_calls_by_tx ON wallet_calls (tx_id);
CREATE INDEX IF NOT EXISTS wallet_calls_by_age ON wallet_calls (at);

CREATE TABLE IF NOT EXISTS reversals (
    withdrawal_op INTEGER PRIMARY KEY REFERENCES ops(id),
    op            INTEGER NOT NULL UNIQUE REFERENCES ops(id)
) STRICT;

-- Append-only history.
CREATE TRIGGER IF NOT EXISTS transfers_no_update BEFORE UPDATE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS transfers_no_delete BEFORE DELETE ON transfers
BEGIN SELECT RAISE(ABORT, 'transfers are append-only'); END;
CREATE TRIGGER IF NOT EXISTS ops_no_update BEFORE UPDATE ON ops
BEGIN SELECT RAISE(ABORT, 'ops are append-only'); END;
CREATE TRIGGER IF NOT EXISTS ops_no_delete BEFORE DELETE ON ops
BEGIN SELECT RAISE(ABORT, 'ops are append-only'); END;
CREATE TRIGGER IF NOT EXISTS reversals_no_update BEFORE UPDATE ON reversals
BEGIN SELECT RAISE(ABORT, 'reversals are append-only'); END;
CREATE TRIGGER IF NOT EXISTS reversals_no_delete BEFORE DELETE ON reversals
BEGIN SELECT RAISE(ABORT, 'reversals are append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS accounts_no_delete BEFORE DELETE ON accounts
BEGIN SELECT RAISE(ABORT, 'accounts are never deleted'); END;
-- UPDATE OF the identity columns: an UPDATE that does not name them cannot change
-- them, and the balance updates of every commit group (SET posted, pending) then do
-- not run the trigger at all. Replaces the first version's trigger on every UPDATE,
-- which cost ~0.5 us per updated account row.
DROP TRIGGER IF EXISTS accounts_identity;
CREATE TRIGGER IF NOT EXISTS accounts_identity_columns
BEFORE UPDATE OF id, environment, kind, partner_id, user_id ON accounts
WHEN NEW.id IS NOT OLD.id OR NEW.environment IS NOT OLD.environment
  OR NEW.kind IS NOT OLD.kind OR NEW.partner_id IS NOT OLD.partner_id
  OR NEW.user_id IS NOT OLD.user_id
BEGIN SELECT RAISE(ABORT, 'account identity is immutable'); END;

-- One-way life cycles.
CREATE TRIGGER IF NOT EXISTS holds_no_delete BEFORE DELETE ON holds
BEGIN SELECT RAISE(ABORT, 'holds are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS holds_resolve_once BEFORE UPDATE ON holds
WHEN OLD.state != 'pending' OR NEW.state = 'pending'
  OR NEW.id IS NOT OLD.id OR NEW.hold_id IS NOT OLD.hold_id OR NEW.op IS NOT OLD.op
  OR NEW.debit IS NOT OLD.debit OR NEW.credit IS NOT OLD.credit
  OR NEW.amount IS NOT OLD.amount OR NEW.expires_at IS NOT OLD.expires_at
BEGIN SELECT RAISE(ABORT, 'a hold is resolved at most once'); END;

CREATE TRIGGER IF NOT EXISTS bets_no_delete BEFORE DELETE ON bets
BEGIN SELECT RAISE(ABORT, 'bets are never deleted'); END;
-- Version 3: the auto-cashout target may change until the bet is settled (the
-- engine accepted a new target while betting: the record shows the target in force;
-- each change is its own bet_target op). Replaces version 2's bets_settle_once,
-- which froze the target at confirmation.
DROP TRIGGER IF EXISTS bets_settle_once;
CREATE TRIGGER IF NOT EXISTS bets_one_way BEFORE UPDATE ON bets
WHEN NEW.id IS NOT OLD.id OR NEW.ticket_id IS NOT OLD.ticket_id
  OR NEW.hold IS NOT OLD.hold OR NEW.account IS NOT OLD.account
  OR NEW.stake IS NOT OLD.stake
  OR NEW.confirmed_op IS NOT OLD.confirmed_op OR NEW.confirmed_at IS NOT OLD.confirmed_at
  OR (OLD.round_id IS NOT NULL AND NEW.round_id IS NOT OLD.round_id)
  OR (OLD.outcome IS NOT NULL AND (NEW.outcome IS NOT OLD.outcome
      OR NEW.payout IS NOT OLD.payout OR NEW.multiplier IS NOT OLD.multiplier
      OR NEW.settled_op IS NOT OLD.settled_op OR NEW.settled_at IS NOT OLD.settled_at
      OR NEW.auto_cashout IS NOT OLD.auto_cashout))
BEGIN SELECT RAISE(ABORT, 'a bet joins one round and is settled exactly once'); END;

CREATE TRIGGER IF NOT EXISTS rounds_no_delete BEFORE DELETE ON rounds
BEGIN SELECT RAISE(ABORT, 'rounds are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS rounds_one_way BEFORE UPDATE ON rounds
WHEN NEW.id IS NOT OLD.id OR NEW.started_op IS NOT OLD.started_op
  OR NEW.started_at IS NOT OLD.started_at
  OR OLD.state = 'voided' OR OLD.settled_at IS NOT NULL
  OR (OLD.state = 'crashed' AND (NEW.crash_point IS NOT OLD.crash_point
      OR NEW.game_hash IS NOT OLD.game_hash OR NEW.ended_op IS NOT OLD.ended_op))
  OR (NEW.state = 'open' AND OLD.state != 'open')
BEGIN SELECT RAISE(ABORT, 'round state only moves forward'); END;
-- A wallet transaction's identity never changes; a final state is never left; a debit
-- is closed (closed_by) once. The call log is never rewritten (only purged by age).
CREATE TRIGGER IF NOT EXISTS wallet_txs_no_delete BEFORE DELETE ON wallet_txs
BEGIN SELECT RAISE(ABORT, 'wallet transactions are never deleted'); END;
CREATE TRIGGER IF NOT EXISTS wallet_txs_one_way BEFORE UPDATE ON wallet_txs
WHEN NEW.id IS NOT OLD.id OR NEW.tx_id IS NOT OLD.tx_id OR NEW.kind IS NOT OLD.kind
  OR NEW.environment IS NOT OLD.environment OR NEW.partner_id IS NOT OLD.partner_id
  OR NEW.user_id IS NOT OLD.user_id OR NEW.currency IS NOT OLD.currency
  OR NEW.ticket_id IS NOT OLD.ticket_id OR NEW.ref_tx_id IS NOT OLD.ref_tx_id
  OR NEW.amount IS NOT OLD.amount OR NEW.multiplier IS NOT OLD.multiplier
  OR NEW.created_op IS NOT OLD.created_op OR NEW.created_at IS NOT OLD.created_at
  OR ((OLD.state = 'ok' OR OLD.state = 'refused' OR OLD.state = 'cancelled'
      OR OLD.state = 'resolved') AND NEW.state IS NOT OLD.state)
  OR (OLD.closed_by IS NOT NULL AND NEW.closed_by IS NOT OLD.closed_by)
BEGIN SELECT RAISE(ABORT, 'a wallet transaction only moves forward'); END;
CREATE TRIGGER IF NOT EXISTS wallet_calls_no_update BEFORE UPDATE ON wallet_calls
BEGIN SELECT RAISE(ABORT, 'the wallet call log is append-only'); END;
"""

# -- Verifiable settlement (issue 17): the whole step, in one place -------------------
# 6 -> 7, after issue 16's step (the wallet).
SETTLEMENT_VERSION = 7
SETTLEMENT_DDL = """
-- Verifiable settlement (docs/fairness.md). A round's start seal, written when betting
-- closes, and its transcript, written in the transaction that settles the round (its
-- crash, its void, or start-up recovery): never a round settled without its
-- transcript. Each is the signed document as served, its canonical JSON text; ``hash``
-- is SHA-256 of the transcript without its signature, which the next one names as
-- ``prev``; a seal's ``bets`` are the leaves it commits to (a JSON array, in order),
-- kept so that start-up recovery can write the transcript of a round it voids. Plain
-- INTEGER and TEXT columns: nothing here is SQLite's own but STRICT.
CREATE TABLE IF NOT EXISTS round_seals (
    round_id   INTEGER PRIMARY KEY REFERENCES rounds(id),
    document   TEXT NOT NULL,
    bets       TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE IF NOT EXISTS round_transcripts (
    round_id   INTEGER PRIMARY KEY REFERENCES rounds(id),
    hash       TEXT NOT NULL UNIQUE CHECK (length(hash) = 64),
    prev       TEXT CHECK (prev IS NULL OR length(prev) = 64),
    document   TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;

CREATE TRIGGER IF NOT EXISTS round_seals_no_update BEFORE UPDATE ON round_seals
BEGIN SELECT RAISE(ABORT, 'seals are append-only'); END;
CREATE TRIGGER IF NOT EXISTS round_seals_no_delete BEFORE DELETE ON round_seals
BEGIN SELECT RAISE(ABORT, 'seals are append-only'); END;
CREATE TRIGGER IF NOT EXISTS round_transcripts_no_update BEFORE UPDATE ON round_transcripts
BEGIN SELECT RAISE(ABORT, 'transcripts are append-only'); END;
CREATE TRIGGER IF NOT EXISTS round_transcripts_no_delete BEFORE DELETE ON round_transcripts
BEGIN SELECT RAISE(ABORT, 'transcripts are append-only'); END;
"""
DDL += SETTLEMENT_DDL


MIGRATIONS: dict[int, list[tuple[str, str, str]]] = {
    # 1 → 2: the IN lists of version 1 become the equivalent OR chains above. The
    # constraint is the same, so every stored row still satisfies it, and only the
    # table definitions change (``Store`` applies this with SQLite's writable_schema
    # procedure for changes that leave the stored rows untouched).
    1: [
        (
            "accounts",
            "CHECK (kind IN ('player', 'house', 'escrow', 'psp', 'faucet'))",
            "CHECK (kind = 'player' OR kind = 'house' OR kind = 'escrow'\n"
            "        OR kind = 'psp' OR kind = 'faucet')",
        ),
        (
            "holds",
            "CHECK (state IN ('pending', 'posted', 'voided', 'expired'))",
            "CHECK (state = 'pending' OR state = 'posted' OR state = 'voided'\n"
            "        OR state = 'expired')",
        ),
        (
            "rounds",
            "CHECK (state IN ('open', 'crashed', 'voided'))",
            "CHECK (state = 'open' OR state = 'crashed' OR state = 'voided')",
        ),
        (
            "bets",
            "CHECK (outcome IN ('won', 'lost', 'refunded'))",
            "CHECK (outcome IS NULL OR outcome = 'won' OR outcome = 'lost'\n"
            "        OR outcome = 'refunded')",
        ),
        (
            "transfers",
            "CHECK (kind IN ('deposit', 'withdrawal', 'withdrawal_reversal',\n"
            "        'faucet', 'bet_stake', 'stake_return', 'win', 'loss', 'refund'))",
            "CHECK (kind = 'deposit' OR kind = 'withdrawal'\n"
            "        OR kind = 'withdrawal_reversal' OR kind = 'faucet' OR kind = 'bet_stake'\n"
            "        OR kind = 'stake_return' OR kind = 'win' OR kind = 'loss' OR kind = 'refund')",
        ),
    ],
}
"""From version → (table, text in its CREATE TABLE, replacement) to reach version + 1."""
# 2 → 3 changes no table: the bets trigger is swapped by the DDL itself (DROP of the
# old name, CREATE of the new), which every open runs.
MIGRATIONS[2] = []
# 3 → 4 adds the replies table (the DDL creates it); the API's separate
# api_idempotency table, which needed two commits of its own per request, is gone.
MIGRATIONS[3] = []
# 4 → 5: the operator's capital account (the other side of bankroll deposits and
# withdrawals) and its transfer kinds, in the CHECKs of accounts and transfers; the
# audit_log table and its triggers come with the DDL.
MIGRATIONS[4] = [
    (
        "accounts",
        "OR kind = 'psp' OR kind = 'faucet'),",
        "OR kind = 'psp' OR kind = 'faucet' OR kind = 'capital'),",
    ),
    (
        "transfers",
        "OR kind = 'stake_return' OR kind = 'win' OR kind = 'loss' OR kind = 'refund'),",
        "OR kind = 'stake_return' OR kind = 'win' OR kind = 'loss' OR kind = 'refund'\n"
        "        OR kind = 'bankroll_deposit' OR kind = 'bankroll_withdrawal'),",
    ),
]
# 5 → 6 adds the seamless wallet: the wallet tables (the DDL creates them), account kind
# 'wallet' and the transfer kinds wallet_debit, wallet_credit and wallet_rollback, by the
# same in-place rewrite of the two CHECKs as 4 → 5 (every stored row satisfies the wider one).
MIGRATIONS[5] = [
    (
        "accounts",
        "OR kind = 'psp' OR kind = 'faucet' OR kind = 'capital'),",
        "OR kind = 'psp' OR kind = 'faucet' OR kind = 'capital'\n        OR kind = 'wallet'),",
    ),
    (
        "transfers",
        "OR kind = 'bankroll_deposit' OR kind = 'bankroll_withdrawal'),",
        "OR kind = 'bankroll_deposit' OR kind = 'bankroll_withdrawal'\n"
        "        OR kind = 'wallet_debit' OR kind = 'wallet_credit' OR kind = 'wallet_rollback'),",
    ),
]
# SETTLEMENT_VERSION - 1 -> SETTLEMENT_VERSION adds round_seals and round_transcripts
# (SETTLEMENT_DDL creates them); rounds settled before it have no transcript, and the
# first one written starts the chain (prev null).
MIGRATIONS[SETTLEMENT_VERSION - 1] = []
assert BASE_VERSION == SETTLEMENT_VERSION, "the settlement step is the newest of the base schema"


# --------------------------------------------------------------------------- both backends


@dataclass(frozen=True)
class Step:
    """One schema change past ``BASE_VERSION``, declared for both backends side by side:
    ``sqlite`` and ``postgres`` are SQL scripts that take a ledger at ``version - 1`` to
    ``version``, run in the same transaction as the version bump (a crash midway leaves
    the old version, and the next start runs the step again). A step that has nothing
    to do on one backend says so with an empty script, never by omission."""

    version: int
    what: str
    sqlite: str
    postgres: str


def key_hash(key: str) -> bytes:
    """The fixed-size index key of an op's idempotency key: the first 16 bytes of its
    SHA-256 (the same in SQL on both backends: ``crashd_key_hash`` on SQLite,
    ``sha256`` on PostgreSQL). A collision is a 2^-64 chance at 4 billion keys."""
    return hashlib.sha256(key.encode()).digest()[:16]


_OPS_KEY_HASH_SQLITE = """
CREATE TABLE ops_rebuilt (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL,
    key_hash    BLOB NOT NULL UNIQUE CHECK (length(key_hash) = 16),
    kind        TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    ok          INTEGER NOT NULL CHECK (ok IN (0, 1)),
    code        TEXT CHECK ((ok = 1) = (code IS NULL)),
    result      TEXT NOT NULL,
    ts          INTEGER NOT NULL
) STRICT;
INSERT INTO ops_rebuilt (id, key, key_hash, kind, fingerprint, ok, code, result, ts)
    SELECT id, key, crashd_key_hash(key), kind, fingerprint, ok, code, result, ts FROM ops;
DROP TABLE ops;
ALTER TABLE ops_rebuilt RENAME TO ops;
CREATE TRIGGER ops_no_update BEFORE UPDATE ON ops
BEGIN SELECT RAISE(ABORT, 'ops are append-only'); END;
CREATE TRIGGER ops_no_delete BEFORE DELETE ON ops
BEGIN SELECT RAISE(ABORT, 'ops are append-only'); END;
"""

_OPS_KEY_INDEX_APART_SQLITE = """
CREATE TABLE ops_rebuilt (
    id          INTEGER PRIMARY KEY,
    key         TEXT NOT NULL,
    key_hash    BLOB NOT NULL CHECK (length(key_hash) = 16),
    kind        TEXT NOT NULL,
    fingerprint BLOB NOT NULL,
    ok          INTEGER NOT NULL CHECK (ok IN (0, 1)),
    code        TEXT CHECK ((ok = 1) = (code IS NULL)),
    result      TEXT NOT NULL,
    ts          INTEGER NOT NULL
) STRICT;
INSERT INTO ops_rebuilt (id, key, key_hash, kind, fingerprint, ok, code, result, ts)
    SELECT id, key, key_hash, kind, fingerprint, ok, code, result, ts FROM ops ORDER BY id;
DROP TABLE ops;
ALTER TABLE ops_rebuilt RENAME TO ops;
CREATE TRIGGER ops_no_update BEFORE UPDATE ON ops
BEGIN SELECT RAISE(ABORT, 'ops are append-only'); END;
CREATE TRIGGER ops_no_delete BEFORE DELETE ON ops
BEGIN SELECT RAISE(ABORT, 'ops are append-only'); END;
"""

STEPS: tuple[Step, ...] = (
    Step(
        8,
        "ops indexed by a 16-byte hash of their idempotency key, not the key itself",
        # SQLite cannot drop a UNIQUE constraint: the table is rebuilt by its documented
        # procedure (foreign keys off around the step; checked before the commit).
        _OPS_KEY_HASH_SQLITE,
        """
ALTER TABLE ops ADD COLUMN key_hash bytea;
ALTER TABLE ops DISABLE TRIGGER ops_append_only;
UPDATE ops SET key_hash = substring(sha256(convert_to(key, 'UTF8')) FROM 1 FOR 16);
ALTER TABLE ops ENABLE TRIGGER ops_append_only;
ALTER TABLE ops ALTER COLUMN key_hash SET NOT NULL;
ALTER TABLE ops ADD CONSTRAINT ops_key_hash CHECK (octet_length(key_hash) = 16);
ALTER TABLE ops ADD CONSTRAINT ops_key_hash_key UNIQUE (key_hash);
ALTER TABLE ops DROP CONSTRAINT ops_key_key;
""",
    ),
    Step(
        9,
        "SQLite: the ops' unique key index moves to its own file, written without fsync "
        "(engine/ledger/keyindex.py)",
        # The index file is built from the rebuilt table's key_hash by the first open.
        _OPS_KEY_INDEX_APART_SQLITE,
        # Nothing: PostgreSQL keeps ops_key_hash_key. Its B-tree pages are written back
        # by checkpoints, not flushed by each commit, so it never paid SQLite's cost.
        "",
    ),
    Step(
        10,
        "PostgreSQL: a transfer's op checked only by the statement trigger, not also by a "
        "row-level foreign key",
        # Nothing: SQLite's foreign keys are checked in the row's own insert.
        "",
        # transfers_refs has always checked the op (JOIN ops), beside the accounts and
        # the hold; the column's own REFERENCES was left in the base DDL, and its
        # row-level trigger cost 9.1 ms of a 1,000-row insert's 21.9 (EXPLAIN ANALYZE:
        # docs/scale-out.md). Equivalent: ops are append-only (ops_append_only).
        "ALTER TABLE transfers DROP CONSTRAINT transfers_op_fkey;",
    ),
)
"""Every step past ``BASE_VERSION``, in order; a test checks they are consecutive and
that both backends end with the same tables and columns."""

SCHEMA_VERSION = STEPS[-1].version if STEPS else BASE_VERSION


# PostgreSQL, version 7 (``BASE_VERSION``): the same tables, columns, CHECKs and one-way
# rules as ``DDL`` (integers are bigint, blobs bytea). Triggers raise SQLSTATE 23000
# (integrity_constraint_violation, psycopg's IntegrityError) with the same messages;
# TRUNCATE, which skips row triggers, is refused on every table that holds history.
# ``leader`` holds the lease's term (engine/ledger/lease.py): one row, bumped by each
# new leader, read FOR SHARE by every ledger transaction (``crashd_fence``).
POSTGRES_DDL = """
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE leader (
    id     smallint PRIMARY KEY CHECK (id = 1),
    term   bigint NOT NULL CHECK (term >= 0),
    holder text NOT NULL,
    since  bigint NOT NULL
);
INSERT INTO leader VALUES (1, 0, '', 0);

CREATE TABLE ops (
    id          bigint PRIMARY KEY,
    key         text NOT NULL UNIQUE,
    kind        text NOT NULL,
    fingerprint bytea NOT NULL,
    ok          smallint NOT NULL CHECK (ok IN (0, 1)),
    code        text CHECK ((ok = 1) = (code IS NULL)),
    result      text NOT NULL,
    ts          bigint NOT NULL
);

CREATE TABLE accounts (
    id          bigint PRIMARY KEY,
    environment text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    kind        text NOT NULL CHECK (kind IN ('player', 'house', 'escrow', 'psp', 'faucet',
        'capital', 'wallet')),
    partner_id  text NOT NULL,
    user_id     text NOT NULL,
    posted      bigint NOT NULL,
    pending     bigint NOT NULL CHECK (pending >= 0),
    UNIQUE (environment, kind, partner_id, user_id),
    UNIQUE (id, environment),
    CHECK ((kind = 'player') = (user_id != '' AND partner_id != '')),
    CHECK (kind != 'player' OR posted >= pending),
    CHECK (kind != 'escrow' OR posted >= 0),
    CHECK (kind != 'faucet' OR environment = 'sandbox'),
    CHECK (kind = 'player' OR pending = 0)
) WITH (fillfactor = 50);
-- fillfactor 50: room on each page for the new version of a row whose balance changed,
-- so every commit's balance updates stay heap-only (HOT) and touch no index.

CREATE TABLE holds (
    id          bigint PRIMARY KEY,
    hold_id     text NOT NULL UNIQUE,
    op          bigint NOT NULL REFERENCES ops(id),
    environment text NOT NULL,
    debit       bigint NOT NULL,
    credit      bigint NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    expires_at  bigint NOT NULL,
    state       text NOT NULL CHECK (state IN ('pending', 'posted', 'voided', 'expired')),
    resolved_op bigint REFERENCES ops(id),
    resolved_at bigint,
    CHECK (debit != credit),
    CHECK ((state = 'pending') = (resolved_at IS NULL)),
    FOREIGN KEY (debit, environment) REFERENCES accounts (id, environment),
    FOREIGN KEY (credit, environment) REFERENCES accounts (id, environment)
);
CREATE INDEX holds_pending_by_account ON holds (debit, expires_at) WHERE state = 'pending';
CREATE INDEX holds_pending_by_expiry ON holds (expires_at) WHERE state = 'pending';

CREATE TABLE rounds (
    id          bigint PRIMARY KEY CHECK (id >= 1),
    started_op  bigint NOT NULL REFERENCES ops(id),
    started_at  bigint NOT NULL,
    state       text NOT NULL CHECK (state IN ('open', 'crashed', 'voided')),
    crash_point bigint CHECK (crash_point IS NULL OR crash_point >= 100),
    game_hash   text,
    ended_op    bigint REFERENCES ops(id),
    ended_at    bigint,
    settled_op  bigint REFERENCES ops(id),
    settled_at  bigint,
    void_reason text,
    CHECK (state != 'crashed' OR (crash_point IS NOT NULL AND game_hash IS NOT NULL)),
    CHECK ((state = 'open') = (ended_op IS NULL))
);
CREATE INDEX rounds_unfinished ON rounds (id) WHERE settled_at IS NULL;

CREATE TABLE bets (
    id           bigint PRIMARY KEY,
    ticket_id    text NOT NULL UNIQUE,
    hold         bigint NOT NULL UNIQUE REFERENCES holds(id),
    account      bigint NOT NULL REFERENCES accounts(id),
    stake        bigint NOT NULL CHECK (stake > 0),
    auto_cashout bigint CHECK (auto_cashout IS NULL OR auto_cashout >= 101),
    round_id     bigint REFERENCES rounds(id),
    confirmed_op bigint NOT NULL REFERENCES ops(id),
    confirmed_at bigint NOT NULL,
    outcome      text CHECK (outcome IS NULL OR outcome IN ('won', 'lost', 'refunded')),
    multiplier   bigint,
    payout       bigint CHECK (payout IS NULL OR payout >= 0),
    settled_op   bigint REFERENCES ops(id),
    settled_at   bigint,
    CHECK ((outcome IS NULL) = (settled_op IS NULL)),
    CHECK ((outcome IS NULL) = (payout IS NULL)),
    CHECK ((outcome = 'won') = (multiplier IS NOT NULL)),
    CHECK (outcome IS NULL OR outcome != 'won' OR payout = stake * multiplier / 100),
    CHECK (outcome IS NULL OR outcome != 'lost' OR payout = 0),
    CHECK (outcome IS NULL OR outcome != 'refunded' OR payout = stake)
);
CREATE INDEX bets_unsettled_by_round ON bets (round_id) WHERE outcome IS NULL;
CREATE INDEX bets_by_account ON bets (account, id);
CREATE INDEX bets_by_round ON bets (round_id);

CREATE TABLE transfers (
    id          bigint PRIMARY KEY,
    op          bigint NOT NULL REFERENCES ops(id),
    environment text NOT NULL,
    debit       bigint NOT NULL,
    credit      bigint NOT NULL,
    amount      bigint NOT NULL CHECK (amount > 0),
    kind        text NOT NULL CHECK (kind IN ('deposit', 'withdrawal', 'withdrawal_reversal',
        'faucet', 'bet_stake', 'stake_return', 'win', 'loss', 'refund', 'bankroll_deposit',
        'bankroll_withdrawal', 'wallet_debit', 'wallet_credit', 'wallet_rollback')),
    hold        bigint,
    ts          bigint NOT NULL,
    CHECK (debit != credit)
);
CREATE INDEX transfers_by_op ON transfers (op);
-- The references of a transfer (its op, its hold, both accounts in its environment),
-- checked once per INSERT statement over all its rows instead of by three row-level
-- foreign keys (measured: ~25 us per transfer row, a third of a deposit's cost on the
-- server). Equivalent here: no referenced row can be deleted or change its id or
-- environment (the triggers below), so only inserts need checking.
CREATE FUNCTION crashd_transfers_refs() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total bigint;
    good  bigint;
BEGIN
    -- Counted by joins (hash joins over the statement's rows), not NOT EXISTS per row.
    SELECT count(*) INTO total FROM new_rows;
    SELECT count(*) INTO good FROM new_rows n
      JOIN accounts d ON d.id = n.debit AND d.environment = n.environment
      JOIN accounts c ON c.id = n.credit AND c.environment = n.environment
      JOIN ops o ON o.id = n.op
      LEFT JOIN holds h ON h.id = n.hold
     WHERE n.hold IS NULL OR h.id IS NOT NULL;
    IF good != total THEN
        RAISE EXCEPTION 'transfers: foreign key violated (an unknown op or hold, or an '
            'account of another environment)' USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER transfers_refs AFTER INSERT ON transfers
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION crashd_transfers_refs();

CREATE TABLE replies (
    key          bytea PRIMARY KEY CHECK (octet_length(key) = 16),
    fingerprint  bytea NOT NULL,
    status       bigint NOT NULL,
    content_type text NOT NULL,
    body         bytea NOT NULL,
    created_at   bigint NOT NULL
);
CREATE INDEX replies_by_age ON replies (created_at);

CREATE TABLE reversals (
    withdrawal_op bigint PRIMARY KEY REFERENCES ops(id),
    op            bigint NOT NULL UNIQUE REFERENCES ops(id)
);

-- The operator's audit log (version 5, as on SQLite): one row per operator action,
-- under the id of the op that carried it out, append-only.
CREATE TABLE audit_log (
    id          bigint PRIMARY KEY REFERENCES ops(id),
    ts          bigint NOT NULL,
    environment text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    actor       text NOT NULL,
    action      text NOT NULL,
    before      text,
    after       text,
    note        text NOT NULL
);
CREATE INDEX audit_log_by_action ON audit_log (environment, action, id);

-- The seamless wallet (version 6, as on SQLite; docs/wallet.md): every debit, credit
-- and rollback crashd must bring to a final answer (history), and every call made to a
-- partner's wallet (the reconciliation log, purged by age by the one writer). Their ids
-- are the tables' own (SQLite's rowid; an identity here), not the planner's.
CREATE TABLE wallet_txs (
    id           bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    tx_id        text NOT NULL UNIQUE,
    kind         text NOT NULL CHECK (kind IN ('debit', 'credit', 'rollback')),
    environment  text NOT NULL CHECK (environment IN ('sandbox', 'production')),
    partner_id   text NOT NULL,
    user_id      text NOT NULL,
    currency     text NOT NULL,
    ticket_id    text NOT NULL,
    round_id     bigint,
    ref_tx_id    text UNIQUE REFERENCES wallet_txs (tx_id),
    amount       bigint NOT NULL CHECK (amount >= 0),
    multiplier   bigint CHECK (multiplier IS NULL OR multiplier >= 100),
    state        text NOT NULL CHECK (state IN ('pending', 'ok', 'refused', 'cancelled',
        'failed', 'resolved')),
    code         text,
    attempts     bigint NOT NULL CHECK (attempts >= 0),
    next_at      bigint,
    give_up_at   bigint,
    wallet_tx_id text,
    balance      bigint,
    created_op   bigint NOT NULL REFERENCES ops (id),
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL,
    closed_op    bigint REFERENCES ops (id),
    closed_by    text,
    note         text,
    CHECK ((kind = 'debit') = (ref_tx_id IS NULL)),
    CHECK (kind != 'debit' OR amount > 0),
    CHECK (kind = 'debit' OR (state != 'refused' AND state != 'cancelled')),
    CHECK (kind != 'debit' OR (state != 'failed' AND state != 'resolved')),
    CHECK (kind = 'credit' OR multiplier IS NULL)
);
CREATE INDEX wallet_txs_by_partner ON wallet_txs (partner_id, created_at);
CREATE INDEX wallet_txs_by_user ON wallet_txs (partner_id, user_id, created_at);
CREATE INDEX wallet_txs_by_round ON wallet_txs (round_id);
CREATE INDEX wallet_txs_due ON wallet_txs (next_at) WHERE state = 'pending';
CREATE INDEX wallet_txs_failed ON wallet_txs (partner_id) WHERE state = 'failed';
CREATE INDEX wallet_txs_open_debits ON wallet_txs (id)
    WHERE kind = 'debit' AND closed_by IS NULL AND state != 'refused';

CREATE TABLE wallet_calls (
    id          bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at          bigint NOT NULL,
    environment text NOT NULL,
    partner_id  text NOT NULL,
    call        text NOT NULL CHECK (call IN ('session.verify', 'balance', 'debit', 'credit',
        'rollback')),
    tx_id       text,
    user_id     text,
    request_id  text NOT NULL,
    request     text NOT NULL,
    status      bigint,
    response    text,
    outcome     text NOT NULL CHECK (outcome IN ('ok', 'refused', 'unknown')),
    code        text,
    duration_ms bigint NOT NULL CHECK (duration_ms >= 0)
);
CREATE INDEX wallet_calls_by_at ON wallet_calls (partner_id, at);
CREATE INDEX wallet_calls_by_tx ON wallet_calls (tx_id);
CREATE INDEX wallet_calls_by_age ON wallet_calls (at);

-- Verifiable settlement (version 7, as on SQLite; docs/fairness.md): a round's start
-- seal and its transcript, each the signed document as served, append-only.
CREATE TABLE round_seals (
    round_id   bigint PRIMARY KEY REFERENCES rounds(id),
    document   text NOT NULL,
    bets       text NOT NULL,
    created_at bigint NOT NULL
);

CREATE TABLE round_transcripts (
    round_id   bigint PRIMARY KEY REFERENCES rounds(id),
    hash       text NOT NULL UNIQUE CHECK (length(hash) = 64),
    prev       text CHECK (prev IS NULL OR length(prev) = 64),
    document   text NOT NULL,
    created_at bigint NOT NULL
);

CREATE FUNCTION crashd_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '%', TG_ARGV[0] USING ERRCODE = 'integrity_constraint_violation';
END $$;

-- Append-only history (TRUNCATE included: it skips row triggers).
CREATE TRIGGER transfers_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON transfers
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('transfers are append-only');
CREATE TRIGGER ops_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON ops
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('ops are append-only');
CREATE TRIGGER reversals_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON reversals
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('reversals are append-only');
CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('the audit log is append-only');
CREATE TRIGGER accounts_no_delete BEFORE DELETE OR TRUNCATE ON accounts
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('accounts are never deleted');
-- UPDATE OF the identity columns only: the balance updates (SET posted, pending) of
-- every commit group do not run it.
CREATE TRIGGER accounts_identity_columns
BEFORE UPDATE OF id, environment, kind, partner_id, user_id ON accounts FOR EACH ROW
WHEN (NEW.id IS DISTINCT FROM OLD.id OR NEW.environment IS DISTINCT FROM OLD.environment
  OR NEW.kind IS DISTINCT FROM OLD.kind OR NEW.partner_id IS DISTINCT FROM OLD.partner_id
  OR NEW.user_id IS DISTINCT FROM OLD.user_id)
EXECUTE FUNCTION crashd_refuse('account identity is immutable');

-- One-way life cycles.
CREATE TRIGGER holds_no_delete BEFORE DELETE OR TRUNCATE ON holds
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('holds are never deleted');
CREATE TRIGGER holds_resolve_once BEFORE UPDATE ON holds FOR EACH ROW
WHEN (OLD.state != 'pending' OR NEW.state = 'pending'
  OR NEW.id IS DISTINCT FROM OLD.id OR NEW.hold_id IS DISTINCT FROM OLD.hold_id
  OR NEW.op IS DISTINCT FROM OLD.op OR NEW.debit IS DISTINCT FROM OLD.debit
  OR NEW.credit IS DISTINCT FROM OLD.credit OR NEW.amount IS DISTINCT FROM OLD.amount
  OR NEW.expires_at IS DISTINCT FROM OLD.expires_at)
EXECUTE FUNCTION crashd_refuse('a hold is resolved at most once');

CREATE TRIGGER bets_no_delete BEFORE DELETE OR TRUNCATE ON bets
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('bets are never deleted');
CREATE TRIGGER bets_one_way BEFORE UPDATE ON bets FOR EACH ROW
WHEN (NEW.id IS DISTINCT FROM OLD.id OR NEW.ticket_id IS DISTINCT FROM OLD.ticket_id
  OR NEW.hold IS DISTINCT FROM OLD.hold OR NEW.account IS DISTINCT FROM OLD.account
  OR NEW.stake IS DISTINCT FROM OLD.stake
  OR NEW.confirmed_op IS DISTINCT FROM OLD.confirmed_op
  OR NEW.confirmed_at IS DISTINCT FROM OLD.confirmed_at
  OR (OLD.round_id IS NOT NULL AND NEW.round_id IS DISTINCT FROM OLD.round_id)
  OR (OLD.outcome IS NOT NULL AND (NEW.outcome IS DISTINCT FROM OLD.outcome
      OR NEW.payout IS DISTINCT FROM OLD.payout
      OR NEW.multiplier IS DISTINCT FROM OLD.multiplier
      OR NEW.settled_op IS DISTINCT FROM OLD.settled_op
      OR NEW.settled_at IS DISTINCT FROM OLD.settled_at
      OR NEW.auto_cashout IS DISTINCT FROM OLD.auto_cashout)))
EXECUTE FUNCTION crashd_refuse('a bet joins one round and is settled exactly once');

CREATE TRIGGER rounds_no_delete BEFORE DELETE OR TRUNCATE ON rounds
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('rounds are never deleted');
CREATE TRIGGER rounds_one_way BEFORE UPDATE ON rounds FOR EACH ROW
WHEN (NEW.id IS DISTINCT FROM OLD.id OR NEW.started_op IS DISTINCT FROM OLD.started_op
  OR NEW.started_at IS DISTINCT FROM OLD.started_at
  OR OLD.state = 'voided' OR OLD.settled_at IS NOT NULL
  OR (OLD.state = 'crashed' AND (NEW.crash_point IS DISTINCT FROM OLD.crash_point
      OR NEW.game_hash IS DISTINCT FROM OLD.game_hash
      OR NEW.ended_op IS DISTINCT FROM OLD.ended_op))
  OR (NEW.state = 'open' AND OLD.state != 'open'))
EXECUTE FUNCTION crashd_refuse('round state only moves forward');

-- A wallet transaction's identity never changes; a final state is never left; a debit
-- is closed (closed_by) once. The call log is never rewritten; only the writer's purge
-- by age deletes from it (a TRUNCATE is never that).
CREATE TRIGGER wallet_txs_no_delete BEFORE DELETE OR TRUNCATE ON wallet_txs
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('wallet transactions are never deleted');
CREATE TRIGGER wallet_txs_one_way BEFORE UPDATE ON wallet_txs FOR EACH ROW
WHEN (NEW.id IS DISTINCT FROM OLD.id OR NEW.tx_id IS DISTINCT FROM OLD.tx_id
  OR NEW.kind IS DISTINCT FROM OLD.kind OR NEW.environment IS DISTINCT FROM OLD.environment
  OR NEW.partner_id IS DISTINCT FROM OLD.partner_id
  OR NEW.user_id IS DISTINCT FROM OLD.user_id OR NEW.currency IS DISTINCT FROM OLD.currency
  OR NEW.ticket_id IS DISTINCT FROM OLD.ticket_id
  OR NEW.ref_tx_id IS DISTINCT FROM OLD.ref_tx_id OR NEW.amount IS DISTINCT FROM OLD.amount
  OR NEW.multiplier IS DISTINCT FROM OLD.multiplier
  OR NEW.created_op IS DISTINCT FROM OLD.created_op
  OR NEW.created_at IS DISTINCT FROM OLD.created_at
  OR (OLD.state IN ('ok', 'refused', 'cancelled', 'resolved')
      AND NEW.state IS DISTINCT FROM OLD.state)
  OR (OLD.closed_by IS NOT NULL AND NEW.closed_by IS DISTINCT FROM OLD.closed_by))
EXECUTE FUNCTION crashd_refuse('a wallet transaction only moves forward');
CREATE TRIGGER wallet_calls_no_update BEFORE UPDATE OR TRUNCATE ON wallet_calls
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('the wallet call log is append-only');

CREATE TRIGGER round_seals_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON round_seals
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('seals are append-only');
CREATE TRIGGER round_transcripts_append_only
BEFORE UPDATE OR DELETE OR TRUNCATE ON round_transcripts
FOR EACH STATEMENT EXECUTE FUNCTION crashd_refuse('transcripts are append-only');

-- The fence: every ledger transaction starts with SELECT crashd_fence(its term). The
-- row lock (FOR SHARE) makes a takeover's term bump wait for a transaction already
-- past its fence, and a transaction fenced after the bump fails: a deposed leader
-- commits nothing more.
CREATE FUNCTION crashd_fence(expected bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    current bigint;
BEGIN
    SELECT term INTO current FROM leader WHERE id = 1 FOR SHARE;
    IF current IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'fenced: this writer holds term %, the ledger is at term %',
            expected, current USING ERRCODE = 'CF001';
    END IF;
END $$;
"""

"""The SQLite schema: tables, CHECK constraints and the triggers that make history
append-only.

Rows that record money (``transfers``, ``ops``, ``reversals``) are insert-only: UPDATE
and DELETE raise. Rows with a life cycle (``holds``, ``bets``, ``rounds``) may change
only along their one-way transitions (pending → posted/voided/expired, unsettled →
settled, open → crashed → settled or voided), and their identifying columns never
change; DELETE raises. ``accounts`` keeps the running balances, written in the same
transaction as the transfers and audited against their sum.
"""

from __future__ import annotations

SCHEMA_VERSION = 7

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
assert SCHEMA_VERSION == SETTLEMENT_VERSION, "the settlement step is the newest"

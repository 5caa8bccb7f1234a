"""The planner's overlay: ``Txn`` reads committed state through a ``Backing`` and keeps
every change of one commit group until the store flushes it. Pure: no I/O, no clock."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from crashd.engine.bounds import MAX_SWEEP

from .model import (
    Account,
    AccountKey,
    AccountKind,
    Bet,
    BetOutcome,
    Hold,
    HoldState,
    OpRecord,
    Round,
    RoundState,
)
from .wallet import WalletOverlay, WalletTx

# --------------------------------------------------------------------------- backing


class Backing(Protocol):
    """Committed state, as read by the planner. Rows returned are fresh copies."""

    def load_op(self, key: str) -> OpRecord | None: ...
    def load_account(self, key: AccountKey) -> Account | None: ...
    def load_account_by_id(self, account_id: int) -> Account: ...
    def load_hold(self, hold_id: str) -> Hold | None: ...
    def load_hold_by_seq(self, seq: int) -> Hold: ...
    def load_bet(self, ticket_id: str) -> Bet | None: ...
    def load_round(self, round_id: int) -> Round | None: ...
    def highest_round_id(self) -> int: ...
    def unfinished_round_ids(self) -> list[int]: ...
    def unsettled_bets(self, round_id: int | None) -> list[Bet]: ...
    def expired_holds(self, account_id: int | None, now: int, limit: int) -> list[Hold]: ...
    def transfers_of_op(self, op_seq: int) -> list[tuple[int, int, int, str]]: ...
    def reversal_of(self, withdrawal_seq: int) -> int | None: ...
    # The seamless wallet's rows (crashd.engine.ledger.wallet.WalletBacking).
    def load_wallet_tx(self, tx_id: str) -> WalletTx | None: ...
    def load_wallet_debits(self, round_id: int) -> list[WalletTx]: ...
    def load_wallet_open_debits(self) -> list[WalletTx]: ...
    def load_seal(self, round_id: int) -> tuple[str, str] | None: ...
    def last_transcript(self) -> tuple[int, str] | None: ...
    def round_bets(self, round_id: int) -> list[Bet]: ...


@dataclass
class Ids:
    """Next row id per table. Only the single writer allocates, so ids are known before
    insert and rows can reference each other inside one ``executemany`` flush."""

    op: int
    account: int
    transfer: int
    hold: int
    bet: int


_ABSENT = object()


class Txn:
    """The overlay for one commit group: rows read, rows changed, rows to insert."""

    def __init__(self, backing: Backing, ids: Ids) -> None:
        self.backing = backing
        self.ids = ids
        self.first_op_seq = ids.op
        self.mutations = 0
        self._ops: dict[str, OpRecord | object] = {}
        self._accounts: dict[AccountKey, Account | object] = {}
        self._accounts_by_id: dict[int, Account] = {}
        self._holds: dict[str, Hold | object] = {}
        self._holds_by_seq: dict[int, Hold] = {}
        self._bets: dict[str, Bet | object] = {}
        self._rounds: dict[int, Round | object] = {}
        self._highest_round: int | None = None
        self._unfinished: list[int] | None = None
        self._reversals: dict[int, int | None] = {}
        self._system: dict[tuple[str, str], Account] = {}
        # Write sets, flushed by the store in foreign-key order.
        self.new_ops: list[OpRecord] = []
        self.op_times: dict[int, int] = {}
        self.key_hashes: dict[str, bytes] = {}
        """Key hashes the store's prefetch computed, for its flush: once per op, not
        twice (a SHA-256 each, ~2% of a deposit's CPU on PostgreSQL, profiled)."""
        self.new_accounts: list[Account] = []
        self.dirty_accounts: dict[int, Account] = {}
        self.new_holds: list[Hold] = []
        self.dirty_holds: dict[int, Hold] = {}
        self.new_bets: list[Bet] = []
        self.dirty_bets: dict[int, Bet] = {}
        self.new_rounds: list[Round] = []
        self.dirty_rounds: dict[int, Round] = {}
        self.new_transfers: list[tuple[int, int, str, int, int, int, str, int | None, int]] = []
        """(id, op, environment, debit, credit, amount, kind, hold, ts)"""
        self.new_reversals: list[tuple[int, int]] = []
        self.new_replies: list[tuple[bytes, bytes, int, str, bytes, int]] = []
        """(key, fingerprint, status, content type, body, created at)"""
        self.purge_replies_before: int | None = None
        self.wallet: WalletOverlay | None = None
        """The seamless wallet's rows, once an op of the wallet's touched them."""
        self.new_seals: list[tuple[int, str, str, int]] = []
        """(round id, signed seal document, its leaves, created at)"""
        self.new_transcripts: list[tuple[int, str, str | None, str, int]] = []
        """(round id, hash, prev, signed transcript document, created at)"""
        self._last_transcript: tuple[int, str] | None | object = _ABSENT
        self.new_audit: list[tuple[int, int, str, str, str, str | None, str | None, str]] = []
        """(op seq, ts, environment, actor, action, before, after, note)"""

    def wallet_overlay(self) -> WalletOverlay:
        if self.wallet is None:
            self.wallet = WalletOverlay(self.backing)
        return self.wallet

    # -- cache priming (the store prefetches in bulk; misses fall back to single loads)

    def prime_op(self, key: str, rec: OpRecord | None) -> None:
        self._ops.setdefault(key, _ABSENT if rec is None else rec)

    def prime_absent_ops(self, keys: Iterable[str]) -> None:
        """``prime_op(key, None)`` for each of ``keys`` (keys known to be unused)."""
        ops = self._ops
        for key in keys:
            ops.setdefault(key, _ABSENT)

    def prime_account(self, key: AccountKey, acct: Account | None) -> None:
        if key in self._accounts:
            return
        self._accounts[key] = _ABSENT if acct is None else acct
        if acct is not None:
            self._accounts_by_id[acct.id] = acct

    def prime_hold(self, hold_id: str, hold: Hold | None) -> None:
        if hold_id in self._holds:
            return
        self._holds[hold_id] = _ABSENT if hold is None else hold
        if hold is not None:
            self._holds_by_seq[hold.id] = hold

    def prime_bet(self, ticket_id: str, bet: Bet | None) -> None:
        self._bets.setdefault(ticket_id, _ABSENT if bet is None else bet)

    # -- reads through the overlay

    def op_record(self, key: str) -> OpRecord | None:
        rec = self._ops.get(key)
        if rec is None:
            rec = self.backing.load_op(key)
            self._ops[key] = _ABSENT if rec is None else rec
        return None if rec is _ABSENT else rec  # type: ignore[return-value]

    def account(self, key: AccountKey, *, create: bool) -> Account | None:
        acct = self._accounts.get(key)
        if acct is None:
            acct = self.backing.load_account(key)
            self.prime_account(key, acct)
            acct = self._accounts[key]
        if acct is _ABSENT:
            if not create:
                return None
            # Creating an empty account moves no money, so it is allowed before
            # validation completes and is not counted as a mutation.
            new = Account(id=self.ids.account, key=key)
            self.ids.account += 1
            self._accounts[key] = new
            self._accounts_by_id[new.id] = new
            self.new_accounts.append(new)
            return new
        assert isinstance(acct, Account)
        return acct

    def account_by_id(self, account_id: int) -> Account:
        acct = self._accounts_by_id.get(account_id)
        if acct is None:
            loaded = self.backing.load_account_by_id(account_id)
            self.prime_account(loaded.key, loaded)
            acct = self._accounts_by_id[account_id]
        return acct

    def system(self, environment: str, kind: AccountKind) -> Account:
        # Keyed by the kind's value: hashing the Enum member itself is a Python-level
        # call, and this runs for nearly every op.
        k = (environment, kind._value_)
        acct = self._system.get(k)
        if acct is None:
            acct = self.account(AccountKey.system(environment, kind), create=True)
            assert acct is not None
            self._system[k] = acct
        return acct

    def hold(self, hold_id: str) -> Hold | None:
        hold = self._holds.get(hold_id)
        if hold is None:
            self.prime_hold(hold_id, self.backing.load_hold(hold_id))
            hold = self._holds[hold_id]
        return None if hold is _ABSENT else hold  # type: ignore[return-value]

    def hold_by_seq(self, seq: int) -> Hold:
        hold = self._holds_by_seq.get(seq)
        if hold is None:
            loaded = self.backing.load_hold_by_seq(seq)
            self.prime_hold(loaded.hold_id, loaded)
            hold = self._holds_by_seq[seq]
        return hold

    def bet(self, ticket_id: str) -> Bet | None:
        bet = self._bets.get(ticket_id)
        if bet is None:
            self.prime_bet(ticket_id, self.backing.load_bet(ticket_id))
            bet = self._bets[ticket_id]
        return None if bet is _ABSENT else bet  # type: ignore[return-value]

    def round(self, round_id: int) -> Round | None:
        rnd = self._rounds.get(round_id)
        if rnd is None:
            loaded = self.backing.load_round(round_id)
            self._rounds[round_id] = _ABSENT if loaded is None else loaded
            rnd = self._rounds[round_id]
        return None if rnd is _ABSENT else rnd  # type: ignore[return-value]

    def highest_round_id(self) -> int:
        if self._highest_round is None:
            self._highest_round = self.backing.highest_round_id()
        return self._highest_round

    def unfinished_rounds(self) -> list[Round]:
        """Rounds open, or crashed with bets not yet settled in bulk."""
        if self._unfinished is None:
            self._unfinished = self.backing.unfinished_round_ids()
        out = []
        for rid in self._unfinished:
            rnd = self.round(rid)
            assert rnd is not None
            if rnd.state is RoundState.OPEN or (
                rnd.state is RoundState.CRASHED and rnd.settled_at is None
            ):
                out.append(rnd)
        return out

    def unsettled_bets(self, round_id: int | None) -> list[Bet]:
        """Unsettled bets of a round (or not yet in one), as of this overlay."""
        seen: dict[str, Bet] = {}
        for loaded in self.backing.unsettled_bets(round_id):
            self.prime_bet(loaded.ticket_id, loaded)
            bet = self.bet(loaded.ticket_id)
            assert bet is not None
            seen[bet.ticket_id] = bet
        for bet in self.new_bets:
            seen.setdefault(bet.ticket_id, bet)
        for bet in self.dirty_bets.values():
            seen.setdefault(bet.ticket_id, bet)
        return sorted(
            (b for b in seen.values() if b.round_id == round_id and b.outcome is None),
            key=lambda b: b.id,
        )

    def expired_holds(self, account_id: int | None, now: int, limit: int) -> list[Hold]:
        out = []
        for loaded in self.backing.expired_holds(account_id, now, limit):
            self.prime_hold(loaded.hold_id, loaded)
            hold = self.hold(loaded.hold_id)
            assert hold is not None
            if hold.state is HoldState.PENDING and hold.expires_at <= now:
                out.append(hold)
        # Holds created in this group expire strictly after ``now`` (ttl > 0).
        return out

    def transfers_of_op(self, op_seq: int) -> list[tuple[int, int, int, str]]:
        if op_seq >= self.first_op_seq:
            return [(t[3], t[4], t[5], t[6]) for t in self.new_transfers if t[1] == op_seq]
        return self.backing.transfers_of_op(op_seq)

    def reversal_of(self, withdrawal_seq: int) -> int | None:
        if withdrawal_seq not in self._reversals:
            self._reversals[withdrawal_seq] = self.backing.reversal_of(withdrawal_seq)
        return self._reversals[withdrawal_seq]

    def seal(self, round_id: int) -> tuple[str, str] | None:
        """A round's stored seal: (signed document, its leaves), this group's or committed."""
        for rid, document, bets, _ in self.new_seals:
            if rid == round_id:
                return document, bets
        return self.backing.load_seal(round_id)

    def last_transcript(self) -> tuple[int, str] | None:
        """(round id, hash) of the newest transcript: what the next one chains to."""
        if self._last_transcript is _ABSENT:
            self._last_transcript = self.backing.last_transcript()
        return self._last_transcript  # type: ignore[return-value]

    def round_bets(self, round_id: int) -> list[Bet]:
        """Every bet of a round, as of this overlay, in confirmation order."""
        seen: dict[str, Bet] = {}
        for loaded in self.backing.round_bets(round_id):
            self.prime_bet(loaded.ticket_id, loaded)
            bet = self.bet(loaded.ticket_id)
            assert bet is not None
            seen[bet.ticket_id] = bet
        for bet in self.new_bets:
            seen.setdefault(bet.ticket_id, bet)
        for bet in self.dirty_bets.values():
            seen.setdefault(bet.ticket_id, bet)
        return sorted((b for b in seen.values() if b.round_id == round_id), key=lambda b: b.id)

    def settled_rounds(self) -> list[Round]:
        """Rounds this group settled (crashed and settled, voided, or recovered)."""
        return sorted(
            (
                r
                for r in (*self.dirty_rounds.values(), *self.new_rounds)
                if r.settled_op is not None and r.settled_op >= self.first_op_seq
            ),
            key=lambda r: r.id,
        )

    # -- mutations (each asserts what must hold and what must not)

    def add_seal(self, round_id: int, document: str, bets: str, now: int) -> None:
        assert self.seal(round_id) is None, "a round is sealed once"
        self.new_seals.append((round_id, document, bets, now))
        self.mutations += 1

    def add_transcript(
        self, round_id: int, digest: str, prev: str | None, document: str, now: int
    ) -> None:
        last = self.last_transcript()
        assert last is None or round_id > last[0], "transcripts are written in round order"
        self.new_transcripts.append((round_id, digest, prev, document, now))
        self._last_transcript = (round_id, digest)
        self.mutations += 1

    def _touch_account(self, acct: Account) -> None:
        new = self.new_accounts
        if acct.id < (new[0].id if new else self.ids.account):
            self.dirty_accounts[acct.id] = acct

    def _first_new_account_id(self) -> int:
        return self.new_accounts[0].id if self.new_accounts else self.ids.account

    def transfer(
        self,
        op: int,
        debit: Account,
        credit: Account,
        amount: int,
        kind: str,
        now: int,
        hold: int | None = None,
    ) -> None:
        debit_key = debit.key
        environment = debit_key[0]
        assert debit.id != credit.id
        assert environment == credit.key[0], "environments never mix"
        assert 0 < amount < 2**62, amount
        debit.posted -= amount
        credit.posted += amount
        if debit_key[1] == "player":
            assert debit.posted >= debit.pending >= 0, "player below zero"
        # _touch_account, inlined for both sides (runs for every transfer).
        new = self.new_accounts
        first_new = new[0].id if new else self.ids.account
        if debit.id < first_new:
            self.dirty_accounts[debit.id] = debit
        if credit.id < first_new:
            self.dirty_accounts[credit.id] = credit
        ids = self.ids
        self.new_transfers.append(
            (ids.transfer, op, environment, debit.id, credit.id, amount, kind, hold, now)
        )
        ids.transfer += 1
        self.mutations += 1

    def create_hold(
        self, op: int, hold_id: str, debit: Account, credit: Account, amount: int, expires_at: int
    ) -> Hold:
        assert debit.key.environment == credit.key.environment
        assert debit.available >= amount > 0
        hold = Hold(
            id=self.ids.hold,
            hold_id=hold_id,
            op=op,
            debit=debit.id,
            credit=credit.id,
            amount=amount,
            expires_at=expires_at,
        )
        self.ids.hold += 1
        debit.pending += amount
        self._touch_account(debit)
        self._holds[hold_id] = hold
        self._holds_by_seq[hold.id] = hold
        self.new_holds.append(hold)
        self.mutations += 1
        return hold

    def resolve_hold(self, hold: Hold, state: HoldState, op: int | None, now: int) -> None:
        assert hold.state is HoldState.PENDING, "a hold is resolved at most once"
        assert state is not HoldState.PENDING
        debit = self.account_by_id(hold.debit)
        assert debit.pending >= hold.amount
        debit.pending -= hold.amount
        self._touch_account(debit)
        hold.state = state
        hold.resolved_op = op
        hold.resolved_at = now
        if not self._is_new_hold(hold):
            self.dirty_holds[hold.id] = hold
        self.mutations += 1
        if state is HoldState.POSTED:
            assert op is not None
            self.transfer(
                op,
                debit,
                self.account_by_id(hold.credit),
                hold.amount,
                "bet_stake",
                now,
                hold=hold.id,
            )

    def _is_new_hold(self, hold: Hold) -> bool:
        return bool(self.new_holds) and hold.id >= self.new_holds[0].id

    def release_expired(
        self, account: Account | None, op: int | None, now: int, limit: int = MAX_SWEEP
    ) -> tuple[int, int]:
        """Expire pending holds past their deadline (of one account, or all). This is
        housekeeping: it happens whether or not the op that triggered it succeeds."""
        if account is not None and account.pending == 0:
            return 0, 0
        released = amount = 0
        for hold in self.expired_holds(None if account is None else account.id, now, limit):
            self.resolve_hold(hold, HoldState.EXPIRED, op, now)
            released += 1
            amount += hold.amount
        return released, amount

    def place_bet(
        self,
        op: int,
        hold_id: str,
        ticket_id: str,
        player: Account,
        stake: int,
        auto_cashout: int | None,
        round_id: int | None,
        now: int,
    ) -> Hold:
        """Stake ``stake`` of ``player`` in escrow and record the bet under ``ticket_id``
        (for ``round_id``, or ``None``: the next round). The stake goes through a hold
        posted at once, so every bet has a hold, as with the two-phase flow. The caller
        has checked the ids, the funds and the round (``BetPlace``, ``WalletBetPlace``)."""
        escrow = self.system(player.key.environment, AccountKind.ESCROW)
        hold = self.create_hold(op, hold_id, player, escrow, stake, now + 1)
        self.resolve_hold(hold, HoldState.POSTED, op, now)
        self.create_bet(
            Bet(
                id=self.ids.bet,
                ticket_id=ticket_id,
                hold=hold.id,
                account=player.id,
                stake=stake,
                auto_cashout=auto_cashout,
                round_id=round_id,
                confirmed_op=op,
                confirmed_at=now,
            )
        )
        return hold

    def create_bet(self, bet: Bet) -> None:
        assert bet.id == self.ids.bet
        self.ids.bet += 1
        self._bets[bet.ticket_id] = bet
        self.new_bets.append(bet)
        self.mutations += 1

    def touch_bet(self, bet: Bet) -> None:
        if not (self.new_bets and bet.id >= self.new_bets[0].id):
            self.dirty_bets[bet.id] = bet
        self.mutations += 1

    def create_round(self, rnd: Round) -> None:
        assert rnd.id > self.highest_round_id()
        self._rounds[rnd.id] = rnd
        self._highest_round = rnd.id
        if self._unfinished is None:
            self._unfinished = self.backing.unfinished_round_ids()
        self._unfinished.append(rnd.id)
        self.new_rounds.append(rnd)
        self.mutations += 1

    def touch_round(self, rnd: Round) -> None:
        if rnd not in self.new_rounds:
            self.dirty_rounds[rnd.id] = rnd
        self.mutations += 1

    def record_reversal(self, withdrawal_seq: int, op: int) -> None:
        assert self.reversal_of(withdrawal_seq) is None
        self._reversals[withdrawal_seq] = op
        self.new_reversals.append((withdrawal_seq, op))
        self.mutations += 1

    def record_audit(
        self,
        seq: int,
        now: int,
        environment: str,
        actor: str,
        action: str,
        before: str | None,
        after: str | None,
        note: str,
    ) -> None:
        """Append an operator action to the audit log, under the op's seq."""
        self.new_audit.append((seq, now, environment, actor, action, before, after, note))
        self.mutations += 1

    def record_op(self, rec: OpRecord, now: int) -> None:
        assert self.op_record(rec.key) is None
        self._ops[rec.key] = rec
        self.new_ops.append(rec)
        self.op_times[rec.seq] = now

    def settle(
        self, bet: Bet, outcome: BetOutcome, multiplier: int | None, op: int, now: int
    ) -> int:
        """Settle one bet exactly once; returns what the player received."""
        assert bet.outcome is None, "a bet is settled exactly once"
        player = self.account_by_id(bet.account)
        env = player.key.environment
        escrow = self.system(env, AccountKind.ESCROW)
        if outcome is BetOutcome.WON:
            assert multiplier is not None and multiplier >= 100
            payout = bet.stake * multiplier // 100
            self.transfer(op, escrow, player, bet.stake, "stake_return", now)
            if payout > bet.stake:
                self.transfer(
                    op, self.system(env, AccountKind.HOUSE), player, payout - bet.stake, "win", now
                )
        elif outcome is BetOutcome.LOST:
            payout = 0
            self.transfer(op, escrow, self.system(env, AccountKind.HOUSE), bet.stake, "loss", now)
        else:
            payout = bet.stake
            self.transfer(op, escrow, player, bet.stake, "refund", now)
        bet.outcome = outcome
        bet.multiplier = multiplier
        bet.payout = payout
        bet.settled_op = op
        bet.settled_at = now
        self.touch_bet(bet)
        return payout

"""The seamless wallet's ledger operations (see ``wallet``): pure, like ``ops``.

A bet on a seamless wallet is four durable steps, each one op, in this order:

1. ``WalletDebitOpen``: the debit is recorded ``pending`` *before* it is sent, so a
   crash at any later instant leaves a trace that recovery rolls back;
2. ``WalletBetPlace`` (the wallet confirmed in time, the engine took the bet) — the
   debit is ``ok``, the stake moves wallet → player → escrow, the bet is recorded; or
   ``WalletDebitClose`` — the debit is ``refused`` (nothing to undo) or ``cancelled``
   with its rollback queued;
3. ``WalletClose``, queued by the engine right after a bet's settlement: the credit
   (payout, or 0 for a loss) or the rollback (a refund) goes into the outbox;
4. ``WalletAttempt`` per outbox call: retry later, park as ``failed``, or ``ok`` —
   then the money the player's crashd account held for the wallet moves back to it.

``WalletRecover`` (start-up, after the ledger's own recovery) cancels the debits left
``pending`` and queues what settled bets still lack; ``WalletResolve`` is the operator's
answer to a parked transaction. Every op writes the wallet call it acts on into the call
log (in ``housekeeping``: recorded even if the op is refused, never twice on a replay).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import ClassVar

from crashd.engine.bounds import MAX_AMOUNT, MAX_MULTIPLIER, MIN_AUTO_CASHOUT
from crashd.engine.wallet.contract import credit_id, debit_id, rollback_id

from .model import (
    AccountKey,
    AccountKind,
    Bet,
    BetOutcome,
    DuplicateHold,
    DuplicateTicket,
    InvalidRequest,
    Result,
)
from .ops import Op, _check_id, _PlayerOp, require_open_round
from .txn import Txn
from .wallet import (
    CANCELLED,
    CREDIT,
    DEBIT,
    FAILED,
    OK,
    PENDING,
    REFUSED,
    RESOLVED,
    ROLLBACK,
    UnknownWalletTx,
    WalletAttempted,
    WalletBetPlaced,
    WalletCall,
    WalletCallsLogged,
    WalletCallsPurged,
    WalletDebitClosed,
    WalletOverlay,
    WalletResolved,
    WalletTx,
    WalletTxFinal,
    WalletTxOpened,
    WalletTxsQueued,
)

_CURRENCY = re.compile(r"[A-Za-z0-9]{1,12}")
MAX_CALLS_PER_OP = 1000


def _check_currency(value: object) -> None:
    if not isinstance(value, str) or _CURRENCY.fullmatch(value) is None:
        raise InvalidRequest("currency must be 1-12 letters or digits", field="currency")


def _wallet(txn: Txn) -> WalletOverlay:
    return txn.wallet_overlay()


def _wallet_account(environment: str, partner_id: str) -> AccountKey:
    """The partner's wallet, as crashd's clearing account for it."""
    return AccountKey(environment, AccountKind.WALLET.value, partner_id, "")


def _hashed(op: Op) -> bytes:
    """Wallet ops carry call bodies: their fingerprint is a hash, so the op record does
    not keep a second copy of what the call log keeps."""
    return b"sha256:" + hashlib.sha256(Op.fingerprint(op)).digest()


@dataclass(frozen=True)
class _WalletOp(Op):
    def fingerprint(self) -> bytes:
        return _hashed(self)


def _closing_of(wallet: WalletOverlay, debit: WalletTx) -> WalletTx | None:
    return wallet.closing_of(debit, credit_id(debit.tx_id), rollback_id(debit.tx_id))


def _new_closing(
    debit: WalletTx,
    kind: str,
    amount: int,
    multiplier: int | None,
    seq: int,
    now: int,
    give_up_at: int,
) -> WalletTx:
    tx_id = credit_id(debit.tx_id) if kind == CREDIT else rollback_id(debit.tx_id)
    return WalletTx(
        tx_id=tx_id,
        kind=kind,
        environment=debit.environment,
        partner_id=debit.partner_id,
        user_id=debit.user_id,
        currency=debit.currency,
        ticket_id=debit.ticket_id,
        round_id=debit.round_id,
        ref_tx_id=debit.tx_id,
        amount=amount,
        multiplier=multiplier,
        state=PENDING,
        created_op=seq,
        created_at=now,
        updated_at=now,
        next_at=now,
        give_up_at=give_up_at,
    )


def _queue_closing(
    txn: Txn, debit: WalletTx, bet: Bet, seq: int, now: int, give_up_at: int
) -> str | None:
    """The credit (won or lost) or rollback (refunded) that closes a settled bet's
    debit; ``None`` if the bet is not settled or the debit is already closed."""
    wallet = _wallet(txn)
    if debit.state != OK or debit.closed_by is not None or _closing_of(wallet, debit) is not None:
        return None
    if bet.outcome is None:
        return None
    if bet.outcome is BetOutcome.REFUNDED:
        closing = _new_closing(debit, ROLLBACK, debit.amount, None, seq, now, give_up_at)
    elif bet.outcome is BetOutcome.WON:
        assert bet.payout is not None
        closing = _new_closing(debit, CREDIT, bet.payout, bet.multiplier, seq, now, give_up_at)
    else:
        closing = _new_closing(debit, CREDIT, 0, None, seq, now, give_up_at)
    wallet.add(closing)
    debit.closed_by = closing.tx_id
    debit.updated_at = now
    wallet.touch(debit)
    txn.mutations += 1
    return closing.kind


def _cancel(debit: WalletTx, code: str, seq: int, now: int, give_up_at: int, txn: Txn) -> WalletTx:
    """Cancel a pending debit and queue its rollback (retried until final)."""
    wallet = _wallet(txn)
    debit.state = CANCELLED
    debit.code = code
    debit.closed_op = seq
    debit.updated_at = now
    rollback = _new_closing(debit, ROLLBACK, debit.amount, None, seq, now, give_up_at)
    wallet.add(rollback)
    debit.closed_by = rollback.tx_id
    wallet.touch(debit)
    txn.mutations += 1
    return rollback


@dataclass(frozen=True)
class WalletDebitOpen(_PlayerOp):
    """Record a debit ``pending`` before it is sent. ``round_id``: the round the bet is
    for (open for betting now, or the next one)."""

    kind: ClassVar[str] = "wallet_debit_open"
    tx_id: str
    ticket_id: str
    round_id: int
    amount: int
    currency: str

    def fingerprint(self) -> bytes:
        return _hashed(self)

    def validate(self) -> None:
        super().validate()
        _check_id("tx_id", self.tx_id)
        _check_id("ticket_id", self.ticket_id)
        _check_currency(self.currency)
        if type(self.amount) is not int or not 0 < self.amount <= MAX_AMOUNT:
            raise InvalidRequest(f"amount must be an int in 1..{MAX_AMOUNT}", field="amount")
        if type(self.round_id) is not int or self.round_id < 1:
            raise InvalidRequest("round_id must be a positive int", field="round_id")

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [], [], [self.ticket_id]

    def housekeeping(self, txn: Txn, seq: int, now: int) -> None:
        """Nothing is held or moved."""

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        wallet = _wallet(txn)
        if wallet.tx(self.tx_id) is not None or txn.bet(self.ticket_id) is not None:
            raise DuplicateTicket("ticket id already used", ticket_id=self.ticket_id)
        wallet.add(
            WalletTx(
                tx_id=self.tx_id,
                kind=DEBIT,
                environment=self.environment,
                partner_id=self.partner_id,
                user_id=self.user_id,
                currency=self.currency,
                ticket_id=self.ticket_id,
                round_id=self.round_id,
                ref_tx_id=None,
                amount=self.amount,
                multiplier=None,
                state=PENDING,
                created_op=seq,
                created_at=now,
                updated_at=now,
            )
        )
        txn.mutations += 1
        return WalletTxOpened(self.op_id, seq, tx_id=self.tx_id, state=PENDING, code=None)


def _pending_debit(txn: Txn, tx_id: str) -> WalletTx:
    debit = _wallet(txn).tx(tx_id)
    if debit is None or debit.kind != DEBIT:
        raise UnknownWalletTx("no such debit", tx_id=tx_id)
    if debit.state != PENDING:
        raise WalletTxFinal(f"the debit is already {debit.state}", tx_id=tx_id, state=debit.state)
    return debit


@dataclass(frozen=True)
class WalletBetPlace(_PlayerOp):
    """The wallet confirmed the debit in time and the engine took the bet: the debit is
    ``ok``, its stake arrives from the partner's wallet account and is staked (player →
    escrow, through a hold posted at once, as ``BetPlace``), the bet is recorded under
    ``ticket_id`` for ``round_id`` (``None``: the next round)."""

    kind: ClassVar[str] = "wallet_bet_place"
    tx_id: str
    hold_id: str
    ticket_id: str
    amount: int
    auto_cashout: int | None
    round_id: int | None
    wallet_tx_id: str | None
    balance: int | None
    call: WalletCall | None = None

    def fingerprint(self) -> bytes:
        return _hashed(self)

    def validate(self) -> None:
        super().validate()
        _check_id("tx_id", self.tx_id)
        _check_id("hold_id", self.hold_id)
        _check_id("ticket_id", self.ticket_id)
        if type(self.amount) is not int or not 0 < self.amount <= MAX_AMOUNT:
            raise InvalidRequest(f"amount must be an int in 1..{MAX_AMOUNT}", field="amount")
        if self.auto_cashout is not None and (
            type(self.auto_cashout) is not int
            or not MIN_AUTO_CASHOUT <= self.auto_cashout <= MAX_MULTIPLIER
        ):
            raise InvalidRequest("auto_cashout out of bounds", field="auto_cashout")

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [self.account_key], [self.hold_id], [self.ticket_id]

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        # The debit's call is logged with its success; if this op is refused, the
        # WalletDebitClose that cancels the debit logs it instead (exactly once).
        debit = _pending_debit(txn, self.tx_id)
        if (debit.ticket_id, debit.amount, debit.partner_id, debit.user_id) != (
            self.ticket_id,
            self.amount,
            self.partner_id,
            self.user_id,
        ):
            raise InvalidRequest("the bet does not match its debit", field="tx_id")
        if txn.bet(self.ticket_id) is not None:
            raise DuplicateTicket("ticket id already used", ticket_id=self.ticket_id)
        if txn.hold(self.hold_id) is not None:
            raise DuplicateHold("hold id already used", hold_id=self.hold_id)
        require_open_round(txn, self.round_id)
        # Every check passed: apply.
        _wallet(txn).log(self.call)
        debit.state = OK
        debit.attempts = 1
        debit.wallet_tx_id = self.wallet_tx_id
        debit.balance = self.balance
        debit.code = None
        debit.closed_op = seq
        debit.updated_at = now
        _wallet(txn).touch(debit)
        source = txn.account(_wallet_account(self.environment, self.partner_id), create=True)
        player = txn.account(self.account_key, create=True)
        assert source is not None and player is not None
        txn.transfer(seq, source, player, self.amount, "wallet_debit", now)
        txn.place_bet(
            seq,
            self.hold_id,
            self.ticket_id,
            player,
            self.amount,
            self.auto_cashout,
            self.round_id,
            now,
        )
        return WalletBetPlaced(
            self.op_id,
            seq,
            ticket_id=self.ticket_id,
            tx_id=self.tx_id,
            stake=self.amount,
            auto_cashout=self.auto_cashout,
            round_id=self.round_id,
            balance=self.balance,
        )


@dataclass(frozen=True)
class WalletDebitClose(_WalletOp):
    """A pending debit will not play: ``refused`` (the wallet said no: nothing to undo)
    or ``cancelled`` (no final answer in time, a broken answer, or the bet could not
    play): then its rollback is queued in the same commit."""

    kind: ClassVar[str] = "wallet_debit_close"
    tx_id: str
    state: str
    code: str
    give_up_at: int
    balance: int | None = None
    wallet_code: str | None = None
    message: str = ""
    call: WalletCall | None = None

    def validate(self) -> None:
        super().validate()
        _check_id("tx_id", self.tx_id)
        _check_id("code", self.code)
        if self.state not in (REFUSED, CANCELLED):
            raise InvalidRequest("state must be refused or cancelled", field="state")

    def housekeeping(self, txn: Txn, seq: int, now: int) -> None:
        _wallet(txn).log(self.call)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        debit = _pending_debit(txn, self.tx_id)
        rollback = None
        if self.state == REFUSED:
            debit.state = REFUSED
            debit.code = self.code
            debit.attempts = 1
            debit.balance = self.balance
            debit.closed_op = seq
            debit.updated_at = now
            _wallet(txn).touch(debit)
            txn.mutations += 1
        else:
            debit.attempts = 1 if self.call is not None else 0
            rollback = _cancel(debit, self.code, seq, now, self.give_up_at, txn).tx_id
        return WalletDebitClosed(
            self.op_id,
            seq,
            tx_id=self.tx_id,
            state=self.state,
            code=self.code,
            balance=self.balance,
            rollback_tx_id=rollback,
            wallet_code=self.wallet_code,
            message=self.message,
        )


@dataclass(frozen=True)
class WalletClose(_WalletOp):
    """Queue the credit or the rollback of every settled seamless bet among ``tickets``
    and the bets of ``round_id``: won → credit of the payout (with its multiplier), lost
    → credit of 0, refunded → rollback. Bets not settled yet, bets without a confirmed
    debit (not seamless) and debits already closed are skipped: never refused."""

    kind: ClassVar[str] = "wallet_close"
    give_up_at: int
    tickets: tuple[str, ...] = ()
    round_id: int | None = None

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.tickets, tuple):
            raise InvalidRequest("tickets must be a tuple", field="tickets")
        for ticket in self.tickets:
            _check_id("ticket_id", ticket)

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [], [], list(self.tickets)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        wallet = _wallet(txn)
        debits: dict[str, WalletTx] = {}
        for ticket in self.tickets:
            debit = wallet.tx(debit_id(ticket))
            if debit is not None:
                debits[debit.tx_id] = debit
        if self.round_id is not None:
            for debit in wallet.debits_of_round(self.round_id):
                debits.setdefault(debit.tx_id, debit)
        credits = rollbacks = 0
        for debit in debits.values():
            bet = txn.bet(debit.ticket_id)
            if bet is None:
                continue
            kind = _queue_closing(txn, debit, bet, seq, now, self.give_up_at)
            if kind == CREDIT:
                credits += 1
            elif kind == ROLLBACK:
                rollbacks += 1
        return WalletTxsQueued(self.op_id, seq, credits=credits, rollbacks=rollbacks)


@dataclass(frozen=True)
class WalletRecover(_WalletOp):
    """Start-up, after the ledger's recovery settled or refunded every bet: a debit
    still ``pending`` was cut off mid-call (no answer will come): cancelled, its rollback
    queued; a confirmed debit whose bet is settled but not yet credited or rolled back
    gets its closing now. A second run finds nothing to do."""

    kind: ClassVar[str] = "wallet_recover"
    give_up_at: int

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        credits = rollbacks = cancelled = 0
        for debit in _wallet(txn).open_debits():
            if debit.state == PENDING:
                _cancel(debit, "recovery", seq, now, self.give_up_at, txn)
                cancelled += 1
                rollbacks += 1
                continue
            bet = txn.bet(debit.ticket_id)
            if bet is None:  # pragma: no cover - an ok debit is placed in the same commit
                continue
            kind = _queue_closing(txn, debit, bet, seq, now, self.give_up_at)
            if kind == CREDIT:
                credits += 1
            elif kind == ROLLBACK:
                rollbacks += 1
        return WalletTxsQueued(
            self.op_id, seq, credits=credits, rollbacks=rollbacks, cancelled=cancelled
        )


def _deliver(txn: Txn, tx: WalletTx, seq: int, now: int) -> None:
    """The wallet has (or the operator has, by other means) applied ``tx``: what the
    player's crashd account held for the wallet goes back to it."""
    amount = 0
    if tx.kind == CREDIT:
        amount = tx.amount
    else:
        debit = _wallet(txn).tx(tx.ref_tx_id or "")
        assert debit is not None and debit.kind == DEBIT
        if debit.state == OK:  # the bet was placed, then refunded: its stake is held
            amount = debit.amount
    if amount:
        player = txn.account(
            AccountKey.player(tx.environment, tx.partner_id, tx.user_id), create=False
        )
        target = txn.account(_wallet_account(tx.environment, tx.partner_id), create=True)
        assert player is not None and target is not None, tx.tx_id
        kind = "wallet_credit" if tx.kind == CREDIT else "wallet_rollback"
        txn.transfer(seq, player, target, amount, kind, now)


def _closing_tx(txn: Txn, tx_id: str) -> WalletTx:
    tx = _wallet(txn).tx(tx_id)
    if tx is None or tx.kind == DEBIT:
        raise UnknownWalletTx("no such credit or rollback", tx_id=tx_id)
    return tx


@dataclass(frozen=True)
class WalletAttempt(_WalletOp):
    """One outbox call of a credit or rollback and its consequence: ``ok`` (the money
    the player's account held for the wallet goes back to it), ``retry`` (again at
    ``next_at``) or ``failed`` (parked for the operator). ``attempt`` must be the
    transaction's next attempt number, so a call is recorded at most once."""

    kind: ClassVar[str] = "wallet_attempt"
    tx_id: str
    attempt: int
    outcome: str
    code: str | None = None
    next_at: int | None = None
    wallet_tx_id: str | None = None
    balance: int | None = None
    call: WalletCall | None = None

    def validate(self) -> None:
        super().validate()
        _check_id("tx_id", self.tx_id)
        if self.outcome not in ("ok", "retry", "failed"):
            raise InvalidRequest("outcome must be ok, retry or failed", field="outcome")
        if type(self.attempt) is not int or self.attempt < 1:
            raise InvalidRequest("attempt must be a positive int", field="attempt")
        if (self.outcome == "retry") != (self.next_at is not None):
            raise InvalidRequest("a retry (only) has next_at", field="next_at")

    def housekeeping(self, txn: Txn, seq: int, now: int) -> None:
        _wallet(txn).log(self.call)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        tx = _closing_tx(txn, self.tx_id)
        if tx.state != PENDING or tx.attempts != self.attempt - 1:
            raise WalletTxFinal(
                f"the {tx.kind} is {tx.state} after {tx.attempts} attempts",
                tx_id=self.tx_id,
                state=tx.state,
            )
        if self.outcome == "ok":
            _deliver(txn, tx, seq, now)
        tx.attempts = self.attempt
        tx.updated_at = now
        tx.code = self.code
        if self.wallet_tx_id is not None:
            tx.wallet_tx_id = self.wallet_tx_id
        if self.balance is not None:
            tx.balance = self.balance
        if self.outcome == "ok":
            tx.state = OK
            tx.next_at = None
            tx.closed_op = seq
        elif self.outcome == "failed":
            tx.state = FAILED
            tx.next_at = None
        else:
            tx.next_at = self.next_at
        _wallet(txn).touch(tx)
        txn.mutations += 1
        return WalletAttempted(
            self.op_id,
            seq,
            tx_id=self.tx_id,
            state=tx.state,
            attempts=tx.attempts,
            next_at=tx.next_at,
        )


@dataclass(frozen=True)
class WalletResolve(_WalletOp):
    """The operator's answer to a parked (``failed``) credit or rollback of its partner:
    ``retry`` (back in the outbox now, with a new horizon) or ``settle`` (settled by
    other means: recorded ``resolved``, and the money crashd held for the wallet goes
    back to it as if the wallet had confirmed)."""

    kind: ClassVar[str] = "wallet_resolve"
    tx_id: str
    partner_id: str
    action: str
    note: str
    give_up_at: int

    def validate(self) -> None:
        super().validate()
        _check_id("tx_id", self.tx_id)
        _check_id("partner_id", self.partner_id)
        if self.action not in ("retry", "settle"):
            raise InvalidRequest("action must be retry or settle", field="action")
        if not isinstance(self.note, str) or len(self.note) > 500:
            raise InvalidRequest("note must be text of at most 500 characters", field="note")

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        tx = _closing_tx(txn, self.tx_id)
        if tx.partner_id != self.partner_id:
            raise UnknownWalletTx("no such credit or rollback", tx_id=self.tx_id)
        if tx.state != FAILED:
            raise WalletTxFinal(
                f"only a failed transaction can be resolved; this one is {tx.state}",
                tx_id=self.tx_id,
                state=tx.state,
            )
        tx.note = self.note or None
        tx.updated_at = now
        if self.action == "retry":
            tx.state = PENDING
            tx.next_at = now
            tx.give_up_at = self.give_up_at
        else:
            _deliver(txn, tx, seq, now)
            tx.state = RESOLVED
            tx.closed_op = seq
        _wallet(txn).touch(tx)
        txn.mutations += 1
        return WalletResolved(self.op_id, seq, tx_id=self.tx_id, state=tx.state)


@dataclass(frozen=True)
class WalletCallsLog(_WalletOp):
    """Calls that change no transaction (``session.verify``, ``balance``), for the log."""

    kind: ClassVar[str] = "wallet_calls_log"
    calls: tuple[WalletCall, ...]

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.calls, tuple) or not 0 < len(self.calls) <= MAX_CALLS_PER_OP:
            raise InvalidRequest(f"calls must be 1..{MAX_CALLS_PER_OP} calls", field="calls")

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        wallet = _wallet(txn)
        for call in self.calls:
            wallet.log(call)
        txn.mutations += 1
        return WalletCallsLogged(self.op_id, seq, calls=len(self.calls))


@dataclass(frozen=True)
class PurgeWalletCalls(_WalletOp):
    """Forget the call log before ``before`` (ms): ``wallet_log_retention_days``. The
    transactions themselves are history and stay."""

    kind: ClassVar[str] = "purge_wallet_calls"
    before: int

    def validate(self) -> None:
        super().validate()
        if type(self.before) is not int or self.before < 0:
            raise InvalidRequest("before must be a non-negative int (ms)", field="before")

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        wallet = _wallet(txn)
        wallet.purge_calls_before = max(wallet.purge_calls_before or 0, self.before)
        txn.mutations += 1
        return WalletCallsPurged(self.op_id, seq, before=self.before)

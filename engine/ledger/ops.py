"""Operations and the pure planner: validate-then-apply over an in-memory overlay.

Each operation is a frozen dataclass. ``apply(txn, op, now)`` checks idempotency,
validates the op against the state seen through ``txn`` and, only if every check
passed, mutates the overlay (balances, holds, bets, rounds, new transfers). A refused
op mutates nothing except the record of its refusal, so one failing op never
disturbs the others of its commit group: no savepoints needed, and the writer can
flush a whole group with a handful of ``executemany`` calls.

Nothing here does I/O or reads a clock. ``Txn`` pulls rows it has not seen through a
``Backing`` (the SQLite store in production, anything in tests) and keeps what it
changed until the writer flushes it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import ClassVar

from crashd.engine.bounds import (
    MAX_AMOUNT,
    MAX_CRASH_POINT,
    MAX_ID_LEN,
    MAX_MULTIPLIER,
    MAX_SWEEP,
    MAX_TTL_MS,
    MIN_AUTO_CASHOUT,
)

from .model import (
    ENVIRONMENTS,
    AccountKey,
    AccountKind,
    AlreadyReversed,
    AlreadySettled,
    BankrollMoved,
    Bet,
    BetConfirmed,
    BetInRound,
    BetOutcome,
    BetPlaced,
    BetRetargeted,
    BetSettled,
    DuplicateHold,
    DuplicateTicket,
    EnvironmentNotAllowed,
    Hold,
    HoldExpired,
    HoldReserved,
    HoldResolved,
    HoldsReleased,
    HoldState,
    HoldVoided,
    IdempotencyConflict,
    InsufficientFunds,
    InvalidMultiplier,
    InvalidRequest,
    LedgerError,
    OpRecord,
    Posted,
    Recorded,
    Recovered,
    RepliesPurged,
    Result,
    Round,
    RoundClosed,
    RoundCrashed,
    RoundNotCrashed,
    RoundOutOfOrder,
    RoundSealed,
    RoundSettled,
    RoundStarted,
    RoundState,
    RoundStillOpen,
    RoundVoided,
    UnknownHold,
    UnknownRound,
    UnknownTicket,
    UnknownWithdrawal,
    error_from_json,
    result_from_json,
)
from .txn import Txn

# --------------------------------------------------------------------------- validation helpers


def _check_id(name: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LEN:
        raise InvalidRequest(
            f"{name} must be a non-empty string of at most {MAX_ID_LEN} characters", field=name
        )
    if not value.isascii():
        # A lone surrogate cannot be stored as UTF-8: left to SQLite it would fail the
        # whole commit group (and stop the ledger), not just this op.
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(
                f"{name} must be valid Unicode text (no lone surrogates)", field=name
            ) from None


def _check_env(value: object) -> None:
    if value not in ENVIRONMENTS:
        raise InvalidRequest("environment must be 'sandbox' or 'production'", field="environment")


def _check_amount(name: str, value: object) -> None:
    if type(value) is not int or not 0 < value <= MAX_AMOUNT:
        raise InvalidRequest(f"{name} must be an int in 1..{MAX_AMOUNT}", field=name)


def _check_round_id(value: object) -> None:
    if type(value) is not int or value < 1:
        raise InvalidRequest("round_id must be a positive int (a game number)", field="round_id")


def _check_multiplier(name: str, value: object, minimum: int = 100) -> None:
    if type(value) is not int or not minimum <= value <= MAX_MULTIPLIER:
        raise InvalidRequest(
            f"{name} must be an int in {minimum}..{MAX_MULTIPLIER} (hundredths)", field=name
        )


# --------------------------------------------------------------------------- operations

_CONTENT_FIELDS: dict[type, Callable[[object], tuple[object, ...]]] = {}


def _content_getter(cls: type) -> Callable[[object], tuple[object, ...]]:
    """A function returning the op's content fields (all but ``op_id``) as a tuple."""
    names = tuple(f.name for f in fields(cls) if f.name != "op_id")
    if not names:
        return lambda _op: ()
    if len(names) == 1:
        one = operator.attrgetter(names[0])
        return lambda op: (one(op),)
    return operator.attrgetter(*names)


@dataclass(frozen=True)
class Op:
    """Base of every operation. ``op_id`` is the caller's idempotency id."""

    kind: ClassVar[str] = ""
    op_id: str

    def key(self) -> str:
        """The idempotency key under which the op is recorded."""
        return self.op_id

    def fingerprint(self) -> bytes:
        """The contents (everything but the id) in canonical form: same id + different
        fingerprint is an ``idempotency_conflict``. The repr() of str/int/None/tuples
        is stable across runs and versions; stored as is rather than hashed, so the
        comparison is exact and a conflict can show what the first request was.
        (One attrgetter per class: the same tuple, so the same bytes, as before.)"""
        cls = type(self)
        getter = _CONTENT_FIELDS.get(cls)
        if getter is None:
            getter = _CONTENT_FIELDS[cls] = _content_getter(cls)
        return repr((self.kind, *getter(self))).encode()

    def validate(self) -> None:
        """Shape checks, before queueing; raise ``InvalidRequest``."""
        _check_id("op_id", self.op_id)

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        """(player accounts, hold ids, tickets) the op will read, for bulk loading."""
        return [], [], []

    def housekeeping(self, txn: Txn, seq: int, now: int) -> None:
        """State upkeep that happens whether the op succeeds or not (hold expiry)."""

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        raise NotImplementedError


@dataclass(frozen=True)
class _PlayerOp(Op):
    environment: str
    partner_id: str
    user_id: str

    def validate(self) -> None:
        # Fast path first (every caller pays it): all three ids plain non-empty strings
        # of at most MAX_ID_LEN, a known environment; otherwise the checks that name
        # the field at fault.
        op_id, partner_id, user_id = self.op_id, self.partner_id, self.user_id
        if (
            type(op_id) is str
            and type(partner_id) is str
            and type(user_id) is str
            and 0 < len(op_id) <= MAX_ID_LEN
            and 0 < len(partner_id) <= MAX_ID_LEN
            and 0 < len(user_id) <= MAX_ID_LEN
            and self.environment in ENVIRONMENTS
            and op_id.isascii()
            and partner_id.isascii()
            and user_id.isascii()
        ):
            return
        super().validate()
        _check_env(self.environment)
        _check_id("partner_id", self.partner_id)
        _check_id("user_id", self.user_id)

    @property
    def account_key(self) -> AccountKey:
        # Cached by hand in the instance dict: functools.cached_property takes a lock
        # on every access (Python 3.11) and this is read several times per op.
        key = self.__dict__.get("_account_key")
        if key is None:
            key = AccountKey(self.environment, "player", self.partner_id, self.user_id)
            self.__dict__["_account_key"] = key
        return key

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [self.account_key], [], []

    def housekeeping(self, txn: Txn, seq: int, now: int) -> None:
        player = txn.account(self.account_key, create=False)
        if player is not None:  # (None would mean "every account" to release_expired)
            txn.release_expired(player, seq, now)


@dataclass(frozen=True)
class PspDeposit(_PlayerOp):
    """Money arrived at the PSP for this player. ``op_id`` is the PSP's event id; the
    key is namespaced per environment so webhook redeliveries de-duplicate."""

    kind: ClassVar[str] = "psp_deposit"
    amount: int

    def housekeeping(self, txn: Txn, seq: int, now: int) -> None:
        """A credit cannot be refused, so expired holds need no release first."""

    def key(self) -> str:
        return f"psp:{self.environment}:{self.op_id}"

    def validate(self) -> None:
        super().validate()
        _check_amount("amount", self.amount)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        player = txn.account(self.account_key, create=True)
        assert player is not None
        txn.transfer(
            seq, txn.system(self.environment, AccountKind.PSP), player, self.amount, "deposit", now
        )
        return Posted(
            self.op_id, seq, amount=self.amount, balance=player.available, posted=player.posted
        )


@dataclass(frozen=True)
class PspWithdrawal(_PlayerOp):
    """Money leaves to the PSP. Never below zero: a refusal is recorded with its reason
    (``insufficient_funds``) under the event id, and replays answer the same."""

    kind: ClassVar[str] = "psp_withdrawal"
    amount: int

    def key(self) -> str:
        return f"psp:{self.environment}:{self.op_id}"

    def validate(self) -> None:
        super().validate()
        _check_amount("amount", self.amount)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        player = txn.account(self.account_key, create=False)
        available = player.available if player is not None else 0
        if player is None or available < self.amount:
            raise InsufficientFunds(
                "withdrawal exceeds the available balance",
                available=available,
                requested=self.amount,
            )
        txn.transfer(
            seq,
            player,
            txn.system(self.environment, AccountKind.PSP),
            self.amount,
            "withdrawal",
            now,
        )
        return Posted(
            self.op_id, seq, amount=self.amount, balance=player.available, posted=player.posted
        )


@dataclass(frozen=True)
class PspWithdrawalReversal(Op):
    """The PSP failed to pay out a withdrawal: credit the amount back, at most once."""

    kind: ClassVar[str] = "psp_withdrawal_reversal"
    environment: str
    withdrawal_id: str

    def key(self) -> str:
        return f"psp:{self.environment}:{self.op_id}"

    def validate(self) -> None:
        super().validate()
        _check_env(self.environment)
        _check_id("withdrawal_id", self.withdrawal_id)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        original = txn.op_record(f"psp:{self.environment}:{self.withdrawal_id}")
        if original is None or original.kind != PspWithdrawal.kind or not original.ok:
            raise UnknownWithdrawal(
                "no posted withdrawal with this event id", withdrawal_id=self.withdrawal_id
            )
        if txn.reversal_of(original.seq) is not None:
            raise AlreadyReversed(
                "this withdrawal was already reversed", withdrawal_id=self.withdrawal_id
            )
        [(debit, credit, amount, kind)] = txn.transfers_of_op(original.seq)
        assert kind == "withdrawal"
        player = txn.account_by_id(debit)
        psp = txn.account_by_id(credit)
        txn.transfer(seq, psp, player, amount, "withdrawal_reversal", now)
        txn.record_reversal(original.seq, seq)
        return Posted(
            self.op_id, seq, amount=amount, balance=player.available, posted=player.posted
        )


@dataclass(frozen=True)
class FaucetCredit(_PlayerOp):
    """Demo money for a sandbox player."""

    kind: ClassVar[str] = "faucet_credit"
    amount: int

    def housekeeping(self, txn: Txn, seq: int, now: int) -> None:
        """A credit cannot be refused, so expired holds need no release first."""

    def validate(self) -> None:
        super().validate()
        _check_amount("amount", self.amount)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        if self.environment != "sandbox":
            raise EnvironmentNotAllowed(
                "the faucet exists only in sandbox", environment=self.environment
            )
        player = txn.account(self.account_key, create=True)
        assert player is not None
        txn.transfer(
            seq, txn.system("sandbox", AccountKind.FAUCET), player, self.amount, "faucet", now
        )
        return Posted(
            self.op_id, seq, amount=self.amount, balance=player.available, posted=player.posted
        )


@dataclass(frozen=True)
class BetReserve(_PlayerOp):
    """Phase one of a bet: a pending hold player → escrow that expires after ``ttl_ms``."""

    kind: ClassVar[str] = "bet_reserve"
    hold_id: str
    amount: int
    ttl_ms: int

    def validate(self) -> None:
        super().validate()
        _check_id("hold_id", self.hold_id)
        _check_amount("amount", self.amount)
        if type(self.ttl_ms) is not int or not 0 < self.ttl_ms <= MAX_TTL_MS:
            raise InvalidRequest(f"ttl_ms must be an int in 1..{MAX_TTL_MS}", field="ttl_ms")

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [self.account_key], [self.hold_id], []

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        if txn.hold(self.hold_id) is not None:
            raise DuplicateHold("hold id already used", hold_id=self.hold_id)
        player = txn.account(self.account_key, create=False)
        available = player.available if player is not None else 0
        if player is None or available < self.amount:
            raise InsufficientFunds(
                "stake exceeds the available balance", available=available, requested=self.amount
            )
        escrow = txn.system(self.environment, AccountKind.ESCROW)
        expires_at = now + self.ttl_ms
        txn.create_hold(seq, self.hold_id, player, escrow, self.amount, expires_at)
        return HoldReserved(
            self.op_id,
            seq,
            hold_id=self.hold_id,
            amount=self.amount,
            expires_at=expires_at,
            available=player.available,
        )


def _owned_hold(txn: Txn, op: _PlayerOp, hold_id: str) -> Hold:
    """The hold, if it belongs to the op's player; otherwise ``unknown_hold`` (one
    partner must not learn about another's holds)."""
    hold = txn.hold(hold_id)
    player = txn.account(op.account_key, create=False)
    if hold is None or player is None or hold.debit != player.id:
        raise UnknownHold("no such hold for this player", hold_id=hold_id)
    return hold


@dataclass(frozen=True)
class BetConfirm(_PlayerOp):
    """Phase two: post the hold and record the bet under ``ticket_id``. ``round_id``
    is an open round, or ``None`` for "the next round": the bet joins whichever round
    starts next (``RoundStart``)."""

    kind: ClassVar[str] = "bet_confirm"
    hold_id: str
    ticket_id: str
    auto_cashout: int | None = None
    round_id: int | None = None

    def validate(self) -> None:
        super().validate()
        _check_id("hold_id", self.hold_id)
        _check_id("ticket_id", self.ticket_id)
        if self.auto_cashout is not None:
            _check_multiplier("auto_cashout", self.auto_cashout, MIN_AUTO_CASHOUT)
        if self.round_id is not None:
            _check_round_id(self.round_id)

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [self.account_key], [self.hold_id], [self.ticket_id]

    def housekeeping(self, txn: Txn, seq: int, now: int) -> None:
        hold = txn.hold(self.hold_id)
        if hold is not None and hold.state is HoldState.PENDING and hold.expires_at <= now:
            txn.resolve_hold(hold, HoldState.EXPIRED, seq, now)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        if txn.bet(self.ticket_id) is not None:
            raise DuplicateTicket("ticket id already used", ticket_id=self.ticket_id)
        hold = _owned_hold(txn, self, self.hold_id)
        if hold.state is HoldState.EXPIRED:
            raise HoldExpired(
                "the hold expired before it was confirmed",
                hold_id=self.hold_id,
                expired_at=hold.expires_at,
            )
        if hold.state is not HoldState.PENDING:
            raise HoldResolved(
                f"the hold was already {hold.state.value}",
                hold_id=self.hold_id,
                state=hold.state.value,
            )
        require_open_round(txn, self.round_id)
        txn.resolve_hold(hold, HoldState.POSTED, seq, now)
        txn.create_bet(
            Bet(
                id=txn.ids.bet,
                ticket_id=self.ticket_id,
                hold=hold.id,
                account=hold.debit,
                stake=hold.amount,
                auto_cashout=self.auto_cashout,
                round_id=self.round_id,
                confirmed_op=seq,
                confirmed_at=now,
            )
        )
        return BetConfirmed(
            self.op_id,
            seq,
            ticket_id=self.ticket_id,
            hold_id=self.hold_id,
            stake=hold.amount,
            auto_cashout=self.auto_cashout,
            round_id=self.round_id,
        )


@dataclass(frozen=True)
class BetPlace(_PlayerOp):
    """Reserve and confirm in one op: the stake goes from the player to escrow and the
    bet is recorded under ``ticket_id`` (for a round open for bets, or ``None`` for the
    next one), or nothing happens (``insufficient_funds``). The hold is kept too (posted
    at once), so every bet has one, as with the two-phase flow."""

    kind: ClassVar[str] = "bet_place"
    hold_id: str
    ticket_id: str
    amount: int
    auto_cashout: int | None = None
    round_id: int | None = None

    def validate(self) -> None:
        super().validate()
        _check_id("hold_id", self.hold_id)
        _check_id("ticket_id", self.ticket_id)
        _check_amount("amount", self.amount)
        if self.auto_cashout is not None:
            _check_multiplier("auto_cashout", self.auto_cashout, MIN_AUTO_CASHOUT)
        if self.round_id is not None:
            _check_round_id(self.round_id)

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [self.account_key], [self.hold_id], [self.ticket_id]

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        if txn.bet(self.ticket_id) is not None:
            raise DuplicateTicket("ticket id already used", ticket_id=self.ticket_id)
        if txn.hold(self.hold_id) is not None:
            raise DuplicateHold("hold id already used", hold_id=self.hold_id)
        player = txn.account(self.account_key, create=False)
        available = player.available if player is not None else 0
        if player is None or available < self.amount:
            raise InsufficientFunds(
                "stake exceeds the available balance", available=available, requested=self.amount
            )
        require_open_round(txn, self.round_id)
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
        return BetPlaced(
            self.op_id,
            seq,
            ticket_id=self.ticket_id,
            hold_id=self.hold_id,
            stake=self.amount,
            auto_cashout=self.auto_cashout,
            round_id=self.round_id,
            available=player.available,
        )


@dataclass(frozen=True)
class HoldVoid(_PlayerOp):
    """Cancel a pending hold (the player backed out before confirming)."""

    kind: ClassVar[str] = "hold_void"
    hold_id: str

    def validate(self) -> None:
        super().validate()
        _check_id("hold_id", self.hold_id)

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [self.account_key], [self.hold_id], []

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        hold = _owned_hold(txn, self, self.hold_id)
        if hold.state is HoldState.EXPIRED:
            raise HoldExpired(
                "the hold already expired", hold_id=self.hold_id, expired_at=hold.expires_at
            )
        if hold.state is not HoldState.PENDING:
            raise HoldResolved(
                f"the hold was already {hold.state.value}",
                hold_id=self.hold_id,
                state=hold.state.value,
            )
        txn.resolve_hold(hold, HoldState.VOIDED, seq, now)
        return HoldVoided(self.op_id, seq, hold_id=self.hold_id, amount=hold.amount)


def require_open_round(txn: Txn, round_id: int | None) -> None:
    """A bet for ``round_id`` needs that round open for bets (``None``: the next round,
    always fine)."""
    if round_id is None:
        return
    rnd = txn.round(round_id)
    if rnd is None:
        raise UnknownRound("no such round", round_id=round_id)
    if rnd.state is not RoundState.OPEN:
        raise RoundClosed(f"round is {rnd.state.value}", round_id=round_id)


def _unsettled_bet(txn: Txn, ticket_id: str) -> Bet:
    bet = txn.bet(ticket_id)
    if bet is None:
        raise UnknownTicket("no such ticket", ticket_id=ticket_id)
    if bet.outcome is not None:
        raise AlreadySettled(
            f"the bet was already {bet.outcome.value}",
            ticket_id=ticket_id,
            outcome=bet.outcome.value,
        )
    return bet


@dataclass(frozen=True)
class BetTarget(Op):
    """Record a change of an unsettled bet's auto-cashout target (``None`` cancels it),
    as the engine accepted it: the bet's record always shows the target in force. The
    engine alone decides when a target may change (betting, or queued for the next
    round); the ledger refuses only a settled or unknown bet."""

    kind: ClassVar[str] = "bet_target"
    ticket_id: str
    auto_cashout: int | None

    def validate(self) -> None:
        super().validate()
        _check_id("ticket_id", self.ticket_id)
        if self.auto_cashout is not None:
            _check_multiplier("auto_cashout", self.auto_cashout, MIN_AUTO_CASHOUT)

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [], [], [self.ticket_id]

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        bet = _unsettled_bet(txn, self.ticket_id)
        bet.auto_cashout = self.auto_cashout
        txn.touch_bet(bet)
        return BetRetargeted(
            self.op_id, seq, ticket_id=self.ticket_id, auto_cashout=self.auto_cashout
        )


@dataclass(frozen=True)
class SettleWin(Op):
    """A cashout: the stake back from escrow plus winnings from the house,
    ``payout = stake * multiplier // 100``. In a crashed round the multiplier may not
    exceed the crash point (an auto target equal to it wins)."""

    kind: ClassVar[str] = "settle_win"
    ticket_id: str
    multiplier: int

    def validate(self) -> None:
        super().validate()
        _check_id("ticket_id", self.ticket_id)
        _check_multiplier("multiplier", self.multiplier)

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [], [], [self.ticket_id]

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        bet = _unsettled_bet(txn, self.ticket_id)
        if bet.round_id is None:
            raise RoundClosed("the bet has not joined a round yet", ticket_id=self.ticket_id)
        rnd = txn.round(bet.round_id)
        assert rnd is not None and rnd.state is not RoundState.VOIDED
        if rnd.state is RoundState.CRASHED:
            assert rnd.crash_point is not None
            if self.multiplier > rnd.crash_point:
                raise InvalidMultiplier(
                    "multiplier above the crash point",
                    multiplier=self.multiplier,
                    crash_point=rnd.crash_point,
                )
        payout = txn.settle(bet, BetOutcome.WON, self.multiplier, seq, now)
        return BetSettled(
            self.op_id,
            seq,
            ticket_id=self.ticket_id,
            outcome="won",
            multiplier=self.multiplier,
            payout=payout,
        )


@dataclass(frozen=True)
class SettleLoss(Op):
    """The round crashed before this bet cashed out: stake escrow → house."""

    kind: ClassVar[str] = "settle_loss"
    ticket_id: str

    def validate(self) -> None:
        super().validate()
        _check_id("ticket_id", self.ticket_id)

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [], [], [self.ticket_id]

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        bet = _unsettled_bet(txn, self.ticket_id)
        rnd = None if bet.round_id is None else txn.round(bet.round_id)
        if rnd is None or rnd.state is not RoundState.CRASHED:
            raise RoundNotCrashed(
                "a bet loses only in a crashed round",
                ticket_id=self.ticket_id,
                round_id=bet.round_id,
            )
        txn.settle(bet, BetOutcome.LOST, None, seq, now)
        return BetSettled(
            self.op_id, seq, ticket_id=self.ticket_id, outcome="lost", multiplier=None, payout=0
        )


@dataclass(frozen=True)
class BetRefund(Op):
    """Refund a confirmed bet that has not joined a round (escrow → player). Bets in a
    round are refunded by voiding the round (``RoundVoid``), all at once."""

    kind: ClassVar[str] = "bet_refund"
    ticket_id: str

    def validate(self) -> None:
        super().validate()
        _check_id("ticket_id", self.ticket_id)

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [], [], [self.ticket_id]

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        bet = _unsettled_bet(txn, self.ticket_id)
        if bet.round_id is not None:
            raise BetInRound(
                "the bet joined a round; void the round to refund it",
                ticket_id=self.ticket_id,
                round_id=bet.round_id,
            )
        payout = txn.settle(bet, BetOutcome.REFUNDED, None, seq, now)
        return BetSettled(
            self.op_id,
            seq,
            ticket_id=self.ticket_id,
            outcome="refunded",
            multiplier=None,
            payout=payout,
        )


@dataclass(frozen=True)
class RoundStart(Op):
    """Open round ``round_id`` (its game number; strictly above every earlier one).
    Confirmed bets waiting for "the next round" join it in the same transaction."""

    kind: ClassVar[str] = "round_start"
    round_id: int

    def validate(self) -> None:
        super().validate()
        _check_round_id(self.round_id)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        highest = txn.highest_round_id()
        if self.round_id <= highest:
            raise RoundOutOfOrder(
                "round ids only increase", round_id=self.round_id, highest=highest
            )
        still_open = [r.id for r in txn.unfinished_rounds() if r.state is RoundState.OPEN]
        if still_open:
            raise RoundStillOpen(
                "another round is open", round_id=self.round_id, open_round_id=still_open[0]
            )
        txn.create_round(Round(id=self.round_id, started_op=seq, started_at=now))
        waiting = txn.unsettled_bets(None)
        for bet in waiting:
            bet.round_id = self.round_id
            txn.touch_bet(bet)
        return RoundStarted(self.op_id, seq, round_id=self.round_id, bets_joined=len(waiting))


def _check_crash_point(value: object) -> None:
    if type(value) is not int or not 100 <= value <= MAX_CRASH_POINT:
        raise InvalidRequest(
            f"crash_point must be an int in 100..{MAX_CRASH_POINT}", field="crash_point"
        )


def _check_hash(value: object) -> None:
    if not isinstance(value, str) or len(value) != 64 or value.strip("0123456789abcdef"):
        raise InvalidRequest("game_hash must be 64 lowercase hex digits", field="game_hash")


def _crash(txn: Txn, rnd: Round, crash_point: int, game_hash: str, seq: int, now: int) -> None:
    rnd.state = RoundState.CRASHED
    rnd.crash_point = crash_point
    rnd.game_hash = game_hash
    rnd.ended_op = seq
    rnd.ended_at = now
    txn.touch_round(rnd)


@dataclass(frozen=True)
class RoundCrash(Op):
    """Record the crash point and reveal the game hash; bets are settled separately
    (``SettleLoss``/``SettleWin``) or, better, use ``RoundSettle`` for both at once."""

    kind: ClassVar[str] = "round_crash"
    round_id: int
    crash_point: int
    game_hash: str

    def validate(self) -> None:
        super().validate()
        _check_round_id(self.round_id)
        _check_crash_point(self.crash_point)
        _check_hash(self.game_hash)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        rnd = txn.round(self.round_id)
        if rnd is None:
            raise UnknownRound("no such round", round_id=self.round_id)
        if rnd.state is not RoundState.OPEN:
            raise RoundClosed(f"round is {rnd.state.value}", round_id=self.round_id)
        _crash(txn, rnd, self.crash_point, self.game_hash, seq, now)
        return RoundCrashed(self.op_id, seq, round_id=self.round_id, crash_point=self.crash_point)


@dataclass(frozen=True)
class RoundSettle(Op):
    """Crash a round (if not yet recorded) and settle every bet still open in it, in one
    transaction: the tickets in ``wins`` win at their multiplier (auto targets ≤ the
    crash point, forced cashouts), every other unsettled bet of the round loses."""

    kind: ClassVar[str] = "round_settle"
    round_id: int
    crash_point: int
    game_hash: str
    wins: tuple[tuple[str, int], ...] = ()

    def validate(self) -> None:
        super().validate()
        _check_round_id(self.round_id)
        _check_crash_point(self.crash_point)
        _check_hash(self.game_hash)
        if not isinstance(self.wins, tuple):
            raise InvalidRequest("wins must be a tuple of (ticket_id, multiplier)", field="wins")
        seen = set()
        for item in self.wins:
            if not isinstance(item, tuple) or len(item) != 2:
                raise InvalidRequest(
                    "wins must be a tuple of (ticket_id, multiplier)", field="wins"
                )
            _check_id("ticket_id", item[0])
            _check_multiplier("multiplier", item[1])
            if item[0] in seen:
                raise InvalidRequest("a ticket appears twice in wins", field="wins")
            seen.add(item[0])

    def prefetch(self) -> tuple[list[AccountKey], list[str], list[str]]:
        return [], [], [t for t, _ in self.wins]

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        rnd = txn.round(self.round_id)
        if rnd is None:
            raise UnknownRound("no such round", round_id=self.round_id)
        if rnd.state is RoundState.VOIDED:
            raise RoundClosed("round was voided", round_id=self.round_id)
        if rnd.settled_at is not None:
            raise AlreadySettled("round already settled", round_id=self.round_id)
        if rnd.state is RoundState.CRASHED and (
            rnd.crash_point != self.crash_point or rnd.game_hash != self.game_hash
        ):
            raise RoundClosed(
                "round crashed with a different crash point or hash",
                round_id=self.round_id,
                crash_point=rnd.crash_point,
            )
        open_bets = {b.ticket_id: b for b in txn.unsettled_bets(self.round_id)}
        for ticket, mult in self.wins:
            if ticket not in open_bets:
                bet = txn.bet(ticket)
                if bet is not None and bet.outcome is not None and bet.round_id == self.round_id:
                    raise AlreadySettled(
                        "bet already settled", ticket_id=ticket, outcome=bet.outcome.value
                    )
                raise UnknownTicket(
                    "ticket is not an open bet of this round",
                    ticket_id=ticket,
                    round_id=self.round_id,
                )
            if mult > self.crash_point:
                raise InvalidMultiplier(
                    "multiplier above the crash point",
                    ticket_id=ticket,
                    multiplier=mult,
                    crash_point=self.crash_point,
                )
        # Every check passed: apply.
        if rnd.state is RoundState.OPEN:
            _crash(txn, rnd, self.crash_point, self.game_hash, seq, now)
        wins = dict(self.wins)
        won = lost = paid = collected = 0
        for ticket, bet in open_bets.items():
            if ticket in wins:
                paid += txn.settle(bet, BetOutcome.WON, wins[ticket], seq, now)
                won += 1
            else:
                txn.settle(bet, BetOutcome.LOST, None, seq, now)
                collected += bet.stake
                lost += 1
        rnd.settled_op = seq
        rnd.settled_at = now
        txn.touch_round(rnd)
        return RoundSettled(
            self.op_id,
            seq,
            round_id=self.round_id,
            crash_point=self.crash_point,
            won=won,
            lost=lost,
            paid=paid,
            collected=collected,
        )


def _void(
    txn: Txn, rnd: Round, reason: str, seq: int, now: int, revealed: tuple[int, str] | None = None
) -> tuple[int, int]:
    """Refund what is unsettled and close the round as voided. ``revealed``: the
    burnt game's (crash point, hash), recorded for an open round so its history shows
    what the game would have been (a crashed round keeps what it crashed with)."""
    refunded = amount = 0
    for bet in txn.unsettled_bets(rnd.id):
        amount += txn.settle(bet, BetOutcome.REFUNDED, None, seq, now)
        refunded += 1
    rnd.state = RoundState.VOIDED
    rnd.void_reason = reason
    if revealed is not None and rnd.game_hash is None:
        rnd.crash_point, rnd.game_hash = revealed
    if rnd.ended_op is None:
        rnd.ended_op = seq
        rnd.ended_at = now
    rnd.settled_op = seq
    rnd.settled_at = now
    txn.touch_round(rnd)
    return refunded, amount


@dataclass(frozen=True)
class RoundVoid(Op):
    """Cancel a round that is open (or crashed but not settled): every bet still
    unsettled in it is refunded in the same transaction; bets already cashed out stay
    paid. ``crash_point`` and ``game_hash`` (both or neither): the burnt game,
    revealed by the engine when it voids, stored with the round for its history."""

    kind: ClassVar[str] = "round_void"
    round_id: int
    reason: str
    crash_point: int | None = None
    game_hash: str | None = None

    def fingerprint(self) -> bytes:
        # Without a revealed game, the same bytes as before these fields existed, so a
        # void recorded by an older build still replays as the same op.
        if self.crash_point is None and self.game_hash is None:
            return repr((self.kind, self.round_id, self.reason)).encode()
        return super().fingerprint()

    def validate(self) -> None:
        super().validate()
        _check_round_id(self.round_id)
        _check_id("reason", self.reason)
        if (self.crash_point is None) != (self.game_hash is None):
            raise InvalidRequest("crash_point and game_hash go together", field="game_hash")
        if self.crash_point is not None:
            _check_crash_point(self.crash_point)
            _check_hash(self.game_hash)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        rnd = txn.round(self.round_id)
        if rnd is None:
            raise UnknownRound("no such round", round_id=self.round_id)
        if rnd.state is RoundState.VOIDED or rnd.settled_at is not None:
            raise AlreadySettled(f"round already {rnd.state.value}", round_id=self.round_id)
        revealed = None if self.crash_point is None else (self.crash_point, str(self.game_hash))
        if revealed is not None and rnd.game_hash is not None and rnd.game_hash != revealed[1]:
            raise InvalidRequest("the round crashed with a different game hash", field="game_hash")
        refunded, amount = _void(txn, rnd, self.reason, seq, now, revealed)
        return RoundVoided(
            self.op_id, seq, round_id=self.round_id, refunded=refunded, refunded_amount=amount
        )


@dataclass(frozen=True)
class RoundSeal(Op):
    """Keep the start seal of round ``round_id`` (docs/fairness.md): ``document`` makes
    (the signed seal, the leaves it commits to), canonical JSON text, on the writer's
    thread, off the tick path. It is not part of the op's identity: the seal is a
    function of the round."""

    kind: ClassVar[str] = "round_seal"
    round_id: int
    document: Callable[[], tuple[str, str]] = field(compare=False, repr=False)

    def fingerprint(self) -> bytes:
        return repr((self.kind, self.round_id)).encode()

    def validate(self) -> None:
        super().validate()
        _check_round_id(self.round_id)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        if txn.round(self.round_id) is None:
            raise UnknownRound("no such round", round_id=self.round_id)
        if txn.seal(self.round_id) is not None:
            raise AlreadySettled("the round is sealed already", round_id=self.round_id)
        document, bets = self.document()
        txn.add_seal(self.round_id, document, bets, now)
        return RoundSealed(self.op_id, seq, round_id=self.round_id)


@dataclass(frozen=True)
class PurgeReplies(Op):
    """Forget the stored replies created before ``before`` (ms): the retention of
    Idempotency-Key answers. The ledger's history is untouched."""

    kind: ClassVar[str] = "purge_replies"
    before: int

    def validate(self) -> None:
        super().validate()
        if type(self.before) is not int or self.before < 0:
            raise InvalidRequest("before must be a non-negative int (ms)", field="before")

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        txn.purge_replies_before = max(txn.purge_replies_before or 0, self.before)
        txn.mutations += 1
        return RepliesPurged(self.op_id, seq, before=self.before)


@dataclass(frozen=True)
class ReleaseExpired(Op):
    """Periodic sweep: expire up to ``limit`` pending holds past their deadline."""

    kind: ClassVar[str] = "release_expired"
    limit: int = 1000

    def validate(self) -> None:
        super().validate()
        if type(self.limit) is not int or not 0 < self.limit <= MAX_SWEEP:
            raise InvalidRequest(f"limit must be in 1..{MAX_SWEEP}", field="limit")

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        released, amount = txn.release_expired(None, seq, now, self.limit)
        return HoldsReleased(self.op_id, seq, released=released, amount=amount)


@dataclass(frozen=True)
class Recover(Op):
    """Start-up recovery, one transaction: void every unfinished round (open, or crashed
    without its bulk settlement) refunding its unsettled stakes, and refund confirmed
    bets that never joined a round. Dying half-way rolls the whole of it back, and a
    second run finds nothing left to do: exactly once. ``revealed``: (round id, crash
    point, game hash) of burnt games, recorded with the open rounds it voids."""

    kind: ClassVar[str] = "recover"
    revealed: tuple[tuple[int, int, str], ...] = ()

    def validate(self) -> None:
        super().validate()
        if not isinstance(self.revealed, tuple):
            raise InvalidRequest("revealed must be a tuple", field="revealed")
        for item in self.revealed:
            if not isinstance(item, tuple) or len(item) != 3:
                raise InvalidRequest(
                    "revealed items are (round_id, crash_point, game_hash)", field="revealed"
                )
            _check_round_id(item[0])
            _check_crash_point(item[1])
            _check_hash(item[2])

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        rounds = bets = amount = 0
        games = {round_id: (point, game_hash) for round_id, point, game_hash in self.revealed}
        for rnd in txn.unfinished_rounds():
            n, a = _void(txn, rnd, "recovery", seq, now, games.get(rnd.id))
            rounds += 1
            bets += n
            amount += a
        for bet in txn.unsettled_bets(None):
            amount += txn.settle(bet, BetOutcome.REFUNDED, None, seq, now)
            bets += 1
        return Recovered(
            self.op_id,
            seq,
            rounds_voided=rounds,
            bets_refunded=bets,
            refunded_amount=amount,
            highest_round_id=txn.highest_round_id(),
        )


MAX_AUDIT_TEXT = 16_384
"""Bound on an audit entry's before/after JSON and note (characters)."""


def _check_audit_text(name: str, value: object, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str) or len(value) > MAX_AUDIT_TEXT:
        raise InvalidRequest(f"{name} must be text of at most {MAX_AUDIT_TEXT}", field=name)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{name} must be valid Unicode text", field=name) from None


@dataclass(frozen=True)
class AuditRecord(Op):
    """An operator action that moves no money (limits changed, game paused, round
    voided, chain published…), appended to the audit log under this op's id. The op's
    idempotency makes a retried request record it once."""

    kind: ClassVar[str] = "audit_record"
    environment: str
    actor: str
    action: str
    before: str | None = None
    after: str | None = None
    note: str = ""

    def validate(self) -> None:
        super().validate()
        _check_env(self.environment)
        _check_id("actor", self.actor)
        _check_id("action", self.action)
        _check_audit_text("before", self.before)
        _check_audit_text("after", self.after)
        _check_audit_text("note", self.note, optional=False)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        txn.record_audit(
            seq, now, self.environment, self.actor, self.action, self.before, self.after, self.note
        )
        return Recorded(self.op_id, seq, action=self.action)


@dataclass(frozen=True)
class BankrollMove(Op):
    """Fund the house bankroll from the operator's capital (``deposit``) or return
    money to it (``withdrawal``, never below zero: ``insufficient_funds``), recorded in
    the audit log by the same op. The only way money reaches the house but play."""

    kind: ClassVar[str] = "bankroll_move"
    environment: str
    direction: str
    amount: int
    actor: str
    note: str = ""

    def validate(self) -> None:
        super().validate()
        _check_env(self.environment)
        if self.direction not in ("deposit", "withdrawal"):
            raise InvalidRequest("direction must be deposit or withdrawal", field="direction")
        _check_amount("amount", self.amount)
        _check_id("actor", self.actor)
        _check_audit_text("note", self.note, optional=False)

    def plan(self, txn: Txn, seq: int, now: int) -> Result:
        house = txn.system(self.environment, AccountKind.HOUSE)
        capital = txn.system(self.environment, AccountKind.CAPITAL)
        before = house.posted
        if self.direction == "deposit":
            txn.transfer(seq, capital, house, self.amount, "bankroll_deposit", now)
        else:
            if house.posted < self.amount:
                raise InsufficientFunds(
                    "the withdrawal exceeds the house balance",
                    available=house.posted,
                    requested=self.amount,
                )
            txn.transfer(seq, house, capital, self.amount, "bankroll_withdrawal", now)
        txn.record_audit(
            seq,
            now,
            self.environment,
            self.actor,
            f"bankroll_{self.direction}",
            f'{{"house":{before}}}',
            f'{{"house":{house.posted},"amount":{self.amount}}}',
            self.note,
        )
        return BankrollMoved(
            self.op_id, seq, environment=self.environment, amount=self.amount, house=house.posted
        )


# --------------------------------------------------------------------------- apply


def apply(txn: Txn, op: Op, now: int, key: str | None = None) -> Result | LedgerError:
    """Plan one op into ``txn``; return its result or its (recorded) refusal.

    Replays: the same key with the same kind and contents returns the first answer
    (result or error) and moves nothing; different contents is ``idempotency_conflict``
    (not recorded: the key stays bound to its first op). ``key`` is ``op.key()``, when
    the caller computed it already."""
    if key is None:
        key = op.key()
    fingerprint = op.fingerprint()
    rec = txn.op_record(key)
    if rec is not None:
        if rec.kind != op.kind or rec.fingerprint != fingerprint:
            return IdempotencyConflict(
                "this id was used for a different operation", op_id=op.op_id, original_kind=rec.kind
            )
        if rec.ok:
            return result_from_json(rec.result, replayed=True)
        assert rec.code is not None
        return error_from_json(rec.code, rec.result)
    seq = txn.ids.op
    txn.ids.op += 1
    op.housekeeping(txn, seq, now)
    before = txn.mutations
    try:
        result = op.plan(txn, seq, now)
    except LedgerError as err:
        assert txn.mutations == before, f"{op.kind} mutated state before refusing"
        txn.record_op(OpRecord(seq, key, op.kind, fingerprint, False, err.code, err.to_json()), now)
        return err
    assert result.seq == seq
    txn.record_op(OpRecord(seq, key, op.kind, fingerprint, True, None, result.to_json()), now)
    return result


def prefetch_keys(
    ops: Iterable[Op],
    op_keys: Iterable[str] | None = None,
) -> tuple[set[str], set[AccountKey], set[str], set[str]]:
    """Everything a group will look up, so the store can load it in a few queries.
    ``op_keys``: the ops' ``key()``s, when the caller computed them already."""
    keys: set[str] = set(op.key() for op in ops) if op_keys is None else set(op_keys)
    accounts: set[AccountKey] = set()
    holds: set[str] = set()
    tickets: set[str] = set()
    for op in ops:
        a, h, t = op.prefetch()
        if a:
            accounts.update(a)
        if h:
            holds.update(h)
        if t:
            tickets.update(t)
    return keys, accounts, holds, tickets

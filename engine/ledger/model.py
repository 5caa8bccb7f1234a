"""The ledger's vocabulary: accounts, records, results and errors. No I/O here.

Money is integer minor units; multipliers are integer hundredths (``250`` is 2.50x);
time is integer milliseconds since the epoch, always passed in by the caller.

Every error carries a stable snake_case ``code`` (what the API puts in its RFC 9457
problem) and an HTTP ``status`` *hint*, the way h11's errors hint at a status: the
ledger stays free of HTTP policy, the API may map differently.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, Literal, NamedTuple

from crashd.engine.proclock import InUse
from crashd.engine.reasons import (
    ALREADY_REVERSED,
    ALREADY_SETTLED,
    BET_IN_ROUND,
    DUPLICATE_HOLD,
    DUPLICATE_TICKET,
    ENVIRONMENT_NOT_ALLOWED,
    HOLD_EXPIRED,
    HOLD_RESOLVED,
    IDEMPOTENCY_CONFLICT,
    INSUFFICIENT_FUNDS,
    INVALID_MULTIPLIER,
    INVALID_REQUEST,
    LEDGER_UNAVAILABLE,
    ROUND_CLOSED,
    ROUND_NOT_CRASHED,
    ROUND_OUT_OF_ORDER,
    ROUND_STILL_OPEN,
    UNKNOWN_HOLD,
    UNKNOWN_ROUND,
    UNKNOWN_TICKET,
    UNKNOWN_WITHDRAWAL,
    reason,
)

Environment = Literal["sandbox", "production"]
ENVIRONMENTS: tuple[Environment, ...] = ("sandbox", "production")


class AccountKind(str, Enum):
    """Who an account belongs to. Every kind but ``player`` is one per environment."""

    PLAYER = "player"
    """A partner's user; never below zero (a CHECK constraint and the planner agree)."""
    HOUSE = "house"
    """The operator's bankroll: collects losses, pays winnings. May go negative."""
    ESCROW = "escrow"
    """Stakes of confirmed, unsettled bets; equals their sum at every commit."""
    PSP = "psp"
    """Clearing account mirroring money outside crashd (deposits in, withdrawals out)."""
    FAUCET = "faucet"
    """Source of demo money; sandbox only."""
    WALLET = "wallet"
    """An operator's seamless wallet (one per partner, ``partner_id`` set, no user):
    stakes its debits paid arrive from it, credits and rollbacks it confirmed go back
    to it (crashd.engine.ledger.wallet)."""
    CAPITAL = "capital"
    """The operator's own money outside crashd: the other side of bankroll deposits
    (capital → house) and withdrawals (house → capital)."""


SYSTEM_KINDS: tuple[AccountKind, ...] = (
    AccountKind.HOUSE,
    AccountKind.ESCROW,
    AccountKind.PSP,
    AccountKind.FAUCET,
    AccountKind.CAPITAL,
)
_KIND_VALUES = frozenset(k.value for k in AccountKind)


class AccountKey(NamedTuple):
    """The natural key of an account. System accounts have empty partner and user.

    A NamedTuple of plain strings (``kind`` is an ``AccountKind`` value) because the
    writer hashes and compares thousands of these per commit group."""

    environment: str
    kind: str
    partner_id: str = ""
    user_id: str = ""

    @staticmethod
    def player(environment: str, partner_id: str, user_id: str) -> AccountKey:
        return AccountKey(environment, "player", partner_id, user_id)

    @staticmethod
    def system(environment: str, kind: AccountKind | str) -> AccountKey:
        value = kind.value if isinstance(kind, AccountKind) else kind
        assert value != "player" and value in _KIND_VALUES
        return AccountKey(environment, value)


# --------------------------------------------------------------------------- records
# Mutable rows as the planner sees them inside one transaction. ``seq`` fields are the
# SQLite row ids, assigned by the single writer before the rows are inserted.


@dataclass
class Account:
    id: int
    key: AccountKey
    posted: int = 0
    """Credits minus debits of posted transfers."""
    pending: int = 0
    """Sum of pending holds debiting this account."""

    @property
    def available(self) -> int:
        return self.posted - self.pending


class HoldState(str, Enum):
    PENDING = "pending"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


@dataclass
class Hold:
    id: int
    hold_id: str
    op: int
    debit: int
    credit: int
    amount: int
    expires_at: int
    state: HoldState = HoldState.PENDING
    resolved_op: int | None = None
    resolved_at: int | None = None


class RoundState(str, Enum):
    OPEN = "open"
    """Started: betting or running. Bets may join; cashouts may settle."""
    CRASHED = "crashed"
    """Crash point and game hash recorded; ``settled_at`` says whether bets are done."""
    VOIDED = "voided"
    """Cancelled (recovery or operator); every unsettled stake was refunded with it."""


@dataclass
class Round:
    id: int
    started_op: int
    started_at: int
    state: RoundState = RoundState.OPEN
    crash_point: int | None = None
    game_hash: str | None = None
    ended_op: int | None = None
    ended_at: int | None = None
    settled_op: int | None = None
    settled_at: int | None = None
    void_reason: str | None = None


class BetOutcome(str, Enum):
    WON = "won"
    LOST = "lost"
    REFUNDED = "refunded"


@dataclass
class Bet:
    id: int
    ticket_id: str
    hold: int
    account: int
    stake: int
    auto_cashout: int | None
    round_id: int | None
    confirmed_op: int
    confirmed_at: int
    outcome: BetOutcome | None = None
    multiplier: int | None = None
    payout: int | None = None
    settled_op: int | None = None
    settled_at: int | None = None


class OpRecord(NamedTuple):
    """What the ledger remembers about an idempotency id: enough to replay the answer."""

    seq: int
    key: str
    kind: str
    fingerprint: bytes
    ok: bool
    code: str | None
    result: str
    """JSON: the result's fields when ``ok``, else the error's ``message`` and ``detail``."""


# --------------------------------------------------------------------------- results

_FIELD_NAMES: dict[type, tuple[Any, tuple[str, ...], str]] = {}
_encode_str = json.encoder.encode_basestring


@dataclass(frozen=True)
class Result:
    """Base of every operation's answer. ``seq`` is the op's position in the ledger.

    ``replayed`` is true when the answer comes from an earlier op with the same id; it
    is not part of equality, so a replay compares equal to the first answer.
    """

    kind: ClassVar[str] = ""
    op_id: str
    seq: int
    replayed: bool = field(default=False, compare=False, kw_only=True)

    def to_json(self) -> str:
        # Hand-rolled asdict: every field is a plain int/str/None, and asdict's deep
        # copy was a measurable share of the writer's time per op.
        # Hand-built JSON: every field is an int, a str or None, and json.dumps was
        # the largest single cost per op on the writer thread. Strings go through
        # the stdlib's own JSON string escaper, so the output is ordinary JSON.
        # Per class, once: the field getter and each field's '"name":' prefix, so an
        # op's answer costs one getter call and one join.
        cls = type(self)
        plan = _FIELD_NAMES.get(cls)
        if plan is None:
            names = tuple(f.name for f in dataclasses.fields(self) if f.name != "replayed")
            plan = _FIELD_NAMES[cls] = (
                operator.attrgetter(*names)
                if len(names) > 1
                else (lambda r: (getattr(r, names[0]),)),
                tuple(f',"{n}":' for n in names),
                f'{{"type":"{self.kind}"',
            )
        getter, prefixes, head = plan
        parts = [head]
        for prefix, v in zip(prefixes, getter(self), strict=True):
            parts.append(prefix)
            t = type(v)
            if t is int:
                parts.append(str(v))
            elif v is None:
                parts.append("null")
            else:
                assert t is str, (prefix, v)
                parts.append(_encode_str(v))
        parts.append("}")
        return "".join(parts)


@dataclass(frozen=True)
class Posted(Result):
    """A PSP deposit, withdrawal or reversal, or a faucet credit, was posted."""

    kind: ClassVar[str] = "posted"
    amount: int
    balance: int
    """The player's available balance right after this op."""
    posted: int | None = None
    """The player's posted balance right after this op (``None`` in records written
    before it was kept)."""


@dataclass(frozen=True)
class HoldReserved(Result):
    kind: ClassVar[str] = "hold_reserved"
    hold_id: str
    amount: int
    expires_at: int
    available: int


@dataclass(frozen=True)
class HoldVoided(Result):
    kind: ClassVar[str] = "hold_voided"
    hold_id: str
    amount: int


@dataclass(frozen=True)
class BetConfirmed(Result):
    kind: ClassVar[str] = "bet_confirmed"
    ticket_id: str
    hold_id: str
    stake: int
    auto_cashout: int | None
    round_id: int | None


@dataclass(frozen=True)
class BetPlaced(Result):
    """A bet placed in one op (stake held and posted at once, no separate hold)."""

    kind: ClassVar[str] = "bet_placed"
    ticket_id: str
    hold_id: str
    stake: int
    auto_cashout: int | None
    round_id: int | None
    available: int
    """The player's available balance right after the stake left it."""


@dataclass(frozen=True)
class BetRetargeted(Result):
    kind: ClassVar[str] = "bet_retargeted"
    ticket_id: str
    auto_cashout: int | None


@dataclass(frozen=True)
class BetSettled(Result):
    kind: ClassVar[str] = "bet_settled"
    ticket_id: str
    outcome: str
    multiplier: int | None
    payout: int
    """What the player received for this bet (0 for a loss, the stake for a refund)."""


@dataclass(frozen=True)
class RoundStarted(Result):
    kind: ClassVar[str] = "round_started"
    round_id: int
    bets_joined: int
    """Confirmed bets without a round that joined this one (bets placed for 'the next round')."""


@dataclass(frozen=True)
class RoundCrashed(Result):
    kind: ClassVar[str] = "round_crashed"
    round_id: int
    crash_point: int


@dataclass(frozen=True)
class RoundSettled(Result):
    kind: ClassVar[str] = "round_settled"
    round_id: int
    crash_point: int
    won: int
    lost: int
    paid: int
    """Total payouts of the bets won in this op (stakes included)."""
    collected: int
    """Total stakes of the bets lost in this op."""


@dataclass(frozen=True)
class RoundVoided(Result):
    kind: ClassVar[str] = "round_voided"
    round_id: int
    refunded: int
    refunded_amount: int


@dataclass(frozen=True)
class RoundSealed(Result):
    kind: ClassVar[str] = "round_sealed"
    round_id: int


@dataclass(frozen=True)
class RepliesPurged(Result):
    kind: ClassVar[str] = "replies_purged"
    before: int
    """Stored replies created before this instant (ms) were deleted."""


@dataclass(frozen=True)
class HoldsReleased(Result):
    kind: ClassVar[str] = "holds_released"
    released: int
    amount: int


@dataclass(frozen=True)
class Recovered(Result):
    """What start-up recovery did. ``highest_round_id`` is the highest game number ever
    started (0 if none); the engine resumes at ``highest_round_id + 1``."""

    kind: ClassVar[str] = "recovered"
    rounds_voided: int
    bets_refunded: int
    refunded_amount: int
    highest_round_id: int


@dataclass(frozen=True)
class BankrollMoved(Result):
    """A bankroll deposit (capital → house) or withdrawal (house → capital) was posted."""

    kind: ClassVar[str] = "bankroll_moved"
    environment: str
    amount: int
    house: int
    """The house account's posted balance right after this op."""


@dataclass(frozen=True)
class Recorded(Result):
    """An operator action was written to the audit log (under this op's seq)."""

    kind: ClassVar[str] = "recorded"
    action: str


RESULT_TYPES: dict[str, type[Result]] = {
    cls.kind: cls
    for cls in (
        Posted,
        HoldReserved,
        HoldVoided,
        BetConfirmed,
        BetPlaced,
        BetRetargeted,
        BetSettled,
        RoundStarted,
        RoundCrashed,
        RoundSettled,
        RoundVoided,
        RoundSealed,
        HoldsReleased,
        RepliesPurged,
        Recovered,
        BankrollMoved,
        Recorded,
    )
}


def result_from_json(text: str, *, replayed: bool) -> Result:
    data = json.loads(text)
    cls = RESULT_TYPES[data.pop("type")]
    return cls(**data, replayed=replayed)


# --------------------------------------------------------------------------- errors


class LedgerError(Exception):
    """An operation was refused. Recorded against its idempotency id (so it stays
    failed), except ``InvalidRequest``, which never reaches the ledger."""

    code: ClassVar[str] = INVALID_REQUEST
    """Its refusal code in ``crashd.engine.reasons`` (which gives its HTTP status)."""

    @property
    def status(self) -> int:
        return reason(self.code).status

    def __init__(self, message: str, **detail: Any) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = detail
        self.replayed = False

    def to_json(self) -> str:
        return json.dumps(
            {"message": self.message, "detail": self.detail}, separators=(",", ":"), sort_keys=True
        )

    def __eq__(self, other: object) -> bool:
        return (
            type(self) is type(other)
            and isinstance(other, LedgerError)
            and self.message == other.message
            and self.detail == other.detail
        )

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, **{self.detail!r})"


class InvalidRequest(LedgerError, ValueError):
    """Malformed operation (bad amount, unknown environment, …). Raised before queueing
    and not recorded: the caller can correct it and reuse the id."""

    code = INVALID_REQUEST


class IdempotencyConflict(LedgerError):
    """The id was used before for a different operation or different contents."""

    code = IDEMPOTENCY_CONFLICT


class InsufficientFunds(LedgerError):
    code = INSUFFICIENT_FUNDS


class EnvironmentNotAllowed(LedgerError):
    """E.g. a faucet credit in production."""

    code = ENVIRONMENT_NOT_ALLOWED


class DuplicateHold(LedgerError):
    code = DUPLICATE_HOLD


class UnknownHold(LedgerError):
    code = UNKNOWN_HOLD


class HoldExpired(LedgerError):
    code = HOLD_EXPIRED


class HoldResolved(LedgerError):
    """The hold was already posted or voided."""

    code = HOLD_RESOLVED


class DuplicateTicket(LedgerError):
    code = DUPLICATE_TICKET


class UnknownTicket(LedgerError):
    code = UNKNOWN_TICKET


class AlreadySettled(LedgerError):
    code = ALREADY_SETTLED


class UnknownRound(LedgerError):
    code = UNKNOWN_ROUND


class RoundClosed(LedgerError):
    """The round is not in a state that allows this (crashed, voided, or not open)."""

    code = ROUND_CLOSED


class BetInRound(LedgerError):
    """A bet that joined a round is refunded only by voiding that round."""

    code = BET_IN_ROUND


class RoundNotCrashed(LedgerError):
    code = ROUND_NOT_CRASHED


class RoundStillOpen(LedgerError):
    """A new round cannot start while another is open."""

    code = ROUND_STILL_OPEN


class RoundOutOfOrder(LedgerError):
    """Round ids are game numbers and only increase."""

    code = ROUND_OUT_OF_ORDER


class InvalidMultiplier(LedgerError):
    """Below 1.00x, or above the crash point of a crashed round."""

    code = INVALID_MULTIPLIER


class UnknownWithdrawal(LedgerError):
    code = UNKNOWN_WITHDRAWAL


class AlreadyReversed(LedgerError):
    code = ALREADY_REVERSED


class LedgerClosed(LedgerError):
    """The writer stopped (shutdown or a fatal error) before answering."""

    code = LEDGER_UNAVAILABLE


class LedgerInUse(InUse):
    """Another process has this ledger open. One writer per file holds across
    processes too: a second server's start-up recovery would void the rounds the first
    one is still playing."""


class LedgerFenced(LedgerInUse):
    """Another engine took the PostgreSQL ledger's lease over: this writer's term is
    stale, its transaction was refused, and it must stop (engine/ledger/lease.py)."""


class LedgerCorrupt(Exception):
    """Start-up checks failed (integrity_check, pragma read-back, balance audit).
    Not a LedgerError: the process must not serve money from this file."""


ERROR_TYPES: dict[str, type[LedgerError]] = {
    cls.code: cls
    for cls in (
        IdempotencyConflict,
        InsufficientFunds,
        EnvironmentNotAllowed,
        DuplicateHold,
        UnknownHold,
        HoldExpired,
        HoldResolved,
        DuplicateTicket,
        UnknownTicket,
        AlreadySettled,
        UnknownRound,
        RoundClosed,
        RoundNotCrashed,
        BetInRound,
        RoundStillOpen,
        RoundOutOfOrder,
        InvalidMultiplier,
        UnknownWithdrawal,
        AlreadyReversed,
    )
}


def error_from_json(code: str, text: str) -> LedgerError:
    data = json.loads(text)
    err = ERROR_TYPES[code](data["message"], **data["detail"])
    err.replayed = True
    return err


# --------------------------------------------------------------------------- reads


@dataclass(frozen=True)
class Balance:
    posted: int
    pending: int
    """Unexpired pending holds."""
    available: int


@dataclass(frozen=True, slots=True)
class StoredReply:
    """The reply a client got for a request, kept with the op that answered it."""

    status: int
    content_type: str
    body: bytes


class ReplySlot:
    """A client request's reply, to be stored in the same transaction as the op that
    answers it, under the request's key: one durable commit for both, and a retry with
    the same key is answered from the stored reply (``crashd.api.rest.idempotency``).

    The ledger never reads the reply: ``render(slot, answer)`` turns the op's answer
    (its result or refusal) into the bytes to keep; the caller may leave ``hints`` for
    it (the engine's decision, say). After the commit ``stored`` holds what was kept;
    ``existing`` is set instead when the key was already taken (the stored reply of an
    earlier request, which the op did not overwrite).
    """

    __slots__ = ("key", "fingerprint", "render", "hints", "stored", "existing")

    def __init__(
        self,
        key: bytes,
        fingerprint: bytes,
        render: Callable[[ReplySlot, Result | LedgerError], StoredReply],
    ) -> None:
        assert len(key) == 16, "a reply key is a 16-byte hash of the request's key"
        self.key = key
        self.fingerprint = fingerprint
        self.render = render
        self.hints: dict[str, Any] = {}
        self.stored: StoredReply | None = None
        self.existing: tuple[bytes, StoredReply] | None = None


class PlayerBalance(NamedTuple):
    """A player's balance as a commit left it (the ledger's commit listeners get one
    per player whose balance the commit changed). ``pending`` is what the account's
    pending holds reserve; a hold that expired is released by the next op on the
    account or by the sweep, whose commit reports the balance again."""

    environment: str
    partner_id: str
    user_id: str
    posted: int
    pending: int

    @property
    def available(self) -> int:
        return self.posted - self.pending


@dataclass(frozen=True)
class BetView:
    seq: int
    ticket_id: str
    environment: Environment
    partner_id: str
    user_id: str
    stake: int
    auto_cashout: int | None
    round_id: int | None
    confirmed_at: int
    outcome: str | None
    multiplier: int | None
    payout: int | None
    settled_at: int | None


@dataclass(frozen=True)
class RoundView:
    round_id: int
    state: str
    started_at: int
    crash_point: int | None
    game_hash: str | None
    ended_at: int | None
    settled_at: int | None
    void_reason: str | None


@dataclass(frozen=True)
class AuditEntry:
    """One row of the operator's audit log (append-only)."""

    seq: int
    ts: int
    """Unix ms."""
    environment: str
    actor: str
    """Who: the API key id of the operator's request (never the key)."""
    action: str
    before: str | None
    """JSON of the state before, when the action changed one."""
    after: str | None
    note: str


@dataclass(frozen=True)
class AuditReport:
    """Invariants checked by ``Ledger.audit``; ``problems`` is empty when all hold."""

    accounts: int
    transfers: int
    total: int
    """Sum of every account's posted balance: always 0 (double entry)."""
    psp_net: dict[str, int]
    """Per environment, deposits minus withdrawals (what the PSP clearing account owes)."""
    internal_total: dict[str, int]
    """Per environment, the sum of player + house + escrow balances."""
    faucet_total: dict[str, int]
    problems: tuple[str, ...]
    capital_total: dict[str, int] = field(default_factory=dict)
    """Per environment, bankroll deposits minus withdrawals (the operator's funding)."""

    @property
    def ok(self) -> bool:
        return not self.problems

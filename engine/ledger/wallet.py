"""The ledger's side of the seamless wallet: wallet transactions, the call log, and the
planner's overlay of them. Pure: no I/O, no clock.

A seamless player's money lives in the operator's wallet; crashd's ledger keeps what it
owes that wallet. A bet's stake arrives from the partner's ``wallet`` account (its
debit confirmed) and goes to escrow as any stake does; its payout (a win) or its stake
(a refund) lands on the player's crashd account, which is therefore exactly what the
outbox still owes the wallet; a confirmed credit or rollback moves it back to the
``wallet`` account. Every movement is a transfer, so the audit's sums hold as before.

A wallet transaction (``wallet_txs``) is one call crashd must bring to a final answer:

==========  ===========================================================================
kind        states (→ final)
==========  ===========================================================================
debit       ``pending`` (sent or about to be) → ``ok`` (the bet plays) | ``refused``
            (the wallet said no: nothing to undo) | ``cancelled`` (no final answer in
            time, or the bet could not play: its rollback is queued with it)
credit      ``pending`` → ``ok`` | ``failed`` (parked: past the retry horizon, or a
rollback    refusal) → ``pending`` again (operator: retry) | ``resolved`` (operator:
            settled by other means)
==========  ===========================================================================

Every debit that was ``ok`` or ``cancelled`` is closed by exactly one credit or one
rollback (its ``ref_tx_id`` is unique), never both: a won or lost bet is credited
(amount 0 for a loss), a refunded bet or a debit without a final answer is rolled back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Protocol

from crashd.engine.reasons import UNKNOWN_WALLET_TX, WALLET_TX_FINAL

from .model import ERROR_TYPES, RESULT_TYPES, LedgerError, Result

DEBIT = "debit"
CREDIT = "credit"
ROLLBACK = "rollback"
KINDS: tuple[str, ...] = (DEBIT, CREDIT, ROLLBACK)

PENDING = "pending"
OK = "ok"
REFUSED = "refused"
CANCELLED = "cancelled"
FAILED = "failed"
RESOLVED = "resolved"
STATES: tuple[str, ...] = (PENDING, OK, REFUSED, CANCELLED, FAILED, RESOLVED)
FINAL: frozenset[str] = frozenset({OK, REFUSED, CANCELLED, RESOLVED})
"""States a transaction never leaves (``failed`` may be retried by the operator)."""

CALLS: tuple[str, ...] = ("session.verify", "balance", "debit", "credit", "rollback")
OUTCOMES: tuple[str, ...] = ("ok", "refused", "unknown")


@dataclass
class WalletTx:
    """One wallet transaction as the planner sees it (mutable inside a commit group)."""

    tx_id: str
    kind: str
    environment: str
    partner_id: str
    user_id: str
    currency: str
    ticket_id: str
    round_id: int | None
    ref_tx_id: str | None
    amount: int
    multiplier: int | None
    state: str
    created_op: int
    created_at: int
    updated_at: int
    code: str | None = None
    """Why it is where it is: the refusal, the last failure, or the cancellation's cause."""
    attempts: int = 0
    """Calls made so far (for a debit: 0 or 1)."""
    next_at: int | None = None
    """When the outbox sends it (again): pending credits and rollbacks only."""
    give_up_at: int | None = None
    """Past this instant the outbox parks it as ``failed`` (the retry horizon)."""
    wallet_tx_id: str | None = None
    balance: int | None = None
    """The player's wallet balance in the last answer that carried one."""
    closed_op: int | None = None
    closed_by: str | None = None
    """A debit's closing credit or rollback, once queued (one, ever)."""
    note: str | None = None
    """The operator's note when resolving it by hand."""
    row_id: int | None = None
    """The row's id once stored (the store assigns it)."""


@dataclass(frozen=True)
class WalletCall:
    """One call to a wallet and what came back, as the reconciliation log keeps it."""

    at: int
    environment: str
    partner_id: str
    call: str
    request_id: str
    request: str
    outcome: str
    duration_ms: int
    tx_id: str | None = None
    user_id: str | None = None
    status: int | None = None
    response: str | None = None
    code: str | None = None


class WalletBacking(Protocol):
    """Committed wallet state, as read by the planner (fresh copies)."""

    def load_wallet_tx(self, tx_id: str) -> WalletTx | None: ...
    def load_wallet_debits(self, round_id: int) -> list[WalletTx]: ...
    def load_wallet_open_debits(self) -> list[WalletTx]: ...


_ABSENT = object()


class WalletOverlay:
    """The wallet rows one commit group reads and changes, until the store flushes them."""

    def __init__(self, backing: WalletBacking) -> None:
        self.backing = backing
        self._txs: dict[str, WalletTx | object] = {}
        self.new_txs: list[WalletTx] = []
        self.dirty_txs: dict[str, WalletTx] = {}
        self.new_calls: list[WalletCall] = []
        self.purge_calls_before: int | None = None

    def _prime(self, tx: WalletTx) -> WalletTx:
        seen = self._txs.get(tx.tx_id)
        if isinstance(seen, WalletTx):
            return seen
        self._txs[tx.tx_id] = tx
        return tx

    def tx(self, tx_id: str) -> WalletTx | None:
        seen = self._txs.get(tx_id)
        if seen is None:
            loaded = self.backing.load_wallet_tx(tx_id)
            seen = self._txs[tx_id] = _ABSENT if loaded is None else loaded
        return None if seen is _ABSENT else seen  # type: ignore[return-value]

    def debits_of_round(self, round_id: int) -> list[WalletTx]:
        found = {t.tx_id: self._prime(t) for t in self.backing.load_wallet_debits(round_id)}
        for tx in self.new_txs:
            if tx.kind == DEBIT and tx.round_id == round_id:
                found.setdefault(tx.tx_id, tx)
        return list(found.values())

    def open_debits(self) -> list[WalletTx]:
        """Debits still ``pending``, and ``ok`` ones without a credit or rollback yet."""
        found = {t.tx_id: self._prime(t) for t in self.backing.load_wallet_open_debits()}
        for tx in (*self.new_txs, *self.dirty_txs.values()):
            if tx.kind == DEBIT:
                found.setdefault(tx.tx_id, tx)
        return [t for t in found.values() if t.state in (PENDING, OK)]

    def add(self, tx: WalletTx) -> None:
        assert self.tx(tx.tx_id) is None, tx.tx_id
        self._txs[tx.tx_id] = tx
        self.new_txs.append(tx)

    def touch(self, tx: WalletTx) -> None:
        if tx not in self.new_txs:
            self.dirty_txs[tx.tx_id] = tx

    def log(self, call: WalletCall | None) -> None:
        if call is not None:
            self.new_calls.append(call)

    @property
    def empty(self) -> bool:
        return not (
            self.new_txs or self.dirty_txs or self.new_calls or self.purge_calls_before is not None
        )

    def closing_of(self, debit: WalletTx, credit_id: str, rollback_id: str) -> WalletTx | None:
        """The credit or rollback that closes ``debit``, if one exists."""
        return self.tx(credit_id) or self.tx(rollback_id)


# -- results ---------------------------------------------------------------------------


@dataclass(frozen=True)
class WalletTxOpened(Result):
    """A debit was recorded before it is sent (or an earlier one with its id found)."""

    kind: ClassVar[str] = "wallet_tx_opened"
    tx_id: str
    state: str
    code: str | None


@dataclass(frozen=True)
class WalletBetPlaced(Result):
    """A debit was confirmed and its bet placed, in one commit."""

    kind: ClassVar[str] = "wallet_bet_placed"
    ticket_id: str
    tx_id: str
    stake: int
    auto_cashout: int | None
    round_id: int | None
    balance: int | None
    """The player's wallet balance after the debit, as the wallet said."""


@dataclass(frozen=True)
class WalletDebitClosed(Result):
    """A debit will not play: refused, or cancelled with its rollback queued."""

    kind: ClassVar[str] = "wallet_debit_closed"
    tx_id: str
    state: str
    code: str
    """crashd's problem code for why the bet does not play."""
    balance: int | None
    rollback_tx_id: str | None
    wallet_code: str | None = None
    """The wallet's own refusal code, if it refused."""
    message: str = ""
    """The wallet's own words, if it refused."""


@dataclass(frozen=True)
class WalletTxsQueued(Result):
    """Credits and rollbacks put in the outbox (and, in recovery, debits cancelled)."""

    kind: ClassVar[str] = "wallet_txs_queued"
    credits: int
    rollbacks: int
    cancelled: int = 0


@dataclass(frozen=True)
class WalletAttempted(Result):
    """One outbox call recorded: its transaction is ``ok``, ``failed`` or still pending."""

    kind: ClassVar[str] = "wallet_attempted"
    tx_id: str
    state: str
    attempts: int
    next_at: int | None


@dataclass(frozen=True)
class WalletResolved(Result):
    kind: ClassVar[str] = "wallet_resolved"
    tx_id: str
    state: str


@dataclass(frozen=True)
class WalletCallsLogged(Result):
    kind: ClassVar[str] = "wallet_calls_logged"
    calls: int


@dataclass(frozen=True)
class WalletCallsPurged(Result):
    kind: ClassVar[str] = "wallet_calls_purged"
    before: int


# -- errors ----------------------------------------------------------------------------


class UnknownWalletTx(LedgerError):
    code = UNKNOWN_WALLET_TX


class WalletTxFinal(LedgerError):
    """The transaction is not in the state the op needs (a guard on the outbox's and
    the operator's ops)."""

    code = WALLET_TX_FINAL


def _register(results: Iterable[type[Result]], errors: Iterable[type[LedgerError]]) -> None:
    # The ledger replays a recorded answer by its type name: the wallet's results and
    # errors join the ledger's tables when this module is imported (which any op of
    # the wallet's does first).
    for cls in results:
        RESULT_TYPES.setdefault(cls.kind, cls)
    for err in errors:
        ERROR_TYPES.setdefault(err.code, err)


_register(
    (
        WalletTxOpened,
        WalletBetPlaced,
        WalletDebitClosed,
        WalletTxsQueued,
        WalletAttempted,
        WalletResolved,
        WalletCallsLogged,
        WalletCallsPurged,
    ),
    (UnknownWalletTx, WalletTxFinal),
)

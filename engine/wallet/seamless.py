"""The seamless wallet's Trio driver: bets on the operator's wallet, the outbox of
credits and rollbacks, recovery. Around the pure parts (``contract``, ``retry``,
``breaker``, the ledger's ``walletops``) and the game, as ``game.py`` is around the
engine.

The rules (docs/wallet.md), made exact:

* **A bet joins a round only if its debit succeeded before betting closed.** The debit
  is recorded ``pending`` first (durable), then sent with a deadline: the sooner of the
  partner's timeout and the close of betting of the bet's round. Confirmed in time, the
  bet goes to the engine *for that round only* (``Game.place_funded``); any other end —
  a refusal, no answer, a broken answer, an engine that no longer takes it — and it
  never plays: a refused debit needed nothing undone, every other one is cancelled with
  its rollback queued in the same commit, and the rollback is retried until final.
* **Cash-outs never wait for the wallet.** The engine decides them as for any bet; its
  win lands on the player's crashd account (owed to the wallet), and right after the
  settlement's op this driver queues the credit (``WalletClose``, same commit group
  almost always, and recovery catches the rest). The outbox sends it with exponential
  backoff and jitter (same ``tx_id`` every time) until the wallet answers or the horizon
  passes; then it is parked ``failed`` for the operator. A debit is never rolled back
  once its credit exists: each debit has exactly one closing transaction.
* **Restart or void mid-round**: the ledger's recovery (or the engine's void) refunds
  the un-cashed bets, and their debits are rolled back, once; cashed-out bets keep
  their win and are credited. A debit left ``pending`` by a crash is rolled back.
* **A circuit breaker per partner** refuses new bets while its wallet fails
  (``wallet_unavailable`` says why and when bets resume) and resumes by itself.

Nothing here blocks the tick loop or the ledger writer: wallet calls run in request
tasks and the outbox's own tasks; the engine's observer only queues ledger ops.
"""

from __future__ import annotations

import collections
import logging
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from crashd.engine.game import WITHDRAWN, Game, GameError, Placed, Player
from crashd.engine.ledger import LedgerError, walletstore
from crashd.engine.ledger.model import ReplySlot, Result
from crashd.engine.ledger.wallet import (
    CANCELLED,
    CREDIT,
    OK,
    PENDING,
    REFUSED,
    WalletCall,
    WalletTx,
)
from crashd.engine.ledger.walletops import (
    PurgeWalletCalls,
    WalletAttempt,
    WalletBetPlace,
    WalletCallsLog,
    WalletClose,
    WalletDebitClose,
    WalletDebitOpen,
    WalletRecover,
    WalletResolve,
)
from crashd.engine.ledger.writer import Pending
from crashd.engine.reasons import (
    BET_BUSY,
    DUPLICATE_TICKET,
    ENGINE_STOPPING,
    GAME_PAUSED,
    TOO_MANY_BETS,
    WALLET_CURRENCY_MISMATCH,
    WALLET_ERROR,
    WALLET_STAKE_TOO_LARGE,
    WALLET_TIMEOUT,
    WALLET_UNAVAILABLE,
    WALLET_UNKNOWN_PLAYER,
)
from crashd.engine.round.events import (
    BetAccepted,
    BetRefunded,
    CashedOut,
    Crashed,
    Event,
    RoundVoided,
)
from crashd.engine.round.machine import check_new_bet
from crashd.engine.round.tables import Phase

from . import contract
from .breaker import Breaker, BreakerStatus
from .contract import NO_LIMITS, Answer, Outcome, Request, WalletLimits
from .retry import Backoff

log = logging.getLogger(__name__)

MAX_SESSIONS = 100_000
"""Wallet session tokens remembered (one per player, least recently used dropped)."""
OUTBOX_BATCH = 256
"""Due transactions read per outbox pass."""
PURGE_INTERVAL_S = 3600.0
DRAIN_ALL = 2**62
"""As "now" for the due query: every pending transaction is due."""


@dataclass(frozen=True, slots=True)
class Sent:
    """What a call came to, and the call log's record of it."""

    answer: Answer
    call: WalletCall


class WalletPort(Protocol):
    """One partner's wallet, as the driver reaches it (HTTP: ``crashd.api.wallet``)."""

    async def send(self, request: Request, deadline: float) -> Sent:
        """Send ``request`` and read the answer, by ``deadline`` (``trio.current_time()``
        scale) at the latest: past it the answer is ``unknown`` (``timeout``). Never
        raises for anything the wallet or the network does."""
        ...


@dataclass
class PartnerWallet:
    """A partner in seamless mode: its wallet, currency and breaker."""

    partner_id: str
    currency: str
    port: WalletPort
    timeout_ms: int = 2_000
    breaker: Breaker = field(default_factory=Breaker)
    max_in_flight: int = 64
    """Outbox calls to this wallet at once."""
    sessions: collections.OrderedDict[str, str] = field(default_factory=collections.OrderedDict)
    """Player id → the wallet's session token (from ``session.verify``), sent with debits."""
    limits: collections.OrderedDict[str, WalletLimits] = field(
        default_factory=collections.OrderedDict
    )
    """Player id → the limits the wallet gave in its last ``session.verify`` (only
    players it gave some for), applied to every bet of theirs."""
    limiter: trio.CapacityLimiter = field(init=False)
    failing: bool = False
    """Its last call got no usable answer: the next one that does drains the outbox."""

    def __post_init__(self) -> None:
        self.limiter = trio.CapacityLimiter(self.max_in_flight)

    def remember_session(self, player_id: str, token: str) -> None:
        self.sessions[player_id] = token
        self.sessions.move_to_end(player_id)
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)

    def remember_limits(self, player_id: str, limits: WalletLimits) -> None:
        """The wallet's latest word on the player's limits: none given forgets earlier
        ones (the wallet lifted them)."""
        if limits == NO_LIMITS:
            self.limits.pop(player_id, None)
            return
        self.limits[player_id] = limits
        self.limits.move_to_end(player_id)
        while len(self.limits) > MAX_SESSIONS:
            self.limits.popitem(last=False)

    def limits_of(self, player_id: str) -> WalletLimits:
        return self.limits.get(player_id, NO_LIMITS)


@dataclass(frozen=True, slots=True)
class WalletSession:
    player_id: str
    currency: str
    balance: int | None
    limits: WalletLimits = NO_LIMITS


BalanceListener = Callable[[str, str, int], None]
"""(partner, player, wallet balance) after every answer that carried a balance."""


class Seamless:
    """Bets on the operator's wallets of the partners in ``partners``; everything else
    plays on crashd's own balances (the transfer wallet) as before."""

    def __init__(
        self,
        game: Game,
        partners: Mapping[str, PartnerWallet],
        *,
        environment: str,
        horizon_ms: int = 24 * 3600 * 1000,
        log_retention_ms: int = 122 * 24 * 3600 * 1000,
        backoff: Backoff | None = None,
        betting_margin_ms: int = 50,
        rng: random.Random | None = None,
        on_balance: BalanceListener | None = None,
    ) -> None:
        self.game = game
        self.ledger = game.ledger
        self.partners = dict(partners)
        self.environment = environment
        self.horizon_ms = horizon_ms
        self.log_retention_ms = log_retention_ms
        self.backoff = backoff if backoff is not None else Backoff()
        self.betting_margin_ms = betting_margin_ms
        self._rng = rng if rng is not None else random.Random()
        self.on_balance = on_balance
        self.recovered: Result | None = None
        # Seamless bets the engine holds: ticket -> its round, and round -> tickets, so
        # the observer queues a closing op only for rounds and tickets that have some.
        self._live: dict[str, int] = {}
        self._rounds: dict[int, set[str]] = {}
        self._inflight: set[str] = set()
        self._drain: set[str] = set()
        self._wake = trio.Event()
        self._watch_send, self._watch_recv = trio.open_memory_channel[Pending](float("inf"))
        self.attempts = 0
        """Outbox calls made (for the operator's metrics and the tests)."""
        game.engine.add_observer(self._on_events)

    # -- who ------------------------------------------------------------------------

    def wallet_of(self, partner_id: str) -> PartnerWallet | None:
        """The partner's wallet if it plays in seamless mode, else ``None``."""
        return self.partners.get(partner_id)

    def now_ms(self) -> int:
        return self.ledger.now_ms()

    def status(self, partner_id: str) -> BreakerStatus | None:
        wallet = self.partners.get(partner_id)
        return None if wallet is None else wallet.breaker.status(self.now_ms())

    # -- running --------------------------------------------------------------------

    async def recover(self) -> Result:
        """Before the engine takes bets: cancel the debits a crash cut off, queue what
        settled bets lack (see ``WalletRecover``)."""
        self.recovered = await self.ledger.submit(
            WalletRecover(
                f"wallet:recover:{self.now_ms()}:{self._rng.getrandbits(32)}",
                self.now_ms() + self.horizon_ms,
            )
        )
        log.info("wallet recovery: %s", self.recovered)
        return self.recovered

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The outbox, the watcher of closing ops and the call log's purge, until
        cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)
            nursery.start_soon(self._purge_loop)
            await nursery.start(self._outbox)
            task_status.started()

    def wake(self) -> None:
        """Something was queued: the outbox looks again."""
        self._wake.set()

    # -- the observer: settled seamless bets -> their credit or rollback ---------------

    def _on_events(self, events: Sequence[Event]) -> None:
        if not self._live:
            return
        tickets: list[str] = []
        rounds: list[int] = []
        voided = {e.round_id for e in events if isinstance(e, RoundVoided)}
        for event in events:
            if isinstance(event, CashedOut):
                if event.ticket in self._live:
                    self._forget(event.ticket)
                    tickets.append(event.ticket)
            elif isinstance(event, BetRefunded):
                # A queued bet refunded as the engine stops (a refund inside a round
                # comes with its RoundVoided; a withdrawn bet never reached the ledger).
                round_id = self._live.get(event.ticket)
                if round_id is not None and event.reason != WITHDRAWN and round_id not in voided:
                    self._forget(event.ticket)
                    tickets.append(event.ticket)
            elif isinstance(event, (Crashed, RoundVoided)):
                gone = self._rounds.pop(event.round_id, None)
                if gone:
                    for ticket in gone:
                        self._live.pop(ticket, None)
                    rounds.append(event.round_id)
        give_up_at = self.now_ms() + self.horizon_ms
        if tickets:
            self._queue(
                WalletClose(f"wallet:close:{tickets[0]}:{len(tickets)}", give_up_at, tuple(tickets))
            )
        for round_id in rounds:
            self._queue(
                WalletClose(f"wallet:close:round:{round_id}", give_up_at, round_id=round_id)
            )

    def _queue(self, op: WalletClose) -> None:
        self._watch_send.send_nowait(self.ledger.enqueue(op))

    def _track(self, ticket: str, round_id: int) -> None:
        self._live[ticket] = round_id
        self._rounds.setdefault(round_id, set()).add(ticket)

    def _forget(self, ticket: str) -> None:
        round_id = self._live.pop(ticket, None)
        if round_id is not None:
            tickets = self._rounds.get(round_id)
            if tickets is not None:
                tickets.discard(ticket)
                if not tickets:
                    del self._rounds[round_id]

    async def _watch(self) -> None:
        """Await the closing ops the observer queued; each one that queued something
        wakes the outbox. A refusal is a broken invariant (they are never refused)."""
        async for pending in self._watch_recv:
            try:
                await pending.wait()
            except LedgerError as err:
                raise RuntimeError(f"the ledger refused {pending.op.kind}: {err}") from err
            self.wake()

    # -- calls ----------------------------------------------------------------------

    def _partner(self, partner_id: str) -> PartnerWallet:
        wallet = self.partners.get(partner_id)
        assert wallet is not None, f"{partner_id} does not play in seamless mode"
        return wallet

    def _admit(self, wallet: PartnerWallet) -> bool:
        """The breaker's leave for one call (raises ``wallet_unavailable``); true if it
        is the half-open probe."""
        verdict = wallet.breaker.allow(self.now_ms())
        if not verdict.allowed:
            raise GameError(
                WALLET_UNAVAILABLE,
                f"the operator's wallet is failing: {verdict.reason}",
                reason=verdict.reason,
                retry_after_s=max(1, math.ceil(verdict.retry_after_ms / 1000)),
            )
        return verdict.probe

    async def _send(
        self,
        wallet: PartnerWallet,
        request: Request,
        deadline: float,
        probe: bool,
        *,
        cut_short: bool = False,
    ) -> Sent:
        """Send ``request`` by ``deadline`` and tell the breaker how it went.
        ``cut_short``: the deadline is crashd's own (a debit must be confirmed before
        betting closes), sooner than the partner's timeout — running out of it says
        nothing about the wallet, so it gives the breaker no verdict (else the debits in
        flight at every close of a busy round would open the breaker). Nor does a call
        that never left crashd (``not_sent``: still waiting for a connection)."""
        sent = await wallet.port.send(request, deadline)
        answer = sent.answer
        usable = answer.outcome is not Outcome.UNKNOWN
        if answer.outcome is Outcome.UNKNOWN and (
            answer.code == contract.NOT_SENT or (cut_short and answer.code == "timeout")
        ):
            wallet.breaker.release(probe)
            return sent
        wallet.breaker.record(
            self.now_ms(), usable, f"{request.call.value}: {answer.code}", probe=probe
        )
        if usable and wallet.failing:
            # The wallet answers again: what waits out a backoff goes now.
            self._drain.add(wallet.partner_id)
            self.wake()
        wallet.failing = not usable
        if answer.balance is not None and request.player_id is not None and self.on_balance:
            try:
                self.on_balance(wallet.partner_id, request.player_id, answer.balance)
            except Exception:
                log.exception("a wallet balance listener failed")
        return sent

    # -- bets -----------------------------------------------------------------------

    def _target(self, now_ms: int) -> tuple[int, int | None, bool]:
        """(the round a bet placed now plays in, the engine instant its debit must be
        confirmed by or ``None``, whether the current round must close first)."""
        engine = self.game.engine
        current = engine.sequencer.current
        if current.phase is Phase.BETTING:
            closes = current.closes_at_ms
            if now_ms < closes - self.betting_margin_ms:
                return current.round_id, closes - self.betting_margin_ms, False
            return engine.next_game, None, True
        return engine.next_game, None, False

    async def place(
        self,
        op_id: str,
        player: Player,
        stake: int,
        auto_cashout: int | None,
        ticket_id: str,
        hold_id: str,
        reply: ReplySlot | None = None,
    ) -> Placed:
        """A bet on the player's wallet (see the module docstring). ``reply`` is stored
        with whichever op ends the request: the bet's, or the debit's closing."""
        wallet = self._partner(player.partner_id)
        engine = self.game.engine
        reason = check_new_bet(engine.config, stake, auto_cashout)
        if reason is not None:
            raise GameError(
                reason, min_stake=engine.config.min_stake, max_stake=engine.config.max_stake
            )
        if engine.sequencer.stopping or engine.finished:
            raise GameError(ENGINE_STOPPING)
        now = engine.now_ms()
        round_id, confirm_by, after_close = self._target(now)
        # What the engine would refuse anyway is refused before the wallet is asked:
        # a debit only to roll it back helps no one.
        sequencer = engine.sequencer
        held = (
            len(sequencer.user_bets(player.key))
            if round_id == sequencer.current.round_id
            else sequencer.queued_bets_of(player.key)
        )
        if held >= engine.config.max_bets_per_user:
            raise GameError(TOO_MANY_BETS, round_id=round_id)
        if sequencer.paused and sequencer.current.phase is not Phase.BETTING:
            raise GameError(GAME_PAUSED)
        limit = wallet.limits_of(player.user_id).max_stake
        if limit is not None and stake > limit:
            raise GameError(WALLET_STAKE_TOO_LARGE, max_stake=limit)
        probe = self._admit(wallet)
        tx_id = contract.debit_id(ticket_id)
        try:
            opened = await self.ledger.submit(
                WalletDebitOpen(
                    op_id + ":debit",
                    player.environment,
                    player.partner_id,
                    player.user_id,
                    tx_id,
                    ticket_id,
                    round_id,
                    stake,
                    wallet.currency,
                )
            )
        except LedgerError as err:
            wallet.breaker.release(probe)
            raise GameError(err.code, err.message, **err.detail) from None
        if opened.replayed:
            wallet.breaker.release(probe)
            raise await self._earlier(tx_id)
        deadline = trio.current_time() + wallet.timeout_ms / 1000
        cut_short = False
        if confirm_by is not None and engine.time_of(confirm_by) < deadline:
            deadline, cut_short = engine.time_of(confirm_by), True
        request = contract.debit(
            tx_id,
            player.user_id,
            wallet.currency,
            stake,
            round_id,
            ticket_id,
            wallet.sessions.get(player.user_id),
        )
        sent = await self._send(wallet, request, deadline, probe, cut_short=cut_short)
        answer = sent.answer
        if answer.outcome is Outcome.REFUSED:
            code = answer.problem
            assert code is not None
            await self._close_debit(tx_id, REFUSED, code, sent, reply)
            raise GameError(
                code,
                answer.message or None,
                wallet_code=answer.code,
                wallet_message=answer.message,
                balance=answer.balance,
            )
        if answer.outcome is Outcome.UNKNOWN:
            timed_out = answer.code in ("timeout", contract.NOT_SENT)
            code = WALLET_TIMEOUT if timed_out else WALLET_ERROR
            await self._close_debit(tx_id, CANCELLED, code, sent, reply)
            raise GameError(code, reason=answer.code)
        if after_close and engine.sequencer.current.phase is Phase.BETTING:
            # Confirmed before the current round closed, for the next one: wait for it.
            await trio.sleep_until(engine.time_of(engine.sequencer.current.closes_at_ms + 1))

        def record(accepted: BetAccepted) -> WalletBetPlace:
            return WalletBetPlace(
                op_id + ":bet",
                player.environment,
                player.partner_id,
                player.user_id,
                tx_id,
                hold_id,
                ticket_id,
                stake,
                auto_cashout,
                None if accepted.queued else accepted.round_id,
                answer.wallet_tx_id,
                answer.balance,
                sent.call,
            )

        self._track(ticket_id, round_id)
        try:
            return await self.game.place_funded(
                ticket_id, player, stake, auto_cashout, round_id, record, reply
            )
        except GameError as err:
            # The wallet took the stake, the bet cannot play: give it back.
            self._forget(ticket_id)
            await self._close_debit(
                tx_id,
                CANCELLED,
                err.code,
                sent,
                reply if reply is None or reply.stored is None else None,
            )
            raise

    async def _close_debit(
        self, tx_id: str, state: str, code: str, sent: Sent, reply: ReplySlot | None
    ) -> None:
        answer = sent.answer
        await self.ledger.submit(
            WalletDebitClose(
                f"wallet:{tx_id}:close",
                tx_id,
                state,
                code,
                self.now_ms() + self.horizon_ms,
                answer.balance,
                answer.code if answer.outcome is Outcome.REFUSED else None,
                answer.message if answer.outcome is Outcome.REFUSED else "",
                sent.call,
            ),
            reply,
        )
        if state == CANCELLED:
            self.wake()

    async def _earlier(self, tx_id: str) -> GameError:
        """Why a bet request whose debit was recorded by an earlier request (the same
        Idempotency-Key, past the reply's retention) cannot be answered anew."""
        tx = await self.ledger.read(walletstore.load_tx, tx_id)
        assert tx is not None
        if tx.state == PENDING:
            return GameError(BET_BUSY, "this bet's debit is still being sent")
        if tx.state == OK:
            return GameError(
                DUPLICATE_TICKET, "this bet was placed already", ticket_id=tx.ticket_id
            )
        return GameError(tx.code or WALLET_ERROR, f"this bet's debit was {tx.state}")

    # -- reads through the wallet -------------------------------------------------------

    async def _log(self, call: WalletCall) -> None:
        await self.ledger.submit(WalletCallsLog(f"wallet:call:{call.request_id}", (call,)))

    async def balance(self, player: Player) -> tuple[int, int]:
        """(the wallet's balance, what crashd still owes the wallet for this player)."""
        wallet = self._partner(player.partner_id)
        probe = self._admit(wallet)
        request = contract.balance(
            player.user_id, wallet.currency, wallet.sessions.get(player.user_id)
        )
        sent = await self._send(
            wallet, request, trio.current_time() + wallet.timeout_ms / 1000, probe
        )
        await self._log(sent.call)
        answer = sent.answer
        if answer.outcome is Outcome.REFUSED:
            code = answer.problem
            assert code is not None
            raise GameError(code, answer.message or None, wallet_code=answer.code)
        if answer.outcome is Outcome.UNKNOWN or answer.balance is None:
            raise GameError(
                WALLET_UNAVAILABLE,
                "the operator's wallet did not answer the balance request",
                reason=answer.code or "bad_body",
            )
        owed = await self.ledger.read(
            walletstore.owed, player.environment, player.partner_id, player.user_id
        )
        return answer.balance, owed

    async def verify_session(self, partner_id: str, launch_token: str) -> WalletSession:
        """``session.verify``: who a launch token is, in which currency, with what."""
        wallet = self._partner(partner_id)
        probe = self._admit(wallet)
        request = contract.session_verify(launch_token)
        sent = await self._send(
            wallet, request, trio.current_time() + wallet.timeout_ms / 1000, probe
        )
        await self._log(sent.call)
        answer = sent.answer
        if answer.outcome is Outcome.REFUSED:
            code = answer.problem
            assert code is not None
            raise GameError(code, answer.message or None, wallet_code=answer.code)
        if answer.outcome is Outcome.UNKNOWN:
            raise GameError(WALLET_UNAVAILABLE, "the wallet did not answer", reason=answer.code)
        session = contract.session_of(answer)
        if session is None:
            raise GameError(WALLET_UNKNOWN_PLAYER, "the wallet's answer names no player")
        player, currency, balance, token = session
        if currency != wallet.currency:
            raise GameError(
                WALLET_CURRENCY_MISMATCH,
                f"the player's wallet is in {currency}, this game in {wallet.currency}",
            )
        if token is not None:
            wallet.remember_session(player, token)
        limits = contract.limits_of(answer)
        wallet.remember_limits(player, limits)
        if balance is not None and self.on_balance is not None:
            self.on_balance(partner_id, player, balance)
        return WalletSession(player, currency, balance, limits)

    def limits(self, player: Player) -> WalletLimits:
        """The wallet's limits for ``player`` (from its last ``session.verify``)."""
        return self._partner(player.partner_id).limits_of(player.user_id)

    # -- the operator -----------------------------------------------------------------

    async def resolve(
        self, partner_id: str, tx_id: str, action: str, note: str, reply: ReplySlot | None = None
    ) -> Result:
        """The operator's answer to a parked credit or rollback (``WalletResolve``)."""
        result = await self.ledger.submit(
            WalletResolve(
                f"wallet:{tx_id}:resolve:{self.now_ms()}:{self._rng.getrandbits(32)}",
                tx_id,
                partner_id,
                action,
                note,
                self.now_ms() + self.horizon_ms,
            ),
            reply,
        )
        self.wake()
        return result

    # -- the outbox -------------------------------------------------------------------

    async def _outbox(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Send every due credit and rollback, each in its own task (at most
        ``max_in_flight`` per wallet), record each answer, and sleep until the next is
        due or something new is queued."""
        partners = sorted(self.partners)
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                self._wake = trio.Event()
                now = self.now_ms()
                due = await self.ledger.read(
                    walletstore.due, partners, now, OUTBOX_BATCH + len(self._inflight)
                )
                if self._drain:
                    # A wallet that failed answers again: its pending credits and
                    # rollbacks go now, not after their backoff.
                    drain, self._drain = sorted(self._drain), set()
                    due += await self.ledger.read(
                        walletstore.due, drain, DRAIN_ALL, OUTBOX_BATCH + len(self._inflight)
                    )
                wait_ms: int | None = None
                for tx in due:
                    if tx.tx_id in self._inflight:
                        continue
                    wallet = self.partners.get(tx.partner_id)
                    if wallet is None:
                        continue  # the partner left seamless mode: the operator resolves it
                    verdict = wallet.breaker.allow(now)
                    if not verdict.allowed:
                        wait_ms = (
                            verdict.retry_after_ms
                            if wait_ms is None
                            else min(wait_ms, verdict.retry_after_ms)
                        )
                        continue
                    self._inflight.add(tx.tx_id)
                    nursery.start_soon(self._deliver, wallet, tx, verdict.probe)
                upcoming = await self.ledger.read(walletstore.next_due, partners, now)
                if upcoming is not None:
                    wait_ms = upcoming - now if wait_ms is None else min(wait_ms, upcoming - now)
                if len(due) >= OUTBOX_BATCH + len(self._inflight) - 1:
                    wait_ms = 10  # more were due than one pass reads: come back soon
                with trio.move_on_after(math.inf if wait_ms is None else wait_ms / 1000):
                    await self._wake.wait()

    async def _deliver(self, wallet: PartnerWallet, tx: WalletTx, probe: bool) -> None:
        try:
            async with wallet.limiter:
                await self._attempt(wallet, tx, probe)
        finally:
            self._inflight.discard(tx.tx_id)
            self.wake()

    async def _attempt(self, wallet: PartnerWallet, tx: WalletTx, probe: bool) -> None:
        assert tx.ref_tx_id is not None and tx.round_id is not None
        if tx.kind == CREDIT:
            request = contract.credit(
                tx.tx_id,
                tx.ref_tx_id,
                tx.user_id,
                tx.currency,
                tx.amount,
                tx.round_id,
                tx.ticket_id,
                tx.multiplier,
            )
        else:
            request = contract.rollback(
                tx.tx_id,
                tx.ref_tx_id,
                tx.user_id,
                tx.currency,
                tx.amount,
                tx.round_id,
                tx.ticket_id,
            )
        sent = await self._send(
            wallet, request, trio.current_time() + wallet.timeout_ms / 1000, probe
        )
        self.attempts += 1
        answer = sent.answer
        attempt = tx.attempts + 1
        now = self.now_ms()
        next_at = None
        if answer.outcome is Outcome.OK:
            outcome = "ok"
        elif answer.outcome is Outcome.REFUSED:
            # A refusal of a credit or a rollback is final (a replay answers the same):
            # parked for the operator at once.
            outcome = "failed"
        else:
            give_up = tx.give_up_at if tx.give_up_at is not None else now + self.horizon_ms
            next_at = self.backoff.next_attempt_ms(attempt, now, give_up, self._rng.random())
            outcome = "retry" if next_at is not None else "failed"
        try:
            await self.ledger.submit(
                WalletAttempt(
                    f"wallet:{tx.tx_id}:attempt:{attempt}",
                    tx.tx_id,
                    attempt,
                    outcome,
                    answer.code,
                    next_at,
                    answer.wallet_tx_id,
                    answer.balance,
                    sent.call,
                )
            )
        except LedgerError as err:
            # The operator resolved it meanwhile, or a stale read: nothing to record.
            log.warning("wallet %s: attempt %d not recorded (%s)", tx.tx_id, attempt, err.code)
        if outcome == "failed":
            log.warning(
                "wallet %s %s parked as failed after %d attempt(s): %s",
                tx.kind,
                tx.tx_id,
                attempt,
                answer.code,
            )

    async def _purge_loop(self) -> None:
        while True:
            await trio.sleep(PURGE_INTERVAL_S)
            before = self.now_ms() - self.log_retention_ms
            await self.ledger.submit(PurgeWalletCalls(f"wallet:purge:{before}", max(0, before)))

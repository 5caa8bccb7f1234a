"""The engine and the ledger as one game: every money decision becomes a durable transfer.

The round engine decides (instantly, purely); the ledger makes it durable (in groups).
This module is the seam between them, and it keeps one rule: **ledger ops are queued in
the engine's ``seq`` order, from inside the engine's observer** — synchronously, with no
checkpoint in between — so the ledger sees rounds open, bets join, cashouts pay and
rounds settle in exactly the order the engine decided them, while group commit still
batches them. Nobody is answered before their op committed.

Event → ledger op:

==================  ==============================================================
``BettingOpened``   ``round_start`` (bets queued for this round join it)
``BetAccepted``     ``bet_confirm`` — round id given when placed while betting, else
                    ``None`` ("the next round": it joins at that round's start)
``CashedOut``       ``settle_win`` at the engine's multiplier (manual, auto, forced)
``Crashed``         ``round_settle``: reveals the hash; every other open bet loses
``RoundVoided``     ``round_void``: every unsettled bet of the round is refunded
``BetRefunded``     ``bet_refund`` for a queued bet that never joined a round
``AutoCashoutChanged`` ``bet_target``: the bet's record shows the target in force
==================  ==============================================================

A bet's hold is checked *before* the engine sees the bet (owner, amount, still pending,
not about to expire), so the ``bet_confirm`` that follows cannot fail in practice. If it
fails anyway (the ledger stalled past the hold's expiry, an idempotency key reused for
something else), the bet is withdrawn from the engine before it can win anything and
the caller gets the ledger's refusal.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

import trio

from .driver import Engine
from .ledger import LedgerError
from .ledger.model import (
    BetConfirmed,
    BetPlaced,
    BetSettled,
    BetView,
    HoldReserved,
    HoldVoided,
    ReplySlot,
    Result,
)
from .ledger.ops import (
    BetConfirm,
    BetPlace,
    BetRefund,
    BetTarget,
    Op,
    RoundSettle,
    RoundStart,
    RoundVoid,
    SettleWin,
)
from .ledger.writer import Ledger, Pending
from .reasons import (
    ALREADY_CASHED_OUT,
    BET_BUSY,
    BET_REFUNDED,
    CATALOGUE,
    HOLD_BUSY,
    HOLD_EXPIRED,
    HOLD_RESOLVED,
    LEDGER_BUSY,
    ROUND_CLOSED,
    ROUND_SETTLED,
    ROUND_VOIDED,
    UNKNOWN_HOLD,
    UNKNOWN_TICKET,
)
from .round.events import (
    AutoCashoutChanged,
    BetAccepted,
    BetRefunded,
    BettingOpened,
    CashedOut,
    Crashed,
    Event,
    Rejected,
    RoundVoided,
    TooLate,
)
from .round.machine import check_new_bet

log = logging.getLogger(__name__)

MAX_UNFUNDED = 10_000
"""How many refused placements the game remembers (to ignore their later ops)."""

WITHDRAWN = "funding_failed"
"""``BetRefunded.reason`` of a bet withdrawn because its ledger confirm failed: the
ledger never held it, so there is nothing to refund there."""


class Announcer(Protocol):
    """Who tells the world (the feed, in ``crashd.api.feed``). The engine knows nothing
    of WebSockets: it says what was decided and, later, what became durable."""

    def decided(self, events: Sequence[Event]) -> None:
        """Every batch of engine events, the moment the engine decided them (from its
        observer: synchronous, must not block). Phase changes and ticks are news now."""

    def committed(self, events: Sequence[Event]) -> None:
        """Events whose money is now durable: their ledger ops committed (or they had
        none), in ``seq`` order. Money news waits for this."""


class GameError(Exception):
    """A request the game refuses. ``code`` names its entry in the one catalogue of
    refusals (``crashd.engine.reasons``), which gives its status and default detail."""

    def __init__(self, code: str, detail: str | None = None, **extra: object) -> None:
        entry = CATALOGUE[code]
        self.code = code
        self.detail = detail if detail is not None else entry.detail
        self.status = entry.status
        self.extra = extra
        super().__init__(self.detail)


@dataclass(frozen=True, slots=True)
class Player:
    """Who a bet belongs to: a partner's user, in one environment (separate books)."""

    environment: str
    partner_id: str
    user_id: str

    @property
    def key(self) -> tuple[str, str, str]:
        """The engine's opaque user key."""
        return (self.partner_id, self.environment, self.user_id)


@dataclass(frozen=True, slots=True)
class Placed:
    ticket_id: str
    round_id: int
    queued: bool
    stake: int
    auto_cashout: int | None
    confirmed: BetConfirmed | BetPlaced | Result
    """The ledger's record of the bet (a seamless bet's is the wallet's result)."""


@dataclass(frozen=True, slots=True)
class Cashout:
    """The one definitive answer to a cashout: won at ``multiplier`` or too late."""

    ticket_id: str
    round_id: int
    status: str  # "cashed_out" | "too_late"
    multiplier: int | None = None
    payout: int | None = None
    crash_point: int | None = None
    replayed: bool = False


def ticket_for(scoped_key: str) -> str:
    """A ticket id derived from the request's idempotency key, so a retry of the same
    confirm (even across a restart) names the same bet and moves nothing twice."""
    return "t_" + hashlib.blake2b(scoped_key.encode(), digest_size=12).hexdigest()


class Game:
    def __init__(
        self,
        engine: Engine,
        ledger: Ledger,
        *,
        announcer: Announcer | None = None,
        confirm_margin_ms: int = 2_000,
        max_ledger_backlog: int = 50_000,
    ) -> None:
        self.engine = engine
        self.ledger = ledger
        self.announcer = announcer
        self.epoch_offset_ms = 0
        """Wall-clock ms (Unix epoch) of engine instant 0, known once ``run`` started."""
        self.confirm_margin_ms = confirm_margin_ms
        self.max_ledger_backlog = max_ledger_backlog
        # ticket -> (player, hold id, op id) of bets the engine may accept next: set by
        # confirm() just before engine.place_bet, read by the observer.
        self._confirming: dict[str, tuple[Player, str, str]] = {}
        # ticket -> op id of the target change the engine may accept next (set by
        # set_auto_cashout just before the engine call, read by the observer).
        self._retargeting: dict[str, str] = {}
        # ticket -> the reply slot of the request whose op the engine may decide next
        # for that ticket (confirm, cash-out, target change): stored in that op's commit.
        self._replies: dict[str, ReplySlot] = {}
        # ticket -> (player, hold id, op id) of one-shot bets (reserve and confirm in one
        # op) the engine may accept next: set by place(), read by the observer.
        self._placing: dict[str, tuple[Player, str, str]] = {}
        # ticket -> the op recording a bet funded elsewhere (a seamless wallet's debit),
        # made from the engine's acceptance: set by place_funded(), read by the observer.
        self._funded: dict[str, Callable[[BetAccepted], Op]] = {}
        # Tickets whose placement the ledger refused, most recent last (bounded): their
        # later ops are refused too and announced to no one.
        self._unfunded: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._holds_busy: set[str] = set()
        # Tickets accepted for a round that had not opened yet: if refunded before it
        # opens, the ledger refunds them one by one (they never joined a round).
        self._queued: set[str] = set()
        self._pending_by_seq: dict[int, Pending] = {}
        # Completion order: every queued op is watched, in order, by _watch.
        # (event, its op, events to publish once that op committed)
        self._watch_send, self._watch_recv = trio.open_memory_channel[
            tuple[Event, Pending, list[Event]]
        ](float("inf"))
        engine.add_observer(self._on_events)

    # -- running ----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the engine and the watcher of ledger completions until the engine stops
        and every op it caused has committed."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch)
            await nursery.start(self.engine.run)
            self.epoch_offset_ms = time.time_ns() // 1_000_000 - self.engine.now_ms()
            task_status.started()
            await self.engine.wait_finished()
            self._watch_send.close()

    async def _watch(self) -> None:
        """Await every engine-caused op in order. A refused confirm withdraws its bet;
        any other refusal means the ledger and the engine disagree about money, which
        must stop the process rather than go on."""
        async for event, pending, announce in self._watch_recv:
            try:
                await pending.wait()
            except LedgerError as err:
                ticket = getattr(event, "ticket", None)
                if isinstance(event, BetAccepted):
                    log.warning("bet %s withdrawn: ledger refused it (%s)", event.ticket, err.code)
                    self._unfunded[event.ticket] = None
                    while len(self._unfunded) > MAX_UNFUNDED:
                        self._unfunded.popitem(last=False)
                    self._withdraw(event.ticket)
                elif ticket is not None and ticket in self._unfunded:
                    # A bet the ledger never held (its placement was refused just before,
                    # and it is being withdrawn) had time to change its target or even
                    # win in the engine: there is no record to change, nothing was paid,
                    # and its caller hears the refusal.
                    pass
                else:
                    raise RuntimeError(
                        f"ledger refused {type(event).__name__} seq {event.seq}: {err.code}: "
                        f"{err.message}"
                    ) from err
            finally:
                self._pending_by_seq.pop(event.seq, None)
            if self._unfunded:
                announce = [e for e in announce if getattr(e, "ticket", None) not in self._unfunded]
            self._announce(announce)

    def epoch_ms(self, engine_ms: int) -> int:
        return self.epoch_offset_ms + engine_ms

    def _announce(self, events: Sequence[Event]) -> None:
        if self.announcer is not None and events:
            self.announcer.committed(events)

    def _withdraw(self, ticket: str) -> None:
        self._queued.discard(ticket)
        self.engine.withdraw_bet(ticket, WITHDRAWN)

    # -- the observer: engine events -> ledger ops, in seq order ------------------------

    def _on_events(self, events: Sequence[Event]) -> None:
        queued: list[tuple[Event, Pending]] = []
        announce: list[Event] = []
        for event in events:
            op = self._op_for(event)
            if op is not None:
                pending = self.ledger.enqueue(op, self._reply_for(event))
                self._pending_by_seq[event.seq] = pending
                queued.append((event, pending))
            if not (isinstance(event, BetRefunded) and event.reason == WITHDRAWN):
                announce.append(event)
        if self.announcer is not None:
            self.announcer.decided(events)
        # Money news waits for its commit: ops commit in order, so once the batch's last
        # op committed, everything the batch decided is durable.
        for i, (event, pending) in enumerate(queued):
            last = i == len(queued) - 1
            self._watch_send.send_nowait((event, pending, announce if last else []))
        if not queued:
            self._announce(announce)

    def _reply_for(self, event: Event) -> ReplySlot | None:
        """The waiting request's reply slot, if this event answers it; the engine's
        decision goes into its hints (what the reply says beyond the ledger's result)."""
        if not isinstance(event, (BetAccepted, CashedOut, AutoCashoutChanged)):
            return None
        slot = self._replies.pop(event.ticket, None)
        if slot is not None:
            slot.hints["event"] = event
        return slot

    def _op_for(self, event: Event) -> Op | None:
        if isinstance(event, BettingOpened):
            self._queued.clear()  # every queued bet joins this round now
            return RoundStart(f"round:{event.round_id}:start", event.round_id)
        if isinstance(event, BetAccepted):
            if event.queued:
                self._queued.add(event.ticket)
            funded = self._funded.get(event.ticket)
            if funded is not None:
                return funded(event)
            placing = self._placing.get(event.ticket)
            if placing is not None:
                player, hold_id, op_id = placing
                return BetPlace(
                    op_id,
                    player.environment,
                    player.partner_id,
                    player.user_id,
                    hold_id,
                    event.ticket,
                    event.stake,
                    event.auto_cashout,
                    None if event.queued else event.round_id,
                )
            player, hold_id, op_id = self._confirming[event.ticket]
            return BetConfirm(
                op_id,
                player.environment,
                player.partner_id,
                player.user_id,
                hold_id,
                event.ticket,
                event.auto_cashout,
                None if event.queued else event.round_id,
            )
        if isinstance(event, AutoCashoutChanged):
            target_op = self._retargeting.get(event.ticket)
            assert target_op is not None, event
            return BetTarget(target_op, event.ticket, event.target)
        if isinstance(event, CashedOut):
            return SettleWin(f"win:{event.ticket}", event.ticket, event.multiplier)
        if isinstance(event, Crashed):
            return RoundSettle(
                f"round:{event.round_id}:settle", event.round_id, event.crash_point, event.game_hash
            )
        if isinstance(event, RoundVoided):
            return RoundVoid(
                f"round:{event.round_id}:void",
                event.round_id,
                event.reason,
                event.crash_point,
                event.game_hash,
            )
        if isinstance(event, BetRefunded):
            if event.reason == WITHDRAWN or event.ticket not in self._queued:
                return None  # never in the ledger, or refunded by its round's void
            self._queued.discard(event.ticket)
            return BetRefund(f"refund:{event.ticket}", event.ticket)
        return None

    # -- commands from the API ------------------------------------------------------------

    def _check_backlog(self) -> None:
        if self.ledger.statistics().queued > self.max_ledger_backlog:
            raise GameError(LEDGER_BUSY)

    async def reserve(
        self,
        op_id: str,
        player: Player,
        hold_id: str,
        amount: int,
        ttl_ms: int,
        reply: ReplySlot | None = None,
    ) -> HoldReserved:
        reason = check_new_bet(self.engine.config, amount, None)
        if reason is not None:
            raise GameError(
                reason,
                min_stake=self.engine.config.min_stake,
                max_stake=self.engine.config.max_stake,
            )
        self._check_backlog()
        return await self.ledger.bet_reserve(
            op_id,
            environment=player.environment,
            partner_id=player.partner_id,
            user_id=player.user_id,
            hold_id=hold_id,
            amount=amount,
            ttl_ms=ttl_ms,
            reply=reply,
        )

    async def void_hold(
        self, op_id: str, player: Player, hold_id: str, reply: ReplySlot | None = None
    ) -> HoldVoided:
        if hold_id in self._holds_busy:
            raise GameError(HOLD_BUSY, "this hold is being confirmed")
        self._holds_busy.add(hold_id)
        try:
            return await self.ledger.hold_void(
                op_id,
                environment=player.environment,
                partner_id=player.partner_id,
                user_id=player.user_id,
                hold_id=hold_id,
                reply=reply,
            )
        finally:
            self._holds_busy.discard(hold_id)

    async def confirm(
        self,
        op_id: str,
        player: Player,
        hold_id: str,
        auto_cashout: int | None,
        ticket_id: str,
        reply: ReplySlot | None = None,
        *,
        fresh: bool = False,
    ) -> Placed:
        """Post a hold as a bet in the round open for betting, or the next one.

        ``fresh``: the caller knows this ticket was never confirmed (its request key is
        new), so no read is needed to rule out a retry."""
        existing = None if fresh else await self.ledger.bet(ticket_id)
        if existing is not None:
            # A retry of a confirm that already went through: the ledger's answer.
            if reply is not None:
                reply.hints["round_id"] = existing.round_id or 0
                reply.hints["queued"] = existing.round_id is None
            result = await self.ledger.bet_confirm(
                op_id,
                environment=player.environment,
                partner_id=player.partner_id,
                user_id=player.user_id,
                hold_id=hold_id,
                ticket_id=ticket_id,
                auto_cashout=existing.auto_cashout,
                round_id=existing.round_id,
                reply=reply,
            )
            return Placed(
                ticket_id,
                existing.round_id or 0,
                existing.round_id is None,
                existing.stake,
                existing.auto_cashout,
                result,
            )
        if hold_id in self._holds_busy:
            raise GameError(HOLD_BUSY, "this hold is already being confirmed or voided")
        self._holds_busy.add(hold_id)
        try:
            return await self._confirm(op_id, player, hold_id, auto_cashout, ticket_id, reply)
        finally:
            self._holds_busy.discard(hold_id)

    async def _confirm(
        self,
        op_id: str,
        player: Player,
        hold_id: str,
        auto_cashout: int | None,
        ticket_id: str,
        reply: ReplySlot | None,
    ) -> Placed:
        hold = await self.ledger.hold(hold_id)
        if hold is None or (hold.environment, hold.partner_id, hold.user_id) != (
            player.environment,
            player.partner_id,
            player.user_id,
        ):
            raise GameError(UNKNOWN_HOLD)
        if hold.state != "pending":
            raise GameError(HOLD_RESOLVED, f"the hold is already {hold.state}", state=hold.state)
        if hold.expires_at <= self.ledger.now_ms() + self.confirm_margin_ms:
            raise GameError(HOLD_EXPIRED, expires_at=hold.expires_at)
        self._check_backlog()
        self._confirming[ticket_id] = (player, hold_id, op_id)
        if reply is not None:
            self._replies[ticket_id] = reply
        try:
            answer = await self.engine.place_bet(ticket_id, player.key, hold.amount, auto_cashout)
        finally:
            self._confirming.pop(ticket_id, None)
            self._replies.pop(ticket_id, None)
        return await self._placed(ticket_id, answer, BetConfirmed)

    async def place(
        self,
        op_id: str,
        player: Player,
        stake: int,
        auto_cashout: int | None,
        ticket_id: str,
        hold_id: str,
        reply: ReplySlot | None = None,
        *,
        fresh: bool = False,
    ) -> Placed:
        """Place a bet in one request and one ledger op (reserve and confirm at once):
        in the round open for betting, else the next. The engine takes the bet first (it
        decides the round); the ledger then posts the stake or refuses it
        (``insufficient_funds``), and a refused bet is withdrawn before it can play.

        ``fresh``: the caller knows this ticket was never placed (its request key is
        new), so no read is needed to rule out a retry."""
        reason = check_new_bet(self.engine.config, stake, auto_cashout)
        if reason is not None:
            raise GameError(
                reason,
                min_stake=self.engine.config.min_stake,
                max_stake=self.engine.config.max_stake,
            )
        if not fresh:
            existing = await self.ledger.bet(ticket_id)
            if existing is not None:
                # A retry of a placement that went through: the ledger's answer.
                if reply is not None:
                    reply.hints["round_id"] = existing.round_id or 0
                    reply.hints["queued"] = existing.round_id is None
                result = await self.ledger.bet_place(
                    op_id,
                    environment=player.environment,
                    partner_id=player.partner_id,
                    user_id=player.user_id,
                    hold_id=hold_id,
                    ticket_id=ticket_id,
                    amount=existing.stake,
                    auto_cashout=existing.auto_cashout,
                    round_id=existing.round_id,
                    reply=reply,
                )
                return Placed(
                    ticket_id,
                    existing.round_id or 0,
                    existing.round_id is None,
                    existing.stake,
                    existing.auto_cashout,
                    result,
                )
        self._check_backlog()
        self._placing[ticket_id] = (player, hold_id, op_id)
        if reply is not None:
            self._replies[ticket_id] = reply
        try:
            answer = await self.engine.place_bet(ticket_id, player.key, stake, auto_cashout)
        finally:
            self._placing.pop(ticket_id, None)
            self._replies.pop(ticket_id, None)
        return await self._placed(ticket_id, answer, BetPlaced)

    async def place_funded(
        self,
        ticket_id: str,
        player: Player,
        stake: int,
        auto_cashout: int | None,
        round_id: int,
        make_op: Callable[[BetAccepted], Op],
        reply: ReplySlot | None = None,
    ) -> Placed:
        """Place a bet whose stake was paid elsewhere (a seamless wallet's debit:
        ``crashd.engine.wallet.seamless``), into ``round_id`` only: the round open for
        betting, or the next one once betting has closed — never a later one. The op
        that records it is ``make_op(acceptance)``; a refusal of the engine's or the
        ledger's raises ``GameError`` (a bet the ledger refused is withdrawn first)."""
        self._check_backlog()
        self._funded[ticket_id] = make_op
        if reply is not None:
            self._replies[ticket_id] = reply
        try:
            answer = await self.engine.place_bet(
                ticket_id, player.key, stake, auto_cashout, round_id=round_id
            )
        finally:
            self._funded.pop(ticket_id, None)
            self._replies.pop(ticket_id, None)
        accepted = _first(answer, BetAccepted)
        if accepted is None:
            rejected = _first(answer, Rejected)
            assert rejected is not None, answer
            raise GameError(rejected.reason, round_id=rejected.round_id)
        try:
            result = await self._wait(accepted)
        except LedgerError as err:
            raise GameError(err.code, err.message, **err.detail) from None
        return Placed(
            ticket_id,
            accepted.round_id,
            accepted.queued,
            accepted.stake,
            accepted.auto_cashout,
            result,
        )

    async def _placed(
        self, ticket_id: str, answer: Sequence[Event], recorded: type[BetConfirmed | BetPlaced]
    ) -> Placed:
        """The engine's answer to a new bet, then the ledger's record of it."""
        accepted = _first(answer, BetAccepted)
        if accepted is None:
            rejected = _first(answer, Rejected)
            assert rejected is not None, answer
            raise GameError(rejected.reason)
        try:
            result = await self._wait(accepted)
        except LedgerError as err:
            raise GameError(err.code, err.message, **err.detail) from None
        assert isinstance(result, recorded), result
        if result.replayed:
            # The bet (or its confirm) had gone through long ago (its key's reply was
            # past the retention, so nothing said "retry"): the engine's new bet is a
            # duplicate. Take it back before it can play; the answer is the ledger's
            # record.
            self._withdraw(ticket_id)
            return Placed(
                ticket_id,
                result.round_id or accepted.round_id,
                result.round_id is None,
                result.stake,
                result.auto_cashout,
                result,
            )
        return Placed(
            ticket_id,
            accepted.round_id,
            accepted.queued,
            accepted.stake,
            accepted.auto_cashout,
            result,
        )

    async def _wait(self, event: Event) -> Result:
        pending = self._pending_by_seq.get(event.seq)
        assert pending is not None, event
        return await pending.wait()

    async def cash_out(
        self, player: Player, ticket_id: str, reply: ReplySlot | None = None
    ) -> Cashout:
        await self._check_owner(player, ticket_id)
        if reply is not None:
            self._replies[ticket_id] = reply
        try:
            answer = await self.engine.cash_out(ticket_id)
        finally:
            self._replies.pop(ticket_id, None)
        won = _first(answer, CashedOut)
        if won is not None:
            result = await self._wait(won)
            assert isinstance(result, BetSettled)
            return Cashout(ticket_id, won.round_id, "cashed_out", won.multiplier, won.payout)
        late = _first(answer, TooLate)
        if late is not None:
            return Cashout(ticket_id, late.round_id, "too_late", crash_point=late.crashed_at)
        rejected = _first(answer, Rejected)
        assert rejected is not None, answer
        if rejected.reason in {ALREADY_CASHED_OUT, UNKNOWN_TICKET, ROUND_SETTLED, BET_REFUNDED}:
            # The engine has moved on (or the bet already won): answer from the record,
            # once the ledger has it — a second request for a won bet learns its win,
            # for a lost one the crash. Never silence. (BET_REFUNDED while running: the
            # engine's bet was withdrawn, as if never placed; the ledger's record says.)
            view = await self._settled(ticket_id)
            assert view.round_id is not None or view.outcome == "refunded", view
            if view.outcome == "won":
                assert view.round_id is not None
                return Cashout(
                    ticket_id,
                    view.round_id,
                    "cashed_out",
                    view.multiplier,
                    view.payout,
                    replayed=True,
                )
            if view.outcome == "lost":
                assert view.round_id is not None
                rnd = await self.ledger.round(view.round_id)
                crash = rnd.crash_point if rnd is not None else None
                return Cashout(ticket_id, view.round_id, "too_late", crash_point=crash)
            raise GameError(BET_REFUNDED, "the bet was refunded (its round was voided)")
        raise GameError(rejected.reason)

    async def _settled(self, ticket_id: str) -> BetView:
        """The bet's ledger record once settled. The engine has decided its outcome and
        queued the op before this call, so once everything queued so far committed
        (``Ledger.barrier``: a wait, not a poll), the record has it."""
        view = await self.ledger.bet(ticket_id)
        if view is not None and view.outcome is None:
            await self.ledger.barrier()
            view = await self.ledger.bet(ticket_id)
        if view is None:
            raise GameError(UNKNOWN_TICKET)
        if view.outcome is None:
            raise GameError(LEDGER_BUSY, "the settlement is not committed yet; retry")
        return view

    async def _check_owner(self, player: Player, ticket_id: str) -> None:
        bet = self.engine.sequencer.find_bet(ticket_id)
        if bet is not None:
            if bet.user != player.key:
                raise GameError(UNKNOWN_TICKET)
            return
        view = await self.ledger.bet(ticket_id)
        if view is None or (view.environment, view.partner_id, view.user_id) != (
            player.environment,
            player.partner_id,
            player.user_id,
        ):
            raise GameError(UNKNOWN_TICKET)

    async def set_auto_cashout(
        self,
        op_id: str,
        player: Player,
        ticket_id: str,
        target: int | None,
        reply: ReplySlot | None = None,
    ) -> int | None:
        """Set (or cancel, with ``None``) a bet's auto-cashout target. Answered once the
        change is committed, so the bet's record shows the target in force; a bet the
        engine no longer holds is answered from its ledger record."""
        await self._check_owner(player, ticket_id)
        if ticket_id in self._retargeting:
            raise GameError(BET_BUSY)
        self._retargeting[ticket_id] = op_id
        if reply is not None:
            self._replies[ticket_id] = reply
        try:
            if target is None:
                answer = await self.engine.cancel_auto_cashout(ticket_id)
            else:
                answer = await self.engine.set_auto_cashout(ticket_id, target)
        finally:
            self._retargeting.pop(ticket_id, None)
            self._replies.pop(ticket_id, None)
        changed = _first(answer, AutoCashoutChanged)
        if changed is not None:
            try:
                await self._wait(changed)
            except LedgerError as err:
                raise GameError(err.code, err.message, **err.detail) from None
            return changed.target
        rejected = _first(answer, Rejected)
        assert rejected is not None, answer
        if rejected.reason in (UNKNOWN_TICKET, BET_REFUNDED):
            # BET_REFUNDED while betting: the engine's bet was withdrawn, as if never
            # placed (its funding failed, or it duplicated a bet the ledger settled long
            # ago under the same ticket): the ledger's record of the ticket answers.
            raise await self._forgotten(ticket_id)
        if rejected.reason in (ROUND_CLOSED, ROUND_SETTLED, ROUND_VOIDED):
            raise GameError(rejected.reason, round_id=rejected.round_id)
        raise GameError(rejected.reason)

    async def _forgotten(self, ticket_id: str) -> GameError:
        """Why a command on a bet the engine no longer holds (settled in an earlier
        round, refunded by recovery, or its round voided) cannot apply: the ledger's
        record says. Only a ticket the ledger does not know is ``unknown_ticket``."""
        view = await self.ledger.bet(ticket_id)
        if view is None:
            return GameError(UNKNOWN_TICKET)
        if view.outcome == "refunded":
            # A bet that joined a round is refunded only by voiding it (by the engine or
            # by recovery after a restart), as the engine itself would answer; one
            # queued for a round that was never played is simply refunded.
            if view.round_id is not None:
                return GameError(ROUND_VOIDED, round_id=view.round_id)
            return GameError(BET_REFUNDED)
        if view.outcome is not None:
            return GameError(ROUND_SETTLED, round_id=view.round_id, outcome=view.outcome)
        # Unsettled and unknown to the engine: its round is past betting (it is being
        # settled right now), or the bet is still being confirmed.
        return GameError(ROUND_CLOSED, round_id=view.round_id)


E = TypeVar("E", bound=Event)


def _first(events: Sequence[Event], cls: type[E]) -> E | None:
    for event in events:
        if isinstance(event, cls):
            return event
    return None

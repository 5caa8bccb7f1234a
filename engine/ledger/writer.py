"""The Trio driver: one writer task, group commit, durable acknowledgements.

Callers append ops to the current batch (a bounded queue of batches) and wait. The
writer task takes the oldest batch (at most ``max_group`` ops), hands it to the store on
a worker thread (``run_on_thread_now``: one group at a time, since the one writer task
awaits each) which plans, flushes and commits it as one transaction, and only then
answers each caller. Ops that arrive while a commit is in flight wait in the queue and
form the next group, so the number of fsyncs per second stays bounded by the disk while
throughput grows with the number of concurrent callers. Reads use a second connection
on their own thread and never wait for a commit.

Why a worker thread of Trio's cache rather than a dedicated thread fed by a
``queue.Queue`` and answered through a trio token: both pay one thread hand-off per
*group*, not per op, so at the group sizes that matter (tens to thousands) the
difference is small next to the ~23-30 µs of writer CPU per op (~10 planning and
prefetch, ~11 SQLite, see docs/ledger.md), and the thread's use stays inside the
ledger's nursery with no shutdown protocol of its own. Callers and the writer thread
take turns on the GIL (callers run while no group is being written, and the reverse).
Under the game's load the GIL is not what makes a commit slow (measured: docs/ledger.md,
"Group commit"): the tail is the disk's fsync and the event loop's latency on either
side of the thread.
"""

from __future__ import annotations

import collections
import contextvars
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import outcome
import trio

from .database import is_postgres
from .model import (
    AuditReport,
    BankrollMoved,
    BetConfirmed,
    BetPlaced,
    BetRetargeted,
    BetSettled,
    HoldReserved,
    HoldsReleased,
    HoldVoided,
    LedgerClosed,
    LedgerCorrupt,
    LedgerError,
    PlayerBalance,
    Posted,
    Recorded,
    Recovered,
    RepliesPurged,
    ReplySlot,
    Result,
    RoundCrashed,
    RoundSettled,
    RoundStarted,
    RoundVoided,
)
from .ops import (
    AuditRecord,
    BankrollMove,
    BetConfirm,
    BetPlace,
    BetRefund,
    BetReserve,
    BetTarget,
    FaucetCredit,
    HoldVoid,
    Op,
    PspDeposit,
    PspWithdrawal,
    PspWithdrawalReversal,
    PurgeReplies,
    ReleaseExpired,
    RoundCrash,
    RoundSeal,
    RoundSettle,
    RoundStart,
    RoundVoid,
    SettleLoss,
    SettleWin,
)
from .reads import ReadMethods
from .recovery import Reveal, run_recovery
from .store import Reader, Settlement, Store, Synchronous

if TYPE_CHECKING:
    from .lease import Lease

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Result)
T = TypeVar("T")
A = TypeVar("A")


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


async def run_on_thread_now(fn: Callable[..., T], *args: object) -> T:
    """``fn(*args)`` on a worker thread of Trio's thread cache (as ``trio.to_thread``
    uses), started before this task yields: ``trio.to_thread.run_sync`` with a limiter
    first passes a checkpoint, so under load a group waited a whole scheduler batch
    before its thread even started (hand-off p99 22.8 → 11.2 ms in ``bench game``, see
    docs/ledger.md). Not cancellable while ``fn`` runs (a group in flight is committed
    or failed, never abandoned): a cancellation takes effect at the caller's next
    checkpoint, as with ``to_thread``'s default."""
    task = trio.lowlevel.current_task()
    token = trio.lowlevel.current_trio_token()

    def deliver(result: outcome.Outcome[T]) -> None:
        token.run_sync_soon(trio.lowlevel.reschedule, task, result)

    # In a copy of this task's context, as to_thread runs its function.
    context = contextvars.copy_context()
    trio.lowlevel.start_thread_soon(partial(context.run, fn, *args), deliver)

    def abort(_: object) -> trio.lowlevel.Abort:
        return trio.lowlevel.Abort.FAILED

    result: T = await trio.lowlevel.wait_task_rescheduled(abort)
    return result


class _Done:
    """A one-shot event for one batch's callers: ``trio.Event`` minus its ParkingLot
    (one list append per waiter, one ``reschedule`` per waiter on ``set``). The
    callers' side is most of the Trio cost per op, so the frames matter."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = False
        self._waiters: list[trio.lowlevel.Task] = []

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, []
        reschedule = trio.lowlevel.reschedule
        for task in waiters:
            reschedule(task)

    async def wait(self) -> None:
        if self._set:
            await trio.lowlevel.checkpoint()
            return
        task = trio.lowlevel.current_task()
        waiters = self._waiters
        waiters.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            waiters.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)


class _Batch:
    """The ops that will share one commit, and one event for all their callers: one
    wake-up call per group instead of one Event per op."""

    __slots__ = ("ops", "replies", "answers", "done")

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.replies: list[ReplySlot | None] | None = None
        """Reply slots by op index, created on the first op that has one."""
        self.answers: list[Result | LedgerError] | None = None
        self.done = _Done()

    def add_reply(self, index: int, slot: ReplySlot) -> None:
        if self.replies is None:
            self.replies = [None] * len(self.ops)
        self.replies.extend([None] * (index + 1 - len(self.replies)))
        self.replies[index] = slot


class Pending:
    """An op queued with ``Ledger.enqueue``: ``await wait()`` for its committed result."""

    __slots__ = ("op", "_batch", "_index")

    def __init__(self, op: Op, batch: _Batch, index: int) -> None:
        self.op = op
        self._batch = batch
        self._index = index

    @property
    def done(self) -> bool:
        return self._batch.done.is_set()

    async def wait(self) -> Result:
        """The op's result once its group committed; raises its ``LedgerError``."""
        await self._batch.done.wait()
        answers = self._batch.answers
        if answers is None:
            raise LedgerClosed("the ledger stopped before committing this op", op_id=self.op.op_id)
        answer = answers[self._index]
        if isinstance(answer, LedgerError):
            raise answer
        return answer


@dataclass(frozen=True)
class HoldView:
    hold_id: str
    environment: str
    partner_id: str
    user_id: str
    amount: int
    expires_at: int
    state: str


@dataclass(frozen=True)
class LedgerStatistics:
    queued: int
    groups: int
    ops: int
    largest_group: int
    last_commit_ms: float
    last_commit_at: float | None = None
    """``trio.current_time()`` when the last group committed (``None``: none yet)."""
    failed: bool = False
    """The writer stopped on an error: nothing commits any more."""


class Ledger(ReadMethods):
    """The ledger's async interface. Get one from ``open_ledger``; every write method
    returns only after the transaction holding it committed (at the configured
    ``synchronous`` level), and raises the ``LedgerError`` the op was refused with."""

    def __init__(
        self, store: Store, reader: Reader, clock: Callable[[], int], max_group: int, max_queue: int
    ) -> None:
        assert max_group >= 1 and max_queue >= max_group
        self._store = store
        self._reader = reader
        self._clock = clock
        self._max_group = max_group
        self._max_queue = max_queue
        self._batches: collections.deque[_Batch] = collections.deque()
        self._queued = 0
        self._wakeup = trio.Event()
        self._space = trio.lowlevel.ParkingLot()
        self._read_limiter = trio.CapacityLimiter(reader.threads)
        self._closing = False
        self._failed: BaseException | None = None
        self._groups = 0
        self._ops = 0
        self._largest = 0
        self._last_commit_ms = 0.0
        self.recovery: Recovered | None = None
        """What start-up recovery did (``None`` if opened with ``recover=False``)."""
        self._commit_listeners: list[Callable[[Sequence[PlayerBalance]], None]] = []
        self._inflight: _Batch | None = None
        self.positions: Callable[[], Mapping[str, str]] | None = None
        """Read positions in outside streams to keep with each group, in its transaction
        (sampled when the writer takes the group): see ``sync_positions``."""
        self._positions_kept: dict[str, str] = {}
        self._last_commit_at: float | None = None
        self.on_commit: Callable[[float, int], None] | None = None
        """Called after each group commit with its duration (s) and size (ops): the
        operator's histograms (``crashd.api.ops.metrics``); must not block."""

    def add_balance_listener(self, listener: Callable[[Sequence[PlayerBalance]], None]) -> None:
        """Call ``listener`` after every commit that changed player balances, with each
        such player's balance as the commit left it, on the event loop, after the
        commit's callers were released. It must not block (the feed publishes from it);
        an exception in it is logged and the ledger goes on."""
        self._commit_listeners.append(listener)
        self._store.report_balances = True

    # -- the writer

    async def _write_loop(
        self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        batches = self._batches
        while True:
            if not batches:
                if self._closing:
                    return
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                continue
            batch = batches.popleft()
            self._inflight = batch
            n = len(batch.ops)
            assert n <= self._max_group  # 0: a group that only keeps positions
            positions = self._positions_to_keep()
            self._queued -= n
            self._space.unpark_all()
            now = self._clock()
            start = time.perf_counter()
            try:
                replies = batch.replies
                if replies is None and positions is None:
                    answers = await run_on_thread_now(self._store.apply_group, batch.ops, now)
                else:
                    if replies is not None:
                        replies.extend([None] * (len(batch.ops) - len(replies)))
                    answers = await run_on_thread_now(
                        self._store.apply_group, batch.ops, now, replies, positions
                    )
                if positions is not None:
                    self._positions_kept.update(positions)
            except BaseException as exc:
                # Nothing of this group is durable (rolled back) and the cause may be
                # a broken disk or a broken invariant: stop, answer everyone waiting
                # with ledger_unavailable, and let the error propagate.
                self._failed = exc
                self._closing = True
                batch.done.set()
                for b in batches:
                    b.done.set()
                batches.clear()
                self._space.unpark_all()
                raise
            assert len(answers) == n
            elapsed = time.perf_counter() - start
            self._last_commit_ms = elapsed * 1000
            self._last_commit_at = trio.current_time()
            if self.on_commit is not None:
                self.on_commit(elapsed, n)
            self._groups += 1
            self._ops += n
            self._largest = max(self._largest, n)
            batch.answers = answers
            batch.done.set()
            if self._commit_listeners and self._store.committed_balances:
                changed = self._store.committed_balances
                for listener in self._commit_listeners:
                    try:
                        listener(changed)
                    except Exception:
                        log.exception("a balance listener failed (the commit stands)")

    def _positions_to_keep(self) -> dict[str, str] | None:
        if self.positions is None:
            return None
        changed = {k: v for k, v in self.positions().items() if self._positions_kept.get(k) != v}
        return changed or None

    async def sync_positions(self) -> None:
        """Return once the positions as of now are durable: with the next group to
        commit, or a group of its own when nothing else is queued."""
        if self._closing:
            raise LedgerClosed("the ledger is closed")
        if not self._batches:
            self._batches.append(_Batch())
            self._wakeup.set()
        batch = self._batches[-1]  # not taken yet: its positions are sampled later
        await batch.done.wait()
        if batch.answers is None:
            raise LedgerClosed("the ledger stopped before keeping the positions")

    async def submit(self, op: Op, reply: ReplySlot | None = None) -> Result:
        """Queue ``op``, wait for its commit, return its result or raise its error.
        If the caller is cancelled after queueing, the op may still commit: retry with
        the same id to learn its answer."""
        op.validate()
        while self._queued >= self._max_queue and not self._closing:
            await self._space.park()
        if self._closing:
            reason = "stopped on an error" if self._failed is not None else "closed"
            raise LedgerClosed(f"the ledger is {reason}")
        batches = self._batches
        if not batches or len(batches[-1].ops) >= self._max_group:
            batches.append(_Batch())
            self._wakeup.set()
        batch = batches[-1]
        index = len(batch.ops)
        batch.ops.append(op)
        if reply is not None:
            batch.add_reply(index, reply)
        self._queued += 1
        await batch.done.wait()
        if batch.answers is None:
            raise LedgerClosed("the ledger stopped before committing this op", op_id=op.op_id)
        answer = batch.answers[index]
        if isinstance(answer, LedgerError):
            raise answer
        return answer

    def enqueue(self, op: Op, reply: ReplySlot | None = None) -> Pending:
        """Queue ``op`` now, without waiting, and return a handle to await its result.

        For a caller that must fix the *order* of its ops from synchronous code (the
        round engine's observer queues each money decision in ``seq`` order). It does not
        wait for room: such a caller bounds its own ops (the engine bounds bets per
        round), so ``max_queue`` may be exceeded by them but never grows without bound.
        """
        op.validate()
        if self._closing:
            raise LedgerClosed("the ledger is closed")
        batches = self._batches
        if not batches or len(batches[-1].ops) >= self._max_group:
            batches.append(_Batch())
            self._wakeup.set()
        batch = batches[-1]
        batch.ops.append(op)
        if reply is not None:
            batch.add_reply(len(batch.ops) - 1, reply)
        self._queued += 1
        return Pending(op, batch, len(batch.ops) - 1)

    async def barrier(self) -> None:
        """Wait until every op queued before this call has committed (or the ledger
        stopped): ops commit in queue order, so waiting for the newest group is enough.
        For a reader that knows an op was queued and wants to see its result."""
        last = self._batches[-1] if self._batches else self._inflight
        if last is None or last.done.is_set():
            await trio.lowlevel.checkpoint()
            return
        await last.done.wait()

    def now_ms(self) -> int:
        """The ledger's clock (hold expiry is judged by it)."""
        return self._clock()

    async def _submit(self, op: Op, cls: type[R], reply: ReplySlot | None = None) -> R:
        # ``submit`` inlined for its fast path (room in the queue, ledger open): one
        # coroutine frame less per op on the callers' side.
        result: Result | LedgerError
        if self._queued >= self._max_queue or self._closing:
            result = await self.submit(op, reply)
        else:
            op.validate()
            batches = self._batches
            if not batches or len(batches[-1].ops) >= self._max_group:
                batches.append(_Batch())
                self._wakeup.set()
            batch = batches[-1]
            ops = batch.ops
            index = len(ops)
            ops.append(op)
            if reply is not None:
                batch.add_reply(index, reply)
            self._queued += 1
            await batch.done.wait()
            answers = batch.answers
            if answers is None:
                raise LedgerClosed("the ledger stopped before committing this op", op_id=op.op_id)
            result = answers[index]
            if isinstance(result, LedgerError):
                raise result
        assert isinstance(result, cls), (result, cls)
        return result

    # -- writes

    async def psp_deposit(
        self, event_id: str, *, environment: str, partner_id: str, user_id: str, amount: int
    ) -> Posted:
        """PSP → player. ``event_id`` is the PSP's event id: redeliveries replay."""
        return await self._submit(
            PspDeposit(event_id, environment, partner_id, user_id, amount), Posted
        )

    async def psp_withdrawal(
        self, event_id: str, *, environment: str, partner_id: str, user_id: str, amount: int
    ) -> Posted:
        """Player → PSP; ``insufficient_funds`` (recorded) if it would go below zero."""
        return await self._submit(
            PspWithdrawal(event_id, environment, partner_id, user_id, amount), Posted
        )

    async def psp_withdrawal_reversal(
        self, event_id: str, *, environment: str, withdrawal_id: str
    ) -> Posted:
        """Credit back the amount of withdrawal ``withdrawal_id`` (at most once)."""
        return await self._submit(
            PspWithdrawalReversal(event_id, environment, withdrawal_id), Posted
        )

    async def faucet_credit(
        self,
        op_id: str,
        *,
        partner_id: str,
        user_id: str,
        amount: int,
        environment: str = "sandbox",
        reply: ReplySlot | None = None,
    ) -> Posted:
        """Demo money; ``environment_not_allowed`` outside sandbox."""
        return await self._submit(
            FaucetCredit(op_id, environment, partner_id, user_id, amount), Posted, reply
        )

    async def bet_reserve(
        self,
        op_id: str,
        *,
        environment: str,
        partner_id: str,
        user_id: str,
        hold_id: str,
        amount: int,
        ttl_ms: int,
        reply: ReplySlot | None = None,
    ) -> HoldReserved:
        return await self._submit(
            BetReserve(op_id, environment, partner_id, user_id, hold_id, amount, ttl_ms),
            HoldReserved,
            reply,
        )

    async def bet_confirm(
        self,
        op_id: str,
        *,
        environment: str,
        partner_id: str,
        user_id: str,
        hold_id: str,
        ticket_id: str,
        auto_cashout: int | None = None,
        round_id: int | None = None,
        reply: ReplySlot | None = None,
    ) -> BetConfirmed:
        return await self._submit(
            BetConfirm(
                op_id, environment, partner_id, user_id, hold_id, ticket_id, auto_cashout, round_id
            ),
            BetConfirmed,
            reply,
        )

    async def bet_place(
        self,
        op_id: str,
        *,
        environment: str,
        partner_id: str,
        user_id: str,
        hold_id: str,
        ticket_id: str,
        amount: int,
        auto_cashout: int | None = None,
        round_id: int | None = None,
        reply: ReplySlot | None = None,
    ) -> BetPlaced:
        return await self._submit(
            BetPlace(
                op_id,
                environment,
                partner_id,
                user_id,
                hold_id,
                ticket_id,
                amount,
                auto_cashout,
                round_id,
            ),
            BetPlaced,
            reply,
        )

    async def hold_void(
        self,
        op_id: str,
        *,
        environment: str,
        partner_id: str,
        user_id: str,
        hold_id: str,
        reply: ReplySlot | None = None,
    ) -> HoldVoided:
        return await self._submit(
            HoldVoid(op_id, environment, partner_id, user_id, hold_id), HoldVoided, reply
        )

    async def bet_target(
        self, op_id: str, *, ticket_id: str, auto_cashout: int | None
    ) -> BetRetargeted:
        return await self._submit(BetTarget(op_id, ticket_id, auto_cashout), BetRetargeted)

    async def settle_win(self, op_id: str, *, ticket_id: str, multiplier: int) -> BetSettled:
        return await self._submit(SettleWin(op_id, ticket_id, multiplier), BetSettled)

    async def settle_loss(self, op_id: str, *, ticket_id: str) -> BetSettled:
        return await self._submit(SettleLoss(op_id, ticket_id), BetSettled)

    async def bet_refund(self, op_id: str, *, ticket_id: str) -> BetSettled:
        return await self._submit(BetRefund(op_id, ticket_id), BetSettled)

    async def round_start(self, op_id: str, *, round_id: int) -> RoundStarted:
        return await self._submit(RoundStart(op_id, round_id), RoundStarted)

    async def round_crash(
        self, op_id: str, *, round_id: int, crash_point: int, game_hash: str
    ) -> RoundCrashed:
        return await self._submit(RoundCrash(op_id, round_id, crash_point, game_hash), RoundCrashed)

    async def round_settle(
        self,
        op_id: str,
        *,
        round_id: int,
        crash_point: int,
        game_hash: str,
        wins: tuple[tuple[str, int], ...] = (),
    ) -> RoundSettled:
        return await self._submit(
            RoundSettle(op_id, round_id, crash_point, game_hash, tuple(wins)), RoundSettled
        )

    async def round_void(
        self,
        op_id: str,
        *,
        round_id: int,
        reason: str,
        crash_point: int | None = None,
        game_hash: str | None = None,
    ) -> RoundVoided:
        """Void the round, refunding its unsettled bets; pass the burnt game's crash
        point and hash to keep them in the round's history."""
        return await self._submit(
            RoundVoid(op_id, round_id, reason, crash_point, game_hash), RoundVoided
        )

    async def purge_replies(self, before_ms: int) -> RepliesPurged:
        """Forget stored client replies created before ``before_ms`` (their retention)."""
        return await self._submit(
            PurgeReplies(f"purge:{uuid.uuid4().hex}", before_ms), RepliesPurged
        )

    async def release_expired_holds(self, limit: int = 1000) -> HoldsReleased:
        """Sweep: expire pending holds past their deadline. Skips the write (and the
        op record) when a read shows nothing to release."""
        now = self._clock()
        if await self._read(self._reader.expired_hold_count, now) == 0:
            return HoldsReleased("sweep:none", 0, released=0, amount=0)
        return await self._submit(ReleaseExpired(f"sweep:{uuid.uuid4().hex}", limit), HoldsReleased)

    async def audit_record(
        self,
        op_id: str,
        *,
        environment: str,
        actor: str,
        action: str,
        before: str | None = None,
        after: str | None = None,
        note: str = "",
        reply: ReplySlot | None = None,
    ) -> Recorded:
        """Append an operator action to the audit log (idempotent by ``op_id``)."""
        return await self._submit(
            AuditRecord(op_id, environment, actor, action, before, after, note), Recorded, reply
        )

    async def bankroll_move(
        self,
        op_id: str,
        *,
        environment: str,
        direction: str,
        amount: int,
        actor: str,
        note: str = "",
        reply: ReplySlot | None = None,
    ) -> BankrollMoved:
        """Capital → house (``deposit``) or house → capital (``withdrawal``), audited."""
        return await self._submit(
            BankrollMove(op_id, environment, direction, amount, actor, note), BankrollMoved, reply
        )

    # -- reads (second connection; see the last commit, never wait for one)

    async def system_posted(self, environment: str, kind: str) -> int:
        """A system account's posted balance (the house bankroll: ``"house"``)."""
        return await self._read(self._reader.system_posted, environment, kind)

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._read_limiter)

    async def reply_keys(self, since_ms: int) -> list[bytes]:
        """Keys of the replies stored since ``since_ms``."""
        return await self._read(self._reader.reply_keys, since_ms)

    async def hold(self, hold_id: str) -> HoldView | None:
        row = await self._read(self._reader.hold, hold_id)
        return None if row is None else HoldView(*row)

    async def audit(self) -> AuditReport:
        return await self._read(self._reader.audit)

    def seal_round(self, round_id: int, document: Callable[[], tuple[str, str]]) -> Pending:
        """Queue the seal of a round that just started (see ``ops.RoundSeal``)."""
        return self.enqueue(RoundSeal(f"round:{round_id}:seal", round_id, document))

    def statistics(self) -> LedgerStatistics:
        return LedgerStatistics(
            queued=self._queued,
            groups=self._groups,
            ops=self._ops,
            largest_group=self._largest,
            last_commit_ms=self._last_commit_ms,
            last_commit_at=self._last_commit_at,
            failed=self._failed is not None,
        )

    async def _sweep_loop(self, interval_s: float) -> None:
        while not self._closing:
            await trio.sleep(interval_s)
            try:
                await self.release_expired_holds()
            except LedgerClosed:
                return


@asynccontextmanager
async def open_ledger(
    path: Path | str,
    *,
    synchronous: Synchronous = "FULL",
    clock: Callable[[], int] = wall_clock_ms,
    max_group: int = 4096,
    max_queue: int = 65536,
    recover: bool = True,
    audit_on_open: bool = True,
    sweep_interval_s: float | None = 1.0,
    reveal: Reveal | None = None,
    settlement: Settlement | None = None,
    lease: Lease | None = None,
    pg_flush: str = "copy",
) -> AsyncIterator[Ledger]:
    """Open (creating if needed) the ledger at ``path`` and run its writer.

    ``path`` is a SQLite file, or a ``postgresql://`` URL (engine/ledger/database.py).
    On PostgreSQL the writer must hold the leader lease: pass the ``lease`` the caller
    took (``lease.wait_for_lease`` for a standby), or the ledger takes it now and raises
    ``LedgerInUse`` if another engine holds it; the lease is checked every second and
    its term fences every transaction (engine/ledger/lease.py).

    Start-up, before any op is accepted: read back the pragmas (WAL, ``synchronous``,
    foreign keys), ``PRAGMA integrity_check`` and ``foreign_key_check``, the balance
    audit (``audit_on_open``), then recovery (``recover``; see ``recovery.py``), whose
    report is ``ledger.recovery``; ``reveal`` maps a round id to its game's (crash
    point, hash) so the rounds recovery voids keep their burnt game on record; ``settlement``
    writes each settled round's transcript in its settlement's transaction (recovery's
    too). On exit, queued ops are committed and answered
    before the connections close. ``max_group=1`` gives one transaction per op (the
    bench's baseline)."""
    postgres = is_postgres(path)
    own_lease: Lease | None = None

    def start() -> tuple[Store, Reader, Recovered | None]:
        nonlocal own_lease
        if postgres:
            from .lease import Lease
            from .pgstore import PgReader, PgStore

            held = lease
            if held is None:
                held = own_lease = Lease.take(str(path))
            try:
                store: Store = PgStore(
                    str(path),
                    synchronous,
                    term=held.term,
                    flush=pg_flush,  # type: ignore[arg-type]
                    settlement=settlement,
                )
            except BaseException:
                if own_lease is not None:
                    own_lease.release()
                raise
        else:
            store = Store(path, synchronous, settlement)
        try:
            if audit_on_open:
                report = store.audit()
                if not report.ok:
                    raise LedgerCorrupt("audit failed: " + "; ".join(report.problems[:10]))
            recovered = run_recovery(store, clock(), reveal) if recover else None
            reader: Reader = PgReader(str(path)) if postgres else Reader(path, synchronous)
        except BaseException:
            store.close()
            if own_lease is not None:
                own_lease.release()
            raise
        return store, reader, recovered

    store, reader, recovered = await trio.to_thread.run_sync(start)
    ledger = Ledger(store, reader, clock, max_group, max_queue)
    ledger.recovery = recovered
    sweep_scope = trio.CancelScope()
    lease_scope = trio.CancelScope()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(ledger._write_loop)
            held = lease if lease is not None else own_lease
            if held is not None:
                nursery.start_soon(_in_scope, lease_scope, _keep_lease, held)
            if sweep_interval_s is not None:
                nursery.start_soon(_in_scope, sweep_scope, ledger._sweep_loop, sweep_interval_s)
            try:
                yield ledger
            finally:
                # Drain: refuse new ops, let the writer commit and answer what is
                # queued, then it returns. A sweep holds no money: just stop it.
                sweep_scope.cancel()
                lease_scope.cancel()
                ledger._closing = True
                ledger._wakeup.set()
                ledger._space.unpark_all()
    finally:
        # If the writer was cancelled or failed, callers waiting in other tasks must
        # not hang: they get ledger_unavailable (their ops were not committed).
        ledger._closing = True
        for batch in ledger._batches:
            batch.done.set()
        ledger._batches.clear()
        ledger._space.unpark_all()
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close_all, store, reader)
            if own_lease is not None:
                own_lease.release()


async def _keep_lease(lease: Lease) -> None:
    await lease.keep()


async def _in_scope(scope: trio.CancelScope, fn: Callable[[A], Awaitable[None]], arg: A) -> None:
    with scope:
        await fn(arg)


def _close_all(store: Store, reader: Reader) -> None:
    reader.close()
    store.close()

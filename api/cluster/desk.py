"""The engine's command desk: API processes' commands, run as if they came in here.

One reader task ``XREAD``s the command stream from the engine's position and starts a
task per command (at most ``max_in_flight``; beyond it the reader waits, so a flood
waits in Redis, not in memory). Each runs through ``crashd.api.rest.commands.execute``:
the route's own function under the engine's idempotency rules, so the same key sent to
two API processes, or retried after a lost reply, moves money once and is answered from
the stored reply. A cash-out is priced when its task reaches the engine: at receipt.

The read position is the ledger's to keep (``Ledger.positions``): each group commit
writes, in its own transaction, the newest id up to which every command has been
handled — so a restart re-reads from there, never skipping a command. A command whose
effects committed answers from its stored reply when re-read (no money moves twice). A
command answered *without* effects (a refusal, e.g. ``engine_stopping``) is answered
only once the position covering it is durable, so it is never run again after its
answer went out. A command past its deadline is skipped: its caller has been told to
retry with the same key.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from typing import Any

import trio

from crashd.api.edge.links import LinkError, StreamLink
from crashd.api.rest.commands import COMMANDS, Reply, execute, principal_from_json, reply_of
from crashd.api.rest.idempotency import IdempotencyToken
from crashd.api.rest.problems import Problem, problem_response
from crashd.api.services import Services
from crashd.api.wire import REPLAYED_HEADER
from crashd.engine.ledger import Ledger, LedgerClosed

from .wire import POSITION, REPLIES_MAXLEN, commands_key, encode_reply, entry_id_key

log = logging.getLogger(__name__)


class _Slot:
    __slots__ = ("entry_id", "done")

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id
        self.done = False


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class CommandDesk:
    def __init__(
        self,
        services: Services,
        ledger: Ledger,
        link: StreamLink,
        *,
        prefix: str,
        max_in_flight: int = 1000,
        retry_s: float = 0.2,
    ) -> None:
        self.services = services
        self.ledger = ledger
        self.link = link
        self.stream = commands_key(prefix)
        self.retry_s = retry_s
        self._limiter = trio.CapacityLimiter(max_in_flight)
        self._order: collections.deque[_Slot] = collections.deque()
        self.handled_through = "0-0"
        """Every command up to this id has been handled (its effects queued first)."""
        self._advanced = trio.Event()
        self._replies: dict[str, list[tuple[str, bytes]]] = {}
        self._wake_replies = trio.Event()
        self.stats_commands = 0
        self.stats_expired = 0
        self.stats_malformed = 0
        self.hop_ms: collections.deque[float] = collections.deque(maxlen=100_000)
        """Per command: engine receipt − the API process's send (wall clock, ms)."""
        ledger.positions = self._positions

    def _positions(self) -> dict[str, str]:
        return {POSITION: self.handled_through}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        after = await self.ledger.position(POSITION) or "0-0"
        self.handled_through = after
        log.info("commands: reading %s after %s", self.stream, after)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_replies)
                nursery.start_soon(self._keep_position)
                task_status.started()
                await self._read_loop(after, nursery)
        finally:
            # Stopping: keep the position reached, so a restart re-reads nothing handled.
            with trio.move_on_after(2.0, shield=True):
                try:
                    await self.ledger.sync_positions()
                except LedgerClosed:
                    pass

    async def _keep_position(self) -> None:
        """Between busy spells no group commits: keep the position anyway, soon after
        it moved (an empty group, at most ten a second)."""
        kept = self.handled_through
        while True:
            await trio.sleep(0.1)
            if self.handled_through != kept:
                kept = self.handled_through
                try:
                    await self.ledger.sync_positions()
                except LedgerClosed:
                    return

    async def _read_loop(self, after: str, nursery: trio.Nursery) -> None:
        while True:
            try:
                entries = await self.link.read(self.stream, after, block_ms=1000, count=256)
            except LinkError as exc:
                log.warning("commands: reading failed (%s); retrying", exc)
                await trio.sleep(self.retry_s)
                continue
            for entry_id, raw in entries:
                after = entry_id
                slot = _Slot(entry_id)
                self._order.append(slot)
                await self._limiter.acquire_on_behalf_of(slot)
                nursery.start_soon(self._handle, slot, raw, wall_ms())

    def _done(self, slot: _Slot) -> None:
        slot.done = True
        order = self._order
        moved = False
        while order and order[0].done:
            self.handled_through = order.popleft().entry_id
            moved = True
        if moved:
            self._advanced.set()
            self._advanced = trio.Event()

    async def _durable(self, slot: _Slot) -> None:
        """Until the position covering ``slot`` is committed."""
        key = entry_id_key(slot.entry_id)
        while entry_id_key(self.handled_through) < key:
            await self._advanced.wait()
        await self.ledger.sync_positions()

    async def _handle(self, slot: _Slot, raw: bytes, received_ms: int) -> None:
        try:
            try:
                cmd: dict[str, Any] = json.loads(raw)
                correlation = str(cmd["id"])
                to = str(cmd["to"])
                name = str(cmd["name"])
            except (ValueError, KeyError, TypeError):
                self.stats_malformed += 1
                log.warning("commands: a malformed entry %s skipped", slot.entry_id)
                self._done(slot)
                return
            deadline = int(cmd.get("deadline_ms", 0))
            if received_ms > deadline:
                # Its caller has already been told to retry with the same key.
                self.stats_expired += 1
                self._done(slot)
                return
            self.hop_ms.append(received_ms - int(cmd.get("sent_ms", received_ms)))
            self.stats_commands += 1
            tokens: list[IdempotencyToken] = []
            rid = str(cmd.get("rid", ""))
            try:
                principal = principal_from_json(cmd["principal"])
                key = cmd.get("key")
                response = await execute(
                    self.services,
                    name,
                    principal,
                    key if isinstance(key, str) else None,
                    bytes.fromhex(str(cmd.get("fp", ""))),
                    rid,
                    cmd.get("args", []),
                    on_token=tokens.append,
                )
                reply = await reply_of(response)
            except Exception:
                log.exception("commands: %s failed", name)
                problem = Problem("engine_unavailable", "the command failed in the engine; retry")
                reply = await reply_of(problem_response(problem, rid))
            stored = any(
                s.stored is not None or s.existing is not None for t in tokens for s in t.slots
            )
            replayed = reply.headers.get(REPLAYED_HEADER) == "true"
            self._done(slot)
            command = COMMANDS.get(name)
            if command is not None and command.idempotent and not stored and not replayed:
                # Answered without an effect: run again after a restart, it might have
                # one. So the answer waits until the position past it is durable.
                await self._durable(slot)
            self._reply(to, correlation, reply)
        finally:
            self._limiter.release_on_behalf_of(slot)

    def _reply(self, to: str, correlation: str, reply: Reply) -> None:
        self._replies.setdefault(to, []).append(("*", encode_reply(correlation, reply)))
        self._wake_replies.set()

    async def _write_replies(self) -> None:
        while True:
            if not self._replies:
                await self._wake_replies.wait()
                self._wake_replies = trio.Event()
                continue
            batches, self._replies = self._replies, {}
            for to, entries in batches.items():
                try:
                    await self.link.append(to, entries, maxlen=REPLIES_MAXLEN)
                except LinkError as exc:
                    # The API process times out and its client retries with the same
                    # key: the stored reply answers it.
                    log.warning("commands: a reply to %s was lost (%s)", to, exc)

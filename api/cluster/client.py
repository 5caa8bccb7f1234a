"""An API process's side of the command path: send, then wait on its own reply stream.

``RedisCommands`` is the ``CommandSink`` of a process without the engine. Commands are
queued and written in one pipelined round trip per wake-up; one reader task ``XREAD``s
the process's reply stream and hands each reply to its waiter. A command not answered
by its deadline is answered ``engine_unavailable`` with ``Retry-After``: the client
retries with the same Idempotency-Key and gets the stored reply if the first attempt
went through (a lost reply costs a retry, never money), and the engine skips the
expired command if it reaches it late. A command that could not be written (Redis
unreachable) is answered the same way at once, not at its deadline: while Redis is
away, callers learn it in one round trip.
"""

from __future__ import annotations

import collections
import json
import logging
import secrets
import time
from typing import Any

import trio
from quart import has_request_context, request

from crashd.api.edge.links import LinkError, StreamLink
from crashd.api.rest.commands import Reply, principal_to_json
from crashd.api.rest.idempotency import IdempotencyToken
from crashd.api.rest.problems import Problem
from crashd.api.rest.requestid import request_id_of
from crashd.api.security.keys import Principal

from .wire import (
    COMMAND_TIMEOUT_S,
    COMMANDS_MAXLEN,
    commands_key,
    decode_reply,
    replies_key,
)

log = logging.getLogger(__name__)


class _Waiter:
    __slots__ = ("event", "reply", "unsent")

    def __init__(self) -> None:
        self.event = trio.Event()
        self.reply: Reply | None = None
        self.unsent = False
        """Writing it to the command stream failed (it may still have reached Redis:
        the retry with its key is what makes that safe)."""


def _request_id() -> str:
    """The current request's id (a query's problem quotes it, as the engine's own REST
    would), or a fresh one outside a request (a feed order's query)."""
    if has_request_context():
        return request_id_of(request.scope)
    return secrets.token_hex(16)


class RedisCommands:
    def __init__(
        self,
        link: StreamLink,
        *,
        prefix: str,
        process: str | None = None,
        timeout_s: float = COMMAND_TIMEOUT_S,
        retry_s: float = 0.2,
    ) -> None:
        self.link = link
        self.process = process or secrets.token_hex(6)
        self.commands = commands_key(prefix)
        self.replies = replies_key(prefix, self.process)
        self.reply_to = self.replies
        """Where the engine is asked to answer (this process reads ``replies``)."""
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self._next = 0
        self._waiting: dict[str, _Waiter] = {}
        self._outbox: collections.deque[tuple[str, tuple[str, bytes]]] = collections.deque()
        """(correlation id, stream entry) of each command not yet written."""
        self._wake = trio.Event()
        self.stats_sent = 0
        self.stats_timeouts = 0
        self.stats_unsent = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.link.delete(self.replies)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._send_loop)
            task_status.started()
            after = "0-0"
            while True:
                try:
                    entries = await self.link.read(self.replies, after, block_ms=1000, count=1000)
                except LinkError as exc:
                    log.warning("api: reading replies failed (%s); retrying", exc)
                    await trio.sleep(self.retry_s)
                    continue
                for entry_id, raw in entries:
                    after = entry_id
                    try:
                        answer = decode_reply(raw)
                    except (ValueError, KeyError):
                        log.warning("api: a malformed reply skipped")
                        continue
                    waiter = self._waiting.get(answer.id)
                    if waiter is not None:  # else: its caller gave up already
                        waiter.reply = answer.reply
                        waiter.event.set()

    async def _send_loop(self) -> None:
        while True:
            if not self._outbox:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            batch = [self._outbox.popleft() for _ in range(min(256, len(self._outbox)))]
            try:
                await self.link.append(
                    self.commands, [entry for _, entry in batch], maxlen=COMMANDS_MAXLEN
                )
            except LinkError as exc:
                # Its callers are told at once to retry (with the same key).
                log.warning("api: sending %d commands failed (%s)", len(batch), exc)
                for correlation, _ in batch:
                    waiter = self._waiting.get(correlation)
                    if waiter is not None:
                        waiter.unsent = True
                        waiter.event.set()

    async def command(
        self,
        name: str,
        principal: Principal,
        token: IdempotencyToken | None,
        args: list[Any],
    ) -> Reply:
        self._next += 1
        correlation = f"{self.process}:{self._next}"
        now_ms = time.time_ns() // 1_000_000
        doc = {
            "id": correlation,
            "to": self.reply_to,
            "name": name,
            "principal": principal_to_json(principal),
            "key": token.key if token is not None else None,
            "fp": token.fingerprint.hex() if token is not None else "",
            "rid": token.request_id if token is not None else _request_id(),
            "args": args,
            "sent_ms": now_ms,
            "deadline_ms": now_ms + round(self.timeout_s * 1000),
        }
        waiter = _Waiter()
        self._waiting[correlation] = waiter
        try:
            self._outbox.append(
                (correlation, ("*", json.dumps(doc, separators=(",", ":")).encode()))
            )
            self._wake.set()
            self.stats_sent += 1
            # A little past the deadline: the engine may have started it just in time.
            with trio.move_on_after(self.timeout_s + 1.0):
                await waiter.event.wait()
        finally:
            self._waiting.pop(correlation, None)
        if waiter.unsent:
            self.stats_unsent += 1
            raise Problem(
                "engine_unavailable",
                "the command could not be sent to the engine (its command stream is "
                "unreachable); retry with the same Idempotency-Key",
                headers={"Retry-After": "1"},
            )
        if waiter.reply is None:
            self.stats_timeouts += 1
            raise Problem(
                "engine_unavailable",
                "the engine did not answer in time; retry with the same Idempotency-Key",
                headers={"Retry-After": "1"},
            )
        return waiter.reply

"""The ledger's read side, for processes that do not write it.

``LedgerReads`` is what the REST API reads (balances, bets, rounds, stored replies):
the ``Ledger`` of the engine's process provides it, and so does ``ReadOnlyLedger``, the
same reads on a connection of their own, for an API process beside the engine (on this
machine: SQLite's WAL lets readers in other processes see every commit without waiting
for the writer; on PostgreSQL, a read pool on any machine). The API process asks
``open_reads(database)`` and never learns which backend it got.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

import trio

from .database import is_postgres
from .model import AccountKey, Balance, BetView, RoundView, StoredReply
from .store import Reader, Synchronous

T = TypeVar("T")


class LedgerReads(Protocol):
    def now_ms(self) -> int: ...
    async def reply(self, key: bytes) -> tuple[bytes, StoredReply] | None: ...
    async def balance(self, *, environment: str, partner_id: str, user_id: str) -> Balance: ...
    async def bet(self, ticket_id: str) -> BetView | None: ...
    async def user_bets(
        self,
        *,
        environment: str,
        partner_id: str,
        user_id: str,
        limit: int = 50,
        before: int | None = None,
    ) -> list[BetView]: ...
    async def round_bets(self, round_id: int, *, unsettled_only: bool = False) -> list[BetView]: ...
    async def round(self, round_id: int) -> RoundView | None: ...
    async def finished_rounds(
        self, *, limit: int = 50, before: int | None = None
    ) -> list[RoundView]: ...
    async def seal(self, round_id: int) -> str | None: ...
    async def transcript(self, round_id: int) -> tuple[str, str] | None: ...
    async def transcripts(
        self, first: int, last: int, limit: int = 1000
    ) -> list[tuple[int, str]]: ...


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ReadOnlyLedger:
    """``LedgerReads`` on a read-only connection of its own: a SQLite file's (one read
    at a time), or a PostgreSQL database's read pool (``pgstore.PgReader``: as many at
    once as it has connections), each read in a worker thread: a read never blocks the
    event loop."""

    def __init__(
        self,
        path: Path | str,
        synchronous: Synchronous = "FULL",
        clock: Callable[[], int] = wall_clock_ms,
    ) -> None:
        if is_postgres(path):
            from .pgstore import PgReader

            self._reader: Reader = PgReader(str(path))
        else:
            self._reader = Reader(path, synchronous)
        self._clock = clock
        self._limiter = trio.CapacityLimiter(self._reader.threads)

    def close(self) -> None:
        self._reader.close()

    def now_ms(self) -> int:
        return self._clock()

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    async def reply(self, key: bytes) -> tuple[bytes, StoredReply] | None:
        return await self._read(self._reader.reply, key)

    async def balance(self, *, environment: str, partner_id: str, user_id: str) -> Balance:
        key = AccountKey.player(environment, partner_id, user_id)
        return await self._read(self._reader.balance, key, self._clock())

    async def bet(self, ticket_id: str) -> BetView | None:
        return await self._read(self._reader.bet, ticket_id)

    async def user_bets(
        self,
        *,
        environment: str,
        partner_id: str,
        user_id: str,
        limit: int = 50,
        before: int | None = None,
    ) -> list[BetView]:
        assert 0 < limit <= 1000
        key = AccountKey.player(environment, partner_id, user_id)
        return await self._read(self._reader.user_bets, key, limit, before)

    async def round_bets(self, round_id: int, *, unsettled_only: bool = False) -> list[BetView]:
        return await self._read(self._reader.round_bets, round_id, unsettled_only)

    async def round(self, round_id: int) -> RoundView | None:
        return await self._read(self._reader.round, round_id)

    async def finished_rounds(
        self, *, limit: int = 50, before: int | None = None
    ) -> list[RoundView]:
        assert 0 < limit <= 1000
        return await self._read(self._reader.finished_rounds, limit, before)

    async def seal(self, round_id: int) -> str | None:
        return await self._read(self._reader.seal, round_id)

    async def transcript(self, round_id: int) -> tuple[str, str] | None:
        return await self._read(self._reader.transcript, round_id)

    async def transcripts(self, first: int, last: int, limit: int = 1000) -> list[tuple[int, str]]:
        return await self._read(self._reader.transcripts, first, last, limit)

    async def position(self, name: str) -> str | None:
        return await self._read(self._reader.position, name)


def open_reads(database: Path | str) -> ReadOnlyLedger:
    """The reads of the ledger at ``database`` for a process that does not write it
    (blocking: call from a thread): a SQLite file on this machine, or a
    ``postgresql://`` URL."""
    return ReadOnlyLedger(database)

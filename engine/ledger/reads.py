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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

import trio

from .database import is_postgres
from .model import AccountKey, AuditEntry, Balance, BetView, RoundView, StoredReply
from .store import Reader, Synchronous

T = TypeVar("T")


class LedgerReads(Protocol):
    def now_ms(self) -> int: ...
    async def read(self, fn: Callable[..., T], *args: object) -> T: ...
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
    async def recent_ops(
        self, kinds: Sequence[str], limit: int = 20
    ) -> list[tuple[int, str, str, bool, str | None, str, int]]: ...
    async def audit_entries(
        self,
        environment: str,
        *,
        actions: Sequence[str] = (),
        limit: int = 50,
        before: int | None = None,
    ) -> list[AuditEntry]: ...
    async def transcripts(
        self, first: int, last: int, limit: int = 1000
    ) -> list[tuple[int, str]]: ...


class ReadMethods:
    """The reads both ledgers offer, each a call of the reader's in a worker thread:
    ``Ledger`` (the engine's) and ``ReadOnlyLedger`` (a process beside it) differ only in
    where their reader and ``_read``'s thread limit come from."""

    _reader: Reader
    _clock: Callable[[], int]

    async def _read(self, fn: Callable[..., T], *args: object) -> T:
        raise NotImplementedError

    async def read(self, fn: Callable[..., T], *args: object) -> T:
        """``fn(connection, *args)`` on the read connection's thread: for a module
        that keeps its own queries beside the ledger's (the wallet's, ``walletstore``),
        in the engine and in an API process alike."""
        return await self._read(fn, self._reader.conn, *args)

    async def position(self, name: str) -> str | None:
        """A kept position (as of the last commit)."""
        return await self._read(self._reader.position, name)

    async def recent_ops(
        self, kinds: Sequence[str], limit: int = 20
    ) -> list[tuple[int, str, str, bool, str | None, str, int]]:
        """(seq, key, kind, ok, code, result JSON, ts) of recent ops of these kinds."""
        return await self._read(self._reader.recent_ops, tuple(kinds), limit)

    async def audit_entries(
        self,
        environment: str,
        *,
        actions: Sequence[str] = (),
        limit: int = 50,
        before: int | None = None,
    ) -> list[AuditEntry]:
        """The operator's audit log, newest first (``before``: a seq cursor)."""
        assert 0 < limit <= 1000
        return await self._read(
            self._reader.audit_entries, environment, tuple(actions), limit, before
        )

    async def reply(self, key: bytes) -> tuple[bytes, StoredReply] | None:
        """(request fingerprint, stored reply) kept under a request key, if any."""
        return await self._read(self._reader.reply, key)

    async def balance(self, *, environment: str, partner_id: str, user_id: str) -> Balance:
        """``available`` = posted minus unexpired pending holds; 0s for unknown users."""
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
        """Newest first; pass the last ``seq`` seen as ``before`` for the next page."""
        assert 0 < limit <= 1000
        key = AccountKey.player(environment, partner_id, user_id)
        return await self._read(self._reader.user_bets, key, limit, before)

    async def round_bets(self, round_id: int, *, unsettled_only: bool = False) -> list[BetView]:
        """Bets of a round in confirmation order (e.g. to build a bulk settlement)."""
        return await self._read(self._reader.round_bets, round_id, unsettled_only)

    async def round(self, round_id: int) -> RoundView | None:
        return await self._read(self._reader.round, round_id)

    async def finished_rounds(
        self, *, limit: int = 50, before: int | None = None
    ) -> list[RoundView]:
        """Crashed or voided rounds, newest first; ``before`` is a round id cursor."""
        assert 0 < limit <= 1000
        return await self._read(self._reader.finished_rounds, limit, before)

    async def seal(self, round_id: int) -> str | None:
        """A round's start seal (signed canonical JSON), once betting closed."""
        return await self._read(self._reader.seal, round_id)

    async def transcript(self, round_id: int) -> tuple[str, str] | None:
        """(hash, signed canonical JSON) of a settled round's transcript."""
        return await self._read(self._reader.transcript, round_id)

    async def transcripts(self, first: int, last: int, limit: int = 1000) -> list[tuple[int, str]]:
        """Transcripts of rounds ``first..last`` (at most ``limit``), in round order."""
        return await self._read(self._reader.transcripts, first, last, limit)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class ReadOnlyLedger(ReadMethods):
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


def open_reads(database: Path | str) -> ReadOnlyLedger:
    """The reads of the ledger at ``database`` for a process that does not write it
    (blocking: call from a thread): a SQLite file on this machine, or a
    ``postgresql://`` URL."""
    return ReadOnlyLedger(database)

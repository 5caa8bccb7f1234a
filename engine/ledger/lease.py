"""The leader lease on a PostgreSQL ledger: one engine writes, a standby waits.

SQLite keeps ``flock`` (engine/proclock.py): one machine, one file. On PostgreSQL two
``crashd serve`` may point at one database, on two machines; exactly one may write.

- **The lease** is a session-level advisory lock (``pg_try_advisory_lock``) held on a
  connection of its own, which does nothing else. PostgreSQL drops it when that session
  ends, however the holder died (SIGKILL, power, network: the server notices the closed
  socket, or its TCP keepalive gives up), so a standby polling for it takes over within
  a poll interval of the server noticing.
- **The term** is a counter in the ``leader`` row, bumped by each new holder right after
  it takes the lock (and after it installed or migrated the schema, which only the
  holder does). Every ledger transaction starts with ``crashd_fence(term)``, which reads
  that row ``FOR SHARE``: a takeover's bump waits for a transaction already past its
  fence, and a deposed leader's next transaction (one that lost its lock without
  noticing: a partition, a stalled process) fails with ``LedgerFenced``, commits nothing,
  and its writer stops. The lock says who may start; the term makes a stale writer
  harmless.
- **Recovery runs once per takeover**: the new leader runs it under its own term, as one
  transaction, before it accepts any op (engine/ledger/recovery.py).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import psycopg
import trio

from .database import redacted
from .model import LedgerFenced, LedgerInUse
from .pgstore import connect, install_schema

log = logging.getLogger(__name__)

LEASE_KEY = 0x63726173_68640001
"""The advisory lock's key ("crashd" and 1): one lease per database."""
LEASE_APPLICATION = "crashd leader lease"
"""The lease session's application_name (pg_stat_activity shows leader and standbys)."""
POLL_S = 0.2
"""How often a standby tries the lock."""
GRACE_S = 3.0
"""How long a start without --standby waits for a lease that a dead process held."""
CHECK_S = 1.0
"""How often the holder checks its lease session is alive and its term current."""


def holder_name() -> str:
    return f"{socket.gethostname()} pid {os.getpid()}"


class Lease:
    """A held lease: its dedicated session and the term it was granted."""

    def __init__(self, url: str, conn: psycopg.Connection[Any], term: int, holder: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = conn
        self.term = term
        self.holder = holder

    @classmethod
    def try_take(
        cls, url: str, holder: str | None = None, conn: psycopg.Connection[Any] | None = None
    ) -> Lease | None:
        """Take the lease if it is free (blocking, brief): lock, schema, term bump.
        ``conn`` is a lease session to try on (a standby keeps one); it is closed when
        the lease is not granted only if this call opened it."""
        holder = holder or holder_name()
        mine = conn is None
        if conn is None:
            conn = connect(url, application=LEASE_APPLICATION)
        try:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEASE_KEY,)).fetchone()
            if not (row and row[0]):
                if mine:
                    conn.close()
                return None
            install_schema(conn)
            with conn.transaction():
                bumped = conn.execute(
                    "UPDATE leader SET term = term + 1, holder = %s, since = %s WHERE id = 1 "
                    "RETURNING term",
                    (holder, time.time_ns() // 1_000_000),
                ).fetchone()
        except BaseException:
            conn.close()
            raise
        assert bumped is not None
        log.info("leader lease taken on %s: term %d (%s)", redacted(url), bumped[0], holder)
        return cls(url, conn, int(bumped[0]), holder)

    @classmethod
    def take(cls, url: str, grace_s: float = GRACE_S) -> Lease:
        """The lease, or ``LedgerInUse`` naming its holder if it stays taken for
        ``grace_s`` (a restart after a crash may find the dead process's session still
        ending on the server)."""
        deadline = time.monotonic() + grace_s
        lease = cls.try_take(url)
        while lease is None and time.monotonic() < deadline:
            time.sleep(POLL_S)
            lease = cls.try_take(url)
        if lease is None:
            raise LedgerInUse(
                f"another crashd ({current_holder(url)}) holds the leader lease on "
                f"{redacted(url)}; start it with --standby to wait and take over"
            )
        return lease

    def check(self) -> None:
        """Raise ``LedgerFenced`` if the lease session is gone or a newer term exists."""
        conn = self._conn
        if conn is None:
            raise LedgerFenced("the leader lease was released")
        try:
            row = conn.execute("SELECT term, holder FROM leader WHERE id = 1").fetchone()
        except psycopg.Error as exc:
            raise LedgerFenced(f"the leader lease session is lost: {exc}".strip()) from None
        if row is None or int(row[0]) != self.term:
            raise LedgerFenced(
                f"deposed: this engine holds term {self.term}, the ledger is at term "
                f"{row[0] if row else '?'} ({row[1] if row else '?'})"
            )

    def release(self) -> None:
        """End the lease session (the lock goes with it). The term stays: the next
        holder bumps it."""
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    async def keep(self, interval_s: float = CHECK_S) -> None:
        """Check the lease every ``interval_s`` until cancelled; raise
        ``LedgerFenced`` when it is lost (the caller's nursery then stops the engine)."""
        while True:
            await trio.sleep(interval_s)
            await trio.to_thread.run_sync(self.check)


def current_holder(url: str) -> str:
    """Who holds the lease, as the leader row says (for messages)."""
    try:
        conn = connect(url, application="crashd lease query")
    except Exception:
        return "?"
    try:
        row = conn.execute("SELECT holder, term FROM leader WHERE id = 1").fetchone()
    except psycopg.Error:
        return "?"
    finally:
        conn.close()
    return "?" if row is None else f"{row[0]}, term {row[1]}"


async def wait_for_lease(
    url: str,
    *,
    poll_s: float = POLL_S,
    on_wait: Callable[[str], None] | None = None,
) -> Lease:
    """Hot standby: wait until the lease is free, then take it, trying every
    ``poll_s`` on one session of its own (kept open while it waits, so it shows in
    pg_stat_activity as a lease session). Cancellable between polls. ``on_wait`` is
    told once whom it waits for."""
    told = granted = False
    conn = await trio.to_thread.run_sync(partial(connect, url, application=LEASE_APPLICATION))
    try:
        while True:
            lease = await trio.to_thread.run_sync(Lease.try_take, url, None, conn)
            if lease is not None:
                granted = True
                return lease
            if not told:
                told = True
                holder = await trio.to_thread.run_sync(current_holder, url)
                log.info("standby: %s holds the leader lease on %s; waiting", holder, redacted(url))
                if on_wait is not None:
                    on_wait(holder)
            await trio.sleep(poll_s)
    finally:
        if not granted:  # a granted lease keeps this session: it holds the lock
            conn.close()

"""``python -m bench ledger``: what durable, idempotent transfers cost, and what group
commit buys.

For ``synchronous`` FULL and NORMAL, for one transaction per op (``max_group=1``)
versus group commit, with 1, 10, 100 and 1,000 concurrent callers, each caller posts
PSP deposits (one transfer, one idempotency record, two balance updates) as fast as
its acknowledgements come back, each with a random idempotency id (a uuid4, as
clients choose them), to players who have accounts already (one untimed deposit each
first, as on a running operator; with the collector tuned as the server tunes it).
Reported: transfers/s, acknowledgement latency p50/p99
(submit → durable answer) and commit latency p50/p99 (one group's flush + COMMIT on the
writer thread), mean group size. The limits it is compared with: raw ``sqlite3``
``executemany`` inserts of transfer-shaped rows, committed in batches, on the same disk;
and SQLite alone writing a deposit's rows into the ledger's own schema (ops row and its
key index, transfer, two balances), with ids in order and random.

Also reported: the writer thread's CPU per op and the whole process's CPU per op, and
a run whose store answers without SQLite (the callers' side alone: harness loop, the
ledger's queue, Trio's wake-ups), so the ledger's own cost is not confused with the
harness's.

Options: ``--seconds S`` per configuration (default 2.0), ``--callers 1,10,100,1000``,
``--sync FULL,NORMAL``, ``--quick`` (0.3 s, fewer configurations), ``--repeat N``;
``--growth OPS`` instead measures the store alone while the ledger grows to OPS ops.
``--postgres`` adds raw PostgreSQL as a peer: ``pgbench`` posting the same deposit
(ops row with a random key into a unique index, transfer row, two balance updates, one
transaction each) with 100 clients into a throwaway cluster on a Unix socket, when the
PostgreSQL server binaries are installed (skipped with a line saying why otherwise).

``--backend postgresql`` measures the same ledger on PostgreSQL instead (a throwaway
cluster on a Unix socket, fsync on, ``synchronous_commit=on`` for FULL, or
``--postgres-url``): the four group-flush strategies side by side (COPY, unnest arrays,
executemany, one pipeline), then group commit with 1, 10, 100 and 1,000 callers
(with the WAL bytes each deposit wrote), with the SQLite figure at 1,000 callers from
the same run as its peer. ``--growth OPS
--backend postgresql`` grows a PostgreSQL ledger (size: ``pg_database_size``).

Correctness, checked on every run: the ledger's audit after each configuration (the
sum of balances is zero, every balance equals its transfers: money conserved), a
redelivered deposit (the same id posted by 20 callers at once) posts one transfer and
answers each the same, and a settled round replayed settles nothing twice.
"""

from __future__ import annotations

import argparse
import math
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit, urlunsplit

import trio

from bench.suite import Context, Progress, Row, Skip, clamp, ratio
from crashd.engine.gctune import restore_gc, tune_gc
from crashd.engine.ledger import keyindex, open_ledger
from crashd.engine.ledger.database import redacted
from crashd.engine.ledger.model import Posted, RoundSettled
from crashd.engine.ledger.ops import BetConfirm, BetReserve, PspDeposit, RoundSettle, RoundStart
from crashd.engine.ledger.schema import key_hash
from crashd.engine.ledger.store import Store, Synchronous, audit

if TYPE_CHECKING:  # psycopg is imported only where PostgreSQL is measured
    from crashd.engine.ledger.lease import Lease
    from crashd.engine.ledger.pgstore import PgStore

NAME = "ledger"
USERS = 1000
WARM_GROUPS = 2
"""Commits before the timed part of a run: a fresh ledger's first groups fill its
caches (accounts, prepared statements, a new server session's catalog caches) and
take 2-4x a later one's time, measured; a run of 50-100 groups must not have its
p99 set by its start-up."""
T_LIMITS = "Ledger: the limits beneath it (SQLite, the store alone, PostgreSQL)"
T_GROUP = "Ledger: durable PSP deposits, group commit against one transaction per op"
T_BULK = "Ledger: a crashed round settled in one op"
T_GROWTH = "Ledger: the store alone while the ledger grows"
PG_CLIENTS = 100


@dataclass
class Run:
    mode: str
    sync: str
    callers: int
    transfers: int
    seconds: float
    ack_ms: list[float]
    commit_ms: list[float]
    groups: int
    writer_cpu_s: float = 0.0
    """CPU time of the writer thread inside ``apply_group`` (plan + SQLite + COMMIT)."""
    process_cpu_s: float = 0.0
    """CPU time of the whole process (both cores' worth: callers, Trio, writer)."""
    warm_transfers: int = 0
    """Deposits posted before the timed part (``warm_accounts``), not counted above."""
    wal_bytes: int | None = None
    """PostgreSQL: WAL the server wrote for the groups of the timed part."""
    group_ops: int = 0
    """Ops in the groups of the timed part (what ``wal_bytes`` is divided by)."""

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_ledger(
    path: Path | str, sync: str, group: bool, callers: int, seconds: float, null_store: bool = False
) -> Run:
    """``callers`` tasks posting deposits for ``seconds``, timed from the end of the
    ledger's first ``WARM_GROUPS`` commits (after ``warm_accounts``). ``null_store``:
    the store's group call is replaced by one that answers at once without SQLite,
    which leaves what the callers' side costs (the harness loop, ``psp_deposit``, the
    queue, Trio's wake-ups, the thread hop per group)."""
    ack: list[float] = []
    commits: list[float] = []
    writer_cpu = [0.0]
    count = 0
    acked = 0  # the warm-up's too
    warm = 0 if null_store else await warm_accounts(path, sync)
    # Set on the writer's thread when the warm-up's last group has committed.
    measuring = {"from": math.inf, "deadline": math.inf, "cpu": 0.0, "groups": 0, "ops": 0}
    lsn: list[str] = []
    async with open_ledger(
        path,
        synchronous=cast(Synchronous, sync),
        max_group=4096 if group else 1,
        sweep_interval_s=None,
        audit_on_open=False,
    ) as ledger:
        # Measure the writer's commit time by wrapping the store's group call.
        store = ledger._store
        inner = store.apply_group
        warm_groups = [0]
        if null_store:

            def inner(ops, now, *rest):  # type: ignore[no-untyped-def]
                return [Posted(op.op_id, 1, amount=op.amount, balance=0) for op in ops]

        def timed(ops, now, *rest):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            c0 = time.thread_time()
            out = inner(ops, now, *rest)
            if t0 >= measuring["from"]:
                writer_cpu[0] += time.thread_time() - c0
                commits.append((time.perf_counter() - t0) * 1000)
                measuring["groups"] += 1
                measuring["ops"] += len(ops)
                return out
            warm_groups[0] += 1
            if warm_groups[0] == WARM_GROUPS:
                pg = getattr(store, "pg", None)
                if pg is not None:  # between two groups: the next group's WAL is theirs
                    row = pg.raw.execute("SELECT pg_current_wal_lsn()::text").fetchone()
                    lsn.append(str(row[0]))
                measuring["cpu"] = time.process_time()
                measuring["from"] = time.perf_counter()
                measuring["deadline"] = measuring["from"] + seconds
            return out

        store.apply_group = timed  # type: ignore[method-assign]
        # The collector as the server runs it (api/server.py calls tune_gc() after
        # start-up): without it, a full collection walking the callers' frames lands
        # in a group's plan now and then (up to 31 ms each, measured).
        gc_settings = tune_gc()

        async def caller(c: int) -> None:
            nonlocal count, acked
            i = 0
            while time.perf_counter() < measuring["deadline"]:
                t0 = time.perf_counter()
                await ledger.psp_deposit(
                    uuid.uuid4().hex,
                    environment="production",
                    partner_id="bench",
                    user_id=f"u{(c * 7919 + i) % USERS}",
                    amount=100,
                )
                acked += 1
                if t0 >= measuring["from"]:
                    ack.append((time.perf_counter() - t0) * 1000)
                    count += 1
                i += 1

        try:
            async with trio.open_nursery() as nursery:
                for c in range(callers):
                    nursery.start_soon(caller, c)
        finally:
            restore_gc(gc_settings)
        elapsed = time.perf_counter() - measuring["from"]
        cpu = time.process_time() - measuring["cpu"]
        wal = wal_since(str(path), lsn[0]) if lsn else None
    return Run(
        "group" if group else "per-op",
        sync,
        callers,
        count,
        elapsed,
        ack,
        commits,
        int(measuring["groups"]),
        writer_cpu[0],
        cpu,
        warm + acked - count,
        wal,
        int(measuring["ops"]),
    )


async def warm_accounts(path: Path | str, sync: str) -> int:
    """One deposit to each of the ``USERS`` players, in one group, before the timed
    part: the players' accounts exist, as on a running operator. Otherwise the timed
    part's first group creates them all (twice its commit time, measured), and with
    50-100 groups in a run its thousand acknowledgements are more than 1% of them:
    the p99 would be that one start-up group's. Returns the deposits posted."""
    async with open_ledger(
        path,
        synchronous=cast(Synchronous, sync),
        max_group=USERS,
        sweep_interval_s=None,
        audit_on_open=False,
    ) as ledger:
        async with trio.open_nursery() as nursery:
            for u in range(USERS):
                nursery.start_soon(
                    partial(
                        ledger.psp_deposit,
                        uuid.uuid4().hex,
                        environment="production",
                        partner_id="bench",
                        user_id=f"u{u}",
                        amount=100,
                    )
                )
    return USERS


def raw_insert_rate(path: Path, sync: str, seconds: float, batch: int = 1000) -> float:
    """The limit: transfer-shaped rows through executemany, one COMMIT per batch."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, op INTEGER NOT NULL, "
        "debit INTEGER NOT NULL, credit INTEGER NOT NULL, amount INTEGER NOT NULL, "
        "kind TEXT NOT NULL, ts INTEGER NOT NULL)"
    )
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        rows = [(n + i, n + i, 1, 2 + i % 1000, 100, "deposit", 0) for i in range(batch)]
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO t (op, debit, credit, amount, kind, ts) VALUES (?,?,?,?,?,?)",
            [r[1:] for r in rows],
        )
        conn.execute("COMMIT")
        n += batch
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def _op_ids(n: int, count: int, random_ids: bool) -> list[str]:
    """Idempotency ids as clients choose them (random: each lands at its own place in
    the ops key index) or in insertion order (every insert at the index's right edge,
    touching a handful of pages per commit: flattering, and not what clients send)."""
    if random_ids:
        return [uuid.uuid4().hex for _ in range(count)]
    return [f"d{n + i:012d}" for i in range(count)]


def _deposits(n: int, count: int, random_ids: bool) -> list[PspDeposit]:
    """``count`` deposits of 100 spread over ``USERS`` players, ops ``n`` onwards."""
    return [
        PspDeposit(op_id, "production", "bench", f"u{(n + i) % USERS}", 100)
        for i, op_id in enumerate(_op_ids(n, count, random_ids))
    ]


def store_direct_rate(
    path: Path, sync: str, group: int, seconds: float, random_ids: bool = True
) -> tuple[float, float]:
    """The writer's own ceiling: plan + flush + COMMIT of ``group`` deposits per call,
    straight on the store, no Trio, no thread hop, no callers. Returns (transfers/s,
    CPU µs per op in ``apply_group``)."""
    store = Store(path, sync)  # type: ignore[arg-type]
    n = 0
    cpu = 0.0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        ops = _deposits(n, group, random_ids)
        c0 = time.thread_time()
        store.apply_group(ops, 0)
        cpu += time.thread_time() - c0
        n += group
    elapsed = time.perf_counter() - start
    store.close()
    return n / elapsed, cpu / n * 1e6


FRESH_SPAN = 200_000
"""The fresh ledger grown beside a growth run (``--fresh``) is started again from empty
each time it holds this many ops: two steps, so it stays a fresh ledger."""


def growth(
    path: Path,
    sync: str,
    total: int,
    step: int = 100_000,
    group: int = 1000,
    progress: Progress | None = None,
    *,
    fresh: bool = False,
) -> list[tuple[int, float, float]]:
    """The store alone (random ids, ``group`` deposits per commit) while the ledger
    grows to ``total`` ops: the rate of each ``step`` ops and the files' size (the
    ledger and its key index, with their WALs). A fresh file is the best case: the key
    index grows, and its lookups and sorted batches cost more as it does. Returns (ops
    held, deposits/s of the last step, MB) per step.

    ``fresh``: beside it, group for group, a second ledger started again from an empty
    file every ``FRESH_SPAN`` ops: the fresh figure of the moment, so grown ÷ fresh is
    free of the machine's drift between steps (see ``pg_growth``)."""
    store = Store(path, sync)  # type: ignore[arg-type]
    young_path = path.with_name(path.name + ".fresh")
    young = Store(young_path, sync) if fresh else None  # type: ignore[arg-type]
    held = 0
    n = 0
    block = young_block = 0.0
    thread_cpu = 0.0
    points = []
    try:
        while n < total:
            ops = _deposits(n, group, True)
            t0 = time.perf_counter()
            store.apply_group(ops, 0)
            block += time.perf_counter() - t0
            if young is not None:
                t0 = time.perf_counter()
                young.apply_group(ops, 0)
                young_block += time.perf_counter() - t0
                held += group
            n += group
            if n % step == 0 or n >= total:
                done = step if n % step == 0 else n % step
                size = path.stat().st_size / 1e6
                keys = _size(keyindex.index_path(path)) / 1e6
                line = (
                    f"ledger holds {n:>11,} ops: the last {done:,} at {done / block:,.0f} deposits/s "
                    f"({block / done * 1e6:.1f} µs each), file {size:,.0f} MB "
                    f"+ key index {keys:,.0f} MB"
                )
                if store._keys is not None:
                    # What the index's own thread spent meanwhile, on the other core.
                    now_cpu = store._keys.thread_cpu_s
                    line += f", its thread {(now_cpu - thread_cpu) / done * 1e6:.1f} µs CPU each"
                    thread_cpu = now_cpu
                if young is not None:
                    line += (
                        f"; fresh {done / young_block:,.0f}/s, ledger ÷ fresh "
                        f"{young_block / block:.3f}"
                    )
                print(line, flush=True)
                points.append((n, done / block, size + keys))
                if progress is not None:
                    progress.update(n, total, f"growth: {n:,} ops")
                block = young_block = 0.0
                if young is not None and held >= FRESH_SPAN and n < total:
                    young.close()
                    _remove_ledger(young_path)
                    young, held = Store(young_path, sync), 0  # type: ignore[arg-type]
    finally:
        store.close()
        if young is not None:
            young.close()
            _remove_ledger(young_path)
    return points


def _remove_ledger(path: Path) -> None:
    """A bench ledger's files: the database, its key index, their WALs and locks."""
    for f in path.parent.glob(path.name + "*"):
        f.unlink()


def _size(path: Path) -> int:
    """A file's bytes with its WAL's (0 if it does not exist)."""
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def ledger_rows_rate(
    path: Path, sync: str, seconds: float, random_ids: bool, batch: int = 1000
) -> float:
    """SQLite alone writing what one deposit writes in the ledger file — an ops row
    (its key's share of the key index, sorted batches in a file of its own, is not
    counted: a floor), a transfer row, two balance updates — into the ledger's own schema,
    ``batch`` deposits per commit, rows built in advance: the floor under any planner
    in front of this schema. Returns deposits/s."""
    store = Store(path, sync)  # type: ignore[arg-type]
    c = store.conn
    c.execute("BEGIN")
    c.execute(
        "INSERT INTO ops (id, key, key_hash, kind, fingerprint, ok, code, result, ts) "
        "VALUES (1, 'seed', ?, 'seed', x'00', 1, NULL, '{}', 0)",
        (key_hash("seed"),),
    )
    c.executemany(
        "INSERT INTO accounts VALUES (?, 'production', ?, ?, ?, 0, 0)",
        [(1, "psp", "", "")] + [(2 + u, "player", "bench", f"u{u}") for u in range(USERS)],
    )
    c.execute("COMMIT")
    fingerprint = repr(("psp_deposit", "production", "bench", "u0", 100)).encode()
    result = '{"type":"posted","op_id":"0123456789abcdef0123456789abcdef","seq":1,"amount":100,"balance":100}'
    n = 2
    elapsed = 0.0
    while elapsed < seconds:
        keys = [f"psp:production:{op_id}" for op_id in _op_ids(n, batch, random_ids)]
        ops = [
            (n + i, k, key_hash(k), "psp_deposit", fingerprint, 1, None, result, 0)
            for i, k in enumerate(keys)
        ]
        transfers = [
            (n + i, n + i, "production", 1, 2 + (n + i) % USERS, 100, "deposit", None, 0)
            for i in range(batch)
        ]
        balances = [(-n, 0, 1)] + [(n, 0, 2 + u) for u in range(min(batch, USERS))]
        t0 = time.perf_counter()
        c.execute("BEGIN IMMEDIATE")
        c.executemany(
            "INSERT INTO ops (id, key, key_hash, kind, fingerprint, ok, code, result, ts) "
            "VALUES (?,?,?,?,?,?,?,?,?)",
            ops,
        )
        c.executemany(
            "INSERT INTO transfers (id, op, environment, debit, credit, amount, kind, "
            "hold, ts) VALUES (?,?,?,?,?,?,?,?,?)",
            transfers,
        )
        c.executemany("UPDATE accounts SET posted=?, pending=? WHERE id=?", balances)
        c.execute("COMMIT")
        elapsed += time.perf_counter() - t0
        n += batch
    store.close()
    return (n - 2) / elapsed


def bulk_settle_rate(path: Path, sync: str, bets: int) -> tuple[float, float, int]:
    """A crashed round settled in one op: ``bets`` bets, half winning (2 transfers
    each), half losing (1). Returns (transfers/s, commit ms, transfers)."""
    store = Store(path, sync)  # type: ignore[arg-type]
    users = [f"s{i}" for i in range(bets)]
    store.apply_group([PspDeposit(f"sd{u}", "production", "bench", u, 10_000) for u in users], 0)
    store.apply_group([RoundStart("start", 1)], 0)
    store.apply_group(
        [BetReserve(f"r{u}", "production", "bench", u, f"h{u}", 100, 60_000) for u in users], 0
    )
    store.apply_group(
        [BetConfirm(f"c{u}", "production", "bench", u, f"h{u}", f"t{u}", None, 1) for u in users], 0
    )
    wins = tuple((f"t{u}", 200) for u in users[: bets // 2])
    start = time.perf_counter()
    [result] = store.apply_group([RoundSettle("settle", 1, 250, "a" * 64, wins)], 0)
    elapsed = time.perf_counter() - start
    store.close()
    assert isinstance(result, RoundSettled) and result.won + result.lost == bets, result
    transfers = 2 * (bets // 2) + (bets - bets // 2)
    return transfers / elapsed, elapsed * 1000, transfers


def redelivery_check(path: Path, sync: str) -> list[str]:
    """The same deposit id posted by 20 callers at once, then once more: one transfer,
    the same answer to all; the audit passes. Returns problems (empty: all good)."""

    async def check() -> list[Posted]:
        answers: list[Posted] = []
        async with open_ledger(
            path, synchronous=cast(Synchronous, sync), sweep_interval_s=None
        ) as ledger:

            async def post() -> None:
                answers.append(
                    await ledger.psp_deposit(
                        "redelivered",
                        environment="production",
                        partner_id="bench",
                        user_id="u1",
                        amount=100,
                    )
                )

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(post)
            await post()
        return answers

    answers = trio.run(check)
    problems = []
    # (The first answer says replayed=False, the others True: the rest must agree.)
    distinct = {(a.op_id, a.seq, a.amount, a.balance) for a in answers}
    if len(distinct) != 1:
        problems.append(f"a redelivered deposit got different answers: {distinct}")
    store = Store(path, "OFF")
    try:
        transfers = store.conn.execute("SELECT count(*) FROM transfers").fetchone()[0]
        report = audit(store.conn)
    finally:
        store.close()
    if transfers != 1:
        problems.append(f"a deposit redelivered 21 times posted {transfers} transfers")
    problems += report.problems
    return problems


def bulk_settle_check(path: Path, sync: str, bets: int) -> list[str]:
    """After ``bulk_settle_rate``: replaying the settle op settles nothing again (the
    same answer, no new transfer) and the audit passes."""
    store = Store(path, sync)  # type: ignore[arg-type]
    try:
        before = store.conn.execute("SELECT count(*) FROM transfers").fetchone()[0]
        users = [f"s{i}" for i in range(bets)]
        wins = tuple((f"t{u}", 200) for u in users[: bets // 2])
        [again] = store.apply_group([RoundSettle("settle", 1, 250, "a" * 64, wins)], 0)
        after = store.conn.execute("SELECT count(*) FROM transfers").fetchone()[0]
        report = audit(store.conn)
    finally:
        store.close()
    problems = list(report.problems)
    if after != before:
        problems.append(f"replaying a settled round posted {after - before} more transfers")
    if not (isinstance(again, RoundSettled) and again.won + again.lost == bets):
        problems.append(f"replaying a settled round answered {again!r}")
    return problems


# -- raw PostgreSQL, the peer ----------------------------------------------------------------

PG_SCHEMA = """
CREATE TABLE ops (id bigserial PRIMARY KEY, key text UNIQUE NOT NULL, kind text NOT NULL,
                  result text NOT NULL, ts bigint NOT NULL);
CREATE TABLE transfers (id bigserial PRIMARY KEY, op bigint NOT NULL, debit int NOT NULL,
                        credit int NOT NULL, amount bigint NOT NULL, kind text NOT NULL,
                        ts bigint NOT NULL);
CREATE TABLE accounts (id int PRIMARY KEY, posted bigint NOT NULL);
INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 1001) g;
"""
PG_SCRIPT = """\\set u random(2, 1001)
BEGIN;
INSERT INTO ops (key, kind, result, ts) VALUES (md5(random()::text || clock_timestamp()::text), 'psp_deposit', '{"type":"posted"}', 0);
INSERT INTO transfers (op, debit, credit, amount, kind, ts) VALUES (currval('ops_id_seq'), 1, :u, 100, 'deposit', 0);
UPDATE accounts SET posted = posted - 100 WHERE id = 1;
UPDATE accounts SET posted = posted + 100 WHERE id = :u;
END;
"""


def _pg_bindir() -> Path | None:
    config = shutil.which("pg_config")
    candidates = []
    if config:
        out = subprocess.run([config, "--bindir"], capture_output=True, text=True).stdout.strip()
        candidates.append(Path(out))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists() and (d / "pgbench").exists():
            return d
    return None


def cluster_home(prefix: str) -> Path:
    """A new directory for a throwaway cluster, which its owner can reach. As root the
    cluster runs as the postgres user, who cannot enter a checkout inside another
    user's 0700 directory (CI clones into a ``mktemp -d``): so not under bench/out but a
    directory of its own in /var/tmp (world-traversable, and on disk where /tmp may be
    a tmpfs that makes fsync free), or the system temp dir. The caller removes it."""
    parent = Path("/var/tmp")
    if not (parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)):
        parent = Path(tempfile.gettempdir())
    home = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    home.chmod(0o755)
    return home


def postgres_rates(
    syncs: list[str], seconds: float, clients: int = PG_CLIENTS
) -> dict[str, tuple[float, float, list[str]]] | str:
    """pgbench posting deposits into a throwaway cluster (Unix socket only, no TCP) in a
    ``cluster_home`` of its own, removed afterwards: per synchronous level (FULL:
    ``synchronous_commit=on``, NORMAL: ``off``, fsync on in both), (transactions/s,
    mean latency ms, problems). Or why it cannot run."""
    bindir = _pg_bindir()
    if bindir is None:
        return "PostgreSQL server binaries (initdb, pg_ctl, pgbench) not found"
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as the postgres user
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and no `postgres` user to run a cluster as"
        runuser = shutil.which("runuser")
        if runuser is None:
            return "running as root and no `runuser` to drop to the postgres user"
        prefix = [runuser, "-u", "postgres", "--"]
    home = cluster_home("crashd-pgbench-")
    base = home / "pg"
    base.mkdir()
    data = base / "data"
    if prefix:
        shutil.chown(base, "postgres")
    try:
        return _pgbench_rates(bindir, prefix, base, data, syncs, seconds, clients)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _pgbench_rates(
    bindir: Path,
    prefix: list[str],
    base: Path,
    data: Path,
    syncs: list[str],
    seconds: float,
    clients: int,
) -> dict[str, tuple[float, float, list[str]]] | str:
    """``postgres_rates`` in the cluster directory ``base`` (data in ``data``)."""

    def sh(*cmd: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *cmd], capture_output=True, text=True, timeout=timeout, cwd=base
        )

    out = sh(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "bench", "--no-sync")
    if out.returncode != 0:
        return f"initdb failed: {out.stderr.strip()[-300:]}"
    results: dict[str, tuple[float, float, list[str]]] = {}
    try:
        options = f"-c listen_addresses='' -k {base} -c max_connections={clients + 20} -c fsync=on"
        out = sh(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(base / "log"),
            "-w",
            "start",
        )
        if out.returncode != 0:
            return f"pg_ctl start failed: {out.stderr.strip()[-300:]}"
        psql = [str(bindir / "psql"), "-h", str(base), "-U", "bench", "-d", "postgres", "-qAt"]
        (base / "deposit.sql").write_text(PG_SCRIPT)
        for sync in syncs:
            commit = "on" if sync == "FULL" else "off"
            sh(*psql, "-c", "DROP TABLE IF EXISTS ops, transfers, accounts")
            out = sh(*psql, "-c", PG_SCHEMA)
            if out.returncode != 0:
                return f"creating the schema failed: {out.stderr.strip()[-300:]}"
            sh(*psql, "-c", f"ALTER SYSTEM SET synchronous_commit = {commit}")
            sh(*psql, "-c", "SELECT pg_reload_conf()")
            out = sh(
                str(bindir / "pgbench"),
                "-h",
                str(base),
                "-U",
                "bench",
                "-n",
                "-f",
                str(base / "deposit.sql"),
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(max(1, round(seconds))),
                "postgres",
                timeout=seconds + 120,
            )
            tps = re.search(r"tps = ([\d.]+) \(without initial", out.stdout)
            latency = re.search(r"latency average = ([\d.]+) ms", out.stdout)
            if out.returncode != 0 or tps is None:
                return f"pgbench failed: {(out.stderr or out.stdout).strip()[-300:]}"
            check = (
                sh(
                    *psql,
                    "-c",
                    "SELECT (SELECT sum(posted) FROM accounts), (SELECT count(*) FROM ops), "
                    "(SELECT count(*) FROM transfers)",
                )
                .stdout.strip()
                .split("|")
            )
            problems = []
            if len(check) != 3 or check[0] != "0" or check[1] != check[2]:
                problems.append(f"PostgreSQL peer: balances/ops/transfers {check}")
            results[sync] = (
                float(tps[1]),
                float(latency[1]) if latency else float("nan"),
                problems,
            )
    finally:
        sh(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop")
    return results


# -- the command and the suite's entry ---------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench ledger",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--callers", default="1,10,100,1000")
    p.add_argument("--sync", default="FULL,NORMAL")
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--growth",
        type=int,
        metavar="OPS",
        help="instead of the table: the store alone (random ids, FULL) while the "
        "ledger grows to OPS ops, rate per 100,000",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the table this many times (the VM is shared: compare runs)",
    )
    p.add_argument(
        "--postgres", action="store_true", help="also raw PostgreSQL via pgbench, if installed"
    )
    p.add_argument(
        "--backend",
        choices=("sqlite", "postgresql"),
        default="sqlite",
        help="the ledger's backend (postgresql: a throwaway cluster unless --postgres-url)",
    )
    p.add_argument(
        "--postgres-url",
        metavar="URL",
        help="a server to create the bench's databases on, instead of a throwaway cluster",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help=f"with --growth: beside it, group for group, a fresh ledger (started again "
        f"every {FRESH_SPAN:,} ops): ledger ÷ fresh is free of the machine's drift",
    )
    p.add_argument(
        "--floor",
        action="store_true",
        help="with --growth on postgresql: grow a ledger without the key index beside it, "
        "group for group (the floor; their ratio is the key index's cost)",
    )
    p.add_argument(
        "--then-growth",
        type=int,
        default=0,
        metavar="OPS",
        help="after the table, also the growth measurement up to OPS ops",
    )
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.floor and (args.backend != "postgresql" or not args.growth):
        print("ledger: --floor is a PostgreSQL growth run's (--growth OPS --backend postgresql)")
        return 2
    if args.growth:
        out = Path(__file__).resolve().parent / "out"
        out.mkdir(exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="ledger-", dir=out))
        sync = args.sync.split(",")[0].strip().upper()
        try:
            if args.backend == "postgresql":
                with postgres_server(args.postgres_url) as server:
                    if isinstance(server, str) and not server.startswith("postgresql://"):
                        print(f"ledger growth: no PostgreSQL: {server}")
                        return 1
                    beside = [
                        what
                        for what, on in (
                            (
                                f"a fresh ledger (started again every {FRESH_SPAN:,} ops)",
                                args.fresh,
                            ),
                            ("the floor (no key index)", args.floor),
                        )
                        if on
                    ]
                    print(
                        f"ledger growth on PostgreSQL: store alone, random ids, 1000 deposits "
                        f"per commit, on {redacted(server)}"
                        + ("; beside it, group for group: " + ", ".join(beside) if beside else "")
                    )
                    pg_growth(server, sync, args.growth, floor=args.floor, fresh=args.fresh)
            else:
                print(
                    f"ledger growth: store alone, random ids, 1000 deposits per commit, db in {tmp}"
                )
                growth(tmp / "growth.sqlite3", sync, args.growth, fresh=args.fresh)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    skips: list[Skip] = []
    if args.backend == "postgresql":
        rows = measure_postgres(args, None, skips)
        for s in skips:
            print(f"ledger: skipped {s.what}: {s.why}")
        return 0 if rows and all(all(r.checks.values()) for r in rows) else 1
    rows = measure(args, None, skips)
    for s in skips:
        print(f"ledger: skipped {s.what}: {s.why}")
    return 0 if all(all(r.checks.values()) for r in rows) else 1


def run(ctx: Context) -> list[Row]:
    seconds = 0.3
    if ctx.quick:
        argv = ["--quick", "--postgres", "--then-growth", "20000"]
    else:
        # 33 timed configurations per run (x2 for the PostgreSQL and growth parts, about).
        seconds = clamp((ctx.seconds * 0.7) / 40, 0.3, 2.0)
        grow = int(clamp(ctx.seconds * 0.2 * 20_000, 100_000, 2_000_000) // 100_000 * 100_000)
        argv = ["--seconds", f"{seconds:.2f}", "--postgres", "--then-growth", str(grow)]
    # The same ledger on PostgreSQL (issue 18's backend) beside it, when the server
    # binaries are here: its flush strategies and group commit up to 1,000 callers.
    pg_argv = ["--quick"] if ctx.quick else ["--seconds", f"{seconds:.2f}"]
    pg_argv += ["--backend", "postgresql"]
    ctx.note("equivalent: python -m bench ledger " + " ".join(argv))
    ctx.note("and: python -m bench ledger " + " ".join(pg_argv))
    skips: list[Skip] = []
    progress = ctx.progress
    rows = measure(parser().parse_args(argv), progress.part(0, 0.85) if progress else None, skips)
    rows += measure_postgres(
        parser().parse_args(pg_argv), progress.part(0.85, 1) if progress else None, skips
    )
    for s in skips:
        ctx.skip(s.what, s.why)
    return rows


def measure(args: argparse.Namespace, progress: Progress | None, skips: list[Skip]) -> list[Row]:
    """The whole table, printed as it runs; returned as rows."""
    repeat = max(1, args.repeat)
    seconds = 0.3 if args.quick else args.seconds
    callers = [int(c) for c in args.callers.split(",")]
    syncs = [s.strip().upper() for s in args.sync.split(",")]
    if args.quick:
        callers = [1, 100]
    # What the bar counts: timed configurations.
    total = len(syncs) * (1 + 2 + 4 + 2 * len(callers) * repeat + 1) + 2 + (args.postgres * 2)
    done = [0]

    # The table is the first 80% of the bar when the growth part follows.
    table_part = progress.part(0, 0.8 if args.then_growth else 1) if progress else None

    def step(what: str) -> None:
        if table_part is not None:
            table_part.update(done[0], total, what)
        done[0] += 1

    rows: list[Row] = []
    # Same disk as the checkout: bench/out/ (ignored by git).
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ledger-", dir=out))
    print(f"ledger bench: {os.cpu_count()} cpus, {seconds:.1f} s per configuration, db in {tmp}")
    print("each op = 1 PSP deposit: 1 transfer, 1 idempotency record, 2 balance updates\n")
    try:
        limits = {}
        for sync in syncs:
            step(f"raw sqlite3 {sync}")
            limits[sync] = raw_insert_rate(tmp / f"raw-{sync}.sqlite3", sync, seconds)
            print(
                f"raw sqlite3 executemany, 1000 rows/commit, synchronous={sync}: "
                f"{limits[sync]:,.0f} rows/s"
            )
            rows.append(
                Row(
                    NAME,
                    T_LIMITS,
                    f"raw/{sync}",
                    f"raw sqlite3 executemany, 1000 rows/commit, {sync}",
                    {"rows_per_s": limits[sync]},
                    role="limit",
                    params={"sync": sync, "batch": 1000},
                )
            )
        schema_rate: dict[str, float] = {}
        for sync in syncs:
            for random_ids in (False, True):
                label = "random ids" if random_ids else "ids in order"
                step(f"SQLite alone {sync} {label}")
                rate = ledger_rows_rate(
                    tmp / f"rows-{sync}-{random_ids}.sqlite3", sync, seconds, random_ids
                )
                print(
                    f"SQLite alone, a deposit's rows in the ledger schema, 1000/commit, {label}, "
                    f"synchronous={sync}: {rate:,.0f} deposits/s ({1e6 / rate:.1f} µs each)"
                )
                if random_ids:
                    schema_rate[sync] = rate
                rows.append(
                    Row(
                        NAME,
                        T_LIMITS,
                        f"schema/{sync}/{'random' if random_ids else 'ordered'}",
                        f"SQLite alone, a deposit's rows in the ledger schema, {label}, {sync}",
                        {"deposits_per_s": rate, "us_per_op": 1e6 / rate},
                        {"× raw sqlite3": ratio(rate, limits[sync])},
                        role="limit",
                        params={"sync": sync, "random_ids": random_ids, "batch": 1000},
                        headline=random_ids and sync == syncs[0],
                        primary=["deposits_per_s"],
                    )
                )
        for sync in syncs:
            for random_ids in (False, True):
                label = "random ids" if random_ids else "ids in order"
                for g in (100, 1000):
                    step(f"store alone {sync} {g}/commit {label}")
                    rate, cpu_us = store_direct_rate(
                        tmp / f"direct-{sync}-{g}-{random_ids}.sqlite3",
                        sync,
                        g,
                        seconds,
                        random_ids,
                    )
                    print(
                        f"ledger store alone (plan+flush+commit, no Trio), {g} ops/commit, {label}, "
                        f"synchronous={sync}: {rate:,.0f} transfers/s ({rate / limits[sync]:.3f} of raw), "
                        f"{cpu_us:.1f} µs CPU/op"
                    )
                    rows.append(
                        Row(
                            NAME,
                            T_LIMITS,
                            f"store/{sync}/{g}/{'random' if random_ids else 'ordered'}",
                            f"the ledger's store alone (plan + flush + commit), {g} ops/commit, "
                            f"{label}, {sync}",
                            {"deposits_per_s": rate, "cpu_us_per_op": cpu_us},
                            {"× raw sqlite3": ratio(rate, limits[sync])},
                            params={"sync": sync, "random_ids": random_ids, "group": g},
                        )
                    )
        pg: dict[str, tuple[float, float, list[str]]] = {}
        if args.postgres:
            step("raw PostgreSQL (pgbench)")
            found = postgres_rates(syncs, max(1.0, seconds * 2))
            done[0] += 1
            if isinstance(found, str):
                skips.append(Skip(NAME, "the raw PostgreSQL peer", found))
                print(f"raw PostgreSQL peer skipped: {found}")
            else:
                pg = found
                for sync, (tps, latency, problems) in pg.items():
                    print(
                        f"raw PostgreSQL (pgbench, {PG_CLIENTS} clients, a deposit's rows, one "
                        f"transaction each, synchronous_commit={'on' if sync == 'FULL' else 'off'}): "
                        f"{tps:,.0f} deposits/s, mean latency {latency:.2f} ms"
                    )
                    rows.append(
                        Row(
                            NAME,
                            T_LIMITS,
                            f"postgres/{sync}",
                            f"raw PostgreSQL, pgbench, {PG_CLIENTS} clients, one transaction "
                            f"per deposit, synchronous_commit={'on' if sync == 'FULL' else 'off'}",
                            {"deposits_per_s": tps, "latency_mean_ms": latency},
                            role="peer",
                            params={"sync": sync, "clients": PG_CLIENTS},
                            checks={
                                "PostgreSQL peer: money conserved, one transfer per op": not problems
                            },
                            headline=sync == syncs[0],
                            primary=["deposits_per_s"],
                        )
                    )
        print()
        for n in (100, 1000):
            if n not in callers:
                continue
            step(f"callers' side alone, {n}")
            r = trio.run(run_ledger, tmp / f"null-{n}.sqlite3", "FULL", True, n, seconds, True)
            print(
                f"callers' side alone (store answers at once, no SQLite), {n} callers: "
                f"{r.rate:,.0f} ops/s, {r.process_cpu_s / max(1, r.transfers) * 1e6:.1f} µs "
                "CPU/op (harness loop + psp_deposit + queue + Trio wake-ups + thread hop)"
            )
            rows.append(
                Row(
                    NAME,
                    T_LIMITS,
                    f"callers/{n}",
                    f"the callers' side alone (a store answering at once), {n} callers",
                    {
                        "ops_per_s": r.rate,
                        "cpu_us_per_op": r.process_cpu_s / max(1, r.transfers) * 1e6,
                    },
                    params={"callers": n},
                )
            )
        print()
        header = (
            f"{'sync':<7}{'mode':<8}{'callers':>8}{'transfers/s':>13}{'of raw':>8}"
            f"{'ack p50':>9}{'ack p99':>9}{'commit p50':>11}{'commit p99':>11}{'group':>7}"
            f"{'writer':>9}{'total':>9}"
        )
        print(header)
        print("-" * len(header))
        best: dict[str, float] = {}
        for rep in range(repeat):
            for sync in syncs:
                for group in (False, True):
                    for n in callers:
                        mode = "group commit" if group else "one transaction per op"
                        step(f"{sync} {mode}, {n} callers")
                        db = tmp / f"l-{sync}-{group}-{n}-{rep}.sqlite3"
                        r = trio.run(run_ledger, db, sync, group, n, seconds)
                        mean_group = r.transfers / max(1, r.groups)
                        per_op = 1e6 / max(1, r.transfers)
                        print(
                            f"{sync:<7}{r.mode:<8}{n:>8}{r.rate:>13,.0f}"
                            f"{r.rate / limits[sync]:>8.3f}"
                            f"{pct(r.ack_ms, 0.5):>8.2f}m{pct(r.ack_ms, 0.99):>8.2f}m"
                            f"{pct(r.commit_ms, 0.5):>10.2f}m{pct(r.commit_ms, 0.99):>10.2f}m"
                            f"{mean_group:>7.0f}{r.writer_cpu_s * per_op:>8.1f}µ"
                            f"{r.process_cpu_s * per_op:>8.1f}µ",
                            flush=True,
                        )
                        if group and n >= 100:
                            best[sync] = max(best.get(sync, 0.0), r.rate)
                        # Sanity: the run left a consistent ledger.
                        store = Store(db, "OFF")
                        report = audit(store.conn)
                        transfers = store.conn.execute("SELECT count(*) FROM transfers").fetchone()[
                            0
                        ]
                        store.close()
                        assert report.ok, report.problems
                        db.unlink()
                        ratios = {
                            "× raw sqlite3": ratio(r.rate, limits[sync]),
                            "× SQLite alone": ratio(r.rate, schema_rate.get(sync, float("nan"))),
                        }
                        if sync in pg:
                            ratios["× PostgreSQL"] = ratio(r.rate, pg[sync][0])
                        rows.append(
                            Row(
                                NAME,
                                T_GROUP,
                                f"{sync}/{'group' if group else 'per-op'}/{n}"
                                + (f"/{rep}" if rep else ""),
                                f"{sync}, {mode}, {n} callers",
                                {
                                    "transfers_per_s": r.rate,
                                    "ack_p50_ms": pct(r.ack_ms, 0.5),
                                    "ack_p99_ms": pct(r.ack_ms, 0.99),
                                    "commit_p50_ms": pct(r.commit_ms, 0.5),
                                    "commit_p99_ms": pct(r.commit_ms, 0.99),
                                    "mean_group_n": mean_group,
                                    "writer_cpu_us_per_op": r.writer_cpu_s * per_op,
                                    "total_cpu_us_per_op": r.process_cpu_s * per_op,
                                },
                                ratios,
                                params={"sync": sync, "group": group, "callers": n, "repeat": rep},
                                checks={
                                    "audit: money conserved, balances = transfers": report.ok,
                                    "one transfer per acknowledged deposit": transfers
                                    == r.warm_transfers + r.transfers,
                                },
                                headline=rep == 0 and sync == syncs[0] and n == max(callers),
                                primary=[
                                    "transfers_per_s",
                                    "ack_p99_ms",
                                    "× SQLite alone",
                                    "× PostgreSQL",
                                ],
                                note="; ".join(report.problems[:3]),
                            )
                        )
        print()
        for sync, rate in best.items():
            print(
                f"best group commit with 100+ callers, synchronous={sync}: {rate:,.0f} "
                f"transfers/s = {rate / limits[sync]:.3f} of raw rows/s; target 50,000: "
                f"{'met' if rate >= 50_000 else f'{rate / 50_000:.0%} of it'}"
            )
        print()
        bets = 500 if args.quick else 5000
        for sync in syncs:
            step(f"bulk round_settle {sync}")
            rate, ms, n = bulk_settle_rate(tmp / f"bulk-{sync}.sqlite3", sync, bets)
            problems = bulk_settle_check(tmp / f"bulk-{sync}.sqlite3", sync, bets)
            print(
                f"bulk round_settle, {bets} bets in one op, synchronous={sync}: {n} transfers "
                f"in {ms:.1f} ms = {rate:,.0f} transfers/s"
            )
            rows.append(
                Row(
                    NAME,
                    T_BULK,
                    f"bulk/{sync}",
                    f"round_settle of {bets:,} bets in one op, {sync}",
                    {"transfers_per_s": rate, "commit_ms": ms, "transfers_n": n},
                    {"× raw sqlite3": ratio(rate, limits[sync])},
                    params={"sync": sync, "bets": bets},
                    checks={"a replayed settle settles nothing twice; audit passes": not problems},
                    note="; ".join(problems[:3]),
                )
            )
        step("redelivered deposit")
        problems = redelivery_check(tmp / "redelivery.sqlite3", syncs[0])
        print(
            "a deposit redelivered 21 times (20 at once): "
            + ("one transfer, one answer" if not problems else "; ".join(problems))
        )
        rows[-1].checks["a redelivered deposit posts one transfer, same answer"] = not problems
        print(
            "\n(m = milliseconds; 'of raw' = ledger transfers/s ÷ raw rows/s at the same"
            " synchronous level; group = mean ops per commit; writer = CPU µs per op of the"
            " writer thread in plan + flush + COMMIT; total = CPU µs per op of the whole"
            " process, callers and Trio included)"
        )
        if args.then_growth:
            print(f"\nledger growth: store alone, random ids, 1000 deposits per commit, {syncs[0]}")
            step_ops = max(1000, args.then_growth // 10 // 1000 * 1000)
            points = growth(
                tmp / "growth.sqlite3",
                syncs[0],
                args.then_growth,
                step=step_ops,
                progress=progress.part(0.8, 1) if progress else None,
            )
            for size, rate, mb in points:
                rows.append(
                    Row(
                        NAME,
                        T_GROWTH,
                        f"growth/{size}",
                        f"ledger holding {size:,} ops",
                        {"ops_n": size, "deposits_per_s": rate, "file_mb": mb},
                        params={"sync": syncs[0], "random_ids": True, "group": 1000},
                    )
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress is not None:
        progress.done()
    return rows


def plot(rows: list[Row], directory: Path) -> list[tuple[Path, str]]:
    from bench import plots

    return plots.ledger(rows, directory)


# -- PostgreSQL: the ledger's second backend --------------------------------------------------

T_PG_FLUSH = "Ledger on PostgreSQL: the group flush, four ways (the store alone)"
T_PG_GROUP = "Ledger on PostgreSQL: durable PSP deposits, group commit"
PG_SETTINGS = (
    "shared_buffers=1GB",
    "max_wal_size=4GB",
    "min_wal_size=1GB",
    "fsync=on",
    "synchronous_commit=on",
)
"""The throwaway cluster's settings, those docs/scale-out.md recommends: durable (fsync,
synchronous_commit on), a buffer pool for a grown ledger's indexes, checkpoints spaced
by WAL volume, and WAL segments kept for reuse (min_wal_size) so no commit waits for a
new segment to be created."""
PG_WARM_WAL_MB = 512
"""WAL segments the fresh cluster is given before it is measured (written once, then
recycled by a checkpoint), as a cluster that has run has them: at ~870 bytes of WAL
per deposit, 20,000 deposits/s fill a 16 MB segment every 0.9 s, and a commit that
crosses into a segment no checkpoint recycled first creates and zero-fills it (a
50-60 ms commit, measured: the published tail)."""
PG_FLUSH_MODES = ("copy", "unnest", "executemany", "pipeline")


@contextmanager
def postgres_server(url: str | None) -> Iterator[str]:
    """A server URL to create databases on: ``url``, or a throwaway cluster started with
    .ci/postgres in a ``cluster_home`` (stopped and removed afterwards); or, if none can
    be had, why (a string that is not a URL)."""
    if url:
        yield url
        return
    script = Path(__file__).resolve().parents[1] / ".ci" / "postgres"
    if _pg_bindir() is None:
        yield "PostgreSQL server binaries not found (apt-get install postgresql)"
        return
    home = cluster_home("crashd-bench-pg-")
    base = home / "pgcluster"
    try:
        out = subprocess.run(
            [str(script), "start", str(base), *PG_SETTINGS],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            yield f"could not start a cluster: {out.stderr.strip()[-300:]}"
            return
        try:
            url = out.stdout.strip()
            warm_wal(url, PG_WARM_WAL_MB)
            yield url
        finally:
            subprocess.run([str(script), "stop", str(base)], capture_output=True, timeout=60)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def warm_wal(server: str, megabytes: int) -> None:
    """Give a fresh cluster the WAL segments a running one has: switch through
    ``megabytes`` of new segments (a one-record message each, so each switch moves on),
    then a checkpoint recycles them all (kept: ``min_wal_size``) as the next ones."""
    import psycopg

    with psycopg.connect(server, autocommit=True) as admin:
        row = admin.execute("SHOW wal_segment_size").fetchone()
        size = row[0] if row else "16MB"
        mb = int(size.removesuffix("MB")) if size.endswith("MB") else 16
        for _ in range(max(1, megabytes // mb)):
            admin.execute("SELECT pg_logical_emit_message(false, 'crashd-bench', 'warm')")
            admin.execute("SELECT pg_switch_wal()")
        admin.execute("CHECKPOINT")


def fresh_database(server: str) -> str:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path="/" + name))


def drop_database(server: str, url: str) -> None:
    import psycopg

    name = urlsplit(url).path.lstrip("/")
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def pg_store(
    url: str, sync: str, flush: str = "copy", store_class: type[PgStore] | None = None
) -> tuple[PgStore, Lease]:
    """A PostgreSQL store on ``url`` (of ``store_class``, default ``PgStore``) under the
    leader lease it takes, and the lease."""
    from crashd.engine.ledger.lease import Lease
    from crashd.engine.ledger.pgstore import PgStore

    lease = Lease.take(url)
    cls = store_class or PgStore
    return cls(url, sync, term=lease.term, flush=flush), lease  # type: ignore[arg-type]


def pg_direct_rate(
    url: str, sync: str, flush: str, group: int, seconds: float
) -> tuple[float, float]:
    """The PostgreSQL store alone: plan + flush + COMMIT of ``group`` random-id
    deposits per call, no Trio. (transfers/s, Python CPU µs per op)."""
    store, lease = pg_store(url, sync, flush)
    n = 0
    cpu = 0.0
    # One group first: the accounts are created and cached, as in a running ledger.
    store.apply_group(_deposits(n, group, True), 0)
    n += group
    start = time.perf_counter()
    counted = 0
    while time.perf_counter() - start < seconds:
        ops = _deposits(n, group, True)
        c0 = time.thread_time()
        store.apply_group(ops, 0)
        cpu += time.thread_time() - c0
        n += group
        counted += group
    elapsed = time.perf_counter() - start
    store.close()
    lease.release()
    return counted / elapsed, cpu / max(1, counted) * 1e6


def wal_position(url: str) -> str:
    """The server's current WAL write position (an LSN)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    return str(row[0]) if row else "0/0"


def wal_since(url: str, lsn: str) -> int:
    """Bytes of WAL the server wrote since ``lsn``: the whole cluster's (the throwaway
    cluster holds the bench alone; on ``--postgres-url``, whatever else writes too)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", (lsn,))
        got = row.fetchone()
    return int(got[0]) if got else 0


def pg_check(url: str) -> tuple[bool, int, list[str]]:
    """(audit ok, transfers, problems) of the ledger at ``url``."""
    from crashd.engine.ledger.database import SNAPSHOT
    from crashd.engine.ledger.pgstore import PgConn, connect

    conn = PgConn(connect(url, application="crashd bench check"))
    try:
        report = audit(conn, SNAPSHOT)
        row = conn.execute("SELECT count(*) FROM transfers").fetchone()
        return report.ok, int(row[0]) if row else 0, list(report.problems)
    finally:
        conn.close()


def measure_postgres(
    args: argparse.Namespace, progress: Progress | None, skips: list[Skip]
) -> list[Row]:
    """The PostgreSQL rows, printed as they run."""
    seconds = 0.5 if args.quick else args.seconds
    callers = [1, 1000] if args.quick else [int(c) for c in args.callers.split(",")]
    sync = "FULL"
    rows: list[Row] = []
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ledger-pg-", dir=out))
    total = len(PG_FLUSH_MODES) + len(callers) + 1
    done = [0]

    def step(what: str) -> None:
        if progress is not None:
            progress.update(done[0], total, what)
        done[0] += 1

    try:
        with postgres_server(args.postgres_url) as server:
            if not server.startswith("postgresql://"):
                skips.append(Skip(NAME, "the ledger on PostgreSQL", server))
                print(f"ledger on PostgreSQL skipped: {server}")
                return rows
            print(
                f"ledger on PostgreSQL: {redacted(server)} (Unix socket; "
                f"{', '.join(PG_SETTINGS) if not args.postgres_url else 'its own settings'})"
            )
            print("each op = 1 PSP deposit with a random id, synchronous_commit=on\n")
            flush_rates: dict[str, float] = {}
            for mode in PG_FLUSH_MODES:
                step(f"PostgreSQL store alone, {mode}")
                url = fresh_database(server)
                try:
                    rate, cpu_us = pg_direct_rate(url, sync, mode, 1000, seconds)
                    ok, _, problems = pg_check(url)
                finally:
                    drop_database(server, url)
                flush_rates[mode] = rate
                print(
                    f"store alone, 1000 deposits per commit, flush by {mode:<11}: "
                    f"{rate:>9,.0f} transfers/s, {cpu_us:5.1f} µs Python CPU/op"
                )
                rows.append(
                    Row(
                        NAME,
                        T_PG_FLUSH,
                        f"pg-flush/{mode}",
                        f"PostgreSQL store alone (plan + flush + commit), 1000/commit, {mode}",
                        {"deposits_per_s": rate, "cpu_us_per_op": cpu_us},
                        params={"flush": mode, "group": 1000, "sync": sync},
                        checks={"audit: money conserved, balances = transfers": ok},
                        primary=["deposits_per_s"],
                        note="; ".join(problems[:3]),
                    )
                )
            best = max(flush_rates, key=flush_rates.__getitem__)
            print(f"fastest flush: {best} (the default is copy)\n")
            step("SQLite peer, 1000 callers")
            lite = trio.run(run_ledger, tmp / "peer.sqlite3", sync, True, max(callers), seconds)
            print(
                f"peer: SQLite, group commit, {max(callers)} callers, FULL: {lite.rate:,.0f} "
                f"transfers/s, ack p99 {pct(lite.ack_ms, 0.99):.1f} ms"
            )
            header = (
                f"{'callers':>8}{'transfers/s':>13}{'ack p50':>9}{'ack p99':>9}"
                f"{'commit p50':>11}{'commit p99':>11}{'group':>7}{'total':>9}{'WAL B':>8}"
            )
            print(header)
            print("-" * len(header))
            for n in callers:
                step(f"PostgreSQL group commit, {n} callers")
                url = fresh_database(server)
                try:
                    r = trio.run(run_ledger, url, sync, True, n, seconds)
                    wal_per_op = (r.wal_bytes or 0) / max(1, r.group_ops)
                    ok, transfers, problems = pg_check(url)
                finally:
                    drop_database(server, url)
                per_op = 1e6 / max(1, r.transfers)
                mean_group = r.transfers / max(1, r.groups)
                print(
                    f"{n:>8}{r.rate:>13,.0f}{pct(r.ack_ms, 0.5):>8.2f}m{pct(r.ack_ms, 0.99):>8.2f}m"
                    f"{pct(r.commit_ms, 0.5):>10.2f}m{pct(r.commit_ms, 0.99):>10.2f}m"
                    f"{mean_group:>7.0f}{r.process_cpu_s * per_op:>8.1f}µ{wal_per_op:>8,.0f}",
                    flush=True,
                )
                rows.append(
                    Row(
                        NAME,
                        T_PG_GROUP,
                        f"pg/{sync}/group/{n}",
                        f"PostgreSQL, synchronous_commit=on, group commit, {n} callers",
                        {
                            "transfers_per_s": r.rate,
                            "ack_p50_ms": pct(r.ack_ms, 0.5),
                            "ack_p99_ms": pct(r.ack_ms, 0.99),
                            "commit_p50_ms": pct(r.commit_ms, 0.5),
                            "commit_p99_ms": pct(r.commit_ms, 0.99),
                            "mean_group_n": mean_group,
                            "total_cpu_us_per_op": r.process_cpu_s * per_op,
                            "wal_bytes_per_op": wal_per_op,
                        },
                        {"× SQLite (same run)": ratio(r.rate, lite.rate)},
                        role="subject",
                        params={"sync": sync, "callers": n, "backend": "postgresql"},
                        checks={
                            "audit: money conserved, balances = transfers": ok,
                            "one transfer per acknowledged deposit": transfers
                            == r.warm_transfers + r.transfers,
                        },
                        headline=n == max(callers),
                        primary=["transfers_per_s", "ack_p99_ms", "× SQLite (same run)"],
                        note="; ".join(problems[:3]),
                    )
                )
            top = [r for r in rows if r.table == T_PG_GROUP][-1]  # the most callers
            rate, p99 = top.metrics["transfers_per_s"], top.metrics["ack_p99_ms"]
            n_top = callers[-1]  # the last row's
            print(
                f"\ntarget with {n_top} callers: >= 20,000 transfers/s and ack p99 "
                f"<= 50 ms: {rate:,.0f}/s ({rate / 20_000:.0%}), p99 {p99:.1f} ms "
                f"(closed loop: the mean ack is callers / rate = {n_top / rate * 1000:.1f} ms)"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if progress is not None:
        progress.done()
    return rows


def _wal_lsn(raw: Any) -> int:
    """The server's WAL insert position, in bytes."""
    row = raw.execute("SELECT pg_current_wal_insert_lsn() - '0/0'::pg_lsn").fetchone()
    return int(row[0])


@dataclass
class _Beside:
    """One ledger of a PostgreSQL growth run: its store, its lease, and the time and WAL
    of the groups applied to it since the last step."""

    name: str
    url: str
    store: Any
    lease: Any
    block: float = 0.0
    wal: int = 0
    held: int = 0

    def apply(self, ops: list[PspDeposit]) -> None:
        raw = self.store.pg.raw
        w0 = _wal_lsn(raw)
        t0 = time.perf_counter()
        self.store.apply_group(ops, 0)
        self.block += time.perf_counter() - t0
        self.wal += _wal_lsn(raw) - w0
        self.held += len(ops)

    def close(self) -> None:
        self.store.close()
        self.lease.release()


def pg_growth(
    server: str,
    sync: str,
    total: int,
    step: int = 100_000,
    group: int = 1000,
    *,
    floor: bool = False,
    fresh: bool = False,
) -> list[tuple[int, float, float]]:
    """``growth`` on PostgreSQL, on a new database of ``server``: the store alone while
    the ledger grows to ``total`` ops; (ops held, deposits/s of the last step, database
    MB) per step.

    Beside it, group for group, on the same server at the same moments (so the ratios
    are free of the machine's drift between steps, which on a shared VM is larger than
    what is measured):

    - ``fresh``: a second ledger, started again from empty every ``FRESH_SPAN`` ops:
      the fresh figure of the moment. grown ÷ fresh is the growth's cost.
    - ``floor``: a ledger with no key index at all, grown as far: the store without the
      ops' unique index on ``key_hash`` and without the planner's lookups by it. That is
      not a ledger (nothing keeps a key from being used twice), it is the floor: what
      the rest of a deposit costs at the same size. grown ÷ floor is the key index's
      cost."""
    grown = _pg_beside("ledger", server, sync)
    ledgers = [grown]
    if fresh:
        ledgers.append(_pg_beside("fresh", server, sync))
    if floor:
        ledgers.append(_pg_beside("floor", server, sync, key_index=False))
    n = 0
    points = []
    try:
        while n < total:
            ops = _deposits(n, group, True)
            for each in ledgers:
                each.apply(ops)
            n += group
            if n % step == 0 or n >= total:
                done = step if n % step == 0 else n % step
                raw = grown.store.pg.raw
                row = raw.execute("SELECT pg_database_size(current_database())").fetchone()
                mb = int(row[0]) / 1e6
                line = (
                    f"ledger holds {n:>11,} ops: the last {done:,} at "
                    f"{done / grown.block:,.0f} deposits/s ({grown.block / done * 1e6:.1f} µs "
                    f"each, {grown.wal / done:,.0f} B of WAL each), database {mb:,.0f} MB "
                    f"({mb * 1e6 / n:,.0f} bytes/op)"
                )
                for other in ledgers[1:]:
                    line += (
                        f"; {other.name} {done / other.block:,.0f}/s ({other.wal / done:,.0f} B "
                        f"of WAL each), ledger ÷ {other.name} {other.block / grown.block:.3f}"
                    )
                print(line, flush=True)
                points.append((n, done / grown.block, mb))
                for i, each in enumerate(ledgers):
                    each.block, each.wal = 0.0, 0
                    if each.name == "fresh" and each.held >= FRESH_SPAN and n < total:
                        each.close()
                        drop_database(server, each.url)
                        ledgers[i] = _pg_beside("fresh", server, sync)
    finally:
        for each in ledgers:
            each.close()
        # The ones beside it are scratch; the grown ledger stays for a look (the
        # throwaway server goes whole; on your own server, drop it when done).
        for each in ledgers[1:]:
            drop_database(server, each.url)
        print(f"the grown ledger: database {urlsplit(grown.url).path.lstrip('/')}", flush=True)
    return points


def _pg_beside(name: str, server: str, sync: str, *, key_index: bool = True) -> _Beside:
    """A new database on ``server`` and a store on it (``key_index=False``: the floor's,
    whose ops have no key index)."""
    from crashd.engine.ledger.pgstore import PgStore, connect, install_schema

    class NoKeyIndex(PgStore):
        def _ops_by_hash(self, hashes: Sequence[bytes]) -> Iterable[Any]:
            return ()  # every key is new (the bench's are random: they are)

    url = fresh_database(server)
    conn = connect(url)
    try:
        install_schema(conn)
        if not key_index:
            conn.execute("ALTER TABLE ops DROP CONSTRAINT ops_key_hash_key")
    finally:
        conn.close()
    store, lease = pg_store(url, sync, store_class=PgStore if key_index else NoKeyIndex)
    return _Beside(name, url, store, lease)

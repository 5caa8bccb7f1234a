"""``python -m bench ledger``: what durable, idempotent transfers cost, and what group
commit buys.

For ``synchronous`` FULL and NORMAL, for one transaction per op (``max_group=1``)
versus group commit, with 1, 10, 100 and 1,000 concurrent callers, each caller posts
PSP deposits (one transfer, one idempotency record, two balance updates) as fast as
its acknowledgements come back, each with a random idempotency id (a uuid4, as
clients choose them). Reported: transfers/s, acknowledgement latency p50/p99
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
``--sync FULL,NORMAL``, ``--quick`` (1 s, fewer configurations), ``--repeat N``;
``--growth OPS`` instead measures the store alone while the ledger grows to OPS ops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import trio

from crashd.engine.ledger import open_ledger
from crashd.engine.ledger.model import Posted, RoundSettled
from crashd.engine.ledger.ops import BetConfirm, BetReserve, PspDeposit, RoundSettle, RoundStart
from crashd.engine.ledger.store import Store, Synchronous, audit

USERS = 1000


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

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_ledger(
    path: Path, sync: str, group: bool, callers: int, seconds: float, null_store: bool = False
) -> Run:
    """``callers`` tasks posting deposits for ``seconds``. ``null_store``: the store's
    group call is replaced by one that answers at once without SQLite, which leaves
    what the callers' side costs (the harness loop, ``psp_deposit``, the queue, Trio's
    wake-ups, the thread hop per group)."""
    ack: list[float] = []
    commits: list[float] = []
    writer_cpu = [0.0]
    count = 0
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
        if null_store:

            def inner(ops, now):  # type: ignore[no-untyped-def]
                return [Posted(op.op_id, 1, amount=op.amount, balance=0) for op in ops]

        def timed(ops, now):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            c0 = time.thread_time()
            out = inner(ops, now)
            writer_cpu[0] += time.thread_time() - c0
            commits.append((time.perf_counter() - t0) * 1000)
            return out

        store.apply_group = timed  # type: ignore[method-assign]
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()

        async def caller(c: int) -> None:
            nonlocal count
            i = 0
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                await ledger.psp_deposit(
                    uuid.uuid4().hex,
                    environment="production",
                    partner_id="bench",
                    user_id=f"u{(c * 7919 + i) % USERS}",
                    amount=100,
                )
                ack.append((time.perf_counter() - t0) * 1000)
                count += 1
                i += 1

        cpu0 = time.process_time()
        async with trio.open_nursery() as nursery:
            for c in range(callers):
                nursery.start_soon(caller, c)
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu0
        groups = ledger.statistics().groups
    return Run(
        "group" if group else "per-op",
        sync,
        callers,
        count,
        elapsed,
        ack,
        commits,
        groups,
        writer_cpu[0],
        cpu,
    )


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


def growth(path: Path, sync: str, total: int, step: int = 100_000, group: int = 1000) -> None:
    """The store alone (random ids, ``group`` deposits per commit) while the ledger
    grows to ``total`` ops: the rate of each ``step`` ops and the file's size. A fresh
    file is the best case: once the ops key index is larger than a commit's working
    set, every deposit dirties a page of its own."""
    store = Store(path, sync)  # type: ignore[arg-type]
    n = 0
    block = 0.0
    try:
        while n < total:
            ops = _deposits(n, group, True)
            t0 = time.perf_counter()
            store.apply_group(ops, 0)
            block += time.perf_counter() - t0
            n += group
            if n % step == 0 or n >= total:
                done = step if n % step == 0 else n % step
                print(
                    f"ledger holds {n:>11,} ops: the last {done:,} at {done / block:,.0f} deposits/s "
                    f"({block / done * 1e6:.1f} µs each), file {path.stat().st_size / 1e6:,.0f} MB",
                    flush=True,
                )
                block = 0.0
    finally:
        store.close()


def ledger_rows_rate(
    path: Path, sync: str, seconds: float, random_ids: bool, batch: int = 1000
) -> float:
    """SQLite alone writing what one deposit writes — an ops row (its key into the
    unique index), a transfer row, two balance updates — into the ledger's own schema,
    ``batch`` deposits per commit, rows built in advance: the floor under any planner
    in front of this schema. Returns deposits/s."""
    store = Store(path, sync)  # type: ignore[arg-type]
    c = store.conn
    c.execute("BEGIN")
    c.execute("INSERT INTO ops VALUES (1, 'seed', 'seed', x'00', 1, NULL, '{}', 0)")
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
        ops = [
            (n + i, f"psp:production:{op_id}", "psp_deposit", fingerprint, 1, None, result, 0)
            for i, op_id in enumerate(_op_ids(n, batch, random_ids))
        ]
        transfers = [
            (n + i, n + i, "production", 1, 2 + (n + i) % USERS, 100, "deposit", None, 0)
            for i in range(batch)
        ]
        balances = [(-n, 0, 1)] + [(n, 0, 2 + u) for u in range(min(batch, USERS))]
        t0 = time.perf_counter()
        c.execute("BEGIN IMMEDIATE")
        c.executemany(
            "INSERT INTO ops (id, key, kind, fingerprint, ok, code, result, ts) "
            "VALUES (?,?,?,?,?,?,?,?)",
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


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench ledger")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--callers", default="1,10,100,1000")
    parser.add_argument("--sync", default="FULL,NORMAL")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--growth",
        type=int,
        metavar="OPS",
        help="instead of the table: the store alone (random ids, FULL) while the "
        "ledger grows to OPS ops, rate per 100,000",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run the table this many times (the VM is shared: compare runs)",
    )
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat)
    seconds = 1.0 if args.quick else args.seconds
    callers = [int(c) for c in args.callers.split(",")]
    syncs = [s.strip().upper() for s in args.sync.split(",")]
    if args.quick:
        callers = [1, 100]
    # Same disk as the checkout: bench/out/ (ignored by git).
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ledger-", dir=out))
    if args.growth:
        try:
            print(f"ledger growth: store alone, random ids, 1000 deposits per commit, db in {tmp}")
            growth(tmp / "growth.sqlite3", syncs[0], args.growth)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return 0
    print(f"ledger bench: {os.cpu_count()} cpus, {seconds:.1f} s per configuration, db in {tmp}")
    print("each op = 1 PSP deposit: 1 transfer, 1 idempotency record, 2 balance updates\n")
    try:
        limits = {}
        for sync in syncs:
            limits[sync] = raw_insert_rate(tmp / f"raw-{sync}.sqlite3", sync, seconds)
            print(
                f"raw sqlite3 executemany, 1000 rows/commit, synchronous={sync}: "
                f"{limits[sync]:,.0f} rows/s"
            )
        for sync in syncs:
            for random_ids in (False, True):
                label = "random ids" if random_ids else "ids in order"
                rate = ledger_rows_rate(
                    tmp / f"rows-{sync}-{random_ids}.sqlite3", sync, seconds, random_ids
                )
                print(
                    f"SQLite alone, a deposit's rows in the ledger schema, 1000/commit, {label}, "
                    f"synchronous={sync}: {rate:,.0f} deposits/s ({1e6 / rate:.1f} µs each)"
                )
        for sync in syncs:
            for random_ids in (False, True):
                label = "random ids" if random_ids else "ids in order"
                for g in (100, 1000):
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
        print()
        for n in (100, 1000):
            if n not in callers:
                continue
            r = trio.run(run_ledger, tmp / f"null-{n}.sqlite3", "FULL", True, n, seconds, True)
            print(
                f"callers' side alone (store answers at once, no SQLite), {n} callers: "
                f"{r.rate:,.0f} ops/s, {r.process_cpu_s / max(1, r.transfers) * 1e6:.1f} µs "
                "CPU/op (harness loop + psp_deposit + queue + Trio wake-ups + thread hop)"
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
                        store.close()
                        assert report.ok, report.problems
                        db.unlink()
        print()
        for sync, rate in best.items():
            print(
                f"best group commit with 100+ callers, synchronous={sync}: {rate:,.0f} "
                f"transfers/s = {rate / limits[sync]:.3f} of raw rows/s; target 50,000: "
                f"{'met' if rate >= 50_000 else f'{rate / 50_000:.0%} of it'}"
            )
        print()
        for sync in syncs:
            rate, ms, n = bulk_settle_rate(tmp / f"bulk-{sync}.sqlite3", sync, 5000)
            print(
                f"bulk round_settle, 5000 bets in one op, synchronous={sync}: {n} transfers "
                f"in {ms:.1f} ms = {rate:,.0f} transfers/s"
            )
        print(
            "\n(m = milliseconds; 'of raw' = ledger transfers/s ÷ raw rows/s at the same"
            " synchronous level; group = mean ops per commit; writer = CPU µs per op of the"
            " writer thread in plan + flush + COMMIT; total = CPU µs per op of the whole"
            " process, callers and Trio included)"
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0

"""``python -m bench ledger``: what durable, idempotent transfers cost, and what group
commit buys.

For ``synchronous`` FULL and NORMAL, for one transaction per op (``max_group=1``)
versus group commit, with 1, 10, 100 and 1,000 concurrent callers, each caller posts
PSP deposits (one transfer, one idempotency record, two balance updates) as fast as
its acknowledgements come back. Reported: transfers/s, acknowledgement latency p50/p99
(submit → durable answer) and commit latency p50/p99 (one group's flush + COMMIT on the
writer thread), mean group size. The limit it is compared with: raw ``sqlite3``
``executemany`` inserts of transfer-shaped rows, committed in batches, on the same disk.

Options: ``--seconds S`` per configuration (default 2.0), ``--callers 1,10,100,1000``,
``--sync FULL,NORMAL``, ``--quick`` (1 s, fewer configurations).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from engine.ledger import open_ledger
from engine.ledger.model import RoundSettled
from engine.ledger.ops import BetConfirm, BetReserve, PspDeposit, RoundSettle, RoundStart
from engine.ledger.store import Store, audit

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

    @property
    def rate(self) -> float:
        return self.transfers / self.seconds


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_ledger(path: Path, sync: str, group: bool, callers: int, seconds: float) -> Run:
    ack: list[float] = []
    commits: list[float] = []
    count = 0
    async with open_ledger(path, synchronous=sync, max_group=4096 if group else 1,  # type: ignore[arg-type]
                           sweep_interval_s=None, audit_on_open=False) as ledger:
        # Measure the writer's commit time by wrapping the store's group call.
        store = ledger._store
        inner = store.apply_group

        def timed(ops, now):  # type: ignore[no-untyped-def]
            t0 = time.perf_counter()
            out = inner(ops, now)
            commits.append((time.perf_counter() - t0) * 1000)
            return out

        store.apply_group = timed  # type: ignore[method-assign]
        deadline = time.perf_counter() + seconds
        run_id = os.urandom(4).hex()
        start = time.perf_counter()

        async def caller(c: int) -> None:
            nonlocal count
            i = 0
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                await ledger.psp_deposit(f"{run_id}-{c}-{i}", environment="production",
                                         partner_id="bench", user_id=f"u{(c * 7919 + i) % USERS}",
                                         amount=100)
                ack.append((time.perf_counter() - t0) * 1000)
                count += 1
                i += 1

        async with trio.open_nursery() as nursery:
            for c in range(callers):
                nursery.start_soon(caller, c)
        elapsed = time.perf_counter() - start
        groups = ledger.statistics().groups
    return Run("group" if group else "per-op", sync, callers, count, elapsed, ack, commits, groups)


def raw_insert_rate(path: Path, sync: str, seconds: float, batch: int = 1000) -> float:
    """The limit: transfer-shaped rows through executemany, one COMMIT per batch."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={sync}")
    conn.execute("CREATE TABLE IF NOT EXISTS t (id INTEGER PRIMARY KEY, op INTEGER NOT NULL, "
                 "debit INTEGER NOT NULL, credit INTEGER NOT NULL, amount INTEGER NOT NULL, "
                 "kind TEXT NOT NULL, ts INTEGER NOT NULL)")
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        rows = [(n + i, n + i, 1, 2 + i % 1000, 100, "deposit", 0) for i in range(batch)]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (op, debit, credit, amount, kind, ts) VALUES (?,?,?,?,?,?)",
                         [r[1:] for r in rows])
        conn.execute("COMMIT")
        n += batch
    elapsed = time.perf_counter() - start
    conn.close()
    return n / elapsed


def store_direct_rate(path: Path, sync: str, group: int, seconds: float) -> float:
    """The writer's own ceiling: plan + flush + COMMIT of ``group`` deposits per call,
    straight on the store, no Trio, no thread hop, no callers."""
    store = Store(path, sync)  # type: ignore[arg-type]
    n = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        ops = [PspDeposit(f"d{n + i}", "production", "bench", f"u{(n + i) % USERS}", 100)
               for i in range(group)]
        store.apply_group(ops, 0)
        n += group
    elapsed = time.perf_counter() - start
    store.close()
    return n / elapsed


def bulk_settle_rate(path: Path, sync: str, bets: int) -> tuple[float, float, int]:
    """A crashed round settled in one op: ``bets`` bets, half winning (2 transfers
    each), half losing (1). Returns (transfers/s, commit ms, transfers)."""
    store = Store(path, sync)  # type: ignore[arg-type]
    users = [f"s{i}" for i in range(bets)]
    store.apply_group([PspDeposit(f"sd{u}", "production", "bench", u, 10_000) for u in users], 0)
    store.apply_group([RoundStart("start", 1)], 0)
    store.apply_group([BetReserve(f"r{u}", "production", "bench", u, f"h{u}", 100, 60_000)
                       for u in users], 0)
    store.apply_group([BetConfirm(f"c{u}", "production", "bench", u, f"h{u}", f"t{u}", None, 1)
                       for u in users], 0)
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
    args = parser.parse_args(argv)
    seconds = 1.0 if args.quick else args.seconds
    callers = [int(c) for c in args.callers.split(",")]
    syncs = [s.strip().upper() for s in args.sync.split(",")]
    if args.quick:
        callers = [1, 100]
    # Same disk as the checkout: bench/out/ (ignored by git).
    out = Path(__file__).resolve().parent / "out"
    out.mkdir(exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ledger-", dir=out))
    print(f"ledger bench: {os.cpu_count()} cpus, {seconds:.1f} s per configuration, db in {tmp}")
    print("each op = 1 PSP deposit: 1 transfer, 1 idempotency record, 2 balance updates\n")
    try:
        limits = {}
        for sync in syncs:
            limits[sync] = raw_insert_rate(tmp / f"raw-{sync}.sqlite3", sync, seconds)
            print(f"raw sqlite3 executemany, 1000 rows/commit, synchronous={sync}: "
                  f"{limits[sync]:,.0f} rows/s")
        for sync in syncs:
            for g in (100, 1000):
                rate = store_direct_rate(tmp / f"direct-{sync}-{g}.sqlite3", sync, g, seconds)
                print(f"ledger store alone (plan+flush+commit, no Trio), {g} ops/commit, "
                      f"synchronous={sync}: {rate:,.0f} transfers/s ({rate / limits[sync]:.2f} of raw)")
        print()
        header = (f"{'sync':<7}{'mode':<8}{'callers':>8}{'transfers/s':>13}{'of raw':>8}"
                  f"{'ack p50':>9}{'ack p99':>9}{'commit p50':>11}{'commit p99':>11}{'group':>7}")
        print(header)
        print("-" * len(header))
        for sync in syncs:
            for group in (False, True):
                for n in callers:
                    db = tmp / f"l-{sync}-{group}-{n}.sqlite3"
                    r = trio.run(run_ledger, db, sync, group, n, seconds)
                    mean_group = r.transfers / max(1, r.groups)
                    print(f"{sync:<7}{r.mode:<8}{n:>8}{r.rate:>13,.0f}{r.rate / limits[sync]:>8.2f}"
                          f"{pct(r.ack_ms, .5):>8.2f}m{pct(r.ack_ms, .99):>8.2f}m"
                          f"{pct(r.commit_ms, .5):>10.2f}m{pct(r.commit_ms, .99):>10.2f}m"
                          f"{mean_group:>7.0f}", flush=True)
                    # Sanity: the run left a consistent ledger.
                    store = Store(db, "OFF")
                    report = audit(store.conn)
                    store.close()
                    assert report.ok, report.problems
        print()
        for sync in syncs:
            rate, ms, n = bulk_settle_rate(tmp / f"bulk-{sync}.sqlite3", sync, 5000)
            print(f"bulk round_settle, 5000 bets in one op, synchronous={sync}: {n} transfers "
                  f"in {ms:.1f} ms = {rate:,.0f} transfers/s")
        print("\n(m = milliseconds; 'of raw' = ledger transfers/s ÷ raw rows/s at the same"
              " synchronous level; group = mean ops per commit)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0

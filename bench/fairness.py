"""``python -m bench fairness``: chain links/s and crash points/s beside raw SHA-256.

The limit is hashlib's SHA-256 of a 64-byte message called in a plain Python loop on the
same machine: a chain link is exactly one such call plus a hex encoding, so the ratio
shows what the chain code costs beyond the hash itself. Also reports the time and peak
memory of building a full chain (default 10,000,000 links) and the per-round cost of
serving a game hash from checkpoints.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time
import tracemalloc
from collections.abc import Callable

from crashd.engine.chainstore import new_seed
from crashd.engine.fairness import ChainReader, build_chain, crash_point


def _rate(fn: Callable[[int], None], n: int) -> float:
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        fn(n)
        best = max(best, n / (time.perf_counter() - started))
    return best


def raw_sha256(n: int) -> None:
    sha256 = hashlib.sha256
    msg = b"a" * 64
    for _ in range(n):
        sha256(msg).digest()


def chain_links(n: int) -> None:
    build_chain(new_seed(), n, interval=max(1, n))


def crash_points(n: int) -> None:
    h = hashlib.sha256(b"x").hexdigest()
    for _ in range(n):
        crash_point(h, "0000000000000000004d6ec16dafe9d8370958664c1dc422f452892264c59526")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fairness", description=__doc__)
    parser.add_argument("--n", type=int, default=500_000, help="operations per rate sample")
    parser.add_argument(
        "--chain-length", type=int, default=10_000_000, help="full chain to build (0 to skip)"
    )
    args = parser.parse_args(argv)

    limit = _rate(raw_sha256, args.n)
    links = _rate(chain_links, args.n)
    points = _rate(crash_points, args.n)
    print(f"{'what':<34}{'per second':>14}{'vs raw SHA-256':>16}")
    print(f"{'raw hashlib SHA-256 (64-byte msg)':<34}{limit:>14,.0f}{1.0:>16.2f}")
    print(f"{'chain links (hex encoding)':<34}{links:>14,.0f}{links / limit:>16.2f}")
    print(f"{'crash points (HMAC + float)':<34}{points:>14,.0f}{points / limit:>16.2f}")

    if args.chain_length:
        started = time.perf_counter()
        spec = build_chain(new_seed(), args.chain_length)
        elapsed = time.perf_counter() - started
        # Traced separately: tracemalloc slows the hot loop several-fold.
        traced_length = min(args.chain_length, 1_000_000)
        tracemalloc.start()
        build_chain(new_seed(), traced_length)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"\nbuild {args.chain_length:,} links: {elapsed:.1f} s "
            f"({args.chain_length / elapsed:,.0f} links/s); {len(spec.checkpoints):,} checkpoints "
            f"of 32 bytes kept; peak traced memory building {traced_length:,} links: "
            f"{peak / 2**10:.0f} KiB"
        )

        reader = ChainReader(spec)
        costs = []
        for game in range(1, 20_001):
            started = time.perf_counter()
            reader.game_hash(game)
            costs.append(time.perf_counter() - started)
        costs.sort()
        print(
            "serve games 1..20,000 in play order: "
            f"mean {statistics.fmean(costs) * 1e6:.1f} µs, p50 {costs[len(costs) // 2] * 1e6:.1f} µs, "
            f"max {costs[-1] * 1e3:.1f} ms (one segment of {spec.interval:,} links recomputed "
            "every interval games)"
        )
        cold = ChainReader(spec)
        started = time.perf_counter()
        cold.game_hash(args.chain_length // 2)
        print(
            f"cold lookup of a game in the middle of the chain: {(time.perf_counter() - started) * 1e3:.1f} ms"
        )
    return 0

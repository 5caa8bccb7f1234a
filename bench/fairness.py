"""``python -m bench fairness``: the cost of provable fairness and of verifiable
settlement, each beside the primitive it is built on, measured in the same run.

Three tables:

- *Operations per second*: chain links and crash points beside their limit, hashlib's
  SHA-256 of a 64-byte message in a plain Python loop (a chain link is exactly one such
  call plus a hex encoding, so the ratio is what the chain code costs beyond the hash);
  and the raw Ed25519 sign and verify rates of the ``cryptography`` package (a 32-byte
  message), the primitive every receipt, seal and transcript is signed with. Skipped
  with a line when the package is not installed (``pip install -e '.[bench]'``).
- *Building and serving a chain*: the time and peak traced memory of building a full
  chain (default 10,000,000 links) and the per-game cost of serving game hashes in play
  order from checkpoints.
- *Verifiable settlement* (docs/fairness.md), per second beside raw Ed25519 sign: what
  the notary does off the tick path, for a round of ``SETTLE_BETS`` bets played by the
  real sequencer with half of them cashed out by hand: a bet's signed receipt (build,
  sign, canonical text), the round's signed start seal (its record, the Merkle root of
  its bets, the signature) and its signed transcript (record, document, signature,
  hash), with the transcript's size in bytes of canonical JSON.

Checks: a tampered message does not verify; crash points are deterministic and at least
1.00x; revealed games verify against the terminating hash; the transcript built audits
clean (signature, seal, re-run). What the tick loop pays for all this (its lateness and
cash-out latency) is ``python -m bench tick``'s.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from bench.suite import Context, Progress, Row, clamp, ratio
from crashd.engine.chainstore import new_seed
from crashd.engine.fairness import ChainReader, build_chain, crash_point, verify_game

NAME = "fairness"
SALT = "0000000000000000004d6ec16dafe9d8370958664c1dc422f452892264c59526"
T_RATES = "Fairness: operations per second, beside the limit and the peer"
T_CHAIN = "Fairness: building and serving a chain"
T_SETTLE = "Fairness: verifiable settlement, per second beside raw Ed25519 sign"
SETTLE_BETS = 100
EPOCH = 1_767_225_600_000


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
        crash_point(h, SALT)


def ed25519() -> tuple[Callable[[int], None], Callable[[int], None], bool] | str:
    """(sign n times, verify n times, a signature checked) or why it cannot run."""
    try:
        module: Any = importlib.import_module("cryptography.hazmat.primitives.asymmetric.ed25519")
        exceptions: Any = importlib.import_module("cryptography.exceptions")
    except ImportError:
        return "the `cryptography` package is not installed (pip install -e '.[bench]')"
    key = module.Ed25519PrivateKey.generate()
    public = key.public_key()
    msg = hashlib.sha256(b"round").digest()
    signature = key.sign(msg)

    def sign(n: int) -> None:
        for _ in range(n):
            key.sign(msg)

    def verify(n: int) -> None:
        for _ in range(n):
            public.verify(signature, msg)

    try:
        public.verify(signature, msg)
        public.verify(signature, msg[::-1])
        checked = False  # a tampered message must not verify
    except exceptions.InvalidSignature:
        checked = True
    return sign, verify, checked


def settlement(bets: int) -> dict[str, Any]:
    """One round of ``bets`` bets played by the real sequencer and recorded: what the
    notary does per receipt, per seal and per transcript, as callables of ``n``."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from crashd.engine.round.config import RoundConfig
    from crashd.engine.round.events import RoundSettled
    from crashd.engine.round.sequencer import Sequencer
    from crashd.engine.settlement import transcript as T
    from crashd.engine.settlement.audit import audit
    from crashd.engine.settlement.canonical import canonical
    from crashd.engine.settlement.documents import Pseudonyms, Signer, bet_receipt, doc_hash
    from crashd.engine.settlement.recorder import Recorder, build_record

    spec = build_chain(hashlib.sha256(b"bench settlement").digest(), 4, interval=4)
    reader = ChainReader(spec)
    salt = next(f"s{i}" for i in range(10_000) if crash_point(reader.game_hash(1), f"s{i}") > 300)
    config = RoundConfig(betting_ms=1_000, pause_ms=300, max_bets_per_round=max(bets, 1))
    seq = Sequencer(config=config, games=reader.games(1), salt=salt, first_game=1)
    recorder = Recorder()
    signer = Signer(Ed25519PrivateKey.generate())
    pseudonyms = Pseudonyms(hashlib.sha256(b"bench pseudonyms").digest())
    recorder.observe(seq.start(0))
    for i in range(bets):
        user = ("acme", "sandbox", f"u{i}")
        recorder.observe(seq.place_bet(1 + i % 900, f"t{i}", user, 100 + i, 101 + i % 190))
    now = 1_000
    recorder.observe(seq.advance(now))
    for i in range(0, bets, 2):
        now += 37
        recorder.observe(seq.cash_out(now, f"t{i}"))
    settled = False
    while not settled:
        now += 100
        events = seq.advance(now)
        recorder.observe(events)
        settled = any(isinstance(e, RoundSettled) for e in events)
    events_of = recorder.take(1)
    assert events_of is not None
    rules = T.rules_of(config)

    def epoch(ms: int) -> int:
        return EPOCH + ms

    def record() -> Any:
        return build_record(1, events_of, epoch, pseudonyms.of)

    def receipt(n: int) -> None:
        player = pseudonyms.of(("acme", "sandbox", "u0"))
        for _ in range(n):
            canonical(signer.sign(bet_receipt(1, "t0", player, 100, 150, EPOCH + 1, queued=False)))

    def seal(n: int) -> None:
        for _ in range(n):
            r = record()
            canonical(signer.sign(r.seal()))
            canonical([b.leaf(1) for b in r.sealed])

    def transcript_of() -> dict[str, Any]:
        r = record()
        body = T.from_record(
            r,
            prev=None,
            environment="sandbox",
            fairness=T.fairness_of(
                r.game_hash, salt, r.crash_point, spec.terminating_hash.hex(), "hex"
            ),
            rules=rules,
            seal=signer.sign(r.seal()),
        )
        return signer.sign(body)

    def transcript(n: int) -> None:
        for _ in range(n):
            doc = transcript_of()
            doc_hash(doc)
            canonical(doc)

    doc = transcript_of()
    report = audit([doc], signer.keys(), terminating_hash=spec.terminating_hash.hex())
    return {
        "receipt": receipt,
        "seal": seal,
        "transcript": transcript,
        "bytes": len(canonical(doc)),
        "ok": report.ok and report.rerun == 1,
        "manual": sum(1 for e in doc["settlement"] if e.get("cashout") == "manual"),
    }


def measure(
    n: int, chain_length: int, serve_games: int, progress: Progress | None = None
) -> list[Row]:
    """Print the tables and return the rows."""
    step = progress.update if progress is not None else (lambda *a: None)
    parts = 5 if chain_length else 3
    step(0, parts, "raw SHA-256")
    limit = _rate(raw_sha256, n)
    step(1, parts, "chain links")
    links = _rate(chain_links, n)
    step(2, parts, "crash points")
    points = _rate(crash_points, n)
    peer = ed25519()
    signs = verifies = float("nan")
    ed_checked = True
    if not isinstance(peer, str):
        signs = _rate(peer[0], max(1, n // 20))
        verifies = _rate(peer[1], max(1, n // 20))
        ed_checked = peer[2]
    print(f"{'what':<34}{'per second':>14}{'vs raw SHA-256':>16}{'vs Ed25519 sign':>17}")
    table = [
        ("sha256", "raw hashlib SHA-256 (64-byte msg)", limit, "limit"),
        ("links", "chain links (hex encoding)", links, "subject"),
        ("crash_points", "crash points (HMAC + float)", points, "subject"),
    ]
    if isinstance(peer, str):
        print(f"(Ed25519 peer skipped: {peer})")
    else:
        table += [
            ("ed25519_sign", "raw Ed25519 sign (cryptography)", signs, "peer"),
            ("ed25519_verify", "raw Ed25519 verify (cryptography)", verifies, "peer"),
        ]
    rows = []
    for key, label, rate, role in table:
        print(f"{label:<34}{rate:>14,.0f}{rate / limit:>16.2f}{ratio(rate, signs):>17.2f}")
        ratios = {"× SHA-256": ratio(rate, limit)}
        if not isinstance(peer, str):
            ratios["× Ed25519 sign"] = ratio(rate, signs)
        rows.append(
            Row(
                NAME,
                T_RATES,
                key,
                label,
                {"ops_per_s": rate},
                ratios,
                role=role,
                params={"n": n},
                headline=key in {"sha256", "links", "crash_points", "ed25519_sign"},
            )
        )
    if not isinstance(peer, str):
        rows[-2].checks["a tampered message does not verify"] = ed_checked
        rows += _settlement_rows(max(10, n // 2000), signs)
    h = hashlib.sha256(b"x").hexdigest()
    rows[2].checks["crash points are deterministic and >= 1.00x"] = (
        crash_point(h, SALT) == crash_point(h, SALT) >= 100
    )

    if chain_length:
        step(3, parts, f"build {chain_length:,} links")
        started = time.perf_counter()
        spec = build_chain(new_seed(), chain_length)
        elapsed = time.perf_counter() - started
        # Traced separately: tracemalloc slows the hot loop several-fold.
        traced_length = min(chain_length, 1_000_000)
        tracemalloc.start()
        build_chain(new_seed(), traced_length)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        print(
            f"\nbuild {chain_length:,} links: {elapsed:.1f} s "
            f"({chain_length / elapsed:,.0f} links/s); {len(spec.checkpoints):,} checkpoints "
            f"of 32 bytes kept; peak traced memory building {traced_length:,} links: "
            f"{peak / 2**10:.0f} KiB"
        )
        step(4, parts, "serve games")
        reader = ChainReader(spec)
        costs = []
        served = min(serve_games, chain_length)
        hashes = {}
        for game in range(1, served + 1):
            started = time.perf_counter()
            hashes[game] = reader.game_hash(game)
            costs.append(time.perf_counter() - started)
        costs.sort()
        print(
            f"serve games 1..{served:,} in play order: "
            f"mean {statistics.fmean(costs) * 1e6:.1f} µs, p50 {costs[len(costs) // 2] * 1e6:.1f} µs, "
            f"max {costs[-1] * 1e3:.1f} ms (one segment of {spec.interval:,} links recomputed "
            "every interval games)"
        )
        cold = ChainReader(spec)
        started = time.perf_counter()
        cold.game_hash(chain_length // 2)
        cold_ms = (time.perf_counter() - started) * 1e3
        print(f"cold lookup of a game in the middle of the chain: {cold_ms:.1f} ms")
        # What a player checks: a revealed game sits at its place under the published
        # terminating hash, and its crash point is the one the engine computes.
        terminating = spec.terminating_hash.hex()
        sample = sorted({1, 2, served // 2 or 1, served})
        verified = all(
            verify_game(hashes[g], SALT, terminating, g) == crash_point(hashes[g], SALT)
            for g in sample
        )
        rows += [
            Row(
                NAME,
                T_CHAIN,
                "build",
                f"build a {chain_length:,}-link chain",
                {
                    "build_s": elapsed,
                    "links_per_s": chain_length / elapsed,
                    "checkpoints_n": len(spec.checkpoints),
                    "peak_traced_kib": peak / 2**10,
                },
                params={"chain_length": chain_length, "traced_length": traced_length},
                checks={"revealed games verify against the terminating hash": verified},
            ),
            Row(
                NAME,
                T_CHAIN,
                "serve",
                f"serve games 1..{served:,} in play order",
                {
                    "mean_us": statistics.fmean(costs) * 1e6,
                    "p50_us": costs[len(costs) // 2] * 1e6,
                    "max_ms": costs[-1] * 1e3,
                    "cold_lookup_ms": cold_ms,
                },
                params={"games": served, "interval": spec.interval},
            ),
        ]
    step(parts, parts, "done")
    return rows


def _settlement_rows(n: int, signs: float) -> list[Row]:
    played = settlement(SETTLE_BETS)
    table = [
        ("receipt", "bet receipt: build, sign, canonical text", played["receipt"], n * 5),
        ("seal", f"start seal of {SETTLE_BETS} bets (record, Merkle, sign)", played["seal"], n),
        (
            "transcript",
            f"transcript of {SETTLE_BETS} bets (record, sign, hash)",
            played["transcript"],
            n,
        ),
    ]
    print(f"\nverifiable settlement ({SETTLE_BETS} bets a round, {played['manual']} by hand):")
    rows = []
    for key, label, fn, count in table:
        rate = _rate(fn, count)
        print(f"{label:<50}{rate:>12,.0f}/s{ratio(rate, signs):>10.3f} × Ed25519 sign")
        rows.append(
            Row(
                NAME,
                T_SETTLE,
                key,
                label,
                {"ops_per_s": rate},
                {"× Ed25519 sign": ratio(rate, signs)},
                params={"n": count, "bets": SETTLE_BETS},
                headline=key == "transcript",
            )
        )
    print(f"transcript of {SETTLE_BETS} bets: {played['bytes']:,} bytes of canonical JSON")
    rows[-1].metrics["bytes"] = float(played["bytes"])
    rows[-1].checks["the transcript audits clean (signature, seal, re-run)"] = bool(played["ok"])
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench fairness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--n", type=int, default=500_000, help="operations per rate sample")
    p.add_argument(
        "--chain-length", type=int, default=10_000_000, help="full chain to build (0 to skip)"
    )
    p.add_argument("--serve", type=int, default=20_000, help="games served in play order")
    p.add_argument("--quick", action="store_true", help="small sizes: a few seconds")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.quick:
        args.n, args.chain_length, args.serve = 20_000, 100_000, 2_000
    rows = measure(args.n, args.chain_length, args.serve)
    return 0 if all(all(r.checks.values()) for r in rows) else 1


def run(ctx: Context) -> list[Row]:
    if ctx.quick:
        n, chain, serve = 20_000, 100_000, 2_000
    else:
        # The default run (500,000 per sample, 10M links) takes about 20 s; a smaller
        # budget scales both down.
        scale = clamp(ctx.seconds / 30, 0.05, 1.0)
        n, chain, serve = int(500_000 * scale), int(10_000_000 * scale), 20_000
    ctx.note(f"equivalent: python -m bench fairness --n {n} --chain-length {chain} --serve {serve}")
    if isinstance(ed25519(), str):
        ctx.skip("the raw Ed25519 peer", str(ed25519()))
    return measure(n, chain, serve, ctx.progress)

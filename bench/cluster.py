"""``python -m bench cluster``: what the scale-out topology costs (docs/scale-out.md).

Two parts, each beside its in-process peer in the same run:

* **Engine → edge frame delay.** A child process plays the engine: the real hub and
  ``FeedRelay`` publish ``--frames-per-s`` frames (ticks and ordered messages, each
  carrying its publish instant) through the real outlet — the Unix socket server, or
  the Redis stream writer on coredis or on redis-py in a thread. This process is the
  edge: the real ``EdgeHub`` fed by ``follow_unix`` / ``follow_stream`` with the same
  client, and records, for every frame, its arrival minus its publish instant (one
  machine: one clock). Reported: p50/p99/max delay, the engine's CPU µs per published
  frame, the edge's CPU µs per frame received. Targets: p99 ≤ 2 ms (Unix), ≤ 5 ms (Redis).
* **A command through an API process.** A real engine (``crashd serve`` with Redis) and
  a real ``crashd api``; ``--concurrency`` keep-alive clients place one-shot signed bets
  (``POST /api/v1/bets``) for ``--seconds`` at the engine's own REST, then through the
  API process. Reported: p50/p99 of each, and the API process's p99 over the engine's
  (target ≤ 2×); the added hop is the difference of the medians. Then the same for
  PSP webhooks (``POST /api/v1/psp/webhook``, a signed deposit event, a new event id
  each): verified by the API process, run by the engine as a command.

Redis: ``--redis-url``, or a private ``redis-server`` started here (skipped, saying
so, without one). Numbers are noisy on a shared machine: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from bench.suite import Context, Progress, Row, Skip, ratio

NAME = "cluster"
T_DELAY = "Engine → edge frame delay"
T_COMMANDS = "A bet through an API process beside the engine's own REST"
T_PSP = "A PSP webhook through an API process beside the engine's own REST"
PSP_SECRET = "whsec_bench_cluster_0123456789abcdef"
"""The children's ``psp_secrets_file`` (their working directory's ``crashd-psp-secrets``)."""
ROOT = Path(__file__).resolve().parent.parent
TRANSPORTS = ("unix", "redis/coredis", "redis/redis-py")


def _cpu_s() -> float:
    return time.process_time()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# -- the engine side of the delay measurement (a child process) ---------------------------


class _Live:
    def __init__(self) -> None:
        self._public: dict[str, Any] = {"n": 0}

    def public(self) -> dict[str, Any]:
        return self._public

    def rest_body(self) -> bytes:
        return json.dumps(self._public).encode()

    def change(self, n: int) -> None:
        self._public = {"n": n}


def serve_relay_engine(transport: str, where: str, rate: float, seconds: float) -> None:
    """Publish ``rate`` frames/s through the transport for ``seconds``; print RESULT."""
    from crashd.api.edge.links import open_link
    from crashd.api.edge.relay import FeedRelay
    from crashd.api.edge.streams import StreamOutlet
    from crashd.api.edge.unix import UnixRelayServer
    from crashd.api.feed.hub import Hub
    from crashd.api.wire import LIVE_MULTIPLIER, ROUND_UPDATES

    async def main() -> None:
        live = _Live()
        hub = Hub(snapshot=lambda c: live.public())
        relay = FeedRelay(hub, live)
        async with trio.open_nursery() as nursery:
            if transport == "unix":
                server = UnixRelayServer(relay, Path(where))
                await nursery.start(server.serve)
                print("READY", flush=True)
                while server.edges == 0:
                    await trio.sleep(0.01)
                await _publish(hub, live, rate, seconds, LIVE_MULTIPLIER, ROUND_UPDATES)
            else:
                client = transport.split("/", 1)[1]
                async with open_link(where, client) as link:  # type: ignore[arg-type]
                    outlet = StreamOutlet(relay, link, prefix="bench-relay")
                    async with trio.open_nursery() as inner:
                        await inner.start(outlet.run)
                        print("READY", flush=True)
                        sys.stdin.readline()  # the edge follows: go
                        await _publish(hub, live, rate, seconds, LIVE_MULTIPLIER, ROUND_UPDATES)
                        await trio.sleep(0.5)
                        inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()

    trio.run(main)


async def _publish(
    hub: Any, live: _Live, rate: float, seconds: float, tick: str, ordered: str
) -> None:
    frames = round(rate * seconds)
    start = trio.current_time() + 0.2
    cpu0 = _cpu_s()
    for k in range(frames):
        await trio.sleep_until(start + k / rate)
        channel = tick if k % 10 else ordered  # ticks, and an ordered message in ten
        if k % 20 == 0:
            live.change(k)  # a keyframe follows
        hub.publish(channel, {"type": "bench", "k": k, "t": time.time_ns()})
    cpu = _cpu_s() - cpu0
    await trio.sleep(0.3)
    print("RESULT " + json.dumps({"frames": frames, "cpu_s": cpu}), flush=True)


# -- the edge side (this process) -----------------------------------------------------------


@dataclass
class DelayPoint:
    transport: str
    frames: int
    received: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    engine_us_per_frame: float
    edge_us_per_frame: float


def measure_delay(transport: str, redis_url: str | None, rate: float, seconds: float) -> DelayPoint:
    from crashd.api.edge.links import open_link
    from crashd.api.edge.mirror import EdgeHub
    from crashd.api.edge.records import Kind
    from crashd.api.edge.streams import follow_stream
    from crashd.api.edge.unix import follow_unix

    delays: list[float] = []
    cpu = [0.0]

    class TimedHub(EdgeHub):
        def apply(self, record: Any, *, contiguous: bool) -> None:
            now = time.time_ns()
            super().apply(record, contiguous=contiguous)
            if record.kind is Kind.FRAME:
                body = record.data[record.data.index(b"{") :]
                delays.append((now - json.loads(body)["t"]) / 1e6)

    with tempfile.TemporaryDirectory(prefix="crashd-bench-relay-") as tmp:
        where = str(Path(tmp) / "relay.sock") if transport == "unix" else str(redis_url)
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench", NAME, "--serve-relay-engine", transport, where,
             str(rate), str(seconds)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdin is not None
        try:
            if proc.stdout.readline().strip() != "READY":
                raise RuntimeError(f"the relay engine ({transport}) did not start")

            async def edge() -> None:
                hub = TimedHub()
                async with trio.open_nursery() as nursery:
                    if transport == "unix":
                        await nursery.start(follow_unix, Path(where), hub, lambda e: None)
                        cpu0 = _cpu_s()
                        with trio.move_on_after(seconds + 3):
                            while len(delays) < round(rate * seconds):
                                await trio.sleep(0.05)
                        cpu[0] = _cpu_s() - cpu0
                    else:
                        client = transport.split("/", 1)[1]
                        async with open_link(where, client) as link:  # type: ignore[arg-type]
                            await nursery.start(
                                lambda task_status: follow_stream(
                                    link, hub, lambda e: None, prefix="bench-relay",
                                    task_status=task_status,
                                )
                            )  # fmt: skip
                            assert proc.stdin is not None
                            proc.stdin.write("go\n")
                            proc.stdin.flush()
                            cpu0 = _cpu_s()
                            with trio.move_on_after(seconds + 3):
                                while len(delays) < round(rate * seconds):
                                    await trio.sleep(0.05)
                            cpu[0] = _cpu_s() - cpu0
                            nursery.cancel_scope.cancel()
                    nursery.cancel_scope.cancel()

            trio.run(edge)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result = next(json.loads(x[7:]) for x in out.splitlines() if x.startswith("RESULT "))
    frames = int(result["frames"])
    return DelayPoint(
        transport,
        frames,
        len(delays),
        percentile(delays, 50),
        percentile(delays, 99),
        max(delays) if delays else float("nan"),
        result["cpu_s"] * 1e6 / frames,
        cpu[0] * 1e6 / max(1, len(delays)),
    )


# -- commands: the engine's REST and an API process -----------------------------------------


def serve_engine(directory: Path, redis_url: str) -> int:
    """The child: ``crashd serve``'s code path with Redis (commands and the feed)."""
    import logging

    from bench.api import _child_config
    from crashd.api.server import run_blocking

    config = _child_config(directory, "FULL", "warning").with_overrides(
        redis_url=redis_url, redis_prefix="bench-cluster"
    )
    logging.basicConfig(level="WARNING", stream=sys.stderr)
    run_blocking(config, on_ready=lambda info: print(f"ready {info.url}", flush=True))
    return 0


@contextmanager
def engine_and_api(directory: Path, redis_url: str) -> Iterator[tuple[Any, Any]]:
    from bench.api import GENEROUS_RATE_LIMITS, SCOPES, Server, _child_config
    from crashd.api.security.keys import KeyStore

    config = _child_config(directory, "FULL", "warning")
    store = KeyStore(config.database)
    try:
        created = store.create("sandbox", SCOPES, partner_id="bench", label="bench cluster")
    finally:
        store.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Both children run in ``directory``: the default psp_secrets_file is this one.
    (directory / "crashd-psp-secrets").write_text(PSP_SECRET + "\n")
    log = (directory / "cluster.log").open("w")
    engine = subprocess.Popen(
        [sys.executable, "-m", "bench", NAME, "--serve-engine", str(directory), redis_url],
        cwd=directory, env=env, stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    procs = [engine]
    try:
        assert engine.stdout is not None
        line = engine.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError(
                "the engine did not start: " + (directory / "cluster.log").read_text()[-2000:]
            )
        host, port = line[1].rsplit("/", 1)[1].rsplit(":", 1)
        api_env = {
            **env,
            "CRASHD_DATABASE": str(config.database),
            "CRASHD_REDIS_URL": redis_url,
            "CRASHD_REDIS_PREFIX": "bench-cluster",
            "CRASHD_LOG_LEVEL": "warning",
            **{f"CRASHD_{k.upper()}": str(v) for k, v in GENEROUS_RATE_LIMITS.items()},
        }
        api = subprocess.Popen(
            [sys.executable, "-m", "crashd.api", "api", "--port", "0"],
            cwd=directory, env=api_env, stdout=subprocess.PIPE, stderr=log, text=True,
        )  # fmt: skip
        procs.append(api)
        assert api.stdout is not None
        url = api.stdout.readline().split()[-1]
        api_host, api_port = url.rsplit("/", 1)[-1].rsplit(":", 1)
        secret = getattr(created, "signing_secret", "") or ""
        yield (
            Server(engine, host, int(port), created.secret, secret),
            Server(api, api_host, int(api_port), created.secret, secret),
        )
    finally:
        log.close()
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def psp_op(server: Any, where: str) -> Any:
    """``POST /api/v1/psp/webhook``: a signed ``deposit.completed`` of 1 to a player of
    the worker's, a new event id each (every one a credit, none a redelivery)."""
    from bench.api import Connection, answer
    from crashd.api import wire
    from crashd.api.security import webhook as pspsig

    host = f"{server.host}:{server.port}"
    sent = [0]

    async def op(conn: Connection, index: int) -> tuple[int, bool, dict[str, int]]:
        sent[0] += 1
        event = {
            "id": f"evt_{where}_{sent[0]}",
            "type": "deposit.completed",
            "created": int(time.time()),
            "data": {
                "environment": "sandbox",
                "partner_id": "bench",
                "user_id": f"psp{index}",
                "amount": 1,
            },
        }
        raw = json.dumps(event, separators=(",", ":")).encode()
        signature = pspsig.header_value(PSP_SECRET, int(time.time()), raw)
        head = (
            f"POST /api/v1/psp/webhook HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            f"{wire.PSP_SIGNATURE_HEADER}: {signature}\r\n\r\n"
        )
        status, body = await conn.request(head.encode() + raw)
        return 1, status == 200, {answer(status, body): 1}

    return op


@dataclass
class CommandPoint:
    where: str
    ok: int
    failures: int
    refused: int
    """Bets the round's own limits refused (``bench.api.RULE_REFUSALS``): not failures."""
    per_s: float
    p50_ms: float
    p99_ms: float


async def measure_commands(
    engine: Any, api: Any, seconds: float, concurrency: int
) -> list[CommandPoint]:
    from bench.api import RawConnection, Requests, fund, one_shot_op, run_load

    reqs = {"engine": Requests(engine), "api": Requests(api)}
    # Each row bets for its own users, enough of them that the round's per-user limit
    # is rarely reached: a long round queues the next one's bets for as long as it flies.
    per_row = max(400, concurrency * 125)
    users = [f"u{i}" for i in range(2 * per_row)]
    await fund(engine, reqs["engine"], users, 1_000_000, min(8, concurrency))

    async def point(where: str, server: Any, op: Any) -> CommandPoint:
        row = await run_load(
            server,
            where,
            op,
            opener=RawConnection.open,
            concurrency=concurrency,
            seconds=seconds,
            max_ops=10**9,
        )
        print(f"cluster: {where}: statuses {dict(sorted(row.statuses.items()))}", flush=True)
        return CommandPoint(
            where,
            row.ok,
            row.failures,
            row.refused,
            row.ok / row.seconds if row.seconds else 0.0,
            percentile(row.latencies_ms, 50),
            percentile(row.latencies_ms, 99),
        )

    points = []
    for where, server in (("engine psp", engine), ("api process psp", api)):
        points.append(await point(where, server, psp_op(server, where.replace(" ", "_"))))
    for n, (where, server) in enumerate((("engine", engine), ("api process", api))):
        key = "engine" if where == "engine" else "api"
        mine = users[n * per_row : (n + 1) * per_row]
        points.append(await point(where, server, one_shot_op(reqs[key], mine, concurrency)))
    return points


# -- running it -------------------------------------------------------------------------------


@contextmanager
def redis_for_bench(url: str | None) -> Iterator[str | None]:
    if url:
        yield url
        return
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="crashd-bench-redis-") as tmp:
        sock = Path(tmp) / "redis.sock"
        proc = subprocess.Popen(
            [binary, "--port", "0", "--unixsocket", str(sock), "--save", "", "--appendonly", "no",
             "--dir", tmp],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(200):
                if sock.exists():
                    break
                time.sleep(0.02)
            yield f"unix://{sock}"
        finally:
            proc.kill()
            proc.wait()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench cluster", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="a few seconds per part")
    p.add_argument("--redis-url", help="a Redis to use (default: start one here)")
    p.add_argument("--frames-per-s", type=float, default=200.0, help="frames the engine publishes")
    p.add_argument(
        "--seconds", type=float, default=10.0, help="per delay point and per command row"
    )
    p.add_argument("--concurrency", type=int, default=16, help="clients placing bets")
    p.add_argument("--transports", default=",".join(TRANSPORTS), help="delay points to measure")
    p.add_argument("--serve-relay-engine", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--serve-engine", nargs=2, help=argparse.SUPPRESS)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.serve_relay_engine:
        transport, where, rate, seconds = args.serve_relay_engine
        serve_relay_engine(transport, where, float(rate), float(seconds))
        return 0
    if args.serve_engine:
        return serve_engine(Path(args.serve_engine[0]), args.serve_engine[1])
    if args.quick:
        args.seconds, args.frames_per_s = 2.0, 100.0
    skips: list[Skip] = []
    rows = measure(args, None, skips)
    failed = [f"{r.key}: {name}" for r in rows for name, ok in r.checks.items() if not ok]
    for line in failed:
        print(f"cluster: check failed: {line}")
    return 1 if failed else 0


def run(ctx: Context) -> list[Row]:
    argv = ["--seconds", "2" if ctx.quick else f"{max(3.0, min(10.0, ctx.seconds / 6)):.0f}"]
    if ctx.quick:
        argv += ["--frames-per-s", "100"]
    ctx.note("equivalent: python -m bench cluster " + " ".join(argv))
    skips: list[Skip] = []
    rows = measure(parser().parse_args(argv), ctx.progress, skips)
    for s in skips:
        ctx.skip(s.what, s.why)
    return rows


def measure(args: argparse.Namespace, progress: Progress | None, skips: list[Skip]) -> list[Row]:
    rows: list[Row] = []
    print(
        f"cluster: load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}"
    )
    with redis_for_bench(args.redis_url) as redis_url:
        transports = [t.strip() for t in args.transports.split(",") if t.strip()]
        if redis_url is None:
            why = "no Redis (install redis-server or pass --redis-url)"
            skips.append(Skip(NAME, "the Redis transports and API processes", why))
            print(f"cluster: skipped the Redis transports and API processes: {why}")
            transports = [t for t in transports if t == "unix"]
        points = []
        for i, transport in enumerate(transports):
            if progress is not None:
                progress.update(i, len(transports) + 1, f"delay {transport}")
            p = measure_delay(transport, redis_url, args.frames_per_s, args.seconds)
            points.append(p)
            print(
                f"  {transport:15} {p.received}/{p.frames} frames: delay p50 {p.p50_ms:.3f} ms, "
                f"p99 {p.p99_ms:.3f} ms, max {p.max_ms:.2f} ms; engine {p.engine_us_per_frame:.1f} "
                f"µs/frame, edge {p.edge_us_per_frame:.1f} µs/frame",
                flush=True,
            )
        for p in points:
            limit = 2.0 if p.transport == "unix" else 5.0
            rows.append(
                Row(
                    NAME,
                    T_DELAY,
                    f"delay/{p.transport}",
                    f"engine → edge over {p.transport}",
                    {
                        "p50_ms": p.p50_ms,
                        "p99_ms": p.p99_ms,
                        "max_ms": p.max_ms,
                        "engine_us_per_frame_us": p.engine_us_per_frame,
                        "edge_us_per_frame_us": p.edge_us_per_frame,
                    },
                    {f"p99 × {limit:g} ms target": ratio(p.p99_ms, limit)},
                    params={
                        "transport": p.transport,
                        "frames_per_s": args.frames_per_s,
                        "seconds": args.seconds,
                    },
                    checks={"every frame arrived": p.received == p.frames},
                    headline=True,
                    primary=["p50_ms", "p99_ms", "engine_us_per_frame_us"],
                )  # fmt: skip
            )
        if redis_url is not None:
            if progress is not None:
                progress.update(len(transports), len(transports) + 1, "commands")
            with tempfile.TemporaryDirectory(prefix="crashd-bench-cluster-") as tmp:
                with engine_and_api(Path(tmp), redis_url) as (engine, api):
                    cmd = trio.run(measure_commands, engine, api, args.seconds, args.concurrency)
            psp = [c for c in cmd if c.where.endswith(" psp")]
            cmd = [c for c in cmd if not c.where.endswith(" psp")]
            base = cmd[0]
            for c in psp:
                print(
                    f"  {c.where:16} {c.ok} webhooks ({c.failures} failed), {c.per_s:.0f}/s: "
                    f"p50 {c.p50_ms:.1f} ms, p99 {c.p99_ms:.1f} ms",
                    flush=True,
                )
                first = c is psp[0]
                where = c.where.removesuffix(" psp")
                rows.append(
                    Row(
                        NAME,
                        T_PSP,
                        f"psp/{where}",
                        f"POST /api/v1/psp/webhook at the {where}",
                        {
                            "per_s": c.per_s,
                            "p50_ms": c.p50_ms,
                            "p99_ms": c.p99_ms,
                            "failures_n": float(c.failures),
                        },
                        {} if first else {"p99 × in-process": ratio(c.p99_ms, psp[0].p99_ms)},
                        role="peer" if first else "subject",
                        params={"concurrency": args.concurrency, "seconds": args.seconds},
                        checks={"every event credited": c.failures == 0},
                        primary=["per_s", "p50_ms", "p99_ms"],
                        note="" if first else f"added hop (p50): {c.p50_ms - psp[0].p50_ms:.1f} ms",
                    )  # fmt: skip
                )
            for c in cmd:
                print(
                    f"  {c.where:12} {c.ok} bets ({c.failures} failed, {c.refused} refused by the "
                    f"round's limits), {c.per_s:.0f}/s: "
                    f"p50 {c.p50_ms:.1f} ms, p99 {c.p99_ms:.1f} ms",
                    flush=True,
                )
                rows.append(
                    Row(
                        NAME,
                        T_COMMANDS,
                        f"commands/{c.where}",
                        f"POST /api/v1/bets at the {c.where}",
                        {
                            "per_s": c.per_s,
                            "p50_ms": c.p50_ms,
                            "p99_ms": c.p99_ms,
                            "failures_n": float(c.failures),
                            "refused_n": float(c.refused),
                        },
                        {"p99 × in-process": ratio(c.p99_ms, base.p99_ms)} if c is not base else {},
                        role="subject" if c is not base else "peer",
                        params={"concurrency": args.concurrency, "seconds": args.seconds},
                        checks={"no failures (a round's own bet limits excepted)": c.failures == 0},
                        headline=True,
                        primary=["per_s", "p50_ms", "p99_ms"],
                        note=f"added hop (p50): {c.p50_ms - base.p50_ms:.1f} ms"
                        if c is not base
                        else "",
                    )  # fmt: skip
                )
    if progress is not None:
        progress.done()
    return rows

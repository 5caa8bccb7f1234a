"""``python -m bench fanout``: how many live subscribers each server sustains on one core.

For each server (crashd's feed, the ``websockets`` library's ``broadcast()``, Node
``ws``) and each tick rate, N climbs a ladder until a point fails; the largest N that
passes is what the server *sustains*. The server is pinned to one core and the load
generator (``bench/fanout/loadgen.c``, C and epoll, built here with the system
compiler) to the other, on loopback.

Pass rule (issue 7), in every run of a point: every subscriber connected and none
dropped; nothing lost (each subscriber got every measured tick); at least 99% of
N × rate messages per second delivered; p99 of (receive time − the tick's *scheduled*
time) under 100 ms. Latency is measured from when the tick was due, not from when the
server got round to sending it, so a server that falls behind its own clock pays.

Each point reports delivered msgs/s, loss, latency p50/p99/max, server CPU µs per
delivered message (the server's own CPU time from the first measured tick until its
sends drained, divided by messages delivered), the server's RSS, and the load
generator's CPU share (≥ 90% flags the point as client-bound: the figure then says
more about the load generator than the server).

Writes ``fanout.json`` and ``fanout.png`` (p99 latency against N) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shutil
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench import fanout_edges
from bench.suite import Context, Progress, Row, Skip, ratio

NAME = "fanout"
T_SUSTAINED = "Fan-out: live subscribers sustained on one core"
T_POINTS = "Fan-out: every measured point"
ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "fanout"
CACHE = Path(os.environ.get("CRASHD_BENCH_CACHE", Path.home() / ".cache" / "crashd" / "bench"))
PAYLOAD_BYTES = 121
P99_LIMIT_MS = 100.0
SERVERS = (
    "crashd",
    "websockets",
    "node-ws",
    "c-floor",
    "hypercorn",
    "edges-unix",
    "edges-redis",
    "edges-coredis",
    "edges-redis-py",
)
"""``c-floor`` is ``bench/fanout/floor.c``: one ``send()`` per socket from C, the
kernel's floor, not a peer. ``hypercorn`` is the feed on the API port (quart-trio ASGI),
measured to justify the dedicated listener. Neither is a peer of the 2x target.
``edges-unix`` and ``edges-redis`` are crashd's feed spread over an engine and
``--edges`` edges (``bench/fanout_edges.py``), measured beside ``crashd``;
``edges-coredis`` and ``edges-redis-py`` pick the Redis client."""
EDGE_SERVERS = ("edges-unix", "edges-redis")
DEFAULT_SERVERS = ("crashd", "websockets", "node-ws", "c-floor")


# -- the crashd server under test (run as a subprocess of the bench) -----------------


def serve_crashd(port: int, n: int, rate: float, ticks: int, warmup: int, size: int) -> None:
    """The feed exactly as ``crashd serve`` runs it, fed by a fixed-rate tick task."""
    import trio

    from crashd.api.feed import FeedConfig, Principal, serve_feed
    from crashd.api.feed.hub import Hub
    from crashd.api.wire import LIVE_MULTIPLIER, SCOPE_GAME_STATE

    principal = Principal("key_bench", "bench", "sandbox", frozenset({SCOPE_GAME_STATE}))
    # Heartbeats off the measured path (the load generator does not ack them).
    config = FeedConfig(heartbeat_interval=3600, heartbeat_timeout=7200, max_connections=n + 100)

    async def run() -> None:
        hub = Hub(snapshot=lambda channel: {"m": 100})
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(
                lambda task_status: serve_feed(
                    hub,
                    "127.0.0.1",
                    port,
                    lambda c: principal if c == "bench" else None,
                    config=config,
                    task_status=task_status,
                )
            )
            print(f"READY {bound}", flush=True)
            while hub.subscriber_count(LIVE_MULTIPLIER) < n:
                await trio.sleep(0.02)
            start = trio.current_time() + 0.5
            wall0 = time.time() + 0.5
            pad = max(0, size - len(_tick_json(ticks, int(wall0 * 1e6), "")))
            cpu0 = 0.0
            for k in range(ticks):
                due = start + k / rate
                await trio.sleep_until(due)  # trio re-reads the clock for every tick
                if k == warmup:
                    cpu0 = time.process_time()
                hub.publish(
                    LIVE_MULTIPLIER,
                    {
                        "type": "tick",
                        "n": k,
                        "t": round((wall0 + k / rate) * 1e6),
                        "m": 100 + k,
                        "pad": "x" * pad,
                    },
                )
            await trio.sleep(1.5)
            cpu = time.process_time() - cpu0
            print("RESULT " + json.dumps({"cpu_s": cpu, "rss_kb": _rss_kb()}), flush=True)
            os._exit(0)  # closing thousands of connections politely is not what we measure

    trio.run(run)


def _tick_json(k: int, t_us: int, pad: str) -> str:
    return json.dumps(
        {
            "seq": k + 1,
            "channel": "live_multiplier",
            "type": "tick",
            "n": k,
            "t": t_us,
            "m": 100 + k,
            "pad": pad,
        },
        separators=(",", ":"),
    )


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# -- building and installing the pieces ------------------------------------------------


def build_c(name: str) -> tuple[Path | None, str]:
    """Compile ``bench/fanout/NAME.c`` into the cache (once per source change)."""
    src = ASSETS / f"{name}.c"
    exe = CACHE / name
    if exe.exists() and exe.stat().st_mtime >= src.stat().st_mtime:
        return exe, ""
    cc = shutil.which("gcc") or shutil.which("cc") or shutil.which("clang")
    if cc is None:
        return None, f"no C compiler found: {name}.c cannot be built"
    CACHE.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([cc, "-O2", "-o", str(exe), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        return None, f"building {name}.c failed:\n{proc.stderr}"
    return exe, ""


def install_node_ws() -> tuple[Path | None, str]:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        return None, "Node.js/npm not found: the Node `ws` peer is skipped"
    prefix = CACHE / "node"
    if not (prefix / "node_modules" / "ws").exists():
        prefix.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(prefix), "ws@8"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            return None, f"npm install ws failed, Node `ws` peer skipped:\n{proc.stderr[-500:]}"
    return prefix / "node_modules", ""


# -- one measured point ----------------------------------------------------------------


@dataclass
class Point:
    server: str
    rate: float
    n: int
    run: int
    connected: int
    received: int
    expected: int
    loss: int
    delivered_per_s: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    cpu_us_per_msg: float
    rss_mb: float
    client_cpu_share: float
    passed: bool
    note: str
    dups: int = 0
    """Ticks a subscriber got again or out of order (the load generator counts them)."""
    engine_us_per_frame: float = float("nan")
    """Edges only: the engine's CPU µs per published frame (it has no subscribers)."""
    edge_subscribers: str = ""
    """Edges only: how the kernel spread the subscribers over the edges (``"98+102"``)."""


def _server_command(
    server: str,
    n: int,
    rate: float,
    ticks: int,
    warmup: int,
    node_modules: Path | None,
    edges: int = 2,
    redis_url: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    env = dict(os.environ)
    args = [str(n), str(rate), str(ticks), str(warmup), str(PAYLOAD_BYTES)]
    if fanout_edges.is_edges(server):
        return fanout_edges.command(server, edges, redis_url, args), env
    if server == "crashd":
        return [sys.executable, "-m", "bench", "fanout", "--serve-crashd", "0", *args], env
    if server == "websockets":
        return [sys.executable, str(ASSETS / "websockets_peer.py"), "0", *args], env
    if server == "hypercorn":
        return [sys.executable, str(ASSETS / "hypercorn_peer.py"), "0", *args], env
    if server == "c-floor":
        return [str(CACHE / "floor"), "0", *args], env
    assert node_modules is not None
    env["NODE_PATH"] = str(node_modules)
    return ["node", str(ASSETS / "ws_peer.js"), "0", *args], env


def _pin(cpu: int | None) -> Any:
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})
        # The server needs a descriptor per subscriber.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    return pin


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


def measure_point(
    server: str,
    n: int,
    rate: float,
    duration: float,
    run: int,
    loadgen: Path,
    node_modules: Path | None,
    cpus: tuple[int | None, int | None],
    edges: int = 2,
    redis_url: str | None = None,
) -> Point:
    warmup = max(1, round(rate))  # one second of ticks before measuring
    ticks = warmup + max(1, round(duration * rate))
    cmd, env = _server_command(server, n, rate, ticks, warmup, node_modules, edges, redis_url)
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_pin(cpus[0]),
    )
    note = ""
    try:
        line = _readline(proc, 30)
        if not line.startswith("READY "):
            raise RuntimeError(
                f"{server} did not start: {line!r} {proc.stderr.read() if proc.stderr else ''}"
            )
        port = line.split()[1]
        init = [
            '{"type":"auth","token":"bench"}',
            '{"type":"subscribe","channels":["live_multiplier"]}',
        ]
        timeout = 30 + n / 500 + ticks / rate
        lg = subprocess.run(
            [
                str(loadgen),
                "127.0.0.1",
                port,
                "/api/v1/ws",
                str(n),
                str(ticks),
                str(warmup),
                str(timeout),
                *init,
            ],
            capture_output=True,
            text=True,
            preexec_fn=_pin(cpus[1]),
            timeout=timeout + 30,
        )
        client = json.loads(lg.stdout)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            out, note = "", "server did not report"
        result = next(
            (json.loads(x[7:]) for x in out.splitlines() if x.startswith("RESULT ")), None
        )
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    received, expected = client["received"], n * (ticks - warmup)
    # Per second of the tick schedule: lateness is what p50/p99/max measure.
    delivered = received / ((ticks - warmup) / rate)
    window = client["window_s"] + 1 / rate if client["window_s"] > 0 else 0.0
    cpu_us = result["cpu_s"] * 1e6 / received if result and received else float("nan")
    client_share = client["client_cpu_s"] / window if window else 0.0
    p99 = client["p99_us"] / 1000
    passed = (
        client["connected"] == n
        and client["closed_early"] == 0
        and client.get("dups", 0) == 0
        and received == expected
        and delivered >= 0.99 * n * rate
        and 0 <= p99 < P99_LIMIT_MS
        and result is not None
    )
    if client_share >= 0.9:
        note = (note + " client-bound").strip()
    return Point(
        server=server,
        rate=rate,
        n=n,
        run=run,
        connected=client["connected"],
        received=received,
        expected=expected,
        loss=expected - received,
        delivered_per_s=round(delivered),
        p50_ms=client["p50_us"] / 1000,
        p99_ms=p99,
        max_ms=client["max_us"] / 1000,
        cpu_us_per_msg=round(cpu_us, 2),
        rss_mb=round(result["rss_kb"] / 1024, 1) if result else float("nan"),
        client_cpu_share=round(client_share, 2),
        passed=passed,
        note=note,
        dups=client.get("dups", 0),
        engine_us_per_frame=round(result["engine_cpu_s"] * 1e6 / result["engine_frames"], 2)
        if result and "engine_cpu_s" in result
        else float("nan"),
        edge_subscribers="+".join(str(e["subscribers"]) for e in result.get("edges", []))
        if result
        else "",
    )


# -- report ------------------------------------------------------------------------------


def table(points: list[Point], sustained: dict[tuple[str, float], int]) -> str:
    lines = [
        "| server | rate | N | pass | delivered msg/s | loss | p50 ms | p99 ms | max ms | CPU µs/msg | RSS MB | client CPU | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p in points:
        lines.append(
            f"| {p.server} | {p.rate:g} Hz | {p.n:,} | {'yes' if p.passed else 'NO'} | {p.delivered_per_s:,.0f} "
            f"| {p.loss:,} | {p.p50_ms:.1f} | {p.p99_ms:.1f} | {p.max_ms:.1f} | {p.cpu_us_per_msg:.1f} "
            f"| {p.rss_mb:.0f} | {p.client_cpu_share:.0%} | {p.note} |"
        )
    lines += ["", "| server | sustains at 10 Hz | sustains at 20 Hz |", "|---|---|---|"]
    servers = list(dict.fromkeys(s for s, _ in sustained))
    for s in servers:
        cells = [f"{sustained[(s, r)]:,}" if (s, r) in sustained else "–" for r in (10.0, 20.0)]
        lines.append(f"| {s} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench fanout", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="a short sanity run: small N, 3 s points")
    p.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help="comma-separated, from " + ",".join(SERVERS),
    )
    p.add_argument("--rates", default="10,20", help="tick rates in Hz")
    p.add_argument(
        "--edge-rates",
        default="",
        help="tick rates for the edges servers (default: --rates); `bench all` climbs them at "
        "20 Hz only, where their cost is compared with the hub's, to fit its budget",
    )
    p.add_argument(
        "--ladder", default="500,1000,2500,5000,6000,7500,10000,12500", help="N values to climb"
    )
    p.add_argument(
        "--duration", type=float, default=15.0, help="measured seconds per run (after 1 s warm-up)"
    )
    p.add_argument(
        "--runs", type=int, default=3, help="runs per point; a point passes only if all do"
    )
    p.add_argument("--out", type=Path, default=CACHE, help="where fanout.json and fanout.png go")
    p.add_argument(
        "--edges",
        type=int,
        default=0,
        help="also climb crashd's feed spread over an engine and this many edges (Unix "
        "socket, and Redis), beside the single hub; alone, it picks those servers",
    )
    p.add_argument(
        "--redis-url", help="the Redis for edges-redis (default: start a private redis-server)"
    )
    p.add_argument("--serve-crashd", nargs=6, metavar="ARG", help=argparse.SUPPRESS)
    p.add_argument("--serve-edges", nargs=8, metavar="ARG", help=argparse.SUPPRESS)
    p.add_argument("--edge-part", nargs=10, metavar="ARG", help=argparse.SUPPRESS)
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.serve_crashd:
        port, n, rate, ticks, warmup, size = args.serve_crashd
        serve_crashd(int(port), int(n), float(rate), int(ticks), int(warmup), int(size))
        return 0
    if args.serve_edges:
        transport, edges, url, n, rate, ticks, warmup, size = args.serve_edges
        fanout_edges.serve_edges(
            transport, int(edges), url, int(n), float(rate), int(ticks), int(warmup), int(size)
        )
        return 0
    if args.edge_part:
        role, port, transport, where, prefix, n, rate, ticks, warmup, size = args.edge_part
        fanout_edges.run_part(
            role, int(port), transport, where, prefix, int(n), float(rate), int(ticks),
            int(warmup), int(size),
        )  # fmt: skip
        return 0
    if args.edges and "--servers" not in argv:
        args.servers = ",".join(("crashd", *EDGE_SERVERS))
    if args.quick:
        args.ladder, args.duration, args.runs = "200,1000", 3.0, 1
    skips: list[Skip] = []
    rows = measure(args, None, skips)
    if rows is None:
        return 2
    return 0


def run(ctx: Context) -> list[Row]:
    servers = ",".join(DEFAULT_SERVERS)
    if ctx.quick:
        # One small point per server at 20 Hz: every server starts, every subscriber
        # gets every tick in order.
        # Edges included: the engine and two edges start, the kernel spreads the
        # subscribers, every one gets every tick in order.
        servers = ",".join((*DEFAULT_SERVERS, *EDGE_SERVERS))
        argv = ["--servers", servers, "--rates", "20", "--ladder", "200", "--duration", "2"]
        argv += ["--runs", "1", "--edges", "2"]
    else:
        ladder = [1000, 2500, 5000, 7500, 10000]
        rates = (10, 20)
        servers = ",".join((*DEFAULT_SERVERS, *EDGE_SERVERS))
        # A point costs its duration plus ~4 s (start, connect, warm-up, drain); a
        # server's climb stops at its first failure, so plan for ~4 points per climb.
        climbs = len(DEFAULT_SERVERS) * len(rates) + len(EDGE_SERVERS)  # edges: 20 Hz only
        per_point = ctx.seconds / (climbs * 4)
        duration = max(2.0, min(15.0, per_point - 4))
        argv = ["--servers", servers, "--rates", ",".join(map(str, rates)), "--edge-rates", "20"]
        argv += ["--ladder", ",".join(map(str, ladder)), "--duration", f"{duration:.0f}"]
        argv += ["--runs", "1", "--edges", "2"]
    argv += ["--out", str(ctx.out / "fanout")]
    ctx.note("equivalent: python -m bench fanout " + " ".join(argv))
    skips: list[Skip] = []
    rows = measure(parser().parse_args(argv), ctx.progress, skips)
    for s in skips:
        ctx.skip(s.what, s.why)
    return rows or []


def measure(
    args: argparse.Namespace, progress: Progress | None, skips: list[Skip]
) -> list[Row] | None:
    """Climb every server's ladder, print the table, write fanout.json/png to ``--out``;
    return the rows (``None``: bad arguments)."""
    from bench.cluster import redis_for_bench

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"fanout: load average {load}", flush=True)
    args.load_average = load
    if not any(fanout_edges.on_redis(s) for s in args.servers.split(",")):
        return _measure(args, progress, skips, None)
    with redis_for_bench(args.redis_url) as redis_url:
        return _measure(args, progress, skips, redis_url)


def _measure(
    args: argparse.Namespace,
    progress: Progress | None,
    skips: list[Skip],
    redis_url: str | None,
) -> list[Row] | None:
    def skip(what: str, why: str) -> None:
        skips.append(Skip(NAME, what, why))
        print(f"fanout: skipped {what}: {why}", flush=True)

    loadgen, why = build_c("loadgen")
    if loadgen is None:
        skip("every server", f"{why} (the C load generator is what measures every server)")
        return []
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(servers) - set(SERVERS)
    if unknown:
        print(
            f"fanout: unknown servers {sorted(unknown)}; choose from {', '.join(SERVERS)}",
            file=sys.stderr,
        )
        return None
    if "c-floor" in servers:
        floor, why = build_c("floor")
        if floor is None:
            skip("the C floor", why)
            servers.remove("c-floor")
    if redis_url is None and any(fanout_edges.on_redis(s) for s in servers):
        skip("edges over Redis", "no Redis (install redis-server or pass --redis-url)")
        servers = [s for s in servers if not fanout_edges.on_redis(s)]
    edges = args.edges or 2
    node_modules = None
    if "node-ws" in servers:
        node_modules, why = install_node_ws()
        if node_modules is None:
            skip("the Node `ws` peer", why)
            servers.remove("node-ws")
    cpus_available = sorted(os.sched_getaffinity(0))
    cpus: tuple[int | None, int | None] = (None, None)
    if len(cpus_available) >= 2:
        cpus = (cpus_available[0], cpus_available[1])
        print(f"fanout: server pinned to CPU {cpus[0]}, load generator to CPU {cpus[1]}")
    else:
        print(
            "fanout: note: only one CPU; server and load generator share it (figures are pessimistic)"
        )
    rates = [float(r) for r in args.rates.split(",")]
    edge_rates = [float(r) for r in args.edge_rates.split(",")] if args.edge_rates else rates

    def rates_of(server: str) -> list[float]:
        return edge_rates if fanout_edges.is_edges(server) else rates

    ladder = [int(x) for x in args.ladder.split(",")]
    points: list[Point] = []
    sustained: dict[tuple[str, float], int] = {}
    planned = sum(len(rates_of(s)) for s in servers) * len(ladder) * args.runs
    for server in servers:
        for rate in rates_of(server):
            sustained[(server, rate)] = 0
            for n in ladder:
                runs = []
                for run in range(args.runs):
                    if progress is not None:
                        progress.update(len(points), planned, f"{server} {rate:g} Hz N={n:,}")
                    try:
                        p = measure_point(
                            server, n, rate, args.duration, run, loadgen, node_modules, cpus,
                            edges, redis_url,
                        )  # fmt: skip
                    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as exc:
                        print(
                            f"fanout: {server} N={n} {rate:g} Hz: failed to run: {exc}",
                            file=sys.stderr,
                        )
                        p = Point(
                            server,
                            rate,
                            n,
                            run,
                            0,
                            0,
                            0,
                            0,
                            0,
                            -1,
                            -1,
                            -1,
                            float("nan"),
                            float("nan"),
                            0,
                            False,
                            "did not run",
                        )
                    runs.append(p)
                    points.append(p)
                    print(
                        f"  {server:10} {rate:4g} Hz N={n:6,} run {run + 1}: {'pass' if p.passed else 'FAIL'} "
                        f"p99 {p.p99_ms:.1f} ms, loss {p.loss}, {p.cpu_us_per_msg} µs/msg, {p.rss_mb} MB {p.note}",
                        flush=True,
                    )
                    if not p.passed:
                        break
                if all(p.passed for p in runs):
                    sustained[(server, rate)] = n
                else:
                    # The climb stops here: the rest of this ladder is not measured.
                    planned -= (len(ladder) - ladder.index(n) - 1) * args.runs + (
                        args.runs - len(runs)
                    )
                    break
    print()
    print(table(points, sustained))
    if any(fanout_edges.is_edges(s) for s, _ in sustained):
        print()
        print(edges_table(points, sustained, edges))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fanout.json").write_text(
        json.dumps(
            {
                "points": [asdict(p) for p in points],
                "sustained": [{"server": s, "rate": r, "n": n} for (s, r), n in sustained.items()],
                "rule": "all connected, no loss, >= 99% of N x rate delivered, p99 from scheduled tick < 100 ms, every run",
                "edges": edges,
                "load_average": args.load_average,
            },
            indent=1,
        )
    )
    write_plot(args.out / "fanout.png", points, rates)
    print(f"\nwrote {args.out / 'fanout.json'} and {args.out / 'fanout.png'}")
    if progress is not None:
        progress.done()
    return to_rows(points, sustained, ladder, args) + edges_rows(points, sustained, edges, args)


T_EDGES = (
    "Fan-out over an engine and edges: an edge's cost per delivered message beside the single hub's"
)
EDGE_COST_TARGET = 1.1
"""Issue 19: an edge's CPU µs per delivered message within 1.1x of the single hub's."""


def edge_pairs(points: list[Point], edges: int) -> list[tuple[Point, Point | None, Point | None]]:
    """Each edges point with the single hub's in this run at the same rate: at the same
    N (the same load, spread) and at N / edges (the same subscribers per process)."""
    hub = {(p.rate, p.n): p for p in points if p.server == "crashd" and p.run == 0}
    return [
        (p, hub.get((p.rate, p.n)), hub.get((p.rate, round(p.n / max(1, edges)))))
        for p in points
        if fanout_edges.is_edges(p.server) and p.run == 0
    ]


def _cost(p: Point | None) -> float:
    return p.cpu_us_per_msg if p is not None else float("nan")


def per_core(cpu_us_per_msg: float, rate: float) -> float:
    """Subscribers one core carries at ``rate`` if its CPU did nothing but this: the
    projection from a measured cost per delivered message."""
    return 1e6 / (cpu_us_per_msg * rate) if cpu_us_per_msg > 0 else float("nan")


def edges_table(points: list[Point], sustained: dict[tuple[str, float], int], edges: int) -> str:
    lines = [
        f"| topology | rate | N | spread over {edges} edges | edge µs/msg | hub µs/msg, same N "
        f"| × hub (≤ {EDGE_COST_TARGET:g}) | hub µs/msg, N/{edges} | × hub, same per process "
        "| engine µs/frame | projected subscribers per added core |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for p, q, r in edge_pairs(points, edges):
        lines.append(
            f"| {p.server} | {p.rate:g} Hz | {p.n:,} | {p.edge_subscribers} | "
            f"{p.cpu_us_per_msg:.2f} | {_cost(q):.2f} | {ratio(p.cpu_us_per_msg, _cost(q)):.2f} | "
            f"{_cost(r):.2f} | {ratio(p.cpu_us_per_msg, _cost(r)):.2f} | "
            f"{p.engine_us_per_frame:.1f} | {per_core(p.cpu_us_per_msg, p.rate):,.0f} |"
        )
    lines += ["", "| topology | sustains at 10 Hz | sustains at 20 Hz |", "|---|---|---|"]
    for s in ("crashd", *(x for x in SERVERS if fanout_edges.is_edges(x))):
        if any(k[0] == s for k in sustained):
            cells = [f"{sustained[(s, r)]:,}" if (s, r) in sustained else "–" for r in (10.0, 20.0)]
            lines.append(f"| {s} | {cells[0]} | {cells[1]} |")
    lines.append(
        "\n(every process of a topology shares the server's one core: costs are per process; "
        "the projection is what one more core would carry at the measured cost)"
    )
    return "\n".join(lines)


def edges_rows(
    points: list[Point],
    sustained: dict[tuple[str, float], int],
    edges: int,
    args: argparse.Namespace,
) -> list[Row]:
    rows = []
    for p, q, r in edge_pairs(points, edges):
        hub_cost = _cost(q)
        first = p is next(x for x in points if x.server == p.server and x.rate == p.rate)
        engine = [
            x.engine_us_per_frame for x in points if x.server == p.server and x.rate == p.rate
        ]
        checks = {
            f"N={p.n:,}: every subscriber got every tick once, in order": (
                p.connected == p.n and p.loss == 0 and p.dups == 0 and p.received == p.expected
            )
        }
        rows.append(
            Row(
                NAME,
                T_EDGES,
                f"edges/{p.server}/{p.rate:g}/{p.n}",
                f"engine + {edges} edges over {fanout_edges.transport_of(p.server)}, "
                f"{p.rate:g} Hz, N={p.n:,}",
                {
                    "subscribers_n": float(p.n),
                    "edge_cpu_us_per_msg": p.cpu_us_per_msg,
                    "hub_cpu_us_per_msg": hub_cost,
                    "hub_cpu_us_per_msg_same_per_process": _cost(r),
                    "engine_us_per_frame_us": p.engine_us_per_frame,
                    "engine_us_per_frame_at_smallest_n_us": engine[0],
                    "p99_ms": p.p99_ms,
                    "projected_subscribers_per_core_n": per_core(p.cpu_us_per_msg, p.rate),
                    "hub_projected_subscribers_per_core_n": per_core(hub_cost, p.rate),
                    "sustained_n": float(sustained.get((p.server, p.rate), 0)),
                    "hub_sustained_n": float(sustained.get(("crashd", p.rate), 0)),
                },
                {
                    f"edge µs/msg × hub (target ≤ {EDGE_COST_TARGET:g})": ratio(
                        p.cpu_us_per_msg, hub_cost
                    ),
                    "edge µs/msg × hub, same subscribers per process": ratio(
                        p.cpu_us_per_msg, _cost(r)
                    ),
                    "engine µs/frame × at the smallest N": ratio(p.engine_us_per_frame, engine[0]),
                },
                params={
                    "server": p.server,
                    "edges": edges,
                    "rate_hz": p.rate,
                    "n": p.n,
                    "spread": p.edge_subscribers,
                    "passed": p.passed,
                    "duration_s": args.duration,
                    "load_average": args.load_average,
                },
                checks=checks if first else {},
                headline=True,
                primary=[
                    "subscribers_n",
                    "edge_cpu_us_per_msg",
                    "hub_cpu_us_per_msg",
                    "engine_us_per_frame_us",
                    "projected_subscribers_per_core_n",
                    f"edge µs/msg × hub (target ≤ {EDGE_COST_TARGET:g})",
                ],
                note="" if p.passed else "FAIL",
            )
        )
    return rows


LABELS = {
    "crashd": "crashd",
    "websockets": "`websockets` broadcast()",
    "node-ws": "Node `ws`",
    "c-floor": "C epoll floor (one send() per socket)",
    "hypercorn": "the feed on Hypercorn (ASGI)",
    "edges-unix": "crashd, engine + edges over the Unix socket",
    "edges-redis": "crashd, engine + edges over Redis",
    "edges-coredis": "crashd, engine + edges over Redis (coredis)",
    "edges-redis-py": "crashd, engine + edges over Redis (redis-py in a thread)",
}
ROLES = {"crashd": "subject", "c-floor": "limit"} | {
    s: "subject" for s in SERVERS if fanout_edges.is_edges(s)
}


def to_rows(
    points: list[Point],
    sustained: dict[tuple[str, float], int],
    ladder: list[int],
    args: argparse.Namespace,
) -> list[Row]:
    rows = []
    for (server, rate), n in sustained.items():
        at = [p for p in points if p.server == server and p.rate == rate and p.n == n]
        metrics = {"sustained_n": float(n)}
        if at:
            metrics |= {
                "p99_at_sustained_ms": max(p.p99_ms for p in at),
                "cpu_us_per_msg": max(p.cpu_us_per_msg for p in at),
                "rss_mb": max(p.rss_mb for p in at),
            }
        ratios = {}
        if server == "crashd":
            for peer in ("websockets", "node-ws", "c-floor"):
                if (peer, rate) in sustained:
                    ratios[f"× {peer}"] = ratio(n, sustained[(peer, rate)])
        checks = {}
        if server == "crashd":
            first = [p for p in points if p.server == server and p.rate == rate][:1]
            if first:
                checks[f"N={first[0].n:,}: every subscriber got every tick once, in order"] = (
                    first[0].connected == first[0].n
                    and first[0].loss == 0
                    and first[0].dups == 0
                    and first[0].received == first[0].expected
                )
        rows.append(
            Row(
                NAME,
                T_SUSTAINED,
                f"sustained/{server}/{rate:g}",
                f"{LABELS.get(server, server)}, {rate:g} Hz",
                metrics,
                ratios,
                role=ROLES.get(server, "peer"),
                params={
                    "server": server,
                    "rate_hz": rate,
                    "ladder": ",".join(map(str, ladder)),
                    "top_of_ladder": n == ladder[-1],
                    "duration_s": args.duration,
                    "runs": args.runs,
                },
                checks=checks,
                headline=True,
                primary=["sustained_n", "p99_at_sustained_ms", "cpu_us_per_msg", *ratios],
                note="the top of the ladder: it may sustain more" if n == ladder[-1] else "",
            )
        )
    for p in points:
        rows.append(
            Row(
                NAME,
                T_POINTS,
                f"point/{p.server}/{p.rate:g}/{p.n}/{p.run}",
                f"{p.server}, {p.rate:g} Hz, N={p.n:,}, run {p.run + 1}",
                {
                    "n": float(p.n),
                    "delivered_per_s": float(p.delivered_per_s),
                    "loss_n": float(p.loss),
                    "p50_ms": p.p50_ms,
                    "p99_ms": p.p99_ms,
                    "max_ms": p.max_ms,
                    "cpu_us_per_msg": p.cpu_us_per_msg,
                    "rss_mb": p.rss_mb,
                    "client_cpu_share": p.client_cpu_share,
                },
                role=ROLES.get(p.server, "peer"),
                params={"server": p.server, "rate_hz": p.rate, "n": p.n, "passed": p.passed},
                note=p.note if p.passed else ("FAIL " + p.note).strip(),
            )
        )
    return rows


# -- a PNG without plotting libraries -----------------------------------------------------

# 3x5 glyphs, rows top to bottom, 3 bits each: enough for axis labels and a legend.
_FONT = {
    "0": "7555 7",
    "1": "2622 7",
    "2": "7174 7",
    "3": "7171 7",
    "4": "5571 1",
    "5": "7471 7",
    "6": "7475 7",
    "7": "7111 1",
    "8": "7575 7",
    "9": "7571 7",
    " ": "0000 0",
    ".": "0000 2",
    ",": "0002 4",
    "-": "0070 0",
    "/": "1124 4",
    ":": "0202 0",
    "(": "2444 2",
    ")": "2111 2",
    "a": "0375 7",
    "b": "4475 7",
    "c": "0074 7",
    "d": "1175 7",
    "e": "0776 7",
    "f": "3272 2",
    "g": "0757 1",
    "h": "4475 5",
    "i": "2022 2",
    "j": "1011 6",
    "k": "4576 5",
    "l": "6222 7",
    "m": "0775 5",
    "n": "0065 5",
    "o": "0075 7",
    "p": "0757 4",
    "q": "0757 1",
    "r": "0074 4",
    "s": "0341 6",
    "t": "2722 3",
    "u": "0055 7",
    "v": "0055 2",
    "w": "0557 5",
    "x": "0052 5",
    "y": "0557 1",
    "z": "0736 7",
    "%": "5124 5",
    "=": "0707 0",
    ">": "4212 4",
    "<": "1242 1",
}
_COLORS = {
    ("crashd", 10.0): (31, 119, 180),
    ("crashd", 20.0): (23, 60, 140),
    ("websockets", 10.0): (255, 127, 14),
    ("websockets", 20.0): (200, 80, 0),
    ("node-ws", 10.0): (44, 160, 44),
    ("node-ws", 20.0): (20, 100, 20),
    ("hypercorn", 10.0): (148, 103, 189),
    ("hypercorn", 20.0): (100, 60, 140),
    ("c-floor", 10.0): (127, 127, 127),
    ("c-floor", 20.0): (60, 60, 60),
}


class _Canvas:
    def __init__(self, w: int, h: int) -> None:
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def dot(self, x: int, y: int, c: tuple[int, int, int], r: int = 0) -> None:
        for dx in range(-r, r + 1):
            for dy in range(-r, r + 1):
                if 0 <= x + dx < self.w and 0 <= y + dy < self.h:
                    i = ((y + dy) * self.w + x + dx) * 3
                    self.px[i : i + 3] = bytes(c)

    def line(self, x0: int, y0: int, x1: int, y1: int, c: tuple[int, int, int], r: int = 0) -> None:
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for s in range(steps + 1):
            self.dot(x0 + (x1 - x0) * s // steps, y0 + (y1 - y0) * s // steps, c, r)

    def text(
        self, x: int, y: int, s: str, c: tuple[int, int, int] = (0, 0, 0), scale: int = 2
    ) -> None:
        for ch in s.lower():
            rows = _FONT.get(ch, _FONT[" "]).replace(" ", "")
            for ry, bits in enumerate(rows):
                for rx in range(3):
                    if int(bits) >> (2 - rx) & 1:
                        for sx in range(scale):
                            for sy in range(scale):
                                self.dot(x + rx * scale + sx, y + ry * scale + sy, c)
            x += 4 * scale

    def png(self) -> bytes:
        raw = b"".join(
            b"\x00" + bytes(self.px[y * self.w * 3 : (y + 1) * self.w * 3]) for y in range(self.h)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            return (
                struct.pack("!I", len(data))
                + kind
                + data
                + struct.pack("!I", zlib.crc32(kind + data))
            )

        return (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack("!IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b"")
        )


def write_plot(path: Path, points: list[Point], rates: Sequence[float]) -> None:
    """p99 latency (ms, from the scheduled tick) against N; one panel per rate."""
    w, h, margin = 460, 360, 60
    canvas = _Canvas(w * len(rates), h + 10)
    ns = [p.n for p in points if p.p99_ms >= 0] or [1]
    xmax = max(ns) * 1.05
    ymax = 150.0
    for panel, rate in enumerate(rates):
        ox = panel * w
        x0, y0, x1, y1 = ox + margin, h - margin + 20, ox + w - 20, 40
        canvas.text(ox + margin, 12, f"p99 ms vs subscribers, {rate:g} hz")
        canvas.line(x0, y0, x1, y0, (0, 0, 0))
        canvas.line(x0, y0, x0, y1, (0, 0, 0))

        def xy(
            n: float, ms: float, x0: int = x0, x1: int = x1, y0: int = y0, y1: int = y1
        ) -> tuple[int, int]:
            ms = min(ms, ymax)
            return x0 + int((x1 - x0) * n / xmax), y0 - int((y0 - y1) * ms / ymax)

        for grid in (0, 50, 100, 150):
            _, y = xy(0, grid)
            canvas.line(x0 - 4, y, x0, y, (0, 0, 0))
            canvas.text(x0 - 34, y - 5, f"{grid}")
        _, ylim = xy(0, P99_LIMIT_MS)
        for x in range(x0, x1, 6):
            canvas.line(x, ylim, x + 2, ylim, (200, 0, 0))
        step = 2500 if xmax > 5000 else 500 if xmax > 1000 else 100
        for n in range(0, int(xmax) + 1, step):
            x, _ = xy(n, 0)
            canvas.line(x, y0, x, y0 + 4, (0, 0, 0))
            canvas.text(x - 12, y0 + 8, f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else f"{n}")
        legend_y = y1 + 4
        for server in SERVERS:
            pts = sorted(
                (
                    (p.n, p.p99_ms)
                    for p in points
                    if p.server == server and p.rate == rate and p.p99_ms >= 0
                ),
            )
            if not pts:
                continue
            color = _COLORS.get((server, rate), (90, 90, 90))
            prev = None
            for count, ms in pts:
                cur = xy(count, ms)
                canvas.dot(*cur, color, 3)
                if prev:
                    canvas.line(*prev, *cur, color, 1)
                prev = cur
            canvas.line(x1 - 150, legend_y + 4, x1 - 130, legend_y + 4, color, 1)
            canvas.text(x1 - 124, legend_y, server, color)
            legend_y += 16
    path.write_bytes(canvas.png())


def plot(rows: list[Row], directory: Path) -> list[tuple[Path, str]]:
    from bench import plots

    return plots.fanout(rows, directory)

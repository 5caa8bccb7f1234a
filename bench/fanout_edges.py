"""``python -m bench fanout --edges K``: the feed spread over an engine and K edges.

The topology of docs/scale-out.md, measured by the same load generator and pass rule
as the single-process hub (``bench/fanout.py``), in the same run. One launcher process
(what ``measure_point`` starts as "the server") starts:

* **the engine**: the real ``Hub`` and ``FeedRelay`` (a keyframe after every tick, as
  ``LiveState`` changes at every tick in ``crashd serve``) with its real outlet — the
  Unix relay socket (``UnixRelayServer``) or the Redis stream writer (``StreamOutlet``)
  — publishing the same ticks as the single-hub server, at the same rate; it has no
  subscribers of its own;
* **K edges**: the real ``EdgeHub`` fed by ``follow_unix`` / ``follow_stream``, served
  by today's ``FeedServer`` on one port (``SO_REUSEPORT``: the kernel spreads the load
  generator's connections over them), authenticating as the single-hub bench does.

Every process inherits the server's CPU pin (one core; the load generator has the
other), so each one's own CPU time is measured, per process, and projected: an edge's
CPU µs per *delivered* message (the edges' CPU over the measured window, divided by the
messages the load generator received) beside the single hub's, and the subscribers one
added core would carry at that cost. The engine's CPU per published frame is reported
at every N: it must not grow with the edges' subscribers.

The launcher tells the engine and the edges a common wall-clock start once the edges
hold all N subscribers; an edge's window opens halfway between the last warm-up tick and
the first measured one and closes 1.5 s after the last (as the single hub's does).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TRANSPORTS = ("unix", "redis", "coredis", "redis-py")
"""``redis`` is the default Redis link (``open_link``); ``coredis`` and ``redis-py`` pick
one client, to measure them side by side."""
SERVER_PREFIX = "edges-"
"""``edges-unix``, ``edges-redis`` …: the servers this module adds to ``fanout``."""


def on_redis(server: str) -> bool:
    return is_edges(server) and transport_of(server) != "unix"


START_TIMEOUT_S = 30.0


def transport_of(server: str) -> str:
    return server.removeprefix(SERVER_PREFIX)


def is_edges(server: str) -> bool:
    return server.startswith(SERVER_PREFIX) and transport_of(server) in TRANSPORTS


def command(server: str, edges: int, redis_url: str | None, args: list[str]) -> list[str]:
    """The launcher's command line (``args``: n, rate, ticks, warmup, size)."""
    return [
        sys.executable, "-m", "bench", "fanout", "--serve-edges",
        transport_of(server), str(edges), redis_url or "-", *args,
    ]  # fmt: skip


# -- the launcher ---------------------------------------------------------------------------


class _Lines:
    """A child's stdout, line by line with a timeout: read from the descriptor itself,
    so a line already read into a buffer is never left waiting behind ``select``."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.buffer = b""
        self.eof = False

    def next(self, timeout: float) -> list[str]:
        """The next line's words; ``[]`` at the end of output or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return []
            chunk = os.read(self.fd, 65536)
            self.eof = not chunk
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode().split(maxsplit=1) if line or not self.eof else []


def serve_edges(
    transport: str, edges: int, redis_url: str, n: int, rate: float, ticks: int, warmup: int,
    size: int,
) -> None:  # fmt: skip
    """Start the engine and the edges, print ``READY port``, run the ticks, print RESULT."""
    tmp = tempfile.mkdtemp(prefix="crashd-bench-edges-")
    where = str(Path(tmp) / "relay.sock") if transport == "unix" else redis_url
    prefix = f"bench-fanout-{os.getpid()}"
    part = [sys.executable, "-m", "bench", "fanout", "--edge-part"]
    common = [transport, where, prefix, str(n), str(rate), str(ticks), str(warmup), str(size)]
    procs: list[subprocess.Popen[bytes]] = []

    def start(role: str, port: str) -> tuple[subprocess.Popen[bytes], _Lines, str]:
        proc = subprocess.Popen([*part, role, port, *common], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)  # fmt: skip
        procs.append(proc)
        lines = _Lines(proc)
        words = lines.next(START_TIMEOUT_S)
        if words[:1] != ["READY"]:
            raise RuntimeError(f"the {role} did not start ({words!r})")
        return proc, lines, words[1] if len(words) > 1 else ""

    def tell(proc: subprocess.Popen[bytes], line: str) -> None:
        assert proc.stdin is not None
        proc.stdin.write(line.encode())
        proc.stdin.flush()

    try:
        engine = start("engine", "0")
        edge_parts = [start("edge", "0")]
        port = edge_parts[0][2]
        edge_parts += [start("edge", port) for _ in range(edges - 1)]
        print(f"READY {port}", flush=True)
        # Wait for the load generator's N subscribers, wherever the kernel put them.
        counts = [0] * edges
        deadline = time.monotonic() + 60 + n / 100
        while sum(counts) < n and time.monotonic() < deadline:
            for i, (_, lines, _) in enumerate(edge_parts):
                words = lines.next(0.05)
                if words[:1] == ["SUBS"]:
                    counts[i] = int(words[1])
                elif lines.eof:
                    raise RuntimeError("an edge exited")
        w0 = time.time() + 0.5
        for proc, _, _ in [engine, *edge_parts]:
            tell(proc, f"GO {w0!r}\n")
        results: list[dict[str, Any]] = []
        end = time.monotonic() + ticks / rate + 30
        for _, lines, _ in [engine, *edge_parts]:
            while time.monotonic() < end:
                words = lines.next(max(0.1, end - time.monotonic()))
                if words[:1] == ["RESULT"]:
                    results.append(json.loads(words[1]))
                    break
                if not words:
                    break
        if len(results) == 1 + edges:
            engine_result, edge_results = results[0], results[1:]
            print(
                "RESULT "
                + json.dumps(
                    {
                        "cpu_s": sum(r["cpu_s"] for r in edge_results),
                        "rss_kb": max(r["rss_kb"] for r in edge_results),
                        "engine_cpu_s": engine_result["cpu_s"],
                        "engine_frames": engine_result["frames"],
                        "edges": edge_results,
                    }
                ),
                flush=True,
            )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        shutil.rmtree(tmp, ignore_errors=True)


# -- the parts ------------------------------------------------------------------------------


class _Live:
    """The engine's live state, as ``LiveState`` rebuilds it at every tick."""

    def __init__(self) -> None:
        self._public: dict[str, Any] = {"m": 100}

    def public(self) -> dict[str, Any]:
        return self._public

    def rest_body(self) -> bytes:
        return json.dumps(self._public).encode()

    def change(self, m: int) -> None:
        self._public = {"m": m}


async def _go() -> float:
    """The launcher's common start (wall clock), read off stdin in a thread."""
    import trio

    line = await trio.to_thread.run_sync(sys.stdin.readline)
    return float(line.split()[1])


async def _sleep_until_wall(when: float) -> None:
    import trio

    await trio.sleep(max(0.0, when - time.time()))


def run_part(role: str, port: int, transport: str, where: str, prefix: str, n: int,
             rate: float, ticks: int, warmup: int, size: int) -> None:  # fmt: skip
    import trio

    from bench.fanout import _rss_kb, _tick_json
    from crashd.api.edge.links import open_link
    from crashd.api.edge.mirror import EdgeHub
    from crashd.api.edge.relay import FeedRelay
    from crashd.api.edge.streams import StreamOutlet, follow_stream
    from crashd.api.edge.unix import UnixRelayServer, follow_unix
    from crashd.api.feed import FeedConfig, FeedServer, Principal
    from crashd.api.feed.hub import Hub
    from crashd.api.wire import LIVE_MULTIPLIER, SCOPE_GAME_STATE

    async def engine() -> None:
        live = _Live()
        hub = Hub(snapshot=lambda channel: live.public())
        relay = FeedRelay(hub, live, tick_s=1 / rate)
        async with contextlib.AsyncExitStack() as stack:
            link = None
            if transport != "unix":
                link = await stack.enter_async_context(redis_link(where))
            nursery = await stack.enter_async_context(trio.open_nursery())
            if link is None:
                await nursery.start(UnixRelayServer(relay, Path(where)).serve)
            else:
                await nursery.start(StreamOutlet(relay, link, prefix=prefix).run)
            nursery.start_soon(relay.run)
            print("READY", flush=True)
            w0 = await _go()
            start = trio.current_time() + (w0 - time.time())
            pad = max(0, size - len(_tick_json(ticks, int(w0 * 1e6), "")))
            cpu0 = 0.0
            for k in range(ticks):
                await trio.sleep_until(start + k / rate)
                if k == warmup:
                    cpu0 = time.process_time()
                live.change(100 + k)
                hub.publish(
                    LIVE_MULTIPLIER,
                    {"type": "tick", "n": k, "t": round((w0 + k / rate) * 1e6), "m": 100 + k,
                     "pad": "x" * pad},
                )  # fmt: skip
            cpu = time.process_time() - cpu0
            print("RESULT " + json.dumps({"cpu_s": cpu, "frames": ticks - warmup}), flush=True)
            await trio.sleep(3600)  # serve the edges until the launcher ends it

    async def edge() -> None:
        principal = Principal("key_bench", "bench", "sandbox", frozenset({SCOPE_GAME_STATE}))
        config = FeedConfig(
            heartbeat_interval=3600, heartbeat_timeout=7200, max_connections=n + 100,
            reuse_port=True,
        )  # fmt: skip
        print(f"edge {os.getpid()}: starting", file=sys.stderr, flush=True)
        hub = EdgeHub()
        server = FeedServer(hub, lambda c: principal if c == "bench" else None, config)
        async with contextlib.AsyncExitStack() as stack:
            link = None
            if transport != "unix":
                link = await stack.enter_async_context(redis_link(where))
            nursery = await stack.enter_async_context(trio.open_nursery())
            if link is None:
                await nursery.start(follow_unix, Path(where), hub, lambda epoch: None)
            else:
                follower = link

                async def follow(task_status: trio.TaskStatus[None]) -> None:
                    await follow_stream(
                        follower, hub, lambda epoch: None, prefix=prefix, task_status=task_status
                    )

                await nursery.start(follow)
            print(f"edge {os.getpid()}: following {transport}", file=sys.stderr, flush=True)
            bound = await nursery.start(server.serve, "127.0.0.1", port)
            print(f"READY {bound}", flush=True)
            go = trio.Event()

            async def report_subscribers() -> None:
                told = -1
                while not go.is_set():
                    count = hub.subscriber_count(LIVE_MULTIPLIER)
                    if count != told:
                        print(f"SUBS {count}", flush=True)
                        told = count
                    await trio.sleep(0.02)

            nursery.start_soon(report_subscribers)
            w0 = await _go()
            go.set()
            await _sleep_until_wall(w0 + (warmup - 0.5) / rate)
            cpu0 = time.process_time()
            subs = hub.subscriber_count(LIVE_MULTIPLIER)
            await _sleep_until_wall(w0 + (ticks - 1) / rate + 1.5)
            cpu = time.process_time() - cpu0
            result = {"cpu_s": cpu, "rss_kb": _rss_kb(), "subscribers": subs}
            print("RESULT " + json.dumps(result), flush=True)
            os._exit(0)  # closing thousands of connections politely is not what we measure

    def redis_link(url: str) -> Any:
        if transport in ("coredis", "redis-py"):
            return open_link(url, transport)  # type: ignore[arg-type]
        return open_link(url)

    trio.run(engine if role == "engine" else edge)

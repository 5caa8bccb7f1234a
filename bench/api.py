"""``python -m bench api``: what the REST API costs, next to the framework's own limit.

A real crashd server (``crashd.api.server.run_blocking``: engine, ledger, feed, Hypercorn,
the app from ``crashd.api.rest.app.create_app``, GC tuning — exactly what ``crashd serve`` runs) is
started in a child process on 127.0.0.1, pinned to one core; the load generator runs in
this process, pinned to the other. The only difference from ``crashd serve``: the
child's app gets one extra, bench-only route, ``GET /bench/hello`` (a constant 5-byte
body), registered on the app *after* ``create_app`` built it, so it goes through the
same ASGI middleware (request id, access log), before/after-request hooks (rate limit
accounting) and Hypercorn configuration as every product route. It is never part of
the product's routes. It measures the framework's floor on this machine: no route can
be faster than it.

Measured, each for ``--seconds`` (or ``--max-requests``, whichever comes first), by
``--concurrency`` clients each holding one keep-alive connection:

* ``GET /bench/hello``: the framework limit;
* ``GET /api/v1/game/state``: API key check, scope, engine snapshot, JSON;
* the bet path ``POST /api/v1/bets/reserve`` → ``POST /api/v1/bets/confirm``: two
  signed (HMAC), idempotent, durable writes (an Idempotency-Key record each, the ledger's
  group commit with ``synchronous=FULL`` unless ``--synchronous NORMAL``), the engine
  placing the bet. Users are funded from the sandbox faucet first; stakes of 1 spread
  over ``--users`` users. A long round queues the next round's bets for as long as it
  flies, so a user can reach ``max_bets_per_user`` (10 here) or the round its bet cap:
  those ``too_many_bets``/``round_full`` answers are counted apart (``refused_n``) and
  every other refusal fails the row's check.

Reported per row: requests (and failures), requests answered 2xx per second, latency p50/p99 (for the bet
path: the whole reserve→confirm path), the server process's CPU use during the row
(≈100% means the server, not the generator, was the limit) and requests/s as a
fraction of the hello row.

The load generator speaks HTTP/1.1 over raw Trio sockets with pre-built requests
(``--client raw``, the default): a per-request cost of a few µs, where httpx costs more
CPU per request than the server's hello route, so it would measure itself
(``--client httpx`` is there to cross-check). With ``wrk`` installed (Debian package
``wrk``) ``--wrk`` runs the two GET rows with it as well.

Numbers are noisy on a shared machine: pin (default), repeat (``--repeat``) and compare
rows of one run, never figures across runs. A default run takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from bench.child import HELLO_PATH, await_ready, child_env, serve_with_hello
from bench.suite import Context, Progress, Skip, clamp
from bench.suite import Row as SuiteRow
from bench.suite import ratio as ratio_of
from crashd.engine import reasons

NAME = "api"
T_API = "REST API: reads and the signed bet path beside the framework's hello route"
STATE_PATH = "/api/v1/game/state"
SCOPES = "read:game_state,read:balance,write:bet"
GENEROUS_RATE_LIMITS = {
    "rate_limit_read": 10**7,
    "rate_limit_write": 10**7,
    "rate_limit_feed": 10**7,
    "rate_limit_anonymous": 10**7,
}


# --------------------------------------------------------------------------- server side


def _child_config(directory: Path, synchronous: str, log_level: str) -> Any:
    from crashd.api.config import SETTINGS, Config

    names = {s.name for s in SETTINGS}
    settings: dict[str, Any] = dict(
        host="127.0.0.1",
        port=0,
        feed_port=0,
        database=directory / "crashd.sqlite3",
        chain_file=directory / "crashd-chain.json",
        chain_length=100_000,
        environment="sandbox",
        synchronous=synchronous,
        log_level=log_level,
        betting_ms=2_000,
        pause_ms=500,
        max_bets_per_user=10,
        graceful_timeout=2.0,
        stop_wait_s=1.0,
    )
    settings.update({k: v for k, v in GENEROUS_RATE_LIMITS.items() if k in names})
    return Config(**settings)


def serve_child(directory: Path, synchronous: str, log_level: str) -> int:
    """The child: ``crashd serve``'s own code path, plus the bench-only hello route."""
    return serve_with_hello(_child_config(directory, synchronous, log_level))


@dataclass
class Server:
    proc: subprocess.Popen[str]
    host: str
    port: int
    key: str
    signing_secret: str

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(directory: Path, *, synchronous: str, log_level: str, cpu: int | None) -> Server:
    from crashd.api.security.keys import KeyStore

    config = _child_config(directory, synchronous, log_level)
    store = KeyStore(config.database)
    try:
        created = store.create("sandbox", SCOPES, partner_id="bench", label="bench api")
    finally:
        store.close()
    cmd = [
        sys.executable,
        "-m",
        "bench",
        "api",
        "--serve-child",
        str(directory),
        "--synchronous",
        synchronous,
        "--log-level",
        log_level,
    ]
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    log = (directory / "server.log").open("w")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=directory, env=child_env()
    )
    log.close()
    host, port = await_ready(proc, directory, NAME)
    return Server(
        proc,
        host,
        port,
        created.secret,
        getattr(created, "signing_secret", "") or "",
    )


# --------------------------------------------------------------------------- clients


class HttpError(Exception):
    pass


class RawConnection:
    """One keep-alive HTTP/1.1 connection; requests are complete byte strings. A
    response saying ``Connection: close`` (Hypercorn says it on a connection's
    1,000th response, its ``keep_alive_max_requests``) is honoured: the next request
    goes on a new connection, as any HTTP client does, rather than onto a socket the
    server is closing."""

    def __init__(self, stream: trio.SocketStream, host: str, port: int) -> None:
        self.stream = stream
        self.host, self.port = host, port
        self.buffer = b""
        self.closing = False
        self.reconnects = 0

    @classmethod
    async def open(cls, host: str, port: int) -> RawConnection:
        return cls(await trio.open_tcp_stream(host, port), host, port)

    async def request(self, data: bytes) -> tuple[int, bytes]:
        if self.closing:
            await self.stream.aclose()
            self.stream = await trio.open_tcp_stream(self.host, self.port)
            self.buffer = b""
            self.closing = False
            self.reconnects += 1
        await self.stream.send_all(data)
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end >= 0:
                break
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise HttpError("connection closed by the server")
            self.buffer += chunk
        head = self.buffer[:end].lower()
        status = int(head[9:12])
        match = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
        if match is None:
            raise HttpError("response without Content-Length")
        length = int(match[1])
        start = end + 4
        while len(self.buffer) < start + length:
            chunk = await self.stream.receive_some(65536)
            if not chunk:
                raise HttpError("connection closed mid-body")
            self.buffer += chunk
        body = self.buffer[start : start + length]
        self.buffer = self.buffer[start + length :]
        if re.search(rb"\r\nconnection:[^\r]*\bclose\b", head):
            self.closing = True
        return status, body

    async def aclose(self) -> None:
        await self.stream.aclose()


class HttpxConnection:
    """The same interface over an ``httpx.AsyncClient`` (one keep-alive connection)."""

    def __init__(self, client: Any, base: str) -> None:
        self.client = client
        self.base = base

    @classmethod
    async def open(cls, host: str, port: int) -> HttpxConnection:
        import httpx

        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        return cls(httpx.AsyncClient(limits=limits, timeout=30), f"http://{host}:{port}")

    async def request(self, data: bytes) -> tuple[int, bytes]:
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = lines[0].split(" ")
        headers = dict(line.split(": ", 1) for line in lines[1:])
        headers.pop("Host", None)
        headers.pop("Content-Length", None)
        r = await self.client.request(
            method, self.base + target, headers=headers, content=body or None
        )
        return r.status_code, r.content

    async def aclose(self) -> None:
        await self.client.aclose()


Connection = RawConnection | HttpxConnection


class Requests:
    """Builds request bytes for one server and key (signing writes when required)."""

    def __init__(self, server: Server) -> None:
        self.host = f"{server.host}:{server.port}"
        self.key = server.key
        self.secret = server.signing_secret

    def get(self, path: str, auth: bool = True) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}"]
        if auth:
            lines.append(f"Authorization: Bearer {self.key}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def post(self, path: str, body: dict[str, Any]) -> bytes:
        raw = json.dumps(body, separators=(",", ":")).encode()
        key = uuid.uuid4().hex
        headers = {
            "Host": self.host,
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            "Content-Length": str(len(raw)),
            "Idempotency-Key": key,
        }
        if self.secret:
            from crashd.api.security import signing

            headers.update(
                signing.sign_request(self.secret, "POST", path, raw, key, int(time.time()))
            )
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return head.encode() + b"\r\n" + raw


# --------------------------------------------------------------------------- load


@dataclass
class Row:
    name: str
    requests: int = 0
    failures: int = 0
    operations: int = 0
    ok: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    """Server CPU seconds per wall second during the row (1.0 = one core busy)."""
    statuses: dict[str, int] = field(default_factory=dict)
    """Answers by status, a problem's ``code`` beside it: ``{"201": 7719, "409 too_many_bets": 125}``."""
    refused: int = 0
    """Operations the game's own limits refused (``RULE_REFUSALS``): the load's shape, not a fault."""

    @property
    def rate(self) -> float:
        """Requests answered 2xx per second: a refusal (the round's limits) is a cheaper
        answer than the work the row measures, so it does not count towards the rate.
        A row without recorded answers (wrk's) counts every request."""
        if not self.seconds:
            return 0.0
        if not self.statuses:
            return self.requests / self.seconds
        return sum(n for label, n in self.statuses.items() if label.startswith("2")) / self.seconds


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


Operation = Callable[[Connection, int], Awaitable[tuple[int, bool, dict[str, int]]]]
"""One measured operation on a connection (worker index given): (requests sent, ok, answers)."""

RULE_REFUSALS = frozenset({reasons.TOO_MANY_BETS, reasons.ROUND_FULL})
"""Problem codes that are the round's own limits doing their job: a load that bets faster
than rounds end fills them (``max_bets_per_user`` per user, the round's bet cap) however
many users it spreads over, because a round runs as long as its crash point says. Counted
apart from failures; any other refusal fails the row's check."""


def answer(status: int, body: bytes) -> str:
    """An answer's label: its status, and a problem's ``code`` when it is one."""
    if status < 300:
        return str(status)
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        code = None
    return f"{status} {code}" if isinstance(code, str) else str(status)


def is_rule_refusal(label: str) -> bool:
    return label.partition(" ")[2] in RULE_REFUSALS


async def run_load(
    server: Server,
    name: str,
    op: Operation,
    *,
    opener: Callable[..., Awaitable[Connection]],
    concurrency: int,
    seconds: float,
    max_ops: int,
) -> Row:
    row = Row(name)
    conns = [await opener(server.host, server.port) for _ in range(concurrency)]
    started = time.perf_counter()
    deadline = started + seconds
    cpu0 = server.cpu_seconds()

    async def worker(index: int, conn: Connection) -> None:
        while row.operations < max_ops and time.perf_counter() < deadline:
            row.operations += 1  # claimed before the await: the count bound is exact
            t0 = time.perf_counter()
            try:
                sent, ok, statuses = await op(conn, index)
            except (HttpError, trio.BrokenResourceError, OSError):
                row.failures += 1
                conns[index] = conn = await opener(server.host, server.port)
                continue
            row.latencies_ms.append((time.perf_counter() - t0) * 1000)
            row.requests += sent
            if ok:
                row.ok += 1
            elif all(is_rule_refusal(label) for label in statuses if not label.startswith("2")):
                row.refused += 1
            else:
                row.failures += 1
            for status, n in statuses.items():
                row.statuses[status] = row.statuses.get(status, 0) + n

    async with trio.open_nursery() as nursery:
        for i, conn in enumerate(conns):
            nursery.start_soon(worker, i, conn)
    row.seconds = time.perf_counter() - started
    row.server_cpu = (server.cpu_seconds() - cpu0) / row.seconds
    for conn in conns:
        await conn.aclose()
    return row


def get_op(request: bytes, expect: int = 200) -> Operation:
    async def op(conn: Connection, index: int) -> tuple[int, bool, dict[str, int]]:
        status, body = await conn.request(request)
        return 1, status == expect, {answer(status, body): 1}

    return op


def bet_op(reqs: Requests, users: list[str], concurrency: int) -> Operation:
    turn = [0] * concurrency

    async def op(conn: Connection, index: int) -> tuple[int, bool, dict[str, int]]:
        # Each worker cycles through its own slice of the users.
        mine = users[index::concurrency]
        user = mine[turn[index] % len(mine)]
        turn[index] += 1
        status, body = await conn.request(
            reqs.post("/api/v1/bets/reserve", {"user_id": user, "amount": 1})
        )
        if status != 201:
            return 1, False, {answer(status, body): 1}
        hold = json.loads(body)["hold_id"]
        status2, body2 = await conn.request(
            reqs.post("/api/v1/bets/confirm", {"user_id": user, "hold_id": hold})
        )
        if status2 == 201:
            return 2, True, {"201": 2}
        return 2, False, {"201": 1, answer(status2, body2): 1}

    return op


def one_shot_op(reqs: Requests, users: list[str], concurrency: int) -> Operation:
    """``POST /api/v1/bets``: a bet in one signed, durable request."""
    turn = [0] * concurrency

    async def op(conn: Connection, index: int) -> tuple[int, bool, dict[str, int]]:
        mine = users[index::concurrency]
        user = mine[turn[index] % len(mine)]
        turn[index] += 1
        status, body = await conn.request(reqs.post("/api/v1/bets", {"user_id": user, "amount": 1}))
        return 1, status == 201, {answer(status, body): 1}

    return op


async def fund(
    server: Server, reqs: Requests, users: list[str], amount: int, concurrency: int
) -> None:
    """Credit every user from the sandbox faucet (``concurrency`` connections)."""

    async def worker(mine: list[str]) -> None:
        conn = await RawConnection.open(server.host, server.port)
        try:
            for user in mine:
                status, body = await conn.request(
                    reqs.post("/api/v1/sandbox/faucet", {"user_id": user, "amount": amount})
                )
                if status != 201:
                    raise SystemExit(f"bench api: funding {user} failed: {status} {body[:300]!r}")
        finally:
            await conn.aclose()

    async with trio.open_nursery() as nursery:
        for i in range(concurrency):
            nursery.start_soon(worker, users[i::concurrency])


def run_wrk(
    server: Server, path: str, *, auth: bool, concurrency: int, seconds: float
) -> Row | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    cmd = [
        wrk,
        "-t1",
        f"-c{concurrency}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        f"http://{server.host}:{server.port}{path}",
    ]
    if auth:
        cmd[1:1] = ["-H", f"Authorization: Bearer {server.key}"]
    cpu0, t0 = server.cpu_seconds(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30).stdout
    wall = time.perf_counter() - t0
    row = Row(f"wrk {path}")
    m = re.search(r"(\d+) requests in ([\d.]+)s", out)
    if m is None:
        return None
    row.requests, row.seconds = int(m[1]), float(m[2])
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    row.failures = int(m[1]) if m else 0
    for p in ("50", "99"):
        m = re.search(rf"\b{p}%\s+([\d.]+)(us|ms|s)\b", out)
        if m:
            scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[m[2]]
            row.latencies_ms.append(float(m[1]) * scale)  # [p50, p99], read back below
    row.server_cpu = (server.cpu_seconds() - cpu0) / wall
    return row


# --------------------------------------------------------------------------- report


def print_table(rows: list[Row], hello: Row, *, concurrency: int, client: str) -> None:
    print(
        f"\n{'route':38} {'requests':>9} {'failed':>7} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'srv CPU':>7} {'vs hello':>8}"
    )
    for row in rows:
        if row.name.startswith("wrk"):
            p50, p99 = (row.latencies_ms + [float("nan")] * 2)[:2]
        else:
            p50, p99 = percentile(row.latencies_ms, 50), percentile(row.latencies_ms, 99)
        ratio = row.rate / hello.rate if hello.rate else float("nan")
        print(
            f"{row.name:38} {row.requests:>9} {row.failures:>7} {row.rate:>8.0f} {p50:>7.2f} {p99:>7.2f} "
            f"{row.server_cpu:>6.0%} {ratio:>8.2f}"
        )
    print(
        f"\n{concurrency} keep-alive connections, client {client}; bet path latency is reserve+confirm; "
        "'vs hello' = req/s relative to the bare hello route on the same server."
    )


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench api", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per row (default 10)")
    parser.add_argument(
        "--max-requests", type=int, default=200_000, help="per row: operations at most"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="keep-alive connections (default 16)"
    )
    parser.add_argument(
        "--users",
        type=int,
        default=4000,
        help="funded users the bet rows cycle through (default 4000: a round queues bets for "
        "as long as the previous one flies, and a user may hold 10 bets in one round; what the "
        "round's limits still refuse is counted apart from failures)",
    )
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw")
    parser.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default="FULL",
        help="the ledger's durability (default FULL, the server's default)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=("debug", "info", "warning", "error"),
        help="the server's (info: one access-log line per request, as served)",
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin server and generator to cores"
    )
    parser.add_argument(
        "--wrk", action="store_true", help="also run the GET rows with wrk, if installed"
    )
    parser.add_argument("--repeat", type=int, default=1, help="repeat the rows (same server)")
    parser.add_argument("--json", type=Path, help="also write the rows to this file")
    parser.add_argument("--quick", action="store_true", help="2 s rows: a smoke run of every path")
    parser.add_argument("--serve-child", type=Path, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.serve_child is not None:
        return serve_child(args.serve_child, args.synchronous, args.log_level)
    if args.quick:
        args.seconds = 2.0
    skips: list[Skip] = []
    rows, _, problems = execute(args, None, skips)
    for s in skips:
        print(f"api: skipped {s.what}: {s.why}")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "requests": r.requests,
                        "failures": r.failures,
                        "seconds": r.seconds,
                        "rate": r.rate,
                        "p50_ms": percentile(r.latencies_ms, 50),
                        "p99_ms": percentile(r.latencies_ms, 99),
                        "server_cpu": r.server_cpu,
                        "statuses": r.statuses,
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
    return 0 if all(r.failures == 0 for r in rows) and not problems else 1


def run(ctx: Context) -> list[SuiteRow]:
    if ctx.quick:
        argv = ["--seconds", "2"]
    else:
        # Start-up, funding and three 1 s warm-ups take ~15 s; three rows share the rest.
        argv = ["--seconds", f"{clamp((ctx.seconds - 20) / 3, 2, 10):.0f}"]
    if shutil.which("wrk"):
        argv.append("--wrk")
    else:
        ctx.skip(
            "the wrk cross-check of the GET rows", "wrk is not installed (apt-get install wrk)"
        )
    ctx.note("equivalent: python -m bench api " + " ".join(argv))
    skips: list[Skip] = []
    rows, args, problems = execute(parser().parse_args(argv), ctx.progress, skips)
    for s in skips:
        ctx.skip(s.what, s.why)
    return to_rows(rows, args, problems)


def execute(
    args: argparse.Namespace, progress: Progress | None, skips: list[Skip]
) -> tuple[list[Row], argparse.Namespace, list[str]]:
    """Start the server, measure the rows, stop it and audit its ledger (money conserved
    after the load). Returns (rows, args, the audit's problems)."""
    cores = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cores) >= 2
    server_cpu, client_cpu = (cores[0], cores[1]) if pin else (None, None)
    opener = RawConnection.open if args.client == "raw" else HttpxConnection.open
    args.progress = progress
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        if progress is not None:
            progress.update(0, 1, "starting the server")
        server = start_server(
            Path(tmp), synchronous=args.synchronous, log_level=args.log_level, cpu=server_cpu
        )
        try:
            if client_cpu is not None:
                os.sched_setaffinity(0, {client_cpu})
            print(
                f"server pid {server.proc.pid} on {server.host}:{server.port}"
                + (
                    f", pinned: server cpu {server_cpu}, generator cpu {client_cpu}"
                    if pin
                    else ", not pinned"
                )
                + f"; ledger synchronous={args.synchronous}; log level {args.log_level}"
                + ("; writes signed" if server.signing_secret else "")
            )
            rows = trio.run(_measure, server, args, opener)
        finally:
            server.stop()
            if client_cpu is not None:
                os.sched_setaffinity(0, set(cores))
        problems = audit_ledger(_child_config(Path(tmp), args.synchronous, "error").database)
    print(
        "the server's ledger after the load: "
        + ("audit passed (money conserved)" if not problems else "; ".join(problems[:5]))
    )
    if args.wrk and not shutil.which("wrk"):
        skips.append(Skip(NAME, "the wrk cross-check", "wrk is not installed"))
    if progress is not None:
        progress.done()
    return rows, args, problems


def audit_ledger(path: Path) -> list[str]:
    from crashd.engine.ledger.store import Store, audit

    store = Store(path, "OFF")
    try:
        return list(audit(store.conn).problems)
    finally:
        store.close()


def to_rows(rows: list[Row], args: argparse.Namespace, problems: list[str]) -> list[SuiteRow]:
    out = []
    hello = next((r for r in rows if r.name.startswith(f"GET {HELLO_PATH}")), None)
    seen: dict[str, int] = {}
    for row in rows:
        if row.name.startswith("wrk"):
            p50, p99 = (row.latencies_ms + [float("nan")] * 2)[:2]
        else:
            p50, p99 = percentile(row.latencies_ms, 50), percentile(row.latencies_ms, 99)
        if row.name.startswith("GET " + HELLO_PATH):
            key, role = "hello", "limit"
        elif row.name.startswith("GET " + STATE_PATH):
            key, role = "state", "subject"
        elif row.name.startswith("POST /api/v1/bets "):
            key, role = "bet_once", "subject"
        elif row.name.startswith("POST"):
            key, role = "bet_path", "subject"
        else:
            key, role = "wrk" + row.name[4:].replace("/", "_"), "limit"
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > 1:
            key = f"{key}/{seen[key] - 1}"
        metrics = {
            "req_per_s": row.rate,
            "p50_ms": p50,
            "p99_ms": p99,
            "server_cpu_share": row.server_cpu,
            "requests_n": float(row.requests),
            "failures_n": float(row.failures),
            "refused_n": float(row.refused),
        }
        checks = {"no request failed (a round's own bet limits excepted)": row.failures == 0}
        if key.startswith(("bet_path", "bet_once")):
            metrics["bets_per_s"] = row.ok / row.seconds if row.seconds else float("nan")
            checks[
                "the server's ledger audits clean after the load (money conserved)"
            ] = not problems
        out.append(
            SuiteRow(
                NAME,
                T_API,
                key,
                {
                    "hello": f"`GET {HELLO_PATH}` (a bare route on the same app: the framework's limit)",
                    "state": f"`GET {STATE_PATH}`",
                    "bet_path": "`POST /bets/reserve` → `POST /bets/confirm` (signed, durable)",
                    "bet_once": "`POST /bets`: a bet in one request (signed, durable)",
                }.get(key.split("/")[0], row.name),
                metrics,
                {"× hello": ratio_of(row.rate, hello.rate if hello else float("nan"))},
                role=role,
                params={
                    "concurrency": args.concurrency,
                    "client": args.client,
                    "synchronous": args.synchronous,
                    "log_level": args.log_level,
                    "seconds": args.seconds,
                    "users": args.users,
                },
                checks=checks,
                headline="/" not in key and not key.startswith("wrk"),
                primary=["req_per_s", "p50_ms", "p99_ms", "× hello"],
                note="; ".join(problems[:3]) if key.startswith(("bet_path", "bet_once")) else "",
            )
        )
    return out


async def _measure(server: Server, args: argparse.Namespace, opener: Any) -> list[Row]:
    reqs = Requests(server)
    users = [f"bench-{i}" for i in range(max(args.users, args.concurrency))]
    await fund(server, reqs, users, 1_000_000, args.concurrency)
    load = dict(opener=opener, concurrency=args.concurrency, max_ops=args.max_requests)
    # Warm up every path once (imports, caches, first SQLite pages), unmeasured.
    await run_load(server, "warmup", get_op(reqs.get(HELLO_PATH, auth=False)), seconds=1.0, **load)
    await run_load(server, "warmup", get_op(reqs.get(STATE_PATH)), seconds=1.0, **load)
    await run_load(server, "warmup", bet_op(reqs, users, args.concurrency), seconds=1.0, **load)
    await run_load(
        server, "warmup", one_shot_op(reqs, users, args.concurrency), seconds=1.0, **load
    )
    all_rows: list[Row] = []
    progress = getattr(args, "progress", None)
    for rep in range(args.repeat):
        if progress is not None:
            progress.update(3 * rep, 3 * args.repeat, f"GET {HELLO_PATH}")
        hello = await run_load(
            server,
            f"GET {HELLO_PATH} (framework limit)",
            get_op(reqs.get(HELLO_PATH, auth=False)),
            seconds=args.seconds,
            **load,
        )
        if progress is not None:
            progress.update(3 * rep + 1, 3 * args.repeat, f"GET {STATE_PATH}")
        state = await run_load(
            server, f"GET {STATE_PATH}", get_op(reqs.get(STATE_PATH)), seconds=args.seconds, **load
        )
        if progress is not None:
            progress.update(3 * rep + 2, 3 * args.repeat, "the bet path")
        bets = await run_load(
            server,
            "POST reserve -> POST confirm (path)",
            bet_op(reqs, users, args.concurrency),
            seconds=args.seconds,
            **load,
        )
        if progress is not None:
            progress.update(3 * rep + 2, 3 * args.repeat, "one-shot bets")
        once = await run_load(
            server,
            "POST /api/v1/bets (one request per bet)",
            one_shot_op(reqs, users, args.concurrency),
            seconds=args.seconds,
            **load,
        )
        rows = [hello, state, bets, once]
        if args.wrk:
            for path, auth in ((HELLO_PATH, False), (STATE_PATH, True)):
                wrk_row = run_wrk(
                    server, path, auth=auth, concurrency=args.concurrency, seconds=args.seconds
                )
                if wrk_row is None:
                    print("wrk is not installed (Debian: apt-get install wrk); skipped")
                    break
                rows.append(wrk_row)
        print_table(rows, hello, concurrency=args.concurrency, client=args.client)
        print(
            f"bet path: {bets.ok / bets.seconds:.0f} paths/s ({bets.ok} bets placed, "
            f"{bets.failures} failed, {bets.refused} refused by the round's limits); one-shot: "
            f"{once.ok / once.seconds:.0f} bets/s ({once.failures} failed, {once.refused} refused)"
        )
        for row in rows:
            refused = {s: n for s, n in row.statuses.items() if not s.startswith("2")}
            if refused:
                print(f"  {row.name}: non-2xx answers {refused}")
        all_rows += rows
    return all_rows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def plot(rows: list[SuiteRow], directory: Path) -> list[tuple[Path, str]]:
    from bench import plots

    return plots.api(rows, directory)

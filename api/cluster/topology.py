"""``crashd cluster``: an engine, N feed edges and M API processes on this machine.

For demos and tests of the scale-out topology (docs/scale-out.md), each part its own
process, exactly as an operator would run them on several machines:

* Redis: the one given (``--redis-url``), or a private ``redis-server`` started here on
  a Unix socket in a temporary directory, without persistence;
* the engine: ``crashd serve`` with ``--relay-socket`` and ``--redis-url`` (its REST
  on ``--port``; its own feed listener on a free port);
* N edges: ``crashd edge`` on one shared ``--feed-port`` (``SO_REUSEPORT``), fed over the
  relay socket, their orders sent through Redis;
* M API processes: ``crashd api`` on one shared ``--api-port``, handing out the edges'
  feed URL.

The database is the engine's (``--database``; API processes and edges read it). Ctrl-C
(or SIGTERM) stops them all, API processes and edges first; if any part dies, the rest
are stopped and the command exits 1.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from crashd.api.wire import FEED_PATH

START_TIMEOUT_S = 60.0


class ClusterError(RuntimeError):
    """A part did not start (its stderr's last lines are in the message)."""


@dataclass
class Part:
    name: str
    proc: subprocess.Popen[str]
    url: str = ""


@dataclass
class ClusterPlan:
    edges: int = 2
    apis: int = 1
    host: str = "127.0.0.1"
    api_port: int = 8000
    engine_port: int = 8100
    feed_port: int = 8001
    redis_url: str | None = None
    workdir: Path = field(default_factory=Path.cwd)
    environment: dict[str, str] = field(default_factory=dict)
    """``CRASHD_*`` variables for every part (each reads the settings it knows)."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _crashd(*args: str) -> list[str]:
    return [sys.executable, "-m", "crashd.api", *args]


def _wait_line(part: Part, prefix: str, timeout: float) -> str:
    assert part.proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if part.proc.poll() is not None:
            break
        ready, _, _ = select.select([part.proc.stdout], [], [], 0.2)
        if ready:
            line = part.proc.stdout.readline()
            if line.startswith(prefix):
                return line.strip()
    raise ClusterError(f"{part.name} did not start (exit {part.proc.poll()})")


@contextlib.contextmanager
def private_redis(directory: Path) -> Iterator[str]:
    binary = shutil.which("redis-server") or shutil.which("valkey-server")
    if binary is None:
        raise ClusterError(
            "no redis-server here: install it (apt-get install redis-server) or give --redis-url"
        )
    sock = directory / "redis.sock"
    proc = subprocess.Popen(
        [binary, "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--save", "", "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError("redis-server did not start")
            time.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(5)
        if proc.poll() is None:
            proc.kill()


class Cluster:
    """The running parts (``start`` them, then ``stop``)."""

    def __init__(self, plan: ClusterPlan, redis_url: str, runtime: Path) -> None:
        self.plan = plan
        self.redis_url = redis_url
        self.runtime = runtime
        self.relay_socket = runtime / "relay.sock"
        self.engine: Part | None = None
        self.edges: list[Part] = []
        self.apis: list[Part] = []

    @property
    def parts(self) -> list[Part]:
        return [*self.apis, *self.edges, *([self.engine] if self.engine else [])]

    def _spawn(self, name: str, args: list[str]) -> Part:
        env = {**os.environ, **self.plan.environment}
        proc = subprocess.Popen(
            _crashd(*args),
            cwd=self.plan.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=None,
            text=True,
        )
        return Part(name, proc)

    def start(self) -> None:
        plan = self.plan
        common = ["--redis-url", self.redis_url, "--host", plan.host]
        self.engine = self._spawn(
            "engine",
            [
                "serve",
                *common,
                "--relay-socket", str(self.relay_socket),
                "--port", str(plan.engine_port),
                "--feed-port", "0",
            ],
        )  # fmt: skip
        self.engine.url = _wait_line(self.engine, "crashd: listening on ", START_TIMEOUT_S).split()[
            -1
        ]
        host = f"[{plan.host}]" if ":" in plan.host else plan.host
        feed_url = f"ws://{host}:{plan.feed_port}{FEED_PATH}"
        for i in range(plan.edges):
            part = self._spawn(
                f"edge {i + 1}",
                [
                    "edge",
                    *common,
                    "--relay-socket", str(self.relay_socket),
                    "--feed-port", str(plan.feed_port),
                ],
            )  # fmt: skip
            part.url = _wait_line(part, "crashd edge: feed on ", START_TIMEOUT_S).split()[-1]
            self.edges.append(part)
        for i in range(plan.apis):
            part = self._spawn(
                f"api {i + 1}",
                [
                    "api",
                    *common,
                    "--port", str(plan.api_port),
                    "--feed-url", feed_url,
                ],
            )  # fmt: skip
            part.url = _wait_line(part, "crashd api: listening on ", START_TIMEOUT_S).split()[-1]
            self.apis.append(part)

    def describe(self, out: TextIO) -> None:
        assert self.engine is not None
        print(f"crashd cluster: engine {self.engine.url} (pid {self.engine.proc.pid})", file=out)
        if self.edges:
            pids = ", ".join(str(p.proc.pid) for p in self.edges)
            print(
                f"crashd cluster: feed {self.edges[0].url} ({len(self.edges)} edges: pids {pids})",
                file=out,
            )
        if self.apis:
            pids = ", ".join(str(p.proc.pid) for p in self.apis)
            print(
                f"crashd cluster: api {self.apis[0].url} ({len(self.apis)} processes: pids {pids})",
                file=out,
            )
        print(f"crashd cluster: redis {self.redis_url}", file=out, flush=True)

    def dead(self) -> Part | None:
        return next((p for p in self.parts if p.proc.poll() is not None), None)

    def stop(self, timeout: float = 15.0) -> None:
        """API processes and edges first (the engine answers their last commands), then
        the engine (it finishes its round or voids it, and commits everything)."""
        for group in (self.apis + self.edges, [self.engine] if self.engine else []):
            for part in group:
                if part.proc.poll() is None:
                    part.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for part in group:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    part.proc.wait(max(0.1, deadline - time.monotonic()))
                if part.proc.poll() is None:
                    part.proc.kill()
                    part.proc.wait()


@contextlib.contextmanager
def running_cluster(plan: ClusterPlan) -> Iterator[Cluster]:
    """Start every part (Redis too unless given); stop them all on the way out."""
    with tempfile.TemporaryDirectory(prefix="crashd-cluster-") as tmp:
        runtime = Path(tmp)
        with contextlib.ExitStack() as stack:
            url = plan.redis_url or stack.enter_context(private_redis(runtime))
            cluster = Cluster(plan, url, runtime)
            try:
                cluster.start()
                yield cluster
            finally:
                cluster.stop()


def run_until_signalled(plan: ClusterPlan, out: TextIO = sys.stdout) -> int:
    stop = {"signal": 0}

    def on_signal(signum: int, frame: object) -> None:
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with running_cluster(plan) as cluster:
        cluster.describe(out)
        while not stop["signal"]:
            dead = cluster.dead()
            if dead is not None:
                print(
                    f"crashd cluster: {dead.name} exited ({dead.proc.returncode}): stopping",
                    file=sys.stderr,
                )
                return 1
            time.sleep(0.2)
    return 0

"""Shared helpers for the API tests: real servers on 127.0.0.1, real sockets.

(Named ``test_api_support`` to sit with the API tests; it holds no tests itself.)

* :func:`running_server` starts the real :func:`crashd.api.server.run_server` in-process on
  a random port and stops it gracefully afterwards.
* :func:`serving_app` serves an app built by the test (for test-only routes) with
  the same Hypercorn configuration the server uses.
* :func:`server_side_connections` counts the server's open TCP connections from
  ``/proc/net/tcp`` (Linux), which is how the keep-alive regression is observed.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import hypercorn.trio
import trio
from quart_trio import QuartTrio

from crashd.api.config import Config
from crashd.api.rest.app import create_app
from crashd.api.security.keys import KeyStore
from crashd.api.server import ServerInfo, _parse_bind, ensure_chain, hypercorn_config, run_server
from crashd.api.services import Services, open_services

REPO = Path(__file__).resolve().parents[2]
"""The project's root (tests/support/ is two levels below it)."""
PYTHON = sys.executable


def make_config(tmp_path: Path, **overrides: object) -> Config:
    """A server's config in ``tmp_path``; ``database=`` a PostgreSQL URL keeps its
    pepper in ``tmp_path`` too (not the working directory's ``crashd.pepper``)."""
    if "pepper_file" not in overrides and str(overrides.get("database", "")).startswith(
        "postgresql://"
    ):
        overrides["pepper_file"] = tmp_path / "crashd.pepper"
    base = Config(
        host="127.0.0.1",
        port=0,
        feed_port=0,
        database=tmp_path / "crashd.sqlite3",
        chain_file=tmp_path / "crashd-chain.json",
        chain_length=100,
        graceful_timeout=2.0,
        stop_wait_s=0.5,
    )
    return base.with_overrides(**overrides)


@asynccontextmanager
async def running_server(config: Config) -> AsyncIterator[ServerInfo]:
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(partial(run_server, config, shutdown=shutdown))
        try:
            yield info
        finally:
            shutdown.set()


@dataclass
class AppUnderTest:
    app: QuartTrio
    services: Services
    config: Config


def build_app(config: Config) -> AppUnderTest:
    """The real app with the real services, for tests that add their own routes."""
    chain = ensure_chain(config, out=io.StringIO())
    services = open_services(config, chain)
    return AppUnderTest(create_app(services), services, config)


@asynccontextmanager
async def serving_app(under_test: AppUnderTest) -> AsyncIterator[ServerInfo]:
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(
                    hypercorn.trio.serve,
                    under_test.app,
                    hypercorn_config(under_test.config),
                    shutdown_trigger=stop.wait,
                )
            )
            try:
                yield _parse_bind(binds[0])
            finally:
                stop.set()
    finally:
        under_test.services.close()


SIGNING_SECRETS: dict[str, str] = {}
"""API key -> its signing secret, for every key :func:`make_key` created (so a test
client holding only the key can sign its writes)."""


def serve_argv(config: Config, *extra: str) -> list[str]:
    """``crashd serve`` as a child process on ``config``'s files, playing short rounds
    (300 ms betting, 150 ms pause), on free ports, quietly; ``extra`` flags appended."""
    pepper = ["--pepper-file", str(config.pepper_file)] if config.pepper_file else []
    return [
        PYTHON, "-m", "crashd.api", "serve", "--port", "0", "--feed-port", "0",
        "--database", str(config.database), "--chain-file", str(config.chain_file),
        "--betting-ms", "300", "--pause-ms", "150", "--stop-wait-s", "1",
        "--log-level", "warning", *pepper, *extra,
    ]  # fmt: skip


async def read_url(proc: trio.Process) -> str:
    """The URL a ``crashd serve`` child prints once it listens (its first stdout line)."""
    assert proc.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await proc.stdout.receive_some(1)
        assert chunk, "server exited before listening"
        line += chunk
    return line.decode().split("listening on ", 1)[1].strip()


async def start_process(argv: list[str], **kwargs: Any) -> tuple[trio.Process, str]:
    """A ``crashd serve`` child on ``argv`` (``serve_argv``'s or a test's own), quiet on
    stderr unless ``kwargs`` say otherwise, and its URL once it listens (30 s at most)."""
    kwargs.setdefault("stderr", subprocess.DEVNULL)
    kwargs.setdefault("env", {**os.environ, "PYTHONPATH": str(REPO)})
    proc = await trio.lowlevel.open_process(argv, stdout=subprocess.PIPE, **kwargs)
    with trio.fail_after(30):
        return proc, await read_url(proc)


def make_key(
    config: Config, scopes: str, *, env: str = "sandbox", partner: str = "acme"
) -> tuple[str, str]:
    """Create a key in the server's database; returns (key id, secret)."""
    store = KeyStore(config.database, config.pepper_file)
    try:
        created = store.create(env, scopes, partner_id=partner, label="test")
    finally:
        store.close()
    SIGNING_SECRETS[created.secret] = created.signing_secret
    return created.key.id, created.secret


def server_side_connections(port: int) -> int:
    """Open (ESTABLISHED or CLOSE_WAIT) TCP connections whose *local* port is ``port``:
    the server's ends. A connection the server has closed is in FIN_WAIT/TIME_WAIT
    or gone, and is not counted."""
    open_states = {"01", "08"}  # ESTABLISHED, CLOSE_WAIT
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if local_port == port and fields[3] in open_states:
                count += 1
    return count


async def wait_until(predicate: Callable[[], bool], *, timeout: float = 10.0) -> bool:
    """Poll ``predicate`` until true or ``timeout``; returns its last value."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.02)
        return True
    return bool(predicate())

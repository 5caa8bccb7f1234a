"""Redis for the tests: the one CI starts (``CRASHD_TEST_REDIS_URL``), or a private
``redis-server`` started here on a Unix socket when the binary is installed.

A test that needs Redis asks for the ``redis_url`` fixture (tests/conftest.py): it
skips, saying why, on a machine with neither. A test that restarts Redis starts its own
``RedisServer`` (``private_redis``) and skips without the binary.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

URL_ENV = "CRASHD_TEST_REDIS_URL"
SKIP_NO_REDIS = (
    f"no Redis: set {URL_ENV} (CI's .ci/run does) or install redis-server "
    "(apt-get install redis-server) so the tests can start one"
)


def server_binary() -> str | None:
    return shutil.which("redis-server") or shutil.which("valkey-server")


class RedisServer:
    """A throwaway ``redis-server`` on a Unix socket, without persistence (as crashd
    expects: Redis carries frames and commands, never money)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        binary = server_binary()
        assert binary is not None, SKIP_NO_REDIS
        self.proc = subprocess.Popen(
            [
                binary,
                "--port", "0",
                "--unixsocket", str(self.socket),
                "--unixsocketperm", "700",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """Stop it, dropping everything it held (a crash or a restart without disk)."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.socket.exists():
            os.unlink(self.socket)

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def private_redis(directory: Path) -> Iterator[RedisServer]:
    server = RedisServer(directory)
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""The server child that the server benches (``api``, ``game``) run: ``crashd serve``'s
own code path with one bench-only route beside the product's, and its start-up handshake.

The child prints ``ready URL`` on stdout once it listens; everything else it says goes to
``server.log`` in its directory, which the parent quotes when the child fails to start.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
from pathlib import Path
from typing import Any

HELLO_PATH = "/bench/hello"
"""A bare route on the product's app: the framework's own floor for a request."""


def serve_with_hello(config: Any) -> int:
    """Run the product's server for ``config`` (a ``crashd.api.config.Config``), exactly as
    ``crashd serve`` builds it, with ``HELLO_PATH`` beside its routes."""
    import logging

    from quart import Blueprint, Response

    from crashd.api.server import run_blocking

    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    hello = Blueprint("bench_hello", __name__)

    @hello.get(HELLO_PATH)
    async def hello_route() -> Response:
        return Response(b"hello", content_type="text/plain")

    run_blocking(
        config, on_ready=lambda info: print(f"ready {info.url}", flush=True), blueprints=[hello]
    )
    return 0


def child_env() -> dict[str, str]:
    """The environment for a child that must import this checkout's ``bench``."""
    repo = Path(__file__).resolve().parent.parent
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(repo), os.environ.get("PYTHONPATH")])),
    }


def await_ready(
    proc: subprocess.Popen[str], directory: Path, what: str, timeout: float = 120.0
) -> tuple[str, int]:
    """The child's host and port once it says ``ready``; exits with its log's tail if it
    says anything else, dies, or stays silent for ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""
    match = re.fullmatch(r"ready http://(?P<host>[^:]+):(?P<port>\d+)\s*", line)
    if match is None:
        proc.kill()
        proc.wait()
        raise SystemExit(
            f"bench {what}: the server did not start: {line!r}\n"
            + (directory / "server.log").read_text()[-3000:]
        )
    return match["host"], int(match["port"])

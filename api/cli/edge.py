"""``crashd edge``: serve the engine's feed from another process (docs/scale-out.md).

The first line on stdout is ``crashd edge: feed on ws://HOST:PORT/api/v1/ws`` (so
``--feed-port 0`` can be read back). Several edges may share one ``--feed-port`` on one
machine (``SO_REUSEPORT``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from crashd.api.config import ConfigError, add_arguments, config_from_args
from crashd.api.server import describe_failure

from .usage import UsageError

log = logging.getLogger(__name__)

EDGE_SETTINGS = (
    "host",
    "feed_port",
    "database",
    "environment",
    "log_level",
    "redis_url",
    "redis_prefix",
    "relay_socket",
    "signature_window_s",
)
"""What an edge reads: where to listen, the keys' database (to authenticate clients),
and where the engine's feed comes from."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "edge",
        help="serve the engine's WebSocket feed from another process or machine",
        description="Serve the feed (same frames, seq and epoch as the engine's) fed by the "
        "engine over --relay-socket (this machine) or --redis-url (any machine). Several "
        "edges may share one --feed-port.",
    )
    add_arguments(parser, EDGE_SETTINGS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crashd.api.edge.server import EdgeInfo, run_edge_blocking

    try:
        config = config_from_args(args, EDGE_SETTINGS)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if config.relay_socket is None and config.redis_url is None:
        raise UsageError("give --relay-socket (an engine on this machine) or --redis-url")
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )

    def ready(info: EdgeInfo) -> None:
        print(f"crashd edge: feed on {info.url}", flush=True)

    try:
        run_edge_blocking(config, ready)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        log.critical("edge failed", exc_info=exc)
        print(f"crashd edge: fatal: {describe_failure(exc)}", file=sys.stderr)
        return 1
    return 0

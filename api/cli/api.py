"""``crashd api``: serve the REST API without the engine (docs/scale-out.md).

Reads from the database, sends money-moving calls to the engine through Redis. The first
line on stdout is ``crashd api: listening on http://HOST:PORT``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from crashd.api.config import SETTINGS, ConfigError, add_arguments, config_from_args
from crashd.api.server import describe_failure

from .usage import UsageError

log = logging.getLogger(__name__)

ENGINE_ONLY = frozenset(
    {
        "feed_port",
        "chain_file",
        "chain_length",
        "synchronous",
        "betting_ms",
        "pause_ms",
        "tick_hz",
        "max_profit",
        "max_bets_per_user",
        "stop_wait_s",
        "relay_socket",
    }
)
"""Settings of the engine (the round, the chain, the ledger's writer): not an API
process's."""
API_SETTINGS = tuple(s.name for s in SETTINGS if s.name not in ENGINE_ONLY)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "api",
        help="serve the REST API without the engine (commands go to it over Redis)",
        description="Serve the REST API: reads from --database, money-moving calls to the "
        "engine through --redis-url. Run as many as you like, behind one load balancer.",
    )
    add_arguments(parser, API_SETTINGS)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crashd.api.cluster.apiproc import ApiInfo, run_api_blocking

    try:
        config = config_from_args(args, API_SETTINGS)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    if config.redis_url is None:
        raise UsageError("give --redis-url: the engine takes the API's commands there")
    logging.basicConfig(
        level=config.log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )

    def ready(info: ApiInfo) -> None:
        print(f"crashd api: listening on {info.server.url}", flush=True)

    try:
        run_api_blocking(config, ready)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        log.critical("api process failed", exc_info=exc)
        print(f"crashd api: fatal: {describe_failure(exc)}", file=sys.stderr)
        return 1
    return 0

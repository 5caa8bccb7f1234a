"""``crashd serve``: run the engine and the API until SIGINT/SIGTERM.

Settings come from flags, ``CRASHD_*`` environment variables and a TOML file
(``--config``), in that order of precedence (see :mod:`crashd.api.config`). On success the
first line on stdout is ``crashd: listening on http://HOST:PORT``, so scripts (and the
tests) can start it with ``--port 0`` and read the port back.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, cast

from crashd.api import database as apidb
from crashd.api.config import ConfigError, add_arguments, config_from_args
from crashd.api.ops import logs
from crashd.api.server import ServerInfo, describe_failure, run_blocking
from crashd.engine.chainstore import ChainFileError
from crashd.engine.proclock import InUse

from .usage import UsageError

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the game engine and the API server",
        description="Run the round engine, ledger and API (default 127.0.0.1:8000, sandbox, "
        "SQLite crashd.sqlite3 and chain crashd-chain.json in the working directory).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def _announce(info: ServerInfo) -> None:
    print(f"crashd: listening on {info.url}", flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    logs.configure(config.log_level, cast(logs.LogFormat, config.log_format), sys.stderr)
    try:
        run_blocking(config, on_ready=_announce)
    except (UsageError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        root = exc
        while isinstance(root, BaseExceptionGroup) and len(root.exceptions) == 1:
            root = root.exceptions[0]
        if isinstance(root, UsageError):
            raise root from None
        if isinstance(root, (ConfigError, ChainFileError, apidb.DatabaseError, InUse)):
            raise UsageError(str(root)) from None
        log.critical("server failed", exc_info=exc)
        print(f"crashd serve: fatal: {describe_failure(exc)}", file=sys.stderr)
        return 1
    return 0

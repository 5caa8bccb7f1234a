"""The ``crashd`` command line: one entry point, one subcommand module per concern.

Every subcommand module exposes ``register(subparsers)``, which adds its parser and sets
``func`` (taking the parsed namespace, returning an exit code). Usage errors exit 2 with
one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from crashd.api import __version__
from crashd.api.cli import admin as cli_admin
from crashd.api.cli import api as cli_api
from crashd.api.cli import audit as cli_audit
from crashd.api.cli import chain as cli_chain
from crashd.api.cli import cluster as cli_cluster
from crashd.api.cli import db as cli_db
from crashd.api.cli import edge as cli_edge
from crashd.api.cli import keys as cli_keys
from crashd.api.cli import psp as cli_psp
from crashd.api.cli import request as cli_request
from crashd.api.cli import serve as cli_serve
from crashd.api.cli import verify as cli_verify
from crashd.api.cli import wallet as cli_wallet
from crashd.api.cli import watch as cli_watch

from .usage import UsageError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # argparse prints the whole usage block; one clear line is kinder in scripts.
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="crashd",
        description="A provably fair, real-time crash game engine.",
    )
    parser.add_argument("--version", action="version", version=f"crashd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    subparsers.required = True
    for module in (
        cli_serve,
        cli_keys,
        cli_chain,
        cli_verify,
        cli_audit,
        cli_psp,
        cli_request,
        cli_watch,
        cli_db,
        cli_edge,
        cli_api,
        cli_cluster,
        cli_wallet,
        cli_admin,
    ):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except UsageError as exc:
        print(f"crashd {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())

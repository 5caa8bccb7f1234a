"""``crashd serve``: run the engine and the API (the server arrives with issue 5)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "serve", help="run the game engine and the API server",
        description="Run the round engine, ledger and API on 127.0.0.1:8000 (sandbox) by default.",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print(
        "crashd serve: the API server is not built yet. When it is, this command will "
        "start the round engine, the ledger (SQLite in the working directory) and the "
        "REST API and feed on 127.0.0.1:8000 in sandbox mode.",
        file=sys.stderr,
    )
    return 1

"""``crashd verify``: recompute a crash point, or check a hash against the commitment."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from crashd.engine.curve import format_multiplier
from crashd.engine.fairness import (
    ChainEncoding,
    FairnessError,
    chain_position,
    crash_point,
    parse_hash,
)

from .usage import UsageError

DEFAULT_MAX_STEPS = 10_000_000


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "verify",
        help="recompute a crash point or check a game hash against the terminating hash",
        description=(
            "With --salt: print the crash point of a game (e.g. 3.74). "
            "With --terminating: check that the game hash links to the terminating hash "
            "and print its position (its game number). Both may be given."
        ),
    )
    parser.add_argument(
        "--hash", required=True, metavar="HEX", help="the revealed game hash (64 hex digits)"
    )
    parser.add_argument("--salt", metavar="TEXT", help="the public salt (ASCII text)")
    parser.add_argument("--terminating", metavar="HEX", help="the published terminating hash")
    parser.add_argument(
        "--max-steps",
        type=int,
        default=DEFAULT_MAX_STEPS,
        metavar="N",
        help=f"walk at most N links (default {DEFAULT_MAX_STEPS:,})",
    )
    parser.add_argument(
        "--chain",
        choices=[e.value for e in ChainEncoding],
        default=ChainEncoding.HEX.value,
        help="how links are hashed: hex (SHA-256 of the hex string, Bustabit) or raw (of the 32 bytes)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.salt is None and args.terminating is None:
        raise UsageError("give --salt (crash point), --terminating (chain check), or both")
    if args.max_steps < 0:
        raise UsageError("--max-steps must not be negative")
    try:
        parse_hash(args.hash, "--hash")
        result: dict[str, Any] = {"game_hash": args.hash.strip().lower()}
        if args.salt is not None:
            point = crash_point(args.hash, args.salt)
            result["crash_point"] = format_multiplier(point)
            result["crash_point_hundredths"] = point
        position = None
        if args.terminating is not None:
            position = chain_position(
                args.hash, args.terminating, args.max_steps, ChainEncoding(args.chain)
            )
            result["linked"] = position is not None
            result["position"] = position
            result["max_steps"] = args.max_steps
    except FairnessError as exc:
        raise UsageError(str(exc)) from None

    linked_ok = args.terminating is None or position is not None
    if args.json:
        print(json.dumps(result))
    else:
        if "crash_point" in result:
            print(result["crash_point"])
        if args.terminating is not None:
            if position is not None:
                print(
                    f"linked: game {position} of the chain ending in {args.terminating.strip().lower()}"
                )
    if not linked_ok:
        if not args.json:
            print(
                f"crashd verify: not linked: the hash does not reach the terminating hash "
                f"within {args.max_steps:,} steps ({args.chain} encoding)",
                file=sys.stderr,
            )
        return 1
    return 0

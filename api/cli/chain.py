"""``crashd chain``: create the operator's hash chain, fix its salt, show the commitment."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from crashd.engine import chainstore, signingkey
from crashd.engine.fairness import DEFAULT_CHAIN_LENGTH, DEFAULT_CHECKPOINT_INTERVAL, ChainEncoding

from .usage import UsageError

DEFAULT_CHAIN_FILE = Path("crashd-chain.json")
MAX_CHAIN_LENGTH = 1_000_000_000


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "chain",
        help="create and inspect the provably fair hash chain",
        description="Create the secret hash chain, fix its public salt, show the commitment.",
    )
    sub = parser.add_subparsers(dest="chain_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    new = sub.add_parser(
        "new", help="create a new chain (secret file, mode 0600) and print its commitment"
    )
    new.add_argument(
        "--file",
        type=Path,
        default=DEFAULT_CHAIN_FILE,
        help=f"where to keep the secret chain (default {DEFAULT_CHAIN_FILE})",
    )
    new.add_argument(
        "--length",
        type=int,
        default=DEFAULT_CHAIN_LENGTH,
        help=f"number of games (default {DEFAULT_CHAIN_LENGTH:,})",
    )
    new.add_argument(
        "--encoding",
        choices=[e.value for e in ChainEncoding],
        default="hex",
        help="link encoding (default hex, as Bustabit)",
    )
    new.add_argument(
        "--interval",
        type=int,
        default=DEFAULT_CHECKPOINT_INTERVAL,
        help=f"links between stored checkpoints (default {DEFAULT_CHECKPOINT_INTERVAL:,})",
    )
    new.add_argument(
        "--salt", metavar="TEXT", help="fix the public salt now (otherwise later with `chain salt`)"
    )
    new.set_defaults(func=run_new)

    salt = sub.add_parser("salt", help="fix the public salt of a chain, once")
    salt.add_argument(
        "salt",
        metavar="TEXT",
        help="the salt: ASCII text published after the commitment, e.g. a future Bitcoin block hash",
    )
    salt.add_argument("--file", type=Path, default=DEFAULT_CHAIN_FILE)
    salt.set_defaults(func=run_salt)

    show = sub.add_parser("show", help="print the commitment, the salt and how to verify")
    show.add_argument("--file", type=Path, default=DEFAULT_CHAIN_FILE)
    show.set_defaults(func=run_show)


def _check_salt(salt: str) -> str:
    if not salt or not salt.isascii() or not salt.isprintable():
        raise UsageError("salt must be non-empty printable ASCII text")
    return salt


def create_chain_file(
    path: Path,
    length: int,
    encoding: ChainEncoding,
    interval: int,
    salt: str | None,
    out: Any = sys.stderr,
) -> chainstore.ChainFile:
    try:
        return chainstore.create(
            path, length, encoding, interval, salt, chainstore.progress_printer(out, length)
        )
    except chainstore.ChainFileError as exc:
        raise UsageError(str(exc)) from None


def run_new(args: argparse.Namespace) -> int:
    if not 1 <= args.length <= MAX_CHAIN_LENGTH:
        raise UsageError(f"--length must be between 1 and {MAX_CHAIN_LENGTH:,}")
    if not 1 <= args.interval <= 1_000_000:
        raise UsageError("--interval must be between 1 and 1,000,000")
    salt = _check_salt(args.salt) if args.salt is not None else None
    chain = create_chain_file(
        args.file, args.length, ChainEncoding(args.encoding), args.interval, salt
    )
    print(f"chain file: {args.file} (secret, mode 0600: back it up, never publish it)")
    # The key that signs every round's transcript is created with the chain.
    try:
        key = signingkey.ensure(signingkey.beside(args.file), sys.stdout)
    except signingkey.SigningKeyError as exc:
        raise UsageError(str(exc)) from None
    print(f"signing key id: {key.key_id}")
    print(f"terminating hash: {chain.spec.terminating_hash.hex()}")
    print(
        "publish the terminating hash now; fix the salt afterwards with `crashd chain salt TEXT`"
        if salt is None
        else f"salt: {salt}"
    )
    return 0


def _load(path: Path) -> chainstore.ChainFile:
    try:
        return chainstore.load(path)
    except chainstore.ChainFileError as exc:
        raise UsageError(str(exc)) from None


def run_salt(args: argparse.Namespace) -> int:
    chain = _load(args.file)
    salt = _check_salt(args.salt)
    if chain.salt is not None:
        if chain.salt == salt:
            print(f"salt already fixed: {salt}")
            return 0
        raise UsageError(f"the salt is already fixed ({chain.salt!r}); it can never change")
    chainstore.save(args.file, chainstore.ChainFile(spec=chain.spec, salt=salt), overwrite=True)
    print(f"salt fixed: {salt}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    chain = _load(args.file)
    spec = chain.spec
    print(
        "scheme: bustabit-v2 (HMAC-SHA256(key=salt, msg=game hash bytes), 52 bits, 1% house edge)"
    )
    print(f"terminating hash: {spec.terminating_hash.hex()}")
    print(f"salt: {chain.salt if chain.salt is not None else '(not fixed yet)'}")
    print(f"encoding: {spec.encoding.value}")
    print(f"games: {spec.games:,}")
    print("verify a revealed game:")
    print("  crashd verify --hash GAME_HASH --salt SALT                 # its crash point")
    print(
        f"  crashd verify --hash GAME_HASH --terminating {spec.terminating_hash.hex()} --chain {spec.encoding.value}"
    )
    return 0

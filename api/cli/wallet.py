"""``crashd wallet``: the seamless wallet from the shell (docs/wallet.md).

- ``crashd wallet mock``: a real HTTP wallet with its own SQLite balances, implementing
  the contract, with fault injection (flags here, or its admin endpoint while it runs):
  the sandbox for a partner trying seamless mode, and the tests' harness.
- ``crashd wallet failed list``: the failed queue (credits and rollbacks the outbox gave
  up on), read from the database (safe while the server runs, like ``crashd db check``).
- ``crashd wallet failed retry TX_ID`` / ``settle TX_ID --note …``: resolve one, through
  the running server (its ledger has one writer): a signed request with a key holding
  ``manage:wallet`` (``--key-file`` or ``$CRASHD_KEY_FILE``, as ``crashd request``).
- ``crashd wallet summary [--day YYYY-MM-DD]``: a day's debits, credits, rollbacks,
  pending and failed, per partner, from the database.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import sys
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import trio

from crashd.api import database as apidb
from crashd.api.config import add_arguments, config_from_args
from crashd.api.wallet.mock import MockBook, MockFaults, MockWallet
from crashd.api.wallet.reconcile import daily_summary, tx_body
from crashd.engine.ledger import walletstore
from crashd.engine.ledger.database import is_postgres, redacted
from crashd.engine.ledger.walletstore import has_wallet_tables

from . import request as cli_request
from .usage import UsageError

_DB = ("database", "environment")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "wallet",
        help="seamless wallet: a mock wallet, the failed queue, the daily summary",
        description="The seamless wallet: run a mock wallet, list and resolve the failed "
        "queue, print a day's summary (docs/wallet.md).",
    )
    sub = parser.add_subparsers(dest="wallet_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    mock = sub.add_parser(
        "mock",
        help="run a mock wallet (HTTP, own SQLite balances, fault injection)",
        description="A real wallet implementing the contract, for trying seamless mode and "
        "for tests. Faults can also be changed while it runs: POST /admin/faults.",
    )
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=9000, help="0 picks a free one (printed)")
    mock.add_argument("--database", type=Path, default=Path("mock-wallet.sqlite3"))
    mock.add_argument("--secret", help="the HMAC secret shared with crashd (or --secret-file)")
    mock.add_argument("--secret-file", type=Path)
    mock.add_argument("--currency", default="EUR")
    mock.add_argument("--prefix", default="/wallet", help="URL path of the calls (default /wallet)")
    mock.add_argument("--admin-token", help="require Authorization: Bearer TOKEN on /admin/*")
    mock.add_argument(
        "--fund",
        action="append",
        default=[],
        metavar="PLAYER=AMOUNT",
        help="create or set a player",
    )
    mock.add_argument(
        "--session",
        action="append",
        default=[],
        metavar="TOKEN=PLAYER",
        help="a launch token for session.verify (valid for a day)",
    )
    mock.add_argument("--latency-ms", type=float, default=0.0, help="added to every answer")
    mock.add_argument("--jitter-ms", type=float, default=0.0, help="random extra latency, up to")
    mock.add_argument("--error-rate", type=float, default=0.0, help="503 before applying")
    mock.add_argument("--timeout-rate", type=float, default=0.0, help="hang without applying")
    mock.add_argument(
        "--drop-rate", type=float, default=0.0, help="apply, then close without answering"
    )
    mock.add_argument("--duplicate-rate", type=float, default=0.0, help="apply twice (a replay)")
    mock.add_argument("--insufficient-rate", type=float, default=0.0, help="refuse debits")
    mock.add_argument(
        "--outage",
        action="append",
        default=[],
        metavar="FROM:TO",
        help="seconds from start during which every connection closes unanswered",
    )
    mock.add_argument("--hang-s", type=float, default=60.0, help="how long a hang lasts")
    mock.add_argument("--seed", type=int, help="the faults' randomness")
    mock.set_defaults(func=run_mock)

    failed = sub.add_parser("failed", help="the failed queue: list, retry, settle")
    fsub = failed.add_subparsers(dest="failed_command", metavar="ACTION", parser_class=type(parser))
    fsub.required = True
    listing = fsub.add_parser("list", help="credits and rollbacks the outbox gave up on")
    add_arguments(listing, _DB)
    listing.add_argument("--partner", help="one partner only")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(func=run_failed_list)
    for action, text in (
        ("retry", "send it again now (a new retry horizon)"),
        ("settle", "settled by other means: record it and release what crashd held"),
    ):
        p = fsub.add_parser(action, help=text, description=text + " (through the server)")
        p.add_argument("tx_id", help="crd_… or rbk_…")
        p.add_argument("--note", default="", help="why, for the record")
        p.add_argument("--url", default=os.environ.get("CRASHD_URL", "http://127.0.0.1:8000"))
        p.add_argument(
            "--key-file",
            default=os.environ.get("CRASHD_KEY_FILE"),
            help="a manage:wallet key of the partner (`crashd keys create --json`)",
        )
        p.set_defaults(func=run_failed_action, action=action)

    summary = sub.add_parser("summary", help="a day's debits, credits, rollbacks, per partner")
    add_arguments(summary, _DB)
    summary.add_argument("--day", help="YYYY-MM-DD, UTC (default today)")
    summary.add_argument("--partner", help="one partner only")
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(func=run_summary)


# -- mock -----------------------------------------------------------------------------


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise UsageError(f"{what} must look like NAME=VALUE, not {item!r}")
        out.append((key, value))
    return out


def mock_from_args(args: argparse.Namespace) -> tuple[MockWallet, MockBook]:
    if (args.secret is None) == (args.secret_file is None):
        raise UsageError("give the wallet secret with exactly one of --secret and --secret-file")
    secret = args.secret if args.secret is not None else args.secret_file.read_text().strip()
    if len(secret) < 16:
        raise UsageError("the wallet secret needs at least 16 characters")
    faults = MockFaults()
    start = time.time()
    outages = []
    for window in args.outage:
        a, sep, b = window.partition(":")
        try:
            outages.append((start + float(a), start + float(b)))
        except ValueError:
            raise UsageError(f"--outage must be FROM:TO seconds, not {window!r}") from None
        if not sep:
            raise UsageError(f"--outage must be FROM:TO seconds, not {window!r}")
    try:
        faults.update(
            {
                "latency_ms": args.latency_ms,
                "jitter_ms": args.jitter_ms,
                "error_rate": args.error_rate,
                "timeout_rate": args.timeout_rate,
                "drop_rate": args.drop_rate,
                "duplicate_rate": args.duplicate_rate,
                "insufficient_rate": args.insufficient_rate,
                "outages": outages,
                "hang_s": args.hang_s,
            }
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    funds = _pairs(args.fund, "--fund")
    sessions = _pairs(args.session, "--session")
    book = MockBook(args.database)
    try:
        for player, amount in funds:
            try:
                book.set_player({"player_id": player, "balance": int(amount)}, args.currency)
            except ValueError as exc:
                raise UsageError(f"--fund {player}: {exc}") from None
        for token, player in sessions:
            book.set_player({"player_id": player}, args.currency)
            book.add_session(token, player, 24 * 3600, time.time())
    except BaseException:
        book.close()
        raise
    wallet = MockWallet(
        book,
        secret,
        currency=args.currency,
        prefix=args.prefix,
        faults=faults,
        admin_token=args.admin_token,
        seed=args.seed,
    )
    return wallet, book


def run_mock(args: argparse.Namespace) -> int:
    wallet, book = mock_from_args(args)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(wallet.serve, args.host, args.port)
            host = f"[{args.host}]" if ":" in args.host else args.host
            print(f"mock wallet listening on http://{host}:{port}{wallet.prefix}", flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        return 0
    except OSError as exc:
        print(f"crashd wallet mock: {exc}", file=sys.stderr)
        return 1
    finally:
        book.close()
    return 0


# -- the failed queue and the summary -------------------------------------------------


def _open(args: argparse.Namespace) -> tuple[Any, str]:
    """A read connection to the ledger's wallet tables: a SQLite file read-only, or a
    PostgreSQL database through the API's connection of sqlite3's shape (the same SQL,
    ``walletstore``'s)."""
    config = config_from_args(args, _DB)
    database = config.database
    if is_postgres(database):
        try:
            conn = apidb.connect(database)
        except apidb.DatabaseError as exc:
            raise UsageError(str(exc)) from None
        if not has_wallet_tables(conn):
            conn.close()
            raise UsageError(f"{redacted(database)} has no ledger (start the server once)")
        return conn, config.environment
    assert isinstance(database, Path)
    if not database.exists():
        raise UsageError(f"no database at {database}")
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    if not has_wallet_tables(conn):
        conn.close()
        raise UsageError(f"{database} has no wallet tables (start the server once)")
    return conn, config.environment


def _partners(conn: Any, environment: str, only: str | None) -> list[str]:
    if only is not None:
        return [only]
    return [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT partner_id FROM wallet_txs WHERE environment = ? ORDER BY 1",
            (environment,),
        )
    ]


def run_failed_list(args: argparse.Namespace) -> int:
    conn, environment = _open(args)
    try:
        items = []
        for partner in _partners(conn, environment, args.partner):
            flt = walletstore.TxFilter(environment, partner, state="failed", limit=10_000)
            items += [{"partner_id": partner, **tx_body(t)} for t in walletstore.txs(conn, flt)]
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"failed": items}, indent=2))
        return 0
    if not items:
        print("the failed queue is empty")
        return 0
    print(f"{len(items)} failed wallet transaction(s):")
    for t in items:
        print(
            f"  {t['tx_id']}  {t['partner_id']}/{t['user_id']}  {t['kind']} {t['amount']} "
            f"{t['currency']}  round {t['round_id']}  after {t['attempts']} attempt(s): "
            f"{t['code']}  (queued {t['created_at']})"
        )
    print("resolve each: crashd wallet failed retry TX_ID | settle TX_ID --note …")
    return 0


def run_failed_action(args: argparse.Namespace) -> int:
    if not args.key_file:
        raise UsageError("give a manage:wallet key: --key-file or $CRASHD_KEY_FILE")
    forwarded = argparse.Namespace(
        method="POST",
        path=f"/api/v1/wallet/failed/{args.tx_id}/{args.action}",
        body=json.dumps({"note": args.note}),
        url=args.url,
        key=None,
        signing_secret=None,
        key_file=args.key_file,
        field=None,
        idempotency_key=None,
        timeout=10.0,
    )
    return cli_request.run(forwarded)


def run_summary(args: argparse.Namespace) -> int:
    try:
        day = date.fromisoformat(args.day) if args.day else datetime.now(UTC).date()
    except ValueError:
        raise UsageError("--day must be YYYY-MM-DD") from None
    conn, environment = _open(args)
    try:
        out = {
            partner: daily_summary(conn, environment, partner, day)
            for partner in _partners(conn, environment, args.partner)
        }
    finally:
        conn.close()
    if args.json:
        print(json.dumps({"day": day.isoformat(), "partners": out}, indent=2))
        return 0
    print(f"wallet summary for {day.isoformat()} (UTC), {environment}:")
    if not out:
        print("  no wallet transactions")
    for partner, s in out.items():
        print(f"  {partner}:")
        for name in ("debits", "credits", "rollbacks", "pending", "failed"):
            print(f"    {name:<9} {s[name]['count']:>8}  amount {s[name]['amount']}")
    return 0

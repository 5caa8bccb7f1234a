"""``crashd admin``: steer a running server through its operator endpoints.

Every command is one request to ``/api/v1/admin/…`` on the server (``--url``), with an
operator key (``crashd keys create --scopes admin:read,admin:control,admin:bankroll``,
given as ``--key-file``): writes are signed and carry a fresh ``Idempotency-Key``
(``--idempotency-key`` to retry one safely), and each is recorded in the server's audit
log. The ledger has one writer, the server, so money (the bankroll) moves through it,
never by editing the database.

Exit 0 on success, 1 when the server refused (its problem is printed), 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import httpx

from crashd.api.security.signing import sign_request
from crashd.api.wire import API_PREFIX

from .usage import UsageError

LIMIT_FLAGS: tuple[tuple[str, str], ...] = (
    ("min_stake", "smallest stake per bet, minor units"),
    ("max_stake", "largest stake per bet, minor units"),
    ("max_bets_per_user", "bets one user may hold in one round"),
    ("max_win", "largest profit one bet may make, minor units (0: no cap)"),
    ("max_profit", "fixed cap on players' profit per round (fixed mode; 0: no cap)"),
    ("max_profit_bp", "the cap as basis points of the bankroll (bankroll mode; 100 = 1 percent)"),
)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=os.environ.get("CRASHD_URL", "http://127.0.0.1:8000"),
        help="the server (default $CRASHD_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--key-file",
        default=os.environ.get("CRASHD_KEY_FILE"),
        help="the operator key's JSON from `crashd keys create --json` (default $CRASHD_KEY_FILE)",
    )
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer")
    parser.add_argument("--idempotency-key", help="retry a write safely with the same key")
    parser.add_argument("--timeout", type=float, default=60.0)


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "admin",
        help="steer a running server: limits, pause, void, bankroll, chains, audit log",
        description="Operator commands, sent to the running server's /api/v1/admin endpoints "
        "with an operator key (scopes admin:read, admin:control, admin:bankroll).",
    )
    sub = parser.add_subparsers(dest="admin_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
        return p

    state = add("state", "the live round, house bankroll and exposure, limits, RTP, chain")
    _common(state)
    state.set_defaults(func=lambda a: _run(a, "GET", "/admin/state", None, _show_state))

    limits = add("limits", "show the limits in force, or change them from the next round on")
    limits_sub = limits.add_subparsers(
        dest="limits_command", metavar="ACTION", parser_class=type(parser)
    )
    limits_sub.required = True
    show = limits_sub.add_parser("show", help="the limits in force")
    _common(show)
    show.set_defaults(func=lambda a: _run(a, "GET", "/admin/limits", None, _show_json))
    set_ = limits_sub.add_parser("set", help="change limits (only those given)")
    _common(set_)
    for name, help_ in LIMIT_FLAGS:
        set_.add_argument("--" + name.replace("_", "-"), dest=name, type=int, help=help_)
    set_.add_argument(
        "--max-profit-mode",
        choices=("fixed", "bankroll"),
        help="fixed cap, or a share of the bankroll",
    )
    set_.add_argument("--note", default="", help="why (kept in the audit log)")
    set_.set_defaults(func=_set_limits)

    for name, help_ in (
        ("pause", "pause after the current round (next-round bets refunded and refused)"),
        ("resume", "resume a paused game"),
        ("void", "void the current round: open bets refunded once, burnt game revealed"),
    ):
        p = add(name, help_)
        _common(p)
        p.add_argument("--note", default="", help="why (kept in the audit log)")
        p.set_defaults(
            func=lambda a, n=name: _run(a, "POST", f"/admin/{n}", {"note": a.note}, _show_json)
        )

    bankroll = add("bankroll", "fund the house bankroll, or take money out of it")
    bankroll_sub = bankroll.add_subparsers(
        dest="bankroll_command", metavar="ACTION", parser_class=type(parser)
    )
    bankroll_sub.required = True
    for name, path in (("deposit", "deposit"), ("withdraw", "withdraw")):
        p = bankroll_sub.add_parser(name, help=f"{name} AMOUNT minor units (a recorded ledger op)")
        _common(p)
        p.add_argument("amount", type=int, metavar="AMOUNT")
        p.add_argument("--note", default="", help="why (kept in the audit log)")
        p.set_defaults(
            func=lambda a, path=path: _run(
                a,
                "POST",
                f"/admin/bankroll/{path}",
                {"amount": a.amount, "note": a.note},
                _show_json,
            )
        )

    chain = add("chain", "the hash chains: show, publish the next one, fix its salt")
    chain_sub = chain.add_subparsers(
        dest="chain_command", metavar="ACTION", parser_class=type(parser)
    )
    chain_sub.required = True
    p = chain_sub.add_parser("show", help="current and next chain, games left")
    _common(p)
    p.set_defaults(func=lambda a: _run(a, "GET", "/admin/chain", None, _show_json))
    p = chain_sub.add_parser("next", help="create and publish the next chain (on the server)")
    _common(p)
    p.add_argument("--length", type=int, help="games (default: the server's chain_length)")
    p.add_argument("--note", default="")
    p.set_defaults(
        func=lambda a: _run(
            a,
            "POST",
            "/admin/chain/next",
            {"note": a.note, **({"length": a.length} if a.length else {})},
            _show_json,
        )
    )
    p = chain_sub.add_parser("salt", help="fix the next chain's public salt, once")
    _common(p)
    p.add_argument("salt", metavar="TEXT")
    p.add_argument("--note", default="")
    p.set_defaults(
        func=lambda a: _run(
            a, "POST", "/admin/chain/salt", {"salt": a.salt, "note": a.note}, _show_json
        )
    )

    audit = add("audit", "the audit log, newest first")
    _common(audit)
    audit.add_argument("--action", help="only this action (limits, pause, void, bankroll_deposit…)")
    audit.add_argument("--limit", type=int, default=20)
    audit.set_defaults(func=_audit)

    page = add("page", "a link to the operator's page (an operator token for one hour)")
    _common(page)
    page.set_defaults(func=_page)


def _credentials(args: argparse.Namespace) -> tuple[str, str | None]:
    if not args.key_file:
        raise UsageError("give the operator key with --key-file (or $CRASHD_KEY_FILE)")
    try:
        doc = json.loads(open(args.key_file, encoding="utf-8").read())
        return str(doc["secret"]), doc.get("signing_secret")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read a key from {args.key_file}: {exc}") from None


def request(
    args: argparse.Namespace, method: str, path: str, body: dict[str, Any] | None
) -> httpx.Response:
    key, signing_secret = _credentials(args)
    full = API_PREFIX + path
    raw = b"" if body is None else json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    if method != "GET":
        headers["Content-Type"] = "application/json"
        idem = args.idempotency_key or str(uuid.uuid4())
        if not signing_secret:
            raise UsageError("the key file has no signing_secret: writes must be signed")
        headers.update(sign_request(signing_secret, method, full, raw, idem, int(time.time())))
    return httpx.request(
        method,
        args.url.rstrip("/") + full,
        content=raw or None,
        headers=headers,
        timeout=args.timeout,
    )


def _run(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    show: Any,
) -> int:
    try:
        response = request(args, method, path, body)
    except httpx.HTTPError as exc:
        print(f"crashd admin: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        answer = response.json()
    except ValueError:
        print(f"crashd admin: {response.status_code} {response.text[:200]}", file=sys.stderr)
        return 1
    if not response.is_success:
        print(
            f"crashd admin: {response.status_code} {answer.get('code')}: {answer.get('detail')}",
            file=sys.stderr,
        )
        return 1
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        show(answer)
    return 0


def _show_json(answer: Any) -> None:
    print(json.dumps(answer, indent=2))


def _money(value: int | None) -> str:
    return "none" if value is None else f"{value:,}"


def _show_state(s: dict[str, Any]) -> None:
    rnd = s.get("round") or {}
    house = s["house"]
    rtp = s["rtp"]
    chain = s.get("chain") or {}
    print(f"environment   {s['environment']}{'  (PAUSED)' if s['paused'] else ''}")
    print(
        f"round         {rnd.get('round_id')} {rnd.get('status')} at {rnd.get('multiplier', 100) / 100:.2f}x, "
        f"{rnd.get('bets')} bets, stake {_money(rnd.get('stake'))}"
    )
    print(
        f"house         balance {_money(house['balance'])}, funded {_money(house['funded'])}, "
        f"profit {_money(house['profit'])}"
    )
    print(
        f"exposure      {_money(house['exposure'])} (cap this round {_money(house['round_max_profit'])}, "
        f"next {_money(house['next_round_max_profit'])})"
    )
    observed = rtp["observed"]
    band = rtp["band"]
    print(
        "rtp           "
        + (
            f"{observed:.4f} over {rtp['window']['rounds']} rounds / {rtp['window']['bets']} bets, "
            f"band [{band[0]:.4f}, {band[1]:.4f}]{'  ALERT' if rtp['alert'] else ''}"
            if observed is not None and band is not None
            else "no stakes yet"
        )
    )
    print(f"subscribers   {s['feed']['subscribers']}")
    if chain:
        print(
            f"chain         {chain['current']['chain']}: {chain['games_left']:,} games left"
            + ("  (LOW: crashd admin chain next)" if chain["low"] else "")
        )


def _set_limits(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {
        name: getattr(args, name) for name, _ in LIMIT_FLAGS if getattr(args, name) is not None
    }
    if args.max_profit_mode is not None:
        body["max_profit_mode"] = args.max_profit_mode
    if not body:
        raise UsageError("give at least one limit to change (see --help)")
    body["note"] = args.note
    return _run(args, "PATCH", "/admin/limits", body, _show_json)


def _audit(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.action:
        params["action"] = args.action
    query = "?" + urlencode(params)

    def show(answer: dict[str, Any]) -> None:
        for e in answer["entries"]:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e["ts"] / 1000))
            print(
                f"{e['seq']:>8} {when} {e['actor']:<24} {e['action']:<18} "
                f"{json.dumps(e['before'])} -> {json.dumps(e['after'])} {e['note']}"
            )

    return _run(args, "GET", "/admin/audit" + query, None, show)


def _page(args: argparse.Namespace) -> int:
    def show(answer: dict[str, Any]) -> None:
        print(args.url.rstrip("/") + answer["url"])

    return _run(args, "POST", "/admin/session", None, show)

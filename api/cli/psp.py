"""``crashd psp send-test-event``: fire a correctly signed PSP event at a server.

For operators checking a deployment end to end (secret file, TLS, routing) and for
partners' integration tests on a sandbox server. The event is signed exactly as a PSP
signs it (:func:`crashd.api.security.webhook.header_value`) with the first secret in
``psp_secrets_file`` (or ``--secret-file``). Prints the server's answer; exit 0 on 2xx.

    crashd psp send-test-event --url http://127.0.0.1:8000 --type deposit.completed \\
        --partner acme --user u1 --amount 5000
"""

from __future__ import annotations

import argparse
import json
import secrets
import ssl
import time
from pathlib import Path
from typing import Any

import httpx

from crashd.api import wire
from crashd.api.config import ConfigError, add_arguments, config_from_args
from crashd.api.rest.routes.psp import MONEY_TYPES, SecretFile
from crashd.api.security import webhook as pspsig
from crashd.api.wire import WEBHOOK_PATH

from .usage import UsageError

_SETTINGS = ("psp_secrets_file", "environment")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "psp",
        help="PSP webhook tools",
        description="Tools for the PSP webhook (POST /api/v1/psp/webhook).",
    )
    sub = parser.add_subparsers(dest="psp_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True
    send = sub.add_parser(
        "send-test-event", help="send a correctly signed sample event to a server"
    )
    add_arguments(send, _SETTINGS)
    send.add_argument("--url", default="http://127.0.0.1:8000", help="the server's base URL")
    send.add_argument(
        "--secret-file",
        type=Path,
        metavar="FILE",
        help="sign with the first secret of this file (default: psp_secrets_file)",
    )
    send.add_argument(
        "--type",
        default="deposit.completed",
        metavar="TYPE",
        help=f"event type: {', '.join(MONEY_TYPES)} or any other (ignored by the server)",
    )
    send.add_argument("--partner", default="default", metavar="ID", help="the user's partner id")
    send.add_argument("--user", default="test-user", metavar="ID", help="the partner's user id")
    send.add_argument(
        "--amount", type=int, default=1000, help="minor units (deposits and withdrawals)"
    )
    send.add_argument("--event-id", metavar="ID", help="the event id (default: a fresh evt_test_…)")
    send.add_argument(
        "--withdrawal-id",
        metavar="ID",
        help="withdrawal.failed/reversed: the event id of the withdrawal",
    )
    send.add_argument(
        "--cafile", type=Path, metavar="PEM", help="trust this CA (a self-signed server)"
    )
    send.set_defaults(func=run_send)


def build_event(args: argparse.Namespace, environment: str) -> dict[str, Any]:
    event_id = args.event_id or "evt_test_" + secrets.token_hex(12)
    data: dict[str, Any]
    if args.type in ("withdrawal.failed", "withdrawal.reversed"):
        if not args.withdrawal_id:
            raise UsageError(f"{args.type} needs --withdrawal-id (the withdrawal's event id)")
        data = {"environment": environment, "withdrawal_id": args.withdrawal_id}
    else:
        data = {
            "environment": environment,
            "partner_id": args.partner,
            "user_id": args.user,
            "amount": args.amount,
        }
    return {"id": event_id, "type": args.type, "created": int(time.time()), "data": data}


def run_send(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args, _SETTINGS)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    path = args.secret_file or config.psp_secrets_file
    try:
        found = SecretFile(path).secrets()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    if not found:
        raise UsageError(f"no secret in {path} (one per line)")
    body = json.dumps(build_event(args, config.environment), separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json",
        wire.PSP_SIGNATURE_HEADER: pspsig.header_value(found[0], int(time.time()), body),
    }
    verify: ssl.SSLContext | bool = True
    if args.cafile is not None:
        verify = ssl.create_default_context(cafile=str(args.cafile))
    try:
        reply = httpx.post(
            args.url.rstrip("/") + WEBHOOK_PATH,
            content=body,
            headers=headers,
            timeout=10,
            verify=verify,
        )
    except httpx.HTTPError as exc:
        raise UsageError(f"cannot reach {args.url}: {exc}") from None
    print(f"{reply.status_code} {reply.text}")
    return 0 if reply.is_success else 1


__all__ = ["build_event", "register", "run_send"]

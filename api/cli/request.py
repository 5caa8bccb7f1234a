"""``crashd request``: one signed, idempotent HTTP request to a crashd API, like ``gh api``.

For the README's walkthrough and for operators poking at a server: it adds the bearer
key, an ``Idempotency-Key`` on writes, and the request signature (``crashd.api.security.signing``) when
a signing secret is given, then prints the JSON answer. Exit 0 on 2xx, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import httpx

from crashd.api.security.signing import sign_request

from .usage import UsageError

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "request",
        help="send one signed API request and print the JSON answer",
        description="Send one request to a crashd API: adds Authorization, an Idempotency-Key "
        "on writes and the request signature, prints the JSON answer.",
    )
    parser.add_argument("method", choices=["GET", "POST", "PUT", "DELETE"], type=str.upper)
    parser.add_argument(
        "path", help="e.g. /api/v1/game/state or /api/v1/user/balance?user_id=alice"
    )
    parser.add_argument("body", nargs="?", help="JSON body (writes)")
    parser.add_argument(
        "--url",
        default=os.environ.get("CRASHD_URL", "http://127.0.0.1:8000"),
        help="server base URL (default $CRASHD_URL or http://127.0.0.1:8000)",
    )
    parser.add_argument(
        "--key", default=os.environ.get("CRASHD_API_KEY"), help="API key (default $CRASHD_API_KEY)"
    )
    parser.add_argument(
        "--signing-secret",
        default=os.environ.get("CRASHD_SIGNING_SECRET"),
        help="the key's signing secret, to sign writes (default $CRASHD_SIGNING_SECRET)",
    )
    parser.add_argument(
        "--key-file",
        default=os.environ.get("CRASHD_KEY_FILE"),
        help="the JSON that `crashd keys create --json` printed: takes the key and "
        "signing secret from it (default $CRASHD_KEY_FILE)",
    )
    parser.add_argument(
        "--field",
        metavar="NAME",
        help="print only this member of the JSON answer (for shell scripts)",
    )
    parser.add_argument(
        "--idempotency-key", help="reuse a key to retry a write safely (default: a new UUID)"
    )
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.set_defaults(func=run)


def _read_key_file(path: str) -> tuple[str, str | None]:
    try:
        doc = json.loads(open(path, encoding="utf-8").read())
        return str(doc["secret"]), (
            str(doc["signing_secret"]) if doc.get("signing_secret") else None
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"cannot read a key from {path}: {exc}") from None


def run(args: argparse.Namespace) -> int:
    if args.key_file and not args.key:
        args.key, secret = _read_key_file(args.key_file)
        args.signing_secret = args.signing_secret or secret
    if not args.path.startswith("/"):
        raise UsageError("the path must start with /, e.g. /api/v1/game/state")
    body = b""
    if args.body is not None:
        try:
            json.loads(args.body)
        except ValueError as exc:
            raise UsageError(f"the body is not valid JSON: {exc}") from None
        body = args.body.encode()
    headers = {"Accept": "application/json"}
    if args.key:
        headers["Authorization"] = f"Bearer {args.key}"
    if body:
        headers["Content-Type"] = "application/json"
    if args.method in WRITE_METHODS:
        idem = args.idempotency_key or str(uuid.uuid4())
        if args.signing_secret:
            headers.update(
                sign_request(
                    args.signing_secret, args.method, args.path, body, idem, int(time.time())
                )
            )
        else:
            headers["Idempotency-Key"] = idem
    url = args.url.rstrip("/") + args.path
    if urlsplit(url).scheme not in ("http", "https"):
        raise UsageError("--url must be http:// or https://")
    try:
        response = httpx.request(
            args.method, url, content=body or None, headers=headers, timeout=args.timeout
        )
    except httpx.HTTPError as exc:
        print(f"crashd request: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"{response.status_code} {response.reason_phrase}", file=sys.stderr)
    try:
        answer = response.json()
    except ValueError:
        print(response.text)
        return 0 if response.is_success else 1
    if args.field is not None and response.is_success:
        if not isinstance(answer, dict) or args.field not in answer:
            print(f"crashd request: the answer has no member {args.field!r}", file=sys.stderr)
            return 1
        value = answer[args.field]
        print(value if isinstance(value, str) else json.dumps(value))
    else:
        print(json.dumps(answer, indent=2), file=sys.stdout if response.is_success else sys.stderr)
    return 0 if response.is_success else 1

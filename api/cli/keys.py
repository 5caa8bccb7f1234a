"""``crashd keys``: create, list, rotate and revoke partners' API keys (operator only).

The keys live in the server's database (``--database``, ``$CRASHD_DATABASE`` or
``database`` in ``--config``, as for ``crashd serve``); the secret is printed once, at
creation (and at rotation), with the key's signing secret. Safe while the server runs:
revocation and rotation take effect on the next request.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

from crashd.api import database as apidb
from crashd.api.config import ConfigError, add_arguments, config_from_args
from crashd.api.security.keys import DEFAULT_PARTNER, ApiKey, CreatedKey, KeyStore, KeyStoreError
from crashd.api.wire import SCOPES

from .usage import UsageError

_DB_SETTINGS = ("database", "pepper_file")
DEFAULT_OVERLAP_S = 86400.0


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keys",
        help="create, list and revoke API keys",
        description="Manage partners' API keys (stored hashed in the server's database).",
    )
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=type(parser))
    sub.required = True

    create = sub.add_parser("create", help="create a key and print its secret (once)")
    add_arguments(create, _DB_SETTINGS)
    create.add_argument(
        "--env",
        required=True,
        choices=["sandbox", "production"],
        help="sandbox (ck_test_…, demo money) or production (ck_live_…)",
    )
    create.add_argument(
        "--scopes", required=True, metavar="A,B", help="comma-separated: " + ", ".join(SCOPES)
    )
    create.add_argument(
        "--label", default="", help="a note for the operator (e.g. the partner's app)"
    )
    create.add_argument(
        "--partner",
        default=DEFAULT_PARTNER,
        metavar="ID",
        help=f"the partner this key belongs to (default {DEFAULT_PARTNER!r})",
    )
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=run_create)

    list_ = sub.add_parser("list", help="list keys (never their secrets)")
    add_arguments(list_, _DB_SETTINGS)
    list_.add_argument("--json", action="store_true", help="print a JSON array")
    list_.set_defaults(func=run_list)

    revoke = sub.add_parser("revoke", help="revoke a key, effective immediately")
    add_arguments(revoke, _DB_SETTINGS)
    revoke.add_argument("key_id", metavar="ID", help="the key id (key_…), from `crashd keys list`")
    revoke.set_defaults(func=run_revoke)

    rotate = sub.add_parser(
        "rotate", help="issue a new secret and signing secret (old ones work for --overlap-s)"
    )
    add_arguments(rotate, _DB_SETTINGS)
    rotate.add_argument("key_id", metavar="ID", help="the key id (key_…), from `crashd keys list`")
    rotate.add_argument(
        "--overlap-s",
        type=float,
        default=DEFAULT_OVERLAP_S,
        metavar="N",
        help=f"seconds the old secret and signing secret keep working "
        f"(default {DEFAULT_OVERLAP_S:g}; 0: stop at once)",
    )
    rotate.add_argument("--json", action="store_true", help="print one JSON object")
    rotate.set_defaults(func=run_rotate)


@contextlib.contextmanager
def _opened(args: argparse.Namespace) -> Iterator[KeyStore]:
    """The key store named by the arguments, closed after use; its refusals become
    usage errors (one line, exit 2)."""
    try:
        config = config_from_args(args, _DB_SETTINGS)
        store = KeyStore(config.database, config.pepper_file)
    except (ConfigError, apidb.DatabaseError) as exc:
        raise UsageError(str(exc)) from None
    try:
        yield store
    except KeyStoreError as exc:
        raise UsageError(str(exc)) from None
    finally:
        store.close()


def _key_doc(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "prefix": key.prefix,
        "environment": key.environment,
        "partner_id": key.partner_id,
        "scopes": list(key.scopes),
        "label": key.label,
        "created_at": key.created_at,
        "revoked_at": key.revoked_at,
        "generation": key.generation,
        "last_used_at": key.last_used_at,
        "previous_valid_until": key.previous_until,
    }


def run_create(args: argparse.Namespace) -> int:
    with _opened(args) as store:
        created = store.create(args.env, args.scopes, label=args.label, partner_id=args.partner)
    if args.json:
        print(json.dumps(_created_doc(created)))
        return 0
    key = created.key
    print(f"id: {key.id}")
    print(f"environment: {key.environment}")
    print(f"partner: {key.partner_id}")
    print(f"scopes: {','.join(key.scopes)}")
    _print_secrets(created)
    return 0


def _created_doc(created: CreatedKey) -> dict[str, object]:
    """The one JSON a new or rotated key is shown in (``crashd request --key-file`` reads it)."""
    return {
        **_key_doc(created.key),
        "secret": created.secret,
        "signing_secret": created.signing_secret,
    }


def _print_secrets(created: CreatedKey) -> None:
    print(f"secret: {created.secret}")
    print(f"signing secret: {created.signing_secret}")
    print(
        "both are shown only now: store them safely (send the secret as Authorization: Bearer <secret>; "
        "sign bet requests with the signing secret, see docs/security.md)"
    )


def run_rotate(args: argparse.Namespace) -> int:
    with _opened(args) as store:
        created = store.rotate(args.key_id, args.overlap_s, time.time())
    if args.json:
        print(json.dumps(_created_doc(created)))
        return 0
    key = created.key
    print(f"rotated {key.id} (generation {key.generation})")
    if key.previous_until is not None:
        until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.previous_until))
        print(f"the previous secret and signing secret keep working until {until}")
    else:
        print("the previous secret and signing secret stopped working now")
    _print_secrets(created)
    return 0


def run_list(args: argparse.Namespace) -> int:
    with _opened(args) as store:
        keys = store.list()
    if args.json:
        print(json.dumps([_key_doc(k) for k in keys]))
        return 0
    if not keys:
        print("no API keys yet (create one with `crashd keys create --env sandbox --scopes …`)")
        return 0
    print(
        f"{'ID':<20} {'PREFIX':<12} {'ENV':<10} {'PARTNER':<16} {'STATUS':<24} {'SCOPES':<36} LABEL"
    )
    for k in keys:
        status = f"revoked {k.revoked_at}" if k.revoked_at else "active"
        print(
            f"{k.id:<20} {k.prefix + '…':<12} {k.environment:<10} {k.partner_id:<16} {status:<24} "
            f"{','.join(k.scopes):<36} {k.label}"
        )
    return 0


def run_revoke(args: argparse.Namespace) -> int:
    with _opened(args) as store:
        before = store.get(args.key_id)
        key = store.revoke(args.key_id)
    if before is not None and before.revoked_at is not None:
        print(f"{key.id} was already revoked at {key.revoked_at}")
    else:
        print(f"revoked {key.id} ({key.prefix}…) at {key.revoked_at}")
    return 0

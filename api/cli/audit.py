"""``crashd audit``: check that rounds were settled by the rules, from their signed
transcripts (docs/fairness.md).

From a server (``--url``): the public keys from ``/.well-known/crashd-keys``, the
transcripts of ``--from``..``--to`` (default: the last 100 settled), and for every
receipt given (``--receipts``) its round's transcript too. From files: transcripts as
one JSON document, a JSON array, or JSON lines (what ``crashd audit export`` writes),
with the keys from ``--keys`` (a JWK Set file, or the server's URL).

Each transcript's signature, its chain to the round before, the crash point (recomputed
from the game hash and the salt), the seal against the bets in play at the start, and a
re-run of the round through the round engine with the recorded commands at their
recorded instants, which must give every outcome, payout and the force point exactly;
each receipt against its round. Exit 0: all clean; 1: something disagrees (each
finding printed); 2: bad input (unreadable files, no keys, a server that cannot be
reached). ``--json`` prints one report object.

``crashd audit export --url URL --from N --to M`` writes the transcripts as JSON lines.
``crashd audit partner-secret PARTNER`` prints the secret a partner computes its users'
pseudonyms with (operator only: it reads the signing key file).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from crashd.api.wire import API_PREFIX
from crashd.engine import signingkey
from crashd.engine.settlement.audit import AuditReport, audit
from crashd.engine.settlement.canonical import from_b64url
from crashd.engine.settlement.documents import Pseudonyms

from .usage import UsageError

DEFAULT_LAST = 100
PAGE = 100
KEYS_PATH = "/.well-known/crashd-keys"


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "audit",
        help="check rounds' signed transcripts and receipts: re-run each round by the rules",
        description="Check transcripts from --url or FILEs (see docs/fairness.md). "
        "`crashd audit export --url URL --from N --to M [--out F]` writes transcripts as JSON "
        "lines; `crashd audit partner-secret PARTNER [--key-file F]` prints a partner's "
        "pseudonym secret (operator). Exit 0 clean, 1 findings, 2 bad input.",
    )
    parser.add_argument(
        "files", nargs="*", metavar="FILE", help="transcript files (or: export, partner-secret)"
    )
    parser.add_argument("--url", help="a crashd server, e.g. http://127.0.0.1:8000")
    parser.add_argument(
        "--key",
        default=os.environ.get("CRASHD_API_KEY"),
        help="an API key or token with read:game_state (default $CRASHD_API_KEY; "
        "without one, a viewer token is requested)",
    )
    parser.add_argument("--from", dest="first", type=int, metavar="ROUND", help="first round")
    parser.add_argument("--to", dest="last", type=int, metavar="ROUND", help="last round")
    parser.add_argument("--keys", metavar="FILE|URL", help="the JWK Set of the signing keys")
    parser.add_argument(
        "--receipts",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="receipts to check (JSON, array or lines; repeatable)",
    )
    parser.add_argument(
        "--terminating",
        metavar="HEX",
        help="also walk the first round audited of this commitment's chain to it; the game "
        "it turns out to be and its round number say where the chain began (--url: every "
        "chain the server published, with its first round)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON report")
    parser.add_argument("--out", type=Path, help="export: the file to write (default stdout)")
    parser.add_argument(
        "--key-file",
        type=Path,
        default=Path("crashd-chain.signing.json"),
        help="partner-secret: the server's signing key file (default crashd-chain.signing.json)",
    )
    parser.set_defaults(func=run)


# -- reading ---------------------------------------------------------------------------


def read_documents(path: Path) -> list[Any]:
    """A file's JSON documents: one document, an array of them, or JSON lines."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None
    try:
        value = json.loads(text)
        return value if isinstance(value, list) else [value]
    except ValueError:
        pass
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError as exc:
                raise UsageError(f"{path}:{n}: not JSON: {exc}") from None
    return out


def keys_of(jwks: Any) -> dict[str, bytes]:
    try:
        keys = {
            k["kid"]: from_b64url(k["x"])
            for k in jwks["keys"]
            if k.get("kty") == "OKP" and k.get("crv") == "Ed25519"
        }
    except (KeyError, TypeError, ValueError):
        raise UsageError("the key set is not a JWK Set of Ed25519 keys") from None
    if not keys:
        raise UsageError("the key set holds no Ed25519 key")
    return keys


class Server:
    """A crashd server's public settlement routes (read:game_state)."""

    def __init__(self, url: str, key: str | None) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), timeout=30.0)
        try:
            if key is None:
                r = self.client.post(f"{API_PREFIX}/session/viewer")
                if r.status_code != 201:
                    raise UsageError(
                        f"the server gave no viewer token ({r.status_code}); pass --key"
                    )
                key = str(r.json()["token"])
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot reach {url}: {exc}") from None
        self.headers = {"Authorization": f"Bearer {key}"}

    def get(self, path: str, **params: Any) -> httpx.Response:
        try:
            return self.client.get(path, params=params, headers=self.headers)
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot reach the server: {exc}") from None

    def json(self, path: str, **params: Any) -> Any:
        r = self.get(path, **params)
        if r.status_code != 200:
            raise UsageError(f"GET {path}: {r.status_code} {r.text[:200]}")
        return r.json()

    def keys(self) -> dict[str, bytes]:
        return keys_of(self.json(KEYS_PATH))

    def last_settled(self) -> int:
        rounds = self.json(f"{API_PREFIX}/game/rounds", limit=1)["rounds"]
        if not rounds:
            raise UsageError("the server has no finished round yet")
        return int(rounds[0]["round_id"])

    def transcripts(self, first: int, last: int) -> Iterator[Any]:
        following: int | None = first
        while following is not None and following <= last:
            page = self.json(
                f"{API_PREFIX}/game/transcripts", from_round=following, to_round=last, limit=PAGE
            )
            yield from page["transcripts"]
            following = page["next_round"]

    def transcript(self, round_id: int) -> Any | None:
        r = self.get(f"{API_PREFIX}/game/rounds/{round_id}/transcript")
        return r.json() if r.status_code == 200 else None

    def close(self) -> None:
        self.client.close()


def _range(server: Server, args: argparse.Namespace) -> tuple[int, int]:
    last = args.last if args.last is not None else server.last_settled()
    first = args.first if args.first is not None else max(1, last - DEFAULT_LAST + 1)
    if not 1 <= first <= last:
        raise UsageError("need 1 <= --from <= --to")
    return first, last


# -- commands --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    if args.files and args.files[0] == "export":
        if len(args.files) > 1:
            raise UsageError("export takes no files")
        return run_export(args)
    if args.files and args.files[0] == "partner-secret":
        if len(args.files) != 2:
            raise UsageError("partner-secret takes one partner id")
        return run_partner_secret(args, args.files[1])
    args.files = [Path(f) for f in args.files]
    receipts = [r for path in args.receipts for r in read_documents(path)]
    if args.url is not None:
        if args.files:
            raise UsageError("give transcript files or --url, not both")
        server = Server(args.url, args.key)
        try:
            keys = server.keys()
            first, last = _range(server, args)
            transcripts = list(server.transcripts(first, last))
            have = {t.get("round_id") for t in transcripts if isinstance(t, dict)}
            wanted = {r.get("round_id") for r in receipts if isinstance(r, dict)}
            for rid in sorted(x for x in wanted if isinstance(x, int)):
                if rid not in have:
                    extra = server.transcript(rid)
                    if extra is not None:
                        transcripts.append(extra)
            fairness = server.json(f"{API_PREFIX}/fairness")
            terminating = args.terminating or fairness.get("terminating_hash")
            chains = [c for c in fairness.get("chains") or () if isinstance(c, dict)]
        finally:
            server.close()
    else:
        if not args.files:
            raise UsageError("give transcript files, or --url")
        if args.keys is None:
            raise UsageError("--keys is needed to check files (the JWK Set, or the server URL)")
        transcripts = [t for path in args.files for t in read_documents(path)]
        terminating = args.terminating
        chains = []
    if args.keys is not None:
        if args.keys.startswith(("http://", "https://")):
            try:
                r = httpx.get(args.keys.rstrip("/") + KEYS_PATH, timeout=30.0)
            except httpx.HTTPError as exc:
                raise UsageError(f"cannot fetch the keys: {exc}") from None
            keys = keys_of(r.json())
        else:
            docs = read_documents(Path(args.keys))
            keys = keys_of(docs[0] if docs else None)
    transcripts.sort(key=lambda t: t.get("round_id", 0) if isinstance(t, dict) else 0)
    if not transcripts:
        raise UsageError("no transcripts to audit")
    report = audit(
        transcripts, keys, receipts=receipts, terminating_hash=terminating, chains=chains
    )
    _print(report, args.json)
    return 0 if report.ok else 1


def _print(report: AuditReport, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report.to_dict()))
        return
    span = f"rounds {report.rounds[0]}..{report.rounds[-1]}" if report.rounds else "no rounds"
    for f in report.findings:
        where = f"round {f.round_id}" if f.round_id is not None else "input"
        print(f"{where}: {f.check}: {f.detail}")
    for note in report.unchecked:
        print(f"unchecked: {note}", file=sys.stderr)
    verdict = "clean" if report.ok else f"{len(report.findings)} finding(s)"
    print(
        f"audit: {report.transcripts} transcript(s), {span}, {report.rerun} re-run, "
        f"{report.receipts} receipt(s): {verdict}"
    )


def run_export(args: argparse.Namespace) -> int:
    if args.url is None:
        raise UsageError("--url is needed")
    server = Server(args.url, args.key)
    try:
        first, last = _range(server, args)
        out = args.out.open("w", encoding="utf-8") if args.out is not None else sys.stdout
        n = 0
        try:
            for t in server.transcripts(first, last):
                out.write(json.dumps(t, separators=(",", ":"), ensure_ascii=False, sort_keys=True))
                out.write("\n")
                n += 1
        finally:
            if args.out is not None:
                out.close()
    finally:
        server.close()
    print(f"exported {n} transcript(s) of rounds {first}..{last}", file=sys.stderr)
    return 0


def run_partner_secret(args: argparse.Namespace, partner: str) -> int:
    try:
        key = signingkey.load(args.key_file)
    except signingkey.SigningKeyError as exc:
        raise UsageError(str(exc)) from None
    secret = Pseudonyms(key.pseudonym_secret).partner_secret(partner)
    print(secret.hex())
    return 0

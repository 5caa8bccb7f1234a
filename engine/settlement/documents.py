"""The signed documents: receipts, the start seal, the round transcript.

Each is a JSON object in the canonical domain (``canonical``) with ``"v"`` (format
version), ``"type"`` and ``"key_id"``; its signature ``"sig"`` is Ed25519 (RFC 8032)
over the canonical bytes of the object *without* ``"sig"``, in base64url; its hash
(what a transcript's ``prev`` names, a receipt's ``leaf``, an ETag) is SHA-256 over
those same bytes. docs/fairness.md specifies every member.

The key id is the first 16 hex digits of SHA-256 of the raw 32-byte public key, so a
document names the key that signed it and a verifier needs nothing but the published
key set (``/.well-known/crashd-keys``).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from . import merkle
from .canonical import b64url, canonical, check_domain, from_b64url

VERSION = 1
TRANSCRIPT = "crashd.transcript"
SEAL = "crashd.seal"
RECEIPT = "crashd.receipt"

BET, TARGET, CASHOUT = "bet", "target", "cashout"
"""Receipt kinds: an accepted bet, an accepted auto-cashout change, a cash-out."""

PSEUDONYM_DIGITS = 32
"""Hex digits of a player pseudonym (128 bits of HMAC-SHA256)."""
_PARTNER_LABEL = b"crashd-player/1\x00"


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


def jwk(public_raw: bytes) -> dict[str, str]:
    """The public key as a JSON Web Key (RFC 8037): what ``/.well-known/crashd-keys`` lists."""
    return {
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(public_raw),
        "kid": key_id_of(public_raw),
        "alg": "EdDSA",
        "use": "sig",
    }


class Signer:
    """Signs documents with the server's Ed25519 key (deterministic: RFC 8032)."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._key = private
        self.public_raw = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.key_id = key_id_of(self.public_raw)

    def sign(self, doc: Mapping[str, Any]) -> dict[str, Any]:
        """``doc`` with ``key_id`` and ``sig`` (any ``sig`` it had is replaced)."""
        body = {k: v for k, v in doc.items() if k != "sig"}
        body["key_id"] = self.key_id
        return {**body, "sig": b64url(self._key.sign(canonical(body)))}

    def keys(self) -> dict[str, bytes]:
        return {self.key_id: self.public_raw}


def unsigned(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "sig"}


def doc_hash(doc: Mapping[str, Any]) -> str:
    """SHA-256 hex of the canonical bytes of ``doc`` without its signature."""
    return hashlib.sha256(canonical(unsigned(doc))).hexdigest()


def verify(doc: Any, keys: Mapping[str, bytes]) -> str | None:
    """``None`` if ``doc`` is a document in the canonical domain signed by one of
    ``keys`` (key id -> raw public key), else what is wrong with it."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    problem = check_domain(doc)
    if problem is not None:
        return f"not canonical JSON: {problem}"
    key_id, sig = doc.get("key_id"), doc.get("sig")
    if not isinstance(key_id, str) or key_id not in keys:
        return f"signed by an unknown key {key_id!r}"
    try:
        raw = from_b64url(sig) if isinstance(sig, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 64:
        return "the signature is not 64 bytes of base64url"
    try:
        Ed25519PublicKey.from_public_bytes(keys[key_id]).verify(raw, canonical(unsigned(doc)))
    except InvalidSignature:
        return "the signature does not verify"
    return None


class Pseudonyms:
    """Player ids for public documents: ``HMAC-SHA256(partner secret, user id)``, the
    first 32 hex digits, with ``partner secret = HMAC-SHA256(server secret,
    "crashd-player/1" 0x00 partner id)``. A partner given its secret can find its own
    users in transcripts; nobody else can tell who played, or link partners' users."""

    def __init__(self, secret: bytes) -> None:
        assert len(secret) >= 32
        self._secret = secret
        self._partners: dict[str, bytes] = {}
        self._players: dict[tuple[str, str], str] = {}

    def partner_secret(self, partner_id: str) -> bytes:
        known = self._partners.get(partner_id)
        if known is None:
            known = hmac.digest(self._secret, _PARTNER_LABEL + partner_id.encode(), "sha256")
            if len(self._partners) >= 10_000:
                self._partners.clear()
            self._partners[partner_id] = known
        return known

    def player(self, partner_id: str, user_id: str) -> str:
        key = (partner_id, user_id)
        known = self._players.get(key)
        if known is None:
            known = player_id(self.partner_secret(partner_id), user_id)
            if len(self._players) >= 200_000:  # bounded, like every cache
                self._players.clear()
            self._players[key] = known
        return known

    def of(self, user: object) -> str:
        """The pseudonym of an engine user key ``(partner, environment, user id)``."""
        if isinstance(user, tuple) and len(user) == 3:
            return self.player(str(user[0]), str(user[2]))
        return self.player("", str(user))


def player_id(partner_secret: bytes, user_id: str) -> str:
    return hmac.digest(partner_secret, user_id.encode(), "sha256").hex()[:PSEUDONYM_DIGITS]


# -- the bet's leaf: what the seal commits to, and a bet receipt promises --------------


def bet_leaf(
    round_id: int, ticket_id: str, player: str, stake: int, auto_cashout: int | None, placed_at: int
) -> dict[str, Any]:
    return {
        "round_id": round_id,
        "ticket_id": ticket_id,
        "player": player,
        "stake": stake,
        "auto_cashout": auto_cashout,
        "placed_at": placed_at,
    }


def leaf_digest(leaf: Mapping[str, Any]) -> bytes:
    """The Merkle leaf hash of a bet: ``SHA-256(0x00 || canonical(leaf))``."""
    return merkle.leaf_hash(canonical(leaf))


@dataclass(frozen=True, slots=True)
class SealedBet:
    """A bet as the seal commits to it: its target when betting closed."""

    ticket_id: str
    player: str
    stake: int
    auto_cashout: int | None
    placed_at: int

    def leaf(self, round_id: int) -> dict[str, Any]:
        return bet_leaf(
            round_id, self.ticket_id, self.player, self.stake, self.auto_cashout, self.placed_at
        )


def seal_body(
    round_id: int, opened_at: int, closes_at: int, started_at: int, bets: list[SealedBet]
) -> dict[str, Any]:
    """The unsigned seal of the bets in play when the round started (placement order)."""
    leaves = [leaf_digest(b.leaf(round_id)) for b in bets]
    return {
        "v": VERSION,
        "type": SEAL,
        "round_id": round_id,
        "opened_at": opened_at,
        "closes_at": closes_at,
        "started_at": started_at,
        "bets": len(bets),
        "total_stake": sum(b.stake for b in bets),
        "auto_cashouts": sum(1 for b in bets if b.auto_cashout is not None),
        "root": merkle.root(leaves).hex(),
    }


def bet_receipt(
    round_id: int,
    ticket_id: str,
    player: str,
    stake: int,
    auto_cashout: int | None,
    placed_at: int,
    *,
    queued: bool,
    kind: str = BET,
    at: int | None = None,
) -> dict[str, Any]:
    """The unsigned receipt of an accepted bet (``kind="target"``: of a target change
    at ``at``): it promises the bet's leaf will be in round ``round_id``'s seal, unless
    a later target receipt replaces it or the round is voided before it starts."""
    leaf = bet_leaf(round_id, ticket_id, player, stake, auto_cashout, placed_at)
    doc: dict[str, Any] = {
        "v": VERSION,
        "type": RECEIPT,
        "kind": kind,
        **leaf,
        "queued": queued,
        "leaf": leaf_digest(leaf).hex(),
    }
    doc["at"] = placed_at if at is None else at
    return doc


def cashout_receipt(
    round_id: int,
    ticket_id: str,
    player: str,
    *,
    how: str,
    at: int,
    elapsed_ms: int,
    multiplier: int,
    payout: int,
) -> dict[str, Any]:
    """The unsigned receipt of a cash-out decided at ``at`` (engine clock, Unix ms)."""
    return {
        "v": VERSION,
        "type": RECEIPT,
        "kind": CASHOUT,
        "round_id": round_id,
        "ticket_id": ticket_id,
        "player": player,
        "cashout": how,
        "at": at,
        "elapsed_ms": elapsed_ms,
        "multiplier": multiplier,
        "payout": payout,
    }

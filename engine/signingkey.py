"""The server's signing key file: the Ed25519 key that signs transcripts, seals and
receipts, and the secret behind player pseudonyms (docs/fairness.md).

Kept apart from ``settlement`` because it does I/O. Created with the chain (``crashd
chain new``, or the first ``crashd serve``), mode 0600 and never overwritten: the public
key is what third parties verify every round with, so losing the file means a new key
(old transcripts stay verifiable with the old public key, which the operator keeps
publishing), and leaking it lets someone sign false transcripts. Back it up with the
chain file.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .settlement.documents import Pseudonyms, Signer

FORMAT = "crashd-signing-key/1"


class SigningKeyError(Exception):
    """The key file is unreadable, malformed, or would be overwritten."""


@dataclass(frozen=True)
class SigningKey:
    signer: Signer
    pseudonym_secret: bytes
    created_at_ms: int

    @property
    def key_id(self) -> str:
        return self.signer.key_id

    def pseudonyms(self) -> Pseudonyms:
        return Pseudonyms(self.pseudonym_secret)


def beside(chain_file: Path) -> Path:
    """Where the key file lives by default: next to the chain file it was created with
    (``crashd-chain.json`` -> ``crashd-chain.signing.json``)."""
    return chain_file.with_name(chain_file.stem + ".signing.json")


def create(path: Path) -> SigningKey:
    """Draw a new key and pseudonym secret and write them to ``path`` (0600); refuse to
    replace an existing file."""
    seed = secrets.token_bytes(32)
    pseudonym = secrets.token_bytes(32)
    created = time.time_ns() // 1_000_000
    doc = {
        "format": FORMAT,
        "algorithm": "Ed25519",
        "private_key": seed.hex(),
        "pseudonym_secret": pseudonym.hex(),
        "created_at_ms": created,
    }
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise SigningKeyError(
            f"{path} already exists; refusing to overwrite a signing key"
        ) from None
    except OSError as exc:
        raise SigningKeyError(f"cannot create {path}: {exc}") from None
    try:
        os.write(fd, json.dumps(doc, indent=1).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return _from_doc(doc, path)


def load(path: Path) -> SigningKey:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise SigningKeyError(f"no signing key file at {path}") from None
    except (OSError, ValueError) as exc:
        raise SigningKeyError(f"cannot read signing key file {path}: {exc}") from None
    return _from_doc(doc, path)


def ensure(path: Path, out: TextIO) -> SigningKey:
    """Load the key file, creating it (and saying so) if it does not exist."""
    if path.exists():
        return load(path)
    key = create(path)
    print(
        f"created signing key file {path} (key id {key.key_id}; secret, mode 0600: back it up "
        "with the chain file)",
        file=out,
    )
    return key


def _from_doc(doc: object, path: Path) -> SigningKey:
    try:
        assert isinstance(doc, dict) and doc.get("format") == FORMAT
        seed = bytes.fromhex(doc["private_key"])
        pseudonym = bytes.fromhex(doc["pseudonym_secret"])
        created = int(doc["created_at_ms"])
        assert len(seed) == 32 and len(pseudonym) == 32
    except (AssertionError, KeyError, TypeError, ValueError):
        raise SigningKeyError(f"{path} is not a {FORMAT} file") from None
    return SigningKey(Signer(Ed25519PrivateKey.from_private_bytes(seed)), pseudonym, created)

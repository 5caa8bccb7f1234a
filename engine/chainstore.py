"""The operator's chain file: the secret seed, checkpoints and public salt, on disk.

Kept apart from ``fairness`` because it does I/O. The file is secret (anyone holding it
knows every future crash point), so it is created with mode 0600 and never overwritten.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from .fairness import ChainEncoding, ChainSpec, FairnessError, build_chain, parse_hash

FORMAT = "crashd-chain/1"


class ChainFileError(Exception):
    """The chain file is missing, unreadable, malformed or would be overwritten."""


@dataclass(frozen=True)
class ChainFile:
    spec: ChainSpec
    salt: str | None
    """Public salt; ``None`` until the operator fixes it (after publishing the commitment)."""


def save(path: Path, chain: ChainFile, *, overwrite: bool = False) -> None:
    """Write ``chain`` to ``path`` with mode 0600; refuse to replace an existing file
    unless ``overwrite`` (used only to fix the salt of a chain that has not been played).
    """
    spec = chain.spec
    doc = {
        "format": FORMAT,
        "encoding": spec.encoding.value,
        "length": spec.length,
        "interval": spec.interval,
        "terminating_hash": spec.terminating_hash.hex(),
        "salt": chain.salt,
        "seed": spec.seed.hex(),
        "checkpoints": [c.hex() for c in spec.checkpoints],
    }
    data = json.dumps(doc, indent=1).encode()
    tmp = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    if overwrite:
        os.replace(tmp, path)
        return
    try:
        # link() fails if the target exists: no window in which a chain is clobbered.
        os.link(tmp, path)
    except FileExistsError:
        raise ChainFileError(f"{path} already exists; refusing to overwrite a chain") from None
    finally:
        os.unlink(tmp)


def load(path: Path) -> ChainFile:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ChainFileError(
            f"no chain file at {path} (create one with `crashd chain new`)"
        ) from None
    except (OSError, ValueError) as exc:
        raise ChainFileError(f"cannot read chain file {path}: {exc}") from None
    try:
        if doc.get("format") != FORMAT:
            raise ChainFileError(f"{path} is not a {FORMAT} file")
        spec = ChainSpec(
            seed=parse_hash(doc["seed"], "seed"),
            length=int(doc["length"]),
            encoding=ChainEncoding(doc["encoding"]),
            interval=int(doc["interval"]),
            checkpoints=tuple(parse_hash(c, "checkpoint") for c in doc["checkpoints"]),
            terminating_hash=parse_hash(doc["terminating_hash"], "terminating hash"),
        )
        salt = doc.get("salt")
        if salt is not None and not isinstance(salt, str):
            raise ChainFileError(f"{path}: salt must be a string")
    except (KeyError, TypeError, ValueError, FairnessError) as exc:
        raise ChainFileError(f"{path} is malformed: {exc}") from None
    expected = -(-spec.length // spec.interval)
    if len(spec.checkpoints) != expected:
        raise ChainFileError(f"{path} has {len(spec.checkpoints)} checkpoints, expected {expected}")
    return ChainFile(spec=spec, salt=salt)


def new_seed() -> bytes:
    """A fresh 32-byte secret seed from the OS CSPRNG (kept out of the pure
    ``fairness`` module: randomness is input, like time)."""
    return secrets.token_bytes(32)


def create(
    path: Path,
    length: int,
    encoding: ChainEncoding,
    interval: int,
    salt: str | None,
    progress: Callable[[int], None] | None = None,
) -> ChainFile:
    """Build a chain from a fresh secret seed and store it (mode 0600); never over an
    existing file. ``progress`` is called with the links hashed so far."""
    if path.exists():
        raise ChainFileError(f"{path} already exists; refusing to overwrite a chain")
    try:
        spec = build_chain(new_seed(), length, encoding, interval, progress)
    except FairnessError as exc:
        raise ChainFileError(str(exc)) from None
    chain = ChainFile(spec=spec, salt=salt)
    save(path, chain)
    return chain


def progress_printer(out: TextIO, length: int) -> Callable[[int], None]:
    """A ``progress`` for ``create`` that redraws one line on ``out`` at most once a
    second (a 10,000,000-link chain takes a few seconds)."""
    started = time.perf_counter()
    last = [0.0]

    def progress(done: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= 1.0 or done == length:
            last[0] = now
            print(f"\rhashing chain: {done:,}/{length:,} links", end="", file=out, flush=True)
        if done == length:
            print(f"\rhashing chain: {length:,} links in {now - started:.1f} s", file=out)

    return progress

"""Provably fair crash points, Bustabit v2 compatible.

The operator draws a secret seed and builds a hash chain from it::

    link[0] = seed
    link[i] = sha256(encode(link[i-1]))        for i in 1..n

where ``encode`` is the lowercase hex string of the previous link (``hex``, Bustabit's
encoding and our default) or its raw 32 bytes (``raw``, seen in other operators'
chains). ``link[n]``, the terminating hash, is published before the first game. Game
``g`` (1-based) is played with ``link[n - g]``, so revealing a game's hash lets anyone
check ``sha256^g(game_hash) == terminating`` and proves it was fixed in advance.

The crash point of a game mixes in a public salt chosen after the commitment::

    r = int(HMAC_SHA256(key=salt, msg=bytes(game_hash)).hexdigest()[:13], 16)
    X = r / 2**52
    crash = max(100, floor(99 / (1 - X)))       # integer hundredths

evaluated in IEEE doubles exactly as written, because published verifiers do.

Nothing here touches a file or a clock: ``ChainSpec`` is the data an operator keeps
secret, and its (de)serialisation lives with the caller.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

DEFAULT_CHAIN_LENGTH = 10_000_000
DEFAULT_CHECKPOINT_INTERVAL = 10_000
HOUSE_EDGE_NUMERATOR = 99
"""``99 / (1 - X)``: the 1% house edge, P(crash >= m) = 0.99 / m."""

_NBITS = 52


class ChainEncoding(str, Enum):
    """How one link is fed to SHA-256 to make the next."""

    HEX = "hex"
    """SHA-256 of the 64-character lowercase hex string (Bustabit)."""
    RAW = "raw"
    """SHA-256 of the raw 32 bytes."""


class FairnessError(ValueError):
    """Malformed input to a fairness function (bad hex, wrong length, bad salt)."""


def parse_hash(value: str, what: str = "hash") -> bytes:
    """Validate a 64-hex-digit SHA-256 value and return its 32 bytes."""
    text = value.strip()
    if len(text) != 64:
        raise FairnessError(f"{what} must be 64 hex digits, got {len(text)} characters")
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise FairnessError(f"{what} is not hexadecimal: {text!r}") from None
    return raw


def _salt_bytes(salt: str) -> bytes:
    try:
        return salt.encode("ascii")
    except UnicodeEncodeError:
        raise FairnessError("salt must be ASCII text") from None


@functools.lru_cache(maxsize=16)
def _keyed_hmac(salt: str) -> hmac.HMAC:
    # Keying HMAC costs two compressions; a round reuses the same salt forever.
    return hmac.new(_salt_bytes(salt), digestmod=hashlib.sha256)


def crash_point(game_hash: str, salt: str) -> int:
    """The crash point of a game, in integer hundredths (``374`` is 3.74x)."""
    digest = _keyed_hmac(salt).copy()
    digest.update(parse_hash(game_hash, "game hash"))
    r = int(digest.hexdigest()[: _NBITS // 4], 16)
    x: float = r / 2**_NBITS
    # Float on purpose, exactly as the JavaScript verifiers evaluate it.
    return max(100, math.floor(HOUSE_EDGE_NUMERATOR / (1 - x)))


def next_link(link: bytes, encoding: ChainEncoding = ChainEncoding.HEX) -> bytes:
    """One step along the chain (towards the terminating hash)."""
    if encoding is ChainEncoding.HEX:
        return hashlib.sha256(link.hex().encode("ascii")).digest()
    return hashlib.sha256(link).digest()


def _stepper(encoding: ChainEncoding) -> Callable[[bytes], bytes]:
    sha256 = hashlib.sha256
    if encoding is ChainEncoding.HEX:
        return lambda link: sha256(link.hex().encode("ascii")).digest()
    return lambda link: sha256(link).digest()


def chain_position(
    game_hash: str,
    terminating_hash: str,
    max_steps: int,
    encoding: ChainEncoding = ChainEncoding.HEX,
) -> int | None:
    """Steps from ``game_hash`` to ``terminating_hash`` (its game number), or None.

    Walks at most ``max_steps`` links. A hash equal to the terminating hash is position
    0: it is the commitment itself, not a playable game.
    """
    if max_steps < 0:
        raise FairnessError("max_steps must not be negative")
    link = parse_hash(game_hash, "game hash")
    target = parse_hash(terminating_hash, "terminating hash")
    step = _stepper(encoding)
    for position in range(max_steps + 1):
        if link == target:
            return position
        link = step(link)
    return None


@dataclass(frozen=True)
class ChainSpec:
    """Everything needed to serve a chain's games: secret, so kept by the operator.

    ``checkpoints[j]`` is ``link[j * interval]``; with them any link is at most
    ``interval - 1`` hashes away, so the full chain is never held in memory.
    """

    seed: bytes
    length: int
    encoding: ChainEncoding
    interval: int
    checkpoints: tuple[bytes, ...]
    terminating_hash: bytes

    @property
    def games(self) -> int:
        """Playable games: ``link[n-1]`` down to ``link[0]``."""
        return self.length


def build_chain(
    seed: bytes,
    length: int = DEFAULT_CHAIN_LENGTH,
    encoding: ChainEncoding = ChainEncoding.HEX,
    interval: int = DEFAULT_CHECKPOINT_INTERVAL,
    progress: Callable[[int], None] | None = None,
) -> ChainSpec:
    """Walk the chain once from ``seed``, keeping only every ``interval``-th link.

    Memory is ``length / interval`` links; time is ``length`` SHA-256 calls.
    ``progress(done)`` is called after each checkpoint, for a CLI progress line.
    """
    if len(seed) != 32:
        raise FairnessError("seed must be 32 bytes")
    if length < 1:
        raise FairnessError("chain length must be at least 1")
    if interval < 1:
        raise FairnessError("checkpoint interval must be at least 1")
    sha256 = hashlib.sha256
    hexed = encoding is ChainEncoding.HEX
    checkpoints = [seed]
    link = seed
    done = 0
    while done < length:
        todo = min(interval, length - done)
        # The hot loop: inlined on purpose, this is where chain creation spends its time.
        if hexed:
            for _ in range(todo):
                link = sha256(link.hex().encode()).digest()
        else:
            for _ in range(todo):
                link = sha256(link).digest()
        done += todo
        if done % interval == 0 and done < length:
            checkpoints.append(link)
        if progress is not None:
            progress(done)
    return ChainSpec(
        seed=seed,
        length=length,
        encoding=encoding,
        interval=interval,
        checkpoints=tuple(checkpoints),
        terminating_hash=link,
    )


@dataclass
class ChainReader:
    """Serves ``link[i]`` from a ``ChainSpec``, one cached segment at a time.

    Games are consumed in decreasing link order, so the segment holding the current
    game is computed once (``interval - 1`` hashes) and every later game inside it is a
    list lookup: amortised about one hash per game, never millions.
    """

    spec: ChainSpec
    _segment_index: int = field(default=-1, init=False)
    _segment: list[bytes] = field(default_factory=list, init=False)

    def link(self, index: int) -> bytes:
        if not 0 <= index <= self.spec.length:
            raise IndexError(f"link {index} is outside the chain 0..{self.spec.length}")
        if index == self.spec.length:
            return self.spec.terminating_hash
        segment_index = index // self.spec.interval
        if segment_index != self._segment_index:
            self._segment = self._compute_segment(segment_index)
            self._segment_index = segment_index
        return self._segment[index - segment_index * self.spec.interval]

    def _compute_segment(self, segment_index: int) -> list[bytes]:
        start = segment_index * self.spec.interval
        end = min(start + self.spec.interval, self.spec.length)  # exclusive
        step = _stepper(self.spec.encoding)
        link = self.spec.checkpoints[segment_index]
        segment = [link]
        for _ in range(end - start - 1):
            link = step(link)
            segment.append(link)
        return segment

    def game_hash(self, game: int) -> str:
        """The hex hash of game ``game`` (1-based, in play order)."""
        if not 1 <= game <= self.spec.games:
            raise IndexError(f"game {game} is outside 1..{self.spec.games}")
        return self.link(self.spec.length - game).hex()

    def games(self, first: int = 1) -> Iterator[tuple[int, str]]:
        """``(game number, game hash)`` from ``first`` until the chain is used up."""
        for game in range(first, self.spec.games + 1):
            yield game, self.game_hash(game)


def verify_game(
    game_hash: str,
    salt: str,
    terminating_hash: str,
    game: int,
    encoding: ChainEncoding = ChainEncoding.HEX,
) -> int:
    """Check a revealed game end to end; return its crash point or raise FairnessError."""
    position = chain_position(game_hash, terminating_hash, game, encoding)
    if position != game:
        raise FairnessError(f"game hash does not sit at position {game} below the terminating hash")
    return crash_point(game_hash, salt)

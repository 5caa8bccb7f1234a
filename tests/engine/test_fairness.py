"""Provable fairness: crash points, chains, verification, statistics."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import random
import shutil
import subprocess

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crashd.engine.fairness import (
    ChainEncoding,
    ChainReader,
    FairnessError,
    build_chain,
    chain_position,
    crash_point,
    next_link,
    verify_game,
)

KNOWN_SALT = "0000000000000000004d6ec16dafe9d8370958664c1dc422f452892264c59526"
KNOWN_HASH = "6774ddd3dfe94e2c966d4ca5c5ed6dcd1f6a4fdab87ad12677ee7c5b96d6a3f5"

hashes = st.binary(min_size=32, max_size=32).map(bytes.hex)


def test_known_answer() -> None:
    assert crash_point(KNOWN_HASH, KNOWN_SALT) == 374
    assert crash_point(KNOWN_HASH.upper(), KNOWN_SALT) == 374


def reference_crash_point(game_hash: str, salt: str) -> int:
    """The DESIGN.md recipe, written out independently of engine.fairness."""
    mac = hmac.new(salt.encode("ascii"), bytes.fromhex(game_hash), "sha256").hexdigest()
    x = int(mac[:13], 16) / 2**52
    return max(100, int(math.floor(99 / (1 - x))))


@given(hashes, st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80))
def test_crash_point_matches_reference_and_is_at_least_one(game_hash: str, salt: str) -> None:
    point = crash_point(game_hash, salt)
    assert point >= 100
    assert point == reference_crash_point(game_hash, salt)


@pytest.mark.parametrize("bad", ["", "zz" * 32, "ab" * 31, "ab" * 33, " " * 64, "g" + "0" * 63])
def test_bad_hashes_are_rejected(bad: str) -> None:
    with pytest.raises(FairnessError):
        crash_point(bad, "salt")


def test_non_ascii_salt_rejected() -> None:
    with pytest.raises(FairnessError):
        crash_point(KNOWN_HASH, "sälz")


@pytest.mark.parametrize("encoding", list(ChainEncoding))
def test_chain_links_and_positions(encoding: ChainEncoding) -> None:
    seed = bytes(range(32))
    spec = build_chain(seed, length=257, encoding=encoding, interval=16)
    # Recompute the whole chain naively and compare every link the reader serves.
    links = [seed]
    for _ in range(257):
        links.append(next_link(links[-1], encoding))
    assert spec.terminating_hash == links[-1]
    reader = ChainReader(spec)
    for game in range(1, 258):
        game_hash = reader.game_hash(game)
        assert game_hash == links[257 - game].hex()
        assert chain_position(game_hash, spec.terminating_hash.hex(), 300, encoding) == game
    # The last game is the seed itself.
    assert reader.game_hash(257) == seed.hex()


def test_hex_encoding_is_sha256_of_lowercase_hex() -> None:
    link = bytes.fromhex(KNOWN_HASH)
    assert next_link(link).hex() == hashlib.sha256(KNOWN_HASH.encode()).hexdigest()
    assert next_link(link, ChainEncoding.RAW).hex() == hashlib.sha256(link).hexdigest()


def test_non_linkage() -> None:
    spec = build_chain(bytes(32), length=50, interval=7)
    stranger = hashlib.sha256(b"not in the chain").hexdigest()
    assert chain_position(stranger, spec.terminating_hash.hex(), 1000) is None
    game_10 = ChainReader(spec).game_hash(10)
    # Bounded: 9 steps are not enough to reach it from game 10.
    assert chain_position(game_10, spec.terminating_hash.hex(), 9) is None
    assert chain_position(game_10, spec.terminating_hash.hex(), 10) == 10
    # The wrong encoding never links.
    assert chain_position(game_10, spec.terminating_hash.hex(), 1000, ChainEncoding.RAW) is None


def test_verify_game_end_to_end() -> None:
    spec = build_chain(bytes(32), length=40, interval=8)
    reader = ChainReader(spec)
    h = reader.game_hash(3)
    assert verify_game(h, "salt", spec.terminating_hash.hex(), 3) == crash_point(h, "salt")
    with pytest.raises(FairnessError):
        verify_game(h, "salt", spec.terminating_hash.hex(), 4)


def test_reader_serves_games_in_order_with_segment_cache() -> None:
    spec = build_chain(bytes([9]) * 32, length=1000, interval=100)
    reader = ChainReader(spec)
    games = list(reader.games())
    assert [g for g, _ in games] == list(range(1, 1001))
    for (_, newer), (_, older) in zip(games[1:], games[:-1], strict=True):
        # Each game hashes to the one played before it.
        assert next_link(bytes.fromhex(newer)).hex() == older
    with pytest.raises(IndexError):
        reader.game_hash(0)
    with pytest.raises(IndexError):
        reader.game_hash(1001)


def test_distribution_matches_house_edge() -> None:
    """P(crash >= m) = 0.99 / m over 1,000,000 crash points from a fixed seed chain."""
    n = 1_000_000
    spec = build_chain(
        hashlib.sha256(b"crashd statistics seed").digest(), length=n, interval=50_000
    )
    salt = "crashd-statistics-salt"
    points = [crash_point(h, salt) for _, h in ChainReader(spec).games()]
    assert min(points) >= 100
    for m in (101, 110, 150, 200, 300, 500, 1000, 2000, 10_000):
        p = 99 / m
        count = sum(1 for x in points if x >= m)
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(count - n * p) <= 5 * sigma, (m, count, n * p, sigma)
    # Instant crashes (1.00x): P(crash < 1.01) = 1 - 0.99/1.01 ≈ 1.98%.
    instant = sum(1 for x in points if x == 100)
    p = 1 - 99 / 101
    assert abs(instant - n * p) <= 5 * math.sqrt(n * p * (1 - p))
    # Expected return of a fixed 2.00x bet: 0.99 × 2 = 1.98 → house edge 1%.
    wins = sum(1 for x in points if x >= 200)
    rtp = wins * 2 / n
    assert abs(rtp - 0.99) < 0.005


NODE_VERIFIER = r"""
const crypto = require('crypto');
const cases = JSON.parse(require('fs').readFileSync(0, 'utf8'));
const out = cases.map(([gameHash, salt]) => {
  const mac = crypto.createHmac('sha256', salt).update(Buffer.from(gameHash, 'hex')).digest('hex');
  const X = parseInt(mac.slice(0, 13), 16) / Math.pow(2, 52);
  return Math.max(100, Math.floor(99 / (1 - X)));
});
process.stdout.write(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_agrees_with_a_javascript_verifier() -> None:
    """Third-party verifiers are JavaScript: the double arithmetic must match theirs."""
    rng = random.Random(2024)
    cases = [
        (rng.randbytes(32).hex(), rng.choice([KNOWN_SALT, "crashd", "x" * 64])) for _ in range(5000)
    ]
    cases.append((KNOWN_HASH, KNOWN_SALT))
    result = subprocess.run(
        ["node", "-e", NODE_VERIFIER],
        input=json.dumps(cases),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    theirs = json.loads(result.stdout)
    ours = [crash_point(h, s) for h, s in cases]
    assert ours == theirs
    assert theirs[-1] == 374

"""The start seal's Merkle tree: RFC 6962 (Certificate Transparency) hashing.

``leaf = SHA-256(0x00 || data)``, ``node = SHA-256(0x01 || left || right)``; a level of
odd length carries its last node up unchanged, which builds exactly RFC 6962's tree
(split at the largest power of two below n). The root of no leaves is SHA-256 of the
empty string. The prefixes keep a leaf from ever passing for a node (second preimages).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """The tree head over leaf *hashes* (``leaf_hash`` of each leaf's data)."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    sha256 = hashlib.sha256
    while len(level) > 1:
        up = [
            sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            up.append(level[-1])
        level = up
    return level[0]


def inclusion_path(leaves: Sequence[bytes], index: int) -> list[tuple[str, bytes]]:
    """The audit path of leaf ``index``: (side, sibling) pairs from the leaf up, side
    ``"L"`` when the sibling is on the left."""
    assert 0 <= index < len(leaves)
    path: list[tuple[str, bytes]] = []
    level = list(leaves)
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(("L" if sibling < index else "R", level[sibling]))
        up = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            up.append(level[-1])
        level = up
        index //= 2
    return path


def root_from_path(leaf: bytes, path: Sequence[tuple[str, bytes]]) -> bytes:
    node = leaf
    for side, sibling in path:
        node = node_hash(sibling, node) if side == "L" else node_hash(node, sibling)
    return node

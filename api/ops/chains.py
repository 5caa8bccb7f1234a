"""Hash chains one after another: rotation to a new chain when one runs out.

A chain of ``n`` games covers ``n`` consecutive round ids: the first chain rounds
``1..n`` (so a round's id is its game number, as before rotation existed), the next
one the rounds after it, and so on. A round's game number in its chain is
``round_id - first_round + 1``, and that is what ``sha256^g(game_hash) ==
terminating_hash`` is checked with (``GET /api/v1/fairness`` lists every chain with
its first round; each finished round names its chain).

The history of chains is the audit log: ``chain_published`` (the commitment: the
terminating hash, the number of games, the first round, the secret file's path) and
``chain_salt`` (the public salt, fixed after the commitment was published). The
first chain — the configured ``chain_file`` — is recorded at the first start. A next
chain is published by the operator (``crashd admin chain next``) while the current
one still has games: its commitment is thus public before its first game, and the
engine moves on to it at the round after the current chain's last, provided its salt
is fixed by then (a sandbox chain gets a random one at once). Without a ready next
chain the engine stops when the chain runs out, as it always did: the warning
(``chain_warn_games``, a log line, ``crashd_chain_games_left``, the operator's page)
comes early enough to prevent it.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crashd.api import database as apidb
from crashd.engine import chainstore
from crashd.engine.fairness import (
    DEFAULT_CHECKPOINT_INTERVAL,
    ChainEncoding,
    ChainReader,
    crash_point,
)
from crashd.engine.ledger.database import is_postgres

log = logging.getLogger(__name__)

PUBLISHED = "chain_published"
SALTED = "chain_salt"


@dataclass
class Chain:
    number: int
    first_round: int
    file: Path
    chain: chainstore.ChainFile
    published_seq: int

    @property
    def games(self) -> int:
        return self.chain.spec.games

    @property
    def last_round(self) -> int:
        return self.first_round + self.games - 1

    @property
    def salt(self) -> str | None:
        return self.chain.salt

    def public(self) -> dict[str, Any]:
        spec = self.chain.spec
        return {
            "chain": self.number,
            "terminating_hash": spec.terminating_hash.hex(),
            "encoding": spec.encoding.value,
            "games": spec.games,
            "first_round": self.first_round,
            "last_round": self.last_round,
            "salt": self.salt,
        }


class ChainRegistry:
    """Every chain this server has published, in order (loaded from the audit log)."""

    def __init__(self, chains: list[Chain], warn_games: int) -> None:
        assert chains and chains[0].first_round == 1
        self.chains = chains
        self.warn_games = warn_games
        self.next_round = 1
        """The round the engine will play next (kept current by the game iterator)."""
        self._warned = False

    # -- lookups ---------------------------------------------------------------------

    def of_round(self, round_id: int) -> Chain | None:
        for chain in self.chains:
            if chain.first_round <= round_id <= chain.last_round:
                return chain
        return None

    def salt_for(self, round_id: int) -> str | None:
        chain = self.of_round(round_id)
        return None if chain is None else chain.salt

    def fairness_of(self, round_id: int) -> tuple[str, str, str] | None:
        """(salt, terminating hash, encoding) of a round's chain, as its transcript names
        them (``crashd.engine.notary``); called on the ledger writer's thread, and the
        list of chains only ever grows."""
        chain = self.of_round(round_id)
        if chain is None:
            return None
        spec = chain.chain.spec
        return chain.salt or "", spec.terminating_hash.hex(), spec.encoding.value

    def game_number(self, round_id: int) -> int | None:
        chain = self.of_round(round_id)
        return None if chain is None else round_id - chain.first_round + 1

    def reveal(self, round_id: int) -> tuple[int, str] | None:
        """(crash point, hash) of a round's game (start-up recovery reveals burnt games)."""
        chain = self.of_round(round_id)
        if chain is None or chain.salt is None:
            return None
        game_hash = ChainReader(chain.chain.spec).game_hash(round_id - chain.first_round + 1)
        return crash_point(game_hash, chain.salt), game_hash

    @property
    def current(self) -> Chain:
        return self.of_round(self.next_round) or self.chains[-1]

    def games_left(self) -> int:
        """Unplayed games in the current chain and the ready chains after it."""
        left = 0
        for chain in self.chains:
            if chain.last_round < self.next_round:
                continue
            if chain.salt is None:
                break
            left += chain.last_round - max(chain.first_round, self.next_round) + 1
        return left

    def pending(self) -> Chain | None:
        """A published chain no round has reached yet."""
        last = self.chains[-1]
        return last if last.first_round > self.next_round else None

    def status(self) -> dict[str, Any]:
        current = self.current
        pending = self.pending()
        return {
            "current": current.public(),
            "next": None if pending is None else pending.public(),
            "games_left": self.games_left(),
            "warn_below": self.warn_games,
            "low": self.games_left() < self.warn_games,
        }

    # -- the engine's games ------------------------------------------------------------

    def games(self, first_round: int) -> Iterator[tuple[int, str, str]]:
        """(round id, game hash, salt) from ``first_round`` on, chain after chain; ends
        where the chains do (or at a chain whose salt is not fixed)."""
        round_id = first_round
        while True:
            chain = self.of_round(round_id)
            if chain is None or chain.salt is None:
                if chain is not None:
                    log.error(
                        "chain %d has no salt yet: the engine stops (crashd admin chain salt)",
                        chain.number,
                    )
                return
            salt = chain.salt
            first_game = round_id - chain.first_round + 1
            if chain.number > 1 and round_id == chain.first_round:
                log.info(
                    "rotating to hash chain %d: round %d is its game 1 (terminating hash %s)",
                    chain.number,
                    round_id,
                    chain.chain.spec.terminating_hash.hex(),
                    extra={"fields": {"event": "chain_rotated", "chain": chain.number}},
                )
            for game, game_hash in ChainReader(chain.chain.spec).games(first_game):
                self.next_round = round_id + 1
                self._warn()
                yield round_id, game_hash, salt
                round_id += 1
                assert game == round_id - chain.first_round

    def _warn(self) -> None:
        left = self.games_left()
        low = left < self.warn_games
        if low and not self._warned:
            log.warning(
                "hash chain running low: %d games left; publish the next chain now "
                "(crashd admin chain next)",
                left,
                extra={"fields": {"event": "chain_low", "games_left": left}},
            )
        self._warned = low

    # -- publishing ----------------------------------------------------------------------

    def next_file(self, base: Path) -> Path:
        number = self.chains[-1].number + 1
        return base.with_name(f"{base.stem}-{number}{base.suffix or '.json'}")

    def create_next(self, base: Path, length: int, sandbox: bool) -> Chain:
        """Build the next chain's secret file (blocking: call in a thread)."""
        last = self.chains[-1]
        path = self.next_file(base)
        salt = secrets.token_hex(32) if sandbox else None
        chain = chainstore.create(
            path, length, ChainEncoding.HEX, min(DEFAULT_CHECKPOINT_INTERVAL, length), salt
        )
        return Chain(last.number + 1, last.last_round + 1, path, chain, 0)

    def add(self, chain: Chain) -> None:
        assert chain.first_round == self.chains[-1].last_round + 1
        self.chains.append(chain)
        self._warned = False

    def fix_salt(self, chain: Chain, salt: str) -> None:
        chain.chain = chainstore.ChainFile(spec=chain.chain.spec, salt=salt)
        chainstore.save(chain.file, chain.chain, overwrite=True)


def published_entry(chain: Chain) -> str:
    return json.dumps(
        {**chain.public(), "file": str(chain.file)}, separators=(",", ":"), sort_keys=True
    )


def read_entries(database: Path | str, environment: str) -> list[tuple[int, str, str]]:
    """The audit log's chain entries, oldest first, read before the ledger opens (its
    recovery reveals burnt games, which needs every chain). A database without an
    audit log yet (new, or older than schema 5) has none. ``database`` is a SQLite file
    or a ``postgresql://`` URL (read by the lease holder, through the API's connection
    of sqlite3's shape: the same SQL)."""
    import sqlite3

    if is_postgres(database):
        conn = apidb.connect(database)
        try:
            if not conn.execute("SELECT to_regclass('audit_log') IS NOT NULL").fetchone()[0]:
                return []
            return _chain_entries(conn, environment)
        finally:
            conn.close()
    assert isinstance(database, Path)
    if not database.exists():
        return []
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return _chain_entries(conn, environment)
    except sqlite3.OperationalError:  # no audit_log table yet
        return []
    finally:
        conn.close()


def _chain_entries(conn: Any, environment: str) -> list[tuple[int, str, str]]:
    return [
        (int(r[0]), str(r[1]), str(r[2]))
        for r in conn.execute(
            "SELECT id, action, after FROM audit_log WHERE environment = ? "
            "AND action IN (?, ?) ORDER BY id",
            (environment, PUBLISHED, SALTED),
        )
    ]


def load_registry(
    first: chainstore.ChainFile, first_file: Path, entries: list[tuple[int, str, str]], warn: int
) -> ChainRegistry:
    """The registry from the audit log's chain entries ``(seq, action, after JSON)``,
    oldest first; chain 1 is the configured chain file."""
    chains = [Chain(1, 1, first_file, first, 0)]
    for seq, action, after in entries:
        doc = json.loads(after)
        number = int(doc["chain"])
        if action == PUBLISHED and number > 1:
            path = Path(doc["file"])
            loaded = chainstore.load(path)
            if loaded.spec.terminating_hash.hex() != doc["terminating_hash"]:
                raise chainstore.ChainFileError(
                    f"{path} is not chain {number} (its terminating hash differs from the "
                    "published one)"
                )
            chains.append(Chain(number, int(doc["first_round"]), path, loaded, seq))
        elif action == PUBLISHED:
            if doc["terminating_hash"] != first.spec.terminating_hash.hex():
                raise chainstore.ChainFileError(
                    f"{first_file} is not the chain this database played first (its "
                    "terminating hash differs from the one recorded)"
                )
            chains[0].published_seq = seq
    return ChainRegistry(chains, warn)


__all__ = ["PUBLISHED", "SALTED", "Chain", "ChainRegistry", "load_registry", "published_entry"]

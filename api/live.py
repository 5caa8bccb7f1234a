"""The live round as everyone sees it, built once per engine change and served from there.

``GET /api/v1/game/state`` and the feed's public snapshots are read far more often than
the round changes, and a round may hold thousands of bets. So the state is an engine
observer: it notes what changed, and rebuilds (and, for REST, encodes) the public view
at most once per change — a phase change or a tick at once, other changes (bets,
cash-outs) at most once per tick period — whatever the number of readers. Its size is
bounded (counts, totals and the largest bets, ``TOP_PARTICIPANTS``); every bet is paged
through ``participants``, and a user's own bets come from that user's index alone.

The view is the engine's state as of its last published event (a tick at most
``1/tick_hz`` old), never advanced by a reader: what a reader sees was published.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from crashd.api.wire import iso_ms
from crashd.engine.curve import GROWTH_PER_MS, format_multiplier
from crashd.engine.driver import Engine
from crashd.engine.round.machine import BetInfo, RoundSnapshot

from .feed.messages import public_state


def rest_state(snap: RoundSnapshot, epoch_ms: Callable[[int], int]) -> dict[str, Any]:
    """``GET /game/state``'s body."""
    at = epoch_ms
    return {
        "round_id": snap.round_id,
        "status": snap.status,
        "current_multiplier": snap.multiplier,
        "current_multiplier_display": format_multiplier(snap.multiplier),
        "timestamp": iso_ms(at(snap.now_ms)),
        "server_time_ms": at(snap.now_ms),
        "elapsed_ms": snap.elapsed_ms,
        "betting_closes_at": iso_ms(at(snap.betting_closes_at_ms)),
        "started_at": iso_ms(at(snap.started_at_ms)) if snap.started_at_ms is not None else None,
        "crashed_at": iso_ms(at(snap.crashed_at_ms)) if snap.crashed_at_ms is not None else None,
        "next_round_at": iso_ms(at(snap.pause_ends_at_ms))
        if snap.pause_ends_at_ms is not None
        else None,
        "crash_point": snap.crash_point,
        "game_hash": snap.game_hash,
        "participant_count": snap.participant_count,
        "cashed_out_count": snap.cashed_out_count,
        "total_stake": snap.total_stake,
        "total_payout": snap.total_payout,
        "top_bets": [
            {
                "stake": p.stake,
                "status": p.status,
                "cashed_out_at": p.cashed_out_at,
                "payout": p.payout,
            }
            for p in snap.top
        ],
        "next_round_bets": snap.next_round_bets,
        "paused": snap.paused,
        "curve": {
            "formula": "multiplier_hundredths = floor(100 * e^(growth_per_ms * elapsed_ms))",
            "growth_per_ms": GROWTH_PER_MS,
            "started_at_ms": at(snap.started_at_ms) if snap.started_at_ms is not None else None,
        },
    }


class LiveState:
    """The shared public view of the live round, read from ``engine``."""

    def __init__(
        self, engine: Engine, epoch_ms: Callable[[int], int], environment: str, tick_hz: int
    ) -> None:
        self.engine = engine
        self.epoch_ms = epoch_ms
        self.environment = environment
        self.min_interval_ms = max(1, 1000 // tick_hz)
        self._changes = -1
        self._phase_changes = -1
        self._built_at_ms = 0
        self._snap: RoundSnapshot | None = None
        self._public: dict[str, Any] = {}
        self._rest: bytes = b""
        self.builds = 0
        """How many times the view was rebuilt (readers do not rebuild it)."""

    def _fresh(self) -> RoundSnapshot:
        engine = self.engine
        snap = self._snap
        if (
            snap is None
            or engine.phase_changes != self._phase_changes
            or (
                engine.changes != self._changes
                and engine.now_ms() - self._built_at_ms >= self.min_interval_ms
            )
        ):
            self._changes, self._phase_changes = engine.changes, engine.phase_changes
            self._built_at_ms = engine.now_ms()
            snap = self._snap = engine.last_snapshot()
            self._public = public_state(snap, self.epoch_ms)
            self._rest = json.dumps(rest_state(snap, self.epoch_ms), separators=(",", ":")).encode()
            self.builds += 1
        return snap

    def public(self) -> Mapping[str, Any]:
        """The feed's public snapshot (shared: do not mutate)."""
        self._fresh()
        return self._public

    def rest_body(self) -> bytes:
        """``GET /game/state``'s body, encoded."""
        self._fresh()
        return self._rest

    def user_bets(self, partner_id: str, user_id: str) -> tuple[int, str, tuple[BetInfo, ...]]:
        """(round id, status, that user's bets in the live round): from the user's own
        index, so O(their bets), always current."""
        snap = self._fresh()
        bets = self.engine.user_bets((partner_id, self.environment, user_id))
        return snap.round_id, snap.status, bets

    def participants(self, offset: int, limit: int) -> tuple[int, int, tuple[BetInfo, ...]]:
        """(round id, participant count, one page of every bet in placement order)."""
        snap = self._fresh()
        return snap.round_id, snap.participant_count, self.engine.participants(offset, limit)

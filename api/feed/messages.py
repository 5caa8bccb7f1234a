"""What the live feed says about the game: engine events as feed payloads, and snapshots.

Public channels are shared by every partner, so they never name a user: a cashout on
``round_updates`` says stake, multiplier and payout, not who. A partner's own users'
bets, cashouts and refunds go to their per-user channel (``user:{partner}:{user}``).

Timing, and why: phase changes and ticks are published the moment the engine decides
them (the crash is shown at once, as players expect); anything about *money* — a
cashout, a lost or refunded bet — is published only after the ledger committed it, so
the feed never announces a win that a crash of the server could take back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Protocol

from crashd.api.wire import LIVE_MULTIPLIER, ROUND_UPDATES, parse_user_channel, user_channel
from crashd.engine.curve import GROWTH_PER_MS
from crashd.engine.round.events import (
    BetAccepted,
    BetLost,
    BetRefunded,
    BettingOpened,
    CashedOut,
    Crashed,
    Event,
    RoundSettled,
    RoundVoided,
    RunningStarted,
    Tick,
)
from crashd.engine.round.machine import BetInfo, RoundSnapshot

from .hub import Hub

log = logging.getLogger(__name__)


def channel_of_user(user: Hashable) -> str | None:
    """The channel of an engine user key ``(partner, environment, user id)``."""
    if isinstance(user, tuple) and len(user) == 3:
        partner_id, _environment, user_id = user
        return user_channel(str(partner_id), str(user_id))
    return None


def phase_payload(
    event: Event, epoch_ms: Callable[[int], int]
) -> tuple[str, dict[str, Any]] | None:
    """Channel and payload for events published as soon as the engine decides them."""
    if isinstance(event, Tick):
        return LIVE_MULTIPLIER, {
            "type": "tick",
            "round_id": event.round_id,
            "multiplier": event.multiplier,
            "elapsed_ms": event.elapsed_ms,
            "at_ms": epoch_ms(event.at_ms),
        }
    if isinstance(event, BettingOpened):
        return ROUND_UPDATES, {
            "type": "betting_opened",
            "round_id": event.round_id,
            "closes_at_ms": epoch_ms(event.closes_at_ms),
            "bets": event.bets,
        }
    if isinstance(event, RunningStarted):
        return ROUND_UPDATES, {
            "type": "running",
            "round_id": event.round_id,
            "started_at_ms": epoch_ms(event.at_ms),
            "bets": event.bets,
            "total_stake": event.total_stake,
            "growth_per_ms": GROWTH_PER_MS,
        }
    if isinstance(event, Crashed):
        return ROUND_UPDATES, {
            "type": "crashed",
            "round_id": event.round_id,
            "crash_point": event.crash_point,
            "multiplier": event.multiplier,
            "elapsed_ms": event.elapsed_ms,
            "game_hash": event.game_hash,
            "at_ms": epoch_ms(event.at_ms),
            "next_round_at_ms": epoch_ms(event.pause_ends_at_ms),
        }
    if isinstance(event, RoundVoided):
        return ROUND_UPDATES, {
            "type": "round_voided",
            "round_id": event.round_id,
            "reason": event.reason,
            "refunded": event.refunded,
            "crash_point": event.crash_point,
            "game_hash": event.game_hash,
        }
    return None


def cashout_public(event: CashedOut) -> dict[str, Any]:
    """A cash-out as everyone may see it: no ticket, no user."""
    return {
        "stake": event.stake,
        "multiplier": event.multiplier,
        "payout": event.payout,
        "kind": event.kind,
        "elapsed_ms": event.elapsed_ms,
    }


def cashout_private(event: CashedOut) -> dict[str, Any]:
    """A cash-out on its user's channel: with the ticket."""
    user = event.user
    user_id = str(user[2]) if isinstance(user, tuple) and len(user) == 3 else None
    return {
        "type": "cashed_out",
        "round_id": event.round_id,
        **cashout_public(event),
        "ticket_id": event.ticket,
        "user_id": user_id,
    }


def settled_payloads(
    event: Event, epoch_ms: Callable[[int], int]
) -> list[tuple[str, dict[str, Any]]]:
    """Channel/payload pairs for an event whose ledger op has committed."""
    out: list[tuple[str, dict[str, Any]]] = []
    user = getattr(event, "user", None)
    channel = channel_of_user(user) if user is not None else None
    user_id = str(user[2]) if isinstance(user, tuple) and len(user) == 3 else None
    if isinstance(event, CashedOut):
        # Public cash-outs go out batched (FeedAnnouncer); this is the per-event form.
        out.append(
            (
                ROUND_UPDATES,
                {"type": "cashed_out", "round_id": event.round_id, **cashout_public(event)},
            )
        )
        if channel is not None:
            out.append((channel, cashout_private(event)))
    elif isinstance(event, BetAccepted) and channel is not None:
        out.append(
            (
                channel,
                {
                    "type": "bet_accepted",
                    "round_id": event.round_id,
                    "ticket_id": event.ticket,
                    "user_id": user_id,
                    "stake": event.stake,
                    "auto_cashout": event.auto_cashout,
                    "queued": event.queued,
                },
            )
        )
    elif isinstance(event, BetLost) and channel is not None:
        out.append(
            (
                channel,
                {
                    "type": "bet_lost",
                    "round_id": event.round_id,
                    "ticket_id": event.ticket,
                    "user_id": user_id,
                    "stake": event.stake,
                },
            )
        )
    elif isinstance(event, BetRefunded) and channel is not None:
        out.append(
            (
                channel,
                {
                    "type": "bet_refunded",
                    "round_id": event.round_id,
                    "ticket_id": event.ticket,
                    "user_id": user_id,
                    "stake": event.stake,
                    "reason": event.reason,
                },
            )
        )
    elif isinstance(event, RoundSettled):
        out.append(
            (
                ROUND_UPDATES,
                {
                    "type": "round_settled",
                    "round_id": event.round_id,
                    "bets": event.bets,
                    "winners": event.winners,
                    "total_stake": event.total_stake,
                    "total_payout": event.total_payout,
                },
            )
        )
    return out


def _bet_public(p: BetInfo) -> dict[str, Any]:
    return {
        "stake": p.stake,
        "status": p.status,
        "cashed_out_at": p.cashed_out_at,
        "payout": p.payout,
    }


def public_state(snap: RoundSnapshot, epoch_ms: Callable[[int], int]) -> dict[str, Any]:
    """The round as a late joiner needs it to draw the curve (no user named). Its size
    does not grow with the round's: counts, totals and the largest bets only."""
    return {
        "round_id": snap.round_id,
        "status": snap.status,
        "current_multiplier": snap.multiplier,
        "elapsed_ms": snap.elapsed_ms,
        "server_time_ms": epoch_ms(snap.now_ms),
        "betting_closes_at_ms": epoch_ms(snap.betting_closes_at_ms),
        "started_at_ms": epoch_ms(snap.started_at_ms) if snap.started_at_ms is not None else None,
        "crashed_at_ms": epoch_ms(snap.crashed_at_ms) if snap.crashed_at_ms is not None else None,
        "next_round_at_ms": epoch_ms(snap.pause_ends_at_ms)
        if snap.pause_ends_at_ms is not None
        else None,
        "crash_point": snap.crash_point,
        "game_hash": snap.game_hash,
        "participant_count": snap.participant_count,
        "cashed_out_count": snap.cashed_out_count,
        "total_stake": snap.total_stake,
        "total_payout": snap.total_payout,
        "top_bets": [_bet_public(p) for p in snap.top],
        "next_round_bets": snap.next_round_bets,
        "growth_per_ms": GROWTH_PER_MS,
    }


def user_state(
    round_id: int,
    status: str,
    bets: Sequence[BetInfo],
    balance: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A user's bets in the live round and the balance as of the last commit that
    changed it (``None`` until the server has read it: a ``balance`` message follows)."""
    return {
        "round_id": round_id,
        "status": status,
        "bets": [{"ticket_id": p.ticket, **_bet_public(p)} for p in bets],
        "balance": balance,
    }


class LiveSource(Protocol):
    """Where snapshots come from (``crashd.api.live.LiveState``)."""

    def public(self) -> Mapping[str, Any]: ...
    def user_bets(self, partner_id: str, user_id: str) -> tuple[int, str, tuple[BetInfo, ...]]: ...


def make_snapshot(
    live: LiveSource,
    balance_of: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> Callable[[str], Mapping[str, Any]]:
    """The hub's snapshot provider: public channels from the shared live state (built
    once per engine change), a user channel from that user's bets alone (``balance_of``:
    its last balance, e.g. ``BalanceFeed.known``)."""

    def snapshot(channel: str) -> Mapping[str, Any]:
        user = parse_user_channel(channel)
        if user is not None:
            round_id, status, bets = live.user_bets(*user)
            return user_state(round_id, status, bets, balance_of(channel) if balance_of else None)
        return live.public()

    return snapshot


def publish_all(hub: Hub | None, pairs: list[tuple[str, dict[str, Any]]]) -> None:
    if hub is None:
        return
    for channel, payload in pairs:
        hub.publish(channel, payload)


class FeedAnnouncer:
    """The game's announcer (``crashd.engine.game.Announcer``) for the feed: phase changes and
    ticks are published the moment the engine decides them, money news once its
    ledger op committed.

    Public cash-outs travel together: those committed since the last tick go out as one
    ``cashouts`` message on ``round_updates`` just before the next tick (or the round's
    settlement), so the public channels cost subscribers × tick rate, never subscribers ×
    cash-outs. A user's own cash-out still goes to its user channel at once.
    """

    def __init__(self, hub: Hub, epoch_ms: Callable[[int], int]) -> None:
        self.hub = hub
        self.epoch_ms = epoch_ms
        self._cashouts: list[dict[str, Any]] = []
        self._cashouts_round: int | None = None

    def decided(self, events: Sequence[Event]) -> None:
        for event in events:
            phase = phase_payload(event, self.epoch_ms)
            if phase is not None:
                if isinstance(event, Tick):
                    self.flush_cashouts()
                self.hub.publish(*phase)

    def committed(self, events: Sequence[Event]) -> None:
        for event in events:
            if phase_payload(event, self.epoch_ms) is not None:
                continue
            if isinstance(event, CashedOut):
                if self._cashouts_round not in (None, event.round_id):
                    self.flush_cashouts()
                self._cashouts_round = event.round_id
                self._cashouts.append(cashout_public(event))
                channel = channel_of_user(event.user)
                if channel is not None:
                    self.hub.publish(channel, cashout_private(event))
                continue
            if isinstance(event, RoundSettled):
                self.flush_cashouts()  # every cash-out of the round before its totals
            publish_all(self.hub, settled_payloads(event, self.epoch_ms))

    @staticmethod
    def seal_publisher(hub: Hub) -> Callable[[int, Mapping[str, Any]], None]:
        """The notary's ``on_seal``: a round's start seal, once committed, on
        ``round_updates`` (its size does not grow with the round's bets)."""

        def publish(round_id: int, seal: Mapping[str, Any]) -> None:
            hub.publish(ROUND_UPDATES, {"type": "sealed", "round_id": round_id, "seal": dict(seal)})

        return publish

    def flush_cashouts(self) -> None:
        """Publish the cash-outs gathered since the last flush, if any, as one message."""
        if not self._cashouts:
            return
        assert self._cashouts_round is not None
        cashouts, self._cashouts = self._cashouts, []
        self.hub.publish(
            ROUND_UPDATES,
            {"type": "cashouts", "round_id": self._cashouts_round, "cashouts": cashouts},
        )

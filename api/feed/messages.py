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
from typing import Any

from crashd.api.wire import LIVE_MULTIPLIER, ROUND_UPDATES, USER_PREFIX, user_channel
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
from crashd.engine.round.machine import RoundSnapshot

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


def settled_payloads(
    event: Event, epoch_ms: Callable[[int], int]
) -> list[tuple[str, dict[str, Any]]]:
    """Channel/payload pairs for an event whose ledger op has committed."""
    out: list[tuple[str, dict[str, Any]]] = []
    user = getattr(event, "user", None)
    channel = channel_of_user(user) if user is not None else None
    user_id = str(user[2]) if isinstance(user, tuple) and len(user) == 3 else None
    if isinstance(event, CashedOut):
        public = {
            "type": "cashed_out",
            "round_id": event.round_id,
            "stake": event.stake,
            "multiplier": event.multiplier,
            "payout": event.payout,
            "kind": event.kind,
            "elapsed_ms": event.elapsed_ms,
        }
        out.append((ROUND_UPDATES, public))
        if channel is not None:
            out.append((channel, {**public, "ticket_id": event.ticket, "user_id": user_id}))
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


def public_state(snap: RoundSnapshot, epoch_ms: Callable[[int], int]) -> dict[str, Any]:
    """The round as a late joiner needs it to draw the curve (no user named)."""
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
        "participant_count": len(snap.participants),
        "participants": [
            {
                "stake": p.stake,
                "status": p.status,
                "cashed_out_at": p.cashed_out_at,
                "payout": p.payout,
            }
            for p in snap.participants
        ],
        "next_round_bets": snap.next_round_bets,
        "growth_per_ms": GROWTH_PER_MS,
    }


def user_state(
    snap: RoundSnapshot, channel: str, balance: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """A user's bets in the live round and the balance as of the last commit that
    changed it (``None`` until the server has read it: a ``balance`` message follows)."""
    bets = [
        {
            "ticket_id": p.ticket,
            "stake": p.stake,
            "status": p.status,
            "cashed_out_at": p.cashed_out_at,
            "payout": p.payout,
        }
        for p in snap.participants
        if channel_of_user(p.user) == channel
    ]
    return {"round_id": snap.round_id, "status": snap.status, "bets": bets, "balance": balance}


def make_snapshot(
    state: Callable[[], RoundSnapshot],
    epoch_ms: Callable[[int], int],
    balance_of: Callable[[str], Mapping[str, Any] | None] | None = None,
) -> Callable[[str], Mapping[str, Any]]:
    """The hub's snapshot provider (``balance_of``: a user channel's last balance, e.g.
    ``BalanceFeed.known``)."""

    def snapshot(channel: str) -> Mapping[str, Any]:
        snap = state()
        if channel.startswith(USER_PREFIX):
            return user_state(snap, channel, balance_of(channel) if balance_of else None)
        return public_state(snap, epoch_ms)

    return snapshot


def publish_all(hub: Hub | None, pairs: list[tuple[str, dict[str, Any]]]) -> None:
    if hub is None:
        return
    for channel, payload in pairs:
        hub.publish(channel, payload)


class FeedAnnouncer:
    """The game's announcer (``crashd.engine.game.Announcer``) for the feed: phase changes and
    ticks are published the moment the engine decides them, money news once its
    ledger op committed."""

    def __init__(self, hub: Hub, epoch_ms: Callable[[int], int]) -> None:
        self.hub = hub
        self.epoch_ms = epoch_ms

    def decided(self, events: Sequence[Event]) -> None:
        for event in events:
            phase = phase_payload(event, self.epoch_ms)
            if phase is not None:
                self.hub.publish(*phase)

    def committed(self, events: Sequence[Event]) -> None:
        for event in events:
            if phase_payload(event, self.epoch_ms) is None:
                publish_all(self.hub, settled_payloads(event, self.epoch_ms))

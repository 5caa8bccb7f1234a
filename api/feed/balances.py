"""``balance`` messages on the user channels, from the ledger's commits."""

from __future__ import annotations

import collections
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from crashd.api.wire import parse_user_channel, user_channel
from crashd.engine.ledger.model import Balance, PlayerBalance

from .hub import Hub

log = logging.getLogger(__name__)


def balance_payload(user_id: str, posted: int, pending: int) -> dict[str, Any]:
    """The ``balance`` message of a user channel."""
    return {
        "type": "balance",
        "user_id": user_id,
        "posted": posted,
        "pending": pending,
        "available": posted - pending,
    }


BalanceReader = Callable[[str, str], Awaitable[Balance]]
"""(partner id, user id) → the balance as of the last commit (a ledger read)."""


class BalanceFeed:
    """``balance`` messages on the user channels, from the ledger's commits.

    After every commit that changed a player's balance (stake held or posted, payout,
    refund, PSP deposit or withdrawal, faucet, an expired hold released) the player's
    channel gets one ``balance`` message with the balance that commit left. The last
    one per channel is kept (a bounded LRU) for the channel's snapshot; a channel
    subscribed before any commit changed its balance is read once from the ledger and
    announced the same way. A read never overwrites what a commit announced (the
    commit is at least as new), so the stream never goes backwards.
    """

    def __init__(
        self,
        hub: Hub,
        environment: str,
        read: BalanceReader,
        capacity: int = 100_000,
        max_wanted: int = 10_000,
    ) -> None:
        self.hub = hub
        self.environment = environment
        self._read = read
        self._capacity = capacity
        self._max_wanted = max_wanted
        self._known: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._wanted: dict[str, tuple[str, str]] = {}
        self._wake = trio.Event()
        self.external: frozenset[str] = frozenset()
        """Partners whose players' balances live in their own wallet (seamless mode):
        their ledger balance is what crashd owes the wallet, not the player's money, so
        their channels get the wallet's balance (``on_wallet``) instead."""

    def on_commit(self, changes: Sequence[PlayerBalance]) -> None:
        """The ledger's balance listener: publish each change, in commit order."""
        for change in changes:
            if change.environment != self.environment or change.partner_id in self.external:
                continue
            self._announce(change.partner_id, change.user_id, change.posted, change.pending)

    def on_wallet(self, partner_id: str, user_id: str, balance: int) -> None:
        """A seamless wallet's answer carried the player's balance: announce it."""
        self._announce(partner_id, user_id, balance, 0)

    def known(self, channel: str) -> dict[str, Any] | None:
        """The last announced balance of a user channel (``posted``, ``pending``,
        ``available``), or ``None`` (then one is being read: see ``want``)."""
        payload = self._known.get(channel)
        if payload is None:
            return None
        self._known.move_to_end(channel)
        return {k: payload[k] for k in ("posted", "pending", "available")}

    def want(self, channel: str) -> None:
        """A subscriber joined ``channel``: make sure its balance gets announced."""
        if channel in self._known or channel in self._wanted:
            return
        user = parse_user_channel(channel)
        if user is None or len(self._wanted) >= self._max_wanted:
            return
        self._wanted[channel] = user
        self._wake.set()

    async def run(self) -> None:
        """Read the balances subscribers want, one at a time (a read is a thread hop)."""
        while True:
            if not self._wanted:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            channel, (partner_id, user_id) = next(iter(self._wanted.items()))
            try:
                balance = await self._read(partner_id, user_id)
            except Exception:
                log.exception("reading the balance of %s failed", channel)
                balance = None
            del self._wanted[channel]
            if balance is not None and channel not in self._known:
                self._announce(partner_id, user_id, balance.posted, balance.pending)

    def _announce(self, partner_id: str, user_id: str, posted: int, pending: int) -> None:
        channel = user_channel(partner_id, user_id)
        payload = balance_payload(user_id, posted, pending)
        known = self._known
        known[channel] = payload
        known.move_to_end(channel)
        if len(known) > self._capacity:
            known.popitem(last=False)
        self.hub.publish(channel, payload)

"""Receipts in the answers to bets, target changes and cash-outs (docs/fairness.md).

The engine's decision travels with the request's reply slot (``slot.hints["event"]``);
the reply is rendered, and so the receipt signed, on the ledger writer's thread while
the op that made it durable commits: the receipt is stored with the reply, so a retry
with the same ``Idempotency-Key`` gets the same receipt, and signing never runs on the
engine's tick path. An answer that no engine decision produced (one given from the
ledger's record, say a retry past the replies' retention) carries ``null``.
"""

from __future__ import annotations

from typing import Any

from crashd.engine.ledger.model import ReplySlot
from crashd.engine.notary import Notary
from crashd.engine.round.events import AutoCashoutChanged, BetAccepted, CashedOut

RECEIPT_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "description": "the signed receipt of this decision (docs/fairness.md); keep it",
}


def receipt_of(slot: ReplySlot, notary: Notary | None) -> dict[str, Any] | None:
    event = slot.hints.get("event")
    if notary is None or event is None:
        return None
    if isinstance(event, BetAccepted):
        return notary.bet_receipt(event)
    if isinstance(event, CashedOut):
        return notary.cashout_receipt(event)
    if isinstance(event, AutoCashoutChanged):
        return notary.target_receipt(event)
    return None

"""The transcript of a round the engine could not finish: written by start-up recovery
(``source: "ledger"``) from what survived the process, the ledger's bets and the seal
stored when betting closed.

Nothing of the engine's own record survives a kill: not the commands' instants, not
which win was manual, auto or forced. So this transcript lists the bets the seal
committed to (with their instants and targets) or, if the round died while betting,
the bets the ledger holds (without instants), and each bet's outcome as the ledger
settled it: the wins acknowledged before the kill stand (multiplier and payout), the
rest were refunded by recovery. The auditor checks it by rule (docs/fairness.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from crashd.engine.bounds import MAX_MULTIPLIER, MIN_MULTIPLIER
from crashd.engine.ledger.model import BetOutcome, Round, RoundState
from crashd.engine.ledger.txn import Txn

from .transcript import transcript_body


def from_ledger(
    txn: Txn,
    rnd: Round,
    *,
    player: Callable[[str, str], str],
    prev: str | None,
    environment: str,
    fairness: Mapping[str, Any],
    rules: Mapping[str, Any],
) -> dict[str, Any]:
    """The unsigned transcript of a round settled without its engine (recovery)."""
    stored = txn.seal(rnd.id)
    seal = json.loads(stored[0]) if stored is not None else None
    sealed: list[dict[str, Any]] = json.loads(stored[1]) if stored is not None else []
    bets = txn.round_bets(rnd.id)
    by_ticket = {b.ticket_id: b for b in bets}
    log: list[dict[str, Any]] = []
    if seal is not None:
        opened = seal["opened_at"]
        for leaf in sealed:
            log.append(
                {
                    "at": leaf["placed_at"],
                    "op": "bet",
                    "ticket_id": leaf["ticket_id"],
                    "player": leaf["player"],
                    "stake": leaf["stake"],
                    "auto_cashout": leaf["auto_cashout"],
                    "queued": leaf["placed_at"] < opened,
                }
            )
        known = {leaf["ticket_id"] for leaf in sealed}
    else:
        known = set()
    for bet in bets:
        if bet.ticket_id not in known:  # placed while betting, before a seal was kept
            key = txn.account_by_id(bet.account).key
            log.append(
                {
                    "at": None,
                    "op": "bet",
                    "ticket_id": bet.ticket_id,
                    "player": player(key.partner_id, key.user_id),
                    "stake": bet.stake,
                    "auto_cashout": bet.auto_cashout,
                    "queued": None,
                }
            )
    settlement: list[dict[str, Any]] = []
    settled = sorted(
        (b for b in bets if b.outcome is not None), key=lambda b: (b.settled_op or 0, b.id)
    )
    for bet in settled:
        if bet.outcome is BetOutcome.WON:
            settlement.append(
                {
                    "ticket_id": bet.ticket_id,
                    "outcome": "won",
                    "cashout": None,
                    "at": None,
                    "elapsed_ms": None,
                    "multiplier": bet.multiplier,
                    "payout": bet.payout,
                }
            )
        elif bet.outcome is BetOutcome.REFUNDED:
            settlement.append(
                {"ticket_id": bet.ticket_id, "outcome": "refunded", "payout": bet.payout}
            )
        else:
            settlement.append({"ticket_id": bet.ticket_id, "outcome": "lost", "payout": 0})
    for entry in log:  # sealed, but the ledger never held it: its funding failed
        if entry["ticket_id"] not in by_ticket:
            settlement.append({"ticket_id": entry["ticket_id"], "outcome": "withdrawn"})
    clock = {
        "opened_at": seal["opened_at"] if seal else None,
        "closes_at": seal["closes_at"] if seal else None,
        "started_at": seal["started_at"] if seal else None,
        "ended_at": None,
    }
    public_seal = {k: v for k, v in seal.items()} if seal is not None else None
    voided = rnd.state is RoundState.VOIDED
    stop = min(rnd.crash_point or MIN_MULTIPLIER, MAX_MULTIPLIER)
    return transcript_body(
        round_id=rnd.id,
        prev=prev,
        environment=environment,
        fairness=fairness,
        rules=rules,
        clock=clock,
        seal=public_seal,
        log=log,
        settlement=settlement,
        crash=None if voided else {"at": None, "elapsed_ms": None, "multiplier": stop},
        void={"at": None, "reason": rnd.void_reason or "recovery", "by": "recovery"}
        if voided
        else None,
        source="ledger",
    )

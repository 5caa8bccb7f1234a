"""Start-up recovery: what happens to money that was in flight when the process died.

Runs on the writer's connection before the ledger accepts any op, as *one* transaction
(the ``Recover`` op):

- a round still ``open`` (betting or running) is voided (reason ``recovery``) and every
  bet of it that is not yet settled is refunded, escrow → player;
- a round that ``crashed`` but whose bets were not settled in bulk (``RoundCrash``
  committed, ``RoundSettle`` not) is handled the same way: its crash point stays on
  record, its unsettled stakes are refunded, it is marked voided;
- confirmed bets that never joined a round (placed for "the next round") are refunded;
- bets already settled (acknowledged cashouts, wins, losses) are not touched: they stay
  paid;
- pending holds are left alone: they were never money moved, and each expires by itself
  (its ``expires_at`` is absolute), so a client may still confirm one within its ttl.

Exactly once: the whole recovery is one SQLite transaction, so dying half-way leaves no
trace and the next start does it all again; a run that committed leaves nothing
unfinished, so the next start finds nothing to do. Each bet's outcome and each round's
end are set-once columns guarded by triggers, so nothing can settle twice regardless.
"""

from __future__ import annotations

from collections.abc import Callable

from .model import LedgerError, Recovered
from .ops import Recover
from .store import Store

Reveal = Callable[[int], "tuple[int, str] | None"]
"""Round id → (crash point, game hash) of its game, or None if unknown."""


def run_recovery(store: Store, now: int, reveal: Reveal | None = None) -> Recovered:
    """Void and refund what the last run left unfinished; report what was done and
    the highest game number ever started. ``reveal`` (the server's hash chain) lets
    the open rounds it voids keep their burnt game on record, as a void by the
    engine does."""
    revealed: list[tuple[int, int, str]] = []
    if reveal is not None:
        for round_id in store.unfinished_round_ids():
            game = reveal(round_id)
            if game is not None:
                revealed.append((round_id, game[0], game[1]))
    # The op id only has to be unique: the op's effect is defined by the state it finds.
    op = Recover(op_id=f"recover:{store.ids.op}", revealed=tuple(revealed))
    op.validate()
    [answer] = store.apply_group([op], now)
    if isinstance(answer, LedgerError):  # pragma: no cover - Recover has no refusal path
        raise answer
    assert isinstance(answer, Recovered)
    return answer

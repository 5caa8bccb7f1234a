"""The pure planner alone: no SQLite, no Trio, time passed in as an argument.

``Txn`` over a backing that knows nothing (a fresh ledger) is enough to check the
planner's own promises: validate-then-apply (a refused op changes nothing but its
refusal record), ops of one group seeing each other, replays inside a group, and
expiry judged by the ``now`` given to each call.
"""

from __future__ import annotations

from crashd.engine.ledger.model import (
    Account,
    AccountKey,
    Bet,
    Hold,
    HoldExpired,
    HoldReserved,
    IdempotencyConflict,
    InsufficientFunds,
    OpRecord,
    Posted,
    Round,
)
from crashd.engine.ledger.ops import BetConfirm, BetReserve, PspDeposit, PspWithdrawal, apply
from crashd.engine.ledger.txn import Ids, Txn

P = ("production", "acme", "u1")


class EmptyBacking:
    """Committed state of a ledger with nothing in it yet."""

    def load_op(self, key: str) -> OpRecord | None:
        return None

    def load_account(self, key: AccountKey) -> Account | None:
        return None

    def load_account_by_id(self, account_id: int) -> Account:
        raise AssertionError("nothing is committed")

    def load_hold(self, hold_id: str) -> Hold | None:
        return None

    def load_hold_by_seq(self, seq: int) -> Hold:
        raise AssertionError("nothing is committed")

    def load_bet(self, ticket_id: str) -> Bet | None:
        return None

    def load_round(self, round_id: int) -> Round | None:
        return None

    def highest_round_id(self) -> int:
        return 0

    def unfinished_round_ids(self) -> list[int]:
        return []

    def unsettled_bets(self, round_id: int | None) -> list[Bet]:
        return []

    def expired_holds(self, account_id: int | None, now: int, limit: int) -> list[Hold]:
        return []

    def transfers_of_op(self, op_seq: int) -> list[tuple[int, int, int, str]]:
        return []

    def reversal_of(self, withdrawal_seq: int) -> int | None:
        return None


def fresh() -> Txn:
    return Txn(EmptyBacking(), Ids(op=1, account=1, transfer=1, hold=1, bet=1))


def test_a_refused_op_changes_nothing_but_its_record() -> None:
    txn = fresh()
    assert isinstance(apply(txn, PspDeposit("e1", *P, 100), now=0), Posted)
    before = (txn.mutations, len(txn.new_transfers), len(txn.new_holds))
    refused = apply(txn, PspWithdrawal("w1", *P, 101), now=0)
    assert isinstance(refused, InsufficientFunds)
    assert refused.detail == {"available": 100, "requested": 101}
    assert (txn.mutations, len(txn.new_transfers), len(txn.new_holds)) == before
    assert [r.ok for r in txn.new_ops] == [True, False]  # the refusal is recorded


def test_ops_of_one_group_see_each_other_and_replay_inside_it() -> None:
    txn = fresh()
    apply(txn, PspDeposit("e1", *P, 100), now=0)
    first = apply(txn, BetReserve("r1", *P, "h1", 60, 1000), now=0)
    assert isinstance(first, HoldReserved) and first.available == 40
    # Same id, same contents, same group: the first answer, nothing moved.
    again = apply(txn, BetReserve("r1", *P, "h1", 60, 1000), now=0)
    assert again == first and again.replayed
    assert isinstance(apply(txn, BetReserve("r1", *P, "h1", 61, 1000), now=0), IdempotencyConflict)
    assert isinstance(apply(txn, BetReserve("r2", *P, "h2", 41, 1000), now=0), InsufficientFunds)
    assert len(txn.new_holds) == 1


def test_expiry_is_judged_by_the_now_passed_in() -> None:
    txn = fresh()
    apply(txn, PspDeposit("e1", *P, 100), now=0)
    apply(txn, BetReserve("r1", *P, "h1", 100, 10), now=0)
    late = apply(txn, BetConfirm("c1", *P, "h1", "t1"), now=10)
    assert isinstance(late, HoldExpired)
    # The expiry released the stake even though the confirm was refused.
    assert isinstance(apply(txn, PspWithdrawal("w1", *P, 100), now=10), Posted)

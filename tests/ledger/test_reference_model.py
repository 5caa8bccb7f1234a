"""The ledger against a reference model: a Hypothesis state machine over random
operations, executed through the real SQLite store in commit groups.

The model is deliberately naive (dicts and loops, no overlay, no prefetch, no SQL) and
written from the rules in docs/ledger.md; after every step the store must have given
the same answers (result or error code) and hold the same balances, and the audit
must pass: total conserved apart from PSP/faucet movements, no player below zero,
holds resolved at most once, escrow = unsettled stakes, replays move nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from crashd.engine.ledger.model import LedgerError, Result
from crashd.engine.ledger.ops import (
    BetConfirm,
    BetRefund,
    BetReserve,
    BetTarget,
    FaucetCredit,
    HoldVoid,
    Op,
    PspDeposit,
    PspWithdrawal,
    PspWithdrawalReversal,
    ReleaseExpired,
    RoundCrash,
    RoundSettle,
    RoundStart,
    RoundVoid,
    SettleLoss,
    SettleWin,
)
from crashd.engine.ledger.store import Store
from support.postgres import fresh_database, server_url

PG_URL, PG_WHY = server_url()

ENVS = ["sandbox", "production"]
USERS = ["u0", "u1", "u2"]
HASH_A = "a" * 64
HASH_B = "b" * 64

# Half the ids come from a small pool (replays, conflicts), half are almost surely fresh.
op_ids = st.one_of(
    st.sampled_from([f"o{i}" for i in range(25)]), st.integers(1000, 10**9).map(lambda i: f"o{i}")
)
event_ids = st.sampled_from([f"e{i}" for i in range(12)])
envs = st.sampled_from(ENVS)
users = st.sampled_from(USERS)
amounts = st.integers(1, 60)
hold_ids = st.sampled_from([f"h{i}" for i in range(8)])
tickets = st.sampled_from([f"t{i}" for i in range(8)])
round_ids = st.integers(1, 5)
mults = st.integers(100, 400)

ops_strategy: st.SearchStrategy[Op] = st.one_of(
    st.builds(PspDeposit, event_ids, envs, st.just("p"), users, amounts),
    st.builds(PspWithdrawal, event_ids, envs, st.just("p"), users, amounts),
    st.builds(PspWithdrawalReversal, event_ids, envs, event_ids),
    st.builds(FaucetCredit, op_ids, envs, st.just("p"), users, amounts),
    st.builds(
        BetReserve,
        op_ids,
        envs,
        st.just("p"),
        users,
        hold_ids,
        amounts,
        st.sampled_from([1, 50, 1000]),
    ),
    st.builds(
        BetConfirm,
        op_ids,
        envs,
        st.just("p"),
        users,
        hold_ids,
        tickets,
        st.one_of(st.none(), st.integers(101, 400)),
        st.one_of(st.none(), round_ids),
    ),
    st.builds(HoldVoid, op_ids, envs, st.just("p"), users, hold_ids),
    st.builds(BetTarget, op_ids, tickets, st.one_of(st.none(), st.integers(101, 400))),
    st.builds(SettleWin, op_ids, tickets, mults),
    st.builds(SettleLoss, op_ids, tickets),
    st.builds(BetRefund, op_ids, tickets),
    st.builds(RoundStart, op_ids, round_ids),
    st.builds(RoundCrash, op_ids, round_ids, mults, st.sampled_from([HASH_A, HASH_B])),
    st.builds(
        RoundSettle,
        op_ids,
        round_ids,
        mults,
        st.sampled_from([HASH_A, HASH_B]),
        st.lists(st.tuples(tickets, mults), max_size=3, unique_by=lambda t: t[0]).map(tuple),
    ),
    st.builds(RoundVoid, op_ids, round_ids, st.just("operator")),
    st.builds(ReleaseExpired, op_ids, st.just(100)),
)


class Refused(Exception):
    def __init__(self, code: str) -> None:
        self.code = code


class Model:
    """The rules, stated as plainly as possible."""

    def __init__(self) -> None:
        self.posted: dict[tuple[str, str, str], int] = {}
        """(environment, kind, user) → credits − debits; kind 'player' or a system kind."""
        self.holds: dict[str, dict[str, Any]] = {}
        self.bets: dict[str, dict[str, Any]] = {}
        self.rounds: dict[int, dict[str, Any]] = {}
        self.ops: dict[str, tuple[tuple[Any, ...], tuple[str, Any]]] = {}
        self.reversed: set[str] = set()
        self.psp_moves = {"sandbox": 0, "production": 0}

    def move(self, env: str, debit: tuple[str, str], credit: tuple[str, str], amount: int) -> None:
        assert amount > 0
        self.posted[(env, *debit)] = self.posted.get((env, *debit), 0) - amount
        self.posted[(env, *credit)] = self.posted.get((env, *credit), 0) + amount

    def pending(self, env: str, user: str) -> int:
        return sum(
            h["amount"]
            for h in self.holds.values()
            if h["env"] == env and h["user"] == user and h["state"] == "pending"
        )

    def available(self, env: str, user: str) -> int:
        return self.posted.get((env, "player", user), 0) - self.pending(env, user)

    def expire(
        self, now: int, env: str | None = None, user: str | None = None, hold_id: str | None = None
    ) -> None:
        for hid, h in self.holds.items():
            if h["state"] != "pending" or h["expires"] > now:
                continue
            if hold_id is not None and hid != hold_id:
                continue
            if user is not None and (h["env"], h["user"]) != (env, user):
                continue
            h["state"] = "expired"

    def settle(self, bet: dict[str, Any], outcome: str, mult: int | None) -> int:
        env, user, stake = bet["env"], bet["user"], bet["stake"]
        if outcome == "won":
            assert mult is not None
            payout = stake * mult // 100
            self.move(env, ("escrow", ""), ("player", user), stake)
            if payout > stake:
                self.move(env, ("house", ""), ("player", user), payout - stake)
        elif outcome == "lost":
            payout = 0
            self.move(env, ("escrow", ""), ("house", ""), stake)
        else:
            payout = stake
            self.move(env, ("escrow", ""), ("player", user), stake)
        bet["outcome"] = outcome
        return payout

    def apply(self, op: Op, now: int) -> tuple[str, Any]:
        key = op.key()
        content = (type(op).__name__,) + dataclasses.astuple(op)[1:]
        if key in self.ops:
            seen, answer = self.ops[key]
            return answer if seen == content else ("err", "idempotency_conflict")
        # Housekeeping: ops that may debit a player release its expired holds first.
        if isinstance(op, (PspWithdrawal, BetReserve, HoldVoid)):
            self.expire(now, op.environment, op.user_id)
        elif isinstance(op, BetConfirm):
            self.expire(now, hold_id=op.hold_id)
        try:
            answer: tuple[str, Any] = ("ok", self.plan(op, now))
        except Refused as r:
            answer = ("err", r.code)
        self.ops[key] = (content, answer)
        return answer

    def owned_hold(self, op: BetConfirm | HoldVoid, hold_id: str) -> dict[str, Any]:
        h = self.holds.get(hold_id)
        if h is None or (h["env"], h["user"]) != (op.environment, op.user_id):
            raise Refused("unknown_hold")
        return h

    def open_bets(self, rid: int | None) -> list[dict[str, Any]]:
        return [b for b in self.bets.values() if b["round"] == rid and b["outcome"] is None]

    def plan(self, op: Op, now: int) -> Any:
        if isinstance(op, PspDeposit):
            self.move(op.environment, ("psp", ""), ("player", op.user_id), op.amount)
            self.psp_moves[op.environment] += op.amount
            return self.available(op.environment, op.user_id)
        if isinstance(op, PspWithdrawal):
            if self.available(op.environment, op.user_id) < op.amount:
                raise Refused("insufficient_funds")
            self.move(op.environment, ("player", op.user_id), ("psp", ""), op.amount)
            self.psp_moves[op.environment] -= op.amount
            return self.available(op.environment, op.user_id)
        if isinstance(op, PspWithdrawalReversal):
            orig_key = f"psp:{op.environment}:{op.withdrawal_id}"
            orig = self.ops.get(orig_key)
            if orig is None or orig[0][0] != "PspWithdrawal" or orig[1][0] != "ok":
                raise Refused("unknown_withdrawal")
            if orig_key in self.reversed:
                raise Refused("already_reversed")
            _, env, _, user, amount = orig[0]
            self.move(env, ("psp", ""), ("player", user), amount)
            self.psp_moves[env] += amount
            self.reversed.add(orig_key)
            return self.available(env, user)
        if isinstance(op, FaucetCredit):
            if op.environment != "sandbox":
                raise Refused("environment_not_allowed")
            self.move("sandbox", ("faucet", ""), ("player", op.user_id), op.amount)
            return self.available("sandbox", op.user_id)
        if isinstance(op, BetReserve):
            if op.hold_id in self.holds:
                raise Refused("duplicate_hold")
            if self.available(op.environment, op.user_id) < op.amount:
                raise Refused("insufficient_funds")
            self.holds[op.hold_id] = {
                "env": op.environment,
                "user": op.user_id,
                "amount": op.amount,
                "expires": now + op.ttl_ms,
                "state": "pending",
            }
            return self.available(op.environment, op.user_id)
        if isinstance(op, BetConfirm):
            if op.ticket_id in self.bets:
                raise Refused("duplicate_ticket")
            h = self.owned_hold(op, op.hold_id)
            if h["state"] == "expired":
                raise Refused("hold_expired")
            if h["state"] != "pending":
                raise Refused("hold_resolved")
            if op.round_id is not None:
                r = self.rounds.get(op.round_id)
                if r is None:
                    raise Refused("unknown_round")
                if r["state"] != "open":
                    raise Refused("round_closed")
            h["state"] = "posted"
            self.move(op.environment, ("player", op.user_id), ("escrow", ""), h["amount"])
            self.bets[op.ticket_id] = {
                "env": op.environment,
                "user": op.user_id,
                "stake": h["amount"],
                "round": op.round_id,
                "outcome": None,
                "target": op.auto_cashout,
            }
            return h["amount"]
        if isinstance(op, BetTarget):
            bet = self.bets.get(op.ticket_id)
            if bet is None:
                raise Refused("unknown_ticket")
            if bet["outcome"] is not None:
                raise Refused("already_settled")
            bet["target"] = op.auto_cashout
            return op.auto_cashout
        if isinstance(op, HoldVoid):
            h = self.owned_hold(op, op.hold_id)
            if h["state"] == "expired":
                raise Refused("hold_expired")
            if h["state"] != "pending":
                raise Refused("hold_resolved")
            h["state"] = "voided"
            return h["amount"]
        if isinstance(op, (SettleWin, SettleLoss, BetRefund)):
            bet = self.bets.get(op.ticket_id)
            if bet is None:
                raise Refused("unknown_ticket")
            if bet["outcome"] is not None:
                raise Refused("already_settled")
            rnd = None if bet["round"] is None else self.rounds[bet["round"]]
            if isinstance(op, SettleWin):
                if rnd is None:
                    raise Refused("round_closed")
                if rnd["state"] == "crashed" and op.multiplier > rnd["crash"]:
                    raise Refused("invalid_multiplier")
                return self.settle(bet, "won", op.multiplier)
            if isinstance(op, SettleLoss):
                if rnd is None or rnd["state"] != "crashed":
                    raise Refused("round_not_crashed")
                return self.settle(bet, "lost", None)
            if rnd is not None:
                raise Refused("bet_in_round")
            return self.settle(bet, "refunded", None)
        if isinstance(op, RoundStart):
            if op.round_id <= max(self.rounds, default=0):
                raise Refused("round_out_of_order")
            if any(r["state"] == "open" for r in self.rounds.values()):
                raise Refused("round_still_open")
            self.rounds[op.round_id] = {
                "state": "open",
                "crash": None,
                "hash": None,
                "settled": False,
            }
            joined = self.open_bets(None)
            for b in joined:
                b["round"] = op.round_id
            return len(joined)
        if isinstance(op, RoundCrash):
            r = self.rounds.get(op.round_id)
            if r is None:
                raise Refused("unknown_round")
            if r["state"] != "open":
                raise Refused("round_closed")
            r.update(state="crashed", crash=op.crash_point, hash=op.game_hash)
            return op.crash_point
        if isinstance(op, RoundSettle):
            r = self.rounds.get(op.round_id)
            if r is None:
                raise Refused("unknown_round")
            if r["state"] == "voided":
                raise Refused("round_closed")
            if r["settled"]:
                raise Refused("already_settled")
            if r["state"] == "crashed" and (r["crash"], r["hash"]) != (
                op.crash_point,
                op.game_hash,
            ):
                raise Refused("round_closed")
            open_bets = {
                t: b
                for t, b in self.bets.items()
                if b["round"] == op.round_id and b["outcome"] is None
            }
            for t, m in op.wins:
                if t not in open_bets:
                    b = self.bets.get(t)
                    if b is not None and b["outcome"] is not None and b["round"] == op.round_id:
                        raise Refused("already_settled")
                    raise Refused("unknown_ticket")
                if m > op.crash_point:
                    raise Refused("invalid_multiplier")
            r.update(state="crashed", crash=op.crash_point, hash=op.game_hash, settled=True)
            wins = dict(op.wins)
            paid = collected = 0
            for t, b in open_bets.items():
                if t in wins:
                    paid += self.settle(b, "won", wins[t])
                else:
                    collected += b["stake"]
                    self.settle(b, "lost", None)
            return (len(wins), len(open_bets) - len(wins), paid, collected)
        if isinstance(op, RoundVoid):
            r = self.rounds.get(op.round_id)
            if r is None:
                raise Refused("unknown_round")
            if r["state"] == "voided" or r["settled"]:
                raise Refused("already_settled")
            refunded = [self.settle(b, "refunded", None) for b in self.open_bets(op.round_id)]
            r.update(state="voided", settled=True)
            return (len(refunded), sum(refunded))
        if isinstance(op, ReleaseExpired):
            before = sum(1 for h in self.holds.values() if h["state"] == "expired")
            self.expire(now)
            return sum(1 for h in self.holds.values() if h["state"] == "expired") - before
        raise AssertionError(op)


def summarize(result: Result | LedgerError) -> tuple[str, Any]:
    """The part of a store answer the model predicts."""
    if isinstance(result, LedgerError):
        return ("err", result.code)
    d = dataclasses.asdict(result)
    kind = result.kind
    if kind == "posted":
        return ("ok", d["balance"])
    if kind == "hold_reserved":
        return ("ok", d["available"])
    if kind == "bet_confirmed":
        return ("ok", d["stake"])
    if kind == "hold_voided":
        return ("ok", d["amount"])
    if kind == "bet_settled":
        return ("ok", d["payout"])
    if kind == "bet_retargeted":
        return ("ok", d["auto_cashout"])
    if kind == "round_started":
        return ("ok", d["bets_joined"])
    if kind == "round_crashed":
        return ("ok", d["crash_point"])
    if kind == "round_settled":
        return ("ok", (d["won"], d["lost"], d["paid"], d["collected"]))
    if kind == "round_voided":
        return ("ok", (d["refunded"], d["refunded_amount"]))
    if kind == "holds_released":
        return ("ok", d["released"])
    raise AssertionError(kind)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.stack = contextlib.ExitStack()
        self.store = self.open_store()
        self.model = Model()
        self.now = 1_000_000
        self.first_answers: dict[str, tuple[str, Any]] = {}

    def open_store(self) -> Store:
        directory = Path(tempfile.mkdtemp(prefix="ledger-model-"))
        self.stack.callback(shutil.rmtree, directory, ignore_errors=True)
        # Durability is not under test here (the kill test does that): OFF is faster.
        return Store(directory / "l.sqlite3", "OFF")

    def teardown(self) -> None:
        self.store.close()
        self.stack.close()

    @rule(ops=st.lists(ops_strategy, min_size=1, max_size=6))
    def commit_group(self, ops: list[Op]) -> None:
        """Several ops in one commit group, as concurrent callers would produce."""
        answers = self.store.apply_group(ops, self.now)
        for op, answer in zip(ops, answers, strict=True):
            expected = self.model.apply(op, self.now)
            got = summarize(answer)
            assert got == expected, (op, got, expected)
            # Visible with --hypothesis-show-statistics: which paths were exercised.
            event(f"{op.kind}: {got[1] if got[0] == 'err' else 'ok'}")
            if isinstance(answer, Result) and answer.replayed:
                # A replay returns the first answer exactly.
                assert (got[0], got[1]) == self.first_answers[op.key()]
            self.first_answers.setdefault(op.key(), got)

    @rule(op=ops_strategy)
    def replay_exactly(self, op: Op) -> None:
        """Submit the same op twice in a row: the second moves nothing."""
        [first] = self.store.apply_group([op], self.now)
        expected = self.model.apply(op, self.now)
        assert summarize(first) == expected
        self.first_answers.setdefault(op.key(), expected)
        snapshot = self.balances()
        [second] = self.store.apply_group([op], self.now)
        assert summarize(second) == summarize(first)
        if isinstance(second, Result):
            assert second == first
            assert second.replayed
        assert self.balances() == snapshot

    @rule(user=users, env=envs, amount=amounts, n=st.integers(2, 6))
    def concurrent_reserves(self, user: str, env: str, amount: int, n: int) -> None:
        """n reserves against one balance in one group: exactly the ones that fit win."""
        base = len(self.model.holds) + len(self.model.ops)
        ops: list[Op] = [
            BetReserve(f"cr{base}-{i}", env, "p", user, f"crh{base}-{i}", amount, 500)
            for i in range(n)
        ]
        answers = self.store.apply_group(ops, self.now)
        self.model.expire(self.now, env, user)  # what the first reserve's housekeeping does
        fits = max(0, self.model.available(env, user)) // amount
        for op, answer in zip(ops, answers, strict=True):
            assert summarize(answer) == self.model.apply(op, self.now)
            self.first_answers.setdefault(op.key(), summarize(answer))
        ok = sum(1 for a in answers if isinstance(a, Result))
        assert ok == min(n, fits)

    def fresh(self, prefix: str) -> str:
        self.counter = getattr(self, "counter", 0) + 1
        return f"{prefix}-{self.counter}"

    def run(self, ops: list[Op]) -> list[Result | LedgerError]:
        answers = self.store.apply_group(ops, self.now)
        for op, answer in zip(ops, answers, strict=True):
            expected = self.model.apply(op, self.now)
            assert summarize(answer) == expected, (op, answer, expected)
            event(f"{op.kind}: {expected[1] if expected[0] == 'err' else 'ok'}")
        return answers

    @rule(user=users, env=envs, amount=st.integers(50, 500))
    def fund(self, user: str, env: str, amount: int) -> None:
        if env == "sandbox":
            self.run([FaucetCredit(self.fresh("f"), env, "p", user, amount)])
        else:
            self.run([PspDeposit(self.fresh("e"), env, "p", user, amount)])

    @rule(
        user=users,
        env=envs,
        amount=amounts,
        auto=st.one_of(st.none(), st.integers(101, 400)),
        join_open=st.booleans(),
        same_group=st.booleans(),
        ttl=st.sampled_from([1, 1000]),
        delay=st.sampled_from([0, 0, 5]),
    )
    def place_bet(
        self,
        user: str,
        env: str,
        amount: int,
        auto: int | None,
        join_open: bool,
        same_group: bool,
        ttl: int,
        delay: int,
    ) -> None:
        """Reserve then confirm, for the open round or for the next one."""
        if self.model.available(env, user) < amount:
            self.fund(user, env, 200)
        hold, ticket = self.fresh("hold"), self.fresh("ticket")
        open_rounds = [rid for rid, r in self.model.rounds.items() if r["state"] == "open"]
        rid = open_rounds[0] if (join_open and open_rounds) else None
        reserve = BetReserve(self.fresh("r"), env, "p", user, hold, amount, ttl)
        confirm = BetConfirm(self.fresh("c"), env, "p", user, hold, ticket, auto, rid)
        if same_group:
            self.run([reserve, confirm])
        else:
            self.run([reserve])
            self.now += delay  # past a 1 ms ttl: the confirm finds the hold expired
            self.run([confirm])

    @rule(data=st.data())
    def settle_open_bets(self, data: st.DataObject) -> None:
        """Individual cashouts and losses on bets that exist."""
        tickets_ = sorted(
            t for t, b in self.model.bets.items() if b["outcome"] is None and b["round"] is not None
        )
        if not tickets_:
            return
        chosen = data.draw(st.lists(st.sampled_from(tickets_), min_size=1, max_size=4, unique=True))
        ops: list[Op] = []
        for t in chosen:
            if data.draw(st.booleans()):
                ops.append(SettleWin(self.fresh("w"), t, data.draw(mults)))
            else:
                ops.append(SettleLoss(self.fresh("l"), t))
        self.run(ops)

    @rule(data=st.data(), crash=mults)
    def crash_and_settle(self, data: st.DataObject, crash: int) -> None:
        """Start a round if none is open, else settle the open one in bulk."""
        unsettled = [
            rid
            for rid, r in self.model.rounds.items()
            if r["state"] == "crashed" and not r["settled"]
        ]
        open_rounds = [rid for rid, r in self.model.rounds.items() if r["state"] == "open"]
        if not open_rounds and not unsettled:
            nxt = max(self.model.rounds, default=0) + 1
            self.run([RoundStart(self.fresh("s"), nxt)])
            return
        if open_rounds and data.draw(st.booleans()):
            # Crash only: leaves bets for individual settles (and for a later bulk one).
            self.run([RoundCrash(self.fresh("x"), open_rounds[0], crash, HASH_A)])
            return
        rid = (open_rounds or unsettled)[0]
        if self.model.rounds[rid]["state"] == "crashed":
            crash = self.model.rounds[rid]["crash"]
        bets = sorted(
            t for t, b in self.model.bets.items() if b["round"] == rid and b["outcome"] is None
        )
        winners = data.draw(st.lists(st.sampled_from(bets), unique=True)) if bets else []
        wins = tuple((t, data.draw(st.integers(100, crash))) for t in winners)
        self.run([RoundSettle(self.fresh("st"), rid, crash, HASH_A, wins)])

    @rule(ms=st.sampled_from([1, 30, 60, 600, 2000]))
    def advance_clock(self, ms: int) -> None:
        self.now += ms

    def balances(self) -> dict[tuple[str, str, str], int]:
        out = {}
        for env, kind, user, posted in self.store.conn.execute(
            "SELECT environment, kind, user_id, posted FROM accounts"
        ):
            if posted:
                out[(env, kind, user)] = posted
        return out

    @invariant()
    def same_balances_as_model(self) -> None:
        model = {k: v for k, v in self.model.posted.items() if v}
        assert self.balances() == model
        for (env, kind, user), posted in self.balances().items():
            if kind == "player":
                pending = self.store.conn.execute(
                    "SELECT pending FROM accounts WHERE environment=? AND kind='player' AND user_id=?",
                    (env, user),
                ).fetchone()[0]
                assert pending == self.model.pending(env, user)
                assert posted - pending >= 0

    @invariant()
    def audit_passes(self) -> None:
        report = self.store.audit()
        assert report.ok, report.problems
        assert report.total == 0
        for env in ENVS:
            # Conservation: inside crashd money only moves; it enters and leaves
            # through the PSP (and, in sandbox, the faucet).
            assert report.psp_net[env] == self.model.psp_moves[env]
            assert report.internal_total[env] == report.psp_net[env] + report.faucet_total[env]

    @invariant()
    def holds_resolved_at_most_once(self) -> None:
        for hold_id, state in self.store.conn.execute("SELECT hold_id, state FROM holds"):
            assert self.model.holds[hold_id]["state"] == state
        rows = self.store.conn.execute(
            "SELECT count(*) FROM transfers WHERE hold IS NOT NULL GROUP BY hold HAVING count(*) > 1"
        ).fetchall()
        assert rows == []

    @invariant()
    def history_is_append_only(self) -> None:
        """Every transfer and op record seen after an earlier step is still there,
        unchanged; new ones only ever come after them."""
        history = getattr(self, "history", {"transfers": [], "ops": []})
        for table in ("transfers", "ops"):
            rows = self.store.conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
            seen = history[table]
            assert rows[: len(seen)] == seen, f"{table} history was rewritten"
            history[table] = rows
        self.history = history

    @invariant()
    def bets_match(self) -> None:
        for ticket, outcome, target in self.store.conn.execute(
            "SELECT ticket_id, outcome, auto_cashout FROM bets"
        ):
            assert self.model.bets[ticket]["outcome"] == outcome
            assert self.model.bets[ticket]["target"] == target


class PgLedgerMachine(LedgerMachine):
    """The same machine on PostgreSQL: a database of its own per example, the writer
    holding the leader lease and fencing every group with its term, as in production."""

    def open_store(self) -> Store:
        from crashd.engine.ledger.lease import Lease
        from crashd.engine.ledger.pgstore import PgStore

        url = self.stack.enter_context(fresh_database())
        lease = Lease.take(url)
        self.stack.callback(lease.release)
        return PgStore(url, "OFF", term=lease.term)


# The loaded profile (ci or thorough) decides max_examples; steps per example here.
LedgerMachine.TestCase.settings = settings(stateful_step_count=40)
TestLedgerModel = LedgerMachine.TestCase
# A quarter of the profile's examples on PostgreSQL (each step is a round trip per
# statement): 50 in CI, 1,250 with the thorough profile.
PgLedgerMachine.TestCase.settings = settings(
    stateful_step_count=40, max_examples=max(50, settings.default.max_examples // 4)
)
TestLedgerModelPostgres = pytest.mark.skipif(PG_URL is None, reason=PG_WHY)(
    PgLedgerMachine.TestCase
)

"""The seam between the round engine and the ledger, as a Hypothesis property.

Random bets (with and without auto-cashout targets), random manual cashouts at random
moments, on a real chain, a real engine (``MockClock``: rounds run in simulated time)
and a real SQLite ledger. Afterwards the ledger must say exactly what the engine
answered: every acknowledged bet settled once; a cashout answered ``cashed_out`` paid
exactly that, one answered ``too_late`` lost; an untouched bet with target A won A iff
A <= its round's crash point, else lost; balances = funding - stakes + payouts; and the
audit's invariants hold.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from crashd.engine.driver import Engine
from crashd.engine.fairness import ChainReader, build_chain
from crashd.engine.game import Game, GameError, Player, ticket_for
from crashd.engine.ledger import open_ledger
from crashd.engine.round.config import RoundConfig

SPEC = build_chain(hashlib.sha256(b"seam").digest(), length=1_000, interval=100)
FUNDING = 1_000_000
USERS = [Player("sandbox", "acme", f"u{i}") for i in range(3)]


@dataclass
class Bet:
    index: int
    user: int
    stake: int
    auto: int | None
    wait_ms: int
    cash_out_after_ms: int | None


bets = st.lists(
    st.builds(
        Bet,
        index=st.just(0),
        user=st.integers(0, len(USERS) - 1),
        stake=st.integers(1, 10_000),
        auto=st.one_of(st.none(), st.integers(101, 400)),
        wait_ms=st.integers(0, 3_000),
        cash_out_after_ms=st.one_of(st.none(), st.integers(0, 8_000)),
    ),
    min_size=1,
    max_size=12,
)


@dataclass
class Outcome:
    confirmed: dict[str, tuple[int, int | None, int]] = field(default_factory=dict)
    """ticket -> (stake, auto target, round id), as the engine acknowledged them"""
    answers: dict[str, tuple[str, int | None, int | None]] = field(default_factory=dict)
    """ticket -> (status, multiplier, payout) answered to its manual cashout"""
    ledger: dict[str, tuple[str | None, int | None, int | None, str]] = field(default_factory=dict)
    """ticket -> (outcome, multiplier, payout, user id) as the ledger recorded them"""
    balances: dict[str, int] = field(default_factory=dict)
    crash_points: dict[int, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


async def play(db: Path, salt: str, plan: list[Bet], max_profit: int | None) -> Outcome:
    outcome = Outcome()
    async with open_ledger(db, synchronous="NORMAL") as ledger:
        engine = Engine(
            games=ChainReader(SPEC).games(1),
            salt=salt,
            first_game=1,
            config=RoundConfig(
                betting_ms=1_000, pause_ms=500, max_bets_per_user=20, max_profit=max_profit
            ),
            tick_hz=20,
        )
        game = Game(engine, ledger)
        async with trio.open_nursery() as nursery:
            await nursery.start(game.run)
            for i, player in enumerate(USERS):
                await ledger.faucet_credit(
                    f"fund-{i}",
                    partner_id=player.partner_id,
                    user_id=player.user_id,
                    amount=FUNDING,
                )

            async def one(n: int, bet: Bet) -> None:
                await trio.sleep(bet.wait_ms / 1000)
                player = USERS[bet.user]
                key = f"bet-{n}"
                held = await game.reserve(key + ":reserve", player, f"h-{n}", bet.stake, 60_000)
                assert held.amount == bet.stake
                try:
                    placed = await game.confirm(
                        key + ":confirm", player, f"h-{n}", bet.auto, ticket_for(key)
                    )
                except GameError as err:
                    # engine_stopping: the chain ran out (see SPEC) — refused, nothing moved.
                    assert err.code in ("too_many_bets", "round_full", "engine_stopping"), err.code
                    return
                outcome.confirmed[placed.ticket_id] = (bet.stake, bet.auto, placed.round_id)
                if bet.cash_out_after_ms is None:
                    return
                await trio.sleep(bet.cash_out_after_ms / 1000)
                try:
                    answer = await game.cash_out(player, placed.ticket_id)
                except GameError as err:
                    # Not running yet (queued, still betting) or already refunded.
                    assert err.code in ("round_not_running", "bet_refunded"), err.code
                    return
                outcome.answers[placed.ticket_id] = (
                    answer.status,
                    answer.multiplier,
                    answer.payout,
                )

            async with trio.open_nursery() as players:
                for n, bet in enumerate(plan):
                    players.start_soon(one, n, bet)
            engine.stop()
        # Every op the engine caused has committed (Game.run waited for them).
        outcome.problems = list((await ledger.audit()).problems)
        for p in USERS:
            balance = await ledger.balance(
                environment="sandbox", partner_id="acme", user_id=p.user_id
            )
            outcome.balances[p.user_id] = balance.posted
        for ticket, (_, _, round_id) in outcome.confirmed.items():
            view = await ledger.bet(ticket)
            assert view is not None, ticket
            outcome.ledger[ticket] = (view.outcome, view.multiplier, view.payout, view.user_id)
            rnd = await ledger.round(round_id)
            if rnd is not None and rnd.crash_point is not None:
                outcome.crash_points[round_id] = rnd.crash_point
    return outcome


@settings(
    max_examples=60 if os.environ.get("HYPOTHESIS_PROFILE", "ci") == "ci" else 1_000, deadline=None
)
@given(
    plan=bets,
    salt=st.sampled_from(["s1", "s2", "s3", "s4"]),
    max_profit=st.one_of(st.none(), st.integers(0, 20_000)),
)
def test_ledger_settles_exactly_what_the_engine_answered(
    plan: list[Bet], salt: str, max_profit: int | None
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outcome = trio.run(
            play,
            Path(tmp) / "seam.sqlite3",
            salt,
            plan,
            max_profit,
            # Not 0: the clock would also jump while the ledger's thread commits, and
            # simulated rounds would fly by during every commit. 1 ms of real idleness
            # means every task is truly waiting on simulated time.
            clock=trio.testing.MockClock(autojump_threshold=0.001),
        )
    assert outcome.problems == []
    crash_points = outcome.crash_points
    expected = {p.user_id: FUNDING for p in USERS}
    for ticket, (stake, auto, round_id) in outcome.confirmed.items():
        result, multiplier, payout, user_id = outcome.ledger[ticket]
        assert result in ("won", "lost", "refunded"), (ticket, result)
        status, answered_multiplier, answered_payout = outcome.answers.get(ticket, ("", None, None))
        if status == "cashed_out":
            assert (result, multiplier, payout) == ("won", answered_multiplier, answered_payout)
        if status == "too_late":
            assert result == "lost"
        if result == "won":
            assert payout is not None and multiplier is not None
            assert payout == stake * multiplier // 100
            assert multiplier <= crash_points[round_id]
            if status != "cashed_out" and max_profit is None:
                # Won without a manual cashout: only by its auto target, exactly.
                assert auto is not None and multiplier == auto
        if (
            result == "lost"
            and round_id in crash_points
            and auto is not None
            and max_profit is None
        ):
            assert auto > crash_points[round_id]
        expected[user_id] += (payout or 0) - stake if result != "refunded" else 0
    assert outcome.balances == expected

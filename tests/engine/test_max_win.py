"""Max win per bet and the max-profit force point together, on the pure ``Round``.

A Hypothesis property plays one round from random bets (stakes, auto targets, manual
cash-out instants), a random ``max_win`` and a random ``max_profit``, and compares every
bet's outcome with :func:`reference`: the rules of docs/round-engine.md ("Cashouts",
"Max win", "Max profit") restated naively — each bet's cap found by binary search over
the multipliers (the largest one whose floored payout keeps the profit within
``max_win``), the force point by binary search over the exact bound, everything due
taken in multiplier order with cash-outs before the crash at a tie. It also checks the
promises in so many words: no payout beyond ``stake + max_win``; a bet whose cap the
round reaches never loses; ``kind="max_win"`` only at the cap; the round's profit within
``max_profit``; the force point the largest multiplier within what is left of the cap.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hypothesis import event, given, settings
from hypothesis import strategies as st

from crashd.engine.bounds import MAX_MULTIPLIER
from crashd.engine.curve import ms_at, multiplier_at
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.events import CASHOUT_KINDS, BetLost, CashedOut, Crashed, Event, TooLate
from crashd.engine.round.machine import Round, SeqCounter
from support.servers import REPO

HASH = "ab" * 32
BETTING_MS = 1_000


def largest(ok: Callable[[int], bool]) -> int | None:
    """The largest multiplier ``m`` in ``[100, MAX_MULTIPLIER]`` with ``ok(m)`` (``ok``
    monotone, ``ok(100)`` true); ``None`` when even ``MAX_MULTIPLIER + 1`` is ok, i.e.
    the limit lies beyond the curve."""
    if ok(MAX_MULTIPLIER + 1):
        return None
    assert ok(100)
    lo, hi = 100, MAX_MULTIPLIER
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo


def cap_of(stake: int, max_win: int | None) -> int | None:
    """The bet's max-win cap: the largest multiplier whose payout's profit is within."""
    if max_win is None:
        return None
    return largest(lambda m: stake * m // 100 - stake <= max_win)


@dataclass(frozen=True)
class Plan:
    ticket: str
    stake: int
    target: int | None
    manual_ms: int | None
    """When the player asks for a manual cash-out, in ms after the round starts."""


@dataclass
class Outcome:
    state: str  # won / lost
    multiplier: int | None = None
    payout: int = 0
    kind: str | None = None


def reference(
    crash: int, plans: list[Plan], max_win: int | None, max_profit: int | None
) -> dict[str, Outcome]:
    stop = min(crash, MAX_MULTIPLIER)
    total = sum(p.stake for p in plans)
    out: dict[str, Outcome] = {}
    crashed = False

    def open_plans() -> list[tuple[int, Plan]]:
        return [(i, p) for i, p in enumerate(plans) if p.ticket not in out]

    def force() -> int | None:
        if max_profit is None:
            return None
        open_stake = sum(p.stake for _, p in open_plans())
        if open_stake == 0:
            return None
        headroom = total + max_profit - sum(o.payout for o in out.values())
        return largest(lambda m: open_stake * m <= 100 * headroom)

    def win(p: Plan, m: int, kind: str) -> None:
        out[p.ticket] = Outcome("won", m, p.stake * m // 100, kind)

    def settle_until(t: int) -> None:
        nonlocal crashed
        while not crashed:
            points: list[tuple[int, int, int, str]] = [(stop, 2, 0, "crash")]
            for i, p in open_plans():
                cap = cap_of(p.stake, max_win)
                if p.target is not None and (cap is None or p.target <= cap):
                    points.append((p.target, 0, i, "auto"))
                elif cap is not None:
                    points.append((cap, 0, i, "max_win"))
            f = force()
            if f is not None:
                points.append((f, 1, 0, "forced"))
            m, rank, i, kind = min(points)
            if ms_at(m) > t:
                return
            if rank == 0:
                win(plans[i], m, kind)
            elif rank == 1:
                for _, p in open_plans():
                    win(p, m, "forced")
            else:
                crashed = True
                for _, p in open_plans():
                    out[p.ticket] = Outcome("lost")

    manual = sorted((p.manual_ms, i) for i, p in enumerate(plans) if p.manual_ms is not None)
    for t, i in manual:
        settle_until(t)
        if not crashed and plans[i].ticket not in out:
            win(plans[i], multiplier_at(t), "manual")
    settle_until(10**12)
    return out


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[int, list[Plan], int | None, int | None]:
    crash = draw(
        st.one_of(
            st.integers(100, 130),
            st.integers(100, 1_000),
            st.integers(100, 100_000),
            st.integers(MAX_MULTIPLIER - 3, MAX_MULTIPLIER + 3),
        )
    )
    stop = min(crash, MAX_MULTIPLIER)
    stakes = draw(st.lists(st.integers(1, 10_000), min_size=1, max_size=6))
    max_win = draw(
        st.one_of(
            st.none(),
            st.integers(0, 50_000),
            # A cap landing on the crash point (a tie) or one hundredth either side of it.
            st.integers(-1, 1).map(lambda d: max(0, stakes[0] * (stop + d) // 100 - stakes[0])),
        )
    )
    # Often a cap the round's stakes can reach, so the force point comes into play.
    max_profit = draw(st.one_of(st.none(), st.integers(0, 100_000), st.integers(0, sum(stakes))))
    plans = []
    for n, stake in enumerate(stakes):
        cap = cap_of(stake, max_win)
        near = [stop] + ([cap] if cap is not None else [])
        target = draw(
            st.one_of(
                st.none(),
                st.integers(101, 2_000),
                st.sampled_from(near).flatmap(
                    lambda m: st.integers(max(101, m - 1), min(MAX_MULTIPLIER, m + 1))
                ),
            )
        )
        instants = [ms_at(stop) - 1, ms_at(stop)] + ([ms_at(cap)] if cap is not None else [])
        manual = draw(
            st.one_of(
                st.none(),
                st.integers(0, ms_at(stop) + 2),
                st.sampled_from(instants).map(lambda t: max(0, t)),
            )
        )
        plans.append(Plan(f"t{n}", stake, target, manual))
    return crash, plans, max_win, max_profit


def play(crash: int, plans: list[Plan], max_win: int | None, max_profit: int | None) -> list[Event]:
    config = RoundConfig(
        min_stake=1,
        max_stake=10_000,
        max_win=max_win,
        max_profit=max_profit,
        max_bets_per_user=len(plans),
        betting_ms=BETTING_MS,
        pause_ms=100,
    )
    r = Round(
        round_id=1,
        game_hash=HASH,
        crash_point=crash,
        config=config,
        opens_at_ms=0,
        seq=SeqCounter(),
    )
    events = r.open([])
    for p in plans:
        events += r.place_bet(0, p.ticket, "u", p.stake, p.target)
    events += r.advance(BETTING_MS)  # running from BETTING_MS on (on time, not late)
    assert r.started_at_ms == BETTING_MS
    manual = sorted((p.manual_ms, i) for i, p in enumerate(plans) if p.manual_ms is not None)
    for t, i in manual:
        answer = r.cash_out(BETTING_MS + t, plans[i].ticket)
        events += answer
        assert getattr(answer[-1], "ticket", None) == plans[i].ticket  # one answer, last
    events += r.advance(BETTING_MS + 10**12)
    return events


@settings(max_examples=400)
@given(scenarios())
def test_max_win_and_the_force_point_follow_the_rules(
    scenario: tuple[int, list[Plan], int | None, int | None],
) -> None:
    crash, plans, max_win, max_profit = scenario
    events = play(crash, plans, max_win, max_profit)
    stop = min(crash, MAX_MULTIPLIER)
    crash_at = BETTING_MS + ms_at(stop)
    assert any(isinstance(e, Crashed) for e in events)
    by_ticket = {p.ticket: p for p in plans}
    got: dict[str, Outcome] = {}
    paid_before_force = 0
    forced: list[CashedOut] = []
    for e in events:
        if isinstance(e, CashedOut):
            assert e.ticket not in got, "settled twice"
            got[e.ticket] = Outcome("won", e.multiplier, e.payout, e.kind)
            assert e.payout == e.stake * e.multiplier // 100 and e.kind in CASHOUT_KINDS
            if e.kind == "forced":
                forced.append(e)
            elif not forced:
                paid_before_force += e.payout
            event(f"kind: {e.kind}")
        elif isinstance(e, BetLost):
            assert e.ticket not in got, "settled twice"
            got[e.ticket] = Outcome("lost")
        elif isinstance(e, TooLate):
            assert e.at_ms >= crash_at
    assert set(got) == set(by_ticket), "every bet settled exactly once"
    assert got == reference(crash, plans, max_win, max_profit)

    stakes = sum(p.stake for p in plans)
    payout = sum(o.payout for o in got.values())
    for ticket, o in got.items():
        p = by_ticket[ticket]
        cap = cap_of(p.stake, max_win)
        if max_win is not None:
            assert o.payout - p.stake <= max_win, "a payout beyond max win"
        if o.kind == "max_win":
            # At the cap, and only where the target (or no target: the curve) would
            # have paid more.
            assert o.multiplier == cap and (p.target is None or p.target > cap)
        if cap is not None and cap <= stop:
            assert o.state == "won" and o.multiplier is not None and o.multiplier <= cap
            if o.multiplier == cap == stop:
                event("a cap equal to the crash point won")
        if o.kind == "auto":
            assert o.multiplier == p.target and p.target <= crash
        if o.kind == "manual":
            assert p.manual_ms is not None and BETTING_MS + p.manual_ms < crash_at
    if max_profit is not None:
        assert payout - stakes <= max_profit, "the round's profit beyond max profit"
    if forced:
        # The force point is the largest multiplier at which every bet still open is
        # paid within what is left of the cap (the exact bound, docs/round-engine.md).
        f = forced[0].multiplier
        assert {e.multiplier for e in forced} == {f} and max_profit is not None
        open_stake = sum(e.stake for e in forced)
        headroom = stakes + max_profit - paid_before_force
        assert open_stake * f <= 100 * headroom < open_stake * (f + 1)
        event("forced")
    if max_win is not None and any(o.kind == "max_win" for o in got.values()) and forced:
        event("max win and the force point in one round")


def test_the_cap_is_the_largest_multiplier_within_max_win() -> None:
    """A stake of 3 with a max win of 1: 1.66x pays 4 (profit 1), 1.67x pays 5."""
    config = RoundConfig(max_win=1)
    r = Round(
        round_id=1, game_hash=HASH, crash_point=500, config=config, opens_at_ms=0, seq=SeqCounter()
    )
    assert r.win_cap(3) == cap_of(3, 1) == 166
    assert r.win_cap(10_000) == 100  # 1.01x would pay 100 more: capped at the stake
    assert (
        Round(
            round_id=1,
            game_hash=HASH,
            crash_point=500,
            config=RoundConfig(),
            opens_at_ms=0,
            seq=SeqCounter(),
        ).win_cap(3)
        is None
    )


def test_the_documents_name_every_cashout_kind() -> None:
    engine_doc = (REPO / "docs" / "round-engine.md").read_text()
    row = next(line for line in engine_doc.splitlines() if line.startswith("| `CashedOut` |"))
    assert "/".join(f"`{k}`" for k in CASHOUT_KINDS) in row
    feed_doc = " ".join((REPO / "docs" / "feed.md").read_text().split())
    assert "`kind` — " + ", ".join(f"`{k}`" for k in CASHOUT_KINDS[:-1]) in feed_doc
    assert f"or `{CASHOUT_KINDS[-1]}`" in feed_doc

"""The re-run: a transcript's commands played through the pure round engine.

``rerun(transcript)`` builds a fresh ``crashd.engine.round.machine.Round`` from the
transcript's fairness inputs (the crash point is recomputed from the game hash and the
salt, never read) and rules, carries in the bets queued for it, then gives it every
command of the log at its recorded instant, and advances it to the recorded start and
to the end. What comes out is recorded exactly as the server records its own rounds
(``recorder.build_record``), so the auditor compares like with like: the log (every
command was accepted), the sealed bets, every outcome with its kind, instant,
multiplier and payout, the force point and the crash.

A round voided by start-up recovery (the engine's own record died with the process) has
no command instants but its bets': it is re-run to its start and checked against the
seal; its standing wins are checked by rule (see ``audit``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crashd.engine.fairness import FairnessError
from crashd.engine.fairness import crash_point as fair_crash_point
from crashd.engine.round.events import (
    AutoCashoutChanged,
    BetAccepted,
    BetRefunded,
    Event,
    Rejected,
)
from crashd.engine.round.machine import Bet, Round, SeqCounter

from .recorder import RoundRecord, build_record
from .transcript import config_of


class ReplayError(ValueError):
    """The transcript cannot even be re-run (malformed, or rules this engine lacks)."""


@dataclass
class Rerun:
    record: RoundRecord | None
    crash_point: int | None
    problems: list[str] = field(default_factory=list)


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise ReplayError(f"{what} must be an integer")
    return value


def _forward(rnd: Round, at: int, what: str) -> int:
    """``at``, if the engine clock may move to it: it never goes backwards."""
    if at < rnd.now_ms:
        raise ReplayError(f"{what} is {at}, before the engine's clock ({rnd.now_ms})")
    return at


def rerun(t: Mapping[str, Any]) -> Rerun:
    """Re-run transcript ``t``; ``problems`` lists commands the engine refused."""
    try:
        return _rerun(t)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ReplayError(f"malformed transcript: {type(exc).__name__} {exc}") from None


def _rerun(t: Mapping[str, Any]) -> Rerun:
    round_id = _int(t["round_id"], "round_id")
    fairness = t["fairness"]
    try:
        config = config_of(t["rules"])
    except ValueError as exc:
        raise ReplayError(str(exc)) from None
    try:
        point = fair_crash_point(fairness["game_hash"], fairness["salt"])
    except (FairnessError, ValueError) as exc:
        raise ReplayError(f"fairness inputs: {exc}") from None
    clock = t["clock"]
    opened_at = _int(clock["opened_at"], "clock.opened_at")
    started_at = clock["started_at"]
    out = Rerun(None, point)
    events: list[Event] = []
    rnd = Round(
        round_id=round_id,
        game_hash=fairness["game_hash"],
        crash_point=point,
        config=config,
        opens_at_ms=opened_at,
        seq=SeqCounter(),
    )
    log = list(t["log"])
    # The queue: bets accepted before the round opened, changed or withdrawn there.
    carried: dict[str, Bet] = {}
    head = 0
    while head < len(log) and log[head].get("queued") is True:
        e = log[head]
        head += 1
        ticket = e["ticket_id"]
        if e["op"] == "bet":
            carried[ticket] = Bet(
                ticket, e["player"], e["stake"], e["auto_cashout"], _int(e["at"], "at")
            )
            events.append(
                BetAccepted(
                    0,
                    e["at"],
                    round_id,
                    ticket=ticket,
                    user=e["player"],
                    stake=e["stake"],
                    auto_cashout=e["auto_cashout"],
                    queued=True,
                )
            )
        elif e["op"] == "target" and ticket in carried:
            carried[ticket].auto_cashout = e["auto_cashout"]
            events.append(_target_event(round_id, e))
        elif e["op"] == "withdraw" and ticket in carried:
            bet = carried.pop(ticket)
            events.append(
                BetRefunded(
                    0,
                    e["at"],
                    round_id,
                    ticket=ticket,
                    user=bet.user,
                    stake=bet.stake,
                    reason=e["reason"],
                )
            )
        else:
            out.problems.append(f"log[{head - 1}]: a queued {e['op']} of a bet not queued")
    if len(carried) > config.max_bets_per_round:
        out.problems.append("more bets queued than the round may hold")
        return out
    events += rnd.open(list(carried.values()))
    started = False
    for index in range(head, len(log)):
        e = log[index]
        at = _forward(rnd, _int(e["at"], f"log[{index}].at"), f"log[{index}].at")
        if e.get("queued"):
            out.problems.append(f"log[{index}]: queued after the round opened")
            continue
        if started_at is not None and not started and at >= started_at:
            events += rnd.advance(_forward(rnd, started_at, "clock.started_at"))
            started = True
        op = e["op"]
        if op == "bet":
            answer = rnd.place_bet(at, e["ticket_id"], e["player"], e["stake"], e["auto_cashout"])
        elif op == "target":
            answer = rnd.set_auto_cashout(at, e["ticket_id"], e["auto_cashout"])
        elif op == "cashout":
            answer = rnd.cash_out(at, e["ticket_id"])
        elif op == "withdraw":
            answer = rnd.withdraw(at, e["ticket_id"], e["reason"])
            if not answer:
                out.problems.append(f"log[{index}]: nothing to withdraw")
        else:
            out.problems.append(f"log[{index}]: unknown op {op!r}")
            continue
        for event in answer:
            if isinstance(event, Rejected):
                out.problems.append(
                    f"log[{index}]: the engine refuses this {op} of {e.get('ticket_id')}: "
                    f"{event.reason}"
                )
        events += answer
    if started_at is not None and not started:
        events += rnd.advance(
            _forward(rnd, _int(started_at, "clock.started_at"), "clock.started_at")
        )
    crash, void = t["crash"], t["void"]
    if void is not None and void.get("by") == "recovery":
        pass  # no instant to end at: the re-run stops at the last command
    elif void is not None:
        events += rnd.void(_forward(rnd, _int(void["at"], "void.at"), "void.at"), void["reason"])
    elif crash is not None:
        events += rnd.advance(_forward(rnd, _int(crash["at"], "crash.at"), "crash.at"))
    out.record = build_record(round_id, events, lambda ms: ms, str)
    return out


def _target_event(round_id: int, e: Mapping[str, Any]) -> Event:
    return AutoCashoutChanged(
        0, e["at"], round_id, ticket=e["ticket_id"], user=None, target=e["auto_cashout"]
    )

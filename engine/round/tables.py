"""The round's rules as data: phases, the transitions between them, and which
command is legal in which phase (like h11's ``_state.py``). docs/round-engine.md
is generated from these tables and a test keeps it in step."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from crashd.engine.reasons import (
    ALREADY_CASHED_OUT,
    BET_REFUNDED,
    DUPLICATE_TICKET,
    ENGINE_STOPPING,
    INVALID_TARGET,
    ROUND_CLOSED,
    ROUND_FULL,
    ROUND_NOT_RUNNING,
    ROUND_SETTLED,
    ROUND_VOIDED,
    STAKE_TOO_LARGE,
    STAKE_TOO_SMALL,
    TOO_LATE,
    TOO_MANY_BETS,
    UNKNOWN_TICKET,
)


class Phase(str, Enum):
    BETTING = "betting"
    """Open for bets; auto-cashout targets may be set or cancelled."""
    RUNNING = "running"
    """The multiplier rises; cashouts are accepted, new bets go to the next round."""
    CRASHED = "crashed"
    """Crashed and settled; the hash is revealed; the pause before the next round."""
    ENDED = "ended"
    """The pause is over; the sequencer replaces the round with the next one."""
    VOIDED = "voided"
    """Called off by the operator: open bets refunded."""


class Trigger(str, Enum):
    """What moves a round from one phase to another."""

    CLOSE_BETTING = "close_betting"
    CRASH = "crash"
    END_PAUSE = "end_pause"
    VOID = "void"


TRANSITIONS: Mapping[Phase, Mapping[Trigger, Phase]] = {
    Phase.BETTING: {Trigger.CLOSE_BETTING: Phase.RUNNING, Trigger.VOID: Phase.VOIDED},
    Phase.RUNNING: {Trigger.CRASH: Phase.CRASHED, Trigger.VOID: Phase.VOIDED},
    Phase.CRASHED: {Trigger.END_PAUSE: Phase.ENDED},
    Phase.ENDED: {},
    Phase.VOIDED: {},
}


class Command(str, Enum):
    PLACE_BET = "place_bet"
    SET_AUTO_CASHOUT = "set_auto_cashout"
    CANCEL_AUTO_CASHOUT = "cancel_auto_cashout"
    CASH_OUT = "cash_out"
    VOID = "void"


# The refusals the round engine gives (a subset of the one catalogue).
REASONS = frozenset(
    {
        ROUND_CLOSED,
        ROUND_NOT_RUNNING,
        ROUND_VOIDED,
        ROUND_SETTLED,
        ROUND_FULL,
        TOO_LATE,
        UNKNOWN_TICKET,
        DUPLICATE_TICKET,
        STAKE_TOO_SMALL,
        STAKE_TOO_LARGE,
        TOO_MANY_BETS,
        ALREADY_CASHED_OUT,
        BET_REFUNDED,
        INVALID_TARGET,
        ENGINE_STOPPING,
    }
)

LEGAL = None
"""In ``COMMANDS``: the command is legal in this phase (it may still be refused for a
reason of the bet itself, e.g. ``stake_too_small`` or ``already_cashed_out``)."""

COMMANDS: Mapping[Phase, Mapping[Command, str | None]] = {
    Phase.BETTING: {
        Command.PLACE_BET: LEGAL,
        Command.SET_AUTO_CASHOUT: LEGAL,
        Command.CANCEL_AUTO_CASHOUT: LEGAL,
        Command.CASH_OUT: ROUND_NOT_RUNNING,
        Command.VOID: LEGAL,
    },
    Phase.RUNNING: {
        Command.PLACE_BET: ROUND_CLOSED,  # the sequencer queues it for the next round
        Command.SET_AUTO_CASHOUT: ROUND_CLOSED,
        Command.CANCEL_AUTO_CASHOUT: ROUND_CLOSED,
        Command.CASH_OUT: LEGAL,
        Command.VOID: LEGAL,
    },
    # After the crash a cashout is still *answered* from the bet's outcome: too late
    # for a bet that lost, already_cashed_out for one that won. Never silence.
    # A target change of a bet whose round is over says so (as it does once the
    # engine has forgotten the round and the ledger answers).
    Phase.CRASHED: {
        Command.PLACE_BET: ROUND_CLOSED,
        Command.SET_AUTO_CASHOUT: ROUND_SETTLED,
        Command.CANCEL_AUTO_CASHOUT: ROUND_SETTLED,
        Command.CASH_OUT: LEGAL,
        Command.VOID: ROUND_SETTLED,
    },
    Phase.ENDED: {
        Command.PLACE_BET: ROUND_CLOSED,
        Command.SET_AUTO_CASHOUT: ROUND_SETTLED,
        Command.CANCEL_AUTO_CASHOUT: ROUND_SETTLED,
        Command.CASH_OUT: LEGAL,
        Command.VOID: ROUND_SETTLED,
    },
    Phase.VOIDED: {
        Command.PLACE_BET: ROUND_VOIDED,
        Command.SET_AUTO_CASHOUT: ROUND_VOIDED,
        Command.CANCEL_AUTO_CASHOUT: ROUND_VOIDED,
        Command.CASH_OUT: LEGAL,
        Command.VOID: ROUND_VOIDED,
    },
}

PUBLIC_STATUS: Mapping[Phase, str] = {
    Phase.BETTING: "betting",
    Phase.RUNNING: "running",
    Phase.CRASHED: "crashed",
    Phase.ENDED: "crashed",
    Phase.VOIDED: "voided",
}
"""``status`` in ``GET /game/state``; ``voided`` only shows while the engine stops."""


def _check_tables() -> None:
    for phase in Phase:
        assert phase in TRANSITIONS and phase in COMMANDS and phase in PUBLIC_STATUS
        assert set(COMMANDS[phase]) == set(Command), phase
        for reason in COMMANDS[phase].values():
            assert reason is LEGAL or reason in REASONS, reason


_check_tables()


def describe_tables() -> str:
    """The phase and command tables as Markdown, for docs/round-engine.md (a test keeps
    the document in step with this code)."""
    lines = ["| phase | trigger | next phase |", "|---|---|---|"]
    for phase, moves in TRANSITIONS.items():
        for trigger, nxt in moves.items():
            lines.append(f"| `{phase.value}` | {trigger.value} | `{nxt.value}` |")
    lines += [
        "",
        "| phase | " + " | ".join(c.value for c in Command) + " |",
        "|---|" + "---|" * len(Command),
    ]
    for phase, table in COMMANDS.items():
        cells = ["ok" if table[c] is LEGAL else f"`{table[c]}`" for c in Command]
        lines.append(f"| `{phase.value}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"

"""The round transcript: its parts (fairness inputs, rules, clock, log, settlement) and
their assembly into the document that is signed and chained.

The rules member states every parameter the re-run needs (the round engine's
``RoundConfig`` and the engine's fixed bounds), and ``rules_hash`` is SHA-256 of its
canonical bytes: the hash of the configuration in force.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crashd.engine.bounds import MAX_MULTIPLIER, MIN_AUTO_CASHOUT
from crashd.engine.curve import GROWTH_PER_MS
from crashd.engine.round.config import RoundConfig

from .canonical import digest
from .documents import TRANSCRIPT, VERSION

SCHEME = "bustabit-v2"
CURVE = "floor(100 * e^(0.00006 * elapsed_ms))"
GROWTH = "0.00006"
PAYOUT = "floor(stake * multiplier / 100)"
TIE = "at one multiplier: auto cash-outs, then the force point, then the crash"
assert float(GROWTH) == GROWTH_PER_MS

_CONFIG_FIELDS = (
    "min_stake",
    "max_stake",
    "max_profit",
    "max_bets_per_user",
    "max_bets_per_round",
    "betting_ms",
    "pause_ms",
    "max_lateness_ms",
)


def rules_of(config: RoundConfig) -> dict[str, Any]:
    """The parameters in force for a round (what the re-run plays it with)."""
    rules: dict[str, Any] = {name: getattr(config, name) for name in _CONFIG_FIELDS}
    rules.update(
        curve=CURVE,
        growth_per_ms=GROWTH,
        max_multiplier=MAX_MULTIPLIER,
        min_auto_cashout=MIN_AUTO_CASHOUT,
        payout=PAYOUT,
        tie=TIE,
    )
    return rules


def config_of(rules: Mapping[str, Any]) -> RoundConfig:
    """The round engine's configuration from a transcript's rules; ``ValueError`` if
    they are not rules this engine plays by."""
    fixed = {
        "curve": CURVE,
        "growth_per_ms": GROWTH,
        "max_multiplier": MAX_MULTIPLIER,
        "min_auto_cashout": MIN_AUTO_CASHOUT,
        "payout": PAYOUT,
        "tie": TIE,
    }
    for name, value in fixed.items():
        if rules.get(name) != value:
            raise ValueError(f"rules.{name} is {rules.get(name)!r}; this engine plays {value!r}")
    values: dict[str, int | None] = {}
    for name in _CONFIG_FIELDS:
        value = rules.get(name)
        if name == "max_profit" and value is None:
            values[name] = None
            continue
        if type(value) is not int:
            raise ValueError(f"rules.{name} must be an integer")
        values[name] = value
    extra = set(rules) - set(fixed) - set(_CONFIG_FIELDS)
    if extra:
        raise ValueError(f"unknown rules: {sorted(extra)}")
    return RoundConfig(**values)  # type: ignore[arg-type]  # checked one by one above


def fairness_of(
    game_hash: str, salt: str, crash_point: int, terminating_hash: str, encoding: str
) -> dict[str, Any]:
    return {
        "scheme": SCHEME,
        "game_hash": game_hash,
        "salt": salt,
        "crash_point": crash_point,
        "terminating_hash": terminating_hash,
        "chain_encoding": encoding,
    }


def totals_of(
    log: Sequence[Mapping[str, Any]], settlement: Sequence[Mapping[str, Any]]
) -> dict[str, int]:
    stakes = {e["ticket_id"]: e["stake"] for e in log if e.get("op") == "bet"}
    counts = {"won": 0, "lost": 0, "refunded": 0, "withdrawn": 0}
    stake = payout = 0
    for entry in settlement:
        outcome = entry.get("outcome")
        if outcome in counts:
            counts[outcome] += 1
        if outcome != "withdrawn":
            stake += stakes.get(entry.get("ticket_id"), 0)
            payout += entry.get("payout") or 0
    return {"bets": len(stakes), "stake": stake, "payout": payout, **counts}


def force_point_of(settlement: Sequence[Mapping[str, Any]]) -> int | None:
    forced = [e["multiplier"] for e in settlement if e.get("cashout") == "forced"]
    return forced[0] if forced else None


def transcript_body(
    *,
    round_id: int,
    prev: str | None,
    environment: str,
    fairness: Mapping[str, Any],
    rules: Mapping[str, Any],
    clock: Mapping[str, Any],
    seal: Mapping[str, Any] | None,
    log: Sequence[Mapping[str, Any]],
    settlement: Sequence[Mapping[str, Any]],
    crash: Mapping[str, Any] | None,
    void: Mapping[str, Any] | None,
    source: str = "engine",
) -> dict[str, Any]:
    """The unsigned transcript (``documents.Signer.sign`` adds ``key_id`` and ``sig``).
    ``source``: ``engine`` (the engine's own record: every command at its instant, re-run
    by the auditor) or ``ledger`` (written by start-up recovery from the ledger and the
    stored seal, for a round whose engine died with the process: checked by rule)."""
    return {
        "v": VERSION,
        "type": TRANSCRIPT,
        "round_id": round_id,
        "prev": prev,
        "source": source,
        "environment": environment,
        "status": "voided" if void is not None else "crashed",
        "fairness": dict(fairness),
        "rules": dict(rules),
        "rules_hash": digest(dict(rules)),
        "clock": dict(clock),
        "seal": dict(seal) if seal is not None else None,
        "log": [dict(e) for e in log],
        "settlement": [dict(e) for e in settlement],
        "crash": dict(crash) if crash is not None else None,
        "void": dict(void) if void is not None else None,
        "force_point": force_point_of(settlement),
        "totals": totals_of(log, settlement),
    }


def clock_of(record: Any) -> dict[str, Any]:
    end = record.crash["at"] if record.crash is not None else (record.void or {}).get("at")
    return {
        "opened_at": record.opened_at,
        "closes_at": record.closes_at,
        "started_at": record.started_at,
        "ended_at": end,
    }


def from_record(
    record: Any,
    *,
    prev: str | None,
    environment: str,
    fairness: Mapping[str, Any],
    rules: Mapping[str, Any],
    seal: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The unsigned transcript of a round the engine played (``recorder.RoundRecord``)."""
    return transcript_body(
        round_id=record.round_id,
        prev=prev,
        environment=environment,
        fairness=fairness,
        rules=rules,
        clock=clock_of(record),
        seal=seal,
        log=record.log,
        settlement=record.settlement,
        crash=record.crash,
        void=record.void,
    )

"""The operator's limits: stakes, bets per user, max win per bet, max profit per round.

Pure, like the round core: a :class:`Limits` is a frozen, validated value; the round
config a round plays with is derived from it and the house bankroll by
:func:`round_config` (Bustabit's rule: a round may cost the house at most a fraction of
its bankroll); :func:`exposure` says the most a round can still pay. The API changes
limits at runtime (``PATCH /api/v1/admin/limits``); the engine applies them from the
next round (``Engine.reconfigure``); every change is kept in the ledger's audit log.

Money is integer minor units; the bankroll fraction is integer basis points (100 bp is
1%), so nothing here is a float.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from .bounds import MAX_AMOUNT, MAX_MULTIPLIER
from .round.config import RoundConfig
from .round.machine import Round
from .round.tables import Phase

MaxProfitMode = Literal["fixed", "bankroll"]
MAX_PROFIT_MODES: tuple[MaxProfitMode, ...] = ("fixed", "bankroll")
MAX_BANKROLL_BP = 1_000
"""At most 10% of the bankroll per round (Bustabit uses 1%; more is a typo, not a plan)."""
MAX_BETS_PER_USER = 10


class LimitsError(ValueError):
    """Limits that cannot be applied; the message names the field and the rule."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Limits:
    min_stake: int = 1
    """Smallest stake per bet."""
    max_stake: int = 100_000_00
    """Largest stake per bet."""
    max_bets_per_user: int = 1
    """Bets one user may hold in one round."""
    max_win: int = 0
    """Largest profit one bet may make (payout minus stake); 0: no cap."""
    max_profit_mode: MaxProfitMode = "fixed"
    """``bankroll``: the round's cap is ``max_profit_bp`` of the house bankroll (the
    default in production); ``fixed``: it is ``max_profit``."""
    max_profit: int = 0
    """Fixed cap on the players' total profit per round (``fixed`` mode); 0: no cap."""
    max_profit_bp: int = 100
    """The cap as basis points of the house bankroll (``bankroll`` mode): 100 is 1%."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "max_profit_mode":
                if value not in MAX_PROFIT_MODES:
                    raise LimitsError(f.name, "must be fixed or bankroll")
            elif type(value) is not int:
                raise LimitsError(f.name, "must be an integer")
        if not 1 <= self.min_stake <= self.max_stake <= MAX_AMOUNT:
            raise LimitsError("min_stake", f"need 1 <= min_stake <= max_stake <= {MAX_AMOUNT}")
        if not 1 <= self.max_bets_per_user <= MAX_BETS_PER_USER:
            raise LimitsError("max_bets_per_user", f"must be in 1..{MAX_BETS_PER_USER}")
        if not 0 <= self.max_win <= MAX_AMOUNT:
            raise LimitsError("max_win", f"must be in 0..{MAX_AMOUNT}")
        if self.max_win and self.max_win * 100 < self.max_stake:
            # Else the largest stakes would be capped below 1.01x: cashed out at 1.00x
            # the moment the round starts, which no player would call a bet.
            raise LimitsError(
                "max_win", "must be at least max_stake / 100 (every stake can reach 1.01x)"
            )
        if not 0 <= self.max_profit <= MAX_AMOUNT * 1000:
            raise LimitsError("max_profit", f"must be in 0..{MAX_AMOUNT * 1000}")
        if not 1 <= self.max_profit_bp <= MAX_BANKROLL_BP:
            raise LimitsError("max_profit_bp", f"must be in 1..{MAX_BANKROLL_BP} (basis points)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def changed(self, **changes: Any) -> Limits:
        """These limits with ``changes`` applied (validated: raises ``LimitsError``)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise LimitsError(unknown[0], "is not a limit")
        return replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        """Limits from their stored form; fields it lacks keep their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def max_profit_for(limits: Limits, bankroll: int) -> int | None:
    """The round's cap on players' profit (``None``: no cap). In bankroll mode an empty
    or negative bankroll gives a cap of 0: every bet is cashed out at 1.00x (the
    readiness check reports a production server in that state as not ready)."""
    if limits.max_profit_mode == "bankroll":
        return max(0, bankroll) * limits.max_profit_bp // 10_000
    return limits.max_profit or None


def round_config(limits: Limits, bankroll: int, base: RoundConfig) -> RoundConfig:
    """The config of the next round: ``base`` (phase lengths, bounds) with these limits
    and the cap they give for this bankroll."""
    return replace(
        base,
        min_stake=limits.min_stake,
        max_stake=limits.max_stake,
        max_bets_per_user=limits.max_bets_per_user,
        max_win=limits.max_win or None,
        max_profit=max_profit_for(limits, bankroll),
    )


def exposure(round_: Round) -> int:
    """The most the round can still pay out (stakes included) from now on: every open
    bet at its best (its auto target, its max-win cap, or the top of the curve),
    bounded by what the max-profit cap leaves; 0 once nothing is open."""
    if round_.phase not in (Phase.BETTING, Phase.RUNNING):
        return 0
    best = 0
    for bet in round_.bets.values():
        if bet.state.value != "open":
            continue
        top = MAX_MULTIPLIER
        if bet.auto_cashout is not None:
            top = min(top, bet.auto_cashout)
        cap = round_.win_cap(bet.stake)
        if cap is not None:
            top = min(top, cap)
        best += bet.stake * top // 100
    max_profit = round_.config.max_profit
    if max_profit is not None:
        best = min(best, round_.total_stake + max_profit - round_.total_payout)
    return max(0, best)

"""The operator's side of a running server: limits, the house bankroll, round control,
the round book (totals and RTP), all read by metrics, readiness and the admin routes.

One :class:`Ops` per server, built once the engine and the ledger run
(:func:`start_ops`). It is an engine observer for one reason: at each round's end
(``RoundSettled``, ``RoundVoided``) it books the round (counters, the RTP window) and
then — after that round's settlement committed — reads the house bankroll and gives
the engine the config of the next round (``Engine.reconfigure``: limits, and the max
profit the bankroll allows). Everything else it does is asked for by an operator, and
each such action is one audit-log entry, written by the ledger in the same commit as
its effect.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from crashd.engine.driver import Engine
from crashd.engine.ledger.model import AccountKind, AuditEntry
from crashd.engine.limits import Limits, exposure, max_profit_for, round_config
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.events import Crashed, Event, RoundSettled, RoundVoided
from crashd.engine.rtp import THEORETICAL_RTP, RtpReading, RtpWindow, round_outcome

if TYPE_CHECKING:
    from crashd.api.config import Config
    from crashd.engine.game import Game

    from .health import Check

log = logging.getLogger(__name__)

LIMITS_ACTION = "limits"


def limits_from_config(config: Config) -> Limits:
    """The limits before any runtime change: the configuration's. In production the
    max profit is derived from the bankroll unless a fixed one is configured."""
    bankroll = config.environment == "production" and config.max_profit == 0
    return Limits(
        min_stake=config.min_stake,
        max_stake=config.max_stake,
        max_bets_per_user=config.max_bets_per_user,
        max_win=config.max_win,
        max_profit_mode="bankroll" if bankroll else "fixed",
        max_profit=config.max_profit,
        max_profit_bp=config.max_profit_bankroll_bp,
    )


@dataclass
class RoundBook:
    """Rounds, bets, stakes and payouts since start, and the RTP window."""

    window: RtpWindow
    rounds_crashed: int = 0
    rounds_voided: int = 0
    bets: int = 0
    stake: int = 0
    payout: int = 0
    alert: bool = False
    reading: RtpReading | None = None
    crash_points: dict[int, int] = field(default_factory=dict)


class Ops:
    def __init__(
        self, config: Config, game: Game, limits: Limits, house: int, capital: int
    ) -> None:
        self.config = config
        self.environment = config.environment
        self.game = game
        self.engine: Engine = game.engine
        self.limits = limits
        self.house = house
        """The house bankroll (its account's posted balance) as of the last read."""
        self.capital = capital
        """Bankroll deposits minus withdrawals (the operator's funding)."""
        self.book = RoundBook(
            RtpWindow(config.rtp_window_rounds, config.rtp_alert_sigma, config.rtp_min_bets)
        )
        self.limits_lock = trio.Lock()
        self._base: RoundConfig = self.engine.next_config
        self._refresh_send, self._refresh_recv = trio.open_memory_channel[None](1)
        self.engine.add_observer(self._on_events)
        self.apply()

    # -- the next round's config ---------------------------------------------------

    def next_round_config(self) -> RoundConfig:
        return round_config(self.limits, self.house, self._base)

    def apply(self) -> None:
        """Give the engine the config of the next round (from the next round on)."""
        self.engine.reconfigure(self.next_round_config())

    def max_profit(self) -> int | None:
        return max_profit_for(self.limits, self.house)

    # -- the engine observer -------------------------------------------------------

    def _on_events(self, events: Sequence[Event]) -> None:
        ended = False
        for event in events:
            if isinstance(event, Crashed):
                self.book.crash_points[event.round_id] = event.crash_point
            elif isinstance(event, RoundSettled):
                self._book_round(event.round_id)
                ended = True
            elif isinstance(event, RoundVoided):
                self.book.rounds_voided += 1
                self.book.crash_points.pop(event.round_id, None)
                ended = True
        if ended:
            try:  # one refresh pending is enough: it reads the latest state
                self._refresh_send.send_nowait(None)
            except trio.WouldBlock:
                pass

    def _book_round(self, round_id: int) -> None:
        seq = self.engine.sequencer
        rnd = None
        for candidate in (seq.current, seq.previous):
            if candidate is not None and candidate.round_id == round_id:
                rnd = candidate
        crash = self.book.crash_points.pop(round_id, None)
        if rnd is None or crash is None:  # pragma: no cover - the sequencer keeps both
            return
        outcome = round_outcome(round_id, crash, rnd.bets.values())
        book = self.book
        book.rounds_crashed += 1
        book.bets += outcome.bets
        book.stake += outcome.stake
        book.payout += outcome.payout
        book.window.add(outcome)
        reading = book.window.reading()
        book.reading = reading
        if reading.alert != book.alert:
            book.alert = reading.alert
            assert reading.observed is not None
            fields = {
                "rtp_observed": round(reading.observed, 6),
                "rtp_low": round(reading.low or 0.0, 6),
                "rtp_high": round(reading.high or 0.0, 6),
                "rtp_rounds": reading.rounds,
                "rtp_bets": reading.bets,
                "rtp_stake": reading.stake,
            }
            if reading.alert:
                log.warning(
                    "rtp alert: observed %.4f outside [%.4f, %.4f] over the last %d rounds "
                    "(%d bets, stake %d)",
                    reading.observed,
                    reading.low,
                    reading.high,
                    reading.rounds,
                    reading.bets,
                    reading.stake,
                    extra={"fields": {"event": "rtp_alert", **fields}},
                )
            else:
                log.info(
                    "rtp back within its band: observed %.4f in [%.4f, %.4f]",
                    reading.observed,
                    reading.low,
                    reading.high,
                    extra={"fields": {"event": "rtp_ok", **fields}},
                )

    async def run(self) -> None:
        """After each round's end: once its settlement committed, read the bankroll and
        set the next round's config (a round opens ``pause_ms`` after a crash: time
        enough; if the read is late the next round keeps the previous cap)."""
        async for _ in self._refresh_recv:
            await self.refresh()

    async def refresh(self) -> None:
        ledger = self.game.ledger
        await ledger.barrier()
        self.house = await ledger.system_posted(self.environment, AccountKind.HOUSE.value)
        self.capital = -await ledger.system_posted(self.environment, AccountKind.CAPITAL.value)
        self.apply()

    # -- readiness and metrics -----------------------------------------------------

    def bankroll_check(self) -> Check:
        from .health import Check

        if self.limits.max_profit_mode == "bankroll" and self.house <= 0:
            return Check(
                "bankroll",
                False,
                "the house bankroll is not funded (max profit is a share of it): "
                "crashd admin bankroll deposit AMOUNT",
            )
        return Check("bankroll", True)

    def exposure(self) -> int:
        if self.engine.finished:
            return 0
        return exposure(self.engine.sequencer.current)

    def round_cap(self) -> int | None:
        if self.engine.finished:
            return None
        return self.engine.sequencer.current.config.max_profit

    def collect(self, env: str) -> Iterator[Metric]:
        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            g = GaugeMetricFamily(name, doc, labels=["environment"])
            g.add_metric([env], value)
            return g

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            c = CounterMetricFamily(name, doc, labels=["environment"])
            c.add_metric([env], value)
            return c

        book = self.book
        rounds = CounterMetricFamily(
            "crashd_rounds",
            "Rounds ended since start, by outcome",
            labels=["environment", "outcome"],
        )
        rounds.add_metric([env, "crashed"], book.rounds_crashed)
        rounds.add_metric([env, "voided"], book.rounds_voided)
        yield rounds
        yield counter("crashd_bets", "Bets settled in crashed rounds since start", book.bets)
        yield counter(
            "crashd_stake", "Stakes of bets settled in crashed rounds (minor units)", book.stake
        )
        yield counter(
            "crashd_payout", "Payouts of bets settled in crashed rounds (minor units)", book.payout
        )
        yield gauge(
            "crashd_house_balance", "The house bankroll: its account's posted balance", self.house
        )
        yield gauge("crashd_bankroll_funded", "Bankroll deposits minus withdrawals", self.capital)
        yield gauge(
            "crashd_house_profit",
            "The house's result from play: bankroll minus what the operator funded",
            self.house - self.capital,
        )
        yield gauge(
            "crashd_round_exposure", "The most the live round can still pay out", self.exposure()
        )
        cap = self.round_cap()
        yield gauge(
            "crashd_round_max_profit",
            "The live round's cap on players' profit (NaN: no cap)",
            math.nan if cap is None else cap,
        )
        nxt = self.max_profit()
        yield gauge(
            "crashd_next_round_max_profit",
            "The cap the next round will play with (NaN: no cap)",
            math.nan if nxt is None else nxt,
        )
        for name, value in self.limits.to_dict().items():
            if name == "max_profit_mode":
                continue
            yield gauge(f"crashd_limit_{name}", f"The limit {name} in force", value)
        reading = book.reading or book.window.reading()
        yield gauge("crashd_rtp_theoretical", "The game's theoretical RTP", THEORETICAL_RTP)
        yield gauge(
            "crashd_rtp_observed",
            "Payouts / stakes over the RTP window (NaN before any stake)",
            math.nan if reading.observed is None else reading.observed,
        )
        yield gauge(
            "crashd_rtp_expected",
            "Expected RTP of the window's bets under a fair game (NaN before any stake)",
            math.nan if reading.expected is None else reading.expected,
        )
        yield gauge(
            "crashd_rtp_band_low",
            "Lower edge of the RTP band",
            math.nan if reading.low is None else reading.low,
        )
        yield gauge(
            "crashd_rtp_band_high",
            "Upper edge of the RTP band",
            math.nan if reading.high is None else reading.high,
        )
        yield gauge(
            "crashd_rtp_alert", "1 while the observed RTP is outside its band", int(book.alert)
        )
        yield gauge("crashd_rtp_window_rounds", "Crashed rounds in the RTP window", reading.rounds)
        yield gauge("crashd_rtp_window_bets", "Bets in the RTP window", reading.bets)
        yield gauge("crashd_rtp_window_stake", "Stakes in the RTP window", reading.stake)

    def rtp(self) -> dict[str, Any]:
        reading = self.book.reading or self.book.window.reading()
        return {
            "theoretical": THEORETICAL_RTP,
            "observed": reading.observed,
            "expected": reading.expected,
            "band": [reading.low, reading.high] if reading.low is not None else None,
            "z": self.book.window.z,
            "alert": self.book.alert,
            "window": {
                "rounds": reading.rounds,
                "bets": reading.bets,
                "stake": reading.stake,
                "payout": reading.payout,
                "size": self.book.window.size,
            },
        }


async def start_ops(config: Config, game: Game) -> Ops:
    """Load the limits in force (the last change in the audit log, else the config's)
    and the bankroll, and build the server's :class:`Ops`."""
    ledger = game.ledger
    env = config.environment
    limits = limits_from_config(config)
    found = await ledger.audit_entries(env, actions=(LIMITS_ACTION,), limit=1)
    latest = found[0] if found else None
    if latest is not None and latest.after is not None:
        stored = Limits.from_dict(json.loads(latest.after))
        if stored != limits:
            log.info(
                "limits: the last change in the audit log (seq %d, by %s) is in force over "
                "the configuration's",
                latest.seq,
                latest.actor,
            )
        limits = stored
    house = await ledger.system_posted(env, AccountKind.HOUSE.value)
    capital = -await ledger.system_posted(env, AccountKind.CAPITAL.value)
    return Ops(config, game, limits, house, capital)


def entry_body(entry: AuditEntry) -> dict[str, Any]:
    def parsed(text: str | None) -> Any:
        return None if text is None else json.loads(text)

    return {
        "seq": entry.seq,
        "ts": entry.ts,
        "environment": entry.environment,
        "actor": entry.actor,
        "action": entry.action,
        "before": parsed(entry.before),
        "after": parsed(entry.after),
        "note": entry.note,
    }


__all__ = ["LIMITS_ACTION", "Ops", "entry_body", "limits_from_config", "start_ops"]

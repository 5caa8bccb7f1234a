"""``GET /metrics``: the Prometheus text format, via prometheus-client.

Two kinds of numbers:

* **read at scrape time** by :class:`CrashdCollector` from the ``statistics()`` objects
  the parts already keep (engine, ledger, feed hub and listener, idempotency, rate
  limits, the round book, the limits in force): the hot paths pay nothing for them;
* **observed as they happen** by the few instruments in :class:`Metrics`: histograms
  of tick lateness (the engine's hook, one observation per tick), cash-out answer
  latency (per cash-out, REST, batch and feed alike), ledger commit latency and group
  size (per group commit), and request counts and durations by route (per request,
  from the request middleware). Each observation is a lock and a few additions in
  prometheus-client (about a microsecond; a request costs hundreds).

Each server has its own registry (two servers in one process, as in the tests, never
mix their numbers). Every metric is labelled with the server's ``environment``. The
names, their types and help are the contract the Grafana dashboard in
``docs/grafana-dashboard.json`` is built on (a test checks every metric it uses is
exported).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from crashd.api import __version__

if TYPE_CHECKING:
    from crashd.api.services import Services

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
GROUP_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 4096)


class Metrics:
    """The instruments observed on the hot paths (unregistered: the collector yields
    them, so each server's registry holds its own)."""

    def __init__(self, environment: str = "sandbox") -> None:
        env = ("environment",)
        self._tick_lateness = Histogram(
            "crashd_tick_lateness_seconds",
            "How late the engine woke for each multiplier tick (wake time - deadline)",
            env,
            buckets=(0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
            registry=None,
        )
        self._cashout_answer = Histogram(
            "crashd_cashout_answer_seconds",
            "From a cash-out request reaching the game to its definitive answer "
            "(committed win or too late): REST, batch and feed orders",
            env,
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._commit_seconds = Histogram(
            "crashd_ledger_commit_seconds",
            "Duration of one ledger group commit (plan, flush, fsync)",
            env,
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self._commit_ops = Histogram(
            "crashd_ledger_group_ops",
            "Ops committed together in one ledger group commit",
            env,
            buckets=GROUP_BUCKETS,
            registry=None,
        )
        self._requests = Counter(
            "crashd_http_requests",
            "HTTP requests answered, by route rule, method and status",
            ("environment", "route", "method", "status"),
            registry=None,
        )
        self._request_seconds = Histogram(
            "crashd_http_request_duration_seconds",
            "HTTP request durations by route rule (middleware in to last byte out)",
            ("environment", "route"),
            buckets=LATENCY_BUCKETS,
            registry=None,
        )
        self.environment = environment
        # The children the hot paths observe (one label lookup, done here, once).
        self.tick_lateness = self._tick_lateness.labels(environment)
        self.cashout_answer = self._cashout_answer.labels(environment)
        self.commit_seconds = self._commit_seconds.labels(environment)
        self.commit_ops = self._commit_ops.labels(environment)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        env = self.environment
        self._requests.labels(env, route, method, str(status)).inc()
        self._request_seconds.labels(env, route).observe(seconds)

    def observe_commit(self, seconds: float, ops: int) -> None:
        self.commit_seconds.observe(seconds)
        self.commit_ops.observe(ops)

    def instruments(self) -> tuple[Counter | Histogram, ...]:
        return (
            self._tick_lateness,
            self._cashout_answer,
            self._commit_seconds,
            self._commit_ops,
            self._requests,
            self._request_seconds,
        )


def _gauge(name: str, doc: str, value: float, env: str) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["environment"])
    g.add_metric([env], value)
    return g


def _counter(name: str, doc: str, value: float, env: str) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=["environment"])
    c.add_metric([env], value)
    return c


class CrashdCollector(Collector):
    """Everything else, read from the parts' own statistics when Prometheus scrapes."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        services = self.services
        env = services.config.environment
        info = InfoMetricFamily("crashd_build", "The running crashd", labels=["environment"])
        info.add_metric([env], {"version": __version__, "python": platform.python_version()})
        yield info
        for instrument in services.metrics.instruments():
            yield from instrument.collect()
        rt = services.game
        yield _gauge("crashd_engine_up", "1 while the engine runs", 0 if rt is None else 1, env)
        idem = services.idempotency
        yield _counter(
            "crashd_idempotent_replays",
            "Requests answered from a stored reply (same Idempotency-Key)",
            idem.replays,
            env,
        )
        limited = CounterMetricFamily(
            "crashd_rate_limited",
            "Requests refused with 429 rate_limited, by policy",
            labels=["environment", "policy"],
        )
        for policy, n in sorted(services.rate_limited.items()):
            limited.add_metric([env, policy], n)
        yield limited
        yield from self._engine(env)
        yield from self._ledger(env)
        yield from self._feed(env)
        ops = services.ops
        if ops is not None:
            yield from ops.collect(env)
        chains = services.chains
        if chains is not None:
            yield _gauge(
                "crashd_chain_games_left",
                "Unplayed games in the current hash chain and the ready ones after it",
                chains.games_left(),
                env,
            )
            yield _gauge(
                "crashd_chain_current",
                "Number of the chain being played",
                chains.current.number,
                env,
            )
            yield _gauge(
                "crashd_chain_low",
                "1 while fewer than chain_warn_games are left (publish the next chain)",
                int(chains.games_left() < chains.warn_games),
                env,
            )

    def _engine(self, env: str) -> Iterator[Metric]:
        rt = self.services.game
        if rt is None:
            return
        engine = rt.game.engine
        st = engine.statistics()
        yield _counter("crashd_engine_ticks", "Multiplier ticks published", st.ticks, env)
        yield _counter("crashd_engine_commands", "Engine commands handled", st.commands, env)
        yield _counter("crashd_engine_events", "Engine events published", st.events, env)
        yield _gauge(
            "crashd_engine_max_tick_lateness_seconds",
            "Worst tick lateness since start",
            st.max_tick_lateness_s,
            env,
        )
        yield _gauge(
            "crashd_engine_paused",
            "1 while the operator has paused the game",
            int(engine.paused),
            env,
        )
        yield _gauge(
            "crashd_engine_overdue_seconds",
            "How far past its timer the engine loop is",
            engine.overdue_s(),
            env,
        )
        if engine.finished:
            return
        snap = engine.last_snapshot()
        yield _gauge("crashd_round_id", "The live round's id", snap.round_id, env)
        phase = GaugeMetricFamily(
            "crashd_round_phase", "1 for the live round's phase", labels=["environment", "phase"]
        )
        for name in ("betting", "running", "crashed", "voided"):
            phase.add_metric([env, name], 1 if snap.status == name else 0)
        yield phase
        yield _gauge("crashd_round_bets", "Bets in the live round", snap.participant_count, env)
        yield _gauge("crashd_round_stake", "Stakes in the live round", snap.total_stake, env)
        yield _gauge(
            "crashd_round_payout", "Paid out so far in the live round", snap.total_payout, env
        )
        yield _gauge(
            "crashd_round_next_bets", "Bets waiting for the next round", snap.next_round_bets, env
        )

    def _ledger(self, env: str) -> Iterator[Metric]:
        rt = self.services.game
        if rt is None:
            return
        st = rt.game.ledger.statistics()
        yield _gauge("crashd_ledger_queued_ops", "Ops waiting for a commit", st.queued, env)
        yield _counter("crashd_ledger_groups", "Group commits", st.groups, env)
        yield _counter("crashd_ledger_ops", "Ops committed", st.ops, env)
        yield _gauge(
            "crashd_ledger_largest_group_ops", "Largest group commit so far", st.largest_group, env
        )
        yield _gauge(
            "crashd_ledger_failed", "1 once the writer stopped on an error", int(st.failed), env
        )

    def _feed(self, env: str) -> Iterator[Metric]:
        services = self.services
        hub, server = services.hub, services.feed_server
        if hub is not None:
            hs = hub.statistics()
            yield _gauge(
                "crashd_feed_subscribers",
                "Feed subscribers (connections past auth)",
                hs.subscribers,
                env,
            )
            yield _gauge(
                "crashd_feed_backlogged",
                "Subscribers with frames waiting in their outbox",
                hs.backlogged,
                env,
            )
            yield _counter(
                "crashd_feed_resyncs", "Snapshot resyncs sent to slow subscribers", hs.resyncs, env
            )
            yield _counter(
                "crashd_feed_published", "Messages published on the hub", hs.published, env
            )
            yield _gauge(
                "crashd_feed_replay_frames",
                "Frames held in the replay buffer",
                hs.replay_frames,
                env,
            )
        if server is not None:
            fs = server.statistics()
            yield _gauge("crashd_feed_connections", "Open feed connections", fs.connections, env)
            closes = CounterMetricFamily(
                "crashd_feed_closes",
                "Feed connections closed by the server, by close code (4009: slow "
                "consumer dropped, 4008: heartbeat timeout, 4001: credential)",
                labels=["environment", "code"],
            )
            for code, n in sorted(fs.closes.items()):
                closes.add_metric([env, str(code)], n)
            yield closes
            yield _counter(
                "crashd_feed_failures", "Feed connections ended by an error", fs.failures, env
            )


def render(services: Services) -> bytes:
    """The exposition: one registry per scrape, holding this server's collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CrashdCollector(services))
    return generate_latest(registry)


__all__ = ["CONTENT_TYPE", "CrashdCollector", "Metrics", "render"]

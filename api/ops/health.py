"""``/healthz`` (the process answers) and ``/readyz`` (it can take bets now).

Ready means all of:

* **engine**: running, its loop not overdue (it wakes for every deadline: a loop more
  than ``MAX_OVERDUE_S`` past its timer is stuck), and its recent ticks on time (the
  worst of the last ``RECENT_TICKS``, of those in the last ``RECENT_TICKS_S``, under
  ``MAX_TICK_LATENESS_S``: a paused game ticks no more, and one late tick of the round
  before the pause must not keep it out of rotation for the whole pause);
* **ledger**: its writer has not stopped on an error, and it commits: ops waiting
  while the last commit is older than ``MAX_COMMIT_AGE_S`` means it is stuck;
* **feed**: its listener accepts a TCP connection (a real connect to its port, from
  here);
* **bankroll** (production, bankroll mode): the house bankroll is funded, else every
  round's cap is 0 and each bet is cashed out at 1.00x.

A process without the engine (``crashd api``: ``Services.commands`` is set) has neither
the engine nor the ledger's writer nor a feed listener of its own; it is ready when:

* **engine**: the engine's state has reached it (its keyframes through Redis), and
  its newest keyframe is at most ``STALE_AFTER_S`` old (``crashd.engine.bounds``: the
  engine sends one at least every ``KEYFRAME_EVERY_S``) — else Redis or the engine is
  away and what it would serve is stale;
* **ledger**: its read connection to the database is open.

Not ready answers 503 with every failed check and its reason, so a load balancer stops
sending players here and the operator reads why. A paused game is ready (the operator
chose it; the body says ``paused``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from crashd.api.services import Services

MAX_OVERDUE_S = 1.0
RECENT_TICKS = 100
RECENT_TICKS_S = 10.0
MAX_TICK_LATENESS_S = 0.25
MAX_COMMIT_AGE_S = 5.0
FEED_CONNECT_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    reason: str = ""


def engine_check(services: Services) -> Check:
    rt = services.game
    if rt is None:
        return Check("engine", False, "the engine is not running")
    engine = rt.game.engine
    if engine.finished:
        return Check("engine", False, "the engine has stopped")
    overdue = engine.overdue_s()
    if overdue > MAX_OVERDUE_S:
        return Check("engine", False, f"the engine loop is {overdue:.1f} s past its timer")
    # The newest ticks first, at most RECENT_TICKS of them, none older than
    # RECENT_TICKS_S: a paused game runs no ticks, and its last round's are stale.
    since = trio.current_time() - RECENT_TICKS_S
    counted = 0
    worst = 0.0
    for at, late in zip(reversed(engine.tick_times), reversed(engine.tick_lateness), strict=True):
        if counted == RECENT_TICKS or at < since:
            break
        counted += 1
        worst = max(worst, late)
    if worst > MAX_TICK_LATENESS_S:
        return Check(
            "engine",
            False,
            f"ticks are late: {worst * 1000:.0f} ms in the last {counted} "
            f"(limit {MAX_TICK_LATENESS_S * 1000:.0f} ms)",
        )
    return Check("engine", True)


def ledger_check(services: Services) -> Check:
    rt = services.game
    if rt is None:
        return Check("ledger", False, "the ledger is not open")
    st = rt.game.ledger.statistics()
    if st.failed:
        return Check("ledger", False, "the ledger writer stopped on an error")
    if st.queued:
        since = trio.current_time() - (st.last_commit_at or services.started_trio)
        if since > MAX_COMMIT_AGE_S:
            return Check(
                "ledger", False, f"{st.queued} ops waiting; the last commit was {since:.1f} s ago"
            )
    return Check("ledger", True)


async def feed_check(services: Services) -> Check:
    if services.feed_port is None:
        return Check("feed", False, "the feed is not listening")
    host = services.config.host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1" if host != "::" else "::1"
    try:
        with trio.fail_after(FEED_CONNECT_TIMEOUT_S):
            stream = await trio.open_tcp_stream(host, services.feed_port)
            await stream.aclose()
    except (OSError, trio.TooSlowError) as exc:
        return Check("feed", False, f"the feed does not accept connections: {exc}")
    return Check("feed", True)


def bankroll_check(services: Services) -> Check | None:
    ops = services.ops
    if ops is None:
        return None
    return ops.bankroll_check()


def remote_checks(services: Services) -> list[Check]:
    """An API process's checks (see the module docstring)."""
    from crashd.api.rest.problems import Problem

    engine = Check("engine", True)
    if services.live is None:
        engine = Check("engine", False, "no state from the engine")
    else:
        try:
            services.live.rest_body()
        except Problem as problem:
            engine = Check("engine", False, problem.detail)
    ledger = Check("ledger", True)
    if services.reads is None:
        ledger = Check("ledger", False, "the database is not open for reads")
    return [engine, ledger]


async def readiness(services: Services) -> tuple[bool, dict[str, Any]]:
    if services.game is None and services.commands is not None:
        checks = remote_checks(services)
    else:
        checks = [engine_check(services), ledger_check(services), await feed_check(services)]
    bankroll = bankroll_check(services)
    if bankroll is not None:
        checks.append(bankroll)
    ready = all(c.ok for c in checks)
    rt = services.game
    body: dict[str, Any] = {
        "status": "ready" if ready else "not_ready",
        "checks": {c.name: ("ok" if c.ok else c.reason) for c in checks},
        "paused": bool(rt is not None and rt.game.engine.paused),
    }
    if not ready:
        body["reasons"] = [f"{c.name}: {c.reason}" for c in checks if not c.ok]
    return ready, body


__all__ = ["Check", "readiness"]

"""``python -m bench game``: players betting, watching and cashing out, on one core.

A real ``crashd serve`` (``crashd.api.server.run_blocking``: engine, ledger, feed, Hypercorn,
GC tuning) runs in a child process on 127.0.0.1, pinned to one core; the players run in
this process, pinned to the other. The only addition to the served app is the bench-only
``GET /bench/hello`` route (as in ``python -m bench api``): the framework's floor, measured
in the same run, so figures are reported beside it as ratios.

Every one of ``--players`` players (default 2,500) is, as a partner's integration would
make it:

* **a feed subscriber** at the server's 20 Hz: one WebSocket to the feed listener (the
  ``ws_url`` its token names), authenticated with its own feed token, subscribed to
  ``live_multiplier``, ``round_updates`` and its own ``user:{partner}:{user}`` channel
  (which carries the server's instant of each of its cash-outs). The generator is a thin
  client on raw sockets: one ``epoll`` for every connection, read by one Trio task (no
  task, no wsproto per connection), frames parsed by hand, and each distinct frame
  decoded once (every subscriber gets the same bytes). Thousands of connections on one
  Python core is the hard part, so the generator's own CPU share is measured: at ≥ 90%
  the feed figures say more about the generator than the server;
* **a bettor** every round (``--rounds``, default 5), through one of the server's three
  ways to place a bet, mixed by ``--mix`` (default a third each): the one-shot
  ``POST /api/v1/bets`` (signed, its own Idempotency-Key); the batch
  ``POST /api/v1/bets/batch`` (a partner server gathering its players' bets every
  ``--batch-ms``, ≤ 100 items per request, each item its own key; the request signed,
  with a key of its own); or ``bet`` orders on the player's own feed connection, which
  then holds a user-scoped token (``POST /api/v1/feed/user-token``). A server without
  feed orders (that route answering 404) gets those players over REST, with a printed
  skip line. Bets are sent at random instants over the first ``--spread`` of the
  betting window;
* half the players **cash out by hand**, at a random multiplier each round: when the
  player's own view (the ticks its connection received) reaches the target, its cash-out
  goes out — ``POST /api/v1/bets/{ticket_id}/cashout`` (signed, from a pool of
  ``--cashout-connections``), or a ``cashout`` order for a player betting over the feed;
  a third of them also set a high auto-cashout as a safety net. The other half
  **auto-cash-out** at mixed targets.

Reported: bets/s (answered bets over the time bets were in flight) and what the players
offered; the share of bets placed during betting that made their round (a bet the server
answers ``queued: true`` missed it); cash-out answer latency (send → answer) p50/p99,
REST and feed orders apart; the pricing lag (the server's decision instant — the round's
``started_at_ms`` plus the cash-out's ``elapsed_ms`` from the user channel — minus the
client's send instant, one clock; both server instants are whole ms and the server's
epoch offset is floored, so it is good to about ±2 ms); feed lateness (receive time − the tick's ``at_ms``); tick lateness from the feed
(the tick's ``elapsed_ms`` against the documented grid ``k·1000/tick_hz``, whole ms); the
server process's CPU share and RSS (``/proc``); the generator's CPU share; the hello
route's req/s (idle) and latency (probed during the rounds); and, from the server's own
``/metrics`` read before and after the measured rounds, its histograms of ledger group
commits (duration and size), cash-out answers and tick lateness over those rounds (a
quantile known to its bucket: each figure is that bucket's upper bound).

At the end it checks, from outside: every acknowledged bet settled exactly once at the
multiplier the rules give (an auto target ``A`` pays exactly ``A`` iff ``A`` ≤ the crash
point; a manual cash-out pays what its answer said, below the crash point; every other
bet lost; a bet queued for a round never played is refunded), from ``GET /user/bets`` and
``GET /game/rounds/{id}`` (whose crash points are recomputed from the revealed hashes),
with at most one settlement per ticket on its user channel; money is conserved (every
balance = funding − stakes + payouts, each round's totals = its bets'); and, after the
server stopped, ``crashd db check`` on its ledger (integrity and audit). Any failure is
a failed check and a non-zero exit.

``--wallet mock`` plays the same game in **seamless mode** too: the partner's players'
money lives in a real mock wallet (``crashd wallet mock``, a child process on the players'
core, answering every call after ``--wallet-latency-ms``, default 5 and 50 ms, one run
each), so every bet is a signed debit the server waits for before the bet may play, and
every win (0 for a loss) a credit through its outbox. The transfer-wallet run comes first,
in the same invocation, as the peer: bets/s and cash-out latency per latency, as ratios to
it. Each run's checks hold as in transfer mode (settlement, money: the balances read from
the wallet once the outbox drained, ``crashd db check``) and the mock recorded no contract
violation. Every bet is also reconciled with the wallet's own record (``GET
/admin/transactions``): an acknowledged bet must have a debit the wallet applied, closed
by exactly one credit or rollback (a bet played without a debit is a money bug); a
refused one must leave nothing debited. Refusals are told apart: before any debit (no
``ticket_id`` in the answer: the engine's own refusals), a debit that never reached the
wallet before betting closed (``wallet_timeout``: crashd's deadline, the close, ran out
while it waited for a connection or the wallet — the wallet has no debit record for it,
only crashd's rollback of a transaction it never saw), and a debit applied then rolled
back (its answer came after the close, or the round closed before the engine took it).

The chain's salt is chosen so that the rounds played crash within ``--crash-range``
(default 1.30x–6.00x: rounds of 5–30 s) — real games and the real formula, as the test
suite's short-round chain does; ``--natural`` takes a random salt. ``--quick`` (CI): 20
players, 2 rounds of 0.6 s betting crashing in 1.05x–1.35x; every check, no speed.
"""

from __future__ import annotations

import argparse
import array
import contextlib
import hashlib
import json
import math
import os
import random
import re
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from base64 import b64encode
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import trio

from bench import scrape
from bench.api import HttpError, RawConnection
from bench.child import HELLO_PATH, await_ready, child_env, serve_with_hello
from bench.suite import Context, Progress, Row, Skip, clamp, percentile, ratio

NAME = "game"
T_BETS = "Game: bets from every player, every round"
T_CASHOUT = "Game: manual cash-outs (send → answer), beside the hello route under the same load"
T_FEED = "Game: the feed every player watches"
T_SERVER = "Game: the server process and the load generator"
T_INSIDE = (
    "Game: the server's own histograms over the measured rounds (`/metrics`; a quantile is "
    "known to its bucket: each figure is the bucket's upper bound)"
)
T_FLOOR = "Game: the framework's floor (hello route, idle server)"
T_WALLET = (
    "Game: seamless mode (every bet a debit of a mock wallet, every win a credit through the "
    "outbox), beside the transfer wallet in the same run"
)
WALLET_SECRET = "bench-mock-wallet-secret-0123456789"
API = "/api/v1"
PARTNER = "bench"
SCOPES = "read:game_state,read:balance,write:bet"
CHANNELS = ("rest", "batch", "feed")
"""Ways to place a bet: one-shot POST /bets, POST /bets/batch, orders on the feed."""
FUNDING = 1_000_000
"""Each player's faucet credit (the faucet's largest)."""
MAX_BATCH = 100
GENEROUS_RATE_LIMITS = {
    "rate_limit_read": 10**7,
    "rate_limit_write": 10**7,
    "rate_limit_feed": 10**7,
    "rate_limit_anonymous": 10**7,
}
CLIENT_BOUND_SHARE = 0.9
"""Generator CPU share at or above which the feed figures are flagged client-bound."""
PRICED_TOLERANCE_MS = 3.0
"""Slack for ``send ≤ decision ≤ answer`` (whole-ms instants, epoch offset floored)."""


# =========================================================================== pure parts
# -- WebSocket frames (client side) ------------------------------------------------------


def client_frame(payload: bytes, opcode: int = 0x1, mask: bytes | None = None) -> bytes:
    """One masked client frame (RFC 6455 §5.3: every client frame is masked)."""
    key = mask if mask is not None else os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    body = bytes(b ^ key[i & 3] for i, b in enumerate(payload))
    return head + key + body


def parse_frames(buf: bytes) -> tuple[list[tuple[int, bytes]], int]:
    """Complete server frames at the start of ``buf`` as (opcode, payload), and how many
    bytes they took. Server frames are unmasked; the feed sends each message in one
    frame (a continuation frame is returned as opcode 0 for the caller to refuse)."""
    out: list[tuple[int, bytes]] = []
    i, n = 0, len(buf)
    while n - i >= 2:
        length = buf[i + 1] & 0x7F
        if length < 126:
            start = i + 2
        elif length == 126:
            if n - i < 4:
                break
            length = int.from_bytes(buf[i + 2 : i + 4], "big")
            start = i + 4
        else:
            if n - i < 10:
                break
            length = int.from_bytes(buf[i + 2 : i + 10], "big")
            start = i + 10
        if buf[i + 1] & 0x80:  # a masked server frame is a protocol error: skip its key
            start += 4
        end = start + length
        if end > n:
            break
        out.append((buf[i] & 0x0F, buf[start:end]))
        i = end
    return out, i


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer to ``key``."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return b64encode(digest).decode()


def tick_grid_lateness(elapsed_ms: int, tick_hz: int) -> int:
    """How late (whole ms) a tick reported at ``elapsed_ms`` is against the documented
    grid ``k * 1000 // tick_hz`` (docs/round-engine.md): the last grid instant at or
    before it."""
    k = elapsed_ms * tick_hz // 1000
    while (k + 1) * 1000 // tick_hz <= elapsed_ms:
        k += 1
    while k > 0 and k * 1000 // tick_hz > elapsed_ms:
        k -= 1
    return elapsed_ms - k * 1000 // tick_hz


# -- distributions -----------------------------------------------------------------------


class Histogram:
    """Non-negative milliseconds in 0.1 ms bins up to ``top_ms`` (beyond: the last bin,
    and the true maximum kept): constant cost per sample, for millions of samples."""

    def __init__(self, top_ms: float = 10_000.0, per_ms: int = 10) -> None:
        self.per_ms = per_ms
        self.last = int(top_ms * per_ms)
        self.bins = array.array("q", bytes(8 * (self.last + 1)))
        self.count = 0
        self.negative = 0
        self.max = float("-inf")
        self.min = float("inf")

    def add(self, ms: float) -> None:
        self.count += 1
        if ms > self.max:
            self.max = ms
        if ms < self.min:
            self.min = ms
        if ms < 0:
            self.negative += 1
            ms = 0.0
        b = int(ms * self.per_ms)
        self.bins[b if b < self.last else self.last] += 1

    def percentile(self, p: float) -> float:
        """Nearest-rank, as ``bench.suite.percentile``: the bin's upper edge (the max
        when it is the top bin)."""
        if not self.count:
            return float("nan")
        rank = min(self.count - 1, max(0, round(p / 100 * (self.count - 1))))
        seen = 0
        for b, n in enumerate(self.bins):
            seen += n
            if seen > rank:
                return self.max if b == self.last else min(self.max, (b + 1) / self.per_ms)
        return self.max

    def samples(self, limit: int = 2_000) -> list[float]:
        """An evenly thinned sorted sample (bin midpoints), for plots."""
        if not self.count:
            return []
        step = max(1, self.count // limit)
        out: list[float] = []
        seen = 0
        for b, n in enumerate(self.bins):
            if not n:
                continue
            first = (-seen) % step
            out += [(b + 0.5) / self.per_ms] * len(range(first, n, step))
            seen += n
        return out[:limit]


# -- the players' plan -------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """``rest=1,batch=1,feed=1`` -> weights per channel (unknown names refused)."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in CHANNELS:
            raise ValueError(f"unknown bet channel {name!r}: choose from {', '.join(CHANNELS)}")
        weight = float(value) if value else 1.0
        if weight < 0 or not math.isfinite(weight):
            raise ValueError(f"channel {name}: weight must be a number >= 0")
        weights[name] = weight
    if not any(weights.values()):
        raise ValueError("the mix gives no channel a positive weight")
    return weights


def assign_channels(
    players: int, weights: dict[str, float], unavailable: Iterable[str] = ()
) -> list[str]:
    """Each player's bet channel: as close to the weights as whole players allow
    (largest remainders), the weights of unavailable channels shared by the others."""
    gone = set(unavailable)
    live = {k: v for k, v in weights.items() if k not in gone and v > 0}
    if not live:
        raise ValueError("every channel with a weight is unavailable")
    total = sum(live.values())
    exact = {k: players * v / total for k, v in live.items()}
    counts = {k: math.floor(x) for k, x in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[
        : players - sum(counts.values())
    ]:
        counts[k] += 1
    # Interleaved, so each channel's players are spread over the index range.
    out: list[str] = []
    given = dict.fromkeys(counts, 0)
    for i in range(players):
        k = max(
            counts, key=lambda k: (counts[k] * (i + 1) / players - given[k], -CHANNELS.index(k))
        )
        given[k] += 1
        out.append(k)
    return out


def log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    """A multiplier in hundredths, uniform in log between ``lo`` and ``hi``."""
    lo = max(101, lo)
    hi = max(lo, hi)
    return int(round(math.exp(rng.uniform(math.log(lo), math.log(hi)))))


@dataclass(frozen=True)
class Strategy:
    stake: int
    auto: int | None
    manual: int | None
    """The multiplier at which the player cashes out by hand (``None``: it does not)."""


def strategy(rng: random.Random, manual_player: bool, crash_range: tuple[int, int]) -> Strategy:
    """One round's bet: half the players cash out by hand at a random multiplier (a third
    of those with a high auto-cashout as a safety net); the others auto-cash-out at mixed
    targets (log-uniform across and beyond the crash range, a quarter at two popular
    values, so many cash-outs fall on one instant)."""
    lo, hi = crash_range
    stake = rng.randint(1, 1000)
    if manual_player:
        manual = log_uniform(rng, 102, int(hi * 1.1))
        auto = log_uniform(rng, manual + 1, int(hi * 1.5)) if rng.random() < 1 / 3 else None
        return Strategy(stake, auto, manual)
    if rng.random() < 0.25:
        popular = (lo + (hi - lo) // 4, lo + (hi - lo) // 2)
        return Strategy(stake, max(101, rng.choice(popular)), None)
    return Strategy(stake, log_uniform(rng, 101, int(hi * 1.3)), None)


# -- what the client knows of its bets, and what the server says -------------------------


@dataclass
class CashoutAnswer:
    status: str
    """``cashed_out``, ``too_late``, another problem code, or ``unknown`` (no answer)."""
    multiplier: int | None = None
    payout: int | None = None
    crash_point: int | None = None


@dataclass
class Bet:
    """One bet as its player knows it: what it sent and what it was answered."""

    user: str
    key: str
    channel: str
    stake: int
    auto: int | None
    manual: int | None
    round_planned: int
    """The round that was betting when the player decided to bet."""
    planned_at: float = math.nan
    """Wall clock (s) at which the player meant to bet."""
    closes_at: float = math.nan
    """Wall clock (s) at which that round's betting closes (from ``betting_opened``)."""
    sent_at: float = math.nan
    answered_at: float = math.nan
    status: int = 0
    code: str = ""
    ticket: str = ""
    refused_ticket: str = ""
    """A refusal's ``ticket_id`` (seamless: the bet's debit was recorded before it was
    refused; a refusal without one came before any debit)."""
    round_id: int = 0
    queued: bool = False
    attempts: int = 0
    # the manual cash-out
    trigger_at: float = math.nan
    trigger_multiplier: int = 0
    cash_sent_at: float = math.nan
    cash_answered_at: float = math.nan
    cash_attempts: int = 0
    cash: CashoutAnswer | None = None
    decision_ms: float = math.nan
    """The server's instant (epoch ms) of its manual cash-out: the round's
    ``started_at_ms`` plus the ``elapsed_ms`` of its ``cashed_out`` on the user channel."""

    @property
    def acknowledged(self) -> bool:
        return self.status == 201 and bool(self.ticket)


@dataclass(frozen=True)
class ServerBet:
    """An item of ``GET /api/v1/user/bets`` (or ``GET /bets/{ticket}``)."""

    ticket: str
    user: str
    round_id: int | None
    stake: int
    auto: int | None
    status: str
    multiplier: int | None
    payout: int | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ServerBet:
        return cls(
            str(d["ticket_id"]),
            str(d["user_id"]),
            d.get("round_id"),
            int(d["stake"]),
            d.get("auto_cashout"),
            str(d["status"]),
            d.get("multiplier"),
            d.get("payout"),
        )


@dataclass(frozen=True)
class RoundResult:
    """``GET /api/v1/game/rounds/{id}``."""

    round_id: int
    status: str
    crash_point: int | None
    bets: int
    total_stake: int
    total_payout: int
    started_at_ms: int | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RoundResult:
        return cls(
            int(d["round_id"]),
            str(d["status"]),
            d.get("crash_point"),
            int(d.get("bets", 0)),
            int(d.get("total_stake", 0)),
            int(d.get("total_payout", 0)),
            iso_to_ms(d.get("started_at")),
        )


@dataclass(frozen=True)
class Settlement:
    """A settlement message of a ticket on its user's channel."""

    type: str
    """``cashed_out``, ``bet_lost`` or ``bet_refunded``."""
    multiplier: int | None = None
    payout: int | None = None
    elapsed_ms: int | None = None
    kind: str | None = None


@dataclass
class Verdict:
    problems: list[str] = field(default_factory=list)
    won: int = 0
    lost: int = 0
    refunded: int = 0
    manual_won: int = 0
    auto_won: int = 0
    too_late: int = 0
    checked: int = 0

    def problem(self, text: str) -> None:
        self.problems.append(text)


def expected_outcome(bet: Bet, crash: int) -> tuple[str, int | None]:
    """What the rules give a bet of a round that crashed at ``crash`` (docs/round-engine.md):
    a manual cash-out answered ``cashed_out`` at ``M`` wins ``M`` (the answer to a bet its
    auto target already won repeats that win); otherwise an auto target ``A`` wins
    exactly ``A`` iff ``A <= crash``; every other bet is lost."""
    if bet.cash is not None and bet.cash.status == "cashed_out" and bet.cash.multiplier:
        return "cashed_out", bet.cash.multiplier
    if bet.auto is not None and bet.auto <= crash:
        return "cashed_out", bet.auto
    return "lost", None


def verify_settlement(
    bets: Sequence[Bet],
    server_bets: Sequence[ServerBet],
    rounds: dict[int, RoundResult],
    *,
    balances: dict[str, int] | None = None,
    funded: dict[str, int] | None = None,
    settlements: dict[str, list[Settlement]] | None = None,
    watched: set[str] | None = None,
    users: Iterable[str] | None = None,
) -> Verdict:
    """Check every acknowledged bet against the server's record and the rules, from the
    outside. ``server_bets`` is what the server lists for the players (every bet of
    theirs, so a bet nobody acknowledged, or one listed twice, is found);
    ``rounds`` the finished rounds by id; ``balances``/``funded`` (posted balance and
    credits per user) check money; ``settlements`` (ticket -> messages on its user
    channel) check that nothing was settled twice and, for the ``watched`` users (whose
    connection stayed open), that every bet of a played round was announced once."""
    v = Verdict()
    acked = [b for b in bets if b.acknowledged]
    by_ticket: dict[str, list[ServerBet]] = {}
    for s in server_bets:
        by_ticket.setdefault(s.ticket, []).append(s)
    mine = {b.ticket for b in acked}
    for ticket, listed in by_ticket.items():
        if len(listed) > 1:
            v.problem(f"{ticket}: listed {len(listed)} times by the server (settled twice?)")
        if ticket not in mine:
            v.problem(
                f"{ticket} (user {listed[0].user}): a bet the server holds that no answer "
                "acknowledged"
            )
    seen_tickets: set[str] = set()
    per_round: dict[int, list[ServerBet]] = {}
    for bet in acked:
        v.checked += 1
        if bet.ticket in seen_tickets:
            v.problem(f"{bet.ticket}: acknowledged twice (two answers named one ticket)")
            continue
        seen_tickets.add(bet.ticket)
        listed = by_ticket.get(bet.ticket, [])
        if not listed:
            v.problem(
                f"{bet.ticket} (user {bet.user}): acknowledged, but the server has no such bet"
            )
            continue
        s = listed[0]
        if s.round_id is not None:
            per_round.setdefault(s.round_id, []).append(s)
        where = f"{bet.ticket} (user {bet.user}, round {s.round_id})"
        if s.user != bet.user or s.stake != bet.stake or s.auto != bet.auto:
            v.problem(
                f"{where}: the server holds user {s.user} stake {s.stake} auto {s.auto}, "
                f"the player placed user {bet.user} stake {bet.stake} auto {bet.auto}"
            )
        if s.round_id != bet.round_id:
            v.problem(f"{where}: answered for round {bet.round_id}, recorded in {s.round_id}")
        rnd = rounds.get(s.round_id) if s.round_id is not None else None
        if settlements is not None:
            msgs = settlements.get(bet.ticket, [])
            played = rnd is not None and rnd.crash_point is not None
            if not msgs and played and watched is not None and bet.user in watched:
                v.problem(f"{where}: settled, but its user channel never said so")
            if len(msgs) > 1:
                v.problem(
                    f"{where}: settled {len(msgs)} times on its user channel "
                    f"({', '.join(m.type for m in msgs)})"
                )
            for said in msgs[:1]:
                kind = {"cashed_out": "cashed_out", "lost": "bet_lost", "refunded": "bet_refunded"}
                if s.status in kind and kind[s.status] != said.type:
                    v.problem(
                        f"{where}: the user channel said {said.type}, the bet says {s.status}"
                    )
                if said.type == "cashed_out" and said.multiplier != s.multiplier:
                    v.problem(
                        f"{where}: the user channel said {said.multiplier}, the bet {s.multiplier}"
                    )
        if rnd is None or rnd.status == "voided" or rnd.crash_point is None:
            # A round never played (a bet queued when the server stopped) or voided:
            # the stake comes back, once.
            if s.status != "refunded" or s.payout != s.stake:
                v.problem(
                    f"{where}: its round was "
                    + ("never played" if rnd is None else "voided")
                    + f", so it must be refunded; it is {s.status} paying {s.payout}"
                )
            else:
                v.refunded += 1
            continue
        crash = rnd.crash_point
        cash = bet.cash
        if cash is not None and cash.status == "cashed_out":
            m = cash.multiplier or 0
            if not (bet.auto is not None and m == bet.auto and bet.auto <= crash) and m >= crash:
                v.problem(f"{where}: manual cash-out at {m}, at or above the crash point {crash}")
            if bet.auto is not None and bet.auto < m:
                v.problem(f"{where}: cashed out by hand at {m} above its auto target {bet.auto}")
            if cash.payout != bet.stake * m // 100:
                v.problem(
                    f"{where}: answered payout {cash.payout}, the rules give {bet.stake * m // 100}"
                )
        if cash is not None and cash.status == "too_late":
            v.too_late += 1
            if cash.crash_point != crash:
                v.problem(f"{where}: too_late said crash {cash.crash_point}, the round {crash}")
            if bet.auto is not None and bet.auto <= crash:
                v.problem(f"{where}: too_late, but its auto target {bet.auto} <= crash {crash} won")
        outcome, multiplier = expected_outcome(bet, crash)
        if cash is not None and cash.status == "unknown" and s.status == "cashed_out":
            # The cash-out's answer was lost: it may have won by hand below the crash.
            if s.multiplier is not None and s.multiplier < crash and s.multiplier != bet.auto:
                outcome, multiplier = "cashed_out", s.multiplier
        payout = bet.stake * multiplier // 100 if multiplier is not None else 0
        if s.status != outcome or (outcome == "cashed_out" and s.multiplier != multiplier):
            v.problem(
                f"{where}: settled {s.status} at {s.multiplier}; the rules give {outcome}"
                + (f" at {multiplier}" if multiplier is not None else "")
                + f" (crash {crash}, auto {bet.auto}, manual "
                + (f"{cash.status} {cash.multiplier or ''}".strip() if cash else "none")
                + ")"
            )
            continue
        if (s.payout or 0) != payout:
            v.problem(f"{where}: paid {s.payout}, the rules give {payout}")
            continue
        if outcome == "cashed_out":
            v.won += 1
            if cash is not None and cash.status == "cashed_out" and cash.multiplier != bet.auto:
                v.manual_won += 1
            else:
                v.auto_won += 1
        else:
            v.lost += 1
    for round_id, listed in per_round.items():
        rnd = rounds.get(round_id)
        if rnd is None or rnd.crash_point is None:
            continue
        stake = sum(s.stake for s in listed)
        paid = sum(s.payout or 0 for s in listed)
        if (rnd.bets, rnd.total_stake, rnd.total_payout) != (len(listed), stake, paid):
            v.problem(
                f"round {round_id}: the round says {rnd.bets} bets, stake {rnd.total_stake}, "
                f"payout {rnd.total_payout}; its bets sum to {len(listed)}, {stake}, {paid}"
            )
    if balances is not None and funded is not None:
        expect = dict(funded)
        for s in server_bets:
            expect[s.user] = expect.get(s.user, 0) - s.stake + (s.payout or 0)
        names = set(users) if users is not None else set(expect) | set(balances)
        wrong = [u for u in sorted(names) if balances.get(u) != expect.get(u)]
        for u in wrong[:10]:
            v.problem(
                f"user {u}: balance {balances.get(u)}, but funding - stakes + payouts = "
                f"{expect.get(u)}"
            )
        if len(wrong) > 10:
            v.problem(f"... and {len(wrong) - 10} more users whose balance is off")
        total = sum(balances.get(u, 0) for u in names)
        owed = sum(expect.get(u, 0) for u in names)
        if total != owed:
            v.problem(f"money: balances sum to {total}, funding - stakes + payouts = {owed}")
    return v


@dataclass
class WalletReconciliation:
    """Every bet of a seamless run against the mock wallet's own transactions."""

    problems: list[str] = field(default_factory=list)
    played: int = 0
    """Acknowledged bets: a debit the wallet applied, closed by one credit (or rollback)."""
    refused_before_debit: dict[str, int] = field(default_factory=dict)
    """Refused before any debit was recorded or sent (by code): the wallet never heard."""
    refused_unsent: dict[str, int] = field(default_factory=dict)
    """Refused (``wallet_timeout``: crashd's deadline, the close of betting, ran out)
    with a debit the wallet never applied: it had not reached the wallet, and the
    rollback crashd sends for it is of a transaction the wallet never saw. By code."""
    refused_rolled_back: dict[str, int] = field(default_factory=dict)
    """Refused after the wallet applied the debit (its answer came too late, or the
    round closed before the engine took the bet): rolled back. By code."""

    def summary(self) -> str:
        def part(counts: dict[str, int], what: str) -> str:
            codes = ", ".join(f"{k} {n}" for k, n in sorted(counts.items()))
            return f"{sum(counts.values()):,} {what}" + (f" ({codes})" if codes else "")

        return (
            f"{self.played:,} played with a debit the wallet applied; refused: "
            + part(
                self.refused_unsent,
                "whose debit never reached the wallet before betting closed (no debit "
                "record there, only crashd's rollback of it)",
            )
            + ", "
            + part(self.refused_rolled_back, "debited then rolled back")
            + ", "
            + part(self.refused_before_debit, "refused before any debit")
        )


def reconcile_wallet(
    bets: Sequence[Bet], transactions: Sequence[dict[str, Any]]
) -> WalletReconciliation:
    """Each bet against the wallet's record (``GET /admin/transactions`` of ``crashd
    wallet mock``): an acknowledged bet must have a debit the wallet applied, closed by
    exactly one credit or rollback; a refused bet must leave nothing debited — its debit
    either never applied (it had not reached the wallet) or rolled back. A bet that
    played without a debit the wallet applied is a money bug, and said so."""
    from crashd.engine.wallet.contract import credit_id, debit_id, rollback_id

    by_id: dict[str, dict[str, Any]] = {}
    for tx in transactions:
        by_id.setdefault(str(tx.get("tx_id")), tx)

    def applied(tx_id: str) -> bool:
        tx = by_id.get(tx_id)
        return tx is not None and tx.get("status") == 200 and bool(tx.get("applied"))

    rec = WalletReconciliation()
    for bet in bets:
        if bet.acknowledged:
            debit = debit_id(bet.ticket)
            if not applied(debit):
                rec.problems.append(
                    f"{bet.ticket} (user {bet.user}): acknowledged, but the wallet has no "
                    "applied debit for it (a bet played without a debit)"
                )
                continue
            closings = [t for t in (credit_id(debit), rollback_id(debit)) if applied(t)]
            if len(closings) != 1:
                rec.problems.append(
                    f"{bet.ticket} (user {bet.user}): its debit is closed by "
                    f"{len(closings)} transactions at the wallet (one credit or rollback)"
                )
                continue
            rec.played += 1
        elif bet.status and bet.refused_ticket:
            debit = debit_id(bet.refused_ticket)
            code = bet.code or str(bet.status)
            if not applied(debit):
                rec.refused_unsent[code] = rec.refused_unsent.get(code, 0) + 1
            elif applied(rollback_id(debit)) and not applied(credit_id(debit)):
                rec.refused_rolled_back[code] = rec.refused_rolled_back.get(code, 0) + 1
            else:
                rec.problems.append(
                    f"{bet.refused_ticket} (user {bet.user}): refused {bet.code}, but the "
                    "wallet holds its debit (applied and never rolled back)"
                )
        elif bet.status:
            code = bet.code or str(bet.status)
            rec.refused_before_debit[code] = rec.refused_before_debit.get(code, 0) + 1
    return rec


def iso_to_ms(text: Any) -> int | None:
    """``2026-12-01T09:50:00.123Z`` -> Unix ms (the API's instants)."""
    if not isinstance(text, str):
        return None
    from datetime import datetime

    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


# -- the measured run, and its rows ------------------------------------------------------


@dataclass
class Floor:
    requests: int = 0
    failures: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else math.nan


@dataclass
class Result:
    """Everything one run measured and checked (what ``to_rows`` turns into rows)."""

    players: int
    rounds: int
    params: dict[str, Any]
    channels: dict[str, int]
    bets: list[Bet] = field(default_factory=list)
    measured_rounds: list[int] = field(default_factory=list)
    window_s: float = math.nan
    """Wall seconds from the first measured round's betting to the last one's crash."""
    feed_late: Histogram = field(default_factory=Histogram)
    tick_late_ms: list[float] = field(default_factory=list)
    """Per distinct tick: whole ms behind the documented grid (from its elapsed_ms)."""
    ticks_received: int = 0
    ticks_expected: int = 0
    messages: int = 0
    out_of_order: int = 0
    dropped: int = 0
    resyncs: int = 0
    close_codes: dict[int, int] = field(default_factory=dict)
    server_cpu_share: float = math.nan
    server_rss_mb: float = math.nan
    server_hwm_mb: float = math.nan
    generator_cpu_share: float = math.nan
    server_cpu_peak_share: float = math.nan
    generator_cpu_peak_share: float = math.nan
    loop_lag_p99_ms: float = math.nan
    hello_idle: Floor = field(default_factory=Floor)
    hello_load: Floor = field(default_factory=Floor)
    verdict: Verdict = field(default_factory=Verdict)
    db_problems: list[str] = field(default_factory=list)
    crash_points_ok: bool = True
    unsettled: int = 0
    lost_answers: int = 0
    wallet_latency_ms: float | None = None
    """Seamless mode: the mock wallet's added latency (``None``: the transfer wallet)."""
    wallet_violations: list[str] = field(default_factory=list)
    """What the mock wallet recorded as the server breaking the contract."""
    wallet: WalletReconciliation | None = None
    """Seamless mode: every bet against the mock wallet's transactions."""
    server_histograms: dict[str, scrape.Buckets] = field(default_factory=dict)
    """The server's own histograms (``/metrics``) over the measured rounds."""

    # -- derived figures
    def measured(self) -> list[Bet]:
        rounds = set(self.measured_rounds)
        return [b for b in self.bets if b.round_planned in rounds]

    def bets_per_s(self, bets: list[Bet]) -> tuple[float, float]:
        """(answered bets per second in flight, what the players offered per second)."""
        spans, offered = 0.0, 0.0
        by_round: dict[int, list[Bet]] = {}
        for b in bets:
            by_round.setdefault(b.round_planned, []).append(b)
        for bs in by_round.values():
            sent = [b.sent_at for b in bs if math.isfinite(b.sent_at)]
            answered = [b.answered_at for b in bs if math.isfinite(b.answered_at)]
            planned = [b.planned_at for b in bs if math.isfinite(b.planned_at)]
            if sent and answered:
                spans += max(answered) - min(sent)
            if planned:
                offered += max(planned) - min(planned)
        ok = sum(1 for b in bets if b.acknowledged)
        return (ok / spans if spans else math.nan, len(bets) / offered if offered else math.nan)


def in_window(b: Bet) -> bool | None:
    """Did a bet meant for the betting round make it (``None``: not meant during
    betting, or no answer)? Missed: answered ``queued: true`` or refused round_closed."""
    if not math.isfinite(b.planned_at) or b.planned_at >= b.closes_at:
        return None
    if b.acknowledged:
        return not b.queued and b.round_id == b.round_planned
    if b.code == "round_closed":
        return False
    return None


def bound_note(r: Result) -> str:
    """Whether the generator, not the server, may have set the feed's figures."""
    if r.generator_cpu_share >= CLIENT_BOUND_SHARE:
        return (
            f"client-bound: the generator's core was {r.generator_cpu_share:.0%} busy, so the "
            "feed figures say more about it than about the server"
        )
    if r.generator_cpu_peak_share >= CLIENT_BOUND_SHARE:
        return (
            f"the generator's core was {r.generator_cpu_peak_share:.0%} busy in its busiest "
            "second: lateness then is partly its own"
        )
    return ""


def to_rows(r: Result) -> list[Row]:
    """The run as suite rows (bench.suite.Row): one table per concern."""
    params = dict(r.params)
    bets = r.measured()
    rows: list[Row] = []
    hello_rate = r.hello_idle.rate

    def bet_metrics(bs: list[Bet]) -> dict[str, float]:
        rate, offered = r.bets_per_s(bs)
        judged = [x for x in (in_window(b) for b in bs) if x is not None]
        answers = [
            (b.answered_at - b.sent_at) * 1000
            for b in bs
            if math.isfinite(b.answered_at) and math.isfinite(b.sent_at)
        ]
        waits = [
            (b.sent_at - b.planned_at) * 1000
            for b in bs
            if math.isfinite(b.sent_at) and math.isfinite(b.planned_at)
        ]
        return {
            "bets_n": float(len(bs)),
            "accepted_n": float(sum(1 for b in bs if b.acknowledged)),
            "refused_n": float(sum(1 for b in bs if b.status and not b.acknowledged)),
            "bets_per_s": rate,
            "offered_per_s": offered,
            "in_window_share": (sum(judged) / len(judged)) if judged else math.nan,
            "answer_p50_ms": percentile(answers, 50),
            "answer_p99_ms": percentile(answers, 99),
            "client_wait_p99_ms": percentile(waits, 99),
        }

    v = r.verdict
    checks = {
        "every acknowledged bet settled exactly once at the multiplier the rules give": not v.problems,
        "money conserved: each balance = funding - stakes + payouts; round totals = their bets'": not any(
            p.startswith(("user ", "money", "round ", "... and")) for p in v.problems
        ),
        "crashd db check on the stopped server's ledger: integrity and audit pass": not r.db_problems,
        "every bet got an answer (after retries with its key)": r.lost_answers == 0,
        "every acknowledged bet settled before the end": r.unsettled == 0,
        "crash points recomputed from the revealed hashes": r.crash_points_ok,
    }
    refused: dict[str, int] = {}
    for b in bets:
        if b.status and not b.acknowledged:
            refused[b.code or str(b.status)] = refused.get(b.code or str(b.status), 0) + 1
    note = (
        "refused: " + ", ".join(f"{k} {n}" for k, n in sorted(refused.items())) if refused else ""
    )
    metrics = bet_metrics(bets)
    rows.append(
        Row(
            NAME,
            T_BETS,
            "bets",
            f"every channel ({r.players:,} players, {len(r.measured_rounds)} rounds)",
            metrics,
            {"× hello req/s": ratio(metrics["bets_per_s"], hello_rate)},
            params=params,
            checks=checks,
            headline=True,
            primary=[
                "bets_per_s",
                "offered_per_s",
                "in_window_share",
                "answer_p99_ms",
                "× hello req/s",
            ],
            note=note,
        )
    )
    labels = {
        "rest": "one-shot `POST /bets`",
        "batch": "`POST /bets/batch` (≤ 100 items)",
        "feed": "orders on the feed connection",
    }
    for channel in CHANNELS:
        mine = [b for b in bets if b.channel == channel]
        if not mine:
            continue
        m = bet_metrics(mine)
        rows.append(
            Row(
                NAME,
                T_BETS,
                f"bets/{channel}",
                labels[channel],
                m,
                {"× hello req/s": ratio(m["bets_per_s"], hello_rate)},
                params={**params, "channel": channel},
            )
        )
    hello_load_p50 = percentile(r.hello_load.latencies_ms, 50)
    cash_labels = {
        "rest": "`POST /bets/{ticket}/cashout` at the player's own multiplier",
        "feed": "a `cashout` order on the player's feed connection",
    }
    for channel in ("rest", "feed"):
        manual = [
            b
            for b in bets
            if (b.channel == "feed") == (channel == "feed")
            and math.isfinite(b.cash_sent_at)
            and math.isfinite(b.cash_answered_at)
        ]
        if not manual and channel == "feed":
            continue
        answer_ms = [(b.cash_answered_at - b.cash_sent_at) * 1000 for b in manual]
        waits = [
            (b.cash_sent_at - b.trigger_at) * 1000 for b in manual if math.isfinite(b.trigger_at)
        ]
        # Priced by hand, answered at the first attempt (a retry's send came after the
        # decision it replays), with the server's instant from the user channel.
        priced = [
            b
            for b in manual
            if math.isfinite(b.decision_ms)
            and b.cash_attempts == 1
            and b.cash is not None
            and b.cash.status == "cashed_out"
        ]
        lag = [b.decision_ms - b.cash_sent_at * 1000 for b in priced]
        in_flight = all(
            b.cash_sent_at * 1000 - PRICED_TOLERANCE_MS
            <= b.decision_ms
            <= b.cash_answered_at * 1000 + PRICED_TOLERANCE_MS
            for b in priced
        )
        rows.append(
            Row(
                NAME,
                T_CASHOUT,
                "cashout" if channel == "rest" else "cashout/feed",
                cash_labels[channel],
                {
                    "cashouts_n": float(len(manual)),
                    "won_n": float(
                        sum(1 for b in manual if b.cash and b.cash.status == "cashed_out")
                    ),
                    "too_late_n": float(
                        sum(1 for b in manual if b.cash and b.cash.status == "too_late")
                    ),
                    "answer_p50_ms": percentile(answer_ms, 50),
                    "answer_p99_ms": percentile(answer_ms, 99),
                    "pricing_lag_p50_ms": percentile(lag, 50),
                    "pricing_lag_p99_ms": percentile(lag, 99),
                    "client_wait_p99_ms": percentile(waits, 99),
                },
                {"× hello p50": ratio(percentile(answer_ms, 50), hello_load_p50)},
                params={**params, "channel": channel},
                checks={
                    f"manual cash-outs priced between send and answer (±{PRICED_TOLERANCE_MS:g} "
                    "ms, one clock)": in_flight
                },
                samples={"answer_ms": answer_ms, "pricing_lag_ms": lag},
                headline=True,
                primary=[
                    "answer_p50_ms",
                    "answer_p99_ms",
                    "pricing_lag_p50_ms",
                    "pricing_lag_p99_ms",
                    "× hello p50",
                ],
            )
        )
    rows.append(
        Row(
            NAME,
            T_CASHOUT,
            "hello/under-load",
            f"`GET {HELLO_PATH}` probed during the rounds (the framework's floor)",
            {
                "cashouts_n": float(len(r.hello_load.latencies_ms)),
                "answer_p50_ms": hello_load_p50,
                "answer_p99_ms": percentile(r.hello_load.latencies_ms, 99),
            },
            role="limit",
            params=params,
            samples={"answer_ms": list(r.hello_load.latencies_ms)},
            headline=True,
            primary=["answer_p50_ms", "answer_p99_ms"],
            note="cashouts n = probes sent",
        )
    )
    delivered = ratio(float(r.ticks_received), float(r.ticks_expected))
    bound = bound_note(r)
    rows.append(
        Row(
            NAME,
            T_FEED,
            "feed",
            f"{r.players:,} subscribers: live_multiplier + round_updates + own user channel",
            {
                "subscribers_n": float(r.players),
                "delivered_per_s": r.ticks_received / r.window_s if r.window_s else math.nan,
                "delivered_share": delivered,
                "feed_late_p50_ms": r.feed_late.percentile(50),
                "feed_late_p99_ms": r.feed_late.percentile(99),
                "feed_late_max_ms": r.feed_late.max if r.feed_late.count else math.nan,
                "tick_late_p99_ms": percentile(r.tick_late_ms, 99),
                "generator_cpu_share": r.generator_cpu_share,
                "generator_busiest_s_cpu_share": r.generator_cpu_peak_share,
            },
            params=params,
            checks={
                "every connection got its messages in seq order, none twice": r.out_of_order == 0,
                "no subscriber was dropped or closed by the server": r.dropped == 0,
            },
            samples={"feed_late_ms": r.feed_late.samples()},
            headline=True,
            primary=[
                "subscribers_n",
                "delivered_share",
                "feed_late_p99_ms",
                "tick_late_p99_ms",
                "generator_cpu_share",
            ],
            note="; ".join(
                filter(
                    None, [bound, f"{r.resyncs} resync snapshots (slow reader)" * bool(r.resyncs)]
                )
            ),
        )
    )
    rows.append(
        Row(
            NAME,
            T_SERVER,
            "server",
            "`crashd serve` (one core) and the players (the other core)",
            {
                "server_cpu_share": r.server_cpu_share,
                "server_busiest_s_cpu_share": r.server_cpu_peak_share,
                "server_rss_mb": r.server_rss_mb,
                "server_peak_rss_mb": r.server_hwm_mb,
                "generator_cpu_share": r.generator_cpu_share,
                "generator_busiest_s_cpu_share": r.generator_cpu_peak_share,
                "generator_loop_lag_p99_ms": r.loop_lag_p99_ms,
                "window_s": r.window_s,
            },
            params=params,
            headline=True,
            primary=["server_cpu_share", "server_rss_mb", "generator_cpu_share"],
            note=bound,
        )
    )
    rows.extend(inside_rows(r, params))
    rows.append(
        Row(
            NAME,
            T_FLOOR,
            "hello",
            f"`GET {HELLO_PATH}` (a bare route on the same app), before the players connect",
            {
                "req_per_s": hello_rate,
                "p50_ms": percentile(r.hello_idle.latencies_ms, 50),
                "p99_ms": percentile(r.hello_idle.latencies_ms, 99),
                "failures_n": float(r.hello_idle.failures),
            },
            role="limit",
            params=params,
            checks={"no hello request failed": r.hello_idle.failures == 0},
        )
    )
    return rows


INSIDE = (
    ("commit", "crashd_ledger_commit_seconds", "a ledger group commit (plan, flush, fsync)"),
    ("cashout", "crashd_cashout_answer_seconds", "a cash-out, reaching the game → its committed answer"),
    ("tick", "crashd_tick_lateness_seconds", "the engine's wake for a tick, past its deadline"),
)  # fmt: skip
"""The duration histograms read: row key, metric, what one observation is."""

GROUP_OPS = "crashd_ledger_group_ops"


def inside_rows(r: Result, params: dict[str, Any]) -> list[Row]:
    """One row per server histogram: how many, p50/p99 to their bucket's upper bound, the
    mean; the commit row also says how many ops a commit carried."""
    rows = []
    for key, metric, what in INSIDE:
        h = r.server_histograms.get(metric)
        if h is None:
            continue
        p50, p99 = scrape.quantile_bound(h, 0.50), scrape.quantile_bound(h, 0.99)
        metrics = {
            "observed_n": h.count,
            "p50_bucket_ms": p50 * 1000,
            "p99_bucket_ms": p99 * 1000,
            "mean_ms": h.total / h.count * 1000 if h.count else math.nan,
        }
        group = r.server_histograms.get(GROUP_OPS) if key == "commit" else None
        if group is not None:
            metrics["ops_per_commit_p99_bucket_n"] = scrape.quantile_bound(group, 0.99)
            metrics["ops_per_commit_mean"] = group.total / group.count if group.count else math.nan
        rows.append(
            Row(
                NAME,
                T_INSIDE,
                f"inside/{key}",
                what,
                metrics,
                params=params,
                headline=key in ("commit", "cashout"),
                primary=["p50_bucket_ms", "p99_bucket_ms", "mean_ms"],
                note="p99 past the last bucket" if math.isinf(p99) else "",
            )
        )
    return rows


# ========================================================================== the server


def _settings(directory: Path, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": 0,
        "feed_port": 0,
        "database": str(directory / "crashd.sqlite3"),
        "chain_file": str(directory / "crashd-chain.json"),
        "environment": "sandbox",
        "synchronous": args.synchronous,
        "log_level": args.log_level,
        "betting_ms": args.betting_ms,
        "pause_ms": args.pause_ms,
        "tick_hz": args.tick_hz,
        # A bet that misses its round is queued for the next, where its player bets
        # again: two bets per user and round (Aviator's setting) keep that legal.
        "max_bets_per_user": 2,
        "graceful_timeout": 2.0,
        "stop_wait_s": 0.0,
        **GENEROUS_RATE_LIMITS,
        **({"wallets_file": str(args.wallets_file)} if getattr(args, "wallets_file", None) else {}),
    }


def _config(directory: Path) -> Any:
    from crashd.api.config import Config

    settings = json.loads((directory / "settings.json").read_text())
    for name in ("database", "chain_file", "wallets_file"):
        if name in settings:
            settings[name] = Path(settings[name])
    return Config(**settings)


def serve_child(directory: Path) -> int:
    """The child: ``crashd serve``'s own code path, plus the bench-only hello route."""
    return serve_with_hello(_config(directory))


KNOWN_SALTS = {(10, 105, 135): "bench-game-8490720"}
"""Salts found once for this chain (``pick_salt``'s search, ~30 s for the quick run's
ten games in 1.05x-1.35x); checked again before use."""


def pick_salt(
    hashes: Sequence[str], lo: int, hi: int, *, limit: int = 50_000_000
) -> tuple[str, int]:
    """The first salt ``bench-game-N`` under which every game of ``hashes`` crashes in
    ``lo..hi`` (hundredths), and how many were tried (0: a known one)."""
    from crashd.engine.fairness import crash_point

    known = KNOWN_SALTS.get((len(hashes), lo, hi))
    if known is not None and all(lo <= crash_point(h, known) <= hi for h in hashes):
        return known, 0
    for attempt in range(limit):
        salt = f"bench-game-{attempt}"
        if all(lo <= crash_point(h, salt) <= hi for h in hashes):
            return salt, attempt + 1
    raise SystemExit(f"bench game: no salt in {limit:,} puts {len(hashes)} games in {lo}..{hi}")


def write_chain(path: Path, games: int, crash_range: tuple[int, int] | None) -> str:
    """A chain for the server; its salt chosen so its first ``games`` games crash in
    ``crash_range`` (``None``: a random salt). Returns a line saying which."""
    import secrets

    from crashd.engine.chainstore import ChainFile, save
    from crashd.engine.fairness import ChainReader, build_chain

    spec = build_chain(hashlib.sha256(b"crashd bench game").digest(), length=10_000, interval=100)
    if crash_range is None:
        save(path, ChainFile(spec=spec, salt=secrets.token_hex(32)))
        return "a random salt: crash points as they come"
    reader = ChainReader(spec)
    lo, hi = crash_range
    salt, tried = pick_salt([reader.game_hash(g) for g in range(1, games + 1)], lo, hi)
    save(path, ChainFile(spec=spec, salt=salt))
    return (
        f"salt {salt!r} ({f'{tried:,} tried' if tried else 'known'}): games 1-{games} crash in "
        f"{lo / 100:.2f}x-{hi / 100:.2f}x (real games, the real formula)"
    )


@dataclass
class Server:
    proc: subprocess.Popen[str]
    host: str
    port: int
    key: str
    signing_secret: str
    directory: Path
    metrics_key: str = ""
    """A key with ``admin:metrics`` only: the bench reads the server's own histograms."""

    def stat(self) -> tuple[float, float, float]:
        """(CPU seconds so far, RSS MB, peak RSS MB) from /proc."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        rss = hwm = math.nan
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
        return cpu, rss, hwm

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def start_server(directory: Path, args: argparse.Namespace, cpu: int | None) -> Server:
    from crashd.api.security.keys import KeyStore
    from crashd.api.wire import SCOPE_ADMIN_METRICS

    (directory / "settings.json").write_text(json.dumps(_settings(directory, args)))
    config = _config(directory)
    store = KeyStore(config.database)
    try:
        created = store.create("sandbox", SCOPES, partner_id=PARTNER, label="bench game")
        metrics = store.create(
            "sandbox", SCOPE_ADMIN_METRICS, partner_id=PARTNER, label="bench game metrics"
        )
    finally:
        store.close()

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        _raise_nofile()  # a descriptor per subscriber

    log = (directory / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", NAME, "--serve-child", str(directory)],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        cwd=directory,
        env=child_env(),
        preexec_fn=pin,
    )
    log.close()
    host, port = await_ready(proc, directory, NAME)
    return Server(
        proc,
        host,
        port,
        created.secret,
        getattr(created, "signing_secret", "") or "",
        directory,
        metrics.secret,
    )


def db_check(database: Path) -> list[str]:
    """``crashd db check --json`` on the stopped server's ledger (read-only): its problems."""
    out = subprocess.run(
        [sys.executable, "-m", "crashd.api", "db", "check", "--database", str(database), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    try:
        report = json.loads(out.stdout)
    except json.JSONDecodeError:
        return [f"crashd db check exited {out.returncode}: {out.stderr.strip()[-500:]}"]
    problems = [str(p) for p in report.get("problems", [])]
    if not report.get("ok", False) and not problems:
        problems.append(f"crashd db check: not ok (exit {out.returncode})")
    return problems


# ============================================================================ HTTP side


class Signer:
    """Request bytes for one server and key: every write signed (docs/security.md)."""

    def __init__(self, server: Server) -> None:
        self.host = f"{server.host}:{server.port}"
        self.key = server.key
        self.secret = server.signing_secret

    def get(self, path: str, auth: bool = True) -> bytes:
        lines = [f"GET {path} HTTP/1.1", f"Host: {self.host}"]
        if auth:
            lines.append(f"Authorization: Bearer {self.key}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def post(self, path: str, raw: bytes, idempotency_key: str | None) -> bytes:
        headers = {
            "Host": self.host,
            "Authorization": f"Bearer {self.key}",
            "Content-Type": "application/json",
            "Content-Length": str(len(raw)),
        }
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
            if self.secret:
                from crashd.api.security.signing import sign_request

                headers.update(
                    sign_request(self.secret, "POST", path, raw, idempotency_key, int(time.time()))
                )
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return head.encode() + b"\r\n" + raw


def dumps(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


class Http:
    """One keep-alive connection that reconnects, with the retries a partner makes: a
    transport failure, a 5xx or 409 ``idempotency_key_in_flight`` is asked again with
    the same Idempotency-Key, signed afresh (docs/sdk.md's policy). A connection idle
    for longer than the server keeps one (``keep_alive_timeout``, 5 s) is replaced
    before it is used, as a pooling client does, rather than found closed."""

    IDLE_S = 4.0

    def __init__(self, server: Server) -> None:
        self.server = server
        self.conn: RawConnection | None = None
        self.used = 0.0

    async def request(
        self, build: Callable[[], bytes], attempts: int = 6
    ) -> tuple[int, bytes, float, float, int]:
        """(status, body, sent at, answered at, attempts) — wall clock; the last answer
        when every attempt was a 5xx; status 0 when none came."""
        last: tuple[int, bytes, float, float, int] = (0, b"", math.nan, math.nan, attempts)
        for attempt in range(1, attempts + 1):
            reused = self.conn is not None
            try:
                if self.conn is not None and time.monotonic() - self.used > self.IDLE_S:
                    await self.aclose()
                    reused = False
                if self.conn is None:
                    self.conn = await RawConnection.open(self.server.host, self.server.port)
                data = build()
                sent = time.time()
                status, body = await self.conn.request(data)
                self.used = time.monotonic()
            except (HttpError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.aclose()
                if not (reused and attempt == 1):  # a reused socket closing: retry at once
                    await trio.sleep(min(1.0, 0.05 * 2**attempt))
                continue
            last = (status, body, sent, time.time(), attempt)
            if status >= 500 or (status == 409 and b"idempotency_key_in_flight" in body):
                await trio.sleep(min(1.0, 0.05 * 2**attempt))
                continue
            return last
        return last

    async def aclose(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await self.conn.aclose()
            self.conn = None


Job = Callable[[Http], Awaitable[None]]


class Pool:
    """``size`` keep-alive connections taking jobs in order (a partner server's pool)."""

    def __init__(self, server: Server, size: int) -> None:
        self.server = server
        self.size = size
        self.send, self.recv = trio.open_memory_channel[Job](math.inf)
        self.busy = 0
        self.idle = trio.Event()

    def submit(self, job: Job) -> None:
        self.busy += 1
        self.idle = trio.Event() if self.idle.is_set() else self.idle
        self.send.send_nowait(job)

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for _ in range(self.size):
                nursery.start_soon(self._worker)

    async def _worker(self) -> None:
        http = Http(self.server)
        try:
            async for job in self.recv:
                try:
                    await job(http)
                finally:
                    self.busy -= 1
                    if self.busy == 0:
                        self.idle.set()
        finally:
            await http.aclose()

    async def drained(self) -> None:
        while self.busy:
            await self.idle.wait()


# -- the ways to place a bet -------------------------------------------------------------


class OrderChannel(Protocol):
    """A way to place bets. ``place`` never blocks: it queues the order and records the
    answer on the ``Bet`` through ``answered`` (status 201 = acknowledged)."""

    name: str

    def unavailable(self) -> str:
        """Empty when the channel works on this server, else why not (printed, skipped)."""
        ...

    def place(self, bet: Bet) -> None: ...

    async def run(self) -> None:
        """Background work while the game runs (flush timers); returns when cancelled."""
        ...


Answered = Callable[[Bet, int, dict[str, Any], float, float, int], None]


def _place_body(bet: Bet) -> dict[str, Any]:
    body: dict[str, Any] = {"user_id": bet.user, "amount": bet.stake}
    if bet.auto is not None:
        body["auto_cashout"] = bet.auto
    return body


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class RestOrders:
    """The one-shot ``POST /api/v1/bets``: one signed request, its own Idempotency-Key."""

    name = "rest"

    def __init__(self, pool: Pool, signer: Signer, answered: Answered) -> None:
        self.pool, self.signer, self.answered = pool, signer, answered

    def unavailable(self) -> str:
        return ""

    def place(self, bet: Bet) -> None:
        raw = dumps(_place_body(bet))

        async def job(http: Http) -> None:
            status, body, sent, done, tries = await http.request(
                lambda: self.signer.post(f"{API}/bets", raw, bet.key)
            )
            self.answered(bet, status, _json(body), sent, done, tries)

        self.pool.submit(job)

    async def run(self) -> None:
        await trio.sleep_forever()


class BatchOrders:
    """``POST /api/v1/bets/batch``: a partner server gathering its players' bets and
    sending them every ``flush_ms`` or at 100 items, each item with its own key (the
    request signed, with an Idempotency-Key of its own)."""

    name = "batch"

    def __init__(self, pool: Pool, signer: Signer, answered: Answered, flush_ms: float) -> None:
        self.pool, self.signer, self.answered = pool, signer, answered
        self.flush_s = flush_ms / 1000
        self.pending: list[Bet] = []
        self.batches = 0
        self.sizes: list[int] = []

    def unavailable(self) -> str:
        return ""

    def place(self, bet: Bet) -> None:
        self.pending.append(bet)
        if len(self.pending) >= MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        while self.pending:
            items, self.pending = self.pending[:MAX_BATCH], self.pending[MAX_BATCH:]
            self._send(items)

    def _send(self, items: list[Bet]) -> None:
        raw = dumps({"items": [{"action": "place", "key": b.key, **_place_body(b)} for b in items]})
        key = "batch-" + uuid.uuid4().hex
        self.batches += 1
        self.sizes.append(len(items))

        async def job(http: Http) -> None:
            status, body, sent, done, tries = await http.request(
                lambda: self.signer.post(f"{API}/bets/batch", raw, key)
            )
            results = _json(body).get("results") if status == 200 else None
            if not isinstance(results, list) or len(results) != len(items):
                for b in items:
                    self.answered(b, status if status != 200 else 0, _json(body), sent, done, tries)
                return
            for b, res in zip(items, results, strict=True):
                item_status = int(res.get("status", 0))
                answer = res.get("body") if isinstance(res.get("body"), dict) else {}
                self.answered(b, item_status, answer, sent, done, tries)

        self.pool.submit(job)

    async def run(self) -> None:
        while True:
            await trio.sleep(self.flush_s)
            self.flush()


CashAnswered = Callable[[Bet, int, dict[str, Any], float, float, int], None]


class FeedOrders:
    """Bets and cash-outs as orders on the player's own feed connection (docs/feed.md,
    Orders): the player's page holds a user-scoped feed token (``POST
    /api/v1/feed/user-token``, minted by the partner's server), so an order carries no
    signature and no ``user_id``; ``{"type": "bet", "id", "key", "amount",
    "auto_cashout"?}`` and ``{"type": "cashout", "id", "key", "ticket_id"}`` are answered
    with a ``result`` control message (the REST answer's status and body) matched by
    ``id``. The send instant is the socket write, the answer instant the poll that found
    the result. An order whose connection is lost, or that has no result within
    ``timeout_s``, has no answer (status 0): the verification then finds out what the
    server did with its key. ``why`` is set when the server does not offer orders."""

    name = "feed"

    def __init__(
        self, swarm: Swarm | None, answered: Answered, why: str = "", timeout_s: float = 30.0
    ) -> None:
        self.swarm, self.answered, self.why, self.timeout_s = swarm, answered, why, timeout_s
        self.pending: dict[int, tuple[Bet, float, CashAnswered]] = {}
        self.next_id = 1
        if swarm is not None:
            swarm.on_reply = self.on_reply

    def unavailable(self) -> str:
        return self.why

    def _send(self, bet: Bet, order: dict[str, Any], done: CashAnswered) -> None:
        assert self.swarm is not None
        order["id"] = self.next_id
        self.next_id += 1
        sent = time.time()
        if not self.swarm.send_json(player_of(bet), order):
            done(bet, 0, {}, sent, math.nan, 1)
            return
        self.pending[order["id"]] = (bet, sent, done)

    def place(self, bet: Bet) -> None:
        order: dict[str, Any] = {"type": "bet", "key": bet.key, "amount": bet.stake}
        if bet.auto is not None:
            order["auto_cashout"] = bet.auto
        self._send(bet, order, self.answered)

    def cash_out(self, bet: Bet, key: str, done: CashAnswered) -> None:
        self._send(bet, {"type": "cashout", "key": key, "ticket_id": bet.ticket}, done)

    def on_reply(self, player: int, doc: dict[str, Any], now: float) -> None:
        if doc.get("type") != "result":
            return
        entry = self.pending.pop(doc.get("id"), None)  # type: ignore[arg-type]
        if entry is None:
            return
        bet, sent, done = entry
        body = doc.get("body")
        done(bet, int(doc.get("status", 0)), body if isinstance(body, dict) else {}, sent, now, 1)

    def lost(self, player: int) -> None:
        """The player's connection is gone: its orders in flight have no answer."""
        for oid, (bet, sent, done) in list(self.pending.items()):
            if player_of(bet) == player:
                del self.pending[oid]
                done(bet, 0, {}, sent, math.nan, 1)

    async def run(self) -> None:
        while True:
            await trio.sleep(1.0)
            now = time.time()
            for oid, (bet, sent, done) in list(self.pending.items()):
                if now - sent > self.timeout_s:
                    del self.pending[oid]
                    done(bet, 0, {}, sent, math.nan, 1)


def player_of(bet: Bet) -> int:
    """The player index of a bet's user (``player-N``)."""
    return int(bet.user.rsplit("-", 1)[1])


# ============================================================================ feed side

TICK, ROUND, USER, SNAPSHOT, CONTROL, OTHER = range(6)
CONTROL_TYPES = frozenset(
    {"welcome", "subscribed", "unsubscribed", "resumed", "heartbeat", "error"}
)
"""Messages outside the stream (docs/feed.md): ``welcome`` and ``resumed`` report the
current ``seq`` but are not numbered themselves."""


class Msg:
    """A decoded feed message (one per distinct frame: every subscriber shares it)."""

    __slots__ = ("kind", "seq", "doc", "round_id", "multiplier", "at_ms", "elapsed_ms")

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        channel = doc.get("channel")
        t = doc.get("type")
        self.seq = 0 if t in CONTROL_TYPES else int(doc.get("seq", 0) or 0)
        self.round_id = int(doc.get("round_id", 0) or 0)
        self.multiplier = int(doc.get("multiplier", 0) or 0)
        self.at_ms = float(doc.get("at_ms", 0) or 0)
        self.elapsed_ms = int(doc.get("elapsed_ms", 0) or 0)
        if channel == "live_multiplier" and t == "tick":
            self.kind = TICK
        elif channel == "round_updates":
            self.kind = ROUND
        elif isinstance(channel, str) and channel.startswith("user:"):
            self.kind = USER
        elif t in CONTROL_TYPES or "seq" not in doc:
            self.kind = CONTROL
        elif t == "snapshot":
            self.kind = SNAPSHOT
        else:
            self.kind = OTHER


class FeedConn:
    __slots__ = ("sock", "fd", "player", "buf", "last_seq", "subscribed", "alive", "ticks")

    def __init__(self, sock: socket.socket, player: int) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.player = player
        self.buf = b""
        self.last_seq = 0
        self.subscribed = False
        self.alive = True
        self.ticks = 0


class Swarm:
    """Every player's feed connection on one ``epoll``, read by one Trio task.

    ``on_tick(player, msg, now)`` runs for every tick every connection receives (the
    hot path: keep it short); ``on_round(msg, now)`` once per ``round_updates`` message
    (the first connection to deliver it); ``on_user(player, msg, now)`` for each user
    channel message; ``on_reply(player, doc, now)`` for control messages with an ``id``."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.host, self.port, self.path = host, port, path
        self.ep = select.epoll()
        self.conns: dict[int, FeedConn] = {}
        self.by_player: dict[int, FeedConn] = {}
        self.cache: dict[bytes, Msg] = {}
        self.handled_public = 0
        self.on_tick: Callable[[int, Msg, float], None] = lambda p, m, t: None
        self.on_round: Callable[[Msg, float], None] = lambda m, t: None
        self.on_user: Callable[[int, Msg, float], None] = lambda p, m, t: None
        self.on_reply: Callable[[int, dict[str, Any], float], None] = lambda p, d, t: None
        self.on_lost: Callable[[int], None] = lambda p: None
        self.messages = 0
        self.out_of_order = 0
        self.resyncs = 0
        self.dropped = 0
        self.close_codes: dict[int, int] = {}
        self.errors: list[str] = []
        self.closing = False
        self.lost_players: set[int] = set()

    # -- connecting
    async def connect(self, player: int, token: str, channels: list[str]) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            with trio.fail_after(30):
                try:
                    sock.connect((self.host, self.port))
                except BlockingIOError:
                    pass
                await trio.lowlevel.wait_writable(sock)
                err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                key = b64encode(os.urandom(16)).decode()
                sock.send(
                    (
                        f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                        f"Authorization: Bearer {token}\r\n\r\n"
                    ).encode()
                )
                buf = b""
                while b"\r\n\r\n" not in buf:
                    await trio.lowlevel.wait_readable(sock)
                    chunk = sock.recv(65536)
                    if not chunk:
                        raise ConnectionError("the feed closed the connection during the handshake")
                    buf += chunk
        except BaseException:
            sock.close()
            raise
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101") or accept_key(key).encode() not in head:
            sock.close()
            raise ConnectionError(f"feed handshake refused: {head[:200]!r}")
        conn = FeedConn(sock, player)
        conn.buf = rest
        self.conns[conn.fd] = conn
        self.by_player[player] = conn
        self.send_json(player, {"type": "subscribe", "channels": channels, "id": 1})
        self.ep.register(conn.fd, select.EPOLLIN)

    def send_json(self, player: int, doc: dict[str, Any]) -> bool:
        conn = self.by_player.get(player)
        if conn is None or not conn.alive:
            return False
        frame = client_frame(dumps(doc))
        try:
            sent = conn.sock.send(frame)
        except OSError:
            sent = 0
        if sent != len(frame):  # tiny frames on an idle socket: a short send is a failure
            self.errors.append(f"player {player}: short send to the feed")
            self._lost(conn)
            return False
        return True

    async def wait_subscribed(self, timeout: float) -> int:
        with trio.move_on_after(timeout):
            while not all(c.subscribed for c in self.conns.values() if c.alive):
                await trio.sleep(0.05)
        return sum(1 for c in self.conns.values() if c.alive and c.subscribed)

    # -- reading
    async def pump(self) -> None:
        ep, conns, cache = self.ep, self.conns, self.cache
        epfd = ep.fileno()
        while True:
            await trio.lowlevel.wait_readable(epfd)  # a checkpoint between slices, so
            events = ep.poll(0, 256)  # cash-outs are not held up behind a whole tick
            now = time.time()  # what one poll finds was there by then
            for fd, _mask in events:
                conn = conns.get(fd)
                if conn is None:
                    continue
                try:
                    data = conn.sock.recv(262144)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self._lost(conn)
                    continue
                buf = conn.buf + data if conn.buf else data
                frames, used = parse_frames(buf)
                conn.buf = buf[used:] if used < len(buf) else b""
                for opcode, payload in frames:
                    if opcode == 0x1:
                        msg = cache.get(payload)
                        if msg is None:
                            if len(cache) > 4096:
                                cache.clear()
                            msg = Msg(json.loads(payload))
                            if msg.kind in (TICK, ROUND):
                                cache[payload] = msg
                        self._message(conn, msg, now)
                    elif opcode == 0x8:
                        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                        self.close_codes[code] = self.close_codes.get(code, 0) + 1
                        if not self.closing:
                            self.dropped += 1
                        self._lost(conn)
                        break
                    elif opcode == 0x9:
                        with contextlib.suppress(OSError):
                            conn.sock.send(client_frame(payload, 0xA))
                    elif opcode != 0xA:
                        self.errors.append(f"player {conn.player}: unexpected opcode {opcode}")

    def _message(self, conn: FeedConn, msg: Msg, now: float) -> None:
        self.messages += 1
        seq = msg.seq
        kind = msg.kind
        if seq:
            # A snapshot is the state *as of* its seq: it may repeat the last one seen.
            if seq < conn.last_seq or (seq == conn.last_seq and kind != SNAPSHOT):
                self.out_of_order += 1
                if len(self.errors) < 20:
                    self.errors.append(
                        f"player {conn.player}: seq {seq} ({msg.doc.get('channel')} "
                        f"{msg.doc.get('type')}) after {conn.last_seq}"
                    )
            conn.last_seq = seq
        if kind == TICK:
            conn.ticks += 1
            self.on_tick(conn.player, msg, now)
            if seq > self.handled_public:
                self.handled_public = seq
                self.on_round(msg, now)
        elif kind == ROUND:
            if seq > self.handled_public:
                self.handled_public = seq
                self.on_round(msg, now)
        elif kind == USER:
            self.on_user(conn.player, msg, now)
        elif kind == CONTROL:
            t = msg.doc.get("type")
            if t == "heartbeat":
                self.send_json(conn.player, {"type": "ack", "id": msg.doc.get("id")})
            elif t == "subscribed":
                conn.subscribed = True
            elif t == "error":
                self.errors.append(f"player {conn.player}: feed error {msg.doc}")
            elif "id" in msg.doc:
                self.on_reply(conn.player, msg.doc, now)
        elif kind == SNAPSHOT and msg.doc.get("reason") != "subscribe":
            self.resyncs += 1

    def _lost(self, conn: FeedConn) -> None:
        if not conn.alive:
            return
        conn.alive = False
        if not self.closing:
            self.lost_players.add(conn.player)
            self.on_lost(conn.player)
        with contextlib.suppress(Exception):
            self.ep.unregister(conn.fd)
        self.conns.pop(conn.fd, None)
        conn.sock.close()

    def close_all(self) -> None:
        self.closing = True
        for conn in list(self.conns.values()):
            with contextlib.suppress(OSError):
                conn.sock.send(client_frame((1000).to_bytes(2, "big"), 0x8))
            self._lost(conn)
        self.ep.close()

    @property
    def alive(self) -> int:
        return len(self.conns)  # a lost connection leaves the table


# ============================================================================ the game


@dataclass
class Player:
    index: int
    user: str
    channel: str
    manual: bool
    armed: list[Bet] = field(default_factory=list)
    """Acknowledged bets waiting for the player's view to reach their manual target."""


@dataclass
class RoundSeen:
    """A round as the feed told it (``round_updates``)."""

    round_id: int
    opened_at: float = math.nan
    closes_at_ms: int = 0
    started_at_ms: int | None = None
    crash_point: int | None = None
    crashed: trio.Event = field(default_factory=trio.Event)


class Game:
    """The players: feed subscribers, bettors, cash-outs; measures while it plays."""

    def __init__(self, server: Server, args: argparse.Namespace, progress: Progress | None) -> None:
        self.server = server
        self.args = args
        self.progress = progress
        self.rng = random.Random(args.seed)
        self.signer = Signer(server)
        self.bet_pool = Pool(server, args.connections)
        self.cash_pool = Pool(server, args.cashout_connections)
        self.crash_range: tuple[int, int] = (
            (int(args.crash_range[0]), int(args.crash_range[1])) if args.crash_range else (130, 600)
        )
        self.rounds: dict[int, RoundSeen] = {}
        self.measuring = False
        self.accepting = False
        self.last_measured_crashed = trio.Event()
        self.settlements: dict[str, list[Settlement]] = {}
        self.decisions: dict[str, int] = {}
        """ticket -> the server's instant (epoch ms) of its manual cash-out."""
        self.skips: list[Skip] = []
        self.players: list[Player] = []
        self.result = Result(
            players=args.players,
            rounds=args.rounds,
            params=params_of(args),
            channels={},
        )
        self.swarm: Swarm | None = None
        self.watched: set[str] = set()
        """Players whose feed connection stayed open: their user channel saw everything."""
        self.channels: dict[str, OrderChannel] = {}
        self.funded: dict[str, int] = {}
        self.nursery: trio.Nursery | None = None
        self.metrics_before: dict[str, scrape.Buckets] = {}
        self.window: list[float] = []
        self.cpu0 = (0.0, 0.0)
        self.rss_max = math.nan
        self.server_peak = 0.0
        self.generator_peak = 0.0
        self.loop_lag: list[float] = []

    def say(self, text: str) -> None:
        print(f"game: {text}", flush=True)

    def step(self, done: float, total: float, what: str) -> None:
        if self.progress is not None:
            self.progress.update(done, total, what)

    # -- setup ---------------------------------------------------------------------------
    async def parallel(self, jobs: Sequence[Job], concurrency: int) -> None:
        """Run ``jobs`` over ``concurrency`` fresh keep-alive connections."""
        queue = list(reversed(jobs))

        async def worker() -> None:
            http = Http(self.server)
            try:
                while queue:
                    await queue.pop()(http)
            finally:
                await http.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(min(concurrency, len(jobs)) or 1):
                nursery.start_soon(worker)

    async def fund(self) -> None:
        if self.args.wallet_admin:
            await self.fund_wallet()
            return
        failures: list[str] = []

        def job(user: str) -> Job:
            raw = dumps({"user_id": user, "amount": FUNDING})
            key = f"fund-{user}-{uuid.uuid4().hex}"

            async def run(http: Http) -> None:
                status, body, *_ = await http.request(
                    lambda: self.signer.post(f"{API}/sandbox/faucet", raw, key)
                )
                if status != 201:
                    failures.append(f"{user}: {status} {body[:200]!r}")
                else:
                    self.funded[user] = self.funded.get(user, 0) + FUNDING

            return run

        await self.parallel([job(p.user) for p in self.players], 16)
        if failures:
            raise SystemExit(f"bench game: funding failed: {failures[:3]}")

    async def fund_wallet(self) -> None:
        """Seamless: the players' money is the mock wallet's, set in one admin call."""
        import httpx

        players = [{"player_id": p.user, "balance": FUNDING} for p in self.players]
        async with httpx.AsyncClient(base_url=self.args.wallet_admin, timeout=60) as admin:
            r = await admin.post("/admin/players", json=players)
        if r.status_code != 200:
            raise SystemExit(f"bench game: funding the mock wallet failed: {r.text[:300]}")
        for p in self.players:
            self.funded[p.user] = FUNDING

    async def outbox_drained(self, timeout_s: float = 120.0) -> str | None:
        """Seamless: wait until the server's outbox delivered every credit (the balances
        are the wallet's, so they are final only then); a problem, or ``None``."""
        http = Http(self.server)
        try:
            with trio.move_on_after(timeout_s):
                while True:
                    status, body, *_ = await http.request(
                        lambda: self.signer.get(f"{API}/wallet/status")
                    )
                    doc = _json(body)
                    outbox = doc.get("outbox", {})
                    if status == 200 and outbox.get("pending") == 0:
                        if outbox.get("failed"):
                            return f"the outbox parked {outbox['failed']} transaction(s) as failed"
                        return None
                    await trio.sleep(0.2)
        finally:
            await http.aclose()
        return f"the outbox did not drain within {timeout_s:.0f} s"

    async def user_token(self, http: Http, user: str) -> tuple[int, dict[str, Any]]:
        """``POST /api/v1/feed/user-token`` (signed): a token for one player's page, which
        reads its own user channel and sends orders for that user only."""
        raw = dumps({"user_id": user, "ttl_s": 3600})
        key = f"user-token-{user}-{uuid.uuid4().hex}"
        status, body, *_ = await http.request(
            lambda: self.signer.post(f"{API}/feed/user-token", raw, key)
        )
        return status, _json(body)

    async def tokens(self) -> tuple[list[str], str]:
        """A feed token per player: a user-scoped one (orders allowed) for the players who
        bet over the feed, the read-only ``POST /feed/token`` one for the others."""
        tokens = [""] * len(self.players)
        urls: list[str] = []

        def job(i: int) -> Job:
            async def run(http: Http) -> None:
                if self.players[i].channel == "feed":
                    status, doc = await self.user_token(http, self.players[i].user)
                else:
                    status, body, *_ = await http.request(
                        lambda: self.signer.post(f"{API}/feed/token", b"", None)
                    )
                    doc = _json(body)
                if status != 200 or "token" not in doc:
                    raise SystemExit(f"bench game: a feed token for player {i}: {status} {doc}")
                tokens[i] = str(doc["token"])
                urls.append(str(doc.get("ws_url", "")))

            return run

        await self.parallel([job(i) for i in range(len(self.players))], 16)
        return tokens, urls[0]

    async def feed_orders_offered(self) -> str:
        """Empty when the server takes orders on the feed, else why not: asked the way a
        partner finds out, by minting a user-scoped token (404: no such route)."""
        http = Http(self.server)
        try:
            status, doc = await self.user_token(http, "player-0")
        finally:
            await http.aclose()
        if status == 200 and "write:bet" in doc.get("scopes", []):
            return ""
        return (
            f"the server takes no orders on the feed (POST {API}/feed/user-token answered "
            f"{status} {doc.get('code', '')}); those players bet over REST"
        )

    async def scrape_metrics(self) -> dict[str, scrape.Buckets] | None:
        """The server's histograms now (``None``, said once, if ``/metrics`` refuses)."""
        if not self.server.metrics_key:
            return None
        request = (
            f"GET /metrics HTTP/1.1\r\nHost: {self.server.host}:{self.server.port}\r\n"
            f"Authorization: Bearer {self.server.metrics_key}\r\n\r\n"
        ).encode()
        conn = await RawConnection.open(self.server.host, self.server.port)
        try:
            status, body = await conn.request(request)
        finally:
            await conn.aclose()
        if status != 200:
            self.say(f"GET /metrics answered {status}: the server's own histograms are not read")
            self.server.metrics_key = ""
            return None
        return scrape.histograms(body.decode())

    async def scrape_before(self) -> None:
        self.metrics_before = await self.scrape_metrics() or {}

    async def hello_floor(self, seconds: float, concurrency: int) -> Floor:
        floor = Floor()
        request = self.signer.get(HELLO_PATH, auth=False)
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()

        async def worker() -> None:
            conn = await RawConnection.open(self.server.host, self.server.port)
            try:
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    try:
                        status, _ = await conn.request(request)
                    except (HttpError, trio.BrokenResourceError, OSError):
                        floor.failures += 1
                        await conn.aclose()
                        conn = await RawConnection.open(self.server.host, self.server.port)
                        continue
                    floor.latencies_ms.append((time.perf_counter() - t0) * 1000)
                    floor.requests += 1
                    if status != 200:
                        floor.failures += 1
            finally:
                await conn.aclose()

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        floor.seconds = time.perf_counter() - started
        return floor

    def make_swarm(self, url: str) -> Swarm:
        match = re.fullmatch(r"ws://(?P<host>[^:/]+):(?P<port>\d+)(?P<path>/\S*)", url)
        if match is None:
            raise SystemExit(f"bench game: the feed token names no usable ws_url: {url!r}")
        swarm = Swarm(match["host"], int(match["port"]), match["path"])
        swarm.on_tick = self.on_tick
        swarm.on_round = self.on_public
        swarm.on_user = self.on_user
        self.swarm = swarm
        return swarm

    async def connect_all(self, swarm: Swarm, tokens: list[str]) -> None:
        failures: list[str] = []
        todo = list(reversed(range(len(self.players))))
        total = len(todo)

        async def worker() -> None:
            while todo:
                i = todo.pop()
                channels = ["live_multiplier", "round_updates"]
                if self.args.user_channel:
                    channels.append(f"user:{PARTNER}:{self.players[i].user}")
                try:
                    await swarm.connect(i, tokens[i], channels)
                except (OSError, ConnectionError, trio.TooSlowError) as exc:
                    failures.append(f"player {i}: {exc!r}")
                if (total - len(todo)) % 250 == 0:
                    self.step(total - len(todo), total, "connecting the players' feeds")

        async with trio.open_nursery() as nursery:
            for _ in range(min(64, total)):
                nursery.start_soon(worker)
        subscribed = await swarm.wait_subscribed(10 + total / 100)
        if failures or subscribed < total:
            raise SystemExit(
                f"bench game: {subscribed}/{total} feed connections subscribed; "
                f"failures: {failures[:3]} {swarm.errors[:3]}"
            )

    # -- the feed's news -----------------------------------------------------------------
    def on_tick(self, player: int, msg: Msg, now: float) -> None:
        if self.measuring:
            self.result.feed_late.add(now * 1000 - msg.at_ms)
            self.result.ticks_received += 1
        p = self.players[player]
        if p.armed:
            for bet in p.armed:
                if (
                    bet.round_id == msg.round_id
                    and bet.manual is not None
                    and msg.multiplier >= bet.manual
                ):
                    self.cash_out(p, bet, msg.multiplier, now)
                    break

    def on_public(self, msg: Msg, now: float) -> None:
        doc = msg.doc
        t = doc.get("type")
        if msg.kind == TICK:
            if self.measuring:
                self.result.tick_late_ms.append(
                    tick_grid_lateness(msg.elapsed_ms, self.args.tick_hz)
                )
                self.result.ticks_expected += self.swarm.alive if self.swarm else 0
            return
        r = msg.round_id
        seen = self.rounds.setdefault(r, RoundSeen(r))
        if t == "betting_opened":
            seen.opened_at = now
            seen.closes_at_ms = int(doc.get("closes_at_ms", 0))
            if self.accepting and len(self.result.measured_rounds) < self.args.rounds:
                self.result.measured_rounds.append(r)
                assert self.nursery is not None
                if not self.measuring:
                    self.measuring = True
                    self.window = [now]
                    self.cpu0 = (self.server.stat()[0], time.process_time())
                    self.nursery.start_soon(self.scrape_before)
                self.nursery.start_soon(self.bet_round, r, seen)
                self.step(
                    len(self.result.measured_rounds) - 1,
                    self.args.rounds,
                    f"round {len(self.result.measured_rounds)}/{self.args.rounds} (#{r})",
                )
        elif t == "running":
            seen.started_at_ms = int(doc.get("started_at_ms", 0))
        elif t in ("crashed", "round_voided"):
            seen.crash_point = doc.get("crash_point")
            seen.crashed.set()
            rounds = self.result.measured_rounds
            if self.measuring and len(rounds) == self.args.rounds and r == rounds[-1]:
                self.measuring = False
                self.window.append(now)
                cpu, rss, hwm = self.server.stat()
                wall = self.window[1] - self.window[0]
                self.result.window_s = wall
                self.result.server_cpu_share = (cpu - self.cpu0[0]) / wall if wall else math.nan
                self.result.generator_cpu_share = (
                    (time.process_time() - self.cpu0[1]) / wall if wall else math.nan
                )
                self.result.server_rss_mb = (
                    max(rss, self.rss_max) if math.isfinite(self.rss_max) else rss
                )
                self.result.server_hwm_mb = hwm
                self.last_measured_crashed.set()

    def on_user(self, player: int, msg: Msg, now: float) -> None:
        doc = msg.doc
        t = doc.get("type")
        if t not in ("cashed_out", "bet_lost", "bet_refunded"):
            return
        ticket = str(doc.get("ticket_id"))
        self.settlements.setdefault(ticket, []).append(
            Settlement(
                str(t),
                doc.get("multiplier"),
                doc.get("payout"),
                doc.get("elapsed_ms"),
                doc.get("kind"),
            )
        )
        if t == "cashed_out" and doc.get("kind") == "manual":
            seen = self.rounds.get(int(doc.get("round_id", 0)))
            if seen is not None and seen.started_at_ms is not None:
                self.decisions[ticket] = seen.started_at_ms + int(doc.get("elapsed_ms", 0))

    # -- bets and cash-outs --------------------------------------------------------------
    def answered(
        self, bet: Bet, status: int, body: dict[str, Any], sent: float, done: float, tries: int
    ) -> None:
        bet.status, bet.sent_at, bet.answered_at, bet.attempts = status, sent, done, tries
        if status == 201 and "ticket_id" in body:
            bet.ticket = str(body["ticket_id"])
            bet.round_id = int(body.get("round_id", 0))
            bet.queued = bool(body.get("queued"))
            if bet.manual is not None:
                self.players[player_of(bet)].armed.append(bet)
        else:
            bet.code = str(body.get("code", "")) if status else "no answer"
            if status and isinstance(body.get("ticket_id"), str):
                bet.refused_ticket = body["ticket_id"]
            if status == 0:
                self.result.lost_answers += 1

    async def bet_round(self, round_id: int, seen: RoundSeen) -> None:
        closes = seen.closes_at_ms / 1000
        start = time.time()
        span = max(0.0, closes - start) * self.args.spread
        plan: list[Bet] = []
        for p in self.players:
            s = strategy(self.rng, p.manual, self.crash_range)
            bet = Bet(
                p.user,
                f"bet-{round_id}-{p.user}-{uuid.uuid4().hex[:12]}",
                p.channel,
                s.stake,
                s.auto,
                s.manual,
                round_id,
                planned_at=start + self.rng.uniform(0, span),
                closes_at=closes,
            )
            plan.append(bet)
        plan.sort(key=lambda b: b.planned_at)
        self.result.bets += plan
        for bet in plan:
            delay = bet.planned_at - time.time()
            if delay > 0:
                await trio.sleep(delay)
            self.channels[bet.channel].place(bet)
        batch = self.channels.get("batch")
        if isinstance(batch, BatchOrders):
            batch.flush()

    def cash_out(self, player: Player, bet: Bet, seen_multiplier: int, now: float) -> None:
        """The player's manual cash-out: an order on its own connection if it bets over the
        feed, else ``POST /api/v1/bets/{ticket_id}/cashout`` (signed) from the pool."""
        player.armed.remove(bet)
        bet.trigger_at, bet.trigger_multiplier = now, seen_multiplier
        key = bet.key + ":cashout"
        feed = self.channels.get("feed")
        if player.channel == "feed" and isinstance(feed, FeedOrders):
            feed.cash_out(bet, key, self.cashed)
            return
        path = f"{API}/bets/{bet.ticket}/cashout"
        raw = dumps({"user_id": bet.user})

        async def job(http: Http) -> None:
            status, body, sent, done, tries = await http.request(
                lambda: self.signer.post(path, raw, key)
            )
            self.cashed(bet, status, _json(body), sent, done, tries)

        self.cash_pool.submit(job)

    def cashed(
        self, bet: Bet, status: int, doc: dict[str, Any], sent: float, done: float, tries: int
    ) -> None:
        bet.cash_sent_at, bet.cash_answered_at, bet.cash_attempts = sent, done, tries
        if status == 200:
            bet.cash = CashoutAnswer("cashed_out", doc.get("multiplier"), doc.get("payout"))
        elif status == 0:
            bet.cash = CashoutAnswer("unknown")
            self.result.lost_answers += 1
        else:
            bet.cash = CashoutAnswer(
                str(doc.get("code", status)), crash_point=doc.get("crash_point")
            )

    async def orders_drained(self) -> None:
        feed = self.channels.get("feed")
        while isinstance(feed, FeedOrders) and feed.pending:
            await trio.sleep(0.05)

    # -- samplers ------------------------------------------------------------------------
    async def probe_hello(self) -> None:
        """The framework's floor under the same load: one hello request every 50 ms."""
        request = self.signer.get(HELLO_PATH, auth=False)
        conn = await RawConnection.open(self.server.host, self.server.port)
        try:
            while True:
                await trio.sleep(0.05)
                t0 = time.perf_counter()
                try:
                    status, _ = await conn.request(request)
                except (HttpError, trio.BrokenResourceError, OSError):
                    await conn.aclose()
                    conn = await RawConnection.open(self.server.host, self.server.port)
                    continue
                if self.measuring:
                    self.result.hello_load.requests += 1
                    if status == 200:
                        self.result.hello_load.latencies_ms.append(
                            (time.perf_counter() - t0) * 1000
                        )
                    else:
                        self.result.hello_load.failures += 1
        finally:
            await conn.aclose()

    async def sample(self) -> None:
        """While measuring: the server's RSS, both processes' busiest second (CPU share
        over 1 s windows) and the generator's own loop lag (oversleep of a 10 ms sleep)."""
        last = (trio.current_time(), self.server.stat()[0], time.process_time())
        while True:
            t0 = trio.current_time()
            await trio.sleep(0.01)
            now = trio.current_time()
            if not self.measuring:
                last = (now, self.server.stat()[0], time.process_time())
                continue
            self.loop_lag.append((now - t0 - 0.01) * 1000)
            if now - last[0] >= 1.0:
                cpu, rss, _ = self.server.stat()
                mine = time.process_time()
                wall = now - last[0]
                self.server_peak = max(self.server_peak, (cpu - last[1]) / wall)
                self.generator_peak = max(self.generator_peak, (mine - last[2]) / wall)
                self.rss_max = rss if not math.isfinite(self.rss_max) else max(self.rss_max, rss)
                last = (now, cpu, mine)

    # -- the whole run -------------------------------------------------------------------
    async def play(self) -> Result:
        args, result = self.args, self.result
        rng = self.rng
        manual = set(rng.sample(range(args.players), args.players // 2))
        # The channels a bet can take; one the server does not offer is skipped, loudly.
        signer = self.signer
        channels: dict[str, OrderChannel] = {
            "rest": RestOrders(self.bet_pool, signer, self.answered),
            "batch": BatchOrders(self.bet_pool, signer, self.answered, args.batch_ms),
        }
        weights = parse_mix(args.mix)
        unavailable = []
        why = await self.feed_orders_offered() if weights.get("feed", 0) > 0 else ""
        if why:
            self.skips.append(Skip(NAME, "bets over the feed connection", why))
            unavailable.append("feed")
        assigned = assign_channels(args.players, weights, unavailable)
        rng.shuffle(assigned)
        self.players = [
            Player(i, f"player-{i}", assigned[i], i in manual) for i in range(args.players)
        ]
        for c in CHANNELS:
            n = sum(1 for p in self.players if p.channel == c)
            if n:
                result.channels[c] = n
        self.say(
            f"{args.players:,} players: "
            + ", ".join(f"{c} {n:,}" for c, n in result.channels.items())
            + f"; {len(manual):,} cash out by hand"
        )
        self.step(0, 1, "funding the players")
        t0 = time.perf_counter()
        await self.fund()
        self.say(
            f"funded {args.players:,} players "
            + ("in the mock wallet" if args.wallet_admin else "from the faucet")
            + f" in {time.perf_counter() - t0:.1f} s"
        )
        self.step(0, 1, "the hello floor")
        result.hello_idle = await self.hello_floor(args.hello_seconds, 16)
        self.step(0, 1, "feed tokens")
        tokens, url = await self.tokens()
        swarm = self.make_swarm(url)
        if weights.get("feed", 0) > 0 and "feed" not in unavailable:
            feed = FeedOrders(swarm, self.answered)
            swarm.on_lost = feed.lost
            channels["feed"] = feed
        self.channels = channels
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            nursery.start_soon(swarm.pump)
            t0 = time.perf_counter()
            await self.connect_all(swarm, tokens)
            self.say(
                f"{swarm.alive:,} feed connections subscribed in {time.perf_counter() - t0:.1f} s ({url})"
            )
            nursery.start_soon(self.bet_pool.run)
            nursery.start_soon(self.cash_pool.run)
            for channel in channels.values():
                nursery.start_soon(channel.run)
            nursery.start_soon(self.probe_hello)
            nursery.start_soon(self.sample)
            self.accepting = True
            # Generous: a round that crashes at the top of the range takes ~30 s.
            per_round = args.betting_ms / 1000 + args.pause_ms / 1000 + 45
            with trio.move_on_after(per_round * (args.rounds + 2) + 30) as waited:
                await self.last_measured_crashed.wait()
            self.accepting = False
            if waited.cancelled_caught:
                raise SystemExit(
                    f"bench game: the {args.rounds} rounds did not finish in time "
                    f"({len(result.measured_rounds)} started)"
                )
            # Every answer in, every bet's round over (a missed bet plays the next one).
            with trio.move_on_after(120):
                await self.bet_pool.drained()
                await self.orders_drained()
                last = max((b.round_id for b in result.bets if b.acknowledged), default=0)
                while last not in self.rounds or not self.rounds[last].crashed.is_set():
                    await trio.sleep(0.05)
                await self.rounds[last].crashed.wait()
                await self.cash_pool.drained()
                await self.orders_drained()
                if args.user_channel:  # settlements reach user channels after their commit
                    crashed = {r for r, seen in self.rounds.items() if seen.crashed.is_set()}
                    want = [
                        b.ticket for b in result.bets if b.acknowledged and b.round_id in crashed
                    ]
                    with trio.move_on_after(10):
                        while any(t not in self.settlements for t in want):
                            await trio.sleep(0.05)
            after = await self.scrape_metrics()
            if after is not None:
                result.server_histograms = {
                    name: scrape.window(self.metrics_before.get(name), h)
                    for name, h in after.items()
                }
            nursery.cancel_scope.cancel()
        result.messages = swarm.messages
        result.out_of_order = swarm.out_of_order
        result.dropped = swarm.dropped + len(swarm.lost_players)
        self.watched = {p.user for p in self.players if p.index not in swarm.lost_players}
        result.resyncs = swarm.resyncs
        result.close_codes = dict(swarm.close_codes)
        swarm.close_all()
        result.loop_lag_p99_ms = percentile(self.loop_lag, 99)
        result.server_cpu_peak_share = self.server_peak
        result.generator_cpu_peak_share = self.generator_peak
        for e in swarm.errors[:5]:
            self.say(f"feed: {e}")
        # The server's instant of each manual cash-out (the pricing lag's other end).
        for bet in result.bets:
            decision = self.decisions.get(bet.ticket)
            if decision is not None:
                bet.decision_ms = float(decision)
        self.step(0, 1, "verifying every bet")
        await self.verify()
        return result

    # -- verification, from outside ------------------------------------------------------
    async def verify(self) -> None:
        result = self.result
        users = [p.user for p in self.players]
        server_bets: dict[str, list[ServerBet]] = {}
        balances: dict[str, int] = {}
        pending: dict[str, int] = {}
        problems: list[str] = []

        def bets_job(user: str) -> Job:
            async def run(http: Http) -> None:
                out: list[ServerBet] = []
                before: int | None = None
                while True:
                    path = f"{API}/user/bets?user_id={user}&limit=100" + (
                        f"&before={before}" if before else ""
                    )
                    status, body, *_ = await http.request(partial(self.signer.get, path))
                    doc = _json(body)
                    if status != 200:
                        problems.append(f"GET /user/bets {user}: {status} {body[:200]!r}")
                        break
                    out += [ServerBet.from_json(d) for d in doc.get("bets", [])]
                    before = doc.get("next_cursor")
                    if not before:
                        break
                server_bets[user] = out

            return run

        def balance_job(user: str) -> Job:
            async def run(http: Http) -> None:
                status, body, *_ = await http.request(
                    lambda: self.signer.get(f"{API}/user/balance?user_id={user}")
                )
                doc = _json(body)
                if status != 200:
                    problems.append(f"GET /user/balance {user}: {status} {body[:200]!r}")
                    return
                balances[user] = int(doc["posted"])
                pending[user] = int(doc.get("pending", 0))

            return run

        # Settlement commits just after the crash: wait until no bet is active.
        todo = users
        for _ in range(40):
            await self.parallel([bets_job(u) for u in todo], 16)
            todo = [u for u in todo if any(s.status == "active" for s in server_bets.get(u, []))]
            if not todo:
                break
            await trio.sleep(0.5)
        result.unsettled = sum(
            1 for u in todo for s in server_bets.get(u, []) if s.status == "active"
        )
        if self.args.wallet_admin:
            drained = await self.outbox_drained()
            if drained is not None:
                problems.append(f"money: {drained}")
        await self.parallel([balance_job(u) for u in users], 16)
        everything = [s for u in users for s in server_bets.get(u, [])]
        round_ids = sorted({s.round_id for s in everything if s.round_id is not None})
        rounds: dict[int, RoundResult] = {}
        from crashd.engine.fairness import crash_point

        def round_job(round_id: int) -> Job:
            async def run(http: Http) -> None:
                for _ in range(100):
                    status, body, *_ = await http.request(
                        lambda: self.signer.get(f"{API}/game/rounds/{round_id}")
                    )
                    doc = _json(body)
                    if status == 200:
                        rounds[round_id] = RoundResult.from_json(doc)
                        game_hash, salt = doc.get("game_hash"), doc.get("salt")
                        if game_hash and salt and doc.get("crash_point") is not None:
                            if crash_point(game_hash, salt) != doc["crash_point"]:
                                result.crash_points_ok = False
                                problems.append(
                                    f"round {round_id}: crash point {doc['crash_point']} does "
                                    f"not follow from its hash ({crash_point(game_hash, salt)})"
                                )
                        return
                    if status == 404:  # never played: its queued bets must be refunded
                        return
                    await trio.sleep(0.2)  # round_not_finished: still playing
                problems.append(f"round {round_id}: never finished")

            return run

        await self.parallel([round_job(r) for r in round_ids], 8)
        for u, n in pending.items():
            if n:
                problems.append(f"user {u}: {n} still pending (held) after every bet settled")
        verdict = verify_settlement(
            result.bets,
            everything,
            rounds,
            balances=balances,
            funded=self.funded,
            settlements=self.settlements if self.args.user_channel else None,
            watched=self.watched,
            users=users,
        )
        verdict.problems = problems + verdict.problems
        result.verdict = verdict


def params_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "players": args.players,
        "rounds": args.rounds,
        "mix": args.mix,
        "betting_ms": args.betting_ms,
        "pause_ms": args.pause_ms,
        "tick_hz": args.tick_hz,
        "spread": args.spread,
        "connections": args.connections,
        "cashout_connections": args.cashout_connections,
        "batch_ms": args.batch_ms,
        "crash_range": (
            f"{args.crash_range[0]}-{args.crash_range[1]}" if args.crash_range else "natural"
        ),
        "synchronous": args.synchronous,
        "log_level": args.log_level,
        "user_channel": bool(args.user_channel),
        "quick": bool(args.quick),
    }


# ============================================================================ commands


def _range(text: str) -> tuple[int, int]:
    lo, _, hi = text.partition(",")
    a, b = round(float(lo) * 100), round(float(hi) * 100)
    if not 101 <= a <= b:
        raise argparse.ArgumentTypeError("LO,HI in x (e.g. 1.3,6): 1.01 <= LO <= HI")
    return a, b


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench game", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--players", type=int, default=2500, help="players (default 2,500)")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    p.add_argument(
        "--mix",
        default="rest=1,batch=1,feed=1",
        help="bet channels and their weights: rest (POST /bets), batch (POST /bets/batch), "
        "feed (orders on the feed: not offered yet, skipped); default rest=1,batch=1,feed=1",
    )
    p.add_argument("--betting-ms", type=int, default=5000, help="the server's betting window")
    p.add_argument("--pause-ms", type=int, default=3000, help="the server's pause after a crash")
    p.add_argument("--tick-hz", type=int, default=20, help="the server's tick rate (default 20)")
    p.add_argument(
        "--spread",
        type=float,
        default=0.8,
        help="bets are sent at random over this share of the betting window (default 0.8)",
    )
    p.add_argument(
        "--crash-range",
        type=_range,
        default=(130, 600),
        metavar="LO,HI",
        help="the chain's salt is chosen so rounds crash within LO..HI x (default 1.3,6)",
    )
    p.add_argument(
        "--natural", action="store_true", help="a random salt: crash points as they come"
    )
    p.add_argument("--connections", type=int, default=48, help="keep-alive connections for bets")
    p.add_argument(
        "--cashout-connections",
        type=int,
        default=128,
        help="keep-alive connections for cash-outs (default 128: many players cross their "
        "targets on the same tick)",
    )
    p.add_argument("--batch-ms", type=float, default=100.0, help="batch flush interval (ms)")
    p.add_argument("--hello-seconds", type=float, default=3.0, help="the idle hello floor's length")
    p.add_argument(
        "--no-user-channel",
        dest="user_channel",
        action="store_false",
        help="players do not subscribe to their own user channel (then no pricing lag)",
    )
    p.add_argument(
        "--wallet",
        choices=("none", "mock"),
        default="none",
        help="mock: also play in seamless mode, on a mock wallet (crashd wallet mock), once "
        "per --wallet-latency-ms, after the transfer-wallet run (the peer)",
    )
    p.add_argument(
        "--wallet-latency-ms",
        default="5,50",
        help="the mock wallet's answer latency, one run each (default 5,50)",
    )
    p.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    p.add_argument("--seed", type=int, default=13, help="the players' randomness")
    p.add_argument("--no-pin", action="store_true", help="do not pin server and players to cores")
    p.add_argument("--json", type=Path, help="also write the rows to this file")
    p.add_argument(
        "--keep", action="store_true", help="keep the server's directory (its log and ledger)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="CI smoke run: 20 players, 2 short rounds crashing low; every check, no speed",
    )
    p.add_argument("--serve-child", type=Path, help=argparse.SUPPRESS)
    return p


QUICK = {
    "players": 20,
    "rounds": 2,
    "betting_ms": 600,
    "pause_ms": 200,
    "crash_range": (105, 135),
    "hello_seconds": 0.5,
    "connections": 4,
    "cashout_connections": 4,
}


def configure(args: argparse.Namespace, given: Sequence[str]) -> argparse.Namespace:
    """Apply ``--quick``'s sizes where the command line did not name them."""
    if args.quick:
        named = {
            a.split("=", 1)[0].lstrip("-").replace("-", "_") for a in given if a.startswith("--")
        }
        for k, v in QUICK.items():
            if k not in named:
                setattr(args, k, v)
    if args.natural:
        args.crash_range = None
    if args.players < 1 or args.rounds < 1:
        raise SystemExit("bench game: --players and --rounds must be at least 1")
    try:
        args.wallet_latencies = [float(x) for x in str(args.wallet_latency_ms).split(",") if x]
    except ValueError:
        raise SystemExit("bench game: --wallet-latency-ms takes numbers, e.g. 5,50") from None
    if any(not 0 <= x <= 10_000 for x in args.wallet_latencies):
        raise SystemExit("bench game: --wallet-latency-ms must be within 0..10000")
    args.wallet_admin = None
    args.wallets_file = None
    return args


def execute(args: argparse.Namespace, progress: Progress | None, skips: list[Skip]) -> Result:
    """Start the server, play, stop it, check its ledger; the result and every skip
    (in seamless mode when ``args.wallet_admin`` names a running mock wallet)."""
    cores = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cores) >= 2
    server_cpu, client_cpu = (cores[0], cores[1]) if pin else (None, None)
    _raise_nofile()
    keep = contextlib.nullcontext(tempfile.mkdtemp(prefix="bench-game-")) if args.keep else None
    with keep or tempfile.TemporaryDirectory(prefix="bench-game-") as tmp:
        directory = Path(tmp)
        if args.keep:
            print(f"game: keeping the server's directory (log, ledger): {directory}", flush=True)
        # Rounds keep being played while the players set up: cover them too.
        games = args.rounds + (8 if args.quick else 15)
        t0 = time.perf_counter()
        what = write_chain(
            directory / "crashd-chain.json",
            games,
            tuple(args.crash_range) if args.crash_range else None,
        )
        print(f"game: chain: {what} ({time.perf_counter() - t0:.1f} s)", flush=True)
        if progress is not None:
            progress.update(0, 1, "starting the server")
        mock = None
        latency = getattr(args, "wallet_latency", None)
        if latency is not None:
            mock = start_mock(directory, args, latency, client_cpu)
        server = start_server(directory, args, server_cpu)
        game = Game(server, args, progress)
        try:
            if client_cpu is not None:
                os.sched_setaffinity(0, {client_cpu})
            print(
                f"game: server pid {server.proc.pid} on {server.host}:{server.port}"
                + (
                    f", pinned: server cpu {server_cpu}, players cpu {client_cpu}"
                    if pin
                    else ", not pinned"
                )
                + f"; ledger synchronous={args.synchronous}; log level {args.log_level}; "
                f"betting {args.betting_ms} ms, pause {args.pause_ms} ms, {args.tick_hz} Hz",
                flush=True,
            )
            try:
                result = trio.run(game.play)
            except BaseException:
                log = (directory / "server.log").read_text()[-3000:]
                print(f"game: the run failed; the server's log ends:\n{log}", file=sys.stderr)
                raise
        finally:
            code = server.stop()
            if client_cpu is not None:
                os.sched_setaffinity(0, set(cores))
            if mock is not None:
                result_violations = mock.violations()
                wallet_txs = mock.transactions()
                mock.stop()
        skips += game.skips
        if mock is not None:
            result.wallet_latency_ms = latency
            result.wallet_violations = result_violations
            if isinstance(wallet_txs, str):
                result.wallet = WalletReconciliation(problems=[wallet_txs])
            else:
                result.wallet = reconcile_wallet(result.bets, wallet_txs)
        result.db_problems = db_check(directory / "crashd.sqlite3")
        if code not in (0, None):
            result.db_problems.insert(0, f"the server exited {code} (see its log)")
            print((directory / "server.log").read_text()[-2000:], file=sys.stderr)
    if not args.user_channel:
        skips.append(Skip(NAME, "the pricing lag", "--no-user-channel: no server instant"))
    return result


def execute_all(
    args: argparse.Namespace, progress: Progress | None, skips: list[Skip]
) -> tuple[Result, list[Result]]:
    """The transfer-wallet run and, with ``--wallet mock``, one seamless run per latency."""
    args.wallet_latency = None
    base = execute(args, progress, skips)
    seamless: list[Result] = []
    if args.wallet == "mock":
        for latency in args.wallet_latencies:
            print(f"game: seamless mode, a mock wallet answering in {latency:g} ms", flush=True)
            run_args = argparse.Namespace(**vars(args))
            run_args.wallet_latency = latency
            seamless.append(execute(run_args, progress, []))
    if progress is not None:
        progress.done()
    return base, seamless


@dataclass
class Mock:
    """``crashd wallet mock`` in a child process."""

    proc: subprocess.Popen[str]
    admin: str

    def violations(self) -> list[str]:
        import httpx

        try:
            r = httpx.get(self.admin + "/admin/violations", timeout=10)
            return [f"{v['tx_id']}: {v['what']}" for v in r.json()]
        except (httpx.HTTPError, ValueError) as exc:
            return [f"the mock wallet's violations could not be read: {exc}"]

    def transactions(self) -> list[dict[str, Any]] | str:
        """Every transaction the wallet recorded, or why they could not be read."""
        import httpx

        try:
            r = httpx.get(self.admin + "/admin/transactions", timeout=60)
            return list(r.json())
        except (httpx.HTTPError, ValueError, TypeError) as exc:
            return f"the mock wallet's transactions could not be read: {exc}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_mock(
    directory: Path, args: argparse.Namespace, latency_ms: float, cpu: int | None
) -> Mock:
    """A mock wallet answering after ``latency_ms``, and the wallets file that puts the
    bench's partner on it (the server reads it at start)."""

    def pin() -> None:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})

    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "crashd.api",
            "wallet",
            "mock",
            "--port",
            "0",
            "--database",
            str(directory / "mock-wallet.sqlite3"),
            "--secret",
            WALLET_SECRET,
            "--latency-ms",
            str(latency_ms),
            "--seed",
            str(args.seed),
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=(directory / "mock.log").open("w"),
        text=True,
        preexec_fn=pin,
    )
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 60)
    line = proc.stdout.readline() if ready else ""
    if "listening on " not in line:
        proc.kill()
        raise SystemExit(f"bench game: the mock wallet did not start: {line!r}")
    url = line.split("listening on ", 1)[1].strip()
    wallets = directory / "wallets.toml"
    wallets.write_text(
        f'[partners.{PARTNER}]\nurl = "{url}"\nsecret = "{WALLET_SECRET}"\ncurrency = "EUR"\n'
    )
    os.chmod(wallets, 0o600)
    args.wallets_file = wallets
    args.wallet_admin = url.removesuffix("/wallet")
    return Mock(proc, args.wallet_admin)


def wallet_rows(base: Result, runs: Sequence[Result]) -> list[Row]:
    """Per mock-wallet latency: bets/s and cash-out latency, as ratios to the transfer
    run of the same invocation; and that run's checks."""
    base_rows = {r.key: r for r in to_rows(base)}
    rows = [
        Row(
            NAME,
            T_WALLET,
            "wallet/transfer",
            "transfer wallet (crashd holds the balances; the peer)",
            {
                "bets_per_s": base_rows["bets"].metrics["bets_per_s"],
                "bet_answer_p50_ms": base_rows["bets"].metrics["answer_p50_ms"],
                "bet_answer_p99_ms": base_rows["bets"].metrics["answer_p99_ms"],
                "in_window_share": base_rows["bets"].metrics["in_window_share"],
                "cashout_p50_ms": base_rows["cashout"].metrics["answer_p50_ms"],
                "cashout_p99_ms": base_rows["cashout"].metrics["answer_p99_ms"],
            },
            role="peer",
            params=dict(base.params),
            headline=True,
            primary=["bets_per_s", "bet_answer_p50_ms", "cashout_p50_ms", "cashout_p99_ms"],
        )
    ]
    peer = rows[0].metrics
    for run in runs:
        mine = {r.key: r for r in to_rows(run)}
        bets, cash = mine["bets"], mine["cashout"]
        latency = run.wallet_latency_ms or 0.0
        checks = dict(bets.checks)
        checks["the mock wallet recorded no contract violation"] = not run.wallet_violations
        wallet = run.wallet or WalletReconciliation(problems=["not reconciled"])
        checks[
            "every bet reconciles with the wallet's record: each acknowledged bet debited "
            "and closed once, each refused one left nothing debited"
        ] = not wallet.problems
        checks.update(cash.checks)
        metrics = {
            "bets_per_s": bets.metrics["bets_per_s"],
            "bet_answer_p50_ms": bets.metrics["answer_p50_ms"],
            "bet_answer_p99_ms": bets.metrics["answer_p99_ms"],
            "in_window_share": bets.metrics["in_window_share"],
            "cashout_p50_ms": cash.metrics["answer_p50_ms"],
            "cashout_p99_ms": cash.metrics["answer_p99_ms"],
            "refused_before_debit_n": float(sum(wallet.refused_before_debit.values())),
            "refused_debit_unsent_n": float(sum(wallet.refused_unsent.values())),
            "refused_rolled_back_n": float(sum(wallet.refused_rolled_back.values())),
        }
        rows.append(
            Row(
                NAME,
                T_WALLET,
                f"wallet/mock-{latency:g}ms",
                f"seamless: a mock wallet answering in {latency:g} ms",
                metrics,
                {
                    "bets/s × transfer": ratio(metrics["bets_per_s"], peer["bets_per_s"]),
                    "cash-out p50 × transfer": ratio(
                        metrics["cashout_p50_ms"], peer["cashout_p50_ms"]
                    ),
                },
                params={**run.params, "wallet_latency_ms": latency},
                checks=checks,
                headline=True,
                primary=[
                    "bets_per_s",
                    "bet_answer_p50_ms",
                    "cashout_p50_ms",
                    "cashout_p99_ms",
                    "bets/s × transfer",
                ],
                note="; ".join(
                    run.wallet_violations[:3]
                    + wallet.problems[:3]
                    + run.verdict.problems[:3]
                    + run.db_problems[:3]
                ),
            )
        )
    return rows


def rows_of(base: Result, seamless: Sequence[Result]) -> list[Row]:
    rows = to_rows(base)
    if seamless:
        rows += wallet_rows(base, seamless)
    return rows


def report(result: Result, rows: list[Row]) -> None:
    from bench.report import markdown_table, tables_of

    print()
    for title, trs in tables_of(rows).items():
        print(f"{title}\n")
        print(markdown_table(trs, compact=False))
        print()
    v = result.verdict
    print(
        f"verified {v.checked:,} acknowledged bets: {v.won:,} won ({v.auto_won:,} auto, "
        f"{v.manual_won:,} by hand), {v.lost:,} lost ({v.too_late:,} cash-outs too late), "
        f"{v.refunded:,} refunded; {len(v.problems)} problems"
    )
    for problem in v.problems[:20]:
        print(f"  PROBLEM: {problem}")
    print(
        "the server's ledger after the run (crashd db check): "
        + ("ok" if not result.db_problems else "; ".join(result.db_problems[:5]))
    )
    if result.close_codes:
        print(f"feed close codes: {result.close_codes}")
    failed = [f"{r.key}: {c}" for r in rows for c, ok in r.checks.items() if not ok]
    for f in failed:
        print(f"CHECK FAILED: {f}")


def report_wallet(run: Result) -> None:
    v = run.verdict
    print(
        f"seamless, wallet at {run.wallet_latency_ms:g} ms: verified {v.checked:,} bets, "
        f"{len(v.problems)} problems; ledger "
        + ("ok" if not run.db_problems else "; ".join(run.db_problems[:3]))
        + f"; {len(run.wallet_violations)} contract violations"
    )
    wallet = run.wallet or WalletReconciliation(problems=["not reconciled"])
    print(f"  against the wallet's record: {wallet.summary()}")
    for problem in (v.problems + run.wallet_violations + wallet.problems)[:10]:
        print(f"  PROBLEM: {problem}")


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    if args.serve_child is not None:
        return serve_child(args.serve_child)
    configure(args, argv)
    skips: list[Skip] = []
    t0 = time.perf_counter()
    result, seamless = execute_all(args, None, skips)
    for s in skips:
        print(f"game: skipped {s.what}: {s.why}")
    rows = rows_of(result, seamless)
    report(result, rows)
    for run in seamless:
        report_wallet(run)
    print(f"game: {time.perf_counter() - t0:.1f} s wall")
    if args.json is not None:
        args.json.write_text(json.dumps([r.to_json() for r in rows], indent=1))
    return 0 if all(ok for r in rows for ok in r.checks.values()) else 1


def run(ctx: Context) -> list[Row]:
    if ctx.quick:
        argv = ["--quick"]
    else:
        # Setup (funding, tokens, 2,500 connections) and verification take ~45 s; a
        # round of 5 s betting, 3 s pause and a 1.3x-6x crash ~25 s.
        rounds = int(clamp((ctx.seconds - 45) // 25, 2, 5))
        argv = ["--rounds", str(rounds)]
    ctx.note("equivalent: python -m bench game " + " ".join(argv))
    args = configure(parser().parse_args(argv), argv)
    skips: list[Skip] = []
    result, seamless = execute_all(args, ctx.progress, skips)
    for s in skips:
        ctx.skip(s.what, s.why)
    rows = rows_of(result, seamless)
    report(result, rows)
    for run in seamless:
        report_wallet(run)
    return rows


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))


def plot(rows: list[Row], directory: Path) -> list[tuple[Path, str]]:
    """ECDFs of feed lateness and of cash-out answers and pricing lag (the hello probe
    beside them)."""
    from bench import plots

    feed = next((r for r in rows if r.key == "feed" and r.samples.get("feed_late_ms")), None)
    cash = next((r for r in rows if r.key == "cashout"), None)
    hello = next((r for r in rows if r.key == "hello/under-load"), None)
    if feed is None and cash is None:
        return []
    plt = plots.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    if feed is not None:
        plots._ecdf(left, [max(x, 0.05) for x in feed.samples["feed_late_ms"]], feed.label)
    left.set_xscale("log")
    left.set_xlabel("feed lateness: receive − tick at_ms (ms)")
    left.set_ylabel("fraction of ticks at or below")
    left.set_title("every player's ticks")
    if cash is not None:
        plots._ecdf(right, cash.samples.get("answer_ms", []), "cash-out: send → answer")
        plots._ecdf(
            right, [max(x, 0.05) for x in cash.samples.get("pricing_lag_ms", [])], "pricing lag"
        )
    if hello is not None:
        plots._ecdf(right, hello.samples.get("answer_ms", []), "hello probe", color="black", ls=":")
    right.set_xscale("log")
    right.set_xlabel("ms")
    right.set_ylabel("fraction at or below")
    right.set_title("manual cash-outs under load")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    title = "Game: feed lateness and cash-out latency with every player connected"
    return [(plots._save(fig, directory / "game-latency.png"), title)]

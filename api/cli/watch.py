"""``crashd watch``: a live terminal view of the game, built on the SDK (``crashd.api.client``).

Shows the running round's multiplier updating in place, its phase, and a scroll of
recent results. Every result is verified here, not taken on trust: the crash point is
recomputed from the revealed game hash and the public salt (``GET /api/v1/fairness``)
with ``crashd.engine.fairness.crash_point``, and a mismatch is shown as such. Each revealed
hash is also checked to hash to the previous round's (the chain runs backwards), so a
gap or a substituted round shows too.

Plain ANSI escape codes, no curses. When stdout is not a terminal (a pipe, a log, a
test) it prints one line per phase change and per result instead. Ctrl-C exits 0.

The view is a pure state (:class:`WatchState`, fed the SDK's stream messages) and two
pure renderers; the driver only moves messages from the feed to the screen.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import httpx
import trio

from crashd.api.client import (
    ChannelMessage,
    FeedError,
    FeedUnavailable,
    ProblemError,
    RestClient,
    Snapshot,
    open_feed,
)
from crashd.api.client.messages import StreamMessage
from crashd.api.wire import LIVE_MULTIPLIER, ROUND_UPDATES
from crashd.engine.curve import format_multiplier
from crashd.engine.fairness import ChainEncoding, FairnessError, crash_point, next_link, parse_hash

from .usage import UsageError

KEY_ENV = "CRASHD_API_KEY"

VERIFIED = "verified"
MISMATCH = "MISMATCH"
UNVERIFIED = "unverified"
"""No salt published yet (or no hash): nothing to recompute with."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "watch",
        help="watch the game live: multiplier, phase, verified results",
        description=(
            "A live view of a crashd server through its API and feed. Each finished round's "
            "crash point is recomputed locally from its revealed hash and the public salt, "
            "and marked verified or MISMATCH."
        ),
    )
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server's REST base URL")
    parser.add_argument(
        "--key", default=None, help=f"API key with read:game_state (default: ${KEY_ENV})"
    )
    parser.add_argument(
        "--once",
        type=int,
        default=None,
        metavar="N",
        help="exit after N rounds have crashed (for scripts and tests)",
    )
    parser.add_argument(
        "--history", type=int, default=10, metavar="N", help="recent results to show (default 10)"
    )
    parser.set_defaults(func=run)


@dataclass(frozen=True)
class Result:
    round_id: int
    crash_point: int | None
    """``None``: the round was voided before a crash point was revealed."""
    game_hash: str | None
    verification: str
    """:data:`VERIFIED`, :data:`MISMATCH` or :data:`UNVERIFIED`; ``voided`` for voids."""
    expected: int | None
    """What the hash and salt give (differs from ``crash_point`` on a mismatch)."""
    chained: bool | None
    """The hash links to the previous round's (``None``: no previous round to check)."""


def verify(
    round_id: int,
    point: int | None,
    game_hash: str | None,
    salt: str | None,
    previous_hash: str | None,
    encoding: ChainEncoding = ChainEncoding.HEX,
    voided: bool = False,
    terminating_hash: str | None = None,
) -> Result:
    """A result, checked: the crash point against the hash and salt, the hash against
    the previous round's (``sha256(hex(h_k)) == h_(k-1)``: games run down the chain) or,
    for the first game, against the published terminating hash."""
    expected: int | None = None
    if voided and point is None:
        status = "voided"
    elif game_hash is None or salt is None or point is None:
        status = UNVERIFIED
    else:
        try:
            expected = crash_point(game_hash, salt)
            status = VERIFIED if expected == point else MISMATCH
        except FairnessError:
            status = MISMATCH
    chained: bool | None = None
    if game_hash is not None:
        try:
            link = next_link(parse_hash(game_hash), encoding)
            if terminating_hash is not None and link == parse_hash(terminating_hash):
                chained = True  # the first game: it hashes to the commitment itself
            elif previous_hash is not None:
                chained = link == parse_hash(previous_hash)
        except FairnessError:
            chained = False
    return Result(round_id, point, game_hash, status, expected, chained)


class WatchState:
    """What the screen shows, updated from stream messages; no I/O."""

    def __init__(
        self,
        salt: str | None,
        history: int,
        encoding: ChainEncoding = ChainEncoding.HEX,
        terminating_hash: str | None = None,
    ) -> None:
        self.salt = salt
        self.encoding = encoding
        self.terminating_hash = terminating_hash
        self.round_id: int | None = None
        self.phase = "connecting"
        self.multiplier = 100
        self.results: deque[Result] = deque(maxlen=max(1, history))
        self.live_results = 0
        """Results seen on the feed (not loaded from history): what ``--once`` counts."""
        self.resyncs = 0

    def add_history(self, rounds: list[Mapping[str, Any]]) -> None:
        """Finished rounds from REST, oldest first."""
        for r in rounds:
            self._record(
                r["round_id"], r.get("crash_point"), r.get("game_hash"), r.get("status") == "voided"
            )

    def _record(
        self, round_id: int, point: int | None, game_hash: str | None, voided: bool
    ) -> Result:
        last = self.results[-1] if self.results else None
        previous = last.game_hash if last is not None and last.round_id == round_id - 1 else None
        result = verify(
            round_id,
            point,
            game_hash,
            self.salt,
            previous,
            self.encoding,
            voided,
            self.terminating_hash,
        )
        self.results.append(result)
        return result

    def apply(self, message: StreamMessage) -> Result | None:
        """Update from one message; returns the new result if a round just ended."""
        if isinstance(message, Snapshot):
            if message.is_resync:
                self.resyncs += 1
            state = (
                message.channels.get(ROUND_UPDATES) or message.channels.get(LIVE_MULTIPLIER) or {}
            )
            if state:
                self.round_id = state.get("round_id", self.round_id)
                self.phase = str(state.get("status", self.phase))
                self.multiplier = int(
                    state.get("multiplier") or state.get("current_multiplier") or 100
                )
            return None
        assert isinstance(message, ChannelMessage)
        kind = message.type
        if kind == "tick":
            self.round_id, self.phase = message["round_id"], "running"
            self.multiplier = int(message["multiplier"])
        elif kind == "betting_opened":
            self.round_id, self.phase, self.multiplier = message["round_id"], "betting", 100
        elif kind == "running":
            self.round_id, self.phase = message["round_id"], "running"
        elif kind in ("crashed", "round_voided"):
            self.round_id = message["round_id"]
            voided = kind == "round_voided"
            self.phase = "voided" if voided else "crashed"
            if message.get("multiplier") is not None:
                self.multiplier = int(message["multiplier"])
            if any(r.round_id == message["round_id"] for r in self.results):
                return None  # already loaded from history
            self.live_results += 1
            return self._record(
                message["round_id"], message.get("crash_point"), message.get("game_hash"), voided
            )
        return None


# -- rendering ---------------------------------------------------------------------------

_RESET, _BOLD, _DIM, _RED, _GREEN, _YELLOW = (
    "\x1b[0m",
    "\x1b[1m",
    "\x1b[2m",
    "\x1b[31m",
    "\x1b[32m",
    "\x1b[33m",
)


def _mult(hundredths: int | None) -> str:
    return "–" if hundredths is None else f"{format_multiplier(hundredths)}x"


def result_line(result: Result) -> str:
    """One result as plain text (line mode, and the body of the screen's rows)."""
    chain = {True: "chained", False: "NOT CHAINED", None: ""}[result.chained]
    detail = ""
    if result.verification == MISMATCH:
        detail = f" (hash and salt give {_mult(result.expected)})"
    hash_part = f"hash {result.game_hash[:16]}…" if result.game_hash else ""
    words = [
        f"round {result.round_id}",
        "voided" if result.verification == "voided" else f"crashed @ {_mult(result.crash_point)}",
        result.verification + detail,
        chain,
        hash_part,
    ]
    return "  ".join(w for w in words if w)


def render_screen(state: WatchState, url: str, width: int = 80) -> str:
    """The whole screen as ANSI text (cursor home, each line cleared, rest erased)."""
    colour = {VERIFIED: _GREEN, MISMATCH: _RED + _BOLD}
    phase_colour = {"running": _GREEN, "betting": _YELLOW, "crashed": _RED, "voided": _RED}
    lines = [
        f"{_BOLD}crashd watch{_RESET}  {url}  {_DIM}(Ctrl-C to quit){_RESET}",
        "",
        f"  round {state.round_id if state.round_id is not None else '–'}   "
        f"{phase_colour.get(state.phase, '')}{state.phase.upper():<10}{_RESET}"
        f"{_BOLD}{_mult(state.multiplier):>10}{_RESET}",
        "",
        f"  {_DIM}recent results (crash point recomputed from hash + salt){_RESET}",
    ]
    for result in reversed(state.results):
        text = result_line(result)[: max(20, width - 4)]
        lines.append(f"  {colour.get(result.verification, _DIM)}{text}{_RESET}")
    if state.salt is None:
        lines.append(
            f"  {_YELLOW}the salt is not published yet: results cannot be verified{_RESET}"
        )
    return "\x1b[H" + "".join(line + "\x1b[K\n" for line in lines) + "\x1b[J"


# -- the driver --------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    key = args.key or os.environ.get(KEY_ENV)
    if not key:
        raise UsageError(f"give --key or set {KEY_ENV} (an API key with read:game_state)")
    if args.once is not None and args.once < 1:
        raise UsageError("--once must be at least 1")
    if args.history < 1:
        raise UsageError("--history must be at least 1")
    out = sys.stdout
    tty = out.isatty()
    try:
        return trio.run(watch, args.url, key, args.once, args.history, out, tty)
    except KeyboardInterrupt:
        return 0
    except BaseExceptionGroup as group:
        if (
            group.subgroup(KeyboardInterrupt) is not None
            and group.subgroup(lambda e: not isinstance(e, (KeyboardInterrupt, BaseExceptionGroup)))
            is None
        ):
            return 0
        raise
    finally:
        if tty:
            out.write("\x1b[?25h\n")  # the cursor back, whatever happened
            out.flush()


async def watch(url: str, key: str, once: int | None, history: int, out: TextIO, tty: bool) -> int:
    def fail(message: str) -> int:
        print(f"crashd watch: error: {message}", file=sys.stderr)
        return 1

    try:
        async with RestClient(url, key) as rest:
            fairness = await rest.fairness()
            encoding = ChainEncoding(fairness.raw.get("chain_encoding", "hex"))
            state = WatchState(fairness.salt, history, encoding, fairness.terminating_hash)
            rounds, _ = await rest.rounds(limit=history)
            state.add_history([r.raw for r in reversed(rounds)])
            ws_url = (await rest.feed_token()).ws_url
            async with open_feed(
                ws_url, api_key=key, channels=[ROUND_UPDATES, LIVE_MULTIPLIER]
            ) as feed:
                return await _show(feed.messages(), state, url, once, out, tty)
    except ProblemError as err:
        return fail(f"{err.code}: {err.detail}")
    except httpx.TransportError as err:
        return fail(f"cannot reach {url}: {err}")
    except (FeedError, FeedUnavailable) as err:
        return fail(f"feed: {err}")


async def _show(
    messages: Any, state: WatchState, url: str, once: int | None, out: TextIO, tty: bool
) -> int:
    write: Callable[[str], Any] = out.write
    if tty:
        write("\x1b[?25l\x1b[2J")  # hide the cursor, clear once; then redraw in place
    else:
        for past in state.results:
            write(result_line(past) + " (history)\n")
        out.flush()
    last_phase: tuple[int | None, str] | None = None
    async for message in messages:
        result = state.apply(message)
        if tty:
            write(render_screen(state, url))
        else:
            phase = (state.round_id, state.phase)
            if result is not None:
                write(result_line(result) + "\n")
            elif phase != last_phase and state.phase in ("betting", "running"):
                write(f"round {state.round_id} {state.phase}\n")
            last_phase = phase
        out.flush()
        if once is not None and state.live_results >= once:
            return 0
    return 0

"""The audit: every check a third party can make of a run of transcripts and receipts.

Per transcript: its signature; its format; the crash point, recomputed from the game
hash and the salt; the chain (its ``prev`` is the hash of the round before, and its game
hash hashes to that round's game hash: the Bustabit chain, played backwards); the seal's
signature and its Merkle root over the bets the re-run had in play at the start; the
re-run (``replay``), which must reproduce the log, every outcome, the force point and
the crash exactly; the totals. For a round voided by start-up recovery, whose commands
died with the process, the standing wins are checked by rule instead (paid by the floor
rule, below the crash point, each bet once).

Per receipt: its signature, and that the transcript of its round agrees: a bet's latest
receipt (bet or target change) names a leaf of the seal, a cash-out's receipt an
identical win.

Findings are data (``Finding``): the CLI prints them or their JSON, the browser verifier
follows the same list (docs/fairness.md).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from crashd.engine.bounds import MAX_MULTIPLIER
from crashd.engine.fairness import ChainEncoding, FairnessError, chain_position
from crashd.engine.fairness import crash_point as fair_crash_point

from . import merkle
from .documents import (
    BET,
    CASHOUT,
    RECEIPT,
    SEAL,
    TARGET,
    TRANSCRIPT,
    VERSION,
    SealedBet,
    bet_leaf,
    doc_hash,
    leaf_digest,
    verify,
)
from .replay import ReplayError, rerun
from .transcript import force_point_of, totals_of


@dataclass(frozen=True)
class Finding:
    round_id: int | None
    check: str
    """Which check failed: signature, format, crash_point, chain, game_chain, seal,
    rerun, totals, receipt, terminating."""
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"round_id": self.round_id, "check": self.check, "detail": self.detail}


@dataclass
class AuditReport:
    transcripts: int = 0
    rounds: list[int] = field(default_factory=list)
    receipts: int = 0
    rerun: int = 0
    """Rounds re-run through the round engine (all but those voided by recovery)."""
    findings: list[Finding] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)
    """Receipts of rounds that were not audited (not findings: nothing disagrees)."""

    @property
    def ok(self) -> bool:
        return not self.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "transcripts": self.transcripts,
            "rounds": [self.rounds[0], self.rounds[-1]] if self.rounds else None,
            "rerun": self.rerun,
            "receipts": self.receipts,
            "findings": [f.to_dict() for f in self.findings],
            "unchecked": self.unchecked,
        }


def next_game_hash(game_hash: str, encoding: str) -> str:
    """The game hash of the round before (the chain link towards the terminating hash)."""
    raw = bytes.fromhex(game_hash)
    data = game_hash.encode("ascii") if encoding == "hex" else raw
    return hashlib.sha256(data).hexdigest()


def audit(
    transcripts: Iterable[Mapping[str, Any]],
    keys: Mapping[str, bytes],
    *,
    receipts: Sequence[Mapping[str, Any]] = (),
    terminating_hash: str | None = None,
    chains: Sequence[Mapping[str, Any]] = (),
    max_steps: int = 10_000_000,
) -> AuditReport:
    """``chains``: the chains a server published (``GET /api/v1/fairness`` ``chains``:
    ``terminating_hash`` and ``first_round`` each): the first round audited of each
    chain is walked to its commitment and must be the game ``round_id - first_round +
    1``. ``terminating_hash``: a commitment given without its first round (files): the
    first round audited of its chain is walked to it, and the game it turns out to be
    fixes where the chain began by the transcript's own round number (game ``p`` at
    round ``r``: the chain's game 1 was round ``r - p + 1``, so ``p`` is at most ``r``).
    A chain given in ``chains`` keeps its published first round."""
    report = AuditReport()
    by_round: dict[int, Mapping[str, Any]] = {}
    previous: Mapping[str, Any] | None = None
    for t in transcripts:
        report.transcripts += 1
        round_id = t.get("round_id") if isinstance(t, Mapping) else None
        rid = round_id if type(round_id) is int else None
        findings = _transcript(t, keys, report)
        if rid is not None:
            report.rounds.append(rid)
            if previous is not None:
                findings += _link(previous, t)
            by_round[rid] = t
        report.findings += findings
        previous = t if rid is not None else None
    trusted: dict[str, int | None] = {
        c["terminating_hash"]: c["first_round"]
        for c in chains
        if isinstance(c.get("terminating_hash"), str) and type(c.get("first_round")) is int
    }
    if terminating_hash is not None:
        trusted.setdefault(terminating_hash, None)
    if trusted and report.rounds:
        for first in _chain_starts(by_round):
            report.findings += _terminating(first, trusted, max_steps)
    report.receipts = len(receipts)
    report.findings += _receipts(receipts, by_round, keys, report.unchecked)
    return report


def _transcript(t: Any, keys: Mapping[str, bytes], report: AuditReport) -> list[Finding]:
    rid = t.get("round_id") if isinstance(t, Mapping) else None
    rid = rid if type(rid) is int else None

    def finding(check: str, detail: str) -> Finding:
        return Finding(rid, check, detail)

    problem = verify(t, keys)
    if problem is not None:
        return [finding("signature", problem)]
    if t.get("type") != TRANSCRIPT or t.get("v") != VERSION or rid is None:
        return [finding("format", f"not a version {VERSION} {TRANSCRIPT}")]
    out: list[Finding] = []
    seal = t.get("seal")
    if seal is not None:
        problem = verify(seal, keys)
        if problem is not None:
            out.append(finding("seal", f"the seal's {problem}"))
        elif seal.get("type") != SEAL or seal.get("round_id") != rid:
            out.append(finding("seal", "the seal is not this round's"))
    try:
        if t.get("source") == "ledger":
            out += _from_ledger(t, rid, seal, finding)
        else:
            out += _rerun(t, rid, seal, finding)
            report.rerun += 1
    except ReplayError as exc:
        return out + [finding("format", str(exc))]
    except AssertionError as exc:
        # A log the engine's own invariants refuse (say, a target change of a withdrawn
        # bet): a document no engine wrote, not a reason for the auditor to stop.
        return out + [finding("rerun", f"the round engine cannot play it: {exc}")]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        return out + [finding("format", f"malformed transcript: {type(exc).__name__} {exc}")]
    if t.get("totals") != totals_of(t["log"], t["settlement"]):
        out.append(finding("totals", "the totals do not add up from the settlement"))
    if t.get("force_point") != force_point_of(t["settlement"]):
        out.append(finding("totals", "force_point disagrees with the forced cash-outs"))
    return out


def _crash_point(t: Mapping[str, Any], point: int | None, finding: Any) -> list[Finding]:
    said = t["fairness"].get("crash_point")
    if point != said:
        return [
            finding(
                "crash_point", f"the game hash and salt give {point}, the transcript says {said}"
            )
        ]
    return []


def _rerun(t: Mapping[str, Any], rid: int, seal: Any, finding: Any) -> list[Finding]:
    again = rerun(t)
    out = _crash_point(t, again.crash_point, finding)
    out += [finding("rerun", p) for p in again.problems]
    record = again.record
    if record is None:
        return out
    started = t["clock"].get("started_at")
    if started is not None and record.started_at != started:
        out.append(finding("rerun", f"the engine starts at {record.started_at}"))
    if record.closes_at != t["clock"].get("closes_at"):
        out.append(finding("rerun", f"betting closes at {record.closes_at}, not as recorded"))
    if seal is not None:
        out += _seal(rid, seal, record.sealed, finding)
    elif record.started_at is not None:
        out.append(finding("rerun", "the round started but the transcript has no seal"))
    return out + _same(t, record, finding)


def _from_ledger(t: Mapping[str, Any], rid: int, seal: Any, finding: Any) -> list[Finding]:
    """A transcript written by start-up recovery: no commands to re-run; the seal's
    leaves are the logged bets with instants, the outcomes are checked by rule."""
    fairness = t["fairness"]
    try:
        point = fair_crash_point(fairness["game_hash"], fairness["salt"])
    except (FairnessError, ValueError) as exc:
        return [finding("format", f"fairness inputs: {exc}")]
    out = _crash_point(t, point, finding)
    if seal is not None:
        sealed = [
            SealedBet(e["ticket_id"], e["player"], e["stake"], e["auto_cashout"], e["at"])
            for e in t["log"]
            if e.get("op") == "bet" and e.get("at") is not None
        ]
        out += _seal(rid, seal, sealed, finding)
    return out + _by_rule(t, finding)


def _seal(
    rid: int, seal: Mapping[str, Any], sealed: Sequence[SealedBet], finding: Any
) -> list[Finding]:
    out = []
    root = merkle.root([leaf_digest(b.leaf(rid)) for b in sealed]).hex()
    if seal.get("root") != root:
        out.append(
            finding(
                "seal",
                "the bets in play at the start do not hash to the sealed root "
                "(a bet added, dropped or its target changed after betting closed)",
            )
        )
    if seal.get("bets") != len(sealed) or seal.get("total_stake") != sum(b.stake for b in sealed):
        out.append(finding("seal", "the sealed count or stake differs from the bets in play"))
    return out


def _same(t: Mapping[str, Any], record: Any, finding: Any) -> list[Finding]:
    out = []
    if list(record.log) != list(t["log"]):
        out.append(finding("rerun", "the log differs from what the engine accepts"))
    mine, theirs = list(record.settlement), list(t["settlement"])
    if mine != theirs:
        for i, (a, b) in enumerate(zip(mine, theirs, strict=False)):
            if a != b:
                out.append(
                    finding(
                        "rerun", f"settlement[{i}]: the engine decides {a}, the transcript says {b}"
                    )
                )
                break
        else:
            out.append(
                finding(
                    "rerun", f"the engine settles {len(mine)} entries, the transcript {len(theirs)}"
                )
            )
    if record.crash != t["crash"]:
        out.append(
            finding("rerun", f"the engine crashes {record.crash}, the transcript {t['crash']}")
        )
    if record.void is not None and t["void"] is not None and record.void != t["void"]:
        out.append(finding("rerun", "the void differs"))
    return out


def _by_rule(t: Mapping[str, Any], finding: Any) -> list[Finding]:
    """A round voided by recovery: each sealed (or logged) bet settled once, standing
    wins priced by the floor rule below the crash point, the rest refunded."""
    out = []
    stakes = {e["ticket_id"]: e["stake"] for e in t["log"] if e.get("op") == "bet"}
    seen: set[str] = set()
    stop = min(t["fairness"]["crash_point"], MAX_MULTIPLIER)
    for entry in t["settlement"]:
        ticket = entry.get("ticket_id")
        if ticket in seen or ticket not in stakes:
            out.append(finding("rerun", f"{ticket} settled twice or never placed"))
            continue
        seen.add(ticket)
        outcome = entry.get("outcome")
        stake = stakes[ticket]
        if outcome == "won":
            m = entry.get("multiplier")
            if (
                type(m) is not int
                or not 100 <= m <= stop
                or entry.get("payout") != stake * m // 100
            ):
                out.append(finding("rerun", f"{ticket}: a win of {m} is not by the rules"))
        elif outcome == "refunded":
            if entry.get("payout") != stake:
                out.append(finding("rerun", f"{ticket}: refunded {entry.get('payout')} of {stake}"))
        elif outcome == "lost":
            if t.get("void") is not None or entry.get("payout") != 0:
                out.append(finding("rerun", f"{ticket}: lost in a voided round"))
        elif outcome != "withdrawn":
            out.append(finding("rerun", f"{ticket}: {outcome} is not an outcome"))
    missing = set(stakes) - seen
    if missing:
        out.append(finding("rerun", f"bets never settled: {sorted(missing)[:5]}"))
    return out


def _link(before: Mapping[str, Any], t: Mapping[str, Any]) -> list[Finding]:
    rid = t.get("round_id")
    if not isinstance(before.get("round_id"), int) or before["round_id"] + 1 != rid:
        return [
            Finding(
                rid if isinstance(rid, int) else None,
                "chain",
                f"round {rid} does not follow {before.get('round_id')}",
            )
        ]
    out = []
    if t.get("prev") != doc_hash(before):
        out.append(Finding(rid, "chain", "prev is not the hash of the round before"))
    try:
        fairness = t["fairness"]
        link = next_game_hash(fairness["game_hash"], fairness.get("chain_encoding", "hex"))
        if fairness["terminating_hash"] != before["fairness"]["terminating_hash"]:
            # A rotation: this round is game 1 of the next chain, whose game hash
            # hashes to that chain's commitment, not to the round before's game.
            if link != fairness["terminating_hash"]:
                out.append(
                    Finding(
                        rid,
                        "game_chain",
                        "the first round of a chain must be its game 1 (its game hash "
                        "hashes to the chain's terminating hash)",
                    )
                )
        elif link != before["fairness"]["game_hash"]:
            out.append(
                Finding(rid, "game_chain", "its game hash does not hash to the round before's")
            )
    except (KeyError, TypeError, ValueError):
        out.append(Finding(rid, "game_chain", "no game hash to link"))
    return out


def _chain_starts(by_round: Mapping[int, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The first transcript audited of each chain (by its terminating hash)."""
    seen: set[Any] = set()
    out = []
    for rid in sorted(by_round):
        t = by_round[rid]
        fairness = t.get("fairness")
        name = fairness.get("terminating_hash") if isinstance(fairness, Mapping) else None
        if name not in seen:
            seen.add(name)
            out.append(t)
    return out


def _terminating(
    t: Mapping[str, Any], trusted: Mapping[str, int | None], max_steps: int
) -> list[Finding]:
    rid = t.get("round_id")
    try:
        fairness = t["fairness"]
        terminating = fairness["terminating_hash"]
        if terminating not in trusted:
            return [
                Finding(
                    rid, "terminating", f"its chain {terminating} is not a published commitment"
                )
            ]
        if trusted[terminating] is None and isinstance(rid, int):
            max_steps = min(max_steps, max(rid, 0))  # game p is at round p or later
        position = chain_position(
            fairness["game_hash"], terminating, max_steps, ChainEncoding(fairness["chain_encoding"])
        )
    except (KeyError, TypeError, ValueError, FairnessError) as exc:
        return [Finding(rid, "terminating", f"cannot walk the chain: {exc}")]
    first = trusted[terminating]
    if first is None:
        # No published first round: the walk says which game this round is, and its
        # own round number says where the chain began.
        if position is None or position < 1:
            return [
                Finding(
                    rid,
                    "terminating",
                    f"the game hash is no game of the chain {terminating} up to "
                    f"game {max_steps} (round {rid} can be no later game)",
                )
            ]
        return []
    game = rid - first + 1 if isinstance(rid, int) else None
    if position != game:
        return [
            Finding(
                rid,
                "terminating",
                f"the game hash is game {position} of the committed chain, not {game}",
            )
        ]
    return []


def _receipts(
    receipts: Sequence[Mapping[str, Any]],
    by_round: Mapping[int, Mapping[str, Any]],
    keys: Mapping[str, bytes],
    unchecked: list[str],
) -> list[Finding]:
    out: list[Finding] = []
    latest: dict[tuple[int, str], Mapping[str, Any]] = {}
    for i, r in enumerate(receipts):
        problem = verify(r, keys)
        rid = r.get("round_id") if isinstance(r, Mapping) else None
        rid = rid if type(rid) is int else None
        if problem is not None:
            out.append(Finding(rid, "receipt", f"receipt {i}: {problem}"))
            continue
        if r.get("type") != RECEIPT or r.get("kind") not in (BET, TARGET, CASHOUT) or rid is None:
            out.append(Finding(rid, "receipt", f"receipt {i}: not a receipt"))
            continue
        t = by_round.get(rid)
        ticket: Any = r.get("ticket_id")
        if t is None:
            unchecked.append(f"receipt {i} ({ticket}): round {rid} was not audited")
            continue
        if r["kind"] == CASHOUT:
            wins = [
                e
                for e in t["settlement"]
                if e.get("ticket_id") == ticket and e.get("outcome") == "won"
            ]
            want = {
                "ticket_id": ticket,
                "outcome": "won",
                "cashout": r.get("cashout"),
                "at": r.get("at"),
                "elapsed_ms": r.get("elapsed_ms"),
                "multiplier": r.get("multiplier"),
                "payout": r.get("payout"),
            }
            if not wins:
                out.append(
                    Finding(rid, "receipt", f"cash-out of {ticket} is missing from the transcript")
                )
            elif wins[0] != want and not _recovered_win(t, wins[0], want):
                out.append(
                    Finding(rid, "receipt", f"cash-out of {ticket} differs from the transcript")
                )
            continue
        fields: Any = (r.get("player"), r.get("stake"), r.get("auto_cashout"), r.get("placed_at"))
        leaf = bet_leaf(rid, ticket, *fields)
        if r.get("leaf") != leaf_digest(leaf).hex():
            out.append(
                Finding(rid, "receipt", f"receipt {i} ({ticket}): its leaf is not its bet's")
            )
            continue
        key = (rid, ticket)
        if key not in latest or r.get("at", 0) >= latest[key].get("at", 0):
            latest[key] = r
    for (rid, ticket), r in latest.items():
        out += _bet_receipt(by_round[rid], rid, ticket, r)
    return out


def _bet_receipt(
    t: Mapping[str, Any], rid: int, ticket: str, r: Mapping[str, Any]
) -> list[Finding]:
    """The latest bet or target receipt of a ticket against its round's transcript."""
    bets = [e for e in t["log"] if e.get("op") == "bet" and e.get("ticket_id") == ticket]
    if not bets:
        return [Finding(rid, "receipt", f"bet {ticket} is missing from the transcript")]
    bet = bets[0]
    if bet.get("at") is None:  # recovery of a round that died betting: no instant kept
        bet = {**bet, "at": r.get("placed_at")}
    if (bet.get("player"), bet.get("stake"), bet.get("at")) != (
        r.get("player"),
        r.get("stake"),
        r.get("placed_at"),
    ):
        return [Finding(rid, "receipt", f"bet {ticket} differs from its receipt")]
    if t.get("source") == "ledger":
        recorded = True  # recovery logs each bet with its sealed target only
    elif r.get("kind") == BET:
        recorded = bet.get("auto_cashout") == r.get("auto_cashout")
    else:
        recorded = any(
            e.get("op") == "target"
            and e.get("ticket_id") == ticket
            and (e.get("at"), e.get("auto_cashout")) == (r.get("at"), r.get("auto_cashout"))
            for e in t["log"]
        )
    if not recorded:
        return [Finding(rid, "receipt", f"bet {ticket}: its target is not the one it was given")]
    withdrawn = any(
        e.get("ticket_id") == ticket and e.get("outcome") == "withdrawn" for e in t["settlement"]
    )
    if t.get("seal") is not None and not withdrawn:
        if _sealed_targets(t).get(ticket, "absent") != r.get("auto_cashout"):
            return [Finding(rid, "receipt", f"bet {ticket}: its target is not the one sealed")]
    return []


def _sealed_targets(t: Mapping[str, Any]) -> dict[str, int | None]:
    """Each bet's target at the start, from the log (the seal's root is checked against
    the re-run's bets separately)."""
    targets: dict[str, int | None] = {}
    started = t["clock"].get("started_at")
    for e in t["log"]:
        if e.get("op") == "bet":
            targets[e["ticket_id"]] = e.get("auto_cashout")
        elif e.get("op") == "target" and (started is None or e["at"] < started):
            targets[e["ticket_id"]] = e.get("auto_cashout")
    return targets


def _recovered_win(t: Mapping[str, Any], win: Mapping[str, Any], want: Mapping[str, Any]) -> bool:
    """A win in a transcript written by recovery is recorded without instant and kind."""
    return t.get("source") == "ledger" and (win.get("multiplier"), win.get("payout")) == (
        want["multiplier"],
        want["payout"],
    )

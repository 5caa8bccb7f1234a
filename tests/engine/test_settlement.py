"""Verifiable settlement, the pure part: canonical JSON, the Merkle tree, signed
documents, and the property of issue 17 — random rounds played by the real sequencer,
recorded, signed and chained, audit clean through the re-run; and every single mutation
of a transcript is detected, whether or not the forger could sign it again."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import assume, event, given, settings
from hypothesis import strategies as st

from crashd.engine.fairness import ChainReader, build_chain
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.events import (
    AutoCashoutChanged,
    BetAccepted,
    CashedOut,
    RoundSettled,
    RoundVoided,
)
from crashd.engine.round.sequencer import Sequencer
from crashd.engine.settlement import merkle
from crashd.engine.settlement import transcript as T
from crashd.engine.settlement.audit import audit
from crashd.engine.settlement.canonical import (
    MAX_SAFE_INTEGER,
    b64url,
    canonical,
    check_domain,
    from_b64url,
)
from crashd.engine.settlement.documents import (
    Pseudonyms,
    Signer,
    bet_receipt,
    cashout_receipt,
    doc_hash,
    verify,
)
from crashd.engine.settlement.recorder import Recorder, build_record

EPOCH = 1_767_225_600_000
SALT = "settlement-tests"
SPEC = build_chain(b"\x17" * 32, 400, interval=20)
SIGNER = Signer(Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
FORGER = Signer(Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
PSEUDONYMS = Pseudonyms(b"\x03" * 32)

# -- canonical JSON ---------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
    | st.text(st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(max_codepoint=127), max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(json_values)
def test_canonical_is_rfc8785_on_its_domain(value: Any) -> None:
    assert check_domain(value) is None
    assert canonical(value) == rfc8785.dumps(value)


def test_the_domain_is_integers_strings_booleans_null() -> None:
    assert check_domain({"a": 1.5}) is not None
    assert check_domain({"a": 2**53}) is not None
    assert check_domain({"é": 1}) is not None
    assert check_domain([{"a": [None, True, "x", -(2**53 - 1)]}]) is None


def test_base64url_is_canonical() -> None:
    assert from_b64url(b64url(b"\xff\x00ab")) == b"\xff\x00ab"
    with pytest.raises(ValueError):
        from_b64url("AA==")


@given(st.lists(st.binary(max_size=8), max_size=40), st.data())
def test_merkle_paths_lead_to_the_root(leaves: list[bytes], data: st.DataObject) -> None:
    hashes = [merkle.leaf_hash(x) for x in leaves]
    root = merkle.root(hashes)
    if not hashes:
        assert root == merkle.EMPTY_ROOT
        return
    i = data.draw(st.integers(0, len(hashes) - 1))
    assert merkle.root_from_path(hashes[i], merkle.inclusion_path(hashes, i)) == root


def rfc6962(hashes: list[bytes]) -> bytes:
    """RFC 6962 §2.1 as written: split at the largest power of two below n."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return merkle.node_hash(rfc6962(hashes[:k]), rfc6962(hashes[k:]))


@given(st.lists(st.binary(max_size=4), min_size=1, max_size=70))
def test_merkle_root_is_rfc6962(leaves: list[bytes]) -> None:
    hashes = [merkle.leaf_hash(x) for x in leaves]
    assert merkle.root(hashes) == rfc6962(hashes)


# -- random rounds ----------------------------------------------------------------------

commands = st.lists(
    st.tuples(
        st.integers(1, 900),  # ms since the last command
        st.sampled_from(["bet", "bet", "bet", "cashout", "cashout", "target", "withdraw", "wait"]),
        st.integers(0, 11),  # which user / which bet
        st.integers(1, 5_000),  # stake
        st.one_of(st.none(), st.integers(101, 400)),  # auto target
    ),
    min_size=4,
    max_size=60,
)


RECEIPTS: list[dict[str, Any]] = []
"""The receipts of the last ``play``: what the server answers, signed."""


def receipts_of(events: list[Any], bets: dict[str, dict[str, Any]]) -> None:
    for e in events:
        if isinstance(e, BetAccepted):
            bets[e.ticket] = {
                "player": PSEUDONYMS.of(e.user),
                "stake": e.stake,
                "placed_at": EPOCH + e.at_ms,
                "queued": e.queued,
            }
            b = bets[e.ticket]
            r = bet_receipt(
                e.round_id,
                e.ticket,
                b["player"],
                e.stake,
                e.auto_cashout,
                b["placed_at"],
                queued=e.queued,
            )
            RECEIPTS.append(SIGNER.sign(r))
        elif isinstance(e, AutoCashoutChanged):
            b = bets[e.ticket]
            r = bet_receipt(
                e.round_id,
                e.ticket,
                b["player"],
                b["stake"],
                e.target,
                b["placed_at"],
                queued=b["queued"],
                kind="target",
                at=EPOCH + e.at_ms,
            )
            RECEIPTS.append(SIGNER.sign(r))
        elif isinstance(e, CashedOut) and e.kind == "manual":
            r = cashout_receipt(
                e.round_id,
                e.ticket,
                PSEUDONYMS.of(e.user),
                how=e.kind,
                at=EPOCH + e.at_ms,
                elapsed_ms=e.elapsed_ms,
                multiplier=e.multiplier,
                payout=e.payout,
            )
            RECEIPTS.append(SIGNER.sign(r))


def play(
    first_game: int, max_profit: int | None, script: list[tuple[int, str, int, int, int | None]]
) -> list[dict[str, Any]]:
    """Play the script with the real sequencer; the signed, chained transcripts of
    every round it finished (and their receipts in ``RECEIPTS``)."""
    RECEIPTS.clear()
    receipt_bets: dict[str, dict[str, Any]] = {}
    config = RoundConfig(max_profit=max_profit, betting_ms=1_000, pause_ms=300)
    seq = Sequencer(
        config=config,
        games=ChainReader(SPEC).games(first_game),
        salt=SALT,
        first_game=first_game,
    )
    recorder = Recorder()
    recorder.observe(seq.start(0))
    now, n = 0, 0
    transcripts: list[dict[str, Any]] = []

    def finish(round_id: int) -> None:
        events = recorder.take(round_id)
        assert events is not None
        record = build_record(round_id, events, lambda ms: EPOCH + ms, PSEUDONYMS.of)
        seal = record.seal()
        body = T.from_record(
            record,
            prev=doc_hash(transcripts[-1]) if transcripts else None,
            environment="sandbox",
            fairness=T.fairness_of(
                record.game_hash, SALT, record.crash_point, SPEC.terminating_hash.hex(), "hex"
            ),
            rules=T.rules_of(config),
            seal=SIGNER.sign(seal) if seal is not None else None,
        )
        transcripts.append(SIGNER.sign(body))

    def feed(events: list[Any]) -> None:
        recorder.observe(events)
        receipts_of(events, receipt_bets)
        for e in events:
            if isinstance(e, (RoundSettled, RoundVoided)):
                finish(e.round_id)

    for gap, what, who, stake, target in script:
        now += gap
        bets = list(seq.current.bets)
        if what == "bet":
            n += 1
            feed(seq.place_bet(now, f"t{n}", ("acme", "sandbox", f"u{who}"), stake, target))
        elif what == "cashout" and bets:
            feed(seq.cash_out(now, bets[who % len(bets)]))
        elif what == "target" and bets:
            # (Only open bets: a target change of a withdrawn bet trips an assertion
            # of the round engine, reported in issue 17's notes.)
            ticket = bets[who % len(bets)]
            if seq.current.bets[ticket].state.value == "open":
                feed(seq.set_auto_cashout(now, ticket, target))
        elif what == "withdraw" and bets:
            feed(seq.withdraw_bet(now, bets[who % len(bets)], "funding_failed"))
        else:
            feed(seq.advance(now))
    # Play out the current round (in steps: a long stall would start it late), or
    # sometimes void it instead; at least two rounds, so there is a chain to check.
    last = seq.current.round_id
    if script[-1][1] == "wait" and seq.current.phase.value in ("betting", "running"):
        feed(seq.void_round(now, "operator"))
    while len(transcripts) < 2 or transcripts[-1]["round_id"] < last:
        now += 100
        feed(seq.advance(now))
    return transcripts


rounds = st.tuples(st.integers(1, 300), st.one_of(st.none(), st.integers(0, 20_000)), commands)


@given(rounds)
def test_random_rounds_audit_clean(spec: tuple[int, int | None, list[Any]]) -> None:
    transcripts = play(*spec)
    assert transcripts
    report = audit(transcripts, SIGNER.keys(), terminating_hash=SPEC.terminating_hash.hex())
    assert report.ok, report.findings
    assert report.rerun == len(transcripts)
    for t in transcripts:
        # What is served is exactly what was signed: JSON text round-trips.
        assert json.loads(json.dumps(t)) == t
        assert verify(t, SIGNER.keys()) is None


# -- mutations --------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any], st.DataObject], bool]
"""Changes one thing in a transcript (in place); False if it does not apply."""


def _pick(data: st.DataObject, items: list[Any]) -> Any:
    return items[data.draw(st.integers(0, len(items) - 1))] if items else None


def wins(t: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in t["settlement"] if e["outcome"] == "won"]


def m_payout(t: dict[str, Any], data: st.DataObject) -> bool:
    e = _pick(data, wins(t))
    if e is None:
        return False
    e["payout"] += data.draw(st.sampled_from([-1, 1, 100]))
    return True


def m_multiplier(t: dict[str, Any], data: st.DataObject) -> bool:
    e = _pick(data, wins(t))
    if e is None:
        return False
    e["multiplier"] += data.draw(st.sampled_from([-1, 1]))
    e["payout"] = _stake(t, e["ticket_id"]) * e["multiplier"] // 100  # a consistent lie
    return True


def m_elapsed(t: dict[str, Any], data: st.DataObject) -> bool:
    e = _pick(data, wins(t))
    if e is None:
        return False
    delta = data.draw(st.sampled_from([-1, 1, 50]))
    e["elapsed_ms"] += delta
    e["at"] += delta
    return True


def sealed(t: dict[str, Any]) -> list[dict[str, Any]]:
    """The bets in play at the start (what the seal committed to)."""
    if t["seal"] is None:
        return []
    out = {x["ticket_id"] for x in t["settlement"] if x["outcome"] != "withdrawn"}
    return [e for e in t["log"] if e["op"] == "bet" and e["ticket_id"] in out]


def m_drop_bet(t: dict[str, Any], data: st.DataObject) -> bool:
    e = _pick(data, sealed(t))
    if e is None:
        return False
    ticket = e["ticket_id"]
    t["log"] = [x for x in t["log"] if x.get("ticket_id") != ticket]
    t["settlement"] = [x for x in t["settlement"] if x.get("ticket_id") != ticket]
    t["totals"] = T.totals_of(t["log"], t["settlement"])
    t["force_point"] = T.force_point_of(t["settlement"])
    return True


def m_add_bet(t: dict[str, Any], data: st.DataObject) -> bool:
    if t["clock"]["started_at"] is None:
        return False
    at = t["clock"]["closes_at"] - 1
    if at < t["clock"]["opened_at"]:
        return False
    bet = {
        "at": at,
        "op": "bet",
        "ticket_id": "t_added",
        "player": PSEUDONYMS.player("acme", "late"),
        "stake": data.draw(st.integers(1, 1000)),
        "auto_cashout": None,
        "queued": False,
    }
    last = max((i for i, e in enumerate(t["log"]) if e["at"] <= at), default=-1)
    t["log"].insert(last + 1, bet)
    lost = {"ticket_id": "t_added", "outcome": "refunded" if t["void"] else "lost"}
    lost["payout"] = bet["stake"] if t["void"] else 0
    t["settlement"].append(lost)
    t["totals"] = T.totals_of(t["log"], t["settlement"])
    return True


def m_target(t: dict[str, Any], data: st.DataObject) -> bool:
    """The target in force at the start: the bet's and every change of it."""
    e = _pick(data, sealed(t))
    if e is None:
        return False
    new = (e["auto_cashout"] or 100) + data.draw(st.integers(1, 50))
    for x in t["log"]:
        if x["ticket_id"] == e["ticket_id"] and x["op"] in ("bet", "target"):
            x["auto_cashout"] = new
    return True


def m_reorder(t: dict[str, Any], data: st.DataObject) -> bool:
    s = t["settlement"]
    pairs = [(i, j) for i in range(len(s)) for j in range(i + 1, len(s)) if s[i] != s[j]]
    pair = _pick(data, pairs)
    if pair is None:
        return False
    i, j = pair
    s[i], s[j] = s[j], s[i]
    return True


def m_prev(t: dict[str, Any], data: st.DataObject) -> bool:
    t["prev"] = "0" * 64 if t["prev"] != "0" * 64 else "1" * 64
    return True


def _stake(t: dict[str, Any], ticket: str) -> int:
    return next(e["stake"] for e in t["log"] if e["op"] == "bet" and e["ticket_id"] == ticket)


MUTATIONS: dict[str, Mutation] = {
    "payout": m_payout,
    "multiplier": m_multiplier,
    "elapsed_ms": m_elapsed,
    "dropped bet": m_drop_bet,
    "added bet": m_add_bet,
    "changed target": m_target,
    "reordered cash-out": m_reorder,
    "broken prev": m_prev,
}


@pytest.mark.parametrize("name", sorted(MUTATIONS))
@settings(max_examples=max(25, settings.default.max_examples // 8))
@given(spec=rounds, resign=st.booleans(), data=st.data())
def test_every_single_mutation_is_detected(
    name: str, spec: tuple[int, int | None, list[Any]], resign: bool, data: st.DataObject
) -> None:
    transcripts = play(*spec)
    index = data.draw(st.integers(0, len(transcripts) - 1))
    if name == "broken prev":
        assume(len(transcripts) > 1)  # a prev link is checked against the round before
        index = max(index, 1)
    forged = copy.deepcopy(transcripts)
    assume(MUTATIONS[name](forged[index], data))
    event("signed again" if resign else "as forged")
    if resign:
        # A forger holding the server's key signs the lie again; the seal it published
        # when betting closed stays what it was.
        forged[index] = SIGNER.sign(forged[index])
    report = audit(forged, SIGNER.keys())
    assert not report.ok, (name, resign)
    if not resign:
        assert any(f.check == "signature" for f in report.findings)


@given(rounds, st.data())
def test_receipts_catch_any_dropped_bet(
    spec: tuple[int, int | None, list[Any]], data: st.DataObject
) -> None:
    """Dropping a bet the seal never saw (withdrawn, or its round voided while betting)
    is consistent with everything signed but the player's receipt, which catches it."""
    transcripts = play(*spec)
    receipts = list(RECEIPTS)
    assert audit(transcripts, SIGNER.keys(), receipts=receipts).ok
    index = data.draw(st.integers(0, len(transcripts) - 1))
    forged = copy.deepcopy(transcripts)
    bets = [e for e in forged[index]["log"] if e["op"] == "bet"]
    assume(bets)
    ticket = _pick(data, bets)["ticket_id"]
    t = forged[index]
    t["log"] = [x for x in t["log"] if x.get("ticket_id") != ticket]
    t["settlement"] = [x for x in t["settlement"] if x.get("ticket_id") != ticket]
    t["totals"] = T.totals_of(t["log"], t["settlement"])
    forged[index] = SIGNER.sign(t)
    report = audit(forged, SIGNER.keys(), receipts=receipts)
    assert any(f.check == "receipt" and ticket in f.detail for f in report.findings)


@given(rounds, st.data())
def test_a_signature_byte_or_a_foreign_key_is_detected(
    spec: tuple[int, int | None, list[Any]], data: st.DataObject
) -> None:
    transcripts = play(*spec)
    t = copy.deepcopy(_pick(data, transcripts))
    raw = bytearray(from_b64url(t["sig"]))
    raw[data.draw(st.integers(0, 63))] ^= 1 << data.draw(st.integers(0, 7))
    t["sig"] = b64url(bytes(raw))
    assert verify(t, SIGNER.keys()) is not None
    assert verify(FORGER.sign(t), SIGNER.keys()) is not None

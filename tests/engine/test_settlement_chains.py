"""Transcripts across a hash-chain rotation (``crashd.api.ops.chains``): round ids run on
from one chain into the next, each chain with its own salt. Each round's transcript
names its own chain (terminating hash) and salt; the audit links the last round of a
chain to game 1 of the next by that chain's commitment, walks the first round of each
chain to its published commitment at ``round_id - first_round + 1``, and catches a
transcript that names the wrong chain or salt."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crashd.api.cli.main import main
from crashd.engine.fairness import ChainReader, build_chain
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.events import RoundSettled, RoundVoided
from crashd.engine.round.sequencer import Sequencer
from crashd.engine.settlement import transcript as T
from crashd.engine.settlement.audit import audit
from crashd.engine.settlement.documents import Pseudonyms, Signer, doc_hash, jwk
from crashd.engine.settlement.recorder import Recorder, build_record

EPOCH = 1_767_225_600_000
ONE = build_chain(hashlib.sha256(b"rotation one").digest(), 3, interval=3)
TWO = build_chain(hashlib.sha256(b"rotation two").digest(), 5, interval=5)
SALTS = {1: "salt-of-chain-1", 2: "salt-of-chain-2"}
SIGNER = Signer(Ed25519PrivateKey.from_private_bytes(b"\x07" * 32))
PSEUDONYMS = Pseudonyms(b"\x08" * 32)
CONFIG = RoundConfig(betting_ms=1_000, pause_ms=300)
CHAINS = [
    {"terminating_hash": ONE.terminating_hash.hex(), "first_round": 1},
    {"terminating_hash": TWO.terminating_hash.hex(), "first_round": 4},
]


def games() -> Iterator[tuple[int, str, str]]:
    """Round ids 1..3 from chain one, 4..8 from chain two (as ChainRegistry.games)."""
    for game, game_hash in ChainReader(ONE).games(1):
        yield game, game_hash, SALTS[1]
    for game, game_hash in ChainReader(TWO).games(1):
        yield 3 + game, game_hash, SALTS[2]


def chain_of(round_id: int) -> tuple[int, str, Any]:
    return (1, SALTS[1], ONE) if round_id <= 3 else (2, SALTS[2], TWO)


def play(misname: int | None = None) -> list[dict[str, Any]]:
    """Eight rounds, a bet in each; ``misname``: that round's transcript names the
    first chain's salt and commitment (as a notary unaware of the rotation would)."""
    seq = Sequencer(config=CONFIG, games=games(), salt=SALTS[1], first_game=1)
    recorder = Recorder()
    transcripts: list[dict[str, Any]] = []

    def feed(events: list[Any]) -> None:
        recorder.observe(events)
        for e in events:
            if not isinstance(e, (RoundSettled, RoundVoided)):
                continue
            events_of = recorder.take(e.round_id)
            assert events_of is not None
            record = build_record(e.round_id, events_of, lambda ms: EPOCH + ms, PSEUDONYMS.of)
            _, salt, spec = chain_of(e.round_id)
            if e.round_id == misname:
                salt, spec = SALTS[1], ONE
            seal = record.seal()
            body = T.from_record(
                record,
                prev=doc_hash(transcripts[-1]) if transcripts else None,
                environment="sandbox",
                fairness=T.fairness_of(
                    record.game_hash, salt, record.crash_point, spec.terminating_hash.hex(), "hex"
                ),
                rules=T.rules_of(CONFIG),
                seal=SIGNER.sign(seal) if seal is not None else None,
            )
            transcripts.append(SIGNER.sign(body))

    feed(seq.start(0))
    now, n = 0, 0
    while len(transcripts) < 8:
        if seq.current.phase.value == "betting" and not seq.current.bets:
            n += 1
            feed(seq.place_bet(now, f"t{n}", ("acme", "sandbox", "ann"), 100, 150))
        now += 100
        feed(seq.advance(now))
    return transcripts


def test_rounds_across_a_rotation_audit_clean() -> None:
    ts = play()
    assert [t["round_id"] for t in ts] == list(range(1, 9))
    assert {t["fairness"]["salt"] for t in ts[:3]} == {SALTS[1]}
    assert {t["fairness"]["salt"] for t in ts[3:]} == {SALTS[2]}
    report = audit(ts, SIGNER.keys(), chains=CHAINS)
    assert report.ok, report.findings
    assert report.rerun == 8
    # One chain's commitment alone: the next chain is not one the auditor was given.
    alone = audit(ts, SIGNER.keys(), terminating_hash=ONE.terminating_hash.hex())
    assert [(f.round_id, f.check) for f in alone.findings] == [(4, "terminating")]


def test_a_round_naming_the_wrong_chain_or_salt_is_caught() -> None:
    for misnamed in (4, 6):
        report = audit(play(misname=misnamed), SIGNER.keys(), chains=CHAINS)
        checks = {(f.round_id, f.check) for f in report.findings}
        assert (misnamed, "crash_point") in checks, report.findings


def test_a_wrong_first_round_is_caught() -> None:
    shifted = [CHAINS[0], {**CHAINS[1], "first_round": 5}]
    report = audit(play(), SIGNER.keys(), chains=shifted)
    assert [(f.round_id, f.check) for f in report.findings] == [(4, "terminating")]


def test_a_commitment_given_alone_is_placed_by_the_rounds_own_numbers(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``crashd audit FILES --terminating HEX``: no first round is published with the
    commitment, so the round audited first is whatever game its walk says (round 4 is
    game 1 of chain two, round 6 its game 3), not game ``round_id``."""
    ts = play()
    two = TWO.terminating_hash.hex()
    for start in (3, 5):  # rounds 4..8 (from game 1), 6..8 (from game 3)
        report = audit(ts[start:], SIGNER.keys(), terminating_hash=two)
        assert report.ok, report.findings
    # A commitment the rounds' chain does not reach is still caught.
    lying = [
        SIGNER.sign(
            {
                **ts[3],
                "fairness": {**ts[3]["fairness"], "terminating_hash": ONE.terminating_hash.hex()},
            }
        )
    ]
    report = audit(lying, SIGNER.keys(), terminating_hash=ONE.terminating_hash.hex())
    assert "terminating" in {f.check for f in report.findings}, report.findings
    assert any("no game of the chain" in f.detail for f in report.findings)
    # The command line, from files: clean from round 6, and a wrong commitment fails.
    files = tmp_path / "rounds.jsonl"
    files.write_text("".join(json.dumps(t) + "\n" for t in ts[5:]))
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"keys": [jwk(SIGNER.public_raw)]}))
    argv = ["audit", str(files), "--keys", str(keys), "--terminating"]
    assert main([*argv, two, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert main([*argv, ONE.terminating_hash.hex(), "--json"]) == 1
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert {(f["round_id"], f["check"]) for f in findings} == {(6, "terminating")}

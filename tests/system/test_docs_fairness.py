"""docs/fairness.md's worked example is real: the two rounds it shows are played here by
the real sequencer, recorded, sealed, signed and chained with the example's key, and
every document, hash and signature in the page must be exactly what comes out; the
page's documents verify with the page's public key; and the auditor passes them."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crashd.engine.fairness import ChainReader, build_chain
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.events import BetAccepted, CashedOut, RoundSettled, RoundVoided
from crashd.engine.round.sequencer import Sequencer
from crashd.engine.settlement import transcript as T
from crashd.engine.settlement.audit import audit
from crashd.engine.settlement.canonical import canonical
from crashd.engine.settlement.documents import (
    Pseudonyms,
    Signer,
    bet_receipt,
    cashout_receipt,
    doc_hash,
    jwk,
    verify,
)
from crashd.engine.settlement.recorder import Recorder, build_record
from support.servers import REPO

DOC = REPO / "docs" / "fairness.md"
EPOCH = 1_767_225_600_000  # engine instant 0 = 2026-01-01T00:00:00Z
SALT = "docs-example-salt-11"
SPEC = build_chain(hashlib.sha256(b"crashd docs example").digest(), 10, interval=10)
SIGNER = Signer(
    Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"crashd docs example key").digest())
)
PSEUDONYMS = Pseudonyms(hashlib.sha256(b"crashd docs example pseudonyms").digest())
CONFIG = RoundConfig()


def user(name: str) -> tuple[str, str, str]:
    return ("acme", "sandbox", name)


def example() -> dict[str, Any]:
    """Round 1 (crashes at 3.56x) and round 2 (1.00x), as the page tells them."""
    seq = Sequencer(config=CONFIG, games=ChainReader(SPEC).games(1), salt=SALT, first_game=1)
    recorder = Recorder()
    out: dict[str, Any] = {"transcripts": [], "receipts": {}}

    def feed(events: list[Any]) -> None:
        recorder.observe(events)
        for e in events:
            if isinstance(e, BetAccepted) and e.ticket == "t_ann":
                r = bet_receipt(
                    e.round_id,
                    e.ticket,
                    PSEUDONYMS.of(e.user),
                    e.stake,
                    e.auto_cashout,
                    EPOCH + e.at_ms,
                    queued=e.queued,
                )
                out["receipts"]["bet"] = SIGNER.sign(r)
            if isinstance(e, CashedOut) and e.kind == "manual":
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
                out["receipts"]["cashout"] = SIGNER.sign(r)
            if isinstance(e, (RoundSettled, RoundVoided)):
                events = recorder.take(e.round_id)
                assert events is not None
                record = build_record(e.round_id, events, lambda ms: EPOCH + ms, PSEUDONYMS.of)
                seal_body = record.seal()
                seal = SIGNER.sign(seal_body) if seal_body is not None else None
                ts = out["transcripts"]
                body = T.from_record(
                    record,
                    prev=doc_hash(ts[-1]) if ts else None,
                    environment="sandbox",
                    fairness=T.fairness_of(
                        record.game_hash,
                        SALT,
                        record.crash_point,
                        SPEC.terminating_hash.hex(),
                        "hex",
                    ),
                    rules=T.rules_of(CONFIG),
                    seal=seal,
                )
                ts.append(SIGNER.sign(body))

    feed(seq.start(0))
    feed(seq.place_bet(1_200, "t_ann", user("ann"), 1_000, 200))
    feed(seq.place_bet(2_500, "t_bob", user("bob"), 2_500))
    feed(seq.place_bet(3_000, "t_cat", user("cat"), 500, 120))
    feed(seq.set_auto_cashout(4_000, "t_cat", 400))
    feed(seq.advance(5_000))  # betting closes, the multiplier starts to rise
    feed(seq.place_bet(6_000, "t_dan", user("dan"), 100))  # queued for round 2
    feed(seq.cash_out(14_000, "t_bob"))  # 9,000 ms in: 1.71x
    feed(seq.advance(40_000))  # 2.00x (ann), the crash at 3.56x, the pause
    feed(seq.advance(52_000))  # round 2: betting, then a crash at 1.00x
    return out


def blocks() -> dict[str, str]:
    """The page's checked blocks: ```json after an <!-- example:NAME --> marker."""
    text = DOC.read_text()
    found = dict(re.findall(r"<!-- example:([a-z0-9_-]+) -->\n```[a-z]*\n(.*?)\n```", text, re.S))
    assert found, "no example blocks in docs/fairness.md"
    return found


def expected() -> dict[str, str]:
    ex = example()
    t1, t2 = ex["transcripts"]
    return {
        "keys": json.dumps({"keys": [jwk(SIGNER.public_raw)]}, indent=2),
        "transcript-1": json.dumps(t1, indent=2),
        "transcript-1-bytes": canonical({k: v for k, v in t1.items() if k != "sig"}).decode(),
        "transcript-1-hash": doc_hash(t1),
        "transcript-2-prev": t2["prev"],
        "seal-1": canonical(t1["seal"]).decode(),
        "receipt-bet": canonical(ex["receipts"]["bet"]).decode(),
        "receipt-cashout": canonical(ex["receipts"]["cashout"]).decode(),
        "leaf-ann": json.dumps(
            {
                k: ex["receipts"]["bet"][k]
                for k in ("round_id", "ticket_id", "player", "stake", "auto_cashout", "placed_at")
            },
            separators=(",", ":"),
            sort_keys=True,
        ),  # fmt: skip
        "partner-secret": PSEUDONYMS.partner_secret("acme").hex(),
    }


def test_the_worked_example_is_what_the_code_produces() -> None:
    page, want = blocks(), expected()
    missing = set(want) - set(page)
    assert not missing, f"docs/fairness.md lacks the example blocks {sorted(missing)}"
    for name, text in want.items():
        assert page[name] == text, f"docs/fairness.md example:{name} is stale:\n{text}"


def test_the_sizes_the_page_states() -> None:
    ex = example()
    assert len(canonical(ex["transcripts"][0]["seal"])) < 400
    assert all(len(canonical(r)) < 450 for r in ex["receipts"].values())
    assert len(canonical(ex["transcripts"][1])) < 2_000


def test_the_pages_documents_verify_and_audit_clean() -> None:
    page = blocks()
    keys = {k["kid"]: SIGNER.public_raw for k in json.loads(page["keys"])["keys"]}
    t1 = json.loads(page["transcript-1"])
    assert (
        canonical({k: v for k, v in t1.items() if k != "sig"}).decode()
        == page["transcript-1-bytes"]
    )
    assert (
        hashlib.sha256(page["transcript-1-bytes"].encode()).hexdigest() == page["transcript-1-hash"]
    )
    for name in ("transcript-1", "seal-1", "receipt-bet", "receipt-cashout"):
        assert verify(json.loads(page[name]), keys) is None, name
    ex = example()
    report = audit(
        ex["transcripts"],
        keys,
        receipts=[json.loads(page["receipt-bet"]), json.loads(page["receipt-cashout"])],
        terminating_hash=SPEC.terminating_hash.hex(),
    )
    assert report.ok and report.rerun == 2, report.findings


if __name__ == "__main__":  # print the blocks, to write the page
    for name, text in expected().items():
        print(f"<!-- example:{name} -->\n```json\n{text}\n```\n")


def test_the_pages_commands_parse() -> None:
    import shlex

    from crashd.api.cli.main import build_parser

    text = DOC.read_text()
    commands = [
        line.strip()
        for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S)
        for line in block.splitlines()
        if line.strip().startswith("crashd ")
    ]
    assert len(commands) >= 3
    for command in commands:
        build_parser().parse_args(shlex.split(command)[1:])

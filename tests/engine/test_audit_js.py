"""The page's auditor (``api/web/audit.js``, run by node) against ``crashd audit``'s
(``engine/settlement/audit.py``): on the Hypothesis rounds of ``test_settlement`` both
audit clean with the same integers (the JS re-run plays every command through its port
of the round engine and must rebuild the transcript's log, outcomes, payouts, force
point and crash exactly), and on every single mutation of a transcript (signed again or
not) both report the same checks failing for the same rounds. Their tables (the
commands each phase takes, the fixed rules) are compared, and canonical JSON too.

Skips without node (CI installs it: ``.ci/run``)."""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from crashd.engine.fairness import crash_point
from crashd.engine.round.config import RoundConfig
from crashd.engine.round.tables import COMMANDS
from crashd.engine.settlement import transcript as T
from crashd.engine.settlement.audit import AuditReport, audit
from crashd.engine.settlement.canonical import canonical
from crashd.engine.settlement.documents import jwk
from support.servers import REPO


def _load(name: str) -> Any:
    """A sibling test module (the suite imports with importlib mode: not by name)."""
    spec = importlib.util.spec_from_file_location(
        f"{name}_cases", Path(__file__).with_name(f"{name}.py")
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The rounds, their player and the mutations are test_settlement's (one home for them).
S = _load("test_settlement")

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None, reason="node is not installed (apt-get install nodejs)"
)

# One request a line on stdin, one answer a line on stdout.
RUNNER = """
import { createInterface } from "node:readline";
import { webcrypto } from "node:crypto";
// Node 18 (Debian's) has WebCrypto, Ed25519 included, but not as a global yet.
if (!globalThis.crypto) globalThis.crypto = webcrypto;
const A = await import("./audit.js");
const keysets = new Map();
for await (const line of createInterface({ input: process.stdin })) {
  const req = JSON.parse(line);
  let answer;
  try {
    if (req.op === "tables") {
      answer = { commands: A.COMMANDS, fixed: A.FIXED_RULES, fields: A.CONFIG_FIELDS };
    } else if (req.op === "canonical") {
      answer = { text: A.canonicalText(req.value) };
    } else {
      const name = JSON.stringify(req.keys);
      if (!keysets.has(name)) keysets.set(name, await A.importKeys(req.keys));
      const keys = keysets.get(name);
      answer = req.op === "round"
        ? await A.auditRound(req.transcript, keys, req.previous)
        : await A.audit(req.transcripts, keys);
    }
  } catch (err) {
    answer = { error: `${err.name}: ${err.message}\\n${err.stack}` };
  }
  process.stdout.write(JSON.stringify(answer) + "\\n");
}
"""


class Node:
    """A node process holding the page's modules (copied as an ES module package)."""

    def __init__(self, where: Path) -> None:
        for js in (REPO / "api" / "web").glob("*.js"):
            shutil.copy(js, where / js.name)
        (where / "package.json").write_text('{"type": "module"}')
        (where / "runner.js").write_text(RUNNER)
        assert NODE is not None
        self.proc = subprocess.Popen(
            [NODE, "runner.js"],
            cwd=where,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **request: Any) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = json.loads(self.proc.stdout.readline())
        assert "error" not in answer, answer["error"]
        return answer

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    n = Node(tmp_path_factory.mktemp("audit-js"))
    yield n
    n.close()


KEYS = {"keys": [jwk(S.SIGNER.public_raw)]}


def checks(findings: list[Any]) -> set[tuple[Any, str]]:
    return {
        (f.round_id, f.check) if not isinstance(f, dict) else (f["round_id"], f["check"])
        for f in findings
    }


def both(node: Node, transcripts: list[dict[str, Any]]) -> tuple[AuditReport, Any]:
    return audit(transcripts, S.SIGNER.keys()), node.ask(
        op="audit", keys=KEYS, transcripts=transcripts
    )


def test_the_tables_are_the_engines(node: Node) -> None:
    tables = node.ask(op="tables")
    assert tables["commands"] == {
        phase.value: {command.value: reason for command, reason in row.items()}
        for phase, row in COMMANDS.items()
    }
    rules = T.rules_of(RoundConfig())
    assert tables["fields"] == list(T._CONFIG_FIELDS)
    assert tables["fixed"] == {k: v for k, v in rules.items() if k not in T._CONFIG_FIELDS}


@settings(max_examples=50)
@given(S.json_values)
def test_canonical_json_is_the_servers(node: Any, value: Any) -> None:
    assert node.ask(op="canonical", value=value)["text"].encode() == canonical(value)


@given(S.rounds)
def test_random_rounds_audit_clean_in_both(node: Node, spec: Any) -> None:
    transcripts = S.play(*spec)
    py, js = both(node, transcripts)
    assert py.ok, py.findings
    assert js["ok"], js["findings"]
    assert (js["rerun"], js["rounds"]) == (py.rerun, py.rounds)
    # The page's per-round view: every check passes or is skipped for a reason.
    for i, t in enumerate(transcripts):
        page = node.ask(
            op="round", keys=KEYS, transcript=t, previous=transcripts[i - 1] if i else None
        )
        assert page["ok"], page["findings"]
        verdicts = {c["check"]: c["verdict"] for c in page["checks"]}
        assert set(verdicts.values()) <= {"pass", "skipped"}
        assert verdicts["rerun"] == verdicts["signature"] == "pass"
        assert verdicts["chain"] == ("pass" if i else "skipped")


@pytest.mark.parametrize("name", sorted(S.MUTATIONS))
@settings(max_examples=max(25, settings.default.max_examples // 8))
@given(spec=S.rounds, resign=st.booleans(), data=st.data())
def test_every_mutation_is_flagged_alike(
    node: Node, name: str, spec: Any, resign: bool, data: st.DataObject
) -> None:
    transcripts = S.play(*spec)
    index = data.draw(st.integers(0, len(transcripts) - 1))
    if name == "broken prev":
        assume(len(transcripts) > 1)
        index = max(index, 1)
    forged = copy.deepcopy(transcripts)
    assume(S.MUTATIONS[name](forged[index], data))
    if resign:
        forged[index] = S.SIGNER.sign(forged[index])
    py, js = both(node, forged)
    assert not py.ok
    assert not js["ok"], (name, resign)
    assert checks(js["findings"]) == checks(py.findings), (js["findings"], py.findings)
    # And the page, given that round (and the one before), shows a failed check.
    page = node.ask(
        op="round",
        keys=KEYS,
        transcript=forged[index],
        previous=forged[index - 1] if index else None,
    )
    failed = {c["check"] for c in page["checks"] if c["verdict"] == "fail"}
    rid = forged[index]["round_id"]
    assert failed == {f.check for f in py.findings if f.round_id == rid}, page["checks"]


def test_the_tie_rule_in_both(node: Node) -> None:
    """A target equal to the crash point wins, one a hundredth above loses: rare in
    random rounds, so played on purpose (with a manual cash-out and max profit)."""
    reader = S.ChainReader(S.SPEC)
    game = next(g for g in range(1, 300) if 150 <= crash_point(reader.game_hash(g), S.SALT) <= 400)
    point = crash_point(reader.game_hash(game), S.SALT)
    script = [
        (10, "bet", 0, 1_000, point),
        (10, "bet", 1, 1_000, point + 1),
        (10, "bet", 2, 1_000, point - 1),
        (10, "bet", 3, 1_000, None),
        (1_500, "cashout", 3, 0, None),  # t4, by hand, once running
        (10, "bet", 5, 1_000, None),  # for the next round
    ]
    for max_profit in (None, 100_000):
        transcripts = S.play(game, max_profit, script)
        outcomes = {e["ticket_id"]: e for e in transcripts[0]["settlement"]}
        assert transcripts[0]["fairness"]["crash_point"] == point
        assert (outcomes["t1"]["outcome"], outcomes["t1"]["multiplier"]) == ("won", point)
        assert outcomes["t2"]["outcome"] == "lost"
        assert outcomes["t4"]["cashout"] == "manual"
        py, js = both(node, transcripts)
        assert py.ok and js["ok"], (py.findings, js["findings"])


def test_a_round_voided_by_recovery_is_checked_by_rule_in_both(node: Node, tmp_path: Path) -> None:
    """A round left running by a dead process, voided by start-up recovery (a real
    ledger, test_notary's): checked by rule, not re-run, alike; a win priced above the
    floor rule or a refund short by one is caught alike."""
    N = _load("test_notary")
    db = tmp_path / "ledger.sqlite3"
    N.run(N.play, db, N.notary(), 3, die_running=True)
    N.run(N.play, db, N.notary(), 1)
    ts = N.transcripts(db)
    keys = {"keys": [jwk(N.SIGNER.public_raw)]}
    py = audit(ts, N.SIGNER.keys())
    js = node.ask(op="audit", keys=keys, transcripts=ts)
    assert py.ok and js["ok"], (py.findings, js["findings"])
    assert js["rerun"] == py.rerun == len(ts) - 1
    index = next(i for i, t in enumerate(ts) if t["source"] == "ledger")
    for outcome, delta in (("won", 1), ("refunded", -1)):
        forged = copy.deepcopy(ts)
        entry = next((e for e in forged[index]["settlement"] if e["outcome"] == outcome), None)
        if entry is None:
            continue
        entry["payout"] += delta
        forged[index]["totals"]["payout"] += delta
        forged[index] = N.SIGNER.sign(forged[index])
        py = audit(forged, N.SIGNER.keys())
        js = node.ask(op="audit", keys=keys, transcripts=forged)
        assert not py.ok and not js["ok"]
        assert checks(js["findings"]) == checks(py.findings), (js["findings"], py.findings)


def test_logs_no_engine_could_write_are_findings_in_both(node: Node) -> None:
    """Signed with the server's key but impossible: a command before the one before it
    (the engine clock never goes back) and a target change of a withdrawn bet (the
    round engine's own invariant). Each is a finding in both auditors, never a crash."""
    script = [(10, "bet", i, 100, 150 if i == 1 else None) for i in range(4)]
    base = S.play(1, None, script)[0]
    backwards = copy.deepcopy(base)
    backwards["log"][1]["at"] = backwards["log"][0]["at"] - 500
    withdrawn = copy.deepcopy(base)
    ticket = withdrawn["log"][2]["ticket_id"]
    at = withdrawn["log"][-1]["at"]
    withdrawn["log"] += [
        {
            "at": at + 1,
            "op": "withdraw",
            "ticket_id": ticket,
            "reason": "funding_failed",
            "queued": False,
        },
        {"at": at + 2, "op": "target", "ticket_id": ticket, "auto_cashout": 200, "queued": False},
    ]
    for forged, check in ((backwards, "format"), (withdrawn, "rerun")):
        signed = [S.SIGNER.sign(forged)]
        py, js = both(node, signed)
        assert check in {f.check for f in py.findings}, py.findings
        assert checks(js["findings"]) == checks(py.findings), (js["findings"], py.findings)


def test_a_crowded_round_with_a_force_point_in_both(node: Node) -> None:
    """500 bets (a third without a target), every other one cashed out by hand, and a
    max profit low enough that the force point cashes out everyone still in."""
    bets = 500
    reader = S.ChainReader(S.SPEC)
    game = next(g for g in range(1, 300) if crash_point(reader.game_hash(g), S.SALT) > 300)
    config = RoundConfig(betting_ms=1_000, pause_ms=300, max_bets_per_round=bets, max_profit=20_000)
    seq = S.Sequencer(config=config, games=reader.games(game), salt=S.SALT, first_game=game)
    recorder = S.Recorder()
    recorder.observe(seq.start(0))
    for i in range(bets):
        user = ("acme", "sandbox", f"u{i}")
        target = 101 + i % 190 if i % 3 else None
        recorder.observe(seq.place_bet(1 + i * 900 // bets, f"t{i}", user, 100 + i % 500, target))
    now = 1_000
    recorder.observe(seq.advance(now))
    for i in range(0, bets, 2):
        now += 3
        recorder.observe(seq.cash_out(now, f"t{i}"))
    settled: list[int] = []
    while not settled:
        now += 100
        events = seq.advance(now)
        recorder.observe(events)
        settled = [e.round_id for e in events if isinstance(e, S.RoundSettled)]
    rid = settled[0]
    events_of = recorder.take(rid)
    assert events_of is not None, rid
    record = S.build_record(rid, events_of, lambda ms: S.EPOCH + ms, S.PSEUDONYMS.of)
    body = S.T.from_record(
        record,
        prev=None,
        environment="sandbox",
        fairness=S.T.fairness_of(
            record.game_hash, S.SALT, record.crash_point, S.SPEC.terminating_hash.hex(), "hex"
        ),
        rules=S.T.rules_of(config),
        seal=S.SIGNER.sign(record.seal()),
    )
    t = S.SIGNER.sign(body)
    kinds = {e.get("cashout") for e in t["settlement"]}
    assert {"manual", "auto", "forced"} <= kinds and t["force_point"] is not None
    py, js = both(node, [t])
    assert py.ok and js["ok"], (py.findings, js["findings"])
    forced = next(e for e in t["settlement"] if e.get("cashout") == "forced")
    forced["payout"] += 1
    t["totals"]["payout"] += 1
    py, js = both(node, [S.SIGNER.sign(t)])
    assert checks(js["findings"]) == checks(py.findings) == {(rid, "rerun")}

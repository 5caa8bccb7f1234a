"""A round's page checks its settlement in the browser, as ``crashd audit`` does: a
player plays a round on the game page (one bet cashed out by hand, one by its auto
target), and that round's page (``/rounds/{id}``) shows every check passing — the
Ed25519 signature against ``/.well-known/crashd-keys``, the crash point, the chain link
to the round before's transcript, the seal's Merkle root and the re-run by the rules —
in agreement with ``crashd audit`` on the same transcript. A transcript file with one
payout changed is flagged by the same page: by its signature as forged, by the re-run
when signed again with the server's own key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LiveServer, console_errors, crash_of, wait_for
from pagedriver import Server, next_round, read

from crashd.api.cli.main import main as cli_main
from crashd.engine import signingkey

pytestmark = pytest.mark.usefixtures("server")

READ_AUDIT = """
const status = document.getElementById("audit-status");
return {
  ok: status && status.dataset.ok ? status.dataset.ok === "true" : null,
  text: status ? status.textContent : null,
  checks: Object.fromEntries([...document.querySelectorAll("#audit-checks li")].map(
    (li) => [li.dataset.check, {verdict: li.dataset.verdict, text: li.textContent}])),
};
"""


def audited(driver: Any) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (v := driver.execute_script(READ_AUDIT))["ok"] is not None and v,
        timeout=60,
        what="the settlement check",
    )


@pytest.fixture(scope="module")
def played(driver: Any, server: LiveServer, rest: httpx.Client) -> dict[str, Any]:
    """A round a player took part in on the game page: a demo session, a bet cashed
    out by hand at 1.10x or more and one auto cashed out at 1.20x."""
    driver.get(server.url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(server.url + "/")
    wait_for(lambda: driver.find_elements("id", "demo"), what="the demo button")
    driver.find_element("id", "demo").click()
    wait_for(lambda: read(driver)["action"] == "bet", what="the bet panel")
    wait_for(lambda: read(driver, 2)["action"] == "bet", what="the second bet panel")
    session = read(driver)["session"]
    viewer = rest.post("/api/v1/session/viewer").json()["token"]
    watcher = Server(rest, viewer)
    game = next_round(watcher.state(), crash_of, 140)
    watcher.wait_phase_for_bet(game)
    for field, value in (
        ("stake", "12.34"),
        ("auto", ""),
        ("stake-2", "20.00"),
        ("auto-2", "1.20"),
    ):
        element = driver.find_element("id", field)
        element.clear()
        if value:
            element.send_keys(value)
    driver.find_element("id", "action").click()
    wait_for(lambda: read(driver)["action"] in ("queued", "placed"), what="the first bet")
    driver.find_element("id", "action-2").click()
    wait_for(lambda: read(driver, 2)["action"] in ("queued", "placed"), what="the second bet")
    # Queued bets wait for the round before to crash, whose point is any (CI: a long
    # one outlasted 30 s): a 1,000x round runs ~115 s.
    wait_for(lambda: read(driver)["action"] == "cashout", timeout=180, what="Cash out")
    wait_for(lambda: read(driver)["multiplier"] >= 110, what="1.10x")
    driver.find_element("id", "action").click()
    wait_for(lambda: read(driver)["outcome"] == "won", what="the cash-out's answer")
    wait_for(lambda: read(driver, 2)["outcome"] == "won", timeout=30, what="the auto cash-out")
    watcher.finished(game)
    transcript = wait_for(
        lambda: (
            (
                r := rest.get(
                    f"/api/v1/game/rounds/{game}/transcript",
                    headers={"Authorization": f"Bearer {viewer}"},
                )
            ).status_code
            == 200
            and r.json()
        ),
        what="the round's transcript",
    )
    return {"round": game, "session": session, "transcript": transcript, "viewer": viewer}


def crashd_audit(path: Path, server: LiveServer, capsys: pytest.CaptureFixture[str]) -> Any:
    capsys.readouterr()
    code = cli_main(["audit", str(path), "--keys", server.url, "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == (0 if report["ok"] else 1)
    return report


def test_the_players_round_checks_out_on_its_page(
    driver: Any,
    server: LiveServer,
    played: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    shots: Any,
) -> None:
    game, t = played["round"], played["transcript"]
    wins = [e for e in t["settlement"] if e["outcome"] == "won"]
    assert sorted(e["cashout"] for e in wins) == ["auto", "manual"], t["settlement"]
    driver.get(f"{server.url}/rounds/{game}")
    result = audited(driver)
    shots(driver, f"round-{game}-settlement-checked")
    assert result["ok"] is True, result
    verdicts = {name: c["verdict"] for name, c in result["checks"].items()}
    assert verdicts == {
        "signature": "pass",
        "format": "pass",
        "crash_point": "pass",
        "chain": "pass",
        "game_chain": "pass",
        "seal": "pass",
        "rerun": "pass",
        "totals": "pass",
    }, result
    assert t["key_id"] in result["checks"]["signature"]["text"]
    assert t["seal"]["root"] in result["checks"]["seal"]["text"]
    assert f"{len(t['log'])} commands replayed" in result["checks"]["rerun"]["text"]
    # crashd audit says the same of the same bytes.
    path = tmp_path / "round.json"
    path.write_text(json.dumps(t))
    assert crashd_audit(path, server, capsys)["ok"] is True
    assert console_errors(driver) == []


@pytest.mark.parametrize("signed_again", [False, True], ids=["forged", "signed-again"])
def test_a_transcript_with_a_changed_payout_is_flagged(
    driver: Any,
    server: LiveServer,
    played: dict[str, Any],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    shots: Any,
    signed_again: bool,
) -> None:
    t = json.loads(json.dumps(played["transcript"]))
    win = next(e for e in t["settlement"] if e["cashout"] == "manual")
    win["payout"] += 1
    t["totals"]["payout"] += 1  # a consistent lie: the totals add up
    if signed_again:
        # A forger holding the server's own key: the signature passes, the rules do not.
        key_file = server.config.signing_key_file or signingkey.beside(server.config.chain_file)
        t = signingkey.load(key_file).signer.sign(t)
    path = tmp_path / f"round-{t['round_id']}.json"
    path.write_text(json.dumps(t))
    driver.get(f"{server.url}/verify")
    driver.find_element("id", "transcript-file").send_keys(str(path))
    result = audited(driver)
    shots(driver, f"verify-file-{'signed-again' if signed_again else 'forged'}")
    assert result["ok"] is False, result
    assert "does NOT check out" in result["text"]
    failed = {name for name, c in result["checks"].items() if c["verdict"] == "fail"}
    cli = {f["check"] for f in crashd_audit(path, server, capsys)["findings"]}
    if signed_again:
        assert failed == cli == {"rerun"}, result
        assert "the engine decides" in result["checks"]["rerun"]["text"]
        assert result["checks"]["signature"]["verdict"] == "pass"
    else:
        assert failed == cli == {"signature"}, result
        assert "does not verify" in result["checks"]["signature"]["text"]
        assert result["checks"]["rerun"]["verdict"] == "skipped"

"""The verifier in the browser agrees with ``crashd verify``: on every round the server
has played (its /rounds/{id} page) and on the chain's next games pasted in, at least 20
in all; it recomputes the README's known answer, and rejects a tampered hash."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import random
import subprocess
import sys
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from conftest import SALT, LiveServer, console_errors, game_hash, wait_for

from crashd.api.cli.main import main as cli_main
from crashd.engine.fairness import crash_point

pytestmark = pytest.mark.usefixtures("server", "four_rounds_played")


@pytest.fixture(scope="module")
def four_rounds_played(rest: httpx.Client) -> None:
    """The tests read rounds 1-4 the server played (the game tests have played them by
    now in a whole run; a run of this module alone waits for them)."""
    token = rest.post("/api/v1/session/viewer").json()["token"]
    wait_for(
        lambda: (
            len(
                rest.get(
                    "/api/v1/game/rounds",
                    params={"limit": 4},
                    headers={"Authorization": f"Bearer {token}"},
                ).json()["rounds"]
            )
            >= 4
        ),
        timeout=120,
        what="four finished rounds",
    )


KNOWN_SALT = "0000000000000000004d6ec16dafe9d8370958664c1dc422f452892264c59526"
KNOWN_HASH = "6774ddd3dfe94e2c966d4ca5c5ed6dcd1f6a4fdab87ad12677ee7c5b96d6a3f5"

READ_VERDICT = """
const q = (s) => document.querySelector(s);
const computed = q("#computed"), chain = q("#chain-status"), agree = q("#agreement"), err = q("#error");
return {
  computed: computed ? Number(computed.dataset.value) : null,
  computedText: computed ? computed.textContent : null,
  linked: chain && chain.dataset.linked ? chain.dataset.linked === "true" : null,
  position: chain && chain.dataset.position ? Number(chain.dataset.position) : null,
  chainText: chain ? chain.textContent : null,
  agrees: agree ? agree.dataset.agrees === "true" : null,
  agreeText: agree ? agree.textContent : null,
  error: err ? err.textContent : null,
};
"""


# The stakes in the round page's bets table, in minor units (the page shows 2 decimals).
BET_STAKES = """
return [...document.querySelectorAll('#bets-table tbody tr td:nth-child(2)')].map(
  (td) => Math.round(Number(td.textContent.replace(/,/g, '')) * 100));
"""


def verdict(driver: Any) -> dict[str, Any]:
    return driver.execute_script(READ_VERDICT)  # type: ignore[no-any-return]


def settled(driver: Any) -> dict[str, Any]:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (v := verdict(driver))["linked"] is not None and v, what="the verdict"
    )


def verify_args(game: str, salt: str, terminating: str) -> list[str]:
    return ["verify", "--hash", game, "--salt", salt, "--terminating", terminating, "--json"]


def crashd_verify(args: list[str]) -> dict[str, Any]:
    """``crashd verify … --json``: the command's own entry point, in this process (the
    first game also runs as a real ``crashd`` process, below)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(args) == 0
    return json.loads(out.getvalue())  # type: ignore[no-any-return]


def test_the_verifier_agrees_with_crashd_verify_on_20_rounds(
    driver: Any, server: LiveServer, rest: httpx.Client, shots: Any
) -> None:
    fairness = rest.get("/api/v1/fairness").json()
    token = rest.post("/api/v1/session/viewer").json()["token"]
    played = rest.get(
        "/api/v1/game/rounds", params={"limit": 100}, headers={"Authorization": f"Bearer {token}"}
    ).json()["rounds"]
    played_ids = {r["round_id"] for r in played}
    assert len(played_ids) >= 4, played_ids  # the game tests played these, at least
    games = sorted(played_ids | set(range(1, 21)))
    args = {g: verify_args(game_hash(g), SALT, fairness["terminating_hash"]) for g in games}
    command = subprocess.run(
        [sys.executable, "-m", "crashd.api", *args[1]], capture_output=True, text=True, check=True
    )
    assert json.loads(command.stdout) == crashd_verify(args[1])
    seen: dict[int, dict[str, Any]] = {}
    bets_shown = 0
    for g in games:
        if g in played_ids:
            driver.get(f"{server.url}/rounds/{g}")
        else:
            driver.get(f"{server.url}/verify?" + urlencode({"hash": game_hash(g), "salt": SALT}))
        seen[g] = settled(driver)
        if g in played_ids:
            # The round's bets as the page lists them: the API's, in the order placed.
            listed = rest.get(
                f"/api/v1/game/rounds/{g}/bets",
                params={"limit": 100},
                headers={"Authorization": f"Bearer {token}"},
            ).json()
            stakes = [b["stake"] for b in listed["bets"]]
            wait_for(
                lambda stakes=stakes: (  # type: ignore[misc]
                    driver.execute_script(BET_STAKES) == stakes
                    if stakes
                    else "No bets" in driver.find_element("id", "round-bets").text
                ),
                what=f"round {g}'s bets",
            )
            bets_shown += len(stakes)
        if g == max(played_ids):
            # Its signed transcript, byte for byte the API's (the page shows its SHA-256).
            stored = rest.get(
                f"/api/v1/game/rounds/{g}/transcript",
                headers={"Authorization": f"Bearer {token}"},
            )
            assert stored.status_code == 200, stored.text
            shown = wait_for(
                lambda: driver.find_elements("id", "transcript-sha256"), what="the transcript"
            )
            assert shown[0].text == hashlib.sha256(stored.content).hexdigest()
        if g == min(played_ids):
            shots(driver, f"round-{g}-verified")
        if g == max(games):
            shots(driver, f"verify-pasted-game-{g}")
    for g in games:
        cli = crashd_verify(args[g])
        page = seen[g]
        assert page["computed"] == cli["crash_point_hundredths"], (g, page, cli)
        assert page["computedText"] == cli["crash_point"] + "x"
        assert page["linked"] is True and cli["linked"] is True, (g, page, cli)
        assert page["position"] == cli["position"] == g
        if g in played_ids:
            assert page["agrees"] is True, (g, page)
    print(f"round pages checked: {len(played_ids)}, bets listed on them: {bets_shown}")
    assert console_errors(driver) == []


def test_a_tampered_hash_is_rejected(driver: Any, server: LiveServer, shots: Any) -> None:
    driver.get(f"{server.url}/rounds/3")
    honest = settled(driver)
    assert honest["agrees"] is True and honest["linked"] is True
    field = driver.find_element("id", "hash")
    real = field.get_attribute("value")
    tampered = real[:-1] + ("0" if real[-1] != "0" else "1")
    field.clear()
    field.send_keys(tampered)
    driver.find_element("id", "verify").click()
    wait_for(lambda: verdict(driver)["agrees"] is False, what="the mismatch")
    page = settled(driver)
    shots(driver, "round-3-tampered-hash")
    assert page["computed"] == crash_point(tampered, SALT)
    assert page["agrees"] is False and "does not match" in page["agreeText"].lower()
    assert page["linked"] is False and "not linked" in page["chainText"].lower()
    field.clear()
    field.send_keys("not a hash")
    driver.find_element("id", "verify").click()
    wait_for(lambda: verdict(driver)["error"], what="the refusal")
    assert "64 hex digits" in verdict(driver)["error"]


def test_the_readme_known_answer_in_the_browser(driver: Any, server: LiveServer) -> None:
    driver.get(f"{server.url}/verify?" + urlencode({"hash": KNOWN_HASH, "salt": KNOWN_SALT}))
    page = settled(driver)
    assert page["computedText"] == "3.74x"
    assert page["linked"] is False  # Bustabit's game, not this server's chain


def test_the_browser_formula_matches_python_on_random_games(
    driver: Any, server: LiveServer
) -> None:
    rng = random.Random(14)
    cases = [
        (rng.randbytes(32).hex(), rng.choice(["", SALT, KNOWN_SALT, f"s{rng.random()}"]))
        for _ in range(400)
    ]
    driver.get(f"{server.url}/verify")
    got = driver.execute_async_script(
        """
        const [cases, done] = [arguments[0], arguments[arguments.length - 1]];
        import("/assets/fairness.js")
          .then(async ({ crashPoint }) => {
            const out = [];
            for (const [hash, salt] of cases) out.push(await crashPoint(hash, salt));
            done(out);
          })
          .catch((err) => done(String(err)));
        """,
        cases,
    )
    assert got == [crash_point(h, s) for h, s in cases]

"""The operator's page in headless Chromium against a real server of its own (pausing
and voiding would disturb the player suite's shared game): it signs in with the token
``crashd admin page`` hands out, shows the live round, the house, exposure, RTP, bets
per round, keys, PSP events and the audit log, and its pause, resume, void and revoke
buttons act, each one landing in the audit log."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import LiveServer, browser_config, console_errors, wait_for

from support.security import signed_headers
from support.servers import SIGNING_SECRETS, make_key

ADMIN = "admin:read,admin:control,admin:bankroll"


@pytest.fixture(scope="module")
def ops_server(browser_missing: str | None) -> Iterator[LiveServer]:
    if browser_missing:
        pytest.skip(browser_missing)
    tmp = Path(tempfile.mkdtemp(prefix="crashd-operator-"))
    live = LiveServer(browser_config(tmp))
    live.start()
    try:
        yield live
    finally:
        live.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def operator_link(server: LiveServer) -> tuple[str, str]:
    _, key = make_key(server.config, ADMIN)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        r = client.post("/api/v1/admin/session", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 201, r.text
        return server.url + r.json()["url"], key


def text(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


def audit_actions(driver: Any) -> list[str]:
    # Read in the page (the tables are redrawn every few seconds: no stale elements).
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#audit tr')].map(r => r.dataset.action)"
        )
    )


def click(driver: Any, selector: str) -> bool:
    return bool(
        driver.execute_script(
            "const b = document.querySelector(arguments[0]); if (b) b.click(); return !!b;",
            selector,
        )
    )


def test_the_operator_page_shows_the_house_and_steers_the_game(
    ops_server: LiveServer, driver: Any, shots: Any
) -> None:
    link, key = operator_link(ops_server)
    # Money in the house first (over the API, as `crashd admin bankroll deposit` does).
    with httpx.Client(base_url=ops_server.url, timeout=10) as client:
        body = b'{"amount": 123456, "note": "seed"}'
        headers = signed_headers(
            key, SIGNING_SECRETS[key], "POST", "/api/v1/admin/bankroll/deposit", body, "seed-1"
        )
        r = client.post("/api/v1/admin/bankroll/deposit", content=body, headers=headers)
        assert r.status_code == 201, r.text
    driver.get(link)
    wait_for(lambda: text(driver, "conn") == "Live", what="the page signs in")
    assert "#token" not in driver.current_url  # the token left the address bar
    wait_for(lambda: text(driver, "house-balance") == "1,234.56", what="the bankroll")
    wait_for(lambda: text(driver, "round-id").isdigit(), what="the live round")
    assert text(driver, "env") == "(sandbox)"
    assert "games left" in text(driver, "chain")
    wait_for(lambda: driver.find_elements("css selector", "#keys tr"), what="the keys")
    wait_for(lambda: "bankroll_deposit" in audit_actions(driver), what="the audit log")
    shots(driver, "operator-page")
    # Pause: the page says so and offers resume.
    driver.find_element("id", "pause").click()
    wait_for(lambda: "paused" in text(driver, "round-phase"), what="paused")
    wait_for(lambda: "pause" in audit_actions(driver), what="the pause in the audit log")
    assert driver.find_element("id", "resume").is_enabled()
    assert "paused" in text(driver, "banner")
    shots(driver, "operator-paused")
    driver.find_element("id", "resume").click()
    wait_for(lambda: "paused" not in text(driver, "round-phase"), what="resumed")
    # Void: when a round takes bets, the button voids it (the page asks first). A click
    # that lands as betting closes is refused with its code and changes nothing; the
    # next round's click then voids.
    driver.execute_script("window.confirm = () => true;")
    refused = False
    for _ in range(5):
        wait_for(lambda: driver.find_element("id", "void").is_enabled(), what="a voidable round")
        driver.execute_script("document.getElementById('action-result').textContent = ''")
        driver.find_element("id", "void").click()
        result = wait_for(lambda: text(driver, "action-result"), what="the void's answer")
        if result.startswith("Done"):
            break
        assert "round_not_voidable" in result, result
        refused = True
        wait_for(lambda: not driver.find_element("id", "void").is_enabled(), what="betting over")
    else:
        raise AssertionError("five voids in a row were too late")
    wait_for(lambda: "void" in audit_actions(driver), what="the void in the audit log")
    # Revoke a partner's key from the keys table.
    _, victim = make_key(ops_server.config, "read:game_state")
    with httpx.Client(base_url=ops_server.url, timeout=10) as client:
        assert (
            client.get(
                "/api/v1/game/state", headers={"Authorization": f"Bearer {victim}"}
            ).status_code
            == 200
        )
        keys = client.get("/api/v1/admin/keys", headers={"Authorization": f"Bearer {key}"}).json()
        victim_id = next(
            k["id"]
            for k in keys["keys"]
            if k["scopes"] == ["read:game_state"] and k["partner_id"] == "acme"
        )
        wait_for(
            lambda: click(driver, f'tr[data-key="{victim_id}"] button'),
            what="the new key's revoke button, clicked",
        )
        wait_for(
            lambda: (
                client.get(
                    "/api/v1/game/state", headers={"Authorization": f"Bearer {victim}"}
                ).status_code
                == 401
            ),
            what="the key revoked",
        )
    wait_for(lambda: "key_revoke" in audit_actions(driver), what="the revocation audited")
    assert int(driver.find_element("id", "bets-chart").get_attribute("data-rounds") or 0) >= 1
    # A void refused as betting closed is a 409 the browser logs as a failed load: the
    # one console line the test expects (and only if it saw that refusal).
    assert not [
        e
        for e in console_errors(driver)
        if e.get("level") == "SEVERE"
        and not (refused and "/api/v1/admin/void" in e.get("message", "") and "409" in e["message"])
    ]
    shots(driver, "operator-after")


def test_without_a_token_the_page_says_how_to_sign_in(ops_server: LiveServer, driver: Any) -> None:
    driver.get(ops_server.url + "/operator")
    driver.execute_script("sessionStorage.clear();")
    driver.get(ops_server.url + "/operator")
    wait_for(lambda: driver.find_element("id", "login").is_displayed(), what="the sign-in hint")
    assert text(driver, "conn") == "Not signed in"

"""Every page: the rules come from the live configuration, a phone-sized viewport never
scrolls sideways, and axe-core (vendored, run in the page) finds no serious or critical
accessibility violation (contrast AA included)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import AXE, LiveServer, browser_config, console_errors, wait_for
from pagedriver import money, read

pytestmark = pytest.mark.usefixtures("server")

PAGES = ("/", "/verify", "/rounds/2", "/rules")


def loaded(driver: Any, path: str) -> None:
    """Wait until ``path`` has done its first work (the feed live, the verdict or the
    rules shown)."""
    if path == "/":
        wait_for(lambda: read(driver)["conn"] == "live", what="the feed")
        wait_for(lambda: driver.find_elements("css selector", "#history a"), what="history")
    elif path.startswith("/rounds/"):
        wait_for(lambda: driver.find_elements("id", "chain-status"), what="the verdict")
        wait_for(
            lambda: driver.find_element("id", "chain-status").get_attribute("data-linked"),
            what="the chain check",
        )
    elif path == "/rules":
        wait_for(
            lambda: driver.find_element("id", "rules").get_attribute("data-loaded"),
            what="the rules",
        )


def test_the_rules_are_the_live_configuration(driver: Any, server: LiveServer, shots: Any) -> None:
    driver.get(server.url + "/rules")
    loaded(driver, "/rules")
    shots(driver, "rules")
    config = server.config
    text = driver.find_element("id", "rules").text
    assert driver.find_element("id", "rtp").text == "99%"
    assert driver.find_element("id", "min-stake").text == money(config.min_stake)
    assert driver.find_element("id", "max-stake").text == money(config.max_stake)
    assert driver.find_element("id", "betting-time").text == "0.5 s"
    assert driver.find_element("id", "max-profit-value").text == "No cap"  # max_profit 0
    for rule in (
        "priced by the server’s clock at the moment the server handles it",
        "a target equal to the crash point wins",
        "every bet still open in it is refunded",
        "A slow network can cost a manual cash-out",
        "An auto cash-out does not depend on the network",
        "If your connection drops",
    ):
        assert rule.lower() in text.lower(), rule
    assert console_errors(driver) == []


@pytest.fixture
def phone(driver: Any) -> Iterator[Any]:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        yield driver
    finally:
        driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


@pytest.mark.parametrize("path", PAGES)
def test_a_phone_never_scrolls_sideways(
    phone: Any, server: LiveServer, shots: Any, path: str
) -> None:
    phone.get(server.url + path)
    loaded(phone, path)
    width = phone.execute_script(
        "return [document.documentElement.scrollWidth, window.innerWidth,"
        " document.documentElement.clientWidth]"
    )
    shots(phone, "phone" + (path.replace("/", "-") if path != "/" else "-game"))
    assert width[1] == 390
    assert width[0] <= width[2], width


def axe_violations(driver: Any) -> list[dict[str, Any]]:
    driver.execute_script(AXE.read_text(encoding="utf-8"))
    found: list[dict[str, Any]] = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        axe.run(document, { resultTypes: ["violations"] })
          .then((r) => done(r.violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.map((n) => n.target.join(" ")).slice(0, 5) }))))
          .catch((e) => done([{ id: "axe-error", impact: "critical", help: String(e), nodes: [] }]));
        """
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


@pytest.mark.parametrize("path", PAGES)
def test_no_serious_accessibility_violations(driver: Any, server: LiveServer, path: str) -> None:
    driver.get(server.url + path)
    loaded(driver, path)
    assert axe_violations(driver) == []


def test_the_view_only_page_is_accessible_too(driver: Any, server: LiveServer, shots: Any) -> None:
    driver.get(server.url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(server.url + "/")
    loaded(driver, "/")
    wait_for(lambda: driver.find_elements("id", "demo"), what="the demo button")
    assert read(driver)["action"] is None  # watching: no bet button
    shots(driver, "game-view-only")
    assert axe_violations(driver) == []


def test_sound_is_off_until_the_player_turns_it_on(driver: Any, server: LiveServer) -> None:
    driver.get(server.url + "/")
    driver.execute_script("localStorage.removeItem('crashd.sound')")
    driver.get(server.url + "/")
    loaded(driver, "/")
    toggle = driver.find_element("id", "sound")
    assert toggle.get_attribute("aria-pressed") == "false" and toggle.text == "Sound: off"
    toggle.click()
    assert toggle.get_attribute("aria-pressed") == "true"
    driver.get(server.url + "/")
    loaded(driver, "/")
    assert driver.find_element("id", "sound").get_attribute("aria-pressed") == "true"
    driver.find_element("id", "sound").click()  # and off again, for the next tests
    assert console_errors(driver) == []


@pytest.fixture(scope="module")
def production(browser_missing: str | None) -> Iterator[LiveServer]:
    """A production server of its own: no demo money, a page without a token watches."""
    if browser_missing:
        pytest.skip(browser_missing)
    tmp = Path(tempfile.mkdtemp(prefix="crashd-production-"))
    live = LiveServer(browser_config(tmp, environment="production"))
    live.start()
    try:
        yield live
    finally:
        live.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def test_in_production_a_page_without_a_token_is_view_only(
    driver: Any, production: LiveServer, shots: Any
) -> None:
    driver.get(production.url + "/")
    loaded(driver, "/")
    who = driver.find_element("id", "who").text
    assert "View only" in who and "casino" in who
    assert driver.find_elements("id", "demo") == []  # no demo money in production
    assert read(driver)["action"] is None and read(driver)["available"] is None
    wait_for(lambda: read(driver)["multiplierPhase"] in ("running", "crashed"), what="a round")
    shots(driver, "game-production-view-only")
    assert axe_violations(driver) == []
    assert console_errors(driver) == []

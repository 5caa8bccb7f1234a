"""The game page for a seamless partner's player, in headless Chromium against a real
crashd and a real mock wallet (``crashd wallet mock``'s) on 127.0.0.1: the operator
launches the page with its launch token; the page shows the wallet's limit beside the
game's and refuses a larger stake; when the wallet fails, the page shows the circuit
breaker's reason in the server's words.

The module has its own server (the shared one plays on crashd's own balances), with the
mock wallet in the server's Trio loop."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import LiveServer, browser_config, console_errors, wait_for
from pagedriver import read

from crashd.api.wallet.mock import MockBook, MockFaults, MockWallet
from support.wallet import CURRENCY, PARTNER, WALLET_SECRET, seamless


class WalletServer(LiveServer):
    """A ``LiveServer`` whose partner ``acme`` plays on a mock wallet started first, in
    the same thread and Trio loop (so the wallet's URL is known before crashd starts)."""

    mock_url: str = ""

    async def _main(self) -> None:
        book = MockBook(self.config.database.parent / "mock-wallet.sqlite3")
        wallet = MockWallet(book, WALLET_SECRET, currency=CURRENCY, faults=MockFaults())
        try:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(wallet.serve, "127.0.0.1", 0)
                self.mock_url = f"http://127.0.0.1:{port}"
                self.config = seamless(self.config, self.mock_url + "/wallet")
                await super()._main()
                nursery.cancel_scope.cancel()
        finally:
            book.close()


@pytest.fixture(scope="module")
def wallet_server(browser_missing: str | None) -> Iterator[WalletServer]:
    if browser_missing:
        pytest.skip(browser_missing)
    tmp = Path(tempfile.mkdtemp(prefix="crashd-wallet-page-"))
    # Two failed debits in a row open the breaker, for longer than the test looks.
    live = WalletServer(
        browser_config(
            tmp, wallet_timeout_ms=500, wallet_breaker_failures=2, wallet_breaker_cooldown_s=120.0
        )
    )
    live.start()
    try:
        yield live
    finally:
        live.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def mock(wallet_server: WalletServer) -> Iterator[httpx.Client]:
    """The mock wallet's admin endpoint."""
    with httpx.Client(base_url=wallet_server.mock_url, timeout=10) as client:
        yield client


def launch(server: WalletServer, mock: httpx.Client, player: str, token: str) -> dict[str, Any]:
    """What the operator's site does: a launch token at its wallet, then crashd's
    launch session for it (``session.verify``)."""
    r = mock.post("/admin/sessions", json={"token": token, "player_id": player, "ttl_s": 3600})
    assert r.status_code == 200, r.text
    r = httpx.post(
        f"{server.url}/api/v1/wallet/session",
        json={"partner_id": PARTNER, "launch_token": token},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def open_page(driver: Any, server: WalletServer, token: str) -> None:
    driver.get(server.url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{server.url}/#token={token}")
    wait_for(lambda: read(driver)["conn"] == "live", what="the feed")


def bet(driver: Any, stake: str) -> None:
    field = driver.find_element("id", "stake")
    field.clear()
    field.send_keys(stake)
    driver.find_element("id", "action").click()


def out_of_betting(server: WalletServer, token: str) -> None:
    """Wait until no round takes bets: a bet placed now is queued for the next round, so
    its debit has the wallet's whole timeout, never a close of betting racing it (a
    loaded machine could otherwise make it miss the close: refused, rightly)."""
    wait_for(
        lambda: (
            httpx.get(
                f"{server.url}/api/v1/game/state",
                headers={"Authorization": f"Bearer {token}"},
                timeout=10,
            ).json()["status"]
            != "betting"
        ),
        what="a round running or crashed",
    )


def debits(mock: httpx.Client, player: str) -> list[dict[str, Any]]:
    """The debits the wallet recorded for ``player``."""
    txs = mock.get("/admin/transactions").json()
    return [t for t in txs if t["call"] == "debit" and t["player_id"] == player]


def crashd_debits(server: WalletServer, player: str) -> int:
    """The debits crashd recorded (each before it is sent) for ``player``."""
    conn = sqlite3.connect(f"file:{server.config.database}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT count(*) FROM wallet_txs WHERE kind = 'debit' AND user_id = ?", (player,)
        ).fetchone()
    finally:
        conn.close()
    return int(row[0])


def test_the_page_shows_the_wallets_limit_and_refuses_a_larger_stake(
    wallet_server: WalletServer, mock: httpx.Client, driver: Any, shots: Any
) -> None:
    r = mock.post("/admin/players", json={"player_id": "kim", "balance": 10_000, "max_stake": 300})
    assert r.status_code == 200, r.text
    session = launch(wallet_server, mock, "kim", "launch-kim")
    assert session["limits"] == {"max_stake": 300}
    open_page(driver, wallet_server, session["token"])
    assert driver.find_element("id", "player").text == "Playing as kim"
    wait_for(lambda: read(driver)["available"] == 10_000, what="kim's wallet balance")
    hint = driver.find_element("id", "stake-hint")
    wait_for(lambda: "your wallet's limit" in hint.text, what="the wallet's limit in the hint")
    assert hint.text == "From 0.01 to 3.00 (your wallet's limit)."
    assert hint.get_attribute("data-wallet-limit") == "300"
    wait_for(lambda: read(driver)["action"] in ("bet", "queued"), what="the bet button")
    bet(driver, "5.00")
    wait_for(lambda: read(driver)["outcome"] == "refused", what="the page's refusal")
    assert read(driver)["result"] == "Your wallet allows stakes up to 3.00."
    shots(driver, "wallet-limit-refused")
    assert debits(mock, "kim") == [] and crashd_debits(wallet_server, "kim") == 0
    out_of_betting(wallet_server, session["token"])
    bet(driver, "2.50")
    wait_for(lambda: read(driver)["outcome"] == "placed", what="the bet's answer")
    assert "2.50" in read(driver)["result"]
    assert [d["amount"] for d in debits(mock, "kim")] == [250]
    wait_for(lambda: read(driver)["available"] == 9_750, what="the debit in the balance")
    assert console_errors(driver) == []


def test_the_page_shows_why_the_wallet_breaker_paused_bets(
    wallet_server: WalletServer, mock: httpx.Client, driver: Any, shots: Any
) -> None:
    r = mock.post("/admin/players", json={"player_id": "lou", "balance": 10_000})
    assert r.status_code == 200, r.text
    session = launch(wallet_server, mock, "lou", "launch-lou")
    open_page(driver, wallet_server, session["token"])
    wait_for(lambda: read(driver)["available"] == 10_000, what="lou's wallet balance")
    r = mock.post("/admin/faults", json={"error_rate": 1.0})  # every call: 503
    assert r.status_code == 200, r.text
    # Debits fail (refused wallet_error: no usable answer, rolled back) until the
    # breaker opens (the page's own balance reads through the wallet fail too, and
    # count): then a bet is refused before the wallet is asked, and the page says why.
    codes: list[str] = []
    for _ in range(4):
        wait_for(lambda: read(driver)["action"] in ("bet", "queued"), what="the bet button")
        driver.execute_script("document.getElementById('result').dataset.outcome = ''")
        out_of_betting(wallet_server, session["token"])
        bet(driver, "1.00")
        wait_for(lambda: read(driver)["outcome"] == "refused", what="the refusal")
        codes.append(driver.find_element("id", "result").get_attribute("data-code"))
        if codes[-1] == "wallet_unavailable":
            break
    assert codes[-1] == "wallet_unavailable" and set(codes[:-1]) <= {"wallet_error"}, codes
    recorded = crashd_debits(wallet_server, "lou")
    assert recorded == len(codes) - 1  # the refused one was never even recorded
    shots(driver, "wallet-breaker-open")
    status = httpx.get(
        f"{wallet_server.url}/api/v1/wallet/status",
        headers={"Authorization": f"Bearer {session['token']}"},
        timeout=10,
    ).json()
    reason = status["breaker"]["reason"]
    assert status["bets"] == "paused" and "http_503" in reason, status
    assert read(driver)["result"] == (
        f"Your bet was not placed: the operator's wallet is failing: {reason}"
    )
    mock.post("/admin/faults", json={"error_rate": 0.0})
    # The page's own balance read through the failing wallet may have been answered 503
    # (wallet_unavailable), which Chromium logs as a failed resource: nothing else.
    errors = [
        e
        for e in console_errors(driver)
        if not ("/api/v1/user/balance" in e["message"] and "status of 503" in e["message"])
    ]
    assert errors == []

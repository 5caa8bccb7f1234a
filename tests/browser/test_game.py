"""The game page in headless Chromium against a real server: it loads clean, draws the
curve without ever running ahead of the server, shows the crash, plays a demo bet and
its cash-out to the exact payout, answers a cash-out sent at the crash, and survives a
cut feed.

The tests share one server and one browser and run in this order (each waits for the
round it needs; the game's first rounds are chosen short, ``conftest.EXPECTED``).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from conftest import LiveServer, console_errors, crash_of, game_hash, wait_for
from pagedriver import RECORD, Server, money, next_round, read, x

from crashd.api.security.signing import sign_request
from crashd.engine.curve import ms_at, multiplier_at
from support.servers import SIGNING_SECRETS, make_key

pytestmark = pytest.mark.usefixtures("server")


def viewer_token(rest: httpx.Client) -> str:
    r = rest.post("/api/v1/session/viewer")
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


@pytest.fixture(scope="module")
def watcher(rest: httpx.Client) -> Server:
    """The server as a view-only page sees it (the test's own REST reads)."""
    return Server(rest, viewer_token(rest))


def test_the_page_loads_clean_and_light(
    driver: Any, server: LiveServer, shots: Any, record_property: Any
) -> None:
    driver.get(server.url + "/")
    wait_for(lambda: read(driver)["conn"] == "live", what="the feed to be live")
    first = wait_for(
        lambda: driver.execute_script(
            "const m = performance.getEntriesByName('crashd:first-curve-frame')[0];"
            "return m ? m.startTime : null"
        ),
        what="the first curve frame",
    )
    shots(driver, "game-viewer")
    weight = driver.execute_script(
        """
        const nav = performance.getEntriesByType("navigation")[0];
        const res = performance.getEntriesByType("resource");
        const statics = res.filter((r) => r.name.includes("/assets/"));
        const api = res.filter((r) => r.name.includes("/api/"));
        const sum = (list, key) => list.reduce((n, r) => n + r[key], 0);
        return {
          html: nav.transferSize, htmlBody: nav.decodedBodySize,
          assets: sum(statics, "transferSize"), assetsBody: sum(statics, "decodedBodySize"),
          assetCount: statics.length, api: sum(api, "transferSize"), apiCount: api.length,
          domContentLoaded: nav.domContentLoadedEventEnd,
        };
        """
    )
    total = weight["html"] + weight["assets"] + weight["api"]
    record_property("first_load_bytes", total)
    record_property("first_curve_frame_ms", round(first))
    print(
        f"\nfirst load: {total:,} bytes transferred (HTML {weight['html']:,}, "
        f"{weight['assetCount']} assets {weight['assets']:,} gzip / {weight['assetsBody']:,} raw, "
        f"{weight['apiCount']} API calls {weight['api']:,}); DOMContentLoaded "
        f"{weight['domContentLoaded']:.0f} ms; first curve frame {first:.0f} ms after navigation"
    )
    assert weight["assetCount"] >= 5  # every module and the stylesheet came over HTTP
    assert total < 100_000, weight  # light: well under 100 kB on the wire
    assert first < 5_000
    assert console_errors(driver) == []


def test_the_curve_moves_and_never_shows_more_than_the_server_reached(
    driver: Any, watcher: Server, shots: Any
) -> None:
    driver.execute_script(RECORD)
    game = next_round(watcher.state(), crash_of, 120)
    started = watcher.wait_running(game)["curve"]["started_at_ms"]
    crash = crash_of(game)
    wait_for(
        lambda: read(driver)["multiplierPhase"] == "running" and read(driver)["multiplier"] > 105,
        what="the curve to rise",
    )
    shots(driver, "game-running")
    wait_for(
        lambda: read(driver)["multiplierText"] == f"Busted @ {x(crash)}",
        timeout=30,
        what=f"the crash at {x(crash)}",
    )
    page = read(driver)
    shots(driver, "game-crashed")
    assert page["phase"].startswith(f"Busted @ {x(crash)}")
    assert page["hash"] == game_hash(game)
    assert f"/rounds/{game}" in page["history"]
    samples = driver.execute_script("return window.__shown")
    crash_at = started + ms_at(crash)
    running = [(t, v) for t, v, phase, r in samples if phase == "running" and r == game]
    values = [v for _, v in running]
    assert len(set(values)) >= 8, values  # it moved, smoothly, many steps
    assert values == sorted(values)  # never backwards
    for t, v in running:
        # The server's multiplier at that instant (the same wall clock on one machine).
        reached = multiplier_at(min(t, crash_at) - started)
        assert v <= reached, (t - started, v, reached)
        assert v < crash or v == crash and t >= crash_at


def test_a_demo_bet_is_cashed_out_and_the_balance_moves_by_the_payout(
    driver: Any, watcher: Server, rest: httpx.Client, shots: Any
) -> None:
    driver.find_element("id", "demo").click()
    wait_for(lambda: read(driver)["action"] == "bet", what="the bet panel")
    page = read(driver)
    wait_for(lambda: read(driver)["available"] is not None, what="the demo balance")
    session = read(driver)["session"]
    assert session["kind"] == "demo" and session["userId"].startswith("demo-")
    me = Server(rest, session["token"])
    before = me.get("/api/v1/user/balance", user_id=session["userId"])["available"]
    wait_for(lambda: read(driver)["available"] == before, what="the page's balance")
    shots(driver, "game-demo-session")

    game = next_round(watcher.state(), crash_of, 138)
    watcher.wait_phase_for_bet(game)
    stake_field = driver.find_element("id", "stake")
    stake_field.clear()
    stake_field.send_keys("25.00")
    driver.find_element("id", "action").click()
    wait_for(lambda: read(driver)["action"] in ("queued", "placed"), what="the bet's answer")
    page = read(driver)
    assert "25.00" in page["result"]
    shots(driver, "game-bet-queued")
    wait_for(lambda: read(driver)["available"] == before - 2500, what="the stake to leave")
    wait_for(lambda: read(driver)["action"] == "cashout", timeout=30, what="Cash out")
    wait_for(lambda: read(driver)["multiplier"] >= 110, what="1.10x")
    shots(driver, "game-cash-out-button")
    driver.find_element("id", "action").click()
    wait_for(lambda: read(driver)["outcome"] == "won", what="the cash-out's answer")
    page = read(driver)
    shots(driver, "game-cashed-out")
    bets = me.get("/api/v1/user/bets", user_id=session["userId"])["bets"]
    bet = next(b for b in bets if b["ticket_id"] == page["ticket"])
    assert bet["status"] == "cashed_out" and bet["round_id"] == game
    assert bet["multiplier"] < crash_of(game)
    assert f"@ {x(bet['multiplier'])}" in page["result"]
    assert f"paid {money(bet['payout'])}" in page["result"]
    after = before - 2500 + bet["payout"]
    wait_for(lambda: read(driver)["available"] == after, what="the payout in the balance")
    assert me.get("/api/v1/user/balance", user_id=session["userId"])["available"] == after
    mine = driver.find_element("id", "my-bets").text
    assert x(bet["multiplier"]) in mine and money(bet["payout"] - 2500) in mine
    live = driver.find_element("id", "live-bets").text
    assert "You" in live and x(bet["multiplier"]) in live


def test_two_bets_in_one_round_one_auto_cashed_out_one_lost(
    driver: Any, watcher: Server, rest: httpx.Client, shots: Any
) -> None:
    session = read(driver)["session"]
    me = Server(rest, session["token"])
    wait_for(lambda: read(driver, 2)["action"] == "bet", what="the second bet panel")
    before = me.get("/api/v1/user/balance", user_id=session["userId"])["available"]
    game = next_round(watcher.state(), crash_of, 125)
    watcher.wait_phase_for_bet(game)
    for field, value in (
        ("stake", "10.00"),
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
    assert "auto cash-out at 1.20x" in read(driver, 2)["result"]
    wait_for(lambda: read(driver, 2)["outcome"] == "won", timeout=30, what="the auto cash-out")
    wait_for(lambda: read(driver)["outcome"] == "lost", timeout=30, what="the loss")
    shots(driver, "game-two-bets")
    first, second = read(driver), read(driver, 2)
    assert second["result"].startswith("Auto cashed out @ 1.20x: paid 24.00")
    assert first["result"] == f"Busted @ {x(crash_of(game))}: lost 10.00."
    bets = {
        b["ticket_id"]: b
        for b in me.get("/api/v1/user/bets", user_id=session["userId"])["bets"]
        if b["round_id"] == game
    }
    assert bets[first["ticket"]]["status"] == "lost"
    assert bets[second["ticket"]]["status"] == "cashed_out"
    assert bets[second["ticket"]]["multiplier"] == 120
    after = before - 1000 - 2000 + 2400
    wait_for(lambda: read(driver)["available"] == after, what="the balance")


def race_the_crash(
    driver: Any, watcher: Server, me: Server, user_id: str, lead_ms: int, shots: Any
) -> str | None:
    """Bet on the next round, click "Cash out" ``lead_ms`` before its crash instant; the
    page's definitive answer (checked against the server's record), or ``None`` if the
    page already knew of the crash (nothing was sent: no race)."""
    game = next_round(watcher.state(), crash_of, 110)
    watcher.wait_phase_for_bet(game)
    driver.find_element("id", "action").click()
    wait_for(lambda: read(driver)["action"] in ("queued", "placed", "cashout"), what="the bet")
    wait_for(lambda: read(driver)["action"] == "cashout", timeout=30, what="Cash out")
    started = watcher.wait_running(game)["curve"]["started_at_ms"]
    crash_at = started + ms_at(crash_of(game))
    clicked = driver.execute_async_script(
        """
        const [at, done] = [arguments[0], arguments[arguments.length - 1]];
        setTimeout(() => {
          const a = document.getElementById("action");
          const armed = a.dataset.state === "cashout" && !a.disabled;
          if (armed) a.click();
          done({armed, at: Date.now()});
        }, Math.max(0, at - Date.now()));
        """,
        crash_at - lead_ms,
    )
    if not clicked["armed"]:
        return None
    answer = wait_for(
        lambda: read(driver)["outcome"] in ("won", "too_late", "lost") and read(driver),
        timeout=20,
        what="a definitive answer",
    )
    shots(driver, f"game-cash-out-at-the-crash-{answer['outcome']}")
    bets = me.get("/api/v1/user/bets", user_id=user_id)["bets"]
    bet = next(b for b in bets if b["round_id"] == game)
    assert answer["ticket"] == bet["ticket_id"], (answer, bet)
    if bet["status"] == "cashed_out":
        assert answer["outcome"] == "won", answer
        assert f"@ {x(bet['multiplier'])}" in answer["result"]
    else:
        assert bet["status"] == "lost", bet
        assert answer["outcome"] in ("too_late", "lost"), answer
        assert x(crash_of(game)) in answer["result"]
    time.sleep(0.5)  # nothing may change it: one answer, never two
    assert read(driver)["result"] == answer["result"]
    return str(answer["outcome"])


def test_a_cash_out_sent_at_the_crash_gets_its_definitive_answer(
    driver: Any, watcher: Server, rest: httpx.Client, shots: Any
) -> None:
    session = read(driver)["session"]
    me = Server(rest, session["token"])
    # ms before the crash instant the click is sent: the first that races wins the test
    for lead_ms in (3, 12, 30):
        outcome = race_the_crash(driver, watcher, me, session["userId"], lead_ms, shots)
        if outcome is not None:
            break
    else:
        raise AssertionError("the click never raced the crash")
    assert console_errors(driver) == []


def test_the_page_recovers_after_the_feed_is_cut(
    driver: Any, server: LiveServer, watcher: Server, shots: Any
) -> None:
    wait_for(lambda: read(driver)["conn"] == "live")
    # Cut it while a round runs, early in a round long enough to watch the page freeze.
    cut_during = next_round(watcher.state(), crash_of, 118)
    watcher.wait_running(cut_during)
    wait_for(
        lambda: (
            (page := read(driver))["round"] == cut_during
            and page["multiplierPhase"] == "running"
            and page["multiplier"] >= 105
        ),
        what="the curve to rise",
    )
    server.cut_feed(down=True)
    # No tick: the curve stops where the last tick left it, and says so ("lag").
    frozen = wait_for(lambda: (page := read(driver))["lagging"] and page, what="the lag badge")
    time.sleep(0.5)
    assert read(driver)["multiplier"] == frozen["multiplier"] < crash_of(cut_during)
    shots(driver, "game-lag-frozen")
    wait_for(lambda: read(driver)["conn"] == "unreachable", what="the outage to show")
    assert "unreachable" in driver.find_element("id", "offline").text.lower()
    shots(driver, "game-server-unreachable")
    # The game goes on without the page: wait for a round to crash during the outage.
    watcher.finished(cut_during)
    server.restore_feed()
    wait_for(lambda: read(driver)["conn"] == "live", timeout=15, what="the feed to come back")
    # Resumed, not reloaded: the round that crashed while the page was cut off is in
    # its history, and the curve moves again.
    wait_for(lambda: f"/rounds/{cut_during}" in read(driver)["history"], what="the missed crash")
    now = watcher.state()["round_id"]
    wait_for(
        lambda: (
            (read(driver)["round"] or 0) >= now
            and read(driver)["multiplierPhase"] in ("running", "crashed")
        ),
        timeout=30,
        what="the live curve",
    )
    shots(driver, "game-reconnected")
    assert driver.execute_script("return performance.getEntriesByType('navigation').length") == 1
    errors = [
        e for e in console_errors(driver) if "WebSocket connection" not in e.get("message", "")
    ]
    assert errors == []


def signed_post(rest: httpx.Client, key: str, path: str, body: dict[str, Any]) -> Any:
    """A partner's backend call: signed with its API key's signing secret."""
    raw = json.dumps(body).encode()
    headers = sign_request(
        SIGNING_SECRETS[key], "POST", path, raw, uuid.uuid4().hex, int(time.time())
    )
    headers |= {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    r = rest.post(path, content=raw, headers=headers)
    assert r.status_code in (200, 201), r.text
    return r.json()


def test_a_partner_opens_the_page_for_its_player_with_a_token_in_the_fragment(
    driver: Any, server: LiveServer, rest: httpx.Client, shots: Any
) -> None:
    _, key = make_key(server.config, "read:game_state,read:balance,write:bet", partner="acme")
    signed_post(rest, key, "/api/v1/sandbox/faucet", {"user_id": "alice", "amount": 5_000})
    token = signed_post(rest, key, "/api/v1/feed/user-token", {"user_id": "alice", "ttl_s": 600})
    driver.get(server.url + "/")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{server.url}/#token={token['token']}")
    # The token leaves the address bar at once (it never went to any server: a fragment).
    wait_for(lambda: "#" not in driver.current_url, what="the token to leave the URL")
    assert "ft_" not in driver.current_url
    wait_for(lambda: read(driver)["conn"] == "live", what="the feed")
    assert driver.find_element("id", "player").text == "Playing as alice"
    wait_for(lambda: read(driver)["available"] == 5_000, what="alice's balance")
    assert read(driver)["action"] in ("bet", "queued", "placed", "cashout")
    assert read(driver)["session"]["kind"] == "player"
    assert driver.find_elements("id", "demo") == []
    shots(driver, "game-partner-player")

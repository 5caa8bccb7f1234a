"""Driving the game page from a test: what the page shows, read from its DOM, and the
server's own view of the same round, read over REST with the page's own token."""

from __future__ import annotations

import time
from typing import Any

import httpx

from crashd.engine.curve import format_multiplier

READ_PAGE = """
const $ = (id) => document.getElementById(id);
const n = arguments[0] || "";
const m = $("multiplier"), a = $("action" + n), r = $("result" + n), b = $("balance");
let session = null;
try { session = JSON.parse(sessionStorage.getItem("crashd.session") || "null"); } catch (e) {}
return {
  conn: $("conn").dataset.state,
  phase: $("phase").textContent,
  multiplier: m.dataset.value ? Number(m.dataset.value) : null,
  multiplierText: m.textContent,
  multiplierPhase: m.dataset.phase,
  round: m.dataset.round ? Number(m.dataset.round) : null,
  action: a.hidden ? null : a.dataset.state,
  actionText: a.textContent,
  actionEnabled: !a.disabled,
  outcome: r.dataset.outcome || null,
  result: r.textContent,
  ticket: r.dataset.ticket || null,
  available: b.dataset.available ? Number(b.dataset.available) : null,
  history: [...document.querySelectorAll("#history a")].map((l) => l.getAttribute("href")),
  hash: $("crash-hash").dataset.hash || "",
  lagging: !$("lag").hidden,
  session,
};
"""

# Every change of the shown multiplier, with the browser's wall clock (the same clock
# as the server's on this machine).
RECORD = """
if (!window.__shown) {
  window.__shown = [];
  const m = document.getElementById("multiplier");
  new MutationObserver(() => {
    window.__shown.push([Date.now(), Number(m.dataset.value), m.dataset.phase, Number(m.dataset.round)]);
  }).observe(m, { childList: true, characterData: true, subtree: true, attributes: true });
}
"""


def read(driver: Any, panel: int = 1) -> dict[str, Any]:
    """The page as a player sees it (``panel`` 2: the second bet panel's button and
    answer)."""
    return driver.execute_script(READ_PAGE, "" if panel == 1 else f"-{panel}")  # type: ignore[no-any-return]


def x(hundredths: int) -> str:
    return f"{format_multiplier(hundredths)}x"


def money(minor: int) -> str:
    """The page's money format (two decimals, thousands separated)."""
    whole, frac = divmod(abs(minor), 100)
    return f"{'−' if minor < 0 else ''}{whole:,}.{frac:02d}"


class Server:
    """The server's side of the round, read over REST as the page reads it."""

    def __init__(self, client: httpx.Client, token: str) -> None:
        self.client = client
        self.token = token

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params, headers={"Authorization": f"Bearer {self.token}"})
        r.raise_for_status()
        return r.json()

    def state(self) -> dict[str, Any]:
        return self.get("/api/v1/game/state")  # type: ignore[no-any-return]

    def wait_running(self, round_id: int, timeout: float = 60.0) -> dict[str, Any]:
        """The state of ``round_id`` once it runs (its curve's start instant)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.state()
            if s["round_id"] == round_id and s["status"] in ("running", "crashed"):
                assert s["curve"]["started_at_ms"] is not None
                return s
            if s["round_id"] > round_id:
                raise AssertionError(f"round {round_id} passed unseen")
            time.sleep(0.01)
        raise AssertionError(f"round {round_id} did not start within {timeout} s")

    def wait_phase_for_bet(self, round_id: int, timeout: float = 60.0) -> None:
        """Wait until a bet placed now plays in ``round_id``: the round before it runs
        or has crashed (the bet is queued), or ``round_id`` itself takes bets."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s = self.state()
            if s["round_id"] == round_id - 1 and s["status"] in ("running", "crashed"):
                return
            if s["round_id"] == round_id and s["status"] == "betting":
                return
            if s["round_id"] >= round_id:
                raise AssertionError(f"too late to bet on round {round_id}: {s['status']}")
            time.sleep(0.02)
        raise AssertionError(f"round {round_id - 1} did not start within {timeout} s")

    def finished(self, round_id: int, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.client.get(
                f"/api/v1/game/rounds/{round_id}",
                headers={"Authorization": f"Bearer {self.token}"},
            )
            if r.status_code == 200:
                return r.json()  # type: ignore[no-any-return]
            time.sleep(0.05)
        raise AssertionError(f"round {round_id} did not finish within {timeout} s")


def next_round(state: dict[str, Any], crashes: Any, minimum: int, *, margin: int = 1) -> int:
    """The first round after the live one (at least ``margin`` rounds ahead) whose crash
    point is at least ``minimum``: one a test can still bet on, long enough for it."""
    game = state["round_id"] + margin
    while crashes(game) < minimum:
        game += 1
    return game

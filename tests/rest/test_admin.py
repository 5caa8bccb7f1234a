"""The operator's controls against a real server: limits live, the bankroll, pause,
resume, void, the audit log, probes and metrics, operator tokens. Short rounds (every
crash in [1.01x, 2.00x]); each test reads the game's state to decide when to act."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from support.game import Api, fund, game_config
from support.postgres import Backend
from support.security import LogScan
from support.servers import make_key, running_server

pytestmark = pytest.mark.usefixtures("logscan")

ADMIN = "admin:metrics,admin:read,admin:control,admin:bankroll"


@dataclass
class Operated:
    player: Api
    admin: Api
    config: Any
    url: str


@pytest.fixture
async def operated(tmp_path: Path, logscan: LogScan) -> AsyncIterator[Operated]:
    config = game_config(tmp_path)
    async with running_server(config) as info:
        _, bets = make_key(config, "read:game_state,read:balance,write:bet")
        _, ops = make_key(config, ADMIN)
        from support.servers import SIGNING_SECRETS

        logscan.remember(bets, ops, SIGNING_SECRETS[bets], SIGNING_SECRETS[ops])
        async with httpx.AsyncClient(base_url=info.url, timeout=20) as client:
            yield Operated(Api(client, bets), Api(client, ops), config, info.url)


async def admin_write(o: Operated, path: str, body: dict[str, Any], method: str = "POST") -> Any:
    r = await o.admin.post(f"/api/v1/admin/{path}", body, method=method)
    assert r.status_code in (200, 201), r.text
    return r.json()


async def audit(o: Operated, action: str | None = None) -> list[dict[str, Any]]:
    params = {"action": action} if action else {}
    r = await o.admin.get("/api/v1/admin/audit", **params)
    assert r.status_code == 200, r.text
    return r.json()["entries"]  # type: ignore[no-any-return]


async def _wait_ready(o: Operated) -> httpx.Response:
    """``/readyz``'s 200, waiting out a 503 for a tick late under load (CI) until that
    tick ages out of the readiness window (api/ops/health.py); any other 503 fails."""
    with trio.fail_after(30):
        while (ready := await o.player.client.get("/readyz")).status_code != 200:
            assert ready.status_code == 503 and "ticks are late" in ready.text, ready.text
            await trio.sleep(0.2)
    return ready


async def test_probes_and_metrics(operated: Operated) -> None:
    o = operated
    client = o.player.client
    assert (await client.get("/healthz")).json()["status"] == "ok"
    # A start-up tick late under load (CI) is a 503 of its own until it ages out.
    ready = await _wait_ready(o)
    assert ready.json()["checks"] == {
        "engine": "ok",
        "ledger": "ok",
        "feed": "ok",
        "bankroll": "ok",
    }
    # /metrics takes the admin:metrics scope: a bet key is refused, no key is 401.
    assert (await client.get("/metrics")).status_code == 401
    assert (await o.player.get("/metrics")).status_code == 403
    await fund(o.player, "m1")
    await o.player.wait_status("betting")
    placed = await o.player.place("m1", 500)
    await o.player.wait_round_over(placed["round_id"])
    r = await o.admin.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in (
        "crashd_tick_lateness_seconds_bucket",
        "crashd_ledger_commit_seconds_count",
        "crashd_ledger_group_ops_bucket",
        'crashd_http_requests_total{environment="sandbox"',
        "crashd_round_id",
        'crashd_rounds_total{environment="sandbox",outcome="crashed"}',
        "crashd_bets_total",
        "crashd_house_balance",
        "crashd_round_exposure",
        "crashd_rtp_observed",
        "crashd_feed_subscribers",
        "crashd_chain_games_left",
    ):
        assert name in text, name
    bets = next(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("crashd_bets_total")
    )
    assert bets >= 1


async def test_limits_change_from_the_next_round_and_are_audited(operated: Operated) -> None:
    o = operated
    await fund(o.player, "lim", 1_000_000)
    state = await o.player.wait_status("betting")
    current = state["round_id"]
    answer = await admin_write(
        o, "limits", {"max_stake": 5_000, "note": "smaller tables"}, method="PATCH"
    )
    assert answer["limits"]["max_stake"] == 5_000
    # The round taking bets keeps its limits...
    r = await o.player.post("/api/v1/bets", {"user_id": "lim", "amount": 8_000})
    if (await o.player.state())["round_id"] == current and r.status_code == 201:
        assert r.json()["round_id"] == current
    # ...the next one plays with the new ones.
    await o.player.wait_round_over(current)
    await o.player.wait_status("betting")
    r = await o.player.post("/api/v1/bets", {"user_id": "lim", "amount": 8_000})
    assert r.status_code == 422 and r.json()["code"] == "stake_too_large", r.text
    [entry] = await audit(o, "limits")
    assert entry["before"]["max_stake"] == 100_000_00 and entry["after"]["max_stake"] == 5_000
    assert entry["actor"].startswith("key_") and entry["note"] == "smaller tables"
    # A change that breaks a rule is refused and changes nothing.
    r = await o.admin.post("/api/v1/admin/limits", {"min_stake": 9_000}, method="PATCH")
    assert r.status_code == 422 and r.json()["code"] == "invalid_limits"
    assert len(await audit(o, "limits")) == 1


async def test_the_rules_follow_the_limits_from_the_next_round(operated: Operated) -> None:
    """``GET /game/rules`` (what the /rules page states) gives the limits a bet placed
    now plays with: the operator's, not the start-up settings."""
    o = operated
    client = o.player.client
    before = (await client.get("/api/v1/game/rules")).json()
    assert before["max_win"] is None and before["max_profit_bankroll_bp"] is None
    await admin_write(o, "bankroll/deposit", {"amount": 200_000})
    state = await o.player.wait_status("betting")
    await admin_write(
        o,
        "limits",
        {"max_stake": 40_000, "max_win": 900, "max_profit_mode": "bankroll", "max_profit_bp": 150},
        method="PATCH",
    )
    # The round taking bets keeps its limits: so do the rules while it does.
    rules = (await client.get("/api/v1/game/rules")).json()
    if (await o.player.state())["round_id"] == state["round_id"] and rules["max_win"] is None:
        assert rules["max_stake"] == before["max_stake"]
    await o.player.wait_round_over(state["round_id"])
    await o.player.wait_status("betting")
    rules = (await client.get("/api/v1/game/rules")).json()
    house = (await o.admin.get("/api/v1/admin/state")).json()["house"]
    assert rules["max_stake"] == 40_000 and rules["max_win"] == 900
    assert rules["max_profit_bankroll_bp"] == 150
    assert rules["max_profit"] == house["round_max_profit"] == house["balance"] * 150 // 10_000


async def test_bankroll_share_caps_the_round_and_max_win_caps_a_bet(operated: Operated) -> None:
    o = operated
    r = await o.admin.post("/api/v1/admin/bankroll/withdraw", {"amount": 1})
    assert r.status_code == 409 and r.json()["code"] == "insufficient_funds"
    moved = await admin_write(o, "bankroll/deposit", {"amount": 100_000, "note": "seed"})
    assert moved["house"] >= 100_000
    await admin_write(
        o, "limits", {"max_profit_mode": "bankroll", "max_profit_bp": 100}, method="PATCH"
    )
    state = (await o.admin.get("/api/v1/admin/state")).json()
    house = state["house"]["balance"]
    assert state["house"]["next_round_max_profit"] == house // 100
    await fund(o.player, "big", 1_000_000)
    # Wait for a round that opened after the change; bet 10x the cap's share.
    first = (await o.player.state())["round_id"]
    await o.player.wait_round_over(first)
    state = await o.player.wait_status("betting")
    cap = (await o.admin.get("/api/v1/admin/state")).json()["house"]["round_max_profit"]
    stake = cap * 10
    r = await o.player.post("/api/v1/bets", {"user_id": "big", "amount": stake})
    assert r.status_code == 201, r.text
    ticket, rid = r.json()["ticket_id"], r.json()["round_id"]
    done = await o.player.wait_round_over(rid)
    bet = (await o.player.get(f"/api/v1/bets/{ticket}")).json()
    force = 100 * (stake + cap) // stake
    if done["crash_point"] >= force:
        assert bet["status"] == "cashed_out" and bet["multiplier"] == force
        assert bet["payout"] - stake <= cap
    else:
        assert bet["status"] == "lost"
    # Max win per bet: a bet's profit is capped by itself.
    await admin_write(
        o,
        "limits",
        {"max_profit_mode": "fixed", "max_profit": 0, "max_stake": 50_000, "max_win": 500},
        method="PATCH",
    )
    await o.player.wait_round_over((await o.player.state())["round_id"])
    await o.player.wait_status("betting")
    r = await o.player.post("/api/v1/bets", {"user_id": "big", "amount": 10_000})
    assert r.status_code == 201, r.text
    ticket, rid = r.json()["ticket_id"], r.json()["round_id"]
    done = await o.player.wait_round_over(rid)
    bet = (await o.player.get(f"/api/v1/bets/{ticket}")).json()
    if done["crash_point"] >= 105:
        assert bet["status"] == "cashed_out" and bet["multiplier"] == 105
    actions = [e["action"] for e in await audit(o)]
    assert "bankroll_deposit" in actions and actions.count("limits") == 2


async def test_pause_resume_and_void(operated: Operated) -> None:
    o = operated
    await fund(o.player, "v", 100_000)
    before = await o.player.balance("v")
    # Void: a bet in the round taking bets is refunded exactly once.
    await o.player.wait_status("betting")
    r = await o.player.post("/api/v1/bets", {"user_id": "v", "amount": 2_500})
    assert r.status_code == 201, r.text
    ticket, rid = r.json()["ticket_id"], r.json()["round_id"]
    if (await o.player.state())["round_id"] == rid and (await o.player.state())[
        "status"
    ] == "betting":
        voided = await admin_write(o, "void", {"note": "test"})
        if voided["voided"]["round_id"] == rid:
            bet = (await o.player.get(f"/api/v1/bets/{ticket}")).json()
            assert bet["status"] == "refunded"
            history = (await o.player.get(f"/api/v1/game/rounds/{rid}")).json()
            assert history["status"] == "voided" and history["game_hash"]
            assert history["game_hash"] == voided["voided"]["game_hash"]
    with trio.fail_after(20):
        while (await o.player.get(f"/api/v1/bets/{ticket}")).json()["status"] == "active":
            await trio.sleep(0.05)
    status = (await o.player.get(f"/api/v1/bets/{ticket}")).json()["status"]
    # Exactly once: refunded, or settled by the round it played in.
    balance = await o.player.balance("v")
    if status == "refunded":
        assert balance == before
    # Pause: the current round plays, then none opens; bets for later are refused.
    paused = await admin_write(o, "pause", {"note": "maintenance"})
    with trio.fail_after(20):
        while True:
            state = await o.player.state()
            if (
                state["paused"]
                and state["status"] == "crashed"
                and state["round_id"] >= paused["round_id"]
            ):
                break
            await trio.sleep(0.05)
    await trio.sleep(0.5)
    assert (await o.player.state())["round_id"] == state["round_id"]  # nothing opened
    r = await o.player.post("/api/v1/bets", {"user_id": "v", "amount": 100})
    assert r.status_code == 503 and r.json()["code"] == "game_paused", r.text
    r = await o.admin.post("/api/v1/admin/void", {})
    assert r.status_code == 409 and r.json()["code"] == "round_not_voidable"
    # Ready while paused. A tick of the last round late under load (CI) keeps it out
    # of rotation until that tick ages out of the window (api/ops/health.py), not for
    # the whole pause.
    ready = await _wait_ready(o)
    assert ready.json()["paused"] is True, ready.text
    await admin_write(o, "resume", {})
    state = await o.player.wait_status("betting")
    assert state["round_id"] > paused["round_id"] and state["paused"] is False
    actions = [e["action"] for e in await audit(o)]
    assert {"pause", "resume"} <= set(actions)


async def test_the_audit_log_is_append_only(operated: Operated) -> None:
    o = operated
    await admin_write(o, "pause", {})
    await admin_write(o, "resume", {})
    conn = sqlite3.connect(o.config.database)
    try:
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit_log SET actor = 'someone else'")
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("DELETE FROM audit_log")
    finally:
        conn.close()


async def test_a_retried_admin_write_is_recorded_once(operated: Operated) -> None:
    o = operated
    first = await o.admin.post("/api/v1/admin/bankroll/deposit", {"amount": 700}, key="dep-1")
    again = await o.admin.post("/api/v1/admin/bankroll/deposit", {"amount": 700}, key="dep-1")
    assert first.status_code == again.status_code == 201
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert first.json() == again.json()
    assert len(await audit(o, "bankroll_deposit")) == 1


async def test_operator_tokens_and_key_revocation(operated: Operated) -> None:
    o = operated
    r = await o.admin.post("/api/v1/admin/session", {})
    assert r.status_code == 201, r.text
    token = r.json()["token"]
    assert r.json()["url"] == f"/operator#token={token}"
    headers = {"Authorization": f"Bearer {token}"}
    client = o.admin.client
    assert (await client.get("/api/v1/admin/state", headers=headers)).status_code == 200
    # A player's key is not an operator's.
    assert (await o.player.get("/api/v1/admin/state")).status_code == 403
    keys = (await client.get("/api/v1/admin/keys", headers=headers)).json()["keys"]
    player_key = next(
        k
        for k in keys
        if k["partner_id"] == "acme"
        and k["scopes"] == ["read:game_state", "read:balance", "write:bet"]
    )
    r = await client.post(
        f"/api/v1/admin/keys/{player_key['id']}/revoke",
        json={"note": "leaked"},
        headers={**headers, "Idempotency-Key": "rv-1"},
    )
    assert r.status_code == 200, r.text
    assert r.json()["revoked_at"], r.text
    after = (await client.get("/api/v1/admin/keys", headers=headers)).json()["keys"]
    assert [k["revoked_at"] for k in after if k["id"] == player_key["id"]] != [None], after
    g = await o.player.get("/api/v1/game/state")
    assert g.status_code == 401, (player_key, g.text)
    [entry] = await audit(o, "key_revoke")
    assert entry["actor"].endswith("(operator page)") and entry["after"]["revoked_at"]


async def test_the_operator_tools_on_postgresql(
    pg: Backend, tmp_path: Path, logscan: LogScan
) -> None:
    """The same tools on a ``postgresql://`` database: the bankroll, limits and the
    audit log read back through the API, the log append-only there too (TRUNCATE
    included), and a restart reads the chain registry and the limits from it."""
    from crashd.api.ops.chains import PUBLISHED, read_entries
    from support.servers import SIGNING_SECRETS

    url = str(pg.target)
    config = game_config(tmp_path, database=url)
    _, bets = make_key(config, "read:game_state,read:balance,write:bet")
    _, ops = make_key(config, ADMIN)
    logscan.remember(bets, ops, SIGNING_SECRETS[bets], SIGNING_SECRETS[ops])
    for start in (1, 2):
        async with (
            running_server(config) as info,
            httpx.AsyncClient(base_url=info.url, timeout=20) as client,
        ):
            o = Operated(Api(client, bets), Api(client, ops), config, info.url)
            if start == 1:
                moved = await admin_write(o, "bankroll/deposit", {"amount": 50_000, "note": "seed"})
                assert moved["house"] >= 50_000
                await admin_write(o, "limits", {"max_stake": 4_000}, method="PATCH")
            [published] = await audit(o, PUBLISHED)
            assert published["actor"] == "crashd"
            assert len(await audit(o, "bankroll_deposit")) == 1
            [limits] = await audit(o, "limits")
            assert limits["after"]["max_stake"] == 4_000
            # The round running may be a long one (its crash point is any): wait_status's
            # default deadline (120 s) covers it, and the wait for its end has the same.
            await o.player.wait_status("betting")
            await o.player.wait_round_over((await o.player.state())["round_id"], timeout=120)
            rules = (await client.get("/api/v1/game/rules")).json()
            assert rules["max_stake"] == 4_000, rules
        # Read before the ledger opens, as the next start does: the configured chain.
        entries = read_entries(url, config.environment)
        assert [action for _, action, _ in entries] == [PUBLISHED]
    conn = pg.connect()
    try:
        for sql in (
            "UPDATE audit_log SET actor = 'x'",
            "DELETE FROM audit_log",
            "TRUNCATE audit_log",
        ):
            with pytest.raises(pg.database_error, match="append-only"):
                conn.execute(sql)
            conn.rollback()
    finally:
        conn.close()

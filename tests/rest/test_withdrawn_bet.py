"""A bet the engine holds withdrawn, against a real server: a retry of a bet placed more
than the idempotency retention ago (its stored reply purged, as a day later) reaches the
engine again, which accepts a duplicate of the ticket while betting; the ledger, which
settled that ticket rounds ago, refuses it, and the engine's bet is withdrawn. Changing that ticket's
auto-cashout target then is input like any other: a clear problem from the ledger's
record of the ticket, over REST and as a feed order alike, nothing moved, and the round
plays and audits on (it used to trip the round engine's assertion and answer 500)."""

from __future__ import annotations

import json
import os
import uuid
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from crashd.api.server import run_server
from crashd.api.services import Services
from support.feed import next_of
from support.game import Api, fund, game_config
from support.security import money_fingerprint
from support.servers import PYTHON, REPO, make_key

pytestmark = pytest.mark.usefixtures("logscan")


async def test_a_target_change_of_a_withdrawn_bet_is_a_clear_refusal(tmp_path: Path) -> None:
    config = game_config(tmp_path, betting_ms=3_000, pause_ms=100)
    _, secret = make_key(config, "read:game_state,read:balance,write:bet")
    held: list[Services] = []

    async def hold(services: Services) -> None:
        held.append(services)
        await trio.sleep_forever()  # a service task runs as long as the server

    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        info = await nursery.start(
            partial(run_server, config, shutdown=shutdown, extra_tasks=[hold])
        )
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "ann", 100_000)
            await api.wait_status("betting")
            key = uuid.uuid4().hex
            body: dict[str, Any] = {"user_id": "ann", "amount": 1_000}
            first = await api.post("/api/v1/bets", body, key=key)
            assert first.status_code == 201, first.text
            ticket, played = first.json()["ticket_id"], first.json()["round_id"]
            await api.wait_round_over(played)
            await api.wait_round_over(played + 1)  # out of the engine's last two rounds
            # A day later: the stored reply is past its retention and purged.
            [services] = held
            ledger = services.require_game().game.ledger
            await services.idempotency.purge(
                ledger, ledger.now_ms() + services.idempotency.retention_ms + 1
            )
            r = await api.post("/api/v1/feed/user-token", {"user_id": "ann"})
            assert r.status_code == 200, r.text
            token = r.json()
            async with open_websocket_url(token["ws_url"]) as ws:
                await ws.send_message(json.dumps({"type": "auth", "token": token["token"]}))
                await next_of(ws, lambda m: m["type"] == "welcome")
                await retarget_a_withdrawn_bet(
                    api, ws, services, config.database, body, key, ticket, played
                )
            # The engine plays on: a bet in this round settles, and every round audits.
            other = await api.post("/api/v1/bets", {"user_id": "ann", "amount": 500})
            assert other.status_code == 201, other.text
            last = other.json()["round_id"]
            # A cash-out of the withdrawn duplicate once the round runs is answered from
            # the ledger's record too: the bet of rounds ago lost (no target, no cash-out).
            await api.wait_status("running")
            r = await api.post(f"/api/v1/bets/{ticket}/cashout", {"user_id": "ann"})
            assert r.status_code == 409, r.text
            assert (r.json()["code"], r.json()["round_id"]) == ("too_late", played), r.json()
            await api.wait_round_over(last)
            done = await trio.run_process(
                [PYTHON, "-m", "crashd.api", "audit", "--url", info.url, "--key", secret,
                 "--from", str(played), "--to", str(last), "--json"],
                capture_stdout=True, capture_stderr=True, check=False,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )  # fmt: skip
            assert done.returncode == 0, (done.stdout, done.stderr)
            assert json.loads(done.stdout)["rerun"] == last - played + 1
        shutdown.set()


async def retarget_a_withdrawn_bet(
    api: Api,
    ws: WebSocketConnection,
    services: Services,
    database: Path,
    body: dict[str, Any],
    key: str,
    ticket: str,
    played: int,
) -> None:
    """Retry the bet (its duplicate is withdrawn), then change its target over REST and
    as a feed order: the same clear refusal both ways, and no money moves."""
    state = await api.wait_status("betting")
    again = await api.post("/api/v1/bets", body, key=key)
    # The ledger holds this ticket's bet of rounds ago: the retry is refused...
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "idempotency_conflict"
    # ...and the engine's duplicate of it withdrawn, in the round taking bets.
    engine = services.require_game().game.engine
    with trio.fail_after(10):
        while (bet := engine.sequencer.find_bet(ticket)) is None or (bet.state.value != "refunded"):
            await trio.sleep(0.01)
    if (await api.state())["round_id"] != state["round_id"]:
        pytest.skip("the round left betting before the duplicate could be retargeted")
    assert bet.state.value == "refunded"  # withdrawn: as if never placed
    before = money_fingerprint(database)
    r = await api.post(
        f"/api/v1/bets/{ticket}/auto-cashout",
        {"user_id": "ann", "target": 200},
        method="PUT",
    )
    assert r.status_code == 409, r.text
    problem = r.json()
    assert problem["code"] == "round_settled" and problem["round_id"] == played, problem
    assert r.headers["content-type"].startswith("application/problem+json")
    order = {
        "type": "auto_cashout",
        "id": 1,
        "key": uuid.uuid4().hex,
        "ticket_id": ticket,
        "target": 300,
    }
    await ws.send_message(json.dumps(order))
    result = await next_of(ws, lambda m: m.get("type") == "result" and m.get("id") == 1)
    assert result["status"] == 409 and result["body"]["code"] == "round_settled", result
    assert money_fingerprint(database) == before
    assert bet.auto_cashout is None and bet.state.value == "refunded"

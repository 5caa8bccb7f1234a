"""A bet's record and answers come from the truth, against a real server (issue 11).

- The record a partner reads (``GET /bets/{ticket}``, ``GET /user/bets``) shows the
  auto-cashout target in force: the last acknowledged change, durable across a restart.
- ``PUT …/auto-cashout`` on a ticket the running engine no longer holds (settled in an
  earlier round, refunded by recovery, queued) answers from the ticket's real state,
  never ``unknown_ticket``; a retry with the same key gets the same answer.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from support.game import Api, fund, game_config
from support.servers import make_key, running_server


async def _bet(api: Api, ticket: str) -> dict[str, object]:
    r = await api.get(f"/api/v1/bets/{ticket}")
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def _listed(api: Api, user: str, ticket: str) -> dict[str, object]:
    r = await api.get("/api/v1/user/bets", user_id=user)
    assert r.status_code == 200, r.text
    [bet] = [b for b in r.json()["bets"] if b["ticket_id"] == ticket]
    return bet  # type: ignore[no-any-return]


async def _retarget(
    api: Api, ticket: str, user: str, target: int | None, key: str | None = None
) -> httpx.Response:
    return await api.post(
        f"/api/v1/bets/{ticket}/auto-cashout",
        {"user_id": user, "target": target},
        key=key,
        method="PUT",
    )


async def test_record_shows_the_target_in_force(tmp_path: Path) -> None:
    config = game_config(tmp_path, betting_ms=1_500)
    async with running_server(config) as info:
        _, secret = make_key(config, "read:game_state,read:balance,write:bet")
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "ann")
            await fund(api, "ben")
            await api.wait_status("betting")
            won = await api.place("ann", 1_000, auto=150)
            cancelled = await api.place("ben", 1_000, auto=150)
            assert won["round_id"] == cancelled["round_id"]
            r = await _retarget(api, won["ticket_id"], "ann", 101)
            assert r.status_code == 200, r.text
            body = r.json()
            receipt = body.pop("receipt")
            assert body == {"ticket_id": won["ticket_id"], "auto_cashout": 101}
            # The change's signed receipt: the bet's new leaf (docs/fairness.md).
            assert (receipt["kind"], receipt["auto_cashout"]) == ("target", 101)
            r = await _retarget(api, cancelled["ticket_id"], "ben", None)
            assert r.status_code == 200, r.text
            assert r.json()["auto_cashout"] is None
            # Before settlement: the record and the list show the target in force.
            for user, ticket, target in (
                ("ann", won["ticket_id"], 101),
                ("ben", cancelled["ticket_id"], None),
            ):
                assert (await _bet(api, ticket))["auto_cashout"] == target
                assert (await _listed(api, user, ticket))["auto_cashout"] == target
            await api.wait_round_over(won["round_id"])
            for _ in range(100):  # the settlement commits just after the crash
                ann = await _bet(api, won["ticket_id"])
                if ann["status"] != "active":
                    break
            # Every round of the test chain crashes at or above 1.01x: 101 always wins.
            assert (ann["status"], ann["multiplier"], ann["auto_cashout"]) == (
                "cashed_out",
                101,
                101,
            )
            assert (await _listed(api, "ann", won["ticket_id"]))["auto_cashout"] == 101
            ben = await _bet(api, cancelled["ticket_id"])
            assert ben["auto_cashout"] is None
    # Durable: a restarted server's records say the same.
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            assert (await _bet(api, won["ticket_id"]))["auto_cashout"] == 101
            assert (await _bet(api, cancelled["ticket_id"]))["auto_cashout"] is None


async def test_retarget_of_a_bet_from_an_earlier_round_says_it_settled(api: Api) -> None:
    await fund(api, "cid")
    await api.wait_status("betting")
    placed = await api.place("cid", 500, auto=101)
    await api.wait_round_over(placed["round_id"])
    await api.wait_status("betting")  # the engine has moved on to the next round
    key = uuid.uuid4().hex
    r = await _retarget(api, placed["ticket_id"], "cid", 200, key=key)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "round_settled"
    assert r.json()["round_id"] == placed["round_id"]
    again = await _retarget(api, placed["ticket_id"], "cid", 200, key=key)
    assert (again.status_code, again.json()["code"]) == (409, "round_settled")
    assert (await _bet(api, placed["ticket_id"]))["auto_cashout"] == 101
    # Someone else's ticket, or one that does not exist, is still unknown.
    r = await _retarget(api, placed["ticket_id"], "someone-else", 200)
    assert (r.status_code, r.json()["code"]) == (404, "unknown_ticket")
    r = await _retarget(api, "t_" + "0" * 24, "cid", 200)
    assert (r.status_code, r.json()["code"]) == (404, "unknown_ticket")


async def test_queued_bet_can_be_retargeted(api: Api) -> None:
    await fund(api, "dee")
    for _ in range(20):
        await api.wait_status("running", timeout=20)
        placed = await api.place("dee", 300, auto=300)
        if placed["queued"]:
            break
    assert placed["queued"], "no bet was placed while a round ran"
    r = await _retarget(api, placed["ticket_id"], "dee", 120)
    if r.status_code == 409:
        # The queued bet's round opened and closed in between: a settled answer.
        assert r.json()["code"] in {"round_closed", "round_settled"}, r.text
        return
    assert r.status_code == 200, r.text
    assert (await _bet(api, placed["ticket_id"]))["auto_cashout"] == 120


async def test_retarget_of_a_bet_refunded_by_recovery(tmp_path: Path) -> None:
    # A round that stays in betting; the server is stopped with no time to let it
    # crash, so the stop voids it and refunds the bet; the restarted engine never
    # knew the ticket.
    config = game_config(tmp_path, betting_ms=60_000, stop_wait_s=0)
    async with running_server(config) as info:
        _, secret = make_key(config, "read:game_state,read:balance,write:bet")
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            await fund(api, "eve", 1_000)
            await api.wait_status("betting")
            placed = await api.place("eve", 700, auto=150)
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            api = Api(client, secret)
            key = uuid.uuid4().hex
            for _ in range(2):
                r = await _retarget(api, placed["ticket_id"], "eve", 200, key=key)
                assert (r.status_code, r.json()["code"]) == (409, "round_voided"), r.text
            bet = await _bet(api, placed["ticket_id"])
            assert (bet["status"], bet["auto_cashout"]) == ("refunded", 150)
            assert await api.balance("eve") == 1_000


async def test_the_round_being_played_is_not_unknown(api: Api) -> None:
    state = await api.wait_status("betting")
    r = await api.get(f"/api/v1/game/rounds/{state['round_id']}")
    assert (r.status_code, r.json()["code"]) == (409, "round_not_finished"), r.text
    assert r.json()["round_id"] == state["round_id"]
    r = await api.get(f"/api/v1/game/rounds/{state['round_id'] + 1000}")
    assert (r.status_code, r.json()["code"]) == (404, "unknown_round"), r.text

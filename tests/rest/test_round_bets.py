"""A finished round's bets (`GET /api/v1/game/rounds/{id}/bets`), against a real server:
read from the ledger after the engine has moved on, paged in the order placed, the
caller's own users named and every other partner's anonymous, the same outcome as each
bet's own record; an open round and an unknown one get their codes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from support.game import Api, fund, game_config
from support.servers import make_key, running_server

pytestmark = pytest.mark.usefixtures("logscan")

SCOPES = "read:game_state,read:balance,write:bet"


async def _all_pages(api: Api, round_id: int, limit: int) -> list[dict[str, Any]]:
    bets: list[dict[str, Any]] = []
    offset: int | None = 0
    while offset is not None:
        r = await api.get(f"/api/v1/game/rounds/{round_id}/bets", offset=offset, limit=limit)
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["offset"] == offset and len(page["bets"]) <= limit
        bets += page["bets"]
        offset = page["next_offset"]
    return bets


async def test_a_finished_rounds_bets_come_from_the_ledger(tmp_path: Path) -> None:
    # Every round of this chain crashes in [1.01x, 2.00x]: 1.01 wins, 3.00 loses.
    config = game_config(tmp_path, betting_ms=1_500, max_bets_per_user=2)
    async with running_server(config) as info:
        _, ours = make_key(config, SCOPES, partner="acme")
        _, theirs = make_key(config, SCOPES, partner="globex")
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            acme, globex = Api(client, ours), Api(client, theirs)
            for api, user in ((acme, "ann"), (globex, "gus")):
                await fund(api, user, 10_000)
            state = await acme.wait_status("betting")
            placed = [
                await acme.place("ann", 100, auto=101),
                await globex.place("gus", 200, auto=300),
                await acme.place("ann", 300, auto=300),
            ]
            round_id = placed[0]["round_id"]
            assert {p["round_id"] for p in placed} == {round_id} == {state["round_id"]}

            # While it plays, its bets are the live list's, not this one's.
            r = await acme.get(f"/api/v1/game/rounds/{round_id}/bets")
            assert (r.status_code, r.json()["code"]) == (409, "round_not_finished"), r.text
            assert "/game/state/participants" in r.json()["detail"]

            await acme.wait_round_over(round_id)
            await acme.wait_status(("betting", "running"))  # the engine has moved on
            bets = await _all_pages(acme, round_id, limit=2)
            assert [b["stake"] for b in bets] == [100, 200, 300]  # the order placed
            ann_win, gus_loss, ann_loss = bets
            assert ann_win == {
                "ticket_id": placed[0]["ticket_id"],
                "user_id": "ann",
                "stake": 100,
                "status": "won",
                "cashed_out_at": 101,
                "payout": 101,
            }
            # Another partner's player: anonymous, but the outcome is public.
            assert gus_loss["ticket_id"] is None and gus_loss["user_id"] is None
            assert (gus_loss["status"], gus_loss["cashed_out_at"]) == ("lost", None)
            assert (ann_loss["user_id"], ann_loss["status"]) == ("ann", "lost")
            # The same facts as each bet's own record.
            record = {"won": "cashed_out", "lost": "lost"}
            for p, b in ((placed[0], ann_win), (placed[2], ann_loss)):
                own = (await acme.get(f"/api/v1/bets/{p['ticket_id']}")).json()
                assert (own["status"], own["payout"]) == (record[b["status"]], b["payout"])
                if b["status"] == "won":
                    assert own["multiplier"] == b["cashed_out_at"]
            # globex sees its own player named and acme's anonymous.
            seen = await _all_pages(globex, round_id, limit=100)
            assert [b["user_id"] for b in seen] == [None, "gus", None]

            whole = await acme.get(f"/api/v1/game/rounds/{round_id}/bets")
            assert whole.json()["bet_count"] == 3 and whole.json()["next_offset"] is None
            assert "immutable" in whole.headers["cache-control"]
            assert whole.headers["cache-control"].startswith("private")  # names our users
            again = await client.get(
                f"/api/v1/game/rounds/{round_id}/bets",
                headers={**acme.headers, "If-None-Match": whole.headers["etag"]},
            )
            assert again.status_code == 304
            beyond = await acme.get(f"/api/v1/game/rounds/{round_id}/bets", offset=3)
            assert beyond.json()["bets"] == [] and beyond.json()["next_offset"] is None

            for path, params, status, code in (
                ("/api/v1/game/rounds/999999/bets", {}, 404, "unknown_round"),
                (f"/api/v1/game/rounds/{round_id}/bets", {"limit": 0}, 422, "validation_failed"),
                (f"/api/v1/game/rounds/{round_id}/bets", {"offset": -1}, 422, "validation_failed"),
                (f"/api/v1/game/rounds/{round_id}/bets", {"limit": "x"}, 422, "validation_failed"),
                (f"/api/v1/game/rounds/{round_id}/bets", {"sort": "x"}, 422, "validation_failed"),
            ):
                r = await acme.get(path, **params)
                assert (r.status_code, r.json()["code"]) == (status, code), (path, params, r.text)
            anonymous = await client.get(f"/api/v1/game/rounds/{round_id}/bets")
            assert anonymous.status_code == 401

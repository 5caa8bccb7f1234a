"""API processes: the REST API without the engine, its commands run by the engine.

Against a real engine (``run_server`` with Redis) and real API processes (``run_api``):
a command through an API process is the same request as in the engine's own REST (the
same reply, replayed by its key wherever it is retried); one key sent to two processes
moves money once; a lost reply is recovered by the client's retry with the same key;
the engine keeps its place in the command stream across a restart, so a command sent
while it was down runs once it is back, and nothing it answered runs again.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from crashd.api.cli.audit import keys_of
from crashd.api.cluster.apiproc import ApiInfo
from crashd.api.cluster.wire import POSITION, commands_key, entry_id_key
from crashd.api.config import Config
from crashd.api.edge.links import open_link
from crashd.api.edge.server import EdgeInfo, run_edge
from crashd.engine.ledger.store import POSITION_PREFIX
from crashd.engine.settlement.audit import audit
from support.cluster import api_process, cluster_config
from support.feed import next_of
from support.game import Api, fund
from support.postgres import Backend, read_connection
from support.redis import SKIP_NO_REDIS, private_redis, server_binary
from support.security import money_fingerprint
from support.servers import make_key, running_server

pytestmark = pytest.mark.usefixtures("logscan")

SCOPES = "read:game_state,read:balance,write:bet"


def bets_of(database: Path | str) -> list[tuple[str, int, str | None]]:
    conn = read_connection(database)
    try:
        return [
            (r[0], r[1], r[2])
            for r in conn.execute("SELECT ticket_id, stake, outcome FROM bets ORDER BY id")
        ]
    finally:
        conn.close()


async def test_an_api_process_answers_as_the_engine_does(
    db: Backend, tmp_path: Path, redis_url: str
) -> None:
    """On both backends: on PostgreSQL the API process reads the ledger over its own read
    pool, as one on another machine would. Betting stays open 2 s: the bet, its replay,
    the reused key and the participants page all fall in one betting window, which
    400 ms was not on a slow machine (the bet queued for the next round)."""
    config = cluster_config(tmp_path, redis_url, database=db.target, betting_ms=2000)
    async with running_server(config) as engine, api_process(config) as proc:
        _, secret = make_key(config, SCOPES)
        async with (
            httpx.AsyncClient(base_url=engine.url, timeout=15) as direct,
            httpx.AsyncClient(base_url=proc.server.url, timeout=15) as remote,
        ):
            api, here = Api(remote, secret), Api(direct, secret)
            await fund(api, "zoe")
            assert await api.balance("zoe") == await here.balance("zoe") == 100_000
            await api.wait_status("betting", timeout=30)
            placed = await api.post("/api/v1/bets", {"user_id": "zoe", "amount": 700}, key="k-1")
            assert placed.status_code == 201, placed.text
            ticket = placed.json()["ticket_id"]
            # The same key, at the engine's own REST: the stored reply, byte for byte.
            again = await here.post("/api/v1/bets", {"user_id": "zoe", "amount": 700}, key="k-1")
            assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
            assert again.content == placed.content
            reused = await api.post("/api/v1/bets", {"user_id": "zoe", "amount": 9}, key="k-1")
            assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
            page = await api.get("/api/v1/game/state/participants")
            assert page.status_code == 200 and page.json()["participants"][0]["ticket_id"] == ticket
            await api.wait_status("running", timeout=30)
            cashed = await api.post(f"/api/v1/bets/{ticket}/cashout", {"user_id": "zoe"})
            assert cashed.status_code == 200, cashed.text
            payout = cashed.json()["payout"]
            assert await api.balance("zoe") == 100_000 - 700 + payout
            status = await api.get(f"/api/v1/bets/{ticket}", user_id="zoe")
            assert status.json()["status"] == "cashed_out"
            state = await api.state()
            assert state["round_id"] >= placed.json()["round_id"]
            # A refusal comes back with its code, as the engine's REST answers it.
            unknown = await api.post(
                "/api/v1/bets/t_000000000000000000000000/cashout", {"user_id": "zoe"}
            )
            assert unknown.status_code == 404 and unknown.json()["code"] == "unknown_ticket"
            # A finished round's bets: read from the database, as the engine reads them.
            await api.wait_status("betting", timeout=30)
            path = f"/api/v1/game/rounds/{placed.json()['round_id']}/bets"
            there, mine = await api.get(path), await here.get(path)
            assert there.status_code == mine.status_code == 200, there.text
            assert there.json() == mine.json() and there.json()["bets"][0]["ticket_id"] == ticket
            # Verifiable settlement: the engine signed the receipts of the forwarded
            # commands; the API process serves the same transcript, seal and keys.
            assert placed.json()["receipt"]["ticket_id"] == ticket
            assert cashed.json()["receipt"]["kind"] == "cashout"
            rid = placed.json()["round_id"]
            for doc in (f"/api/v1/game/rounds/{rid}/transcript", f"/api/v1/game/rounds/{rid}/seal"):
                there, mine = await api.get(doc), await here.get(doc)
                assert there.status_code == mine.status_code == 200, there.text
                assert (
                    there.content == mine.content and there.headers["ETag"] == mine.headers["ETag"]
                )
            keys = [(await c.get("/.well-known/crashd-keys")).json() for c in (remote, direct)]
            assert keys[0] == keys[1] and keys[0]["keys"]
            report = audit(
                [(await api.get(f"/api/v1/game/rounds/{rid}/transcript")).json()],
                keys_of(keys[0]),
                receipts=[placed.json()["receipt"], cashed.json()["receipt"]],
            )
            assert report.ok, report.findings
    assert bets_of(config.database) == [(ticket, 700, "won")]


async def test_one_key_sent_to_two_api_processes_moves_money_once(
    tmp_path: Path, redis_url: str
) -> None:
    config = cluster_config(tmp_path, redis_url)
    async with running_server(config), api_process(config) as a, api_process(config) as b:
        _, secret = make_key(config, SCOPES)
        async with (
            httpx.AsyncClient(base_url=a.server.url, timeout=15) as ca,
            httpx.AsyncClient(base_url=b.server.url, timeout=15) as cb,
        ):
            api_a, api_b = Api(ca, secret), Api(cb, secret)
            await fund(api_a, "ann")
            for n in range(5):
                replies: list[httpx.Response] = []
                key = f"twice-{n}"

                async def send(
                    api: Api, key: str = key, replies: list[httpx.Response] = replies
                ) -> None:
                    replies.append(
                        await api.post("/api/v1/bets", {"user_id": "ann", "amount": 100}, key=key)
                    )

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(send, api_a)
                    nursery.start_soon(send, api_b)
                codes = sorted(r.status_code for r in replies)
                fresh = [
                    r
                    for r in replies
                    if r.status_code == 201 and "Idempotent-Replayed" not in r.headers
                ]
                # One ran; the other was answered from it, or told it is in flight.
                assert len(fresh) <= 1 and codes[0] in (201, 409), [r.text for r in replies]
    tickets = [t for t, _, _ in bets_of(config.database)]
    assert len(tickets) == len(set(tickets)) <= 5


async def test_a_lost_reply_is_recovered_by_the_retry(tmp_path: Path, redis_url: str) -> None:
    config = cluster_config(tmp_path, redis_url)
    async with running_server(config), api_process(config) as lossy, api_process(config) as good:
        _, secret = make_key(config, SCOPES)
        # The engine answers to a stream this process does not read: its reply is lost.
        lossy.commands.reply_to = lossy.commands.replies + ":nobody-reads-this"
        lossy.commands.timeout_s = 1.5
        async with (
            httpx.AsyncClient(base_url=lossy.server.url, timeout=15) as cl,
            httpx.AsyncClient(base_url=good.server.url, timeout=15) as cg,
        ):
            api_lossy, api_good = Api(cl, secret), Api(cg, secret)
            await fund(api_good, "bob")
            first = await api_lossy.post(
                "/api/v1/bets", {"user_id": "bob", "amount": 300}, key="lost"
            )
            assert first.status_code == 503 and first.json()["code"] == "engine_unavailable"
            assert first.headers["Retry-After"] == "1"
            retry = await api_good.post(
                "/api/v1/bets", {"user_id": "bob", "amount": 300}, key="lost"
            )
            assert retry.status_code == 201 and retry.headers["Idempotent-Replayed"] == "true"
            assert await api_good.balance("bob") == 100_000 - 300
    assert [stake for _, stake, _ in bets_of(config.database)] == [300]


async def test_the_engine_keeps_its_place_in_the_command_stream(
    tmp_path: Path, redis_url: str
) -> None:
    config = cluster_config(tmp_path, redis_url, stop_wait_s=0.5)
    _, secret = make_key(config, SCOPES)
    async with api_process_after_engine(config) as (proc, restart):
        async with httpx.AsyncClient(base_url=proc.server.url, timeout=30) as client:
            api = Api(client, secret)
            await fund(api, "cy")
            refused = await api.post(
                "/api/v1/bets/t_000000000000000000000000/cashout", {"user_id": "cy"}
            )
            assert refused.status_code == 404
            before = money_fingerprint(config.database)
            # The engine goes away; a command waits in the stream; the engine comes back.
            replies: list[httpx.Response] = []

            async def bet_while_down() -> None:
                replies.append(
                    await api.post("/api/v1/bets", {"user_id": "cy", "amount": 250}, key="down")
                )

            async with trio.open_nursery() as nursery:
                await restart(nursery, bet_while_down)
            (reply,) = replies
            assert reply.status_code == 201, reply.text
            assert await api.balance("cy") == 100_000 - 250
    # Everything it handled is behind its kept position: nothing runs twice.
    async with open_link(redis_url) as link:
        entries = await link.read(commands_key(config.redis_prefix), "0-0", count=100)
    conn = sqlite3.connect(config.database)
    (kept,) = conn.execute(
        "SELECT value FROM meta WHERE key = ?", (POSITION_PREFIX + POSITION,)
    ).fetchone()
    conn.close()
    assert entry_id_key(kept) == entry_id_key(entries[-1][0])
    assert before != money_fingerprint(config.database)
    assert [stake for _, stake, _ in bets_of(config.database)] == [250]


async def test_an_api_process_reads_the_operators_records_from_the_database(
    tmp_path: Path, redis_url: str
) -> None:
    """The audit log and the PSP events are reads: an API process serves them from the
    database, as the engine does; a demo session's grant goes to the engine (the
    operator's controls through an API process: tests/system/test_cluster_admin.py)."""
    config = cluster_config(tmp_path, redis_url)
    async with running_server(config) as engine, api_process(config) as proc:
        _, ops = make_key(config, "admin:read,admin:control")
        async with (
            httpx.AsyncClient(base_url=engine.url, timeout=15) as direct,
            httpx.AsyncClient(base_url=proc.server.url, timeout=15) as remote,
        ):
            here, there = Api(direct, ops), Api(remote, ops)
            for action in ("pause", "resume"):
                r = await here.post(f"/api/v1/admin/{action}", {"note": "from the engine"})
                assert r.status_code in (200, 201), r.text
            for path in ("/api/v1/admin/audit", "/api/v1/admin/psp-events"):
                mine, theirs = await here.get(path), await there.get(path)
                assert mine.status_code == theirs.status_code == 200, theirs.text
                assert mine.json() == theirs.json()
            actions = [
                e["action"] for e in (await there.get("/api/v1/admin/audit")).json()["entries"]
            ]
            assert actions[:2] == ["resume", "pause"]
            # A demo session: the token made here, the grant made by the engine.
            demo = await remote.post("/api/v1/sandbox/session", json={})
            assert demo.status_code == 201, demo.text
            player = demo.json()
            assert player["credited"] > 0 and player["balance"]["available"] == player["credited"]
            seen = await direct.get(
                "/api/v1/user/balance",
                params={"user_id": player["user_id"]},
                headers={"Authorization": f"Bearer {player['token']}"},
            )
            assert seen.status_code == 200, seen.text
            assert seen.json()["available"] == player["credited"]
            renewed = await remote.post("/api/v1/sandbox/session", json={"token": player["token"]})
            assert renewed.status_code == 201 and renewed.json()["user_id"] == player["user_id"]
            assert renewed.json()["credited"] == 0  # not broke: nothing granted again
            # Ready for its load balancer: the engine's state has come, the reads are open.
            ready = await remote.get("/readyz")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"] == {"engine": "ok", "ledger": "ok"}


@asynccontextmanager
async def api_process_after_engine(config: Config) -> AsyncIterator[tuple[ApiInfo, Any]]:
    """An engine and an API process; ``restart(nursery, during)`` stops the engine,
    starts ``during`` (which sends a command) while it is down, and starts it again."""
    stop, stopped = trio.Event(), trio.Event()
    async with trio.open_nursery() as outer:

        async def engine(
            stop: trio.Event, stopped: trio.Event, task_status: trio.TaskStatus[None]
        ) -> None:
            try:
                async with running_server(config):
                    task_status.started()
                    await stop.wait()
            finally:
                stopped.set()

        await outer.start(engine, stop, stopped)
        async with api_process(config) as proc:

            async def restart(nursery: trio.Nursery, during: Any) -> None:
                nonlocal stop, stopped
                stop.set()
                await stopped.wait()
                nursery.start_soon(during)
                await trio.sleep(0.5)  # the command waits in Redis
                stop, stopped = trio.Event(), trio.Event()
                await outer.start(engine, stop, stopped)

            try:
                yield proc, restart
            finally:
                stop.set()


async def _welcome(ws: Any, token: str) -> dict[str, Any]:
    await ws.send_message(json.dumps({"type": "auth", "token": token}))
    return await next_of(ws, lambda m: m["type"] == "welcome")


async def test_orders_on_an_edge_go_to_the_engine(tmp_path: Path, redis_url: str) -> None:
    config = cluster_config(tmp_path, redis_url, betting_ms=1_200)
    async with running_server(config) as engine, trio.open_nursery() as nursery:
        _, secret = make_key(config, SCOPES)
        edge: EdgeInfo = await nursery.start(run_edge, config)
        async with httpx.AsyncClient(base_url=engine.url, timeout=15) as client:
            api = Api(client, secret)
            await fund(api, "amy", 1_000)
            r = await api.post("/api/v1/feed/user-token", {"user_id": "amy"})
            token = r.json()["token"]
            async with open_websocket_url(edge.url) as ws:
                await _welcome(ws, token)
                await ws.send_message(
                    json.dumps({"type": "subscribe", "id": 1, "channels": ["user:acme:amy"]})
                )
                await api.wait_status("betting", timeout=30)
                key = uuid.uuid4().hex
                await ws.send_message(
                    json.dumps({"type": "bet", "id": 3, "key": key, "amount": 300})
                )
                # The answer, and the money news through the edge (in either order).
                seen: dict[str, dict[str, Any]] = {}
                while len(seen) < 2:
                    msg = await next_of(
                        ws, lambda m: m.get("type") == "bet_accepted" or m.get("id") == 3
                    )
                    seen[msg["type"]] = msg
                bet, accepted = seen["result"], seen["bet_accepted"]
                assert bet["status"] == 201, bet
                assert accepted["ticket_id"] == bet["body"]["ticket_id"]
                # The same request as REST's, wherever it was taken.
                rest = await api.post("/api/v1/bets", {"user_id": "amy", "amount": 300}, key=key)
                assert rest.headers["idempotent-replayed"] == "true" and rest.json() == bet["body"]
                assert await api.balance("amy") == 700
        nursery.cancel_scope.cancel()


@pytest.mark.slow
async def test_a_redis_restart_changes_the_feeds_epoch_and_loses_no_money(
    tmp_path: Path,
) -> None:
    if server_binary() is None:
        pytest.skip(SKIP_NO_REDIS)
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    with private_redis(redis_dir) as redis:
        config = cluster_config(tmp_path, redis.url)
        async with running_server(config) as engine, trio.open_nursery() as nursery:
            _, secret = make_key(config, SCOPES)
            edge: EdgeInfo = await nursery.start(run_edge, config)
            async with (
                api_process(config) as proc,
                httpx.AsyncClient(base_url=proc.server.url, timeout=30) as client,
                httpx.AsyncClient(base_url=engine.url, timeout=30) as direct,
            ):
                api, here = Api(client, secret), Api(direct, secret)
                users = [f"dan{i}" for i in range(4)]
                for user in users:
                    await fund(api, user)
                placed = []
                for i in range(3):
                    r = await api.post("/api/v1/bets", {"user_id": users[i], "amount": 100 + i})
                    assert r.status_code == 201, r.text
                    placed.append(r.json()["ticket_id"])
                async with open_websocket_url(
                    edge.url, extra_headers=[("Authorization", f"Bearer {secret}")]
                ) as ws:
                    welcome = await next_of(ws, lambda m: m["type"] == "welcome")
                    await ws.send_message(
                        json.dumps({"type": "subscribe", "id": 1, "channels": ["round_updates"]})
                    )
                    snapshot = await next_of(ws, lambda m: m["type"] == "snapshot")
                    epoch = welcome["epoch"]
                    redis.restart()  # everything Redis held is gone
                    with trio.fail_after(30):
                        with pytest.raises(ConnectionClosed) as closed:
                            while True:
                                await ws.get_message()
                    assert closed.value.reason.code == 1001
                # The client comes back and resumes: a snapshot of the new epoch.
                with trio.fail_after(30):
                    while edge.hub.epoch == epoch:
                        await trio.sleep(0.05)
                async with open_websocket_url(
                    edge.url, extra_headers=[("Authorization", f"Bearer {secret}")]
                ) as ws:
                    welcome = await next_of(ws, lambda m: m["type"] == "welcome")
                    assert welcome["epoch"] != epoch
                    await ws.send_message(
                        json.dumps(
                            {
                                "type": "subscribe",
                                "id": 2,
                                "channels": ["round_updates"],
                                "resume": {"seq": snapshot["seq"], "epoch": epoch},
                            }
                        )
                    )
                    again = await next_of(ws, lambda m: m["type"] == "snapshot")
                    assert again["reason"] == "epoch_changed" and again["epoch"] == welcome["epoch"]
                # Commands flow again; what was acknowledged before is all there.
                with trio.fail_after(30):
                    while True:
                        r = await api.post(
                            "/api/v1/bets", {"user_id": users[3], "amount": 50}, key="after"
                        )
                        if r.status_code == 201:
                            break
                        assert r.json()["code"] in (
                            "engine_unavailable",
                            "idempotency_key_in_flight",
                        )
                        await trio.sleep(0.2)
                tickets = [t for t, _, _ in bets_of(config.database)]
                assert set(placed) <= set(tickets) and len(tickets) == len(placed) + 1
                for user in users:
                    assert await here.balance(user) == await api.balance(user)
            nursery.cancel_scope.cancel()
        money_fingerprint(config.database)  # the audit passes

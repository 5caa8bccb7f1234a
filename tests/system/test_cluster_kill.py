"""Killing parts of a running cluster (``crashd cluster``'s processes, ``kill -9``).

* An API process dies under a bet load: every bet it acknowledged is in the ledger, and
  every request that got no answer, retried with its key through the other API process,
  is answered once — no bet twice, the ledger's audit passes.
* An edge dies under its subscribers: they reconnect (to the same port: the other edge
  now) and resume, and miss no ordered message.
"""

from __future__ import annotations

import json
import os
import random
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from crashd.api.cluster.topology import Cluster, ClusterPlan, free_port, running_cluster
from support.feed import next_of
from support.game import Api, fund, game_config
from support.redis import SKIP_NO_REDIS, server_binary
from support.security import money_fingerprint
from support.servers import make_key

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("logscan")]

SCOPES = "read:game_state,read:balance,write:bet"
CHANNELS = ["round_updates", "user:acme:feedy"]


def plan_for(tmp_path: Path, redis_url: str, edges: int, apis: int) -> tuple[ClusterPlan, Any]:
    config = game_config(tmp_path, betting_ms=1_000)
    env = {
        "CRASHD_DATABASE": str(config.database),
        "CRASHD_CHAIN_FILE": str(config.chain_file),
        "CRASHD_BETTING_MS": str(config.betting_ms),
        "CRASHD_PAUSE_MS": str(config.pause_ms),
        "CRASHD_STOP_WAIT_S": "1",
        "CRASHD_REDIS_PREFIX": f"kill-{uuid.uuid4().hex[:8]}",
        "CRASHD_LOG_LEVEL": "warning",
    }
    plan = ClusterPlan(
        edges=edges,
        apis=apis,
        api_port=free_port(),
        engine_port=free_port(),
        feed_port=free_port(),
        redis_url=redis_url,
        workdir=tmp_path,
        environment=env,
    )
    return plan, config


def kill(cluster: Cluster, name: str) -> None:
    part = next(p for p in cluster.parts if p.name == name)
    os.kill(part.proc.pid, signal.SIGKILL)
    part.proc.wait()


async def test_a_killed_api_process_loses_nothing_acknowledged(
    tmp_path: Path, redis_url: str
) -> None:
    plan, config = plan_for(tmp_path, redis_url, edges=0, apis=2)
    with running_cluster(plan) as cluster:
        _, secret = make_key(config, SCOPES)
        users = [f"p{i}" for i in range(8)]
        acknowledged: dict[str, str] = {}
        unanswered: list[tuple[str, str]] = []
        # One port, two processes behind it: the kernel spreads the connections.
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=cluster.apis[0].url, timeout=20, limits=limits
        ) as client:
            api = Api(client, secret)
            for user in users:
                await fund(api, user)
            killed = trio.Event()

            async def bettor(user: str) -> None:
                rng = random.Random(user)
                while not killed.is_set():
                    key = uuid.uuid4().hex
                    try:
                        r = await api.post("/api/v1/bets", {"user_id": user, "amount": 10}, key=key)
                    except httpx.TransportError:
                        unanswered.append((user, key))
                        continue
                    if r.status_code == 201:
                        acknowledged[key] = r.json()["ticket_id"]
                    await trio.sleep(rng.random() * 0.05)

            async with trio.open_nursery() as nursery:
                for user in users:
                    nursery.start_soon(bettor, user)
                await trio.sleep(3.0)
                await trio.to_thread.run_sync(kill, cluster, "api 1")
                await trio.sleep(1.0)
                killed.set()
            assert acknowledged, "the load placed bets before the kill"
            # Every request left without an answer, retried with its key (the port now
            # leads to the other process): answered once, from the engine's record.
            for user, key in unanswered:
                with trio.fail_after(30):
                    while True:
                        r = await api.post("/api/v1/bets", {"user_id": user, "amount": 10}, key=key)
                        if r.status_code not in (409, 503):  # still in flight / no answer yet
                            break
                        await trio.sleep(0.2)
                if r.status_code == 201:
                    acknowledged[key] = r.json()["ticket_id"]
    tickets = _tickets(config.database)
    assert set(acknowledged.values()) <= tickets
    assert len(tickets) == len(acknowledged)  # nothing placed that nobody was told of
    money_fingerprint(config.database)  # the audit passes


def _tickets(database: Path) -> set[str]:
    import sqlite3

    conn = sqlite3.connect(database)
    try:
        return {r[0] for r in conn.execute("SELECT ticket_id FROM bets")}
    finally:
        conn.close()


async def test_a_killed_edge_loses_no_ordered_message(tmp_path: Path, redis_url: str) -> None:
    if server_binary() is None and not os.environ.get("CRASHD_TEST_REDIS_URL"):
        pytest.skip(SKIP_NO_REDIS)
    plan, config = plan_for(tmp_path, redis_url, edges=2, apis=0)
    with running_cluster(plan) as cluster:
        _, secret = make_key(config, SCOPES)
        assert cluster.engine is not None
        async with httpx.AsyncClient(base_url=cluster.engine.url, timeout=20) as client:
            api = Api(client, secret)
            engine_feed = (await client.post("/api/v1/feed/token", headers=api.headers)).json()[
                "ws_url"
            ]
            feed = cluster.edges[0].url
            pids = {p.proc.pid for p in cluster.edges}
            reference: dict[int, str] = {}
            covered = [0]  # the seq the reference's snapshot covers up to
            got: list[dict[int, str]] = [{} for _ in range(12)]
            cut = trio.Event()
            done = trio.Event()

            async def recorder(task_status: trio.TaskStatus[None]) -> None:
                async with open_websocket_url(
                    engine_feed, extra_headers=[("Authorization", f"Bearer {secret}")]
                ) as ws:
                    await next_of(ws, lambda m: m["type"] == "welcome")
                    await ws.send_message(json.dumps({"type": "subscribe", "channels": CHANNELS}))
                    snapshot = await next_of(ws, lambda m: m["type"] == "snapshot")
                    covered[0] = snapshot["seq"]
                    task_status.started()
                    while not done.is_set():
                        text = await ws.get_message()
                        msg = json.loads(text)
                        if msg.get("channel") in CHANNELS:
                            reference[msg["seq"]] = text

            connects = [0] * len(got)

            async def subscriber(i: int) -> None:
                seen = got[i]
                resume: dict[str, Any] | None = None
                while not done.is_set():
                    try:
                        async with open_websocket_url(
                            feed, extra_headers=[("Authorization", f"Bearer {secret}")]
                        ) as ws:
                            await next_of(ws, lambda m: m["type"] == "welcome")
                            connects[i] += 1
                            sub: dict[str, Any] = {
                                "type": "subscribe",
                                "channels": CHANNELS,
                            }
                            if resume is not None:
                                sub["resume"] = resume
                            await ws.send_message(json.dumps(sub))
                            while not done.is_set():
                                text = await ws.get_message()
                                msg = json.loads(text)
                                if msg.get("type") == "snapshot":
                                    assert resume is None or msg["reason"] != "resume_gap", msg
                                    resume = {"seq": msg["seq"], "epoch": msg["epoch"]}
                                elif msg.get("channel") in CHANNELS:
                                    seen[msg["seq"]] = text
                                    assert resume is not None
                                    resume["seq"] = max(resume["seq"], msg["seq"])
                    except (ConnectionClosed, OSError):
                        await trio.sleep(0.1)  # the edge died: come back and resume

            async def money() -> None:
                # Ordered traffic: each credit is a balance message on the user channel.
                while not done.is_set():
                    await api.post("/api/v1/sandbox/faucet", {"user_id": "feedy", "amount": 1})
                    await trio.sleep(0.03)

            async with trio.open_nursery() as nursery:
                await nursery.start(recorder)
                nursery.start_soon(money)
                for i in range(len(got)):
                    nursery.start_soon(subscriber, i)
                await trio.sleep(4.0)
                await trio.to_thread.run_sync(kill, cluster, "edge 1")
                cut.set()
                await trio.sleep(4.0)
                done.set()
                nursery.cancel_scope.cancel()
            assert pids
            assert max(connects) >= 2, "some subscribers were on the killed edge"
            # What the reference can vouch for: after its snapshot (an edge, behind the
            # engine, may serve a subscriber from an earlier seq), up to its newest (a
            # subscriber may have read past it when the run stopped).
            newest = max(reference)
            for seen in got:
                assert len(seen) > 50, "every subscriber received messages, before and after"
                checked = sorted(s for s in seen if covered[0] < s <= newest)
                first, last = checked[0], checked[-1]
                expected = [s for s in sorted(reference) if first <= s <= last]
                assert checked == expected  # no message lost across the kill
                assert all(reference[s] == seen[s] for s in checked)  # the engine's bytes

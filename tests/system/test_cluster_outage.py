"""Redis goes away under a running cluster, and comes back empty (real processes).

An engine (``crashd serve``), an edge fed through Redis (``crashd edge --redis-url``)
and an API process (``crashd api``), over the Redis ``.ci/redis`` starts. Mid-round, the
``redis-server`` is stopped (its pid file) and started again on the same socket, empty:

* while it is away, a money-moving call through the API process is answered at once
  with a clear problem (``engine_unavailable``, ``Retry-After``), reads still answer
  from the database, the engine's own REST carries on; past ``STALE_AFTER_S`` without
  a keyframe the API process's ``/readyz`` and the edge's fail, ``GET /game/state``
  answers ``engine_unavailable`` instead of the stale state, the edge refuses new
  connections (503) and keeps the one it has — all until keyframes flow again;
* once it is back, the feed is in a new epoch: the edge closes its clients with 1001 and
  a client resuming with its old ``seq`` gets an ``epoch_changed`` snapshot (the feed's
  resume rules, docs/feed.md); commands flow again, and the refused call retried with
  its key is placed once;
* no acknowledged bet is lost, nothing is placed that nobody was told of, the API
  process and the engine agree on every balance, and the ledger's audit passes (money
  conserved): money truth never lives in Redis.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from crashd.api.cluster.topology import ClusterPlan, _wait_line, free_port, running_cluster
from crashd.api.wire import FEED_PATH
from crashd.engine.bounds import STALE_AFTER_S
from support.feed import next_of
from support.game import Api, fund, game_config
from support.redis import SKIP_NO_REDIS, server_binary
from support.security import money_fingerprint
from support.servers import REPO, make_key

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("logscan")]

SCOPES = "read:game_state,read:balance,write:bet"


class CiRedis:
    """The Redis ``.ci/redis DIR`` starts (daemonised, its pid in ``DIR/redis.pid``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.url = ""

    def start(self) -> str:
        out = subprocess.run(
            [str(REPO / ".ci" / "redis"), str(self.directory)],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        self.url = out.stdout.strip()
        return self.url

    def stop(self) -> None:
        """Stop the server (it keeps nothing: what it held is gone)."""
        pid_file = self.directory / "redis.pid"
        if not pid_file.exists():
            return
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
        pid_file.unlink(missing_ok=True)


def _tickets(database: Path) -> set[str]:
    conn = sqlite3.connect(database)
    try:
        return {r[0] for r in conn.execute("SELECT ticket_id FROM bets")}
    finally:
        conn.close()


async def test_a_redis_restart_under_real_processes_changes_the_epoch_and_loses_no_money(
    tmp_path: Path,
) -> None:
    if server_binary() is None:
        pytest.skip(SKIP_NO_REDIS)
    redis = CiRedis(tmp_path / "redis")
    url = await trio.to_thread.run_sync(redis.start)
    try:
        config = game_config(tmp_path, betting_ms=2_500)
        env = {
            "CRASHD_DATABASE": str(config.database),
            "CRASHD_CHAIN_FILE": str(config.chain_file),
            "CRASHD_BETTING_MS": str(config.betting_ms),
            "CRASHD_PAUSE_MS": str(config.pause_ms),
            "CRASHD_STOP_WAIT_S": "1",
            "CRASHD_REDIS_PREFIX": f"outage-{uuid.uuid4().hex[:8]}",
            "CRASHD_LOG_LEVEL": "warning",
        }
        plan = ClusterPlan(
            edges=0, apis=1, api_port=free_port(), engine_port=free_port(), redis_url=url,
            workdir=tmp_path, environment=env,
        )  # fmt: skip
        with running_cluster(plan) as cluster:
            # The edge reads the engine's feed through Redis (not the relay socket).
            edge = cluster._spawn(
                "edge 1",
                ["edge", "--redis-url", url, "--host", plan.host, "--feed-port", str(free_port())],
            )
            cluster.edges.append(edge)
            edge.url = _wait_line(edge, "crashd edge: feed on ", 60).split()[-1]
            await _outage(cluster, redis, config, edge.url)
        money_fingerprint(config.database)  # the audit passes: money conserved
    finally:
        await trio.to_thread.run_sync(redis.stop)


async def _wait_ready(client: httpx.AsyncClient, path: str, ready: bool) -> None:
    """Until ``path`` answers ready (200) or not (503): the keyframes' age crosses
    ``STALE_AFTER_S`` in real time."""
    with trio.fail_after(STALE_AFTER_S + 30):
        while True:
            r = await client.get(path)
            assert r.status_code in (200, 503), r.text
            if (r.status_code == 200) == ready:
                return
            await trio.sleep(0.2)


async def _outage(cluster: Any, redis: CiRedis, config: Any, feed_url: str) -> None:
    _, secret = make_key(config, SCOPES)
    edge_http = "http" + feed_url.removeprefix("ws").removesuffix(FEED_PATH)
    assert cluster.engine is not None
    async with (
        httpx.AsyncClient(base_url=cluster.apis[0].url, timeout=30) as remote,
        httpx.AsyncClient(base_url=cluster.engine.url, timeout=30) as direct,
    ):
        api, here = Api(remote, secret), Api(direct, secret)
        users = [f"out{i}" for i in range(4)]
        for user in users:
            await fund(api, user)
        acknowledged: dict[str, str] = {}
        state = await api.wait_status("betting", timeout=30)
        for i, user in enumerate(users[:3]):
            key = f"before-{i}"
            r = await api.post("/api/v1/bets", {"user_id": user, "amount": 100 + i}, key=key)
            assert r.status_code == 201, r.text
            acknowledged[key] = r.json()["ticket_id"]
        async with open_websocket_url(
            feed_url, extra_headers=[("Authorization", f"Bearer {secret}")]
        ) as ws:
            welcome = await next_of(ws, lambda m: m["type"] == "welcome")
            await ws.send_message(
                json.dumps({"type": "subscribe", "id": 1, "channels": ["round_updates"]})
            )
            snapshot = await next_of(ws, lambda m: m["type"] == "snapshot")
            epoch = welcome["epoch"]
            # Mid-round: the bets above are in the round that is running.
            running = await api.wait_status("running", timeout=30)
            assert running["round_id"] == state["round_id"]
            await trio.to_thread.run_sync(redis.stop)

            # While Redis is away: a clear refusal at once, reads from the database.
            with trio.fail_after(5):
                r = await api.post(
                    "/api/v1/bets", {"user_id": users[3], "amount": 50}, key="during"
                )
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "engine_unavailable" and r.headers["Retry-After"] == "1"
            assert await api.balance(users[0]) == await here.balance(users[0]) == 100_000 - 100
            assert (await here.state())["round_id"] >= running["round_id"]  # the engine plays on

            # Past the staleness limit, the last keyframe is no longer served as live:
            # the API process and the edge leave the rotation (the edge keeps its
            # clients: this one stays connected), /game/state is a problem.
            await _wait_ready(remote, "/readyz", False)
            r = await remote.get("/readyz")
            assert "its stream stopped" in r.json()["checks"]["engine"], r.text
            r = await api.get("/api/v1/game/state")
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "engine_unavailable" and r.headers["Retry-After"] == "1"
            await _wait_ready(direct, "/readyz", True)  # the engine is fine (a late tick
            # under load is its own reason for a 503, gone once the tick ages out)
            async with httpx.AsyncClient(base_url=edge_http, timeout=30) as edge_probe:
                await _wait_ready(edge_probe, "/readyz", False)
                assert (
                    "its stream stopped"
                    in (await edge_probe.get("/readyz")).json()["checks"]["stream"]
                )
            with pytest.raises(ConnectionRejected) as refused:
                async with open_websocket_url(
                    feed_url, extra_headers=[("Authorization", f"Bearer {secret}")]
                ):
                    pass
            assert refused.value.status_code == 503

            await trio.to_thread.run_sync(redis.start)  # the same socket, empty
            with trio.fail_after(60):
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await ws.get_message()
            assert closed.value.reason.code == 1001
        # The client reconnects and resumes from its seq: a snapshot of the new epoch.
        async with open_websocket_url(
            feed_url, extra_headers=[("Authorization", f"Bearer {secret}")]
        ) as ws:
            welcome = await next_of(ws, lambda m: m["type"] == "welcome")
            assert welcome["epoch"] != epoch
            resume = {"seq": snapshot["seq"], "epoch": epoch}
            await ws.send_message(
                json.dumps(
                    {"type": "subscribe", "id": 2, "channels": ["round_updates"], "resume": resume}
                )
            )
            again = await next_of(ws, lambda m: m["type"] == "snapshot")
            assert again["reason"] == "epoch_changed" and again["epoch"] == welcome["epoch"]
        # Keyframes flow again: ready, and the live state served.
        await _wait_ready(remote, "/readyz", True)
        assert (await api.get("/api/v1/game/state")).status_code == 200
        async with httpx.AsyncClient(base_url=edge_http, timeout=30) as edge_probe:
            await _wait_ready(edge_probe, "/readyz", True)
        # Commands flow again: the refused bet, retried with its key, is placed once.
        with trio.fail_after(60):
            while True:
                r = await api.post(
                    "/api/v1/bets", {"user_id": users[3], "amount": 50}, key="during"
                )
                if r.status_code == 201:
                    break
                assert r.json()["code"] in ("engine_unavailable", "idempotency_key_in_flight")
                await trio.sleep(0.2)
        acknowledged["during"] = r.json()["ticket_id"]
        again_r = await api.post("/api/v1/bets", {"user_id": users[3], "amount": 50}, key="during")
        assert again_r.headers.get("Idempotent-Replayed") == "true"
        await api.wait_round_over(r.json()["round_id"], timeout=60)
        tickets = _tickets(config.database)
        assert set(acknowledged.values()) == tickets  # none lost, none nobody was told of
        for user in users:
            assert await here.balance(user) == await api.balance(user)

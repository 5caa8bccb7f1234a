"""Rotating to a new hash chain against a real server: a 4-game chain runs low, the
operator publishes the next one (its commitment public before its first game), the
engine moves on to it at the round after the last game, history links the chains, and
a restart finds every chain again."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
import trio

from crashd.api.cli.audit import keys_of
from crashd.engine.chainstore import ChainFile
from crashd.engine.chainstore import save as save_chain
from crashd.engine.fairness import ChainReader, build_chain, chain_position, crash_point
from crashd.engine.settlement.audit import audit
from support.game import Api
from support.servers import make_config, make_key, running_server

pytestmark = pytest.mark.usefixtures("logscan")

GAMES = 4


def short_chain(path: Path) -> ChainFile:
    spec = build_chain(hashlib.sha256(b"rotation").digest(), length=GAMES, interval=4)
    reader = ChainReader(spec)
    for attempt in range(1_000_000):
        salt = f"rotation-{attempt}"
        if all(101 <= crash_point(reader.game_hash(g), salt) <= 150 for g in range(1, GAMES + 1)):
            chain = ChainFile(spec=spec, salt=salt)
            save_chain(path, chain)
            return chain
    raise AssertionError("no salt")


async def test_the_next_chain_takes_over_after_the_last_game(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        chain_length=GAMES,
        betting_ms=300,
        pause_ms=150,
        stop_wait_s=5.0,
        chain_warn_games=3,
    )
    first = short_chain(config.chain_file)
    assert first.spec.games == GAMES
    async with running_server(config) as info:
        _, ops = make_key(config, "admin:read,admin:control,admin:metrics")
        _, reader = make_key(config, "read:game_state")
        async with httpx.AsyncClient(base_url=info.url, timeout=20) as client:
            admin, player = Api(client, ops), Api(client, reader)
            status = (await admin.get("/api/v1/admin/chain")).json()
            assert status["current"]["chain"] == 1 and status["next"] is None
            r = await admin.post("/api/v1/admin/chain/next", {"length": 50, "note": "rotation"})
            assert r.status_code == 201, r.text
            published = r.json()["chain"]
            assert published["first_round"] == GAMES + 1 and published["salt"]
            # Published before its first game: in the fairness document and the audit log.
            fairness = (await client.get("/api/v1/fairness")).json()
            assert [c["chain"] for c in fairness["chains"]] == [1, 2]
            again = await admin.post("/api/v1/admin/chain/next", {})
            assert again.status_code == 409 and again.json()["code"] == "chain_not_ready"
            # The engine moves on to chain 2 at round GAMES + 1.
            state = await player.wait_status("betting", timeout=60)
            while state["round_id"] <= GAMES:
                state = await player.wait_status("running", timeout=60)
                state = await player.wait_status("betting", timeout=60)
            assert state["round_id"] == GAMES + 1
            status = (await admin.get("/api/v1/admin/chain")).json()
            assert status["current"]["chain"] == 2
            # Reveal chain 2's game 1 at once by voiding its round; it links to chain 2.
            r = await admin.post("/api/v1/admin/void", {"note": "reveal"})
            assert r.status_code == 200, r.text
            game_hash = r.json()["voided"]["game_hash"]
            assert chain_position(game_hash, published["terminating_hash"], 10) == 1
            assert r.json()["voided"]["crash_point"] == crash_point(game_hash, published["salt"])
            history = (await player.get(f"/api/v1/game/rounds/{GAMES + 1}")).json()
            assert history["salt"] == published["salt"]
            last_of_1 = (await player.get(f"/api/v1/game/rounds/{GAMES}")).json()
            assert last_of_1["salt"] == first.salt
            assert (
                chain_position(last_of_1["game_hash"], first.spec.terminating_hash.hex(), 10)
                == GAMES
            )
            # Each round's transcript names its own chain and salt; the audit links the
            # last game of chain 1 to game 1 of chain 2 by chain 2's commitment.
            with trio.fail_after(30):
                while (await player.get(f"/api/v1/game/rounds/{GAMES + 1}/transcript")).is_error:
                    await trio.sleep(0.05)
            page = await player.get("/api/v1/game/transcripts", from_round=1, to_round=GAMES + 1)
            ts = page.json()["transcripts"]
            assert [t["round_id"] for t in ts] == list(range(1, GAMES + 2))
            assert [t["fairness"]["salt"] for t in ts] == [first.salt] * GAMES + [published["salt"]]
            assert ts[-1]["fairness"]["terminating_hash"] == published["terminating_hash"]
            keys = keys_of((await client.get("/.well-known/crashd-keys")).json())
            report = audit(ts, keys, chains=fairness["chains"])
            assert report.ok, report.findings
            metrics = (await admin.get("/metrics")).text
            assert 'crashd_chain_current{environment="sandbox"} 2.0' in metrics
    # A restart finds both chains (from the audit log) and goes on in chain 2.
    async with running_server(config) as info:
        async with httpx.AsyncClient(base_url=info.url, timeout=20) as client:
            fairness = (await client.get("/api/v1/fairness")).json()
            assert [c["chain"] for c in fairness["chains"]] == [1, 2]
            assert fairness["terminating_hash"] == published["terminating_hash"]
            assert fairness["first_round"] == GAMES + 1

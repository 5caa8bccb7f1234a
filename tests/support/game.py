"""A game for tests: a real server playing short rounds (every crash in
[1.01x, 2.00x]), and ``Api``, a signed REST client with waits on the game's phases."""

from __future__ import annotations

import functools
import hashlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import trio

from crashd.api.config import Config
from crashd.api.security.signing import sign_request
from crashd.engine.chainstore import ChainFile
from crashd.engine.chainstore import save as save_chain
from crashd.engine.fairness import ChainReader, build_chain, crash_point
from support.servers import SIGNING_SECRETS, make_config

GAMES = 16
"""Rounds a test may play: the chain's salt is chosen so each of them crashes in
[1.01x, 2.00x], so no test waits for a 50x round (the crash points stay fair: a real
chain and the real formula, just a salt picked by the test, as an operator never may)."""


@functools.lru_cache(maxsize=1)
def _short_rounds() -> ChainFile:
    spec = build_chain(hashlib.sha256(b"crashd api tests").digest(), length=2000, interval=100)
    reader = ChainReader(spec)
    hashes = [reader.game_hash(g) for g in range(1, GAMES + 1)]
    for attempt in range(10_000_000):
        salt = f"test-salt-{attempt}"
        if all(101 <= crash_point(h, salt) <= 200 for h in hashes):
            return ChainFile(spec=spec, salt=salt)
    raise AssertionError("no salt found")


def short_rounds_chain(path: Path) -> None:
    save_chain(path, _short_rounds())


def game_config(tmp_path: Path, **overrides: object) -> Config:
    settings: dict[str, object] = dict(
        chain_length=2000, betting_ms=400, pause_ms=200, tick_hz=20, stop_wait_s=5.0
    )
    settings.update(overrides)
    config = make_config(tmp_path, **settings)
    if not config.chain_file.exists():
        short_rounds_chain(config.chain_file)
    return config


class Api:
    def __init__(self, client: httpx.AsyncClient, key: str) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {key}"}
        self.signing_secret = SIGNING_SECRETS[key]

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params, headers=self.headers)

    async def post(
        self, path: str, body: dict[str, Any], key: str | None = None, method: str = "POST"
    ) -> httpx.Response:
        """A signed write (every write:bet POST/PUT must be signed)."""
        raw = json.dumps(body).encode()
        signature = sign_request(
            self.signing_secret, method, path, raw, key or uuid.uuid4().hex, int(time.time())
        )
        headers = {**self.headers, **signature, "Content-Type": "application/json"}
        return await self.client.request(method, path, content=raw, headers=headers)

    async def balance(self, user: str) -> int:
        r = await self.get("/api/v1/user/balance", user_id=user)
        assert r.status_code == 200, r.text
        return int(r.json()["available"])

    async def state(self) -> dict[str, Any]:
        r = await self.get("/api/v1/game/state")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    async def wait_status(
        self, status: str | tuple[str, ...], timeout: float = 120.0
    ) -> dict[str, Any]:
        """The state once its status is ``status`` (or one of them: a short round's
        running phase can fall between two polls on a loaded machine). The deadline is
        only a failure's: the round running may crash at any point (a 1,000x round runs
        ~115 s), so not 10 s (CI once waited longer for betting)."""
        wanted = (status,) if isinstance(status, str) else status
        with trio.fail_after(timeout):
            while True:
                state = await self.state()
                if state["status"] in wanted:
                    return state
                await trio.sleep(0.02)

    async def wait_round_over(self, round_id: int, timeout: float = 30.0) -> dict[str, Any]:
        """The finished round ``round_id`` (crash point, hash), once it has crashed."""
        with trio.fail_after(timeout):
            while True:
                state = await self.state()
                if state["round_id"] > round_id or state["status"] == "crashed":
                    r = await self.get(f"/api/v1/game/rounds/{round_id}")
                    if r.status_code == 200:
                        return r.json()  # type: ignore[no-any-return]
                await trio.sleep(0.05)

    async def place(self, user: str, amount: int, auto: int | None = None) -> dict[str, Any]:
        r = await self.post("/api/v1/bets/reserve", {"user_id": user, "amount": amount})
        assert r.status_code == 201, r.text
        body: dict[str, Any] = {"user_id": user, "hold_id": r.json()["hold_id"]}
        if auto is not None:
            body["auto_cashout"] = auto
        r = await self.post("/api/v1/bets/confirm", body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]


async def fund(api: Api, user: str, amount: int = 100_000) -> None:
    r = await api.post("/api/v1/sandbox/faucet", {"user_id": user, "amount": amount})
    assert r.status_code == 201, r.text

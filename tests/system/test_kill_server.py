"""Kill the whole server at random moments under a real bet load; restart; audit.

A child ``crashd serve`` plays short rounds while a few clients reserve, confirm and
cash out over real HTTP, recording every acknowledgement they got. The test SIGKILLs
the server at seeded random moments (``CRASHD_SERVER_KILLS``, default 6), restarts it on
the same files each time, and at the end checks the ledger: integrity and every audit
invariant hold, every acknowledged bet exists, every acknowledged cashout is paid
exactly as acknowledged, and every bet ended with exactly one outcome (interrupted
rounds were voided and refunded). The seed is printed (``CRASHD_SERVER_KILL_SEED``
replays it). On both backends: a SQLite file, and a PostgreSQL database whose every
restart takes the leader lease over from the killed server.
"""

from __future__ import annotations

import os
import random
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import trio

from crashd.engine import chainstore
from crashd.engine.fairness import ChainReader, crash_point
from crashd.engine.ledger import open_ledger
from support.game import Api, game_config
from support.postgres import Backend
from support.servers import make_key, serve_argv, start_process

KILLS = int(os.environ.get("CRASHD_SERVER_KILLS", "6"))


async def start(config: Any) -> tuple[trio.Process, str]:
    return await start_process(serve_argv(config))


class Acks:
    def __init__(self) -> None:
        self.confirmed: dict[str, int] = {}
        self.cashed_out: dict[str, tuple[int, int]] = {}
        self.unanswered: list[tuple[str, str, dict[str, Any]]] = []
        """(path, Idempotency-Key, body) of bets whose answer was lost to a kill."""

    def placed(self, body: dict[str, Any], stake: int) -> str:
        ticket: str = body["ticket_id"]
        self.confirmed[ticket] = stake
        return ticket


async def place(api: Api, user: str, stake: int, rng: random.Random, acks: Acks) -> str | None:
    """One bet, in one of the three ways a partner may place it: reserve + confirm, the
    one-shot POST /bets, or an item of a batch."""
    way = rng.choice(["two-phase", "one-shot", "batch"])
    if way == "two-phase":
        r = await api.post("/api/v1/bets/reserve", {"user_id": user, "amount": stake})
        if r.status_code != 201:
            return None
        r = await api.post(
            "/api/v1/bets/confirm", {"user_id": user, "hold_id": r.json()["hold_id"]}
        )
        return acks.placed(r.json(), stake) if r.status_code == 201 else None
    key = uuid.uuid4().hex
    body = {"user_id": user, "amount": stake}
    try:
        if way == "one-shot":
            r = await api.post("/api/v1/bets", body, key=key)
            return acks.placed(r.json(), stake) if r.status_code == 201 else None
        r = await api.post(
            "/api/v1/bets/batch", {"items": [{"action": "place", "key": key, **body}]}
        )
        [item] = r.json()["results"]
        return acks.placed(item["body"], stake) if item["status"] == 201 else None
    except (httpx.TransportError, OSError):
        acks.unanswered.append(("/api/v1/bets", key, body))
        raise


async def player(api: Api, user: str, rng: random.Random, acks: Acks) -> None:
    """Bet and cash out until the server dies under us."""
    try:
        r = await api.post("/api/v1/sandbox/faucet", {"user_id": user, "amount": 1_000_000})
        while True:
            ticket = await place(api, user, rng.randint(1, 500), rng, acks)
            if ticket is None:
                await trio.sleep(0.05)
                continue
            await trio.sleep(rng.uniform(0.2, 1.2))
            r = await api.post(f"/api/v1/bets/{ticket}/cashout", {"user_id": user})
            if r.status_code == 200:
                body = r.json()
                acks.cashed_out[ticket] = (body["multiplier"], body["payout"])
    except (httpx.TransportError, OSError):
        return  # killed


async def retry_lost_answers(api: Api, acks: Acks) -> None:
    """A partner retries every bet whose answer it lost, with the same key: the answer
    is the bet's (placed once), or a refusal, never a second bet."""
    lost, acks.unanswered = acks.unanswered, []
    for path, key, body in lost:
        r = await api.post(path, body, key=key)
        if r.status_code == 201:
            acks.placed(r.json(), body["amount"])
        else:
            assert 400 <= r.status_code < 500, r.text


async def test_kill_the_server_under_load_and_recover(db: Backend, tmp_path: Path) -> None:
    seed = int(os.environ.get("CRASHD_SERVER_KILL_SEED", random.randrange(2**32)))
    print(f"CRASHD_SERVER_KILL_SEED={seed}")
    rng = random.Random(seed)
    config = game_config(tmp_path, database=db.target)
    _, secret = make_key(config, "read:game_state,read:balance,write:bet")
    acks = Acks()
    for _ in range(KILLS):
        proc, url = await start(config)
        try:
            async with httpx.AsyncClient(base_url=url, timeout=5) as client:
                api = Api(client, secret)
                await retry_lost_answers(api, acks)
                async with trio.open_nursery() as nursery:
                    for i in range(4):
                        nursery.start_soon(player, api, f"u{i}", random.Random(rng.random()), acks)
                    await trio.sleep(rng.uniform(0.5, 2.5))
                    proc.send_signal(signal.SIGKILL)
                    with trio.fail_after(10):
                        await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        assert proc.returncode == -signal.SIGKILL
    # One clean start and stop: recovery runs, the betting round is voided on the way out.
    proc, url = await start(config)
    async with httpx.AsyncClient(base_url=url, timeout=5) as client:
        await retry_lost_answers(Api(client, secret), acks)
    proc.send_signal(signal.SIGTERM)
    with trio.fail_after(30):
        assert await proc.wait() == 0

    print(
        f"acknowledged: {len(acks.confirmed)} bets, {len(acks.cashed_out)} cashouts over {KILLS} kills"
    )
    assert acks.confirmed, "the load never got a bet acknowledged"
    async with open_ledger(config.database) as ledger:
        audit = await ledger.audit()
        assert audit.ok, audit.problems
        for ticket, stake in acks.confirmed.items():
            bet = await ledger.bet(ticket)
            assert bet is not None, f"acknowledged bet {ticket} lost (seed {seed})"
            assert bet.stake == stake
            assert bet.outcome in ("won", "lost", "refunded"), (ticket, bet)
        for ticket, (multiplier, payout) in acks.cashed_out.items():
            bet = await ledger.bet(ticket)
            assert bet is not None and bet.outcome == "won", (ticket, bet, seed)
            assert (bet.multiplier, bet.payout) == (multiplier, payout)
        # Every finished round, crashed or voided (by the engine or by recovery after a
        # kill), carries its own game from the chain, verifiable with the salt.
        chain = chainstore.load(config.chain_file)
        assert chain.salt is not None
        reader = ChainReader(chain.spec)
        rounds = await ledger.finished_rounds(limit=1000)
        assert any(r.void_reason == "recovery" for r in rounds), (rounds, seed)
        for r in rounds:
            assert r.game_hash == reader.game_hash(r.round_id), (r, seed)
            assert r.crash_point == crash_point(r.game_hash, chain.salt), (r, seed)
        for user in (f"u{i}" for i in range(4)):
            for bet in await ledger.user_bets(
                environment="sandbox", partner_id="acme", user_id=user, limit=1000
            ):
                assert bet.outcome is not None, (bet, seed)

"""The money-moving and operator routes through an API process, against a real engine.

An engine (``running_server`` with Redis) and API processes (``run_api``) over a real
Redis: PSP webhooks verified in the API process and run by the engine (one event
delivered to two processes, and redelivered, credits once), the bankroll, the
operator's controls and reads, a key's revocation closing the feed connections it
opened at the engine. Every answer is compared with the engine's own REST answer to
the same request (status, code, body); every hostile request is answered with the
engine's problem code and moves no money (``money_fingerprint``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from crashd.api.rest.routes.psp import psp_principal
from crashd.api.security.signing import sign_request
from support.cluster import api_process, cluster_config, code_of, same_answer, signed_raw
from support.feed import next_of
from support.game import Api
from support.psp import Psp, psp_event
from support.security import LogScan, money_fingerprint
from support.servers import SIGNING_SECRETS, make_key, running_server

pytestmark = pytest.mark.usefixtures("logscan")

PLAYER = "read:game_state,read:balance,write:bet"
ADMIN = "admin:read,admin:control,admin:bankroll"
PSP_SECRET = "whsec_" + "c3" * 16
FORGED_SECRET = "whsec_" + "d4" * 16


def fresh(replies: list[httpx.Response]) -> list[httpx.Response]:
    return [r for r in replies if r.status_code < 300 and "Idempotent-Replayed" not in r.headers]


async def at_once(*sends: Callable[[], Awaitable[httpx.Response]]) -> list[httpx.Response]:
    replies: list[httpx.Response] = []

    async def one(send: Callable[[], Awaitable[httpx.Response]]) -> None:
        replies.append(await send())

    async with trio.open_nursery() as nursery:
        for send in sends:
            nursery.start_soon(one, send)
    return replies


# -- PSP webhooks -----------------------------------------------------------------------


async def test_psp_webhooks_through_api_processes_move_money_once(
    tmp_path: Path, redis_url: str, logscan: LogScan
) -> None:
    config = cluster_config(tmp_path, redis_url, psp_secrets_file=tmp_path / "psp-secrets")
    config.psp_secrets_file.write_text(f"{PSP_SECRET}\n")
    logscan.remember(PSP_SECRET, FORGED_SECRET)
    psp = Psp(logscan, PSP_SECRET)
    async with running_server(config) as engine, api_process(config) as a, api_process(config) as b:
        _, player = make_key(config, PLAYER)
        async with (
            httpx.AsyncClient(base_url=engine.url, timeout=20) as direct,
            httpx.AsyncClient(base_url=a.server.url, timeout=20) as ca,
            httpx.AsyncClient(base_url=b.server.url, timeout=20) as cb,
        ):
            here = Api(direct, player)
            # One deposit delivered to both API processes at once: credited once.
            deposit = psp_event("evt_dep_1", "deposit.completed", amount=5_000)
            replies = await at_once(
                lambda: psp.send(deposit, client=ca), lambda: psp.send(deposit, client=cb)
            )
            assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
            firsts = [r for r in replies if not r.json()["replayed"]]
            assert len(firsts) == 1 and all(r.json()["status"] == "applied" for r in replies)
            first = firsts[0].json()
            assert first == {
                "event_id": "evt_dep_1",
                "type": "deposit.completed",
                "status": "applied",
                "replayed": False,
                "amount": 5_000,
                "balance": 5_000,
            }
            # Redelivered to the engine itself and to an API process: the same answer,
            # replayed, nothing moved again.
            for client in (direct, ca):
                again = await psp.send(deposit, client=client)
                assert again.status_code == 200 and again.json() == {**first, "replayed": True}
            assert await here.balance("pat") == 5_000
            # A withdrawal the balance cannot cover: rejected, recorded under its id.
            too_much = psp_event("evt_wd_1", "withdrawal.completed", amount=9_000)
            rejected = await psp.send(too_much, client=cb)
            assert rejected.status_code == 200 and rejected.json() == {
                "event_id": "evt_wd_1",
                "type": "withdrawal.completed",
                "status": "rejected",
                "reason": "insufficient_funds",
                "replayed": False,
            }
            again = await psp.send(too_much, client=direct)
            assert again.json() == {**rejected.json(), "replayed": True}
            # A withdrawal through one process, its failure through the other.
            withdrawal = psp_event("evt_wd_2", "withdrawal.completed", amount=2_000)
            taken = await psp.send(withdrawal, client=ca)
            assert taken.json()["status"] == "applied" and taken.json()["balance"] == 3_000
            failed = psp_event("evt_rev_2", "withdrawal.failed", withdrawal_id="evt_wd_2")
            back = await psp.send(failed, client=cb)
            assert back.status_code == 200, back.text
            assert back.json() == {
                "event_id": "evt_rev_2",
                "type": "withdrawal.failed",
                "status": "applied",
                "replayed": False,
                "amount": 2_000,
                "balance": 5_000,
            }
            assert (await psp.send(failed, client=direct)).json() == {
                **back.json(),
                "replayed": True,
            }
            # A second reversal of the same withdrawal (another event id): refused.
            twice = psp_event("evt_rev_3", "withdrawal.reversed", withdrawal_id="evt_wd_2")
            there = await psp.send(twice, client=ca)
            assert there.json()["status"] == "rejected", there.text
            assert there.json()["reason"] == "already_reversed"
            # A type crashd does not handle: acknowledged by the process itself.
            other = {"id": "evt_other", "type": "customer.updated", "data": {}}
            same_answer(await psp.send(other, client=ca), await psp.send(other, client=direct))
            assert await here.balance("pat") == 5_000
            before = money_fingerprint(config.database)
            # Hostile deliveries: the engine's problem for each, nothing moved.
            body = json.dumps(psp_event("evt_h_1", "deposit.completed", amount=777)).encode()
            hostile: list[dict[str, Any]] = [
                {"raw": body, "secret": FORGED_SECRET},
                {"raw": body, "timestamp": int(time.time()) - 3_600},
                {"raw": body, "header": ""},
                {"raw": body, "header": "t=abc,v1=zz"},
                {"raw": b'{"id": "evt_h_2", "type": '},
                {"raw": b"[1, 2, 3]"},
                {"doc": psp_event("evt_h_3", "deposit.completed", amount=-5)},
                {"doc": psp_event("evt_h_4", "deposit.completed", amount="5")},
                {"doc": psp_event("evt_h_5", "deposit.completed", environment="production")},
                {"doc": {**psp_event("evt_h_6", "deposit.completed"), "extra": 1}},
                {"doc": psp_event("bad id!", "deposit.completed")},
                {"doc": {"id": "evt_h_7", "type": "deposit.completed"}},
            ]
            expected = {
                "invalid_signature",
                "signature_expired",
                "signature_missing",
                "signature_malformed",
                "malformed_json",
                "validation_failed",
                "environment_mismatch",
            }
            seen: set[str | None] = set()
            for case in hostile:
                there, mine = (
                    await psp.send(**case, client=ca),
                    await psp.send(**case, client=direct),
                )
                same_answer(there, mine)
                assert there.status_code >= 400, there.text
                seen.add(code_of(there)[1])
            assert seen == expected
            # Commands in the stream that no API process would send (one configured for
            # another environment, a forged entry): the engine checks them again.
            money = {"partner_id": "acme", "user_id": "pat", "amount": 777}
            for args, code in (
                (["evt_c_1", "deposit.completed", {**money, "environment": "production"}],
                 "environment_mismatch"),
                (["bad id!", "deposit.completed", {**money, "environment": "sandbox"}],
                 "invalid_request"),
                (["evt_c_2", "withdrawal.failed", {**money, "environment": "sandbox"}],
                 "invalid_request"),
                (["evt_c_3", "deposit.completed", {**money, "amount": -1}], "invalid_request"),
                (["evt_c_4"], "invalid_request"),
            ):  # fmt: skip
                reply = await a.commands.command("psp_money", psp_principal("sandbox"), None, args)
                assert json.loads(reply.body)["code"] == code, (args, reply)
            assert money_fingerprint(config.database) == before
            assert await here.balance("pat") == 5_000


# -- the bankroll -------------------------------------------------------------------------


async def hostile_admin_requests(
    there: httpx.AsyncClient,
    here: httpx.AsyncClient,
    secrets_: dict[str, str],
    path: str,
    good: dict[str, Any],
    method: str = "POST",
) -> set[str | None]:
    """The same bad requests to ``path`` at the API process and at the engine, each
    answered alike; returns the problem codes seen."""
    seen: set[str | None] = set()
    ops, reader, player = secrets_["ops"], secrets_["reader"], secrets_["player"]
    raw = json.dumps(good).encode()
    sends: list[Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]] = [
        # Scopes it does not have (a bet key; a read-only operator key).
        lambda c: signed_raw(Api(c, player), path, raw, key="h-1", method=method),
        lambda c: signed_raw(Api(c, reader), path, raw, key="h-2", method=method),
        # No key; a key that does not exist.
        lambda c: c.request(method, path, content=raw),
        lambda c: c.request(
            method,
            path,
            content=raw,
            headers={"Authorization": "Bearer ck_sandbox_" + "0" * 40},
        ),
        # Unsigned; signed, but the body changed after.
        lambda c: c.request(
            method,
            path,
            content=raw,
            headers={**Api(c, ops).headers, "Idempotency-Key": "h-3"},
        ),
        lambda c: _tampered(Api(c, ops), path, raw, method),
        # Garbage and wrong bodies, correctly signed.
        lambda c: signed_raw(Api(c, ops), path, b"{nope", key="h-4", method=method),
        lambda c: signed_raw(Api(c, ops), path, b"[]", key="h-5", method=method),
        lambda c: signed_raw(
            Api(c, ops), path, json.dumps({**good, "what": 1}).encode(), key="h-6", method=method
        ),
    ]
    for send in sends:
        a, b = await send(there), await send(here)
        same_answer(a, b)
        assert a.status_code >= 400, a.text
        seen.add(code_of(a)[1])
    return seen


async def _tampered(api: Api, path: str, raw: bytes, method: str) -> httpx.Response:
    signature = sign_request(api.signing_secret, method, path, raw, "h-7", int(time.time()))
    headers = {**api.headers, **signature, "Content-Type": "application/json"}
    return await api.client.request(method, path, content=raw + b" ", headers=headers)


async def test_the_bankroll_through_api_processes(
    tmp_path: Path, redis_url: str, logscan: LogScan
) -> None:
    config = cluster_config(tmp_path, redis_url)
    async with running_server(config) as engine, api_process(config) as a, api_process(config) as b:
        secrets_ = {
            name: make_key(config, scopes)[1]
            for name, scopes in (("ops", ADMIN), ("reader", "admin:read"), ("player", PLAYER))
        }
        logscan.remember(*secrets_.values(), *(SIGNING_SECRETS[s] for s in secrets_.values()))
        async with (
            httpx.AsyncClient(base_url=engine.url, timeout=20) as direct,
            httpx.AsyncClient(base_url=a.server.url, timeout=20) as ca,
            httpx.AsyncClient(base_url=b.server.url, timeout=20) as cb,
        ):
            here, there_a, there_b = (Api(c, secrets_["ops"]) for c in (direct, ca, cb))
            deposit = "/api/v1/admin/bankroll/deposit"
            withdraw = "/api/v1/admin/bankroll/withdraw"
            house = (await here.get("/api/v1/admin/state")).json()["house"]["balance"]
            moved = await there_a.post(deposit, {"amount": 40_000, "note": "seed"}, key="br-1")
            assert moved.status_code == 201, moved.text
            assert moved.json()["house"] == house + 40_000
            assert moved.json()["direction"] == "deposit"
            # The same key at the other process and at the engine: the stored reply.
            for api in (there_b, here):
                again = await api.post(deposit, {"amount": 40_000, "note": "seed"}, key="br-1")
                assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
                assert again.content == moved.content
            reused = await there_b.post(deposit, {"amount": 1}, key="br-1")
            assert reused.status_code == 422 and reused.json()["code"] == "idempotency_key_reused"
            # One key at both processes at once: moved once.
            body = {"amount": 1_000}
            replies = await at_once(
                lambda: there_a.post(deposit, body, key="br-2"),
                lambda: there_b.post(deposit, body, key="br-2"),
            )
            assert len(fresh(replies)) <= 1 and sorted(r.status_code for r in replies)[0] in (
                201,
                409,
            ), [r.text for r in replies]
            # A withdrawal beyond the bankroll: the engine's refusal, stored under its key
            # (the retry at the engine is that reply); beside the same at the engine.
            huge = {"amount": 10**10}
            refused = await there_b.post(withdraw, huge, key="br-3")
            at_engine = await here.post(withdraw, huge, key="br-3e")
            same_answer(refused, at_engine)
            assert code_of(refused) == (409, "insufficient_funds"), refused.text
            stored = await here.post(withdraw, huge, key="br-3")
            assert stored.headers.get("Idempotent-Replayed") == "true"
            assert stored.content == refused.content
            taken = await there_a.post(withdraw, {"amount": 500}, key="br-4")
            assert taken.status_code == 201 and taken.json()["house"] == house + 41_000 - 500
            state = (await here.get("/api/v1/admin/state")).json()
            assert state["house"]["balance"] == house + 41_000 - 500
            entries = (await here.get("/api/v1/admin/audit")).json()["entries"]
            kinds = [e["action"] for e in entries if e["action"].startswith("bankroll")]
            assert kinds == ["bankroll_withdrawal", "bankroll_deposit", "bankroll_deposit"], kinds
            before = money_fingerprint(config.database)
            seen = await hostile_admin_requests(ca, direct, secrets_, deposit, {"amount": 3})
            seen |= await hostile_admin_requests(ca, direct, secrets_, withdraw, {"amount": 3})
            assert {"insufficient_scope", "invalid_signature", "malformed_json"} <= seen, seen
            assert money_fingerprint(config.database) == before


# -- the operator's controls and reads ----------------------------------------------------


async def test_the_operators_controls_through_an_api_process(
    tmp_path: Path, redis_url: str, logscan: LogScan
) -> None:
    # Long betting phases: a void sent while betting is open reaches the engine in time.
    config = cluster_config(tmp_path, redis_url, betting_ms=5_000)
    async with running_server(config) as engine, api_process(config) as proc:
        secrets_ = {
            name: make_key(config, scopes)[1]
            for name, scopes in (("ops", ADMIN), ("reader", "admin:read"), ("player", PLAYER))
        }
        logscan.remember(*secrets_.values(), *(SIGNING_SECRETS[s] for s in secrets_.values()))
        async with (
            httpx.AsyncClient(base_url=engine.url, timeout=20) as direct,
            httpx.AsyncClient(base_url=proc.server.url, timeout=20) as remote,
        ):
            here, there = Api(direct, secrets_["ops"]), Api(remote, secrets_["ops"])
            # The engine's in-memory state, read through the command stream.
            for path in ("/api/v1/admin/limits", "/api/v1/admin/chain"):
                same_answer(await there.get(path), await here.get(path))
            state = await there.get("/api/v1/admin/state")
            assert state.status_code == 200 and state.headers["Cache-Control"] == "no-store"
            mine = (await here.get("/api/v1/admin/state")).json()
            assert state.json().keys() == mine.keys()
            assert state.json()["house"] == mine["house"] and state.json()["paused"] is False
            # Pause and resume through the API process: the engine pauses and resumes.
            paused = await there.post("/api/v1/admin/pause", {"note": "maintenance"}, key="p-1")
            assert paused.status_code == 200 and paused.json()["paused"] is True, paused.text
            assert (await here.get("/api/v1/admin/state")).json()["paused"] is True
            again = await here.post("/api/v1/admin/pause", {"note": "maintenance"}, key="p-1")
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.content == paused.content
            resumed = await there.post("/api/v1/admin/resume", {})
            assert resumed.status_code == 200 and resumed.json()["paused"] is False
            assert (await there.get("/api/v1/admin/state")).json()["paused"] is False
            # Limits: changed through the API process, in force at the engine.
            limits = await there.post(
                "/api/v1/admin/limits", {"max_stake": 4_000, "note": "lower"}, method="PATCH"
            )
            assert limits.status_code == 200, limits.text
            assert limits.json()["limits"]["max_stake"] == 4_000
            assert (await here.get("/api/v1/admin/limits")).json()["max_stake"] == 4_000
            bad = {"min_stake": 5_000, "max_stake": 10}
            same_answer(
                await there.post("/api/v1/admin/limits", bad, method="PATCH"),
                await here.post("/api/v1/admin/limits", bad, method="PATCH"),
            )
            # A void while betting is open: the round voided by the engine.
            betting = await Api(direct, secrets_["player"]).wait_status("betting", timeout=30)
            voided = await there.post("/api/v1/admin/void", {"note": "test"})
            assert voided.status_code == 200, voided.text
            assert voided.json()["voided"]["round_id"] == betting["round_id"]
            # The next hash chain: published through the API process; a second refused.
            chained = await there.post("/api/v1/admin/chain/next", {"length": 50})
            assert chained.status_code == 201, chained.text
            same_answer(
                await there.get("/api/v1/admin/chain"), await here.get("/api/v1/admin/chain")
            )
            same_answer(
                await there.post("/api/v1/admin/chain/next", {"length": 50}),
                await here.post("/api/v1/admin/chain/next", {"length": 50}),
            )
            # The public commitment lists the engine's chains, the new one too.
            fair = await remote.get("/api/v1/fairness")
            same_answer(fair, await direct.get("/api/v1/fairness"))
            assert len(fair.json()["chains"]) == 2, fair.text
            if chained.json()["salt_needed"]:
                salted = await there.post("/api/v1/admin/chain/salt", {"salt": "0000abcd"})
                assert salted.status_code == 200, salted.text
            same_answer(
                await there.post("/api/v1/admin/chain/salt", {"salt": "0000beef"}),
                await here.post("/api/v1/admin/chain/salt", {"salt": "0000beef"}),
            )
            # Every control the engine ran, in its audit log, by this key.
            entries = (await here.get("/api/v1/admin/audit")).json()["entries"]
            actions = [e["action"] for e in entries]
            for action in ("pause", "resume", "limits", "void"):
                assert action in actions, actions
            before = money_fingerprint(config.database)
            seen: set[str | None] = set()
            for path, good, method in (
                ("/api/v1/admin/pause", {"note": "x"}, "POST"),
                ("/api/v1/admin/limits", {"max_stake": 3_000}, "PATCH"),
                ("/api/v1/admin/chain/salt", {"salt": "x"}, "POST"),
            ):
                seen |= await hostile_admin_requests(remote, direct, secrets_, path, good, method)
            assert {"insufficient_scope", "invalid_signature", "validation_failed"} <= seen, seen
            assert money_fingerprint(config.database) == before
            assert (await here.get("/api/v1/admin/state")).json()["paused"] is False
            # Served by the process itself: an operator token (good at the engine too)
            # and the game's rules.
            session = await remote.post("/api/v1/admin/session", headers=there.headers)
            assert session.status_code == 201, session.text
            logscan.remember(session.json()["token"])
            bearer = {"Authorization": f"Bearer {session.json()['token']}"}
            assert (await direct.get("/api/v1/admin/state", headers=bearer)).status_code == 200
            players = [Api(c, secrets_["player"]) for c in (remote, direct)]
            same_answer(*[await p.get("/api/v1/game/rules") for p in players])


# -- revoking a key -----------------------------------------------------------------------


async def test_revoking_a_key_at_an_api_process_closes_its_connections_at_the_engine(
    tmp_path: Path, redis_url: str, logscan: LogScan
) -> None:
    config = cluster_config(tmp_path, redis_url)
    async with running_server(config) as engine, api_process(config) as proc:
        _, ops = make_key(config, ADMIN)
        _, reader = make_key(config, "admin:read")
        victim_id, victim = make_key(config, PLAYER)
        logscan.remember(ops, reader, victim, SIGNING_SECRETS[ops], SIGNING_SECRETS[victim])
        async with (
            httpx.AsyncClient(base_url=engine.url, timeout=20) as direct,
            httpx.AsyncClient(base_url=proc.server.url, timeout=20) as remote,
        ):
            here, there = Api(direct, ops), Api(remote, ops)
            token = await direct.post("/api/v1/feed/token", headers=Api(direct, victim).headers)
            feed_url = token.json()["ws_url"]
            closed: list[int] = []

            async def watch(task_status: trio.TaskStatus[None]) -> None:
                async with open_websocket_url(
                    feed_url, extra_headers=[("Authorization", f"Bearer {victim}")]
                ) as ws:
                    await next_of(ws, lambda m: m["type"] == "welcome")
                    task_status.started()
                    with pytest.raises(ConnectionClosed) as ended:
                        while True:
                            await ws.get_message()
                    closed.append(ended.value.reason.code)

            with trio.fail_after(30):
                async with trio.open_nursery() as nursery:
                    for _ in range(2):
                        await nursery.start(watch)
                    before = money_fingerprint(config.database)
                    # Refused alike, and nothing revoked: a key without admin:control.
                    path = f"/api/v1/admin/keys/{victim_id}/revoke"
                    same_answer(
                        await Api(remote, reader).post(path, {"note": "no"}, key="rv-0"),
                        await Api(direct, reader).post(path, {"note": "no"}, key="rv-0"),
                    )
                    unknown = "/api/v1/admin/keys/key_0000000000000000/revoke"
                    same_answer(
                        await there.post(unknown, {}, key="rv-u"),
                        await here.post(unknown, {}, key="rv-u"),
                    )
                    garbage = await signed_raw(there, path, b"{", key="rv-g")
                    same_answer(garbage, await signed_raw(here, path, b"{", key="rv-g"))
                    assert (await Api(remote, victim).get("/api/v1/game/state")).status_code == 200
                    assert money_fingerprint(config.database) == before
                    revoked = await there.post(path, {"note": "leaked"}, key="rv-1")
                    assert revoked.status_code == 200, revoked.text
                    assert revoked.json()["feed_connections_closed"] == 2
            assert len(closed) == 2
            # Refused everywhere from now on; the retry is the stored reply.
            for client in (direct, remote):
                r = await Api(client, victim).get("/api/v1/game/state")
                assert r.status_code == 401, r.text
            again = await here.post(path, {"note": "leaked"}, key="rv-1")
            assert again.headers["Idempotent-Replayed"] == "true"
            assert again.content == revoked.content
            [entry] = (await here.get("/api/v1/admin/audit", action="key_revoke")).json()["entries"]
            assert entry["before"] == {"key_id": victim_id, "revoked_at": None}
            assert entry["after"] == {
                "key_id": victim_id,
                "revoked_at": revoked.json()["revoked_at"],
            }
            # The revocation wrote its audit entry (an op of its own), and moved no money.
            after = money_fingerprint(config.database)
            assert (after.transfers, after.total) == (before.transfers, before.total)


# -- the route table in docs/scale-out.md -------------------------------------------------


def test_the_route_table_names_every_command_and_a_test_that_exists() -> None:
    """Every command the engine runs for a process without it is named in the table of
    docs/scale-out.md, and every test a row names is a test function of that module."""
    import re

    import crashd.api.rest.app  # noqa: F401  (registers every route's commands)
    from crashd.api.rest.commands import COMMANDS
    from support.servers import REPO

    doc = (REPO / "docs" / "scale-out.md").read_text()
    table = doc.split("### What an API process serves", 1)[1].split("\n\n", 3)[2]
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert rows and all(line.count(" | ") >= 3 for line in rows), rows
    named: set[str] = set()
    for line in rows:
        how, checked = line.split(" | ")[2], line.split(" | ")[3]
        named |= {n for n in re.findall(r"`([a-z_]+)`", how) if n in COMMANDS or "_" in n}
        module = None
        for ref in re.findall(r"`((?:test_\w+\.py)?::\w+|test_\w+\.py::\w+)`", checked):
            path, _, name = ref.partition("::")
            module = path or module
            assert module is not None, line
            source = (REPO / "tests" / "system" / module).read_text()
            assert f"def {name}(" in source, (module, name)
    commands = {n for n in named if n in COMMANDS}
    assert commands == set(COMMANDS), (set(COMMANDS) - commands, named - set(COMMANDS))

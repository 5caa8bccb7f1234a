"""PSP webhooks against a real server: every event type, de-duplication, refusals that
are still acknowledged, forged and stale signatures (nothing moves), secret rotation,
and ``crashd psp send-test-event``. Logs are scanned for the webhook secrets."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from crashd.api.cli.main import main as cli_main
from crashd.api.security import webhook as pspsig
from support.psp import Psp, psp_event
from support.security import LogScan, money_fingerprint
from support.servers import make_config, make_key, running_server

# Every log line of the module is scanned for the secrets it handled.
pytestmark = pytest.mark.usefixtures("logscan")

SECRET = "whsec_" + "a1" * 16
NEXT_SECRET = "whsec_" + "b2" * 16


async def balance(client: httpx.AsyncClient, key: str, user: str = "pat") -> int:
    r = await client.get(
        "/api/v1/user/balance", params={"user_id": user}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200, r.text
    return int(r.json()["available"])


async def test_events_move_money_once_and_every_answer_is_2xx(
    tmp_path: Path, logscan: LogScan
) -> None:
    logscan.remember(SECRET)
    config = make_config(tmp_path, psp_secrets_file=tmp_path / "psp-secrets")
    config.psp_secrets_file.write_text(f"# current\n{SECRET}\n")
    async with running_server(config) as info:
        _, key = make_key(config, "read:balance")
        logscan.remember(key)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            psp = Psp(logscan, SECRET, client)
            r = await psp.send(psp_event("evt_dep_1", "deposit.completed", amount=5000))
            assert (
                r.status_code == 200
                and r.json()["status"] == "applied"
                and r.json()["replayed"] is False
            )
            assert r.json()["balance"] == 5000 and await balance(client, key) == 5000
            # Redelivery: 2xx, replayed, nothing moves.
            before = money_fingerprint(config.database)
            r = await psp.send(psp_event("evt_dep_1", "deposit.completed", amount=5000))
            assert r.status_code == 200 and r.json()["replayed"] is True
            assert (
                money_fingerprint(config.database) == before and await balance(client, key) == 5000
            )
            # A withdrawal above the balance is refused, recorded, acknowledged.
            r = await psp.send(psp_event("evt_wd_big", "withdrawal.completed", amount=9000))
            assert r.status_code == 200 and r.json()["status"] == "rejected"
            assert r.json()["reason"] == "insufficient_funds" and await balance(client, key) == 5000
            r = await psp.send(psp_event("evt_wd_big", "withdrawal.completed", amount=9000))
            assert r.json() == {**r.json(), "status": "rejected", "replayed": True}
            # A withdrawal within the balance debits; its failure credits back, once.
            r = await psp.send(psp_event("evt_wd_1", "withdrawal.completed", amount=2000))
            assert r.json()["status"] == "applied" and await balance(client, key) == 3000
            r = await psp.send(
                psp_event("evt_wd_1_failed", "withdrawal.failed", withdrawal_id="evt_wd_1")
            )
            assert r.json()["status"] == "applied" and r.json()["amount"] == 2000
            assert await balance(client, key) == 5000
            r = await psp.send(
                psp_event("evt_wd_1_rev", "withdrawal.reversed", withdrawal_id="evt_wd_1")
            )
            assert r.status_code == 200 and r.json()["reason"] == "already_reversed"
            r = await psp.send(
                psp_event("evt_rev_x", "withdrawal.reversed", withdrawal_id="evt_never")
            )
            assert r.status_code == 200 and r.json()["reason"] == "unknown_withdrawal"
            assert await balance(client, key) == 5000
            # Unknown types are acknowledged and ignored, whatever their data.
            before = money_fingerprint(config.database)
            r = await psp.send(
                {"id": "evt_misc", "type": "payout.created", "data": {"anything": [1, 2]}}
            )
            assert r.status_code == 200 and r.json()["status"] == "ignored"
            assert money_fingerprint(config.database) == before

            # Refusals that move nothing: each a clear 4xx.
            # A minute past the 300 s tolerance either way: int() truncation and the
            # time the request takes must not bring a "future" timestamp back inside it.
            stale = int(time.time()) - 360
            cases: list[tuple[str, dict[str, Any], int, str]] = [
                ("no signature", dict(header=""), 401, "signature_missing"),
                ("garbage header", dict(header="v1=zz"), 400, "signature_malformed"),
                ("wrong secret", dict(secret="whsec_forged"), 401, "invalid_signature"),
                ("stale", dict(timestamp=stale), 401, "signature_expired"),
                ("future", dict(timestamp=int(time.time()) + 360), 401, "signature_expired"),
            ]
            doc = psp_event("evt_forged", "deposit.completed", amount=10**6)
            for name, kw, status, code in cases:
                r = await psp.send(doc, **kw)
                assert (r.status_code, r.json()["code"]) == (status, code), (name, r.text)
            body = json.dumps(doc).encode()
            good = pspsig.header_value(SECRET, int(time.time()), body)
            logscan.remember(good.split("v1=")[1])
            r = await psp.send(None, raw=body.replace(b"1000000", b"9000000"), header=good)
            assert r.status_code == 401 and r.json()["code"] == "invalid_signature"
            for name, bad, code in [
                (
                    "other environment",
                    psp_event("evt_env", "deposit.completed", environment="production"),
                    "environment_mismatch",
                ),
                (
                    "negative amount",
                    psp_event("evt_neg", "deposit.completed", amount=-5),
                    "validation_failed",
                ),
                (
                    "zero amount",
                    psp_event("evt_zero", "deposit.completed", amount=0),
                    "validation_failed",
                ),
                (
                    "huge amount",
                    psp_event("evt_huge", "deposit.completed", amount=2**70),
                    "validation_failed",
                ),
                (
                    "float amount",
                    psp_event("evt_f", "deposit.completed", amount=1.5),
                    "validation_failed",
                ),
                (
                    "unknown field",
                    {**psp_event("evt_u", "deposit.completed"), "extra": 1},
                    "validation_failed",
                ),
                (
                    "bad partner",
                    psp_event("evt_p", "deposit.completed", partner_id="../etc"),
                    "validation_failed",
                ),
                ("bad event id", psp_event("../../x", "deposit.completed"), "validation_failed"),
                ("no data", {"id": "evt_nd", "type": "deposit.completed"}, "validation_failed"),
                ("not an object", [1, 2], "validation_failed"),
            ]:
                r = await psp.send(bad)
                assert 400 <= r.status_code < 500 and r.json()["code"] == code, (name, r.text)
            r = await psp.send(None, raw=b'{"id": "evt_bad", ')
            assert r.status_code == 400 and r.json()["code"] == "malformed_json"
            assert (
                money_fingerprint(config.database) == before and await balance(client, key) == 5000
            )


async def test_secret_rotation_and_missing_secrets(tmp_path: Path, logscan: LogScan) -> None:
    logscan.remember(SECRET, NEXT_SECRET)
    secrets_file = tmp_path / "psp-secrets"
    config = make_config(tmp_path, psp_secrets_file=secrets_file)
    async with running_server(config) as info:
        _, key = make_key(config, "read:balance")
        logscan.remember(key)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            psp = Psp(logscan, SECRET, client)
            r = await psp.send(psp_event("evt_1", "deposit.completed"))
            assert r.status_code == 503 and r.json()["code"] == "psp_not_configured"
            secrets_file.write_text(SECRET + "\n")
            assert (await psp.send(psp_event("evt_2", "deposit.completed"))).status_code == 200
            # Rotation: the operator adds the new secret; both verify; then the old goes.
            secrets_file.write_text(f"{SECRET}\n{NEXT_SECRET}\n")
            assert (
                await psp.send(psp_event("evt_3", "deposit.completed"), secret=NEXT_SECRET)
            ).status_code == 200
            assert (await psp.send(psp_event("evt_4", "deposit.completed"))).status_code == 200
            # A PSP mid-rotation sends both signatures; one matching is enough.
            body = json.dumps(psp_event("evt_5", "deposit.completed")).encode()
            t = int(time.time())
            both = f"t={t},v1={pspsig.compute('whsec_unknown', t, body)},v1={pspsig.compute(NEXT_SECRET, t, body)}"
            assert (await psp.send(None, raw=body, header=both)).status_code == 200
            await trio.sleep(0.01)  # a new mtime for the next write
            secrets_file.write_text(f"{NEXT_SECRET}\n")
            r = await psp.send(psp_event("evt_6", "deposit.completed"))
            assert r.status_code == 401 and r.json()["code"] == "invalid_signature"
            assert await balance(client, key) == 4000


async def test_send_test_event_command(
    tmp_path: Path, logscan: LogScan, capsys: pytest.CaptureFixture[str]
) -> None:
    logscan.remember(SECRET)
    secrets_file = tmp_path / "psp-secrets"
    secrets_file.write_text(SECRET + "\n")
    config = make_config(tmp_path, psp_secrets_file=secrets_file)
    async with running_server(config) as info:
        _, key = make_key(config, "read:balance")
        logscan.remember(key)
        argv = [
            "psp",
            "send-test-event",
            "--url",
            info.url,
            "--psp-secrets-file",
            str(secrets_file),
            "--partner",
            "acme",
            "--user",
            "pat",
            "--amount",
            "700",
            "--event-id",
            "evt_cli_1",
        ]
        assert await trio.to_thread.run_sync(cli_main, argv) == 0
        assert (
            await trio.to_thread.run_sync(cli_main, argv) == 0
        )  # redelivered: still 2xx, nothing moves
        out = capsys.readouterr().out.splitlines()
        assert out[0].startswith("200 ") and json.loads(out[0][4:])["status"] == "applied"
        assert json.loads(out[1][4:])["replayed"] is True
        assert (
            await trio.to_thread.run_sync(
                cli_main,
                [
                    "psp",
                    "send-test-event",
                    "--url",
                    info.url,
                    "--secret-file",
                    str(secrets_file),
                    "--type",
                    "withdrawal.failed",
                ],
            )
            == 2
        )  # needs --withdrawal-id
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            assert await balance(client, key) == 700

"""``crashd admin`` against a real server, as an operator types it: a real ``crashd``
process per command, the operator key in a key file; its answers, its exit codes
(0 done, 1 refused by the server, 2 bad input) and what each command did to the game,
the bankroll and the audit log."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from support.game import Api, game_config
from support.security import LogScan
from support.servers import PYTHON, REPO, SIGNING_SECRETS, make_key, running_server

pytestmark = pytest.mark.usefixtures("logscan")

ADMIN = "admin:read,admin:control,admin:bankroll"


async def admin(url: str, key_file: Path | None, *argv: str) -> tuple[int, str, str]:
    args = [PYTHON, "-m", "crashd.api", "admin", *argv, "--url", url]
    if key_file is not None:
        args += ["--key-file", str(key_file)]
    done = await trio.run_process(
        args,
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO), "CRASHD_KEY_FILE": ""},
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def key_file(tmp_path: Path, secret: str, *, signing: bool = True) -> Path:
    """The operator key as ``crashd keys create --json`` writes it."""
    path = tmp_path / f"key-{len(list(tmp_path.glob('key-*')))}.json"
    doc: dict[str, Any] = {"secret": secret}
    if signing:
        doc["signing_secret"] = SIGNING_SECRETS[secret]
    path.write_text(json.dumps(doc))
    return path


async def test_an_operator_steers_the_game_with_crashd_admin(
    tmp_path: Path, logscan: LogScan
) -> None:
    config = game_config(tmp_path, betting_ms=1_000)
    async with running_server(config) as info:
        _, secret = make_key(config, ADMIN)
        logscan.remember(secret, SIGNING_SECRETS[secret])
        keys = key_file(tmp_path, secret)
        url = info.url
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:
            ops = Api(client, secret)

            async def entries(action: str) -> list[dict[str, Any]]:
                r = await ops.get("/api/v1/admin/audit", action=action)
                assert r.status_code == 200, r.text
                return r.json()["entries"]  # type: ignore[no-any-return]

            code, out, err = await admin(url, keys, "state")
            assert code == 0, err
            assert out.startswith("environment   sandbox") and "house         balance 0" in out

            # Money in: one audit entry, and a retry with the same key moves it once.
            deposit = ("bankroll", "deposit", "250000", "--note", "seed", "--json")
            code, out, err = await admin(url, keys, *deposit, "--idempotency-key", "seed-1")
            assert code == 0, err
            first = json.loads(out)
            code, out, err = await admin(url, keys, *deposit, "--idempotency-key", "seed-1")
            assert (code, json.loads(out)) == (0, first), err
            assert [e["note"] for e in await entries("bankroll_deposit")] == ["seed"]
            state = (await ops.get("/api/v1/admin/state")).json()
            assert state["house"]["balance"] == 250_000

            # Refused by the server: exit 1 with the problem's code; nothing moved.
            code, out, err = await admin(url, keys, "bankroll", "withdraw", "999999999")
            assert code == 1 and out == "" and "insufficient" in err, (code, out, err)
            state = (await ops.get("/api/v1/admin/state")).json()
            assert state["house"]["balance"] == 250_000

            # Limits from the next round on, shown back as the server holds them.
            code, out, err = await admin(
                url, keys, "limits", "set", "--max-stake", "100000", "--max-win", "5000"
            )
            assert code == 0, err
            code, out, err = await admin(url, keys, "limits", "show", "--json")
            shown = json.loads(out)
            assert code == 0 and (shown["max_stake"], shown["max_win"]) == (100_000, 5_000), err
            # One the server cannot accept: exit 1 with its code, the limits unchanged.
            code, out, err = await admin(url, keys, "limits", "set", "--max-win", "1")
            assert code == 1 and "invalid_limits" in err, (code, err)
            code, out, err = await admin(url, keys, "limits", "show", "--json")
            assert json.loads(out)["max_win"] == 5_000

            # Pause, then resume: the state says so each time; each is audited once.
            code, out, err = await admin(url, keys, "pause", "--note", "maintenance")
            assert code == 0, err
            assert (await ops.get("/api/v1/admin/state")).json()["paused"] is True
            code, out, err = await admin(url, keys, "state")
            assert "(PAUSED)" in out.splitlines()[0]
            code, out, err = await admin(url, keys, "resume")
            assert code == 0, err
            assert (await ops.get("/api/v1/admin/state")).json()["paused"] is False
            assert [e["note"] for e in await entries("pause")] == ["maintenance"]

            # The audit log, newest first, one line per entry.
            code, out, err = await admin(url, keys, "audit", "--limit", "3")
            assert code == 0, err
            lines = out.splitlines()
            assert len(lines) == 3 and "resume" in lines[0] and "pause" in lines[1]
            # A strange action is a filter value, never part of the query: nothing matches.
            code, out, err = await admin(url, keys, "audit", "--action", "pause&limit=100")
            assert (code, out) == (0, ""), err

            # Bad input: exit 2 and one line, before any request.
            for argv, said in (
                (("limits", "set"), "give at least one limit"),
                (("bankroll", "deposit", "ten"), "invalid int value"),
            ):
                code, out, err = await admin(url, keys, *argv)
                assert code == 2 and said in err, (argv, code, err)
            code, _, err = await admin(url, None, "state")
            assert code == 2 and "--key-file" in err
            code, _, err = await admin(url, key_file(tmp_path, secret, signing=False), "pause")
            assert code == 2 and "signing_secret" in err
            assert (await ops.get("/api/v1/admin/state")).json()["paused"] is False
            broken = tmp_path / "broken.json"
            broken.write_text("{not json")
            code, _, err = await admin(url, broken, "state")
            assert code == 2 and "cannot read a key" in err

            # A key without the operator's scopes is refused by the server: exit 1.
            _, player = make_key(config, "read:game_state")
            logscan.remember(player, SIGNING_SECRETS[player])
            code, _, err = await admin(url, key_file(tmp_path, player), "state")
            assert code == 1 and "403" in err, err

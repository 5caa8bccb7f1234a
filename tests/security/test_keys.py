"""API keys: the store, the ``crashd keys`` CLI, and Bearer auth with scopes over HTTP."""

from __future__ import annotations

import json
import logging
import os
import stat
from pathlib import Path

import httpx
import pytest
from quart import Blueprint, Response

from crashd.api import database as apidb
from crashd.api.cli.main import main
from crashd.api.rest.contract import documented, json_response
from crashd.api.security.auth import requires_scope
from crashd.api.security.keys import KeyStore, KeyStoreError, Principal
from crashd.api.wire import SCOPES
from support.servers import build_app, make_config, make_key, serving_app


def test_created_key_has_its_prefix_and_is_stored_only_hashed(tmp_path: Path) -> None:
    db = tmp_path / "k.sqlite3"
    store = KeyStore(db)
    sandbox = store.create("sandbox", "read:game_state,write:bet", label="app", partner_id="acme")
    live = store.create("production", ["read:balance"])
    assert sandbox.secret.startswith("ck_test_") and live.secret.startswith("ck_live_")
    assert sandbox.key.scopes == ("read:game_state", "write:bet")
    assert sandbox.key.partner_id == "acme" and live.key.partner_id == "default"
    assert store.lookup(sandbox.secret) == sandbox.key
    other_last = "x" if sandbox.secret[-1] != "x" else "y"  # (a fixed "x" failed 1 run in 62)
    assert store.lookup(sandbox.secret[:-1] + other_last) is None
    store.close()
    for path in tmp_path.iterdir():  # database, WAL, pepper: the secret is nowhere
        assert sandbox.secret[8:].encode() not in path.read_bytes()
    pepper = apidb.pepper_path(db)
    assert stat.S_IMODE(os.stat(pepper).st_mode) == 0o600


def test_revocation_is_recorded_and_bumps_the_counter(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "k.sqlite3")
    created = store.create("sandbox", "read:balance")
    before = store.revocation_counter()
    revoked = store.revoke(created.key.id)
    assert revoked.revoked_at is not None and not revoked.active
    assert store.revocation_counter() == before + 1
    assert store.lookup(created.secret) is None
    assert store.revoke(created.key.id).revoked_at == revoked.revoked_at  # idempotent
    assert store.revocation_counter() == before + 1
    with pytest.raises(KeyStoreError):
        store.revoke("key_unknown")
    store.close()


@pytest.mark.parametrize(
    ("scopes", "partner", "label"),
    [
        ("", "acme", ""),
        ("read:everything", "acme", ""),
        ("write:bet,admin", "acme", ""),
        ("write:bet", "bad partner", ""),
        ("write:bet", "", ""),
        ("write:bet", "acme", "x" * 101),
        ("write:bet", "acme", "new\nline"),
    ],
)
def test_bad_key_parameters_are_refused(
    tmp_path: Path, scopes: str, partner: str, label: str
) -> None:
    store = KeyStore(tmp_path / "k.sqlite3")
    with pytest.raises(KeyStoreError):
        store.create("sandbox", scopes, partner_id=partner, label=label)
    with pytest.raises(KeyStoreError):
        store.create("staging", "write:bet")
    assert store.list() == []
    store.close()


def test_a_lost_pepper_is_an_error_not_a_silent_reset(tmp_path: Path) -> None:
    db = tmp_path / "k.sqlite3"
    store = KeyStore(db)
    store.create("sandbox", "read:balance")
    store.close()
    apidb.pepper_path(db).unlink()
    with pytest.raises(apidb.DatabaseError, match="pepper"):
        KeyStore(db)


def test_keys_cli_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "cli.sqlite3")
    assert main(["keys", "list", "--database", db]) == 0
    assert "no API keys" in capsys.readouterr().out

    assert (
        main(
            [
                "keys",
                "create",
                "--database",
                db,
                "--env",
                "sandbox",
                "--scopes",
                "write:bet,read:balance",
                "--label",
                "shop",
                "--partner",
                "p1",
                "--json",
            ]
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)
    assert created["secret"].startswith("ck_test_")
    assert created["scopes"] == ["read:balance", "write:bet"] and created["partner_id"] == "p1"

    assert (
        main(
            [
                "keys",
                "create",
                "--database",
                db,
                "--env",
                "production",
                "--scopes",
                "read:game_state",
            ]
        )
        == 0
    )
    human = capsys.readouterr().out
    assert "secret: ck_live_" in human and "shown only now" in human

    assert main(["keys", "list", "--database", db]) == 0
    listing = capsys.readouterr().out
    assert created["id"] in listing and "active" in listing
    assert created["secret"] not in listing and created["secret"][8:] not in listing

    assert main(["keys", "revoke", "--database", db, created["id"]]) == 0
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "list", "--database", db, "--json"]) == 0
    keys = {k["id"]: k for k in json.loads(capsys.readouterr().out)}
    assert keys[created["id"]]["revoked_at"] is not None
    assert all("secret" not in k for k in keys.values())


def test_keys_cli_usage_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "cli.sqlite3")
    assert main(["keys", "create", "--database", db, "--env", "sandbox", "--scopes", "root"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown scope" in err
    assert main(["keys", "revoke", "--database", db, "key_nope"]) == 2
    assert "no API key" in capsys.readouterr().err


def test_keys_cli_uses_the_servers_database_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "from-env.sqlite3"
    monkeypatch.setenv("CRASHD_DATABASE", str(db))
    assert main(["keys", "create", "--env", "sandbox", "--scopes", "read:balance"]) == 0
    assert db.exists()


def _auth_routes() -> Blueprint:
    bp = Blueprint("authtest", __name__, url_prefix="/test")

    @bp.get("/balance")
    @documented("test")
    @requires_scope("read:balance")
    async def balance(*, principal: Principal) -> Response:
        return json_response(
            {
                "key_id": principal.key_id,
                "partner_id": principal.partner_id,
                "environment": principal.environment,
                "scopes": sorted(principal.scopes),
            }
        )

    return bp


@pytest.fixture
async def auth_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    under_test = build_app(make_config(tmp_path))
    under_test.app.register_blueprint(_auth_routes())
    async with serving_app(under_test) as info:
        async with httpx.AsyncClient(base_url=info.url) as client:
            yield under_test.config, client


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


async def test_missing_or_bad_key_is_401(auth_server) -> None:  # type: ignore[no-untyped-def]
    config, client = auth_server
    _, secret = make_key(config, "read:balance")
    for headers in (
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
        _bearer("ck_test_" + "A" * 32),
        _bearer(secret + "x"),
        _bearer(secret.replace("test", "live")),
    ):
        r = await client.get("/test/balance", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "invalid_api_key"
        assert r.headers["www-authenticate"].startswith("Bearer")


async def test_missing_scope_is_403_and_the_right_scope_yields_the_principal(auth_server) -> None:  # type: ignore[no-untyped-def]
    config, client = auth_server
    _, weak = make_key(config, "read:game_state,write:bet")
    r = await client.get("/test/balance", headers=_bearer(weak))
    assert r.status_code == 403
    assert r.json()["code"] == "insufficient_scope" and r.json()["required_scope"] == "read:balance"
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]

    key_id, good = make_key(config, "read:balance", partner="shop-7")
    r = await client.get("/test/balance", headers=_bearer(good))
    assert r.status_code == 200
    assert r.json() == {
        "key_id": key_id,
        "partner_id": "shop-7",
        "environment": "sandbox",
        "scopes": ["read:balance"],
    }


async def test_revocation_takes_effect_on_the_next_request(
    auth_server, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    config, client = auth_server
    key_id, secret = make_key(config, "read:balance")
    for _ in range(3):  # warm the cache
        assert (await client.get("/test/balance", headers=_bearer(secret))).status_code == 200
    # Revoked through the CLI, i.e. another connection, as an operator would.
    assert main(["keys", "revoke", "--database", str(config.database), key_id]) == 0
    r = await client.get("/test/balance", headers=_bearer(secret))
    assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"


async def test_a_sandbox_server_refuses_production_keys(auth_server) -> None:  # type: ignore[no-untyped-def]
    config, client = auth_server
    _, live = make_key(config, "read:balance", env="production")
    assert (await client.get("/test/balance", headers=_bearer(live))).status_code == 401


async def test_production_server_refuses_sandbox_keys(tmp_path: Path) -> None:
    # One environment per server: demo bets must never share a round (and its max-profit
    # cap) with real ones.
    under_test = build_app(make_config(tmp_path, environment="production"))
    under_test.app.register_blueprint(_auth_routes())
    _, live = make_key(under_test.config, "read:balance", env="production")
    _, test = make_key(under_test.config, "read:balance", env="sandbox")
    async with serving_app(under_test) as info:
        async with httpx.AsyncClient(base_url=info.url) as client:
            r1 = await client.get("/test/balance", headers=_bearer(live))
            r2 = await client.get("/test/balance", headers=_bearer(test))
    assert r1.status_code == 200 and r1.json()["environment"] == "production"
    assert r2.status_code == 401 and r2.json()["code"] == "invalid_api_key"


async def test_access_log_names_the_key_id_never_the_key(
    auth_server, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    config, client = auth_server
    caplog.set_level(logging.INFO, logger="crashd.access")
    key_id, secret = make_key(config, "read:balance")
    await client.get("/test/balance", headers=_bearer(secret))
    lines = [r.getMessage() for r in caplog.records if r.name == "crashd.access"]
    assert any(f"key_id={key_id}" in line for line in lines)
    assert not any(secret[8:] in line for line in lines)


def test_scope_names_are_validated_at_declaration() -> None:
    assert set(SCOPES) >= {"read:game_state", "read:balance", "write:bet"}
    with pytest.raises(ValueError):
        requires_scope("write:everything")


def test_rotation_keeps_identity_and_overlaps_then_expires(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "k.sqlite3")
    try:
        created = store.create("sandbox", "write:bet", partner_id="acme")
        assert created.signing_secret == store.signing_secret(created.key.id, 0)
        # Neither the signing secret nor the key is in the database.
        rotated = store.rotate(created.key.id, overlap_s=100, now=1_000.0)
        assert rotated.key.id == created.key.id and rotated.key.generation == 1
        assert (
            rotated.signing_secret
            == store.signing_secret(created.key.id, 1)
            != created.signing_secret
        )
        assert store.lookup(rotated.secret, now=1_050.0) is not None
        assert store.lookup(created.secret, now=1_050.0) is not None  # overlap
        assert store.lookup(created.secret, now=1_100.0) is None  # over
        key = store.get(created.key.id)
        assert key is not None and key.previous_until == 1_100.0
        principal = Principal(
            key.id,
            key.partner_id,
            key.environment,
            frozenset(key.scopes),
            key.generation,
            key.previous_until,
        )
        assert principal.signing_generations(1_050.0) == (1, 0)
        assert principal.signing_generations(1_100.0) == (1,)
        store.revoke(created.key.id)
        with pytest.raises(KeyStoreError):
            store.rotate(created.key.id, overlap_s=0, now=2_000.0)
        with pytest.raises(KeyStoreError):
            store.rotate("key_nope", overlap_s=0, now=2_000.0)
    finally:
        store.close()
    for path in tmp_path.iterdir():
        data = path.read_bytes()
        assert (
            created.signing_secret.encode() not in data and rotated.secret[8:].encode() not in data
        )


def test_old_key_tables_are_migrated_in_place(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.sqlite3"
    store = KeyStore(db)
    created = store.create("sandbox", "read:balance")
    store.close()
    # Recreate the table as the first release had it (no generation/last-used columns).
    conn = sqlite3.connect(db)
    conn.executescript("""
        CREATE TABLE old AS SELECT id, secret_hash, prefix, environment, partner_id, scopes, label,
                                   created_at, revoked_at FROM api_keys;
        DROP TABLE api_keys;
        ALTER TABLE old RENAME TO api_keys;
    """)
    conn.close()
    store = KeyStore(db)
    try:
        key = store.lookup(created.secret)
        assert key is not None and key.generation == 0 and key.last_used_at is None
        store.touch(key.id, "2026-01-01T00:00:00Z")
        assert store.get(key.id).last_used_at == "2026-01-01T00:00:00Z"  # type: ignore[union-attr]
    finally:
        store.close()

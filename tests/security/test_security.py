"""Security, end to end against a real server on 127.0.0.1: signed writes (every
tampering and replay refused, no money moved), rate limits and their headers, key
rotation with overlap, last-used tracking, TLS. Every log line of the module is
scanned for secrets (:func:`test_security_support.logscan`)."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from crashd.api.cli.main import main as cli_main
from crashd.api.security.keys import KeyStore
from support.security import LogScan, money_fingerprint, signed_headers
from support.servers import REPO, SIGNING_SECRETS, make_config, make_key, running_server

# Every log line of the module is scanned for the secrets it handled.
pytestmark = pytest.mark.usefixtures("logscan")

SCOPES = "read:game_state,read:balance,write:bet"
RESERVE = "/api/v1/bets/reserve"


def remember_key(scan: LogScan, secret: str) -> str:
    scan.remember(secret, SIGNING_SECRETS[secret])
    return SIGNING_SECRETS[secret]


async def signed_post(
    client: httpx.AsyncClient,
    scan: LogScan,
    key: str,
    signing: str,
    path: str,
    body: dict[str, Any],
    idem: str | None = None,
    **sign: Any,
) -> httpx.Response:
    raw = json.dumps(body).encode()
    headers = signed_headers(key, signing, "POST", path, raw, idem or uuid.uuid4().hex, **sign)
    scan.remember(headers["X-Crashd-Signature"])
    return await client.post(path, content=raw, headers=headers)


async def test_signed_writes_refuse_tampering_and_replays_and_move_nothing(
    tmp_path: Path, logscan: LogScan
) -> None:
    config = make_config(tmp_path, signature_window_s=30)
    async with running_server(config) as info:
        _, key = make_key(config, SCOPES)
        signing = remember_key(logscan, key)
        _, other = make_key(config, SCOPES, partner="globex")
        other_signing = remember_key(logscan, other)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            r = await signed_post(
                client,
                logscan,
                key,
                signing,
                "/api/v1/sandbox/faucet",
                {"user_id": "alice", "amount": 10_000},
            )
            assert r.status_code == 201, r.text
            before = money_fingerprint(config.database)
            body = {"user_id": "alice", "amount": 100}
            raw = json.dumps(body).encode()
            now = int(time.time())

            def good(idem: str = "k-1", **kw: Any) -> dict[str, str]:
                h = signed_headers(key, signing, "POST", RESERVE, raw, idem, **kw)
                logscan.remember(h["X-Crashd-Signature"])
                return h

            auth = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            cases: list[tuple[str, dict[str, str], bytes, str, str]] = [
                (
                    "no signature",
                    {**auth, "Idempotency-Key": "k-1"},
                    raw,
                    RESERVE,
                    "signature_missing",
                ),
                (
                    "no nonce",
                    {k: v for k, v in good().items() if k != "X-Crashd-Nonce"},
                    raw,
                    RESERVE,
                    "signature_missing",
                ),
                (
                    "timestamp not a number",
                    {**good(), "X-Crashd-Timestamp": "12.5"},
                    raw,
                    RESERVE,
                    "signature_malformed",
                ),
                (
                    "nonce too short",
                    {**good(), "X-Crashd-Nonce": "short"},
                    raw,
                    RESERVE,
                    "signature_malformed",
                ),
                (
                    "signature upper case",
                    {**good(), "X-Crashd-Signature": good()["X-Crashd-Signature"].upper()},
                    raw,
                    RESERVE,
                    "signature_malformed",
                ),
                ("stale", good(timestamp=now - 40), raw, RESERVE, "signature_expired"),
                (
                    "from the future",
                    good(timestamp=now + 40),
                    raw,
                    RESERVE,
                    "signature_from_future",
                ),
                (
                    "body tampered",
                    good(),
                    json.dumps({**body, "amount": 101}).encode(),
                    RESERVE,
                    "invalid_signature",
                ),
                (
                    "body reformatted",
                    good(),
                    json.dumps(body, indent=1).encode(),
                    RESERVE,
                    "invalid_signature",
                ),
                ("path tampered", good(), raw, "/api/v1/bets/reserve?x=1", "invalid_signature"),
                (
                    "idempotency key swapped",
                    {**good(), "Idempotency-Key": "k-2"},
                    raw,
                    RESERVE,
                    "invalid_signature",
                ),
                (
                    "another key's signing secret",
                    {**signed_headers(key, other_signing, "POST", RESERVE, raw, "k-1")},
                    raw,
                    RESERVE,
                    "invalid_signature",
                ),
                (
                    "the API key as signing secret",
                    {**signed_headers(key, key, "POST", RESERVE, raw, "k-1")},
                    raw,
                    RESERVE,
                    "invalid_signature",
                ),
                (
                    "no idempotency key",
                    {k: v for k, v in good(idem="").items() if k != "Idempotency-Key"},
                    raw,
                    RESERVE,
                    "idempotency_key_required",
                ),
            ]
            for name, headers, content, path, code in cases:
                r = await client.post(path, content=content, headers=headers)
                assert 400 <= r.status_code < 500 and r.json()["code"] == code, (
                    name,
                    r.status_code,
                    r.text,
                )
            # Signed for PUT, sent as POST.
            h = signed_headers(key, signing, "PUT", RESERVE, raw, "k-1")
            r = await client.post(RESERVE, content=raw, headers=h)
            assert r.json()["code"] == "invalid_signature"
            assert money_fingerprint(config.database) == before

            # The genuine request works once; its exact replay is refused and moves nothing.
            headers = good(idem="k-ok")
            r = await client.post(RESERVE, content=raw, headers=headers)
            assert r.status_code == 201, r.text
            after_ok = money_fingerprint(config.database)
            assert after_ok != before
            r = await client.post(RESERVE, content=raw, headers=headers)
            assert r.status_code == 409 and r.json()["code"] == "nonce_reused"
            # A fresh signature reusing the nonce is a replay too.
            r = await client.post(
                RESERVE, content=raw, headers=good(idem="k-other", nonce=headers["X-Crashd-Nonce"])
            )
            assert r.json()["code"] == "nonce_reused"
            # The other key may use the same nonce: nonces are per key.
            r = await client.post(
                RESERVE,
                content=raw,
                headers={
                    **signed_headers(
                        other,
                        other_signing,
                        "POST",
                        RESERVE,
                        raw,
                        "k-x",
                        nonce=headers["X-Crashd-Nonce"],
                    )
                },
            )
            assert (
                r.status_code == 409 and r.json()["code"] == "insufficient_funds"
            )  # globex's alice: no money
            assert money_fingerprint(config.database).transfers == after_ok.transfers

            # The OpenAPI document names the signature headers on signed routes only.
            doc = (await client.get("/api/v1/openapi.json")).json()
            names = {p["name"] for p in doc["paths"]["/api/v1/bets/reserve"]["post"]["parameters"]}
            assert {
                "X-Crashd-Timestamp",
                "X-Crashd-Nonce",
                "X-Crashd-Signature",
                "Idempotency-Key",
            } <= names
            assert "parameters" not in doc["paths"]["/api/v1/game/state"]["get"] or not any(
                p["name"].startswith("X-Crashd")
                for p in doc["paths"]["/api/v1/game/state"]["get"]["parameters"]
            )


async def test_rate_limits_per_key_and_class_with_headers_everywhere(
    tmp_path: Path, logscan: LogScan
) -> None:
    config = make_config(
        tmp_path,
        rate_limit_read=3,
        rate_limit_write=2,
        rate_limit_anonymous=4,
        rate_limit_window_s=60,
    )
    async with running_server(config) as info:
        _, key = make_key(config, SCOPES)
        _, second = make_key(config, SCOPES)
        remember_key(logscan, key)
        remember_key(logscan, second)
        auth = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            seen = []
            for _ in range(3):
                r = await client.get("/api/v1/game/state", headers=auth)
                assert r.status_code == 200
                seen.append(int(r.headers["X-RateLimit-Remaining"]))
                assert r.headers["RateLimit-Policy"] == '"read";q=3;w=60'
                assert r.headers["RateLimit"].startswith('"read";r=')
                assert int(r.headers["X-RateLimit-Reset"]) >= int(time.time())
            assert seen == [2, 1, 0]
            # A 404 with a known key is charged to the key and carries the headers too.
            r = await client.get("/api/v1/nope", headers=auth)
            assert r.status_code == 429 and r.json()["code"] == "rate_limited"
            assert int(r.headers["Retry-After"]) >= 1 and r.headers["X-RateLimit-Remaining"] == "0"
            assert r.headers["Content-Type"] == "application/problem+json"
            # Writes are another class, and another key has its own buckets.
            r = await client.post("/api/v1/bets/reserve", headers=auth, json={})
            assert r.status_code == 401 and r.headers["RateLimit-Policy"].startswith('"write"')
            r = await client.get("/api/v1/nope", headers={"Authorization": f"Bearer {second}"})
            assert r.status_code == 404 and r.headers["X-RateLimit-Remaining"] == "2"
            # Without a valid key: per client IP, bad keys included.
            statuses = []
            for i in range(5):
                r = await client.get(
                    "/api/v1/health", headers={"Authorization": "Bearer ck_test_nope"} if i else {}
                )
                statuses.append(r.status_code)
                assert r.headers["RateLimit-Policy"] == '"anonymous";q=4;w=60'
            assert statuses == [200, 200, 200, 200, 429]
            r = await client.get(
                "/api/v1/user/balance",
                params={"user_id": "u"},
                headers={"Authorization": "Bearer ck_test_" + "x" * 32},
            )
            assert r.status_code == 429
            # The webhook is not rate limited (the PSP is authenticated by its HMAC).
            r = await client.post("/api/v1/psp/webhook", content=b"{}")
            assert r.status_code != 429 and "RateLimit" not in r.headers


async def test_rotation_overlap_then_old_secrets_stop(tmp_path: Path, logscan: LogScan) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as info:
        key_id, old = make_key(config, SCOPES)
        old_signing = remember_key(logscan, old)
        store = KeyStore(config.database)
        try:
            assert store.get(key_id).last_used_at is None  # type: ignore[union-attr]
            rotated = store.rotate(key_id, overlap_s=3600, now=time.time())
        finally:
            store.close()
        new, new_signing = rotated.secret, rotated.signing_secret
        logscan.remember(new, new_signing)
        assert new != old and new_signing != old_signing and rotated.key.generation == 1
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            # During the overlap both secrets authenticate, and both signing secrets sign.
            for k in (old, new):
                r = await client.get(
                    "/api/v1/user/balance",
                    params={"user_id": "a"},
                    headers={"Authorization": f"Bearer {k}"},
                )
                assert r.status_code == 200, r.text
            for k, s in (
                (old, old_signing),
                (new, new_signing),
                (old, new_signing),
                (new, old_signing),
            ):
                r = await signed_post(
                    client, logscan, k, s, "/api/v1/sandbox/faucet", {"user_id": "a", "amount": 1}
                )
                assert r.status_code == 201, r.text
            store = KeyStore(config.database)
            try:
                assert store.get(key_id).last_used_at is not None  # type: ignore[union-attr]
                again = store.rotate(key_id, overlap_s=0, now=time.time())
            finally:
                store.close()
            logscan.remember(again.secret, again.signing_secret)
            # No overlap: both earlier generations stop at once, the newest works.
            for k in (old, new):
                r = await client.get(
                    "/api/v1/user/balance",
                    params={"user_id": "a"},
                    headers={"Authorization": f"Bearer {k}"},
                )
                assert r.status_code == 401 and r.json()["code"] == "invalid_api_key"
            r = await signed_post(
                client,
                logscan,
                again.secret,
                new_signing,
                "/api/v1/sandbox/faucet",
                {"user_id": "a", "amount": 1},
            )
            assert r.status_code == 401 and r.json()["code"] == "invalid_signature"
            r = await signed_post(
                client,
                logscan,
                again.secret,
                again.signing_secret,
                "/api/v1/sandbox/faucet",
                {"user_id": "a", "amount": 1},
            )
            assert r.status_code == 201, r.text


def test_cli_rotate_prints_new_secrets_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], logscan: LogScan
) -> None:
    db = tmp_path / "crashd.sqlite3"
    assert (
        cli_main(
            [
                "keys",
                "create",
                "--database",
                str(db),
                "--env",
                "sandbox",
                "--scopes",
                "write:bet",
                "--json",
            ]
        )
        == 0
    )
    created = json.loads(capsys.readouterr().out)
    logscan.remember(created["secret"], created["signing_secret"])
    assert created["signing_secret"].startswith("cs_") and created["generation"] == 0
    assert (
        cli_main(["keys", "rotate", "--database", str(db), created["id"], "--overlap-s", "60"]) == 0
    )
    out = capsys.readouterr().out
    assert "generation 1" in out and "keep working until" in out
    lines = dict(
        line.split(": ", 1)
        for line in out.splitlines()
        if line.startswith(("secret:", "signing secret:"))
    )
    logscan.remember(*lines.values())
    assert lines["secret"].startswith("ck_test_") and lines["secret"] != created["secret"]
    assert lines["signing secret"] != created["signing_secret"]
    assert cli_main(["keys", "list", "--database", str(db), "--json"]) == 0
    listed = capsys.readouterr().out
    assert lines["secret"] not in listed and lines["signing secret"] not in listed
    assert json.loads(listed)[0]["generation"] == 1
    assert cli_main(["keys", "rotate", "--database", str(db), "key_nope"]) == 2


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
async def test_tls_serves_https_and_refuses_old_protocols(tmp_path: Path, logscan: LogScan) -> None:
    cert, key = _self_signed(tmp_path)
    config = make_config(tmp_path, tls_cert=cert, tls_key=key)
    async with running_server(config) as info:
        assert info.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(base_url=info.url, verify=trusted, timeout=10) as client:
            r = await client.get("/api/v1/health")
            assert r.status_code == 200 and r.json()["status"] == "ok"
            assert r.extensions["network_stream"].get_extra_info("ssl_object").version() in (
                "TLSv1.2",
                "TLSv1.3",
            )
        # A client that offers at most TLS 1.1 gets no session.
        old = ssl.create_default_context(cafile=str(cert))
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        async with httpx.AsyncClient(base_url=info.url, verify=old, timeout=10) as client:
            with pytest.raises(httpx.ConnectError):
                await client.get("/api/v1/health")
        # Plain HTTP to the TLS port is not served either.
        async with httpx.AsyncClient(
            base_url=info.url.replace("https", "http"), timeout=5
        ) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get("/api/v1/health")


def test_tls_needs_both_files(tmp_path: Path) -> None:
    from crashd.api.config import ConfigError
    from crashd.api.server import hypercorn_config

    with pytest.raises(ConfigError):
        hypercorn_config(make_config(tmp_path, tls_cert=tmp_path / "c.pem"))


async def test_last_used_is_written_once_per_period(tmp_path: Path, logscan: LogScan) -> None:
    config = make_config(tmp_path)
    async with running_server(config) as info:
        key_id, key = make_key(config, "read:game_state")
        remember_key(logscan, key)
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            await client.get("/api/v1/game/state", headers={"Authorization": f"Bearer {key}"})
            store = KeyStore(config.database)
            try:
                first = store.get(key_id).last_used_at  # type: ignore[union-attr]
                assert first is not None
                store.touch(
                    key_id, "2000-01-01T00:00:00Z"
                )  # a marker the next request must not overwrite
                for _ in range(5):
                    await client.get(
                        "/api/v1/game/state", headers={"Authorization": f"Bearer {key}"}
                    )
                await trio.sleep(0)
                assert store.get(key_id).last_used_at == "2000-01-01T00:00:00Z"  # type: ignore[union-attr]
            finally:
                store.close()


def test_docs_worked_examples_are_correct() -> None:
    """docs/security.md's examples, recomputed."""
    from crashd.api.security import webhook as pspsig
    from crashd.api.security.signing import signature, string_to_sign

    docs = (REPO / "docs" / "security.md").read_text()
    canonical = string_to_sign(
        "POST",
        "/api/v1/bets/reserve",
        "1767225600",
        "n0nce-8f3a9c2e71d4b5a6",
        b'{"user_id":"u-42","amount":2500}',
        "3f2c1e9a-7b4d-4e8f-9a1c-2d3e4f5a6b7c",
    )
    assert "```\n" + canonical + "\n```" in docs
    assert signature("cs_" + "0123456789abcdef" * 4, canonical) in docs
    body = (
        b'{"id":"evt_1","type":"deposit.completed","created":1767225600,"data":{"environment":"sandbox",'
        b'"partner_id":"acme","user_id":"u-42","amount":5000}}'
    )
    assert body.decode() in docs
    assert pspsig.header_value("whsec_example_secret", 1767225600, body) in docs


async def test_feed_connects_with_an_api_key_are_rate_limited_per_key(
    tmp_path: Path, logscan: LogScan
) -> None:
    from crashd.api.feed.access import ConnectRateLimited
    from crashd.api.rest.routes.feed import feed_authenticator
    from crashd.api.security.keys import Authenticator
    from crashd.api.security.ratelimit import Policy

    store = KeyStore(tmp_path / "k.sqlite3")
    try:
        a = store.create("sandbox", "read:game_state", partner_id="acme")
        b = store.create("sandbox", "read:game_state", partner_id="acme")
        logscan.remember(a.secret, b.secret, a.signing_secret, b.signing_secret)
        authenticate = feed_authenticator(
            Authenticator(store, frozenset({"sandbox"})), Policy("feed_connect", 3, 60.0)
        )
        for _ in range(3):
            assert await authenticate(a.secret) is not None
        # The fourth is refused as "try again later", not as a bad credential.
        with pytest.raises(ConnectRateLimited):
            await authenticate(a.secret)
        assert await authenticate(b.secret) is not None  # per key
        assert await authenticate("ck_test_" + "x" * 32) is None
    finally:
        store.close()

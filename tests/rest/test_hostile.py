"""Hostile input against a real server (Hypothesis and schemathesis, bounded).

One server for the module (in a background thread, so Hypothesis' synchronous tests
can drive it); one funded user, ``alice``. Every example must get a clear 4xx — never
a 5xx — and leave the money byte for byte as it was
(:func:`test_security_support.money_fingerprint`: accounts, transfers, holds, bets and
every successful money op; a refused op the ledger records for its idempotency id is
an audit record, not money, and is allowed).

Examples per test come from the ``ci`` Hypothesis profile cut down with ``max_examples``
below (``HYPOTHESIS_PROFILE=thorough`` does not raise these: the bounds are per test).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from crashd.api import wire
from crashd.api.security import webhook as pspsig
from support.security import (
    LogScan,
    MoneyFingerprint,
    ThreadServer,
    money_fingerprint,
    signed_headers,
)
from support.servers import SIGNING_SECRETS, make_config, make_key

# Every log line of the module is scanned for the secrets it handled.
pytestmark = pytest.mark.usefixtures("logscan")

PSP_SECRET = "whsec_hostile_" + "c3" * 12
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
MONEY_ROUTES = [
    ("POST", "/api/v1/bets"),
    ("POST", "/api/v1/bets/reserve"),
    ("POST", "/api/v1/bets/confirm"),
    ("POST", "/api/v1/bets/release"),
    ("POST", "/api/v1/sandbox/faucet"),
    ("POST", "/api/v1/bets/t_000000000000000000000000/cashout"),
    ("PUT", "/api/v1/bets/t_000000000000000000000000/auto-cashout"),
]


@dataclass
class Target:
    client: httpx.Client
    database: Path
    key: str
    signing: str
    read_only: str
    other_partner: str
    other_signing: str
    production: str
    scan: LogScan
    baseline: MoneyFingerprint

    def signed(
        self,
        method: str,
        path: str,
        body: bytes,
        *,
        key: str | None = None,
        signing: str | None = None,
        idem: str | None = None,
        **kw: Any,
    ) -> dict[str, str]:
        headers = signed_headers(
            key or self.key,
            signing or self.signing,
            method,
            path,
            body,
            idem or uuid.uuid4().hex,
            **kw,
        )
        self.scan.remember(headers["X-Crashd-Signature"])
        return headers

    def check(self, r: httpx.Response, what: object) -> None:
        assert 400 <= r.status_code < 500, (what, r.status_code, r.text[:300])
        if r.status_code != 404 or r.headers.get("content-type") == "application/problem+json":
            assert r.headers["content-type"] == "application/problem+json", (what, r.headers)
            assert r.json()["code"], what
        assert money_fingerprint(self.database) == self.baseline, what


class RetryingClient(httpx.Client):
    """Sends a request again, once, when a pooled keep-alive connection turns out to be
    closed before any response ("Server disconnected without sending a response"): what
    HTTP clients do for a stale connection. Seen about once per few full-suite runs on a
    loaded machine; the retry is byte-identical, so a request that did reach the server
    meets ``nonce_reused`` the second time, and the money check still applies."""

    stale_retries = 0

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:  # type: ignore[override]
        try:
            return super().send(request, **kwargs)
        except httpx.RemoteProtocolError:
            RetryingClient.stale_retries += 1
            return super().send(request, **kwargs)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, logscan: LogScan) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("hostile")
    (tmp / "psp").write_text(PSP_SECRET + "\n")
    logscan.remember(PSP_SECRET)
    config = make_config(
        tmp,
        rate_limit_read=10**6,
        rate_limit_write=10**6,
        rate_limit_anonymous=10**6,
        psp_secrets_file=tmp / "psp",
        max_body_bytes=16 * 1024,
        # The pooled client connection must not meet the server's idle
        # close half-way (a client-side race, not an answer to judge).
        keep_alive_timeout=600,
    )
    with ThreadServer(config) as info, RetryingClient(base_url=info.url, timeout=20) as client:
        _, key = make_key(config, "read:game_state,read:balance,write:bet")
        _, read_only = make_key(config, "read:game_state,read:balance")
        _, other = make_key(config, "read:game_state,read:balance,write:bet", partner="globex")
        _, production = make_key(config, "read:game_state,read:balance,write:bet", env="production")
        for k in (key, read_only, other, production):
            logscan.remember(k, SIGNING_SECRETS[k])
        body = json.dumps({"user_id": "alice", "amount": 50_000}).encode()
        headers = signed_headers(
            key, SIGNING_SECRETS[key], "POST", "/api/v1/sandbox/faucet", body, "fund-alice"
        )
        assert (
            client.post("/api/v1/sandbox/faucet", content=body, headers=headers).status_code == 201
        )
        baseline = money_fingerprint(config.database)
        target = Target(
            client,
            config.database,
            key,
            SIGNING_SECRETS[key],
            read_only,
            other,
            SIGNING_SECRETS[other],
            production,
            logscan,
            baseline,
        )
        yield target
        # Only genuinely valid requests (which re-baseline) may have moved money.
        assert money_fingerprint(config.database) == target.baseline


# --- strategies -----------------------------------------------------------------------

NASTY_TEXT = st.one_of(
    st.text(max_size=80),
    st.sampled_from(
        [
            "",
            " ",
            "alice\x00",
            "ａｌｉｃｅ",
            "al\u202eice",
            "\ud800",
            "\U0001f4a9" * 30,
            "../../etc/passwd",
            "%2e%2e%2f",
            "alice\nX-Injected: 1",
            "a" * 65,
            "null",
            "0",
            "-1",
            "1e309",
        ]
    ),
)
NASTY_INT = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 2**53, 2**53 + 1, 2**63, -(2**63), 2**64, 10**15 + 1, 10**400]),
)
JSON_SCALAR = st.one_of(st.none(), st.booleans(), NASTY_INT, st.floats(allow_nan=False), NASTY_TEXT)
JSON_VALUE = st.recursive(
    JSON_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(NASTY_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)
FIELD_NAMES = st.sampled_from(
    [
        "user_id",
        "amount",
        "ttl_ms",
        "hold_id",
        "auto_cashout",
        "target",
        "extra",
        "__proto__",
        "constructor",
        "Amount",
    ]
)
# Bodies built from the real field names with hostile values; users never "alice", so a
# body that happens to be valid meets an empty account and moves nothing.
BODIES = st.one_of(
    st.dictionaries(FIELD_NAMES, JSON_VALUE, max_size=5).map(
        lambda d: {**d, "user_id": "mallory"} if d.get("user_id") == "alice" else d
    ),
    JSON_VALUE,
)


def _encode(value: Any) -> bytes:
    try:
        return json.dumps(value).encode()
    except (ValueError, OverflowError):
        return b"{}"


# --- bodies ---------------------------------------------------------------------------


@FUZZ
@given(
    items=st.lists(
        st.one_of(
            BODIES,
            st.fixed_dictionaries(
                {
                    "action": st.sampled_from(["place", "cashout", "dance"]),
                    "key": st.text(max_size=8),
                },
                optional={
                    "user_id": st.sampled_from(["mallory", "", "x" * 80]),
                    "amount": JSON_VALUE,
                    "ticket_id": st.sampled_from(["t_000000000000000000000000", "nope"]),
                },
            ),
        ),
        max_size=5,
    )
)
def test_hostile_batches_move_nothing(target: Target, items: list[Any]) -> None:
    """A batch of garbage items: the whole batch is refused (4xx), or each of its
    results is; nothing moves either way."""
    path = "/api/v1/bets/batch"
    raw = _encode({"items": items})
    r = target.client.post(path, content=raw, headers=target.signed("POST", path, raw))
    if r.status_code == 200:
        for result in r.json()["results"]:
            assert 400 <= result["status"] < 500 and result["body"]["code"], (items, result)
        assert money_fingerprint(target.database) == target.baseline, items
    else:
        target.check(r, items)


@FUZZ
@given(route=st.sampled_from(MONEY_ROUTES), body=BODIES)
def test_signed_hostile_bodies_are_4xx_and_move_nothing(
    target: Target, route: tuple[str, str], body: Any
) -> None:
    method, path = route
    raw = _encode(body)
    r = target.client.request(method, path, content=raw, headers=target.signed(method, path, raw))
    target.check(r, (route, body))


@FUZZ
@given(
    route=st.sampled_from(MONEY_ROUTES),
    raw=st.one_of(
        st.binary(max_size=200),
        st.sampled_from(
            [
                b"",
                b"{",
                b"[]",
                b"null",
                b'{"user_id": "alice", "amount": 1,}',
                b'{"a":1,"a":2}',
                b'{"amount": NaN}',
                b'{"amount": Infinity}',
                b"\xff\xfe{}",
                b'{"user_id": "\\ud800"}',
                b"[" * 5000 + b"]" * 5000,
                b'{"a":' * 3000 + b"1" + b"}" * 3000,
                b'{"user_id": "alice", "amount": 1' + b"0" * 5000 + b"}",
                json.dumps({"user_id": "alice", "amount": 1, "pad": "x" * 20_000}).encode(),
            ]
        ),
    ),
)
def test_signed_malformed_and_huge_bodies_are_4xx(
    target: Target, route: tuple[str, str], raw: bytes
) -> None:
    method, path = route
    r = target.client.request(method, path, content=raw, headers=target.signed(method, path, raw))
    target.check(r, (route, raw[:80]))


@FUZZ
@given(
    content_type=st.sampled_from(
        [
            "text/plain",
            "application/json; charset=latin-1",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "",
        ]
    )
)
def test_wrong_content_types_are_415(target: Target, content_type: str) -> None:
    raw = b'{"user_id": "alice", "amount": 1}'
    headers = {**target.signed("POST", "/api/v1/bets/reserve", raw), "Content-Type": content_type}
    r = target.client.post("/api/v1/bets/reserve", content=raw, headers=headers)
    target.check(r, content_type)


# --- signatures -----------------------------------------------------------------------

MUTATIONS = st.sampled_from(
    [
        "body",
        "path",
        "method",
        "timestamp",
        "nonce",
        "signature",
        "idempotency",
        "drop",
        "other_key_secret",
        "api_key_as_secret",
    ]
)


@FUZZ
# skew from 40 s: the window is 30 s, and int() truncation plus the request's own time
# could bring a 31 s "future" timestamp back inside it (a valid, money-moving request).
@given(mutation=MUTATIONS, amount=st.integers(1, 1000), skew=st.integers(40, 10**9), data=st.data())
def test_every_tampered_signature_is_refused(
    target: Target, mutation: str, amount: int, skew: int, data: st.DataObject
) -> None:
    # A genuine request for alice (who has the money): only the mutation stops it.
    method, path = "POST", "/api/v1/bets/reserve"
    raw = json.dumps({"user_id": "alice", "amount": amount}).encode()
    idem = uuid.uuid4().hex
    headers = target.signed(method, path, raw, idem=idem)
    send_method, send_path, send_raw = method, path, raw
    if mutation == "body":
        i = data.draw(st.integers(0, len(raw) - 1))
        send_raw = raw[:i] + bytes([raw[i] ^ data.draw(st.integers(1, 255))]) + raw[i + 1 :]
    elif mutation == "path":
        # (A bare trailing "?" is no tampering: ASGI sees no query either way.)
        send_path = data.draw(
            st.sampled_from(
                [
                    "/api/v1/bets/reserve?a=1",
                    "/api/v1/bets/reserve?user_id=bob",
                    "/api/v1/bets/reserve/",
                    "/api/v1//bets/reserve",
                    "/api/v1/bets/%72eserve",
                ]
            )
        )
        # The client may normalise a path (drop a bare "?"); then it is not tampered.
        assume(target.client.build_request("POST", send_path).url.raw_path.decode() != path)
    elif mutation == "method":
        send_method = "PUT"
    elif mutation == "timestamp":
        sign = data.draw(st.sampled_from([-1, 1]))
        headers = target.signed(
            method, path, raw, idem=idem, timestamp=int(time.time()) + sign * skew
        )
    elif mutation == "nonce":
        headers["X-Crashd-Nonce"] = data.draw(
            st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=0, max_size=80)
        )
    elif mutation == "signature":
        headers["X-Crashd-Signature"] = data.draw(
            st.one_of(
                st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
                st.text(max_size=100),
            )
        )
    elif mutation == "idempotency":
        headers["Idempotency-Key"] = idem + "x"
    elif mutation == "drop":
        del headers[
            data.draw(
                st.sampled_from(
                    [
                        "X-Crashd-Timestamp",
                        "X-Crashd-Nonce",
                        "X-Crashd-Signature",
                        "Idempotency-Key",
                    ]
                )
            )
        ]
    elif mutation == "other_key_secret":
        headers = target.signed(method, path, raw, signing=target.other_signing, idem=idem)
    elif mutation == "api_key_as_secret":
        headers = target.signed(method, path, raw, signing=target.key, idem=idem)
    try:
        r = target.client.request(send_method, send_path, content=send_raw, headers=headers)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # a header the client itself refuses to send never reaches the server
    target.check(r, (mutation, send_method, send_path, send_raw, headers.get("X-Crashd-Nonce")))


@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
@given(amount=st.integers(1, 1000))
def test_replays_are_refused(target: Target, amount: int) -> None:
    # bob has no money: the first delivery is refused by the ledger (recorded, no
    # money); the byte-identical replay never gets that far.
    raw = json.dumps({"user_id": "bob", "amount": amount}).encode()
    headers = target.signed("POST", "/api/v1/bets/reserve", raw)
    first = target.client.post("/api/v1/bets/reserve", content=raw, headers=headers)
    assert first.status_code == 409 and first.json()["code"] == "insufficient_funds"
    replay = target.client.post("/api/v1/bets/reserve", content=raw, headers=headers)
    assert replay.json()["code"] == "nonce_reused"
    target.check(replay, amount)


# --- ids in paths ---------------------------------------------------------------------


@FUZZ
@given(
    ident=st.one_of(
        NASTY_TEXT,
        st.sampled_from(
            [
                "..",
                "../..",
                "..%2f..%2fetc",
                "t_" + "0" * 24 + "/../x",
                "%00",
                "t_" + "g" * 24,
                "1" * 400,
                "-1",
                "0x10",
            ]
        ),
    ),
    where=st.sampled_from(["ticket", "cashout", "round"]),
)
def test_hostile_ids_in_paths(target: Target, ident: str, where: str) -> None:
    segment = quote(ident.encode("utf-8", "surrogatepass"), safe="%./")
    # Dot segments alone ("." or "./.") are removed by the client before sending (RFC 3986
    # remove_dot_segments): the request then names the collection, not a hostile id.
    assume(not set(segment.split("/")) <= {".", ""})
    if where == "ticket":
        r = target.client.get(
            f"/api/v1/bets/{segment}", headers={"Authorization": f"Bearer {target.key}"}
        )
    elif where == "round":
        r = target.client.get(
            f"/api/v1/game/rounds/{segment}", headers={"Authorization": f"Bearer {target.key}"}
        )
    else:
        path = f"/api/v1/bets/{segment}/cashout"
        raw = b'{"user_id": "alice"}'
        r = target.client.post(path, content=raw, headers=target.signed("POST", path, raw))
    target.check(r, (where, ident))


# --- who may do what ------------------------------------------------------------------


def test_wrong_scope_wrong_partner_wrong_environment(target: Target) -> None:
    raw = json.dumps({"user_id": "alice", "amount": 10}).encode()
    path = "/api/v1/bets/reserve"
    r = target.client.post(
        path,
        content=raw,
        headers={**target.signed("POST", path, raw), "Authorization": f"Bearer {target.read_only}"},
    )
    assert r.json()["code"] == "insufficient_scope"
    target.check(r, "read-only key")
    # Another partner's "alice" is another person, with no money.
    r = target.client.post(
        path,
        content=raw,
        headers=target.signed(
            "POST", path, raw, key=target.other_partner, signing=target.other_signing
        ),
    )
    assert r.json()["code"] == "insufficient_funds"
    target.check(r, "other partner")
    r = target.client.get(
        "/api/v1/user/balance",
        params={"user_id": "alice"},
        headers={"Authorization": f"Bearer {target.other_partner}"},
    )
    assert r.status_code == 200 and r.json()["available"] == 0
    # A production key on a sandbox server is not a key at all here.
    r = target.client.post(
        path,
        content=raw,
        headers=target.signed(
            "POST", path, raw, key=target.production, signing=SIGNING_SECRETS[target.production]
        ),
    )
    assert r.json()["code"] == "invalid_api_key"
    target.check(r, "production key")
    # Another partner's key signing with acme's signing secret.
    r = target.client.post(
        path, content=raw, headers=target.signed("POST", path, raw, key=target.other_partner)
    )
    assert r.json()["code"] == "invalid_signature"
    target.check(r, "cross-key signature")
    for auth in [
        "",
        "Bearer",
        "Bearer x y",
        "Basic " + target.key,
        target.key,
        "Bearer " + target.key + "x",
        "Bearer ck_test_" + "A" * 32,
        "bearer  " + "x" * 10_000,
    ]:
        r = target.client.post(
            path, content=raw, headers={**target.signed("POST", path, raw), "Authorization": auth}
        )
        assert r.json()["code"] == "invalid_api_key", auth[:20]
        target.check(r, auth[:20])


# --- webhooks -------------------------------------------------------------------------


@FUZZ
@given(
    raw=st.one_of(st.binary(max_size=300), BODIES.map(_encode)),
    header=st.one_of(
        st.none(),
        st.text(max_size=200),
        st.builds(
            lambda t, h: f"t={t},v1={h}",
            st.integers(0, 2**40),
            st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
        ),
    ),
)
def test_forged_webhooks_are_refused(target: Target, raw: bytes, header: str | None) -> None:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers[wire.PSP_SIGNATURE_HEADER] = header
    try:
        r = target.client.post("/api/v1/psp/webhook", content=raw, headers=headers)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return
    target.check(r, (raw[:60], header))


@FUZZ
@given(
    doc=st.one_of(
        JSON_VALUE,
        st.fixed_dictionaries(
            {
                "id": NASTY_TEXT,
                "type": st.sampled_from(
                    ["deposit.completed", "withdrawal.completed", "withdrawal.failed"]
                ),
                "data": st.dictionaries(
                    st.sampled_from(
                        ["environment", "partner_id", "user_id", "amount", "withdrawal_id", "extra"]
                    ),
                    JSON_VALUE,
                    max_size=6,
                ),
            }
        ),
    )
)
def test_genuinely_signed_hostile_events_never_fail_the_server(target: Target, doc: Any) -> None:
    raw = _encode(doc)
    header = pspsig.header_value(PSP_SECRET, int(time.time()), raw)
    target.scan.remember(header.split("v1=")[1])
    r = target.client.post(
        "/api/v1/psp/webhook",
        content=raw,
        headers={"Content-Type": "application/json", wire.PSP_SIGNATURE_HEADER: header},
    )
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        # The PSP is trusted: a well-formed event is applied, refused or ignored. If it
        # moved money, that is the new baseline.
        assert r.json()["status"] in ("applied", "rejected", "ignored")
        target.baseline = money_fingerprint(target.database)
    else:
        target.check(r, doc)


# --- schemathesis over the whole published contract --------------------------------------


def test_schemathesis_operations_never_fail_the_server(target: Target) -> None:
    """Every operation of the OpenAPI document, with schemathesis-generated (often
    invalid) data, signed where the route is signed: never a 5xx, no money moved."""
    doc = target.client.get("/api/v1/openapi.json").json()
    schema = schemathesis.openapi.from_dict(doc)
    cases = 0

    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        nonlocal cases
        operation = data.draw(st.sampled_from(list(schema.get_all_operations())))
        case = data.draw(operation.ok().as_strategy())
        cases += 1
        path = case.formatted_path
        query = "&".join(f"{quote(str(k))}={quote(str(v))}" for k, v in (case.query or {}).items())
        target_path = path + ("?" + query if query else "")
        body = case.body
        raw = b"" if body is None or type(body).__name__ == "NotSet" else _encode(body)
        headers = {"Authorization": f"Bearer {target.key}", "Content-Type": "application/json"}
        for k, v in (case.headers or {}).items():
            if k.lower() not in ("authorization", "content-type"):
                headers[k] = str(v)
        if "X-Crashd-Signature" in headers and data.draw(st.booleans()):
            headers.update(
                target.signed(
                    case.method.upper(),
                    target_path,
                    raw,
                    idem=headers.get("Idempotency-Key") or uuid.uuid4().hex,
                )
            )
        try:
            r = target.client.request(
                case.method.upper(), target_path, content=raw, headers=headers
            )
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            return
        assert r.status_code < 500, (case.method, target_path, raw[:200], r.text[:300])
        if (
            case.path
            in ("/api/v1/sandbox/faucet", "/api/v1/bets/reserve", "/api/v1/sandbox/session")
            and r.status_code < 300
        ):
            target.baseline = money_fingerprint(target.database)  # a valid request did its job
        assert money_fingerprint(target.database) == target.baseline, (case.method, target_path)

    run()
    assert cases >= 50

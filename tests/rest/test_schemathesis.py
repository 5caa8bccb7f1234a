"""Schemathesis against a real ``crashd serve``: the OpenAPI document is the contract.

A real server process (``python -m api serve --port 0``) runs on 127.0.0.1. Schemathesis
generates one test per operation of the OpenAPI document at collection time, so the
document is built at import from an app made exactly as the server makes it
(:func:`_document`), and :func:`test_served_document_is_the_tested_one` checks that the
server's ``/api/v1/openapi.json`` is that very document. For every operation,
schemathesis generates requests from the documented schemas — valid ones and
deliberately invalid ones (``generation.mode = all``: the coverage phase's boundary and
negative cases, then ``EXAMPLES`` fuzzed cases) — and sends them with a real API key
holding every scope, so the authenticated paths run for real. Every response must pass:

* ``not_a_server_error``: no 5xx, ever;
* ``status_code_conformance``: the status is documented for the operation;
* ``content_type_conformance``: the content type is the documented one
  (``application/json``, ``application/problem+json`` for problems);
* ``response_schema_conformance``: the body matches the documented schema;
* ``response_headers_conformance``: documented headers have their documented shape.

Random data rarely gets past a money route's refusals (a generated user has no money, a
generated hold or ticket does not exist), so :func:`test_lifecycle_responses_match_the_document`
sends a bet's whole life explicitly (faucet, reserve, release, confirm, status,
auto-cashout, cashout, user bets, rounds with 304 revalidation, feed token) and has
schemathesis validate each answer with the same checks.

Writes that must be signed (``X-Crashd-Signature``) are signed by the test's session,
so schemathesis reaches the money routes' logic instead of stopping at 401; a request
whose generated signature headers are missing is sent as generated (the server must
refuse it with a documented problem). Generated ``Idempotency-Key`` values repeat, so
valid ones are made unique (a repeat with another body is a correct 422 that would
hide the route).

Not checked here, by design: ``positive_data_acceptance``. The server refuses ``5.0``
for an integer (docs/api.md, "Strict bodies"), which JSON Schema's ``integer`` accepts,
and the operator's ``min_stake``/``max_stake`` narrow the documented amount range at
run time (``stake_too_small``/``stake_too_large``, documented 422s).

Budget: about 30 s on a quiet machine (CI budget: 3 minutes). A thorough run:
``CRASHD_SCHEMATHESIS_EXAMPLES=1000 pytest tests/rest/test_schemathesis.py``.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from crashd.api import wire

schemathesis = pytest.importorskip("schemathesis")

import requests  # noqa: E402  (schemathesis' own dependency)
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.config import SchemathesisConfig  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from crashd.api.config import SETTINGS  # noqa: E402
from crashd.api.rest.idempotency import KEY_PATTERN  # noqa: E402
from crashd.api.rest.openapi import build_openapi  # noqa: E402
from crashd.api.security.keys import KeyStore  # noqa: E402
from support.game import short_rounds_chain  # noqa: E402
from support.servers import PYTHON, REPO, build_app, make_config  # noqa: E402

EXAMPLES = int(os.environ.get("CRASHD_SCHEMATHESIS_EXAMPLES", "40"))
"""Fuzzed cases per operation (schemathesis' default is 100); raise it for a thorough
run: ``CRASHD_SCHEMATHESIS_EXAMPLES=1000 pytest tests/rest/test_schemathesis.py``."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]

SEEN: collections.Counter[tuple[str, str, int]] = collections.Counter()
"""(method, path, status) of every response, to show what the run reached."""

FUZZED: set[str] = set()
"""Operations the parametrized test has run."""

SIGNING: list[bool] = []
"""Whether this server signs writes (set once the server is up)."""

SETTING_NAMES = {s.name for s in SETTINGS}
GENEROUS_RATE_LIMITS = {
    # Schemathesis sends thousands of requests a minute with one key: a rate limit is
    # not what this test is about (tests/security/test_security* test 429 itself).
    "rate_limit_read": 10**7,
    "rate_limit_write": 10**7,
    "rate_limit_feed": 10**7,
    "rate_limit_anonymous": 10**7,
}


@dataclass
class Crashd:
    url: str
    key: str
    session: requests.Session

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


class SigningSession(requests.Session):
    """Signs money-moving requests the way a partner's client does: over the exact
    method, path with query, body bytes and Idempotency-Key, as they leave the client.
    Only requests that carry all three generated signature headers are signed (the
    generated values are replaced); the rest go out as generated."""

    def __init__(self, signing_secret: str | None) -> None:
        super().__init__()
        self.signing_secret = signing_secret
        self.sent = 0

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        key = request.headers.get("Idempotency-Key")
        if isinstance(key, str) and KEY_PATTERN.fullmatch(key):
            # Generated keys repeat ("0", "00", …): a repeat with another body is a
            # correct 422 idempotency_key_reused that would hide the route's own logic.
            # Valid keys are made unique; invalid ones go out as generated.
            self.sent += 1
            request.headers["Idempotency-Key"] = f"{key[:200]}-{self.sent}"
        if self.signing_secret:
            self._sign(request)
        response = super().send(request, **kwargs)
        path = (request.path_url or "").split("?")[0]
        SEEN[
            (
                request.method or "",
                path if path.count("/") < 5 else path.rsplit("/", 1)[0] + "/…",
                response.status_code,
            )
        ] += 1
        return response

    def _sign(self, request: requests.PreparedRequest) -> None:
        from crashd.api.security import signing

        names = (wire.TIMESTAMP_HEADER, wire.NONCE_HEADER, wire.SIGNATURE_HEADER)
        if not all(name in request.headers for name in names):
            return
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        key = request.headers.get(wire.IDEMPOTENCY_HEADER, "")
        if isinstance(key, bytes):
            key = key.decode("latin-1")
        headers = signing.sign_request(
            self.signing_secret or "",
            request.method or "GET",
            request.path_url,
            body,
            key,
            int(time.time()),
        )
        for name in names:
            request.headers[name] = headers[name]


def _server_args(tmp: Path) -> list[str]:
    args = [
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--feed-port",
        "0",
        "--database",
        str(tmp / "crashd.sqlite3"),
        "--chain-file",
        str(tmp / "crashd-chain.json"),
        "--chain-length",
        "2000",
        "--betting-ms",
        "400",
        "--pause-ms",
        "200",
        "--synchronous",
        "NORMAL",
        "--log-level",
        "warning",
        "--graceful-timeout",
        "2",
        "--stop-wait-s",
        "1",
    ]
    for name, value in GENEROUS_RATE_LIMITS.items():
        if name in SETTING_NAMES:
            args += ["--" + name.replace("_", "-"), str(value)]
    if "psp_secrets_file" in SETTING_NAMES:
        # A configured PSP endpoint: unsigned events are then refused (4xx), not 503.
        secrets_file = tmp / "psp-secrets"
        secrets_file.write_text("whsec_schemathesis_" + "0" * 32 + "\n")
        secrets_file.chmod(0o600)
        args += ["--psp-secrets-file", str(secrets_file)]
    return args


@pytest.fixture(scope="module")
def crashd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crashd]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    short_rounds_chain(tmp / "crashd-chain.json")  # a real chain whose first rounds crash below 2x
    store = KeyStore(tmp / "crashd.sqlite3")
    try:
        created = store.create(
            "sandbox",
            "read:game_state,read:balance,write:bet",
            partner_id="acme",
            label="schemathesis",
        )
    finally:
        store.close()
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    log = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        [PYTHON, "-m", "crashd.api", "serve", *_server_args(tmp)],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until ready (or the process dies)
        assert line.startswith("crashd: listening on "), (line, (tmp / "server.log").read_text())
        url = line.split()[-1]
        signing_secret = getattr(created, "signing_secret", None) or None
        SIGNING.append(signing_secret is not None)
        session = SigningSession(signing_secret)
        yield Crashd(url=url, key=created.secret, session=session)
        session.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    errors = [
        line
        for line in (tmp / "server.log").read_text().splitlines()
        if "unhandled error" in line or "Traceback" in line
    ]
    assert not errors, "the server logged errors:\n" + "\n".join(errors)


def _document() -> dict[str, Any]:
    """The OpenAPI document of an app built exactly as ``crashd serve`` builds it (the
    routes and their contract records; nothing runs). Needed at import, because
    schemathesis makes one test per operation at collection time;
    :func:`test_served_document_is_the_tested_one` checks that the real server serves
    this very document."""
    with tempfile.TemporaryDirectory() as tmp:
        under_test = build_app(make_config(Path(tmp), chain_length=10))
        try:
            return build_openapi(under_test.app)
        finally:
            under_test.services.close()


DOCUMENT = _document()
schema = schemathesis.openapi.from_dict(
    DOCUMENT,
    config=SchemathesisConfig.from_dict(
        {
            "generation": {"mode": "all"},
            "seed": 20261124,
        }
    ),
)


def test_served_document_is_the_tested_one(crashd: Crashd) -> None:
    served = requests.get(crashd.url + "/api/v1/openapi.json", timeout=10)
    assert served.status_code == 200
    assert served.json() == DOCUMENT


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_response_is_documented(case: Any, crashd: Crashd) -> None:
    FUZZED.add(case.operation.label)
    case.call_and_validate(
        base_url=crashd.url,
        session=crashd.session,
        headers=crashd.headers,
        checks=CHECKS,
        timeout=15,
    )


class Lifecycle:
    """Explicit requests, validated by schemathesis with the same checks: the success
    answers of the money routes, which random data rarely reaches (a generated user has
    no money, a generated hold or ticket does not exist)."""

    DUMMY_SIGNATURE = {
        "X-Crashd-Timestamp": "0",
        "X-Crashd-Nonce": "0" * 16,
        "X-Crashd-Signature": "0" * 64,
    }

    def __init__(self, crashd: Crashd) -> None:
        self.crashd = crashd

    def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        path_parameters: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        operation = schema[path][method]
        names = {p.name for p in operation.iter_parameters()}
        sent = dict(headers or {})
        if "Idempotency-Key" in names:
            sent["Idempotency-Key"] = uuid.uuid4().hex
        if "X-Crashd-Signature" in names:
            sent.update(self.DUMMY_SIGNATURE)  # replaced by a real signature on the way out
        kwargs: dict[str, Any] = {
            "headers": sent,
            "query": query,
            "path_parameters": path_parameters,
        }
        if body is not None:
            kwargs["body"] = body
            kwargs["media_type"] = "application/json"
        case = operation.Case(**kwargs)
        return case.call_and_validate(
            base_url=self.crashd.url,
            session=self.crashd.session,
            headers=self.crashd.headers,
            checks=CHECKS,
            timeout=15,
        )


def test_lifecycle_responses_match_the_document(crashd: Crashd) -> None:
    api = Lifecycle(crashd)
    user = "lifecycle-" + uuid.uuid4().hex[:8]
    assert (
        api.call(
            "POST", "/api/v1/sandbox/faucet", body={"user_id": user, "amount": 100_000}
        ).status_code
        == 201
    )
    assert api.call("GET", "/api/v1/user/balance", query={"user_id": user}).status_code == 200
    hold = api.call("POST", "/api/v1/bets/reserve", body={"user_id": user, "amount": 1_000}).json()
    assert (
        api.call(
            "POST", "/api/v1/bets/release", body={"user_id": user, "hold_id": hold["hold_id"]}
        ).status_code
        == 200
    )
    # Bets until one has been cashed out (a crash before the cashout answers too_late: 409).
    outcomes = []
    for _ in range(20):
        hold = api.call(
            "POST", "/api/v1/bets/reserve", body={"user_id": user, "amount": 1_000}
        ).json()
        placed = api.call(
            "POST",
            "/api/v1/bets/confirm",
            body={"user_id": user, "hold_id": hold["hold_id"], "auto_cashout": 100_000},
        ).json()
        ticket = {"ticket_id": placed["ticket_id"]}
        assert (
            api.call("GET", "/api/v1/bets/{ticket_id}", path_parameters=ticket).status_code == 200
        )
        api.call(
            "PUT",
            "/api/v1/bets/{ticket_id}/auto-cashout",
            path_parameters=ticket,
            body={"user_id": user, "target": None},
        )  # 200 while betting, else 409 round_closed
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            r = api.call(
                "POST",
                "/api/v1/bets/{ticket_id}/cashout",
                path_parameters=ticket,
                body={"user_id": user},
            )
            if r.status_code != 409 or r.json()["code"] != "round_not_running":
                break
            time.sleep(0.05)
        outcomes.append(r.status_code)
        if r.status_code == 200:
            break
    assert 200 in outcomes, outcomes
    assert (
        api.call("GET", "/api/v1/user/bets", query={"user_id": user, "limit": 5}).status_code == 200
    )
    # Finished rounds, then revalidation: 304 is documented, with the validators as parameters.
    deadline = time.monotonic() + 60
    while True:  # the chain's first rounds crash below 2x: a finished round comes soon
        rounds = api.call("GET", "/api/v1/game/rounds", query={"limit": 3})
        assert rounds.status_code == 200
        if rounds.json()["rounds"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rounds.json()["rounds"], rounds.text
    again = api.call(
        "GET",
        "/api/v1/game/rounds",
        query={"limit": 3},
        headers={"If-None-Match": rounds.headers["etag"][0]},
    )
    assert again.status_code in (200, 304)  # 200 if a round finished in between
    round_id = {"round_id": rounds.json()["rounds"][0]["round_id"]}
    one = api.call("GET", "/api/v1/game/rounds/{round_id}", path_parameters=round_id)
    assert one.status_code == 200
    assert (
        api.call(
            "GET",
            "/api/v1/game/rounds/{round_id}",
            path_parameters=round_id,
            headers={"If-None-Match": one.headers["etag"][0]},
        ).status_code
        == 304
    )
    assert (
        api.call(
            "GET",
            "/api/v1/game/rounds/{round_id}",
            path_parameters=round_id,
            headers={"If-Modified-Since": one.headers["last-modified"][0]},
        ).status_code
        == 304
    )
    assert api.call("POST", "/api/v1/feed/token").status_code == 200


def test_zz_the_run_reached_the_logic() -> None:
    """After the runs above: authenticated reads succeeded, and so did signed writes
    (not just their 401/422 refusals). Prints what was sent (``pytest -s``)."""
    if len(FUZZED) < sum(len(methods) for methods in DOCUMENT["paths"].values()):
        pytest.skip("meaningful only after every operation was fuzzed above")
    ok = {(method, path) for (method, path, status), _ in SEEN.items() if 200 <= status < 300}
    print(f"\n{sum(SEEN.values())} requests; statuses per operation:")
    by_op: dict[tuple[str, str], collections.Counter[int]] = collections.defaultdict(
        collections.Counter
    )
    for (method, path, status), n in SEEN.items():
        by_op[(method, path)][status] += n
    for (method, path), statuses in sorted(by_op.items()):
        if path.startswith("/api/v1/") and "%" not in path:
            print(
                f"  {method:6} {path:32} "
                + " ".join(f"{s}x{n}" for s, n in sorted(statuses.items()))
            )
    assert ("GET", "/api/v1/game/state") in ok
    assert ("GET", "/api/v1/user/balance") in ok
    if any(SIGNING):
        assert ("POST", "/api/v1/sandbox/faucet") in ok


# --- regressions found by the runs above ---------------------------------------------


def test_round_id_beyond_the_integer_range_is_404_not_500(crashd: Crashd) -> None:
    """A round id past 2^53 - 1 overflowed SQLite's INTEGER (500); it is now outside the
    route's documented range, so it is a 404 problem like any unknown path."""
    for round_id in (37519920483312938778624, 2**63, 2**53):
        r = requests.get(
            f"{crashd.url}/api/v1/game/rounds/{round_id}", headers=crashd.headers, timeout=10
        )
        assert r.status_code == 404, r.text
        assert r.headers["Content-Type"] == "application/problem+json"
    param = DOCUMENT["paths"]["/api/v1/game/rounds/{round_id}"]["get"]["parameters"][0]
    assert param["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**53 - 1}


def test_domain_refusals_are_documented() -> None:
    """404 unknown_ticket / unknown_hold (and the path's own 404), 503 when the engine or
    ledger is unavailable: each route's own problem codes are in its responses."""
    paths = DOCUMENT["paths"]
    expected = {
        ("/api/v1/bets/confirm", "post"): {"404", "409", "422", "503"},
        ("/api/v1/bets/release", "post"): {"404", "409", "503"},
        ("/api/v1/bets/{ticket_id}", "get"): {"404", "503"},
        ("/api/v1/bets/{ticket_id}/cashout", "post"): {"404", "409", "503"},
        ("/api/v1/bets/{ticket_id}/auto-cashout", "put"): {"404", "409", "422", "503"},
        ("/api/v1/game/rounds/{round_id}", "get"): {"404", "503"},
        ("/api/v1/game/state", "get"): {"503"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, method, sorted(responses))
    assert (
        "unknown_hold" in paths["/api/v1/bets/confirm"]["post"]["responses"]["404"]["description"]
    )

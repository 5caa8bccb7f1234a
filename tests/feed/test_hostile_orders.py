"""Hostile orders on the feed connection (Hypothesis, bounded), against a real server.

One server for the module (in a background thread, so Hypothesis' synchronous tests can
drive it over a synchronous WebSocket client); one user, ``hal``, with a user-scoped
token. Every message — an order with random fields, types and values, or garbage —
must get exactly one answer (a ``result`` below 500, or an ``error``), or a close with a
documented code; and money must stay byte for byte as it was, unless the answer was an
accepted bet (the only thing a valid order here can do), which becomes the new baseline.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from crashd.api import wire
from support.game import short_rounds_chain
from support.security import LogScan, ThreadServer, money_fingerprint, signed_headers
from support.servers import SIGNING_SECRETS, make_config, make_key

pytestmark = pytest.mark.usefixtures("logscan")

SCOPES = "read:game_state,read:balance,write:bet"
CLOSE_CODES = {wire.CloseCode.INVALID_MESSAGES, wire.CloseCode.RATE_LIMITED}
"""Closes a hostile client may earn: too many bad messages, too many messages."""


@dataclass
class Target:
    url: str
    ws_url: str
    token: str
    database: Any
    baseline: Any
    ws: ClientConnection | None = None
    answers: dict[str, int] = field(default_factory=dict)

    def connection(self) -> ClientConnection:
        if self.ws is None:
            # Entered by hand: the connection outlives one example (closed in teardown).
            ws = connect(self.ws_url, open_timeout=10, close_timeout=2).__enter__()
            ws.send(json.dumps({"type": "auth", "token": self.token}))
            while json.loads(ws.recv(timeout=10))["type"] != "welcome":
                pass
            self.ws = ws
        return self.ws

    def answer(self, message: str) -> dict[str, Any] | None:
        """Send one message; its one answer (``None``: the server closed the connection
        with a documented code, and the next call reconnects)."""
        ws = self.connection()
        try:
            ws.send(message)
            while True:
                reply = json.loads(ws.recv(timeout=20))
                if reply["type"] == "heartbeat":
                    ws.send(json.dumps({"type": "ack", "id": reply["id"]}))
                elif reply["type"] in ("result", "error"):
                    return reply  # type: ignore[no-any-return]
        except ConnectionClosed as closed:
            self.ws = None
            assert closed.rcvd is not None and closed.rcvd.code in CLOSE_CODES, closed
            return None


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory, logscan: LogScan) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("hostile-orders")
    config = make_config(
        tmp,
        chain_length=2000,
        # One long betting window: bets are accepted, cash-outs are refused, no round
        # settles under the test's feet (a settlement would move money by itself).
        betting_ms=600_000,
        pause_ms=200,
        rate_limit_read=10**6,
        rate_limit_write=10**6,
    )
    short_rounds_chain(config.chain_file)
    with ThreadServer(config) as info, httpx.Client(base_url=info.url, timeout=20) as client:
        _, key = make_key(config, SCOPES)
        logscan.remember(key, SIGNING_SECRETS[key])
        for path, body in (
            ("/api/v1/sandbox/faucet", {"user_id": "hal", "amount": 100}),
            ("/api/v1/feed/user-token", {"user_id": "hal", "ttl_s": 3600}),
        ):
            raw = json.dumps(body).encode()
            r = client.post(
                path,
                content=raw,
                headers=signed_headers(key, SIGNING_SECRETS[key], "POST", path, raw, path),
            )
            assert r.status_code in (200, 201), r.text
        token = r.json()
        logscan.remember(token["token"])
        target = Target(info.url, token["ws_url"], token["token"], config.database, None)
        target.baseline = money_fingerprint(config.database)
        yield target
        if target.ws is not None:
            target.ws.close()
        assert money_fingerprint(config.database) == target.baseline


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40),
)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = ("id", "key", "user_id", "amount", "auto_cashout", "ticket_id", "target", "signature")


@st.composite
def orders(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["bet", "cashout", "auto_cashout", "bet", "bet"]))
    message: dict[str, Any] = {"type": kind}
    # Mostly a well-formed key and id, so most examples get past the envelope and reach
    # the route's own validation and the ledger.
    enveloped = bool(draw(st.integers(0, 4)))
    if enveloped:
        message["key"] = draw(st.uuids()).hex
        message["id"] = draw(st.integers(0, 10**6))
    for name in FIELDS:
        if enveloped and name in ("key", "id"):
            continue  # kept well-formed: a random one is the envelope's 400 every time
        if draw(st.booleans()):
            message[name] = draw(
                st.one_of(
                    JSONISH,
                    st.integers(min_value=1, max_value=200),  # plausible amounts/targets
                    st.sampled_from(["hal", "other", "t_" + "0" * 24, "", "k" * 300]),
                )
            )
    if draw(st.booleans()):
        message[draw(st.text(min_size=1, max_size=10))] = draw(JSONISH)
    return json.dumps(message)


GARBAGE = st.one_of(
    st.text(max_size=200),
    st.just("[" * 3000),
    st.just('{"type": "bet", "amount": 1e999}'),
    st.just('{"type": "bet", "id": 1, "key": "a", "amount": 1, "amount": 2}'),
    st.just('{"type": "bet", "id": 1, "key": "\\ud800", "amount": 1}'),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(message=st.one_of(orders(), GARBAGE))
# One order that always reaches the route's own validation, whatever the draws are.
@example(message=json.dumps({"type": "bet", "key": "0" * 32, "id": 1, "amount": -5}))
def test_hostile_orders_get_one_answer_and_move_no_money(target: Target, message: str) -> None:
    reply = target.answer(message)
    if reply is not None and reply["type"] == "result":
        assert reply["status"] < 500, reply
        target.answers[str(reply["status"])] = target.answers.get(str(reply["status"]), 0) + 1
        if reply["status"] == 201:
            # An accepted bet (its stake taken) or its stored reply: the new baseline.
            target.baseline = money_fingerprint(target.database)
    assert money_fingerprint(target.database) == target.baseline, (message, reply)


def test_the_fuzz_reached_the_order_paths(target: Target) -> None:
    """Runs after the property (module order): it must have met refusals from the
    route, not only protocol errors, or it fuzzed nothing that matters."""
    assert target.answers.get("422", 0) > 0, target.answers

"""The seamless wallet's pure core: how answers are read, the signer, the backoff and
its horizon, the circuit breaker's table (Hypothesis where a rule is a property)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crashd.engine.reasons import CATALOGUE
from crashd.engine.wallet import contract
from crashd.engine.wallet.breaker import TRANSITIONS, Breaker, BreakerState
from crashd.engine.wallet.contract import Call, Outcome, interpret
from crashd.engine.wallet.retry import Backoff
from crashd.engine.wallet.signing import HmacSha256Signer, make_signer, string_to_sign

DEBIT = contract.debit("dbt_1", "alice", "EUR", 500, 7, "t_1")
ROLLBACK = contract.rollback("rbk_1", "dbt_1", "alice", "EUR", 500, 7, "t_1")


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def test_paths_and_canonical_bodies() -> None:
    assert [c.path for c in Call] == [
        "/session/verify",
        "/balance",
        "/debit",
        "/credit",
        "/rollback",
    ]
    assert DEBIT.encode() == (
        b'{"amount":500,"bet_id":"t_1","currency":"EUR","player_id":"alice",'
        b'"round_id":7,"tx_id":"dbt_1"}'
    )
    credit = contract.credit("crd_1", "dbt_1", "alice", "EUR", 0, 7, "t_1", None)
    assert json.loads(credit.encode())["multiplier"] is None
    assert contract.credit_id("dbt_ab") == "crd_ab" and contract.rollback_id("dbt_ab") == "rbk_ab"
    assert contract.debit_id("t_ab") == "dbt_ab"


def test_the_log_never_keeps_a_launch_token() -> None:
    logged = contract.session_verify("secret-launch-token").logged()
    assert "secret-launch-token" not in logged and "sha256:" in logged


@pytest.mark.parametrize(
    ("status", "raw", "signed", "outcome", "code"),
    [
        (200, body(status="ok", tx_id="dbt_1", balance=10), True, Outcome.OK, None),
        (200, body(status="ok", tx_id="dbt_2"), True, Outcome.UNKNOWN, "bad_body"),
        (
            402,
            body(status="error", code="insufficient_funds", balance=3),
            True,
            Outcome.REFUSED,
            "insufficient_funds",
        ),
        (200, body(status="error", code="limit_reached"), True, Outcome.REFUSED, "limit_reached"),
        (503, body(status="ok"), True, Outcome.UNKNOWN, "http_503"),
        (500, b"", True, Outcome.UNKNOWN, "http_500"),
        (200, b"<html>", True, Outcome.UNKNOWN, "bad_body"),
        (200, b"[1]", True, Outcome.UNKNOWN, "bad_body"),
        (200, body(status="ok"), False, Outcome.UNKNOWN, "bad_signature"),
        (404, body(detail="nope"), True, Outcome.UNKNOWN, "bad_body"),
        (200, body(status="maybe"), True, Outcome.UNKNOWN, "bad_body"),
    ],
)
def test_answers(status: int, raw: bytes, signed: bool, outcome: Outcome, code: str | None) -> None:
    answer = interpret(DEBIT, status, raw, signed)
    assert (answer.outcome, answer.code) == (outcome, code)


def test_a_rollback_of_an_unknown_debit_is_a_success() -> None:
    answer = interpret(ROLLBACK, 404, body(status="error", code="unknown_tx"), True)
    assert answer.outcome is Outcome.OK
    # ...but for a debit that code is a refusal like any other.
    assert (
        interpret(DEBIT, 404, body(status="error", code="unknown_tx"), True).outcome
        is Outcome.REFUSED
    )


def test_every_refusal_maps_to_a_catalogued_code() -> None:
    for wallet_code, ours in contract.WALLET_CODES.items():
        assert ours in CATALOGUE, wallet_code
    assert contract.problem_code("something_new") == "wallet_refused"
    answer = interpret(
        DEBIT, 403, body(status="error", code="self_excluded", message="until 2027"), True
    )
    assert answer.problem == "wallet_self_excluded" and answer.message == "until 2027"


@given(st.binary(max_size=200), st.integers(100, 599))
def test_any_bytes_are_an_answer_never_an_exception(raw: bytes, status: int) -> None:
    assert interpret(DEBIT, status, raw, True).outcome in Outcome


VERIFY = contract.session_verify("launch-1")


@pytest.mark.parametrize(
    ("limits", "max_stake"),
    [
        ({"max_stake": 500}, 500),
        ({"max_stake": 500, "max_loss": 9}, 500),  # what crashd does not apply is ignored
        ({}, None),
        ({"max_stake": 0}, None),
        ({"max_stake": -5}, None),
        ({"max_stake": 5.5}, None),
        ({"max_stake": True}, None),
        ({"max_stake": "500"}, None),
        ({"max_stake": 10**30}, None),
        ("500", None),
        (None, None),
    ],
)
def test_session_verify_may_give_limits(limits: object, max_stake: int | None) -> None:
    raw = body(status="ok", player_id="kim", currency="EUR", balance=10, limits=limits)
    answer = interpret(VERIFY, 200, raw, True)
    assert contract.limits_of(answer).max_stake == max_stake
    assert contract.limits_of(answer).to_json() == {"max_stake": max_stake}


@given(st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(max_size=5)))
def test_any_limits_are_read_never_an_exception(limits: dict[str, object]) -> None:
    raw = body(status="ok", player_id="kim", currency="EUR", limits=limits)
    got = contract.limits_of(interpret(VERIFY, 200, raw, True)).max_stake
    assert got is None or (type(got) is int and got == limits.get("max_stake") and got >= 1)


def test_the_hmac_signer() -> None:
    signer = HmacSha256Signer("wallet-secret-0123456789")
    assert string_to_sign(1767225600, "/w/debit", b"{}") == b"1767225600\n/w/debit\n{}"
    headers = signer.sign(1767225600, "/w/debit", b'{"a":1}')
    assert headers["Crashd-Timestamp"] == "1767225600"
    # Known answer: HMAC-SHA256("wallet-secret-0123456789", "1767225600\n/w/debit\n{"a":1}").
    import hashlib
    import hmac

    expected = hmac.new(
        b"wallet-secret-0123456789", b'1767225600\n/w/debit\n{"a":1}', hashlib.sha256
    ).hexdigest()
    assert headers["Crashd-Signature"] == expected
    assert signer.verify(headers, "/w/debit", b'{"a":1}', 1767225600)
    assert not signer.verify(headers, "/w/credit", b'{"a":1}', 1767225600)
    assert not signer.verify(headers, "/w/debit", b'{"a":2}', 1767225600)
    assert not signer.verify(headers, "/w/debit", b'{"a":1}', 1767225600 + 301)
    assert not signer.verify({}, "/w/debit", b"", 0)
    assert not signer.verify(
        {**headers, "Crashd-Signature": "x"}, "/w/debit", b'{"a":1}', 1767225600
    )
    lower = {k.lower(): v for k, v in headers.items()}
    assert signer.verify(lower, "/w/debit", b'{"a":1}', 1767225600)
    with pytest.raises(ValueError, match="unknown wallet signer"):
        make_signer("rsa-sha256", "x" * 20)
    with pytest.raises(ValueError, match="16 characters"):
        HmacSha256Signer("short")


@given(st.integers(1, 200), st.floats(0, 1, exclude_max=True))
def test_backoff_grows_with_jitter_within_bounds(attempt: int, draw: float) -> None:
    b = Backoff(base_ms=500, cap_ms=300_000)
    d = min(300_000, 500 * 2 ** min(attempt - 1, 40))
    assert d // 2 <= b.delay_ms(attempt, draw) <= d


def test_backoff_stops_at_the_horizon() -> None:
    b = Backoff(base_ms=1000, cap_ms=60_000)
    assert b.next_attempt_ms(1, 0, 10_000, 0.0) == 500
    assert b.next_attempt_ms(5, 0, 9_000, 0.0) == 8_000
    assert b.next_attempt_ms(5, 0, 7_000, 0.0) is None  # 16 s / 2 = 8 s > 7 s
    with pytest.raises(ValueError):
        Backoff(base_ms=0)


def test_the_breaker_opens_cools_down_probes_and_closes() -> None:
    b = Breaker(threshold=3, cooldown_ms=1000, max_cooldown_ms=4000)
    for t in range(2):
        assert b.allow(t).allowed
        b.record(t, False, "debit: timeout")
    b.record(2, True)  # an answer (even a refusal) resets the count
    for t in range(3, 6):
        b.record(t, False, "debit: timeout")
    assert b.state is BreakerState.OPEN
    verdict = b.allow(100)
    assert not verdict.allowed and "3 call(s) in a row" in verdict.reason
    assert verdict.retry_after_ms == 905
    probe = b.allow(1005)
    assert probe.allowed and probe.probe and b.state is BreakerState.HALF_OPEN
    assert not b.allow(1006).allowed  # one probe at a time
    b.record(1007, False, "debit: http_503", probe=True)
    assert b.state is BreakerState.OPEN and b.status(1007).resumes_at_ms == 1007 + 2000
    probe = b.allow(3007)
    assert probe.probe
    b.release(True)  # the probe call was not made: no verdict
    probe = b.allow(3008)
    b.record(3009, True, probe=True)
    assert b.state is BreakerState.CLOSED and b.allow(3010).allowed
    assert b.trips == 2


@given(st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=100))
def test_the_breaker_only_moves_along_its_table(steps: list[tuple[int, bool]]) -> None:
    b = Breaker(threshold=2, cooldown_ms=10, max_cooldown_ms=40)
    now = 0
    for dt, ok in steps:
        now += dt
        before = b.state
        verdict = b.allow(now)
        if verdict.allowed:
            b.record(now, ok, "x", probe=verdict.probe)
        after = b.state
        if after is not before:
            # Up to two table steps in one allow+record (open → half_open → closed/open).
            reachable = set(TRANSITIONS[before].values())
            reachable |= {s for mid in reachable for s in TRANSITIONS[mid].values()}
            assert after in reachable
        if b.state is BreakerState.OPEN:
            assert not b.allow(now).allowed or now >= (b.status(now).resumes_at_ms or 0)

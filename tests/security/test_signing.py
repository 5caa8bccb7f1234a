"""Signed requests: the canonical string, and every way a request is refused."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crashd.api.security.signing import (
    NonceCache,
    SignatureError,
    SignedRequest,
    sign_request,
    signature,
    string_to_sign,
    verify_request,
)

SECRET = "cs_test_4f3c2b1a0e9d8c7b6a5f4e3d2c1b0a99"
BODY = b'{"user_id":"alice","amount":1000}'
PATH = "/api/v1/bets/reserve"
NOW = 1_800_000_000


def signed(
    body: bytes = BODY,
    *,
    ts: int = NOW,
    nonce: str = "n0nce-0123456789ab",
    key: str = "idem-1",
    secret: str = SECRET,
    path: str = PATH,
) -> SignedRequest:
    headers = sign_request(secret, "POST", path, body, key, ts, nonce)
    return SignedRequest("POST", path, body, headers)


def test_worked_example_is_stable() -> None:
    # The README's worked example: these exact inputs give this exact string and signature.
    canonical = string_to_sign("POST", PATH, str(NOW), "n0nce-0123456789ab", BODY, "idem-1")
    assert canonical == (
        f"POST\n{PATH}\n{NOW}\nn0nce-0123456789ab\n{hashlib.sha256(BODY).hexdigest()}\nidem-1"
    )
    assert signature(SECRET, canonical) == signed().headers["X-Crashd-Signature"]


def test_valid_request_passes_once() -> None:
    nonces = NonceCache()
    verify_request(signed(), "key1", [SECRET], NOW, nonces)
    with pytest.raises(SignatureError) as replay:
        verify_request(signed(), "key1", [SECRET], NOW + 1, nonces)
    assert replay.value.code == "nonce_reused"
    # The same nonce under another key is a different client: allowed.
    verify_request(signed(), "key2", [SECRET], NOW, nonces)


@pytest.mark.parametrize(
    "mutate, code",
    [
        (
            lambda r: SignedRequest(r.method, r.path_with_query, r.body + b" ", r.headers),
            "invalid_signature",
        ),
        (
            lambda r: SignedRequest(r.method, r.path_with_query + "?x=1", r.body, r.headers),
            "invalid_signature",
        ),
        (lambda r: SignedRequest("PUT", r.path_with_query, r.body, r.headers), "invalid_signature"),
        (
            lambda r: SignedRequest(
                r.method, r.path_with_query, r.body, {**r.headers, "Idempotency-Key": "idem-2"}
            ),
            "invalid_signature",
        ),
        (
            lambda r: SignedRequest(
                r.method,
                r.path_with_query,
                r.body,
                {k: v for k, v in r.headers.items() if k != "X-Crashd-Signature"},
            ),
            "signature_missing",
        ),
        (
            lambda r: SignedRequest(
                r.method,
                r.path_with_query,
                r.body,
                {k: v for k, v in r.headers.items() if k != "Idempotency-Key"},
            ),
            "idempotency_key_required",
        ),
        (
            lambda r: SignedRequest(
                r.method, r.path_with_query, r.body, {**r.headers, "X-Crashd-Signature": "XYZ"}
            ),
            "signature_malformed",
        ),
        (
            lambda r: SignedRequest(
                r.method, r.path_with_query, r.body, {**r.headers, "X-Crashd-Timestamp": "-5"}
            ),
            "signature_malformed",
        ),
        (
            lambda r: SignedRequest(
                r.method, r.path_with_query, r.body, {**r.headers, "X-Crashd-Nonce": "short"}
            ),
            "signature_malformed",
        ),
        (
            lambda r: SignedRequest(
                r.method,
                r.path_with_query,
                r.body,
                {**r.headers, "X-Crashd-Timestamp": str(NOW + 1)},
            ),
            "invalid_signature",
        ),
    ],
)
def test_tampering_is_refused(mutate, code: str) -> None:  # type: ignore[no-untyped-def]
    nonces = NonceCache()
    with pytest.raises(SignatureError) as err:
        verify_request(mutate(signed()), "key1", [SECRET], NOW, nonces)
    assert err.value.code == code
    assert len(nonces) == 0  # a refused request never consumes a nonce


def test_time_window_both_directions() -> None:
    nonces = NonceCache()
    verify_request(signed(ts=NOW - 30, nonce="a" * 16), "k", [SECRET], NOW, nonces)
    verify_request(signed(ts=NOW + 30, nonce="b" * 16), "k", [SECRET], NOW, nonces)
    with pytest.raises(SignatureError) as old:
        verify_request(signed(ts=NOW - 31, nonce="c" * 16), "k", [SECRET], NOW, nonces)
    assert old.value.code == "signature_expired"
    with pytest.raises(SignatureError) as future:
        verify_request(signed(ts=NOW + 31, nonce="d" * 16), "k", [SECRET], NOW, nonces)
    assert future.value.code == "signature_from_future"


def test_rotation_overlap_accepts_either_secret() -> None:
    old, new = "old-secret", "new-secret"
    nonces = NonceCache()
    verify_request(signed(secret=old, nonce="e" * 16), "k", [old, new], NOW, nonces)
    verify_request(signed(secret=new, nonce="f" * 16), "k", [old, new], NOW, nonces)
    with pytest.raises(SignatureError):
        verify_request(signed(secret=old, nonce="g" * 16), "k", [new], NOW, nonces)


def test_nonce_cache_forgets_expired_and_stays_bounded() -> None:
    nonces = NonceCache(max_entries=100)
    for i in range(1000):
        assert nonces.check_and_add("k", f"{i:016d}", expires_at=NOW + 30, now=NOW)
    assert len(nonces) <= 101
    assert nonces.check_and_add("k", "late-nonce-000000", expires_at=NOW + 100, now=NOW + 31)
    assert len(nonces) == 1


@given(st.binary(max_size=300), st.text(min_size=1, max_size=40))
def test_any_body_round_trips(body: bytes, key: str) -> None:
    req = signed(body, key=key, nonce="h" * 20)
    verify_request(req, "k", [SECRET], NOW, NonceCache())

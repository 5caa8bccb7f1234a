"""PSP webhook signatures: Stripe-style header, rotation, tolerance, forgeries."""

from __future__ import annotations

import pytest

from crashd.api.security.webhook import WebhookSignatureError, compute, header_value, verify

BODY = b'{"id":"evt_1","type":"deposit.completed"}'
NOW = 1_800_000_000


def test_valid_and_rotation() -> None:
    assert verify(header_value("s1", NOW, BODY), BODY, ["s1"], NOW) == NOW
    both = f"t={NOW},v1={compute('old', NOW, BODY)},v1={compute('new', NOW, BODY)}"
    assert verify(both, BODY, ["new"], NOW) == NOW
    assert verify(both, BODY, ["old"], NOW) == NOW


@pytest.mark.parametrize(
    "header, code",
    [
        (None, "signature_missing"),
        ("", "signature_missing"),
        ("garbage", "signature_malformed"),
        (f"t={NOW}", "signature_malformed"),
        (f"t=abc,v1={'0' * 64}", "signature_malformed"),
        (f"t={NOW},t={NOW},v1={'0' * 64}", "signature_malformed"),
        (f"t={NOW},v1=XYZ", "signature_malformed"),
        (f"t={NOW},v1={'0' * 64}", "invalid_signature"),
        (f"t={NOW - 301},v1={compute('s1', NOW - 301, BODY)}", "signature_expired"),
        (f"t={NOW + 301},v1={compute('s1', NOW + 301, BODY)}", "signature_expired"),
        ("t=1," + "v1=" + "0" * 64 + "," * 5000, "signature_malformed"),
    ],
)
def test_refusals(header: str | None, code: str) -> None:
    with pytest.raises(WebhookSignatureError) as err:
        verify(header, BODY, ["s1"], NOW)
    assert err.value.code == code


def test_body_tampering() -> None:
    header = header_value("s1", NOW, BODY)
    with pytest.raises(WebhookSignatureError) as err:
        verify(header, BODY.replace(b"evt_1", b"evt_2"), ["s1"], NOW)
    assert err.value.code == "invalid_signature"

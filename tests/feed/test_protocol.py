"""The feed protocol's pure parts: client message parsing and channel rules (the rules of
a connection, rate limit included, are tests/feed/test_session.py)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from crashd.api.feed.access import Principal, channel_denial
from crashd.api.feed.protocol import (
    Ack,
    ClientError,
    Subscribe,
    Unsubscribe,
    parse_client_message,
)
from crashd.api.wire import user_channel

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@given(st.text(max_size=200))
def test_any_text_parses_or_raises_client_error(text: str) -> None:
    try:
        parse_client_message(text)
    except ClientError as err:
        assert err.code and err.message


@given(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["auth", "subscribe", "unsubscribe", "ack", "other"])},
        optional={
            "channels": json_values,
            "id": json_values,
            "token": json_values,
            "resume": json_values,
        },
    )
)
def test_any_json_object_parses_or_raises_client_error(obj: dict[str, Any]) -> None:
    try:
        message = parse_client_message(json.dumps(obj))
    except ClientError as err:
        assert err.code in {
            "bad_json",
            "invalid_message",
            "unknown_type",
            "too_many_channels",
        }
        return
    if isinstance(message, (Subscribe, Unsubscribe)):
        assert message.channels and all(isinstance(c, str) for c in message.channels)


def test_messages_parse_to_what_the_docs_say() -> None:
    sub = parse_client_message(
        '{"type": "subscribe", "channels": ["round_updates", "round_updates"], "id": 2,'
        ' "resume": {"seq": 18231, "epoch": "5f1c9e0a7d3b2c41"}}'
    )
    assert sub == Subscribe(("round_updates",), 2, 18231, "5f1c9e0a7d3b2c41")
    assert parse_client_message('{"type": "ack", "id": 7}') == Ack(7)
    for bad, code in [
        ("[" * 5000, "bad_json"),
        ('{"type": "ack", "id": true}', "invalid_message"),
        ('{"type": "subscribe", "channels": []}', "invalid_message"),
        ('{"type": "subscribe", "channels": ["a"], "resume": {"seq": -1}}', "invalid_message"),
        ('{"type": "subscribe", "channels": ["a"], "id": {"x": 1}}', "invalid_message"),
    ]:
        try:
            parse_client_message(bad)
        except ClientError as err:
            assert err.code == code, bad
        else:
            raise AssertionError(f"{bad[:40]!r} was accepted")


def test_user_channels_belong_to_one_partner_and_need_read_balance() -> None:
    reader = Principal("key_p1", "p1", "sandbox", frozenset({"read:game_state"}))
    full = Principal("key_p1", "p1", "sandbox", frozenset({"read:game_state", "read:balance"}))
    assert channel_denial(reader, "live_multiplier") is None
    assert channel_denial(full, user_channel("p1", "alice")) is None
    assert channel_denial(reader, user_channel("p1", "alice")) == (
        "forbidden_channel",
        "'user:p1:alice' needs the 'read:balance' scope",
    )
    assert channel_denial(full, user_channel("p2", "bob"))[0] == "forbidden_channel"  # type: ignore[index]
    for bad in ("user:", "user:p1", "user::x", "user:p1:", "x" * 300, "Live_multiplier"):
        assert channel_denial(full, bad)[0] == "unknown_channel"  # type: ignore[index]

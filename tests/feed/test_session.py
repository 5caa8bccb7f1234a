"""The feed connection's rules, driven in memory: ``FeedSession`` with no socket, no
clock and no hub. Time is a number the test chooses; the "driver" is a few lines here
that carry out ``Join``/``Leave`` on a set (as the hub does on its subscriber) and
answer ``Verify``, so every rule of docs/feed.md is checked deterministically."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crashd.api.feed import FeedConfig
from crashd.api.feed.access import Principal, channel_denial
from crashd.api.feed.frames import OPCODE_TEXT, decode_server_frame
from crashd.api.feed.protocol import (
    Ack,
    Auth,
    ClientError,
    Subscribe,
    Unsubscribe,
    control,
    parse_client_message,
)
from crashd.api.feed.session import (
    HEARTBEAT_KEY,
    TRANSITIONS,
    Action,
    Binary,
    Close,
    ConnectRefused,
    DriverError,
    Dropped,
    Event,
    FeedSession,
    HeaderCredential,
    Heartbeat,
    InvalidData,
    Join,
    Leave,
    Lost,
    PeerClosed,
    Replayed,
    Resume,
    Revoked,
    Send,
    ShuttingDown,
    State,
    Timer,
    TooBig,
    Verdict,
    Verify,
    describe_session,
)
from crashd.api.wire import LIVE_MULTIPLIER, ROUND_UPDATES, CloseCode, user_channel
from support.servers import REPO

EPOCH = "5f1c9e0a7d3b2c41"
GAME = frozenset({"read:game_state"})
P1 = Principal("key_p1", "p1", "sandbox", GAME | {"read:balance"})
READER = Principal("key_p1", "p1", "sandbox", GAME)
UNSCOPED = Principal("key_p3", "p3", "sandbox", frozenset({"write:bet"}))
CREDENTIALS: dict[str, Principal | None] = {"key-p1": P1, "key-reader": READER, "key-x": UNSCOPED}
ALICE = user_channel("p1", "alice")


def frame_json(data: bytes) -> dict[str, Any]:
    parsed = decode_server_frame(data)
    assert parsed is not None
    opcode, payload, length = parsed
    assert opcode == OPCODE_TEXT and length == len(data), "one whole text frame"
    body = json.loads(payload)
    assert isinstance(body, dict)
    return body


def sent(actions: list[Action]) -> list[dict[str, Any]]:
    return [frame_json(a.data) for a in actions if isinstance(a, Send)]


def error_of(actions: list[Action]) -> dict[str, Any]:
    """The one error the actions answer with (a Send, or the Close's error frame)."""
    frames = [a.data for a in actions if isinstance(a, Send)]
    frames += [a.error for a in actions if isinstance(a, Close) and a.error is not None]
    (error,) = [frame_json(f) for f in frames]
    assert error["type"] == "error"
    return error


@dataclass
class Driver:
    """A session and what its driver would do: the subscriber's channel set, and time."""

    config: FeedConfig = field(default_factory=FeedConfig)
    now: float = 0.0
    heartbeat_id: int = 0
    channels: set[str] = field(default_factory=set)
    session: FeedSession = field(init=False)

    def __post_init__(self) -> None:
        self.session = FeedSession(
            self.config,
            self.now,
            epoch=EPOCH,
            channels=self.channels,
            heartbeat_id=self.heartbeat_id,
        )

    def handle(self, event: Event, at: float | None = None) -> list[Action]:
        if at is not None:
            self.now = at
        actions = self.session.handle(self.now, event)
        for action in actions:  # what the hub does to its subscriber
            if isinstance(action, Join):
                self.channels.update(action.channels)
            elif isinstance(action, Leave):
                self.channels.difference_update(action.channels)
        return actions

    def authenticate(self, principal: Principal = P1, seq: int = 0) -> dict[str, Any]:
        assert self.handle(Auth("key")) == [Verify("key")]
        (welcome,) = sent(self.handle(Verdict(principal, seq)))
        return welcome


def answered_rate_limited(actions: list[Action]) -> bool:
    frames = [a.data for a in actions if isinstance(a, Send)]
    frames += [a.error for a in actions if isinstance(a, Close) and a.error is not None]
    return any(frame_json(f).get("code") == "rate_limited" for f in frames)


def closed_with(actions: list[Action]) -> Close:
    assert actions and isinstance(actions[-1], Close), actions
    assert not any(isinstance(a, Close) for a in actions[:-1])
    return actions[-1]


# -- authentication -------------------------------------------------------------------


def test_auth_asks_the_driver_to_verify_and_a_valid_verdict_gets_welcome() -> None:
    d = Driver(FeedConfig(heartbeat_interval=15, heartbeat_timeout=45, max_message_bytes=4096))
    assert d.session.state is State.AWAITING_AUTH
    assert d.handle(Auth("ft_token")) == [Verify("ft_token")]
    assert d.session.state is State.AUTHENTICATING and d.session.principal is None
    assert sent(d.handle(Verdict(P1, 18230), at=1.0)) == [
        {
            "type": "welcome",
            "epoch": EPOCH,
            "seq": 18230,
            "partner_id": "p1",
            "environment": "sandbox",
            "heartbeat_interval_ms": 15000,
            "heartbeat_timeout_ms": 45000,
            "max_message_bytes": 4096,
        }
    ]
    assert d.session.state is State.AUTHENTICATED and d.session.principal == P1
    assert d.session.next_deadline() is None, "no auth timeout once authenticated"


def test_a_header_credential_is_verified_the_same_way() -> None:
    d = Driver()
    assert d.handle(HeaderCredential("key-p1")) == [Verify("key-p1")]
    assert sent(d.handle(Verdict(P1, 0)))[0]["type"] == "welcome"
    # Sent again as a message, it is an error, not a second authentication.
    assert error_of(d.handle(Auth("key-p1"))) == {
        "type": "error",
        "code": "invalid_message",
        "message": "already authenticated",
    }


@pytest.mark.parametrize(
    "message", [Subscribe((LIVE_MULTIPLIER,), 1), Unsubscribe((LIVE_MULTIPLIER,)), Ack(1)]
)
def test_anything_before_auth_closes_with_4001(message: Event) -> None:
    d = Driver()
    close = closed_with(d.handle(message))
    assert (close.code, close.reason) == (CloseCode.UNAUTHORIZED, "not authenticated")
    assert error_of([close])["code"] == "unauthorized"
    assert d.session.state is State.CLOSED
    assert d.handle(Auth("key-p1")) == [], "a closed session does nothing"


@pytest.mark.parametrize(
    ("verdict", "code", "reason", "error"),
    [
        (Verdict(None, 0), CloseCode.UNAUTHORIZED, "invalid credential", "unauthorized"),
        (Verdict(UNSCOPED, 0), CloseCode.FORBIDDEN, "missing scope read:game_state", "forbidden"),
        (ConnectRefused(), CloseCode.TRY_AGAIN_LATER, "connect rate limited", "rate_limited"),
    ],
)
def test_refused_credentials_close_with_their_code(
    verdict: Event, code: int, reason: str, error: str
) -> None:
    d = Driver()
    d.handle(Auth("whatever"))
    close = closed_with(d.handle(verdict))
    assert (close.code, close.reason, error_of([close])["code"]) == (code, reason, error)
    assert d.session.principal is None and d.session.state is State.CLOSED


def test_no_auth_within_auth_timeout_closes_with_4001() -> None:
    d = Driver(FeedConfig(auth_timeout=10), now=100.0)
    assert d.session.next_deadline() == 110.0
    assert d.handle(Timer(), at=109.9) == [], "early timers do nothing"
    close = closed_with(d.handle(Timer(), at=110.0))
    assert (close.code, close.reason) == (CloseCode.UNAUTHORIZED, "authentication timeout")
    assert d.session.next_deadline() is None


def test_the_auth_timeout_also_bounds_a_slow_verification() -> None:
    d = Driver(FeedConfig(auth_timeout=10))
    d.handle(Auth("key-p1"), at=9.0)
    assert d.session.next_deadline() == 10.0
    assert closed_with(d.handle(Timer(), at=10.0)).code == CloseCode.UNAUTHORIZED
    assert d.handle(Verdict(P1, 0)) == [], "a verdict after the close is ignored"


def test_events_a_state_does_not_take_are_driver_errors_that_change_nothing() -> None:
    d = Driver()
    for event in (Verdict(P1, 0), ConnectRefused(), Replayed(0, 0, None)):
        with pytest.raises(DriverError):
            d.handle(event)
    assert d.session.state is State.AWAITING_AUTH and d.session.strikes == 0
    d.handle(Auth("key-p1"))
    # While a credential is being verified the driver reads nothing more from the client.
    for event in (Subscribe((ROUND_UPDATES,)), ClientError("bad_json", "x"), PeerClosed()):
        with pytest.raises(DriverError):
            d.handle(event)
    assert d.session.state is State.AUTHENTICATING
    d.handle(Verdict(P1, 0))
    with pytest.raises(DriverError):
        d.handle(HeaderCredential("key-p1"))
    assert d.session.state is State.AUTHENTICATED


# -- strikes and the rate limit ----------------------------------------------------------


def test_errors_are_answered_until_max_strikes_then_4000() -> None:
    d = Driver(FeedConfig(max_strikes=4))
    for _ in range(2):  # strikes count before authentication too
        assert error_of(d.handle(ClientError("bad_json", "not JSON")))["code"] == "bad_json"
    d.authenticate()
    assert error_of(d.handle(Binary()))["code"] == "binary_not_supported"
    close = closed_with(d.handle(ClientError("unknown_type", "dance?", "r1")))
    assert (close.code, close.reason) == (
        CloseCode.INVALID_MESSAGES,
        "too many errors, last: unknown_type",
    )
    assert error_of([close]) == {
        "type": "error",
        "code": "unknown_type",
        "message": "dance?",
        "id": "r1",
    }


def test_a_message_storm_is_rate_limited_then_closed_with_4029() -> None:
    d = Driver(FeedConfig(rate=10, burst=20, max_strikes=5))
    d.authenticate()
    d.handle(Heartbeat(1, b""))
    for _ in range(19):  # the auth message used one of the burst
        assert d.handle(Ack(1)) == []
    for strike in range(1, 5):
        err = error_of(d.handle(Ack(1)))
        assert err == {
            "type": "error",
            "code": "rate_limited",
            "message": "at most 10 messages per second",
        }
        assert d.session.strikes == strike
    close = closed_with(d.handle(Ack(1)))
    assert (close.code, close.reason) == (
        CloseCode.RATE_LIMITED,
        "too many errors, last: rate_limited",
    )


def test_the_rate_limit_refills_at_rate_and_counts_messages_of_any_kind() -> None:
    d = Driver(FeedConfig(rate=2, burst=3, max_strikes=100))
    assert d.handle(Auth("key-p1"), at=0.0) == [Verify("key-p1")]
    d.handle(Verdict(P1, 0))
    d.handle(Subscribe((ROUND_UPDATES,)))
    d.handle(ClientError("bad_json", "x"))  # answered as bad_json: it counted
    assert error_of(d.handle(Unsubscribe((ROUND_UPDATES,))))["code"] == "rate_limited"
    assert ROUND_UPDATES in d.channels, "a refused message does nothing"
    assert error_of(d.handle(Binary()))["code"] == "binary_not_supported", "binary is not counted"
    assert error_of(d.handle(Unsubscribe((ROUND_UPDATES,)), at=0.49))["code"] == "rate_limited"
    assert sent(d.handle(Unsubscribe((ROUND_UPDATES,)), at=0.5))[0]["type"] == "unsubscribed"


@given(st.lists(st.floats(0, 0.5), max_size=200))
def test_the_rate_limit_never_allows_more_than_burst_plus_rate_times_time(
    gaps: list[float],
) -> None:
    d = Driver(FeedConfig(rate=10, burst=5, max_strikes=10_000))
    d.authenticate()  # at 0: one message of the burst
    d.handle(Heartbeat(1, b""))
    allowed = 1
    for gap in gaps:
        actions = d.handle(Ack(1), at=d.now + gap)
        allowed += actions == []  # an accepted ack is answered with nothing
    assert allowed <= 5 + 10 * d.now + 1e-6


# -- channels ------------------------------------------------------------------------


def test_subscribe_replies_then_joins_and_unsubscribe_leaves_then_replies() -> None:
    d = Driver()
    d.authenticate()
    actions = d.handle(Subscribe((ROUND_UPDATES, LIVE_MULTIPLIER), 1))
    assert sent(actions) == [
        {"type": "subscribed", "channels": [LIVE_MULTIPLIER, ROUND_UPDATES], "id": 1}
    ]
    assert actions[-1] == Join((ROUND_UPDATES, LIVE_MULTIPLIER), None, 1)
    # Channels already held are not joined again.
    actions = d.handle(Subscribe((ROUND_UPDATES, ALICE)))
    assert actions[-1] == Join((ALICE,), None, None)
    assert sent(actions)[0]["channels"] == sorted([LIVE_MULTIPLIER, ROUND_UPDATES, ALICE])
    actions = d.handle(Unsubscribe((LIVE_MULTIPLIER, "never_held"), "u"))
    assert actions[0] == Leave((LIVE_MULTIPLIER, "never_held"))
    assert sent(actions) == [
        {"type": "unsubscribed", "channels": sorted([ROUND_UPDATES, ALICE]), "id": "u"}
    ]
    assert d.channels == {ROUND_UPDATES, ALICE}


@pytest.mark.parametrize(
    ("principal", "channel", "code"),
    [
        (P1, "no_such_channel", "unknown_channel"),
        (P1, user_channel("p2", "bob"), "forbidden_channel"),
        (READER, ALICE, "forbidden_channel"),
    ],
)
def test_channels_channel_denial_refuses_are_struck_and_never_joined(
    principal: Principal, channel: str, code: str
) -> None:
    d = Driver()
    d.authenticate(principal)
    actions = d.handle(Subscribe((ROUND_UPDATES, channel), 3))
    err = error_of(actions)
    assert (err["code"], err["message"]) == channel_denial(principal, channel)
    assert err["code"] == code and err["id"] == 3
    assert not any(isinstance(a, Join) for a in actions) and d.channels == set()


def test_too_many_channels_in_one_request_and_too_many_subscriptions_are_errors() -> None:
    d = Driver(FeedConfig(max_subscriptions=3))
    d.authenticate()
    try:  # the parser refuses a request over 32 channels; the session strikes it
        parse_client_message(json.dumps({"type": "subscribe", "channels": ["x"] * 33 + ["y"]}))
    except ClientError as err:
        assert error_of(d.handle(err))["code"] == "too_many_channels"
    else:
        raise AssertionError("33 channels were accepted")
    d.handle(Subscribe((ROUND_UPDATES, LIVE_MULTIPLIER)))
    err = error_of(d.handle(Subscribe((ALICE, user_channel("p1", "bob")), 4)))
    assert err == {
        "type": "error",
        "code": "too_many_subscriptions",
        "message": "at most 3 channels per connection",
        "id": 4,
    }
    assert d.channels == {ROUND_UPDATES, LIVE_MULTIPLIER}
    assert d.handle(Subscribe((ROUND_UPDATES, ALICE)))[-1] == Join((ALICE,), None, None)


def test_a_resume_request_is_passed_to_the_hub_and_its_replay_reported() -> None:
    d = Driver()
    d.authenticate()
    actions = d.handle(Subscribe((ROUND_UPDATES, ALICE), 2, 18231, EPOCH))
    assert actions[-1] == Join((ROUND_UPDATES, ALICE), Resume(18231, EPOCH), 2)
    assert sent(d.handle(Replayed(19, 18250, 2))) == [
        {"type": "resumed", "replayed": 19, "seq": 18250, "id": 2}
    ]
    # A resume of channels already held still goes to the hub (its answer: 0 replayed).
    assert d.handle(Subscribe((ROUND_UPDATES,), None, 18250, None))[-1] == Join(
        (), Resume(18250, None), None
    )


# -- heartbeats ----------------------------------------------------------------------


def test_an_ack_must_name_a_heartbeat_that_was_sent() -> None:
    d = Driver(heartbeat_id=2)  # the server had beaten twice before this connection
    d.authenticate()
    assert d.handle(Ack(2)) == []
    for bad in (0, 3, -1):
        assert error_of(d.handle(Ack(bad))) == {
            "type": "error",
            "code": "invalid_message",
            "message": f"no heartbeat {bad} was sent",
        }
    d.handle(Heartbeat(3, b""))
    assert d.handle(Ack(3)) == []


def test_heartbeats_go_out_until_acks_stop_then_4008() -> None:
    d = Driver(FeedConfig(heartbeat_interval=15, heartbeat_timeout=45))
    beat = control({"type": "heartbeat", "id": 1})
    assert d.handle(Heartbeat(1, beat), at=5.0) == [], "no beats before authentication"
    d.authenticate()  # at 5: the timeout runs from the welcome
    assert d.handle(Heartbeat(2, beat), at=20.0) == [Send(beat, HEARTBEAT_KEY)]
    d.handle(Ack(2), at=21.0)
    assert d.handle(Heartbeat(3, beat), at=66.0) == [Send(beat, HEARTBEAT_KEY)], "45 s exactly"
    close = closed_with(d.handle(Heartbeat(4, beat), at=66.5))
    assert (close.code, close.reason) == (CloseCode.HEARTBEAT_TIMEOUT, "heartbeat timeout")
    assert error_of([close])["code"] == "heartbeat_timeout"
    assert "no ack for 45 s" in error_of([close])["message"]


# -- the connection's end --------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "code", "reason", "error"),
    [
        (TooBig(), CloseCode.MESSAGE_TOO_BIG, "message too big", "message_too_big"),
        (InvalidData(1002, "bad opcode"), 1002, "bad opcode", "protocol_error"),
        (InvalidData(1007, None), 1007, "protocol error", "protocol_error"),
        (PeerClosed(), CloseCode.NORMAL, "bye", None),
        (ShuttingDown(), CloseCode.GOING_AWAY, "server shutting down", None),
        (Dropped(4009, "slow consumer: …"), CloseCode.SLOW_CONSUMER, "slow consumer: …", None),
        (
            Revoked("credential revoked"),
            CloseCode.UNAUTHORIZED,
            "credential revoked",
            "unauthorized",
        ),
    ],
)
def test_every_ending_closes_once_with_its_code(
    event: Event, code: int, reason: str, error: str | None
) -> None:
    d = Driver(FeedConfig(max_message_bytes=1024))
    d.authenticate()
    close = closed_with(d.handle(event))
    assert (close.code, close.reason) == (code, reason)
    assert (None if close.error is None else error_of([close])["code"]) == error
    for later in (
        ShuttingDown(),
        Heartbeat(9, b""),
        Dropped(4009, "x"),
        Subscribe((ROUND_UPDATES,)),
    ):
        assert d.handle(later) == []


def test_a_lost_connection_is_closed_without_a_close() -> None:
    d = Driver()
    d.authenticate()
    assert d.handle(Lost()) == [] and d.session.closed
    assert d.handle(ShuttingDown()) == []


def test_revoking_concerns_authenticated_connections_only() -> None:
    d = Driver()
    assert d.handle(Revoked("credential revoked")) == []
    assert d.session.state is State.AWAITING_AUTH


# -- the table ---------------------------------------------------------------------------


def test_the_table_covers_every_state_and_the_documented_table_is_the_code() -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.CLOSED] == {}
    doc = (REPO / "docs" / "feed.md").read_text()
    begin, end = "<!-- session:begin -->\n", "<!-- session:end -->"
    assert doc[doc.index(begin) + len(begin) : doc.index(end)] == describe_session()


# -- random conversations ------------------------------------------------------------------

CHANNEL_POOL = [
    LIVE_MULTIPLIER,
    ROUND_UPDATES,
    ALICE,
    user_channel("p1", "bob"),
    user_channel("p1", "carol"),
    user_channel("p2", "eve"),
    "nope",
]

client_messages = st.one_of(
    st.builds(Auth, st.sampled_from(["key-p1", "key-reader", "key-x", "bad", "slow"])),
    st.builds(
        Subscribe,
        st.lists(st.sampled_from(CHANNEL_POOL), min_size=1, max_size=4, unique=True).map(tuple),
        st.none() | st.integers(0, 9),
        st.none() | st.integers(0, 50),
        st.none() | st.sampled_from([EPOCH, "other"]),
    ),
    st.builds(
        Unsubscribe,
        st.lists(st.sampled_from(CHANNEL_POOL), min_size=1, max_size=3, unique=True).map(tuple),
    ),
    st.builds(Ack, st.integers(-1, 6)),
    st.builds(ClientError, st.sampled_from(["bad_json", "unknown_type"]), st.just("x")),
)
"""What the client can send (parsed, or the parser's error)."""

outside_events = st.one_of(
    st.builds(Timer),
    st.builds(Heartbeat, st.integers(1, 6), st.just(control({"type": "heartbeat"}))),
    st.builds(Revoked, st.just("credential revoked")),
    st.builds(Dropped, st.just(4009), st.just("slow consumer")),
    st.just("verdict"),  # a pending verification completes
)
"""What other tasks report at any time (the heartbeat task, the hub, revocation)."""

endings = st.one_of(
    st.builds(TooBig),
    st.builds(InvalidData, st.just(1002), st.just("x")),
    st.builds(PeerClosed),
    st.builds(Lost),
    st.builds(ShuttingDown),
)
"""What ends a connection whatever its state: rare, or little would happen before."""

steps = st.lists(
    st.tuples(
        st.floats(0, 5),
        st.one_of(*[client_messages] * 8, st.builds(Binary), *[outside_events] * 3, endings),
    ),
    max_size=60,
)


@given(st.none() | st.sampled_from(["key-p1", "key-p1", "key-reader", "bad", "slow"]), steps)
def test_random_conversations_keep_the_invariants(
    header: str | None, script: list[tuple[float, Event | str]]
) -> None:
    config = FeedConfig(auth_timeout=30, max_subscriptions=2, rate=2, burst=4, max_strikes=4)
    d = Driver(config)
    pending: str | None = None  # a credential handed out in Verify, not yet answered
    closes = 0
    ended = False  # a Close went out or the connection was lost
    lost_first = False
    accepted_messages = 0

    def verdict_of(credential: str) -> Event:
        if credential == "slow":
            return ConnectRefused()
        return Verdict(CREDENTIALS.get(credential), 0)

    def run(event: Event) -> None:
        nonlocal pending, closes, ended, lost_first, accepted_messages
        was_authenticated = d.session.principal is not None
        actions = d.handle(event)
        if ended:
            assert actions == [], f"acted after the end: {event!r} -> {actions!r}"
            return
        if isinstance(event, (Auth, Subscribe, Unsubscribe, Ack, ClientError)):
            accepted_messages += not answered_rate_limited(actions)
        for i, action in enumerate(actions):
            if isinstance(action, Close):
                assert i == len(actions) - 1, "a Close is always the last action"
                closes += 1
                ended = True
            elif isinstance(action, Verify):
                pending = action.credential
            elif isinstance(action, Join):
                principal = d.session.principal
                assert was_authenticated and principal is not None, "no channel before auth"
                for channel in action.channels:
                    assert channel_denial(principal, channel) is None, channel
                if action.resume is not None:
                    run(Replayed(0, 0, action.request_id))
            elif isinstance(action, Send):
                assert "type" in frame_json(action.data)
        if isinstance(event, Lost):
            lost_first = ended = True
        assert len(d.channels) <= config.max_subscriptions
        assert closes <= 1

    if header is not None:
        run(HeaderCredential(header))
    for gap, event in script:
        d.now += gap
        is_client = not isinstance(
            event, (str, Timer, Heartbeat, Revoked, Dropped, Lost, ShuttingDown)
        )
        if pending is not None and (is_client or event == "verdict"):
            # The driver awaits the verdict before it reads on.
            credential, pending = pending, None
            run(verdict_of(credential))
        if not isinstance(event, str):
            run(event)
    run(ShuttingDown())
    assert closes == (0 if lost_first else 1), "a close happens exactly once"
    assert accepted_messages <= config.burst + config.rate * d.now + 1e-6

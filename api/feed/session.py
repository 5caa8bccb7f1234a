"""The rules of one feed connection, sans I/O: ``FeedSession``.

Like h11's ``Connection``, the session never touches a socket, a clock or the hub. Its
driver (``crashd.api.feed.server.FeedConnection``) hands it one event at a time with
the current time — a parsed client message, the verdict on a credential, a timer, a
heartbeat, the peer's close — and carries out the actions it returns, in order:

* ``Send(data, key)``: deliver a frame through the connection's subscriber, so it is
  ordered with the hub's frames (``key`` conflates it in a slow client's outbox);
* ``Verify(credential)``: authenticate it, then report a ``Verdict`` (or
  ``ConnectRefused``) before giving the session anything more from the client;
* ``Join(channels, resume, request_id)`` / ``Leave(channels)``: subscribe or
  unsubscribe in the hub; after a ``Join`` with ``resume`` that the hub answered with a
  replay, report ``Replayed``;
* ``Close(code, reason, error)``: send ``error`` (if any) and the close frame, stop
  delivering. Always the last action of a list; after it the session does nothing.

Everything here is protocol (docs/feed.md): authentication first or 4001, within
``auth_timeout``; the ``read:game_state`` scope; channel access; ``max_subscriptions``;
strikes (``max_strikes`` errors, then 4000); the message rate (GCRA, then 4029);
heartbeat acks and their timeout (4008); resume. Which event each state takes is the
``TRANSITIONS`` table; docs/feed.md's table is generated from it.

The connection's channels have one home, the hub's subscriber (it routes by them): the
session is given that set and reads it, and changes it only by returning ``Join`` and
``Leave``.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from crashd.api.security.keys import Principal
from crashd.api.security.ratelimit import Policy, RateLimiter
from crashd.api.wire import SCOPE_GAME_STATE, CloseCode

from .access import channel_denial
from .protocol import (
    Ack,
    Auth,
    ClientError,
    Order,
    Subscribe,
    Unsubscribe,
    control,
    error_frame,
)

HEARTBEAT_KEY = "~heartbeat"
"""The outbox conflation key of heartbeats: only the newest needs an ack, so a beat
waiting in a slow client's outbox is replaced by the next one."""

_SEND_AUTH_FIRST = 'send {"type": "auth", "token": ...} first'


class Rules(Protocol):
    """The limits and timers a session applies. ``FeedConfig`` is the one home of their
    values and defaults (docs/feed.md, Limits); tests pass a ``FeedConfig`` too."""

    @property
    def auth_timeout(self) -> float: ...
    @property
    def heartbeat_interval(self) -> float: ...
    @property
    def heartbeat_timeout(self) -> float: ...
    @property
    def max_message_bytes(self) -> int: ...
    @property
    def max_subscriptions(self) -> int: ...
    @property
    def rate(self) -> float: ...
    @property
    def burst(self) -> int: ...
    @property
    def max_strikes(self) -> int: ...


class State(Enum):
    AWAITING_AUTH = "awaiting_auth"
    """Connected without a credential: only ``auth`` is taken, within ``auth_timeout``."""
    AUTHENTICATING = "authenticating"
    """A credential went out in ``Verify``; the driver reports the verdict (and
    feeds nothing from the client until then). ``auth_timeout`` still runs."""
    AUTHENTICATED = "authenticated"
    """``welcome`` was sent: subscriptions, acks and heartbeats."""
    CLOSED = "closed"
    """A ``Close`` went out, or the connection was lost: every event is ignored."""


class DriverError(Exception):
    """The driver gave the session an event its state does not take: a bug in the
    driver, never the client's doing (that is a ``ClientError``). Nothing was changed."""


# -- events: what the driver reports (client messages are protocol.py's) --------------


@dataclass(frozen=True, slots=True)
class HeaderCredential:
    """The credential of the upgrade request's ``Authorization: Bearer`` header."""

    credential: str


@dataclass(frozen=True, slots=True)
class Verdict:
    """What ``Verify`` found: the principal, or ``None`` for a bad credential."""

    principal: Principal | None
    seq: int
    """The hub's ``seq`` now, for ``welcome``."""


@dataclass(frozen=True, slots=True)
class ConnectRefused:
    """The authenticator raised ``ConnectRateLimited``: a valid credential opening
    connections too fast."""


@dataclass(frozen=True, slots=True)
class Binary:
    """A complete binary message (the feed speaks JSON text)."""


@dataclass(frozen=True, slots=True)
class TooBig:
    """A client message grew over ``max_message_bytes`` (counted across fragments)."""


@dataclass(frozen=True, slots=True)
class InvalidData:
    """wsproto found bytes that are not WebSocket (1002) or text that is not UTF-8 (1007)."""

    code: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class PeerClosed:
    """The client's close frame."""


@dataclass(frozen=True, slots=True)
class Lost:
    """The connection is gone (EOF, reset, a failed send): nothing can be sent."""


@dataclass(frozen=True, slots=True)
class Timer:
    """``next_deadline()`` has passed (the auth timeout)."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The heartbeat task's beat ``beat_id``; ``frame`` is its one shared frame."""

    beat_id: int
    frame: bytes


@dataclass(frozen=True, slots=True)
class Replayed:
    """The hub replayed ``replayed`` frames for a ``Join`` with ``resume``."""

    replayed: int
    seq: int
    request_id: Any


@dataclass(frozen=True, slots=True)
class Revoked:
    """The credential was revoked (``FeedServer.disconnect``): close 4001."""

    reason: str


@dataclass(frozen=True, slots=True)
class ShuttingDown:
    """The server is stopping."""


@dataclass(frozen=True, slots=True)
class Dropped:
    """The hub dropped the subscriber (``code`` 4009: a slow consumer)."""

    code: int
    reason: str


ClientEvent = Auth | Subscribe | Unsubscribe | Ack | Order | ClientError
"""One text message from the client, parsed (or the ``ClientError`` parsing raised)."""

Event = (
    ClientEvent
    | HeaderCredential
    | Verdict
    | ConnectRefused
    | Binary
    | TooBig
    | InvalidData
    | PeerClosed
    | Lost
    | Timer
    | Heartbeat
    | Replayed
    | Revoked
    | ShuttingDown
    | Dropped
)

_CLIENT_EVENTS = (Auth, Subscribe, Unsubscribe, Ack, Order, ClientError)
"""Each text message counts against the rate limit before anything else."""


# -- actions: what the driver carries out -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Deliver ``data`` (a complete frame) through the subscriber, after what is queued."""

    data: bytes
    key: str | None = None
    """Conflation key: a queued frame with the same key is replaced by this one."""


@dataclass(frozen=True, slots=True)
class Verify:
    """Authenticate ``credential``; answer with ``Verdict`` or ``ConnectRefused``."""

    credential: str


@dataclass(frozen=True, slots=True)
class Resume:
    seq: int
    epoch: str | None


@dataclass(frozen=True, slots=True)
class Join:
    """``hub.subscribe(sub, channels, since_seq=resume.seq, epoch=resume.epoch)``: the
    hub sends the snapshot or the replay. ``channels`` may be empty (a resume of
    channels already held still gets its ``resumed``)."""

    channels: tuple[str, ...]
    resume: Resume | None
    request_id: Any


@dataclass(frozen=True, slots=True)
class Leave:
    """``hub.unsubscribe(sub, channels)``."""

    channels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Close:
    """Send ``error`` (if any), then a close frame with ``code`` and ``reason``; stop
    delivering anything else."""

    code: int
    reason: str
    error: bytes | None = None


@dataclass(frozen=True, slots=True)
class Execute:
    """Run an order (``crashd.api.feed.orders``) for the connection's principal and send
    its ``result`` when it is answered; the session goes on meanwhile (answers carry the
    order's ``id`` and ``key``, and may come in any order)."""

    order: Order


Action = Send | Verify | Join | Leave | Close | Execute


# -- the table --------------------------------------------------------------------------

_ENDINGS: Mapping[type[Event], State] = {
    TooBig: State.CLOSED,
    InvalidData: State.CLOSED,
    PeerClosed: State.CLOSED,
    ShuttingDown: State.CLOSED,
    Dropped: State.CLOSED,
    Lost: State.CLOSED,
}

TRANSITIONS: Mapping[State, Mapping[type[Event], State]] = {
    State.AWAITING_AUTH: {
        HeaderCredential: State.AUTHENTICATING,
        Auth: State.AUTHENTICATING,
        Subscribe: State.CLOSED,
        Unsubscribe: State.CLOSED,
        Ack: State.CLOSED,
        Order: State.CLOSED,
        ClientError: State.AWAITING_AUTH,
        Binary: State.AWAITING_AUTH,
        Timer: State.AWAITING_AUTH,
        Heartbeat: State.AWAITING_AUTH,
        Revoked: State.AWAITING_AUTH,
        **_ENDINGS,
    },
    State.AUTHENTICATING: {
        Verdict: State.AUTHENTICATED,
        ConnectRefused: State.CLOSED,
        Timer: State.AUTHENTICATING,
        Heartbeat: State.AUTHENTICATING,
        Revoked: State.AUTHENTICATING,
        ShuttingDown: State.CLOSED,
        Dropped: State.CLOSED,
        Lost: State.CLOSED,
    },
    State.AUTHENTICATED: {
        Auth: State.AUTHENTICATED,
        Subscribe: State.AUTHENTICATED,
        Unsubscribe: State.AUTHENTICATED,
        Ack: State.AUTHENTICATED,
        Order: State.AUTHENTICATED,
        ClientError: State.AUTHENTICATED,
        Binary: State.AUTHENTICATED,
        Replayed: State.AUTHENTICATED,
        Timer: State.AUTHENTICATED,
        Heartbeat: State.AUTHENTICATED,
        Revoked: State.CLOSED,
        **_ENDINGS,
    },
    State.CLOSED: {},
}
"""``{state: {event type: the state after it}}``. An event missing from its state's row
is a ``DriverError`` (except in ``CLOSED``, which ignores everything). The state given
is the one an accepted event leads to; any event whose actions end in ``Close`` leads
to ``CLOSED`` instead (a refused credential, ``max_strikes``, a timeout), and a client
message refused by the rate limit leaves the state as it was."""


def describe_session() -> str:
    """``TRANSITIONS`` as Markdown, for docs/feed.md (a test keeps the page in step)."""
    events: list[type[Event]] = []
    for row in TRANSITIONS.values():
        events.extend(e for e in row if e not in events)
    states = [s for s in State if s is not State.CLOSED]
    lines = [
        "| event | what | " + " | ".join(f"`{s.value}`" for s in states) + " |",
        "|---|---|" + "---|" * len(states),
    ]
    for event in events:
        what = " ".join((event.__doc__ or "").split("\n\n")[0].split()).replace("``", "`")
        cells = [
            f"`{TRANSITIONS[s][event].value}`" if event in TRANSITIONS[s] else "—" for s in states
        ]
        lines.append(f"| {event.__name__} | {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@functools.cache
def _message_policy(rate: float, burst: int) -> Policy:
    # GCRA with ``burst`` requests per ``burst / rate`` seconds is exactly a token bucket
    # of ``burst`` tokens refilled at ``rate`` per second. One Policy for every session.
    return Policy("feed_messages", burst, burst / rate)


class FeedSession:
    """One connection's protocol state. ``handle(now, event)`` -> actions, in order."""

    __slots__ = (
        "rules",
        "epoch",
        "state",
        "principal",
        "strikes",
        "_channels",
        "_auth_deadline",
        "_last_ack",
        "_beat",
        "_limiter",
        "_policy",
    )

    def __init__(
        self,
        rules: Rules,
        now: float,
        *,
        epoch: str,
        channels: AbstractSet[str],
        heartbeat_id: int = 0,
    ) -> None:
        """``now``: when the connection was accepted (``auth_timeout`` runs from then).

        ``channels`` is the subscriber's own set (read, never written); ``heartbeat_id``
        the server's last beat so far (an ``ack`` may name any beat up to the latest).
        """
        self.rules = rules
        self.epoch = epoch
        self.state = State.AWAITING_AUTH
        self.principal: Principal | None = None
        self.strikes = 0
        self._channels = channels
        self._auth_deadline = now + rules.auth_timeout
        self._last_ack = now
        self._beat = heartbeat_id
        self._limiter = RateLimiter(max_keys=1)
        self._policy = _message_policy(rules.rate, rules.burst)

    @property
    def closed(self) -> bool:
        return self.state is State.CLOSED

    def next_deadline(self) -> float | None:
        """When the driver must report ``Timer`` (if nothing else happened), or ``None``."""
        if self.state in (State.AWAITING_AUTH, State.AUTHENTICATING):
            return self._auth_deadline
        return None

    def handle(self, now: float, event: Event) -> list[Action]:
        """Apply ``event`` at time ``now``; returns the actions to carry out, in order."""
        if self.state is State.CLOSED:
            return []
        target = TRANSITIONS[self.state].get(type(event))
        if target is None:
            raise DriverError(f"{type(event).__name__} cannot happen in {self.state.value}")
        if (
            isinstance(event, _CLIENT_EVENTS)
            and not self._limiter.check("messages", self._policy, now).allowed
        ):
            target = self.state
            actions = self._strike(
                ClientError("rate_limited", f"at most {self.rules.rate:g} messages per second"),
                CloseCode.RATE_LIMITED,
            )
        else:
            actions = self._apply(now, event)
        self.state = State.CLOSED if actions and isinstance(actions[-1], Close) else target
        return actions

    # -- the rules ---------------------------------------------------------------------

    def _apply(self, now: float, event: Event) -> list[Action]:
        authenticated = self.state is State.AUTHENTICATED
        match event:
            # The heartbeat task's case first: it runs for every connection at every beat.
            case Heartbeat(beat_id, frame):
                self._beat = beat_id
                if not authenticated:
                    return []
                timeout = self.rules.heartbeat_timeout
                if now - self._last_ack > timeout:
                    return [
                        Close(
                            CloseCode.HEARTBEAT_TIMEOUT,
                            "heartbeat timeout",
                            error_frame(
                                "heartbeat_timeout",
                                f"no ack for {timeout:g} s; "
                                'answer {"type": "heartbeat", "id": N} with {"type": "ack", "id": N}',
                            ),
                        )
                    ]
                return [Send(frame, HEARTBEAT_KEY)]
            case ClientError():
                return self._strike(event)
            case Binary():
                return self._strike(ClientError("binary_not_supported", "send JSON in text frames"))
            case HeaderCredential(credential) | Auth(credential) if not authenticated:
                return [Verify(credential)]
            case Auth():
                return self._strike(ClientError("invalid_message", "already authenticated"))
            case Subscribe() | Unsubscribe() | Ack() | Order() if not authenticated:
                return [_unauthorized("not authenticated", _SEND_AUTH_FIRST)]
            case Verdict(principal, seq):
                return self._verdict(now, principal, seq)
            case ConnectRefused():
                return [
                    Close(
                        CloseCode.TRY_AGAIN_LATER,
                        "connect rate limited",
                        error_frame(
                            "rate_limited", "too many connections for this credential; retry later"
                        ),
                    )
                ]
            case Subscribe():
                return self._subscribe(event)
            case Order():
                return [Execute(event)]
            case Unsubscribe(channels, request_id):
                left = _reply("unsubscribed", (c for c in self._channels if c not in channels))
                return [Leave(channels), Send(control(_with_id(left, request_id)))]
            case Ack(heartbeat_id):
                if 0 < heartbeat_id <= self._beat:
                    self._last_ack = now
                    return []
                return self._strike(
                    ClientError("invalid_message", f"no heartbeat {heartbeat_id} was sent")
                )
            case Replayed(replayed, seq, request_id):
                body = {"type": "resumed", "replayed": replayed, "seq": seq}
                return [Send(control(_with_id(body, request_id)))]
            case Timer():
                if self.next_deadline() is not None and now >= self._auth_deadline:
                    return [_unauthorized("authentication timeout", _SEND_AUTH_FIRST)]
                return []
            case Revoked(reason):
                if not authenticated:
                    return []  # nothing was granted yet: the verdict will decide
                return [_unauthorized(reason, f"{reason}; reconnect with a valid one")]
            case TooBig():
                limit = self.rules.max_message_bytes
                return [
                    Close(
                        CloseCode.MESSAGE_TOO_BIG,
                        "message too big",
                        error_frame(
                            "message_too_big", f"client messages are limited to {limit} bytes"
                        ),
                    )
                ]
            case InvalidData(code, reason):
                # No close frame came: wsproto reports bad bytes as a close. Say why.
                return [
                    Close(
                        code,
                        reason or "protocol error",
                        error_frame("protocol_error", f"invalid WebSocket data: {reason}"),
                    )
                ]
            case PeerClosed():
                return [Close(CloseCode.NORMAL, "bye")]  # answer the client's close
            case ShuttingDown():
                return [Close(CloseCode.GOING_AWAY, "server shutting down")]
            case Dropped(code, reason):
                return [Close(code, reason)]
            case Lost():
                return []
        raise AssertionError(f"unhandled {event!r}")  # TRANSITIONS lets nothing else in

    def _verdict(self, now: float, principal: Principal | None, seq: int) -> list[Action]:
        if principal is None:
            return [
                _unauthorized(
                    "invalid credential", "the API key or feed token is not valid (or expired)"
                )
            ]
        if SCOPE_GAME_STATE not in principal.scopes:
            return [
                Close(
                    CloseCode.FORBIDDEN,
                    f"missing scope {SCOPE_GAME_STATE}",
                    error_frame(
                        "forbidden", f"the credential lacks the {SCOPE_GAME_STATE!r} scope"
                    ),
                )
            ]
        self.principal = principal
        self._last_ack = now  # the heartbeat timeout runs from the welcome
        rules = self.rules
        welcome = {
            "type": "welcome",
            "epoch": self.epoch,
            "seq": seq,
            "partner_id": principal.partner_id,
            "environment": principal.environment,
            "heartbeat_interval_ms": round(rules.heartbeat_interval * 1000),
            "heartbeat_timeout_ms": round(rules.heartbeat_timeout * 1000),
            "max_message_bytes": rules.max_message_bytes,
        }
        return [Send(control(welcome))]

    def _subscribe(self, message: Subscribe) -> list[Action]:
        assert self.principal is not None
        rid = message.request_id
        for channel in message.channels:
            denial = channel_denial(self.principal, channel)
            if denial is not None:
                return self._strike(ClientError(*denial, request_id=rid))
        held = self._channels
        if len(held | set(message.channels)) > self.rules.max_subscriptions:
            return self._strike(
                ClientError(
                    "too_many_subscriptions",
                    f"at most {self.rules.max_subscriptions} channels per connection",
                    rid,
                )
            )
        new = tuple(c for c in message.channels if c not in held)
        body = _reply("subscribed", [*held, *new])
        resume = (
            None if message.resume_seq is None else Resume(message.resume_seq, message.resume_epoch)
        )
        return [Send(control(_with_id(body, rid))), Join(new, resume, rid)]

    def _strike(
        self, err: ClientError, close_code: int = CloseCode.INVALID_MESSAGES
    ) -> list[Action]:
        """Answer ``err``; the ``max_strikes``-th error closes with ``close_code``."""
        self.strikes += 1
        frame = error_frame(err.code, err.message, err.request_id)
        if self.strikes >= self.rules.max_strikes:
            return [Close(close_code, f"too many errors, last: {err.code}", frame)]
        return [Send(frame)]


def _unauthorized(reason: str, message: str) -> Close:
    """Close 4001, after an ``unauthorized`` error saying ``message``."""
    return Close(CloseCode.UNAUTHORIZED, reason, error_frame("unauthorized", message))


def _reply(kind: str, channels: Iterable[str]) -> dict[str, Any]:
    return {"type": kind, "channels": sorted(channels)}


def _with_id(body: dict[str, Any], request_id: Any) -> dict[str, Any]:
    if request_id is not None:
        body["id"] = request_id
    return body

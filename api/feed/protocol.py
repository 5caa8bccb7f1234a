"""The feed's application protocol, sans I/O: client messages and control replies.

Clients send small JSON text frames (``auth``, ``subscribe``, ``unsubscribe``, ``ack``);
``parse_client_message`` turns one into a typed message or raises ``ClientError``
carrying the stable error ``code`` the server answers with. Server control messages
are built here too; channel messages are built by the hub. Nothing in this module
touches a socket or a clock. What the server does with a message (the connection's
rules) is ``crashd.api.feed.session``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crashd.api import strictjson

from .frames import encode_text
from .hub import encode_json


class ClientError(Exception):
    """The client sent something the feed will not act on; answered with an ``error``."""

    def __init__(self, code: str, message: str, request_id: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True, slots=True)
class Auth:
    """The client's ``auth`` message."""

    token: str


@dataclass(frozen=True, slots=True)
class Subscribe:
    """The client's ``subscribe`` (with ``resume`` after a reconnect)."""

    channels: tuple[str, ...]
    request_id: Any = None
    resume_seq: int | None = None
    resume_epoch: str | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """The client's ``unsubscribe``."""

    channels: tuple[str, ...]
    request_id: Any = None


@dataclass(frozen=True, slots=True)
class Ack:
    """The client's ``ack`` of a heartbeat."""

    heartbeat_id: int


@dataclass(frozen=True, slots=True)
class Order:
    """A ``bet``, ``cashout`` or ``auto_cashout`` order (docs/feed.md, Orders): run as
    its REST request, answered with a ``result``."""

    message: dict[str, Any]
    request_id: Any = None


ORDER_TYPES = ("bet", "cashout", "auto_cashout")

ClientMessage = Auth | Subscribe | Unsubscribe | Ack | Order

MAX_CHANNELS_PER_REQUEST = 32


def _channels(obj: dict[str, Any], request_id: Any) -> tuple[str, ...]:
    channels = obj.get("channels")
    if (
        not isinstance(channels, list)
        or not channels
        or not all(isinstance(c, str) for c in channels)
    ):
        raise ClientError(
            "invalid_message", '"channels" must be a non-empty list of strings', request_id
        )
    if len(channels) > MAX_CHANNELS_PER_REQUEST:
        raise ClientError(
            "too_many_channels",
            f"at most {MAX_CHANNELS_PER_REQUEST} channels per request",
            request_id,
        )
    return tuple(dict.fromkeys(channels))


def _request_id(obj: dict[str, Any]) -> Any:
    rid = obj.get("id")
    # Echoed back verbatim, so keep it small and JSON-scalar.
    if (
        rid is None
        or isinstance(rid, (int, str))
        and not isinstance(rid, bool)
        and len(str(rid)) <= 64
    ):
        return rid
    raise ClientError(
        "invalid_message", '"id" must be an integer or a string of at most 64 characters'
    )


def parse_client_message(text: str) -> ClientMessage:
    """One client text frame -> a typed message, or ``ClientError``."""
    try:
        obj = strictjson.loads(text)  # the same strict JSON as a REST body
    except strictjson.MalformedJSON as exc:
        raise ClientError("bad_json", f"message is not strict JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ClientError("invalid_message", "message must be a JSON object")
    kind = obj.get("type")
    request_id = _request_id(obj)
    if kind == "auth":
        token = obj.get("token")
        if not isinstance(token, str) or not token:
            raise ClientError(
                "invalid_message", '"auth" needs a non-empty string "token"', request_id
            )
        return Auth(token)
    if kind == "subscribe":
        channels = _channels(obj, request_id)
        resume = obj.get("resume")
        if resume is None:
            return Subscribe(channels, request_id)
        if not isinstance(resume, dict):
            raise ClientError(
                "invalid_message", '"resume" must be an object {"seq", "epoch"}', request_id
            )
        seq, epoch = resume.get("seq"), resume.get("epoch")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ClientError(
                "invalid_message", '"resume.seq" must be a non-negative integer', request_id
            )
        if epoch is not None and not isinstance(epoch, str):
            raise ClientError("invalid_message", '"resume.epoch" must be a string', request_id)
        return Subscribe(channels, request_id, seq, epoch)
    if kind == "unsubscribe":
        return Unsubscribe(_channels(obj, request_id), request_id)
    if kind in ORDER_TYPES:
        return Order(obj, request_id)
    if kind == "ack":
        hb = obj.get("id")
        if not isinstance(hb, int) or isinstance(hb, bool):
            raise ClientError("invalid_message", '"ack" needs the integer "id" of the heartbeat')
        return Ack(hb)
    raise ClientError(
        "unknown_type",
        f"unknown message type {str(kind)[:32]!r}: expected auth, subscribe, unsubscribe, "
        "ack, bet, cashout or auto_cashout",
        request_id,
    )


def control(body: dict[str, Any]) -> bytes:
    """A server control message (not part of the ``seq`` stream) as a complete frame."""
    return encode_text(encode_json(body))


def error_frame(code: str, message: str, request_id: Any = None) -> bytes:
    body: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        body["id"] = request_id
    return control(body)

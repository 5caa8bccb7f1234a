"""Money-moving calls as *commands*: what an API process sends the engine to run.

A route's money-moving core (``place_now``, ``cash_out_now``…: the call that takes the
principal, the request's ``IdempotencyToken`` and the validated body) is registered here
with :func:`forwarded`. In the engine's process it runs as it always has. In a process
without the engine (``crashd api``, ``crashd edge``: ``Services.commands`` is set), the
same call is sent to the engine instead — its name, the principal, the idempotency key
and fingerprint, the request id and the arguments — and the engine runs the very same
function under its own idempotency rules (``run_idempotent``: in flight, stored reply,
one commit), answering with the response's status, headers and body. So a command is
one request, whatever process took it, and its retry with the same key is answered
from the stored reply wherever it lands.

Reads that only the engine can answer (the live round's participants) are *queries*:
the same mechanism without idempotency (:func:`forwarded_query`).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from quart import Response

from crashd.api.rest import validation
from crashd.api.security.keys import Principal

if TYPE_CHECKING:
    from crashd.api.rest.idempotency import IdempotencyToken
    from crashd.api.services import Services

F = TypeVar("F", bound=Callable[..., Awaitable[Response]])


@dataclass(frozen=True)
class Reply:
    """A command's answer, as it travels back: the response, less Quart."""

    status: int
    headers: dict[str, str]
    body: bytes

    def response(self) -> Response:
        return Response(self.body, status=self.status, headers=self.headers)


async def reply_of(response: Response) -> Reply:
    body = await response.get_data(as_text=False)
    return Reply(response.status_code, dict(response.headers.items()), body)


class CommandSink(Protocol):
    """Where a process without the engine sends commands (``crashd.api.cluster``)."""

    async def command(
        self,
        name: str,
        principal: Principal,
        token: IdempotencyToken | None,
        args: list[Any],
    ) -> Reply: ...


@dataclass(frozen=True)
class Command:
    """A registered call: its function and how its arguments travel."""

    name: str
    fn: Callable[..., Awaitable[Response]]
    kinds: tuple[type, ...]
    """One per positional argument after the principal (and the token): ``str``,
    ``int`` or a validated body dataclass."""
    idempotent: bool


COMMANDS: dict[str, Command] = {}


def encode_args(kinds: Sequence[type], args: Sequence[Any]) -> list[Any]:
    out: list[Any] = []
    for kind, arg in zip(kinds, args, strict=True):
        if dataclasses.is_dataclass(kind):
            out.append(dataclasses.asdict(arg))
        else:
            assert isinstance(arg, kind), (kind, arg)
            out.append(arg)
    return out


def decode_args(kinds: Sequence[type], raw: Sequence[Any]) -> list[Any]:
    """The arguments back, each checked again (a body is re-validated: the engine trusts
    the API process to have authenticated the caller, not to have parsed every byte)."""
    if len(raw) != len(kinds):
        raise ValueError(f"{len(kinds)} arguments expected, got {len(raw)}")
    out: list[Any] = []
    for kind, value in zip(kinds, raw, strict=True):
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ValueError(f"{kind.__name__} must be an object")
            out.append(validation.parse(kind, value))
        elif isinstance(value, kind) and not isinstance(value, bool):
            out.append(value)
        else:
            raise ValueError(f"{kind.__name__} expected, got {type(value).__name__}")
    return out


def principal_to_json(principal: Principal) -> dict[str, Any]:
    doc = dataclasses.asdict(principal)
    doc["scopes"] = sorted(principal.scopes)
    return doc


def principal_from_json(doc: Mapping[str, Any]) -> Principal:
    fields = {f.name for f in dataclasses.fields(Principal)}
    values = {k: v for k, v in doc.items() if k in fields}
    values["scopes"] = frozenset(values.get("scopes", ()))
    return Principal(**values)


def _sink(services: Services | None) -> tuple[Services, CommandSink | None]:
    from crashd.api.services import current_services

    resolved = services if services is not None else current_services()
    return resolved, resolved.commands


def forwarded(name: str, *kinds: type) -> Callable[[F], F]:
    """Register ``fn(principal, idempotency, *args, services=None)`` as command ``name``;
    in a process without the engine, calling it sends the command instead."""

    def decorate(fn: F) -> F:
        COMMANDS[name] = Command(name, fn, kinds, idempotent=True)

        @functools.wraps(fn)
        async def wrapper(
            principal: Principal,
            idempotency: IdempotencyToken,
            *args: Any,
            services: Services | None = None,
        ) -> Response:
            resolved, sink = _sink(services)
            if sink is None:
                return await fn(principal, idempotency, *args, services=resolved)
            reply = await sink.command(name, principal, idempotency, encode_args(kinds, args))
            return reply.response()

        return cast(F, wrapper)

    return decorate


def forwarded_query(name: str, *kinds: type) -> Callable[[F], F]:
    """Register ``fn(principal, *args, services=None)``, a read only the engine can
    answer, as query ``name`` (sent, without idempotency, where there is no engine)."""

    def decorate(fn: F) -> F:
        COMMANDS[name] = Command(name, fn, kinds, idempotent=False)

        @functools.wraps(fn)
        async def wrapper(
            principal: Principal, *args: Any, services: Services | None = None
        ) -> Response:
            resolved, sink = _sink(services)
            if sink is None:
                return await fn(principal, *args, services=resolved)
            reply = await sink.command(name, principal, None, encode_args(kinds, args))
            return reply.response()

        return cast(F, wrapper)

    return decorate


async def execute(
    services: Services,
    name: str,
    principal: Principal,
    key: str | None,
    fingerprint: bytes,
    request_id: str,
    raw_args: Sequence[Any],
    on_token: Callable[[IdempotencyToken], None] | None = None,
) -> Response:
    """Run command ``name`` here, in the engine, as the API process's caller would have:
    under ``run_idempotent`` (``on_token`` sees the request's token: which replies its
    commit stored). Refusals are problem responses, as REST answers them."""
    from crashd.api.rest.idempotency import run_idempotent
    from crashd.api.rest.problems import Problem, problem_response

    command = COMMANDS.get(name)
    try:
        if command is None:
            raise Problem("invalid_request", f"no command {name!r}")
        try:
            args = decode_args(command.kinds, raw_args)
        except (ValueError, validation.ValidationFailed) as exc:
            raise Problem("invalid_request", f"command {name}: {exc}") from None
        if not command.idempotent:
            return await command.fn(principal, *args, services=services)
        if key is None:
            raise Problem("idempotency_key_required", "a command carries its Idempotency-Key")

        async def run(token: IdempotencyToken) -> Response:
            if on_token is not None:
                on_token(token)
            return await command.fn(principal, token, *args, services=services)

        return await run_idempotent(principal, key, fingerprint, request_id, run, services)
    except Problem as problem:
        return problem_response(problem, request_id)

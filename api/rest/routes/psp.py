"""PSP webhooks: ``POST /api/v1/psp/webhook``, the only way money enters or leaves.

No API key: the PSP authenticates with ``Crashd-PSP-Signature: t=…,v1=…`` (HMAC-SHA256
of ``"{t}.{raw body}"``, :mod:`crashd.api.security.webhook`), checked against every secret in
``psp_secrets_file`` (one per line, so the operator can add the new secret before the
PSP switches and remove the old one after). The file is re-read when it changes, so a
rotation needs no restart.

The body is one event (schema :data:`EVENT_SCHEMA`, documented in docs/security.md)::

    {"id": "evt_…", "type": "deposit.completed", "created": 1767225600,
     "data": {"environment": "sandbox", "partner_id": "acme", "user_id": "u1", "amount": 5000}}

Outcomes, all answered 2xx once the signature checks and the event is well formed, so
the PSP stops retrying:

* ``deposit.completed``: credit the user (``status: applied``);
* ``withdrawal.completed``: debit the user; never below zero: a refusal is recorded by the
  ledger under the event id and answered ``status: rejected`` with ``reason``;
* ``withdrawal.failed`` / ``withdrawal.reversed``: credit back the withdrawal named by
  ``data.withdrawal_id`` (the PSP event id of its ``withdrawal.completed``), at most once;
* any other type: ``status: ignored`` (acknowledged, nothing moves).

The ledger keys PSP ops by ``psp:{environment}:{event id}``: a redelivered event moves
nothing and gets the first answer again (``replayed: true``).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import trio
from quart import Blueprint, Response, request

from crashd.api import wire
from crashd.api.rest import validation
from crashd.api.rest.body import request_body
from crashd.api.rest.commands import forwarded_query
from crashd.api.rest.contract import documented, json_response
from crashd.api.rest.problems import Problem
from crashd.api.rest.requestid import log_context
from crashd.api.rest.validation import Choice, Integer, String
from crashd.api.security import webhook as pspsig
from crashd.api.security.keys import PARTNER_ID, Principal
from crashd.api.services import Services, current_services
from crashd.api.wire import API_PREFIX
from crashd.engine.bounds import MAX_AMOUNT
from crashd.engine.ledger import LedgerError
from crashd.engine.ledger.model import Posted

from .bets import USER_ID, problem_from

psp = Blueprint("psp", __name__, url_prefix=API_PREFIX)
log = logging.getLogger(__name__)


EVENT_ID = r"[A-Za-z0-9_.:\-]{1,128}"
EVENT_TYPE = r"[a-z0-9_.]{1,64}"
MONEY_TYPES = (
    "deposit.completed",
    "withdrawal.completed",
    "withdrawal.failed",
    "withdrawal.reversed",
)
# Ledger refusals that are final answers to the PSP (recorded under the event id), not errors.
REJECTIONS = frozenset({"insufficient_funds", "unknown_withdrawal", "already_reversed"})


@dataclass(frozen=True)
class Envelope:
    id: Annotated[
        str,
        String(
            min_length=1,
            max_length=128,
            pattern=EVENT_ID,
            description="the PSP's event id: de-duplication key",
        ),
    ]
    type: Annotated[str, String(min_length=1, max_length=64, pattern=EVENT_TYPE)]
    created: Annotated[
        int | None, Integer(minimum=0, maximum=10**12, description="Unix seconds")
    ] = None


@dataclass(frozen=True)
class MoneyData:
    environment: Annotated[Literal["sandbox", "production"], Choice()]
    partner_id: Annotated[str, String(min_length=1, max_length=64, pattern=PARTNER_ID)]
    user_id: Annotated[str, String(min_length=1, max_length=64, pattern=USER_ID)]
    amount: Annotated[int, Integer(minimum=1, maximum=MAX_AMOUNT, description="minor units")]
    currency: Annotated[str | None, String(min_length=3, max_length=3, pattern=r"[A-Z]{3}")] = None


@dataclass(frozen=True)
class ReversalData:
    environment: Annotated[Literal["sandbox", "production"], Choice()]
    withdrawal_id: Annotated[
        str,
        String(
            min_length=1,
            max_length=128,
            pattern=EVENT_ID,
            description="event id of the withdrawal.completed",
        ),
    ]
    partner_id: Annotated[str | None, String(min_length=1, max_length=64, pattern=PARTNER_ID)] = (
        None
    )
    user_id: Annotated[str | None, String(min_length=1, max_length=64, pattern=USER_ID)] = None
    reason: Annotated[str | None, String(max_length=200)] = None


WEBHOOK_RESPONSE: dict[str, Any] = {
    "type": "object",
    "required": ["event_id", "type", "status"],
    "properties": {
        "event_id": {"type": "string"},
        "type": {"type": "string"},
        "status": {"type": "string", "enum": ["applied", "rejected", "ignored"]},
        "reason": {"type": "string", "description": "rejected: the ledger's refusal code"},
        "replayed": {"type": "boolean", "description": "true: a redelivery; nothing moved again"},
        "amount": {"type": "integer"},
        "balance": {
            "type": "integer",
            "description": "the user's available balance after the event",
        },
    },
}


class SecretFile:
    """``psp_secrets_file``, re-read when its mtime or size changes (rotation without a
    restart). Blank lines and ``#`` comments are ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._secrets: tuple[str, ...] = ()

    def secrets(self) -> tuple[str, ...]:
        try:
            st = self.path.stat()
        except OSError:
            self._stamp, self._secrets = None, ()
            return ()
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            lines = self.path.read_text(encoding="utf-8").splitlines()
            self._secrets = tuple(
                s for s in (line.strip() for line in lines) if s and not s.startswith("#")
            )
            self._stamp = stamp
        return self._secrets


_secret_files: dict[Path, SecretFile] = {}


def _secrets() -> tuple[str, ...]:
    path = current_services().config.psp_secrets_file
    holder = _secret_files.get(path)
    if holder is None:
        holder = _secret_files[path] = SecretFile(path)
    return holder.secrets()


def _parse(schema: type[validation.T], data: Any, where: str) -> validation.T:
    try:
        return validation.parse(schema, data)
    except validation.ValidationFailed as exc:
        errors = [{"field": f"{where}{e.field}", "message": e.message} for e in exc.errors]
        raise Problem(
            "validation_failed",
            f"{errors[0]['field']}: {errors[0]['message']}",
            extra={"errors": errors},
        ) from None


@psp.post("/psp/webhook")
@documented(
    "PSP event callback (deposit/withdrawal completed, withdrawal failed/reversed)",
    response=WEBHOOK_RESPONSE,
    tags=("psp",),
    problems=(
        "signature_missing",
        "signature_malformed",
        "signature_expired",
        "invalid_signature",
        "malformed_json",
        "payload_too_large",
        "validation_failed",
        "environment_mismatch",
        "idempotency_conflict",
        "invalid_request",
        "psp_not_configured",
        "ledger_unavailable",
        "engine_unavailable",
    ),
    description="Authenticated by the Crashd-PSP-Signature header (t=…,v1=…: HMAC-SHA256 of "
    '"{t}.{raw body}" with a secret from psp_secrets_file), not by an API key. '
    "Every well-formed, correctly signed event is answered 200, including redeliveries "
    "(replayed: true), refused withdrawals (status: rejected) and unknown types (ignored).",
)
async def webhook() -> Response:
    services = current_services()
    secrets_ = await trio.to_thread.run_sync(_secrets)
    if not secrets_:
        raise Problem(
            "psp_not_configured", "this server has no PSP webhook secret (psp_secrets_file)"
        )
    raw = await request_body()
    try:
        pspsig.verify(request.headers.get(wire.PSP_SIGNATURE_HEADER), raw, secrets_, time.time())
    except pspsig.WebhookSignatureError as exc:
        raise Problem(exc.code, exc.detail) from None
    # Only a genuine PSP gets this far: parse strictly now (a forger learns nothing).
    try:
        doc = validation.decode_json(raw)
    except validation.MalformedJSON as exc:
        raise Problem("malformed_json", str(exc)) from None
    if not isinstance(doc, dict):
        raise Problem(
            "validation_failed",
            "the event must be a JSON object",
            extra={"errors": [{"field": "$", "message": "must be a JSON object"}]},
        )
    data_doc = doc.pop("data", None)
    event = _parse(Envelope, doc, "")
    answer: dict[str, Any] = {"event_id": event.id, "type": event.type}
    if event.type not in MONEY_TYPES:
        log.info(
            "%s psp event ignored event_id=%s type=%s",
            log_context(request.scope),
            event.id,
            event.type,
        )
        return json_response({**answer, "status": "ignored"})
    environment = services.config.environment
    principal = psp_principal(environment)
    if event.type in ("deposit.completed", "withdrawal.completed"):
        data = _parse(MoneyData, data_doc, "data.")
        _same_environment(data.environment, environment)
        response = await psp_money_now(principal, event.id, event.type, data)
    else:
        rdata = _parse(ReversalData, data_doc, "data.")
        _same_environment(rdata.environment, environment)
        response = await psp_reversal_now(principal, event.id, event.type, rdata)
    if response.status_code == 200:
        outcome = json.loads(await response.get_data(as_text=False))
        log.info(
            "%s psp event %s event_id=%s type=%s replayed=%s%s",
            log_context(request.scope),
            outcome.get("status"),
            event.id,
            event.type,
            outcome.get("replayed"),
            f" reason={outcome['reason']}" if "reason" in outcome else "",
        )
    return response


def psp_principal(environment: str) -> Principal:
    """Who a PSP event's command runs as: the PSP, authenticated by its signature (no
    API key, no scopes: the commands below need none)."""
    return Principal("psp", "", environment, frozenset())


# The money-moving cores, run by the engine (in a process without it, sent to it as
# commands). No Idempotency-Key: the ledger keys each PSP op by its event id
# (``psp:{environment}:{event id}``), so a redelivery, or the same event taken by two
# API processes, or a command re-read after the engine restarted, moves money once and
# is answered ``replayed: true``.


@forwarded_query("psp_money", str, str, MoneyData)
async def psp_money_now(
    principal: Principal,
    event_id: str,
    event_type: str,
    data: MoneyData,
    services: Services | None = None,
) -> Response:
    """A ``deposit.completed`` or ``withdrawal.completed`` event, verified and parsed."""
    services = services or current_services()
    if event_type not in ("deposit.completed", "withdrawal.completed"):
        raise Problem("invalid_request", f"not a deposit or withdrawal: {event_type!r}")
    _checked_again(services, event_id, data.environment)
    ledger = services.require_game().game.ledger
    move = ledger.psp_deposit if event_type == "deposit.completed" else ledger.psp_withdrawal
    return await _posted(
        event_id,
        event_type,
        lambda: move(
            event_id,
            environment=data.environment,
            partner_id=data.partner_id,
            user_id=data.user_id,
            amount=data.amount,
        ),
    )


@forwarded_query("psp_reversal", str, str, ReversalData)
async def psp_reversal_now(
    principal: Principal,
    event_id: str,
    event_type: str,
    data: ReversalData,
    services: Services | None = None,
) -> Response:
    """A ``withdrawal.failed`` or ``withdrawal.reversed`` event (the same op for both)."""
    services = services or current_services()
    if event_type not in ("withdrawal.failed", "withdrawal.reversed"):
        raise Problem("invalid_request", f"not a withdrawal reversal: {event_type!r}")
    _checked_again(services, event_id, data.environment)
    ledger = services.require_game().game.ledger
    return await _posted(
        event_id,
        event_type,
        lambda: ledger.psp_withdrawal_reversal(
            event_id, environment=data.environment, withdrawal_id=data.withdrawal_id
        ),
    )


def _checked_again(services: Services, event_id: str, environment: str) -> None:
    """What the engine checks itself of a command (the body's fields are validated
    again by the command's decoding): the event id is a well-formed ledger key, and the
    event is for the books this engine keeps (an API process configured for another
    environment must not credit here)."""
    if re.fullmatch(EVENT_ID, event_id) is None:
        raise Problem("invalid_request", "not a PSP event id")
    _same_environment(environment, services.config.environment)


async def _posted(
    event_id: str, event_type: str, move: Callable[[], Awaitable[Posted]]
) -> Response:
    answer: dict[str, Any] = {"event_id": event_id, "type": event_type}
    try:
        with trio.CancelScope(shield=True):  # once submitted, see it through and answer
            posted = await move()
    except LedgerError as err:
        if err.code in REJECTIONS:
            return json_response(
                {**answer, "status": "rejected", "reason": err.code, "replayed": err.replayed}
            )
        raise problem_from(err) from None
    return json_response(
        {
            **answer,
            "status": "applied",
            "replayed": posted.replayed,
            "amount": posted.amount,
            "balance": posted.balance,
        }
    )


def _same_environment(event_env: str, server_env: str) -> None:
    # One environment per server: a production event at a sandbox server is misrouted,
    # and must not land in books this server does not serve.
    if event_env != server_env:
        raise Problem(
            "environment_mismatch", f"this server serves {server_env}; the event is for {event_env}"
        )


__all__ = ["EVENT_ID", "MONEY_TYPES", "MoneyData", "ReversalData", "SecretFile", "psp"]

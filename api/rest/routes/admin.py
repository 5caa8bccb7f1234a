"""The operator's endpoints (``/api/v1/admin/…``, scopes ``admin:*``).

Reads (``admin:read``): the live state as the operator sees it (round, house bankroll,
exposure against the cap, RTP, subscribers, chain), the limits in force, the audit log,
the keys, recent PSP events. Writes, each one audit-log entry written in the same
commit as its effect (who: the key id; when; the state before and after):

* ``PATCH /admin/limits`` (``admin:control``): stakes, bets per user, max win, max
  profit (fixed, or a share of the bankroll), from the next round on;
* ``POST /admin/pause``, ``/admin/resume``, ``/admin/void`` (``admin:control``);
* ``POST /admin/keys/{key_id}/revoke`` (``admin:control``);
* ``POST /admin/bankroll/deposit``, ``/admin/bankroll/withdraw`` (``admin:bankroll``).

Writes with an API key are signed and carry an ``Idempotency-Key``, as bets do
(``crashd admin …`` does both); the operator's page sends them with its operator token
(``POST /admin/session``, one hour, the key's admin scopes), which cannot sign: the
token is the credential, as a user's token is for its own bets.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass, fields
from typing import Annotated, Any

import trio
from quart import Blueprint, Response

from crashd.api.ops.chains import PUBLISHED as CHAIN_PUBLISHED
from crashd.api.ops.chains import SALTED as CHAIN_SALTED
from crashd.api.ops.chains import published_entry
from crashd.api.ops.runtime import LIMITS_ACTION, Ops, entry_body
from crashd.api.rest.commands import forwarded, forwarded_query
from crashd.api.rest.contract import V, documented, json_body, json_response, query_params
from crashd.api.rest.idempotency import IdempotencyToken, idempotent, stored_or
from crashd.api.rest.problems import Problem, problem_response
from crashd.api.rest.validation import Integer, String
from crashd.api.security import feedtokens
from crashd.api.security.auth import requires_scope
from crashd.api.security.guard import signed
from crashd.api.security.keys import KeyStoreError, Principal
from crashd.api.services import Services, current_services
from crashd.api.wire import (
    ADMIN_SCOPES,
    API_PREFIX,
    SCOPE_ADMIN_BANKROLL,
    SCOPE_ADMIN_CONTROL,
    SCOPE_ADMIN_READ,
    SCOPE_GAME_STATE,
    iso_ms,
)
from crashd.engine.bounds import MAX_AMOUNT
from crashd.engine.ledger import LedgerError
from crashd.engine.ledger.model import BankrollMoved, Recorded, Result
from crashd.engine.limits import MAX_BANKROLL_BP, MAX_BETS_PER_USER, LimitsError

from .bets import problem_from

admin = Blueprint("admin", __name__, url_prefix=API_PREFIX)

OPERATOR_TOKEN_TTL_S = 3600
NOTE = String(max_length=500, description="why (kept in the audit log)")
OBJECT: dict[str, Any] = {"type": "object"}


def _ops(services: Services) -> Ops:
    if services.ops is None:
        raise Problem("engine_unavailable", "the game engine is not running")
    return services.ops


def signed_for_keys(view: V) -> V:
    """``@signed`` for API keys; an operator token (a bearer credential of its own,
    from ``POST /admin/session``) is not signed."""
    checked = signed(view)

    @functools.wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        principal: Principal = kwargs["principal"]
        if principal.via_token:
            return await view(*args, **kwargs)
        return await checked(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def actor(principal: Principal) -> str:
    return principal.key_id + (" (operator page)" if principal.via_token else "")


async def record(
    services: Services,
    idempotency: IdempotencyToken,
    principal: Principal,
    action: str,
    before: Any,
    after: Any,
    note: str,
    body: dict[str, Any],
    status: int = 200,
) -> Response:
    """Write the audit entry (with the request's reply, one commit) and answer."""
    ledger = services.require_game().game.ledger

    def render(result: Result) -> tuple[int, Any]:
        assert isinstance(result, Recorded)
        return status, {**body, "audit_seq": result.seq}

    slot = idempotency.slot(render)
    try:
        with trio.CancelScope(shield=True):
            await ledger.audit_record(
                "admin:" + idempotency.scoped_id,
                environment=services.config.environment,
                actor=actor(principal),
                action=action,
                before=None if before is None else json.dumps(before, separators=(",", ":")),
                after=None if after is None else json.dumps(after, separators=(",", ":")),
                note=note,
                reply=slot,
            )
    except LedgerError as err:
        raise problem_from(err) from None
    return stored_or(slot, lambda: json_response(body, status=status))


# -- the operator's view ---------------------------------------------------------------


def state_body(services: Services) -> dict[str, Any]:
    ops = _ops(services)
    rt = services.require_game()
    engine = rt.game.engine
    snap = engine.last_snapshot() if not engine.finished else None
    hub = services.hub.statistics() if services.hub is not None else None
    feed = services.feed_server.statistics() if services.feed_server is not None else None
    chains = services.chains
    return {
        "environment": services.config.environment,
        "server_time": iso_ms(int(time.time() * 1000)),
        "paused": engine.paused,
        "round": None
        if snap is None
        else {
            "round_id": snap.round_id,
            "status": snap.status,
            "multiplier": snap.multiplier,
            "bets": snap.participant_count,
            "cashed_out": snap.cashed_out_count,
            "stake": snap.total_stake,
            "payout": snap.total_payout,
            "next_round_bets": snap.next_round_bets,
        },
        "house": {
            "balance": ops.house,
            "funded": ops.capital,
            "profit": ops.house - ops.capital,
            "exposure": ops.exposure(),
            "round_max_profit": ops.round_cap(),
            "next_round_max_profit": ops.max_profit(),
        },
        "limits": ops.limits.to_dict(),
        "rtp": ops.rtp(),
        "feed": {
            "subscribers": hub.subscribers if hub else 0,
            "connections": feed.connections if feed else 0,
            "resyncs": hub.resyncs if hub else 0,
            "closes": {str(k): v for k, v in (feed.closes if feed else {}).items()},
        },
        "chain": chains.status() if chains is not None else None,
        "rounds_ended": {"crashed": ops.book.rounds_crashed, "voided": ops.book.rounds_voided},
    }


@admin.get("/admin/state")
@documented(
    "The operator's view: live round, house bankroll and exposure, limits, RTP, feed, chain",
    response=OBJECT,
    tags=("admin",),
    problems=("engine_unavailable",),
)
@requires_scope(SCOPE_ADMIN_READ, tokens=True)
async def admin_state(*, principal: Principal) -> Response:
    return await admin_state_now(principal)


@forwarded_query("admin_state")
async def admin_state_now(principal: Principal, services: Services | None = None) -> Response:
    services = services or current_services()
    return json_response(state_body(services), headers={"Cache-Control": "no-store"})


@admin.get("/admin/limits")
@documented(
    "The limits in force", response=OBJECT, tags=("admin",), problems=("engine_unavailable",)
)
@requires_scope(SCOPE_ADMIN_READ, tokens=True)
async def get_limits(*, principal: Principal) -> Response:
    return await limits_now(principal)


@forwarded_query("admin_limits")
async def limits_now(principal: Principal, services: Services | None = None) -> Response:
    return json_response(_ops(services or current_services()).limits.to_dict())


@dataclass(frozen=True)
class LimitsBody:
    """Only the limits given change; each is checked with the others."""

    min_stake: Annotated[int | None, Integer(minimum=1, maximum=MAX_AMOUNT)] = None
    max_stake: Annotated[int | None, Integer(minimum=1, maximum=MAX_AMOUNT)] = None
    max_bets_per_user: Annotated[int | None, Integer(minimum=1, maximum=MAX_BETS_PER_USER)] = None
    max_win: Annotated[
        int | None, Integer(minimum=0, maximum=MAX_AMOUNT, description="0: no cap")
    ] = None
    max_profit_mode: Annotated[
        str | None, String(pattern="fixed|bankroll", description="fixed or bankroll")
    ] = None
    max_profit: Annotated[
        int | None,
        Integer(minimum=0, maximum=MAX_AMOUNT * 1000, description="fixed mode; 0: no cap"),
    ] = None
    max_profit_bp: Annotated[
        int | None,
        Integer(minimum=1, maximum=MAX_BANKROLL_BP, description="bankroll mode, basis points"),
    ] = None
    note: Annotated[str | None, NOTE] = None


@admin.patch("/admin/limits")
@documented(
    "Change limits from the next round on (recorded in the audit log)",
    response=OBJECT,
    tags=("admin",),
    problems=("invalid_limits", "engine_unavailable"),
)
@requires_scope(SCOPE_ADMIN_CONTROL, tokens=True)
@signed_for_keys
@idempotent
@json_body(LimitsBody)
async def patch_limits(
    *, principal: Principal, idempotency: IdempotencyToken, body: LimitsBody
) -> Response:
    return await patch_limits_now(principal, idempotency, body)


@forwarded("admin_limits_patch", LimitsBody)
async def patch_limits_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: LimitsBody,
    services: Services | None = None,
) -> Response:
    services = services or current_services()
    ops = _ops(services)
    changes = {
        f.name: getattr(body, f.name)
        for f in fields(body)
        if f.name != "note" and getattr(body, f.name) is not None
    }
    async with ops.limits_lock:  # one change at a time: each entry's "before" is true
        before = ops.limits
        try:
            after = before.changed(**changes)
        except LimitsError as exc:
            raise Problem("invalid_limits", str(exc), extra={"field": exc.field}) from None
        response = await record(
            services,
            idempotency,
            principal,
            LIMITS_ACTION,
            before.to_dict(),
            after.to_dict(),
            body.note or "",
            {"limits": after.to_dict(), "effective": "from the next round"},
        )
        if response.status_code == 200:
            ops.limits = after
            ops.apply()
    return response


@dataclass(frozen=True)
class NoteBody:
    note: Annotated[str | None, NOTE] = None


@admin.post("/admin/pause")
@documented(
    "Pause after the current round (bets for the next round are refunded and refused)",
    response=OBJECT,
    tags=("admin",),
    problems=("engine_unavailable",),
)
@requires_scope(SCOPE_ADMIN_CONTROL, tokens=True)
@signed_for_keys
@idempotent
@json_body(NoteBody)
async def pause(*, principal: Principal, idempotency: IdempotencyToken, body: NoteBody) -> Response:
    return await pause_now(principal, idempotency, body)


@forwarded("admin_pause", NoteBody)
async def pause_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: NoteBody,
    services: Services | None = None,
) -> Response:
    services = services or current_services()
    engine = services.require_game().game.engine
    was = engine.paused
    engine.pause()
    await services.require_game().game.ledger.barrier()  # the refunds committed
    round_id = engine.last_snapshot().round_id
    return await record(
        services,
        idempotency,
        principal,
        "pause",
        {"paused": was},
        {"paused": True, "round_id": round_id},
        body.note or "",
        {"paused": True, "round_id": round_id, "effective": "after the current round"},
    )


@admin.post("/admin/resume")
@documented(
    "Resume a paused game", response=OBJECT, tags=("admin",), problems=("engine_unavailable",)
)
@requires_scope(SCOPE_ADMIN_CONTROL, tokens=True)
@signed_for_keys
@idempotent
@json_body(NoteBody)
async def resume(
    *, principal: Principal, idempotency: IdempotencyToken, body: NoteBody
) -> Response:
    return await resume_now(principal, idempotency, body)


@forwarded("admin_resume", NoteBody)
async def resume_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: NoteBody,
    services: Services | None = None,
) -> Response:
    services = services or current_services()
    engine = services.require_game().game.engine
    was = engine.paused
    engine.resume()
    return await record(
        services,
        idempotency,
        principal,
        "resume",
        {"paused": was},
        {"paused": False},
        body.note or "",
        {"paused": False},
    )


@admin.post("/admin/void")
@documented(
    "Void the current round: every open bet refunded exactly once, its burnt game revealed",
    response=OBJECT,
    tags=("admin",),
    problems=("round_not_voidable", "engine_unavailable"),
)
@requires_scope(SCOPE_ADMIN_CONTROL, tokens=True)
@signed_for_keys
@idempotent
@json_body(NoteBody)
async def void(*, principal: Principal, idempotency: IdempotencyToken, body: NoteBody) -> Response:
    return await void_now(principal, idempotency, body)


@forwarded("admin_void", NoteBody)
async def void_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: NoteBody,
    services: Services | None = None,
) -> Response:
    services = services or current_services()
    game = services.require_game().game
    from crashd.engine.round.events import Rejected, RoundVoided

    events = game.engine.void_round("operator")
    voided = next((e for e in events if isinstance(e, RoundVoided)), None)
    if voided is None:
        rejected = next((e for e in events if isinstance(e, Rejected)), None)
        raise Problem(
            "round_not_voidable",
            "the current round is not betting or running (it crashed already)",
            extra={"round_id": rejected.round_id if rejected else None},
        )
    await game.ledger.barrier()  # the void and its refunds committed
    after = {
        "round_id": voided.round_id,
        "refunded": voided.refunded,
        "crash_point": voided.crash_point,
        "game_hash": voided.game_hash,
    }
    return await record(
        services, idempotency, principal, "void", None, after, body.note or "", {"voided": after}
    )


# -- the bankroll ----------------------------------------------------------------------


@dataclass(frozen=True)
class BankrollBody:
    amount: Annotated[int, Integer(minimum=1, maximum=MAX_AMOUNT, description="minor units")]
    note: Annotated[str | None, NOTE] = None


async def _bankroll(
    direction: str,
    principal: Principal,
    idempotency: IdempotencyToken,
    body: BankrollBody,
    services: Services | None,
) -> Response:
    services = services or current_services()
    ops = _ops(services)
    ledger = services.require_game().game.ledger

    def render(result: Result) -> tuple[int, Any]:
        assert isinstance(result, BankrollMoved)
        return 201, {
            "direction": direction,
            "amount": result.amount,
            "house": result.house,
            "audit_seq": result.seq,
        }

    slot = idempotency.slot(render)
    try:
        with trio.CancelScope(shield=True):
            moved = await ledger.bankroll_move(
                "bankroll:" + idempotency.scoped_id,
                environment=services.config.environment,
                direction=direction,
                amount=body.amount,
                actor=actor(principal),
                note=body.note or "",
                reply=slot,
            )
            await ops.refresh()
    except LedgerError as err:
        problem = problem_from(err)
        if slot.stored is not None or slot.existing is not None:
            return stored_or(slot, lambda: problem_response(problem, idempotency.request_id))
        raise problem from None
    return stored_or(slot, lambda: json_response(render(moved)[1], status=201))


BANKROLL_PROBLEMS = ("insufficient_funds", "idempotency_conflict", "engine_unavailable")


@admin.post("/admin/bankroll/deposit")
@documented(
    "Fund the house bankroll (a recorded ledger op: capital → house)",
    response=OBJECT,
    status=201,
    tags=("admin",),
    problems=BANKROLL_PROBLEMS,
)
@requires_scope(SCOPE_ADMIN_BANKROLL, tokens=True)
@signed_for_keys
@idempotent
@json_body(BankrollBody)
async def bankroll_deposit(
    *, principal: Principal, idempotency: IdempotencyToken, body: BankrollBody
) -> Response:
    return await bankroll_deposit_now(principal, idempotency, body)


@forwarded("admin_bankroll_deposit", BankrollBody)
async def bankroll_deposit_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: BankrollBody,
    services: Services | None = None,
) -> Response:
    return await _bankroll("deposit", principal, idempotency, body, services)


@admin.post("/admin/bankroll/withdraw")
@documented(
    "Take money out of the house bankroll (house → capital; never below zero)",
    response=OBJECT,
    status=201,
    tags=("admin",),
    problems=BANKROLL_PROBLEMS,
)
@requires_scope(SCOPE_ADMIN_BANKROLL, tokens=True)
@signed_for_keys
@idempotent
@json_body(BankrollBody)
async def bankroll_withdraw(
    *, principal: Principal, idempotency: IdempotencyToken, body: BankrollBody
) -> Response:
    return await bankroll_withdraw_now(principal, idempotency, body)


@forwarded("admin_bankroll_withdraw", BankrollBody)
async def bankroll_withdraw_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: BankrollBody,
    services: Services | None = None,
) -> Response:
    return await _bankroll("withdrawal", principal, idempotency, body, services)


# -- the audit log, keys, PSP events ---------------------------------------------------


@dataclass(frozen=True)
class AuditQuery:
    action: Annotated[str | None, String(min_length=1, max_length=64)] = None
    before: Annotated[int | None, Integer(minimum=1)] = None
    limit: Annotated[int | None, Integer(minimum=1, maximum=200)] = None


@admin.get("/admin/audit")
@documented("The audit log, newest first", response=OBJECT, tags=("admin",))
@requires_scope(SCOPE_ADMIN_READ, tokens=True)
@query_params(AuditQuery)
async def audit_log(*, principal: Principal, query: AuditQuery) -> Response:
    services = current_services()
    limit = query.limit or 50
    # A read: from the database, in an API process too (``require_ledger``).
    entries = await services.require_ledger().audit_entries(
        services.config.environment,
        actions=(query.action,) if query.action else (),
        limit=limit,
        before=query.before,
    )
    return json_response(
        {
            "entries": [entry_body(e) for e in entries],
            "next_cursor": entries[-1].seq if len(entries) == limit else None,
        },
        headers={"Cache-Control": "no-store"},
    )


@admin.get("/admin/keys")
@documented("Every API key (never a secret)", response=OBJECT, tags=("admin",))
@requires_scope(SCOPE_ADMIN_READ, tokens=True)
async def list_keys(*, principal: Principal) -> Response:
    keys = await trio.to_thread.run_sync(current_services().keys.list)
    return json_response(
        {
            "keys": [
                {
                    "id": k.id,
                    "prefix": k.prefix,
                    "environment": k.environment,
                    "partner_id": k.partner_id,
                    "scopes": list(k.scopes),
                    "label": k.label,
                    "created_at": k.created_at,
                    "revoked_at": k.revoked_at,
                    "last_used_at": k.last_used_at,
                }
                for k in keys
            ]
        },
        headers={"Cache-Control": "no-store"},
    )


@admin.post("/admin/keys/<key_id>/revoke")
@documented(
    "Revoke a key now (and close the feed connections it opened)",
    response=OBJECT,
    tags=("admin",),
    problems=("unknown_key", "engine_unavailable"),
)
@requires_scope(SCOPE_ADMIN_CONTROL, tokens=True)
@signed_for_keys
@idempotent
@json_body(NoteBody)
async def revoke_key(
    key_id: str, *, principal: Principal, idempotency: IdempotencyToken, body: NoteBody
) -> Response:
    services = current_services()
    if len(key_id) > 64:
        raise Problem("unknown_key", "no such key")
    # Revoked in the key store by whichever process took the request, before anything
    # else: every process refuses the key from then on, even while the engine is away.
    try:
        before = await trio.to_thread.run_sync(services.keys.get, key_id)
        if before is None:
            raise KeyStoreError("no such key")
        key = await trio.to_thread.run_sync(services.keys.revoke, key_id)
    except KeyStoreError:
        raise Problem("unknown_key", "no such key", extra={"key_id": key_id}) from None
    assert key.revoked_at is not None
    revoked = RevokedKey(key_id, key.revoked_at, before.revoked_at, body.note)
    return await key_revoked_now(principal, idempotency, revoked)


@dataclass(frozen=True)
class RevokedKey:
    """A revocation done in the key store, as the engine is told of it."""

    key_id: Annotated[str, String(min_length=1, max_length=64)]
    revoked_at: Annotated[str, String(min_length=1, max_length=64)]
    revoked_before: Annotated[
        str | None, String(min_length=1, max_length=64, description="already revoked then")
    ] = None
    note: Annotated[str | None, NOTE] = None


@forwarded("admin_key_revoked", RevokedKey)
async def key_revoked_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    revoked: RevokedKey,
    services: Services | None = None,
) -> Response:
    """The engine's side of a revocation: its feed connections opened by the key
    closed (and its edges told to close theirs), the audit entry written (from an API process too: sent here as a command)."""
    services = services or current_services()
    key_id = revoked.key_id
    closed = services.close_key_connections(key_id)  # and every edge told
    return await record(
        services,
        idempotency,
        principal,
        "key_revoke",
        {"key_id": key_id, "revoked_at": revoked.revoked_before},
        {"key_id": key_id, "revoked_at": revoked.revoked_at},
        revoked.note or "",
        {"key_id": key_id, "revoked_at": revoked.revoked_at, "feed_connections_closed": closed},
    )


@admin.get("/admin/psp-events")
@documented("Recent PSP webhook events the ledger recorded", response=OBJECT, tags=("admin",))
@requires_scope(SCOPE_ADMIN_READ, tokens=True)
async def psp_events(*, principal: Principal) -> Response:
    services = current_services()
    events = await services.require_ledger().recent_ops(
        ("psp_deposit", "psp_withdrawal", "psp_withdrawal_reversal"), 20
    )
    return json_response(
        {
            "events": [
                {
                    "seq": seq,
                    "kind": kind,
                    "event_id": key.split(":", 2)[-1],
                    "ok": ok,
                    "code": code,
                    "amount": json.loads(result).get("amount") if ok else None,
                    "at": iso_ms(ts),
                }
                for seq, key, kind, ok, code, result, ts in events
            ]
        },
        headers={"Cache-Control": "no-store"},
    )


# -- hash chains -------------------------------------------------------------------------


@admin.get("/admin/chain")
@documented(
    "The hash chains: the current one, the next, games left",
    response=OBJECT,
    tags=("admin",),
    problems=("engine_unavailable",),
)
@requires_scope(SCOPE_ADMIN_READ, tokens=True)
async def chain_status(*, principal: Principal) -> Response:
    return await chain_status_now(principal)


@forwarded_query("admin_chain")
async def chain_status_now(principal: Principal, services: Services | None = None) -> Response:
    chains = (services or current_services()).chains
    if chains is None:
        raise Problem("engine_unavailable", "the game engine is not running")
    return json_response({**chains.status(), "chains": [c.public() for c in chains.chains]})


@dataclass(frozen=True)
class NextChainBody:
    length: Annotated[
        int | None,
        Integer(minimum=1, maximum=1_000_000_000, description="games (default: chain_length)"),
    ] = None
    note: Annotated[str | None, NOTE] = None


@admin.post("/admin/chain/next")
@documented(
    "Create and publish the next hash chain (its commitment is public before its first game)",
    response=OBJECT,
    status=201,
    tags=("admin",),
    problems=("chain_not_ready", "engine_unavailable"),
)
@requires_scope(SCOPE_ADMIN_CONTROL, tokens=True)
@signed_for_keys
@idempotent
@json_body(NextChainBody)
async def next_chain(
    *, principal: Principal, idempotency: IdempotencyToken, body: NextChainBody
) -> Response:
    return await next_chain_now(principal, idempotency, body)


@forwarded("admin_chain_next", NextChainBody)
async def next_chain_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: NextChainBody,
    services: Services | None = None,
) -> Response:
    services = services or current_services()
    chains = services.chains
    if chains is None:
        raise Problem("engine_unavailable", "the game engine is not running")
    async with _ops(services).limits_lock:
        if chains.pending() is not None:
            raise Problem(
                "chain_not_ready", "a next chain is published already and waits for its turn"
            )
        length = body.length or services.config.chain_length
        sandbox = services.config.environment == "sandbox"
        chain = await trio.to_thread.run_sync(
            chains.create_next, services.config.chain_file, length, sandbox
        )
        response = await record(
            services,
            idempotency,
            principal,
            CHAIN_PUBLISHED,
            None,
            json.loads(published_entry(chain)),
            body.note or "",
            {"chain": chain.public(), "salt_needed": chain.salt is None},
            status=201,
        )
        if response.status_code == 201:
            chains.add(chain)
    return response


@dataclass(frozen=True)
class SaltBody:
    salt: Annotated[str, String(min_length=1, max_length=256, pattern=r"[\x21-\x7e]+")]
    note: Annotated[str | None, NOTE] = None


@admin.post("/admin/chain/salt")
@documented(
    "Fix the public salt of the published next chain (after its commitment was published)",
    response=OBJECT,
    tags=("admin",),
    problems=("chain_not_ready", "engine_unavailable"),
)
@requires_scope(SCOPE_ADMIN_CONTROL, tokens=True)
@signed_for_keys
@idempotent
@json_body(SaltBody)
async def chain_salt(
    *, principal: Principal, idempotency: IdempotencyToken, body: SaltBody
) -> Response:
    return await chain_salt_now(principal, idempotency, body)


@forwarded("admin_chain_salt", SaltBody)
async def chain_salt_now(
    principal: Principal,
    idempotency: IdempotencyToken,
    body: SaltBody,
    services: Services | None = None,
) -> Response:
    services = services or current_services()
    chains = services.chains
    if chains is None:
        raise Problem("engine_unavailable", "the game engine is not running")
    async with _ops(services).limits_lock:
        chain = chains.pending()
        if chain is None or chain.salt is not None:
            raise Problem("chain_not_ready", "no published chain is waiting for its salt")
        await trio.to_thread.run_sync(chains.fix_salt, chain, body.salt)
        return await record(
            services,
            idempotency,
            principal,
            CHAIN_SALTED,
            {"chain": chain.number, "salt": None},
            {"chain": chain.number, "salt": body.salt},
            body.note or "",
            {"chain": chain.public()},
        )


# -- the operator's page session -------------------------------------------------------

SESSION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["token", "expires_at", "scopes", "url"],
    "properties": {
        "token": {"type": "string"},
        "expires_at": {"type": "integer"},
        "scopes": {"type": "array", "items": {"type": "string"}},
        "url": {"type": "string", "description": "/operator#token=…"},
    },
}


@admin.post("/admin/session")
@documented(
    "An operator token for the operator's page (one hour, this key's admin scopes)",
    response=SESSION_SCHEMA,
    status=201,
    tags=("admin",),
)
@requires_scope(SCOPE_ADMIN_READ)
async def operator_session(*, principal: Principal) -> Response:
    services = current_services()
    expires = int(time.time()) + OPERATOR_TOKEN_TTL_S
    # The key's admin scopes, and the public game's (the page charts finished rounds).
    scopes = frozenset(s for s in principal.scopes if s in ADMIN_SCOPES) | {SCOPE_GAME_STATE}
    token = services.authenticator.issue_token(
        feedtokens.FeedClaims(
            principal.key_id, principal.partner_id, principal.environment, scopes, expires
        )
    )
    return json_response(
        {
            "token": token,
            "expires_at": expires,
            "scopes": sorted(scopes),
            "url": f"/operator#token={token}",
        },
        status=201,
        headers={"Cache-Control": "no-store"},
    )


__all__ = ["admin", "state_body"]

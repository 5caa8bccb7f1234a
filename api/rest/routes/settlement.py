"""Verifiable settlement over REST (docs/fairness.md): each round's signed transcript
and start seal, the transcripts in bulk, and the server's public signing keys.

A transcript and a seal never change once written, so they are served as stored (the
signed canonical JSON, byte for byte) with a strong ETag (the document's hash) and an
immutable cache lifetime. The key set is served at ``/.well-known/crashd-keys`` (RFC
8615) as a JSON Web Key Set (RFC 7517, keys per RFC 8037), without credentials.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any

from quart import Blueprint, Response, request

from crashd.api.rest.conditional import CONDITIONAL_HEADERS, CONDITIONAL_RESPONSES
from crashd.api.rest.contract import documented, json_response, query_params
from crashd.api.rest.problems import Problem
from crashd.api.rest.validation import MAX_INTEGER, Integer
from crashd.api.security.auth import requires_scope
from crashd.api.security.keys import Principal
from crashd.api.services import Services, current_services
from crashd.api.wire import API_PREFIX
from crashd.engine.notary import Notary
from crashd.engine.settlement.documents import jwk

settlement = Blueprint("settlement", __name__, url_prefix=API_PREFIX)
well_known = Blueprint("well_known", __name__)

KEYS_PATH = "/.well-known/crashd-keys"
IMMUTABLE = "public, max-age=31536000, immutable"
EXPORT_MAX = 100
"""Transcripts per page of ``GET /game/transcripts`` (each up to a few hundred KB)."""

DOCUMENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["v", "type", "round_id", "key_id", "sig"],
    "description": "a signed document, byte for byte as signed (docs/fairness.md)",
}


def key_set(services: Services | None = None) -> dict[str, Any]:
    """The JWK Set of the signing keys: the notary's, or in a process without the
    engine the set the engine published (empty on an app that runs no game)."""
    services = services or current_services()
    if services.notary is None and services.published_keys is not None:
        return services.published_keys
    return key_set_of(services.notary)


def key_set_of(notary: Notary | None) -> dict[str, Any]:
    keys = notary.signer.keys().values() if notary is not None else ()
    return {"keys": [jwk(raw) for raw in keys]}


def _stored(document: str, etag_hex: str) -> Response:
    etag = f'"{etag_hex}"'
    headers = {"ETag": etag, "Cache-Control": IMMUTABLE}
    sent = request.headers.get("If-None-Match")
    if sent is not None and (
        sent.strip() == "*" or etag in {t.strip().removeprefix("W/") for t in sent.split(",")}
    ):
        return Response(b"", status=304, headers=headers)
    return Response(document.encode(), content_type="application/json", headers=headers)


async def _finished(round_id: int) -> None:
    ledger = current_services().require_ledger()
    view = await ledger.round(round_id)
    if view is None:
        raise Problem("unknown_round", f"no round {round_id} has been played")


@settlement.get(f"/game/rounds/<int(max={MAX_INTEGER}):round_id>/transcript")
@documented(
    "A settled round's signed transcript: every bet, command, outcome and the crash, "
    "chained to the round before (immutable)",
    response=DOCUMENT_SCHEMA,
    tags=("fairness",),
    problems=(
        "unknown_round",
        "round_not_finished",
        "transcript_unavailable",
        "engine_unavailable",
    ),
    headers=CONDITIONAL_HEADERS,
    extra_responses=CONDITIONAL_RESPONSES,
)
@requires_scope("read:game_state", tokens=True)
async def transcript(round_id: int, *, principal: Principal) -> Response:
    ledger = current_services().require_ledger()
    stored = await ledger.transcript(round_id)
    if stored is None:
        view = await ledger.round(round_id)
        if view is None:
            raise Problem("unknown_round", f"no round {round_id} has been played")
        if view.state == "open":
            raise Problem(
                "round_not_finished",
                f"round {round_id} is still being played; its transcript is written when it "
                "is settled",
                extra={"round_id": round_id},
            )
        raise Problem(
            "transcript_unavailable",
            f"round {round_id} was settled before transcripts existed",
            extra={"round_id": round_id},
        )
    digest, document = stored
    return _stored(document, digest)


@settlement.get(f"/game/rounds/<int(max={MAX_INTEGER}):round_id>/seal")
@documented(
    "A round's start seal: the signed Merkle root of the bets in play, with their auto "
    "targets, when betting closed (immutable)",
    response=DOCUMENT_SCHEMA,
    tags=("fairness",),
    problems=("unknown_round", "seal_unavailable", "engine_unavailable"),
    headers=CONDITIONAL_HEADERS,
    extra_responses=CONDITIONAL_RESPONSES,
)
@requires_scope("read:game_state", tokens=True)
async def seal(round_id: int, *, principal: Principal) -> Response:
    ledger = current_services().require_ledger()
    stored = await ledger.seal(round_id)
    if stored is None:
        await _finished(round_id)
        raise Problem(
            "seal_unavailable",
            f"round {round_id} has no start seal (still betting, voided while betting, or "
            "played before seals existed)",
            extra={"round_id": round_id},
        )
    return _stored(stored, hashlib.sha256(stored.encode()).hexdigest()[:32])


@dataclass(frozen=True)
class TranscriptsQuery:
    from_round: Annotated[
        int, Integer(minimum=1, maximum=MAX_INTEGER, description="first round id")
    ] = 1
    to_round: Annotated[
        int, Integer(minimum=1, maximum=MAX_INTEGER, description="last round id")
    ] = MAX_INTEGER
    limit: Annotated[int, Integer(minimum=1, maximum=EXPORT_MAX, description="page size")] = 20


@settlement.get("/game/transcripts")
@documented(
    "Transcripts of a range of rounds, oldest first (crashd audit export pages through it)",
    response={
        "type": "object",
        "required": ["transcripts", "next_round"],
        "properties": {
            "transcripts": {"type": "array", "items": DOCUMENT_SCHEMA},
            "next_round": {
                "type": ["integer", "null"],
                "description": "pass as from_round for the next page",
            },
        },
    },
    tags=("fairness",),
    problems=("engine_unavailable",),
)
@requires_scope("read:game_state", tokens=True)
@query_params(TranscriptsQuery)
async def transcripts(*, principal: Principal, query: TranscriptsQuery) -> Response:
    ledger = current_services().require_ledger()
    rows = await ledger.transcripts(query.from_round, query.to_round, query.limit)
    following = rows[-1][0] + 1 if len(rows) == query.limit else None
    # The documents are spliced in as stored: they are canonical JSON already.
    body = (
        '{"next_round":'
        + ("null" if following is None else str(following))
        + ',"transcripts":['
        + ",".join(document for _, document in rows)
        + "]}"
    )
    return Response(
        body.encode(), content_type="application/json", headers={"Cache-Control": "no-cache"}
    )


@well_known.get(KEYS_PATH)
async def keys() -> Response:
    """The public keys that sign transcripts, seals and receipts (a JWK Set)."""
    return json_response(key_set(), headers={"Cache-Control": "public, max-age=300"})

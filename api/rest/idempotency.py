"""``Idempotency-Key`` for POSTs that move money: one request, one effect, one answer.

Records live in the ``api_idempotency`` table, keyed by (API key id, Idempotency-Key),
so two partners cannot collide. Each holds a fingerprint (SHA-256 of method, path,
query and body; a JSON body in canonical form, so member order and whitespace do not
matter), a state (``in_progress`` / ``done``), the process run that owns it
and, once done, the response (status, content type, body).

For a request with key K:

* no record (or one older than the retention, default 24 h): claim K, run the view,
  store its response;
* a ``done`` record with the same fingerprint: replay the stored response, with
  ``Idempotent-Replayed: true``; the view does not run, nothing moves;
* a record with a different fingerprint: 422 ``idempotency_key_reused``;
* an ``in_progress`` record of this process run: 409 ``idempotency_key_in_flight``;
* an ``in_progress`` record of a *previous* run (the process died mid-request): taken
  over, the view runs again. That is safe because the ledger's own idempotent ids carry
  the same key, so money it already moved is not moved twice.

What is stored: every answer below 500 except 429 (a rate limit is about *when*, not
*what*), including 4xx problems such as ``insufficient_funds``: asking again with the
same key gets the same answer, as with Stripe. A 5xx or an exception (including
cancellation) releases the claim so the client can retry with the same key.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from quart import Response, make_response, request

from crashd.api import database as apidb
from crashd.api.rest import validation
from crashd.api.security.keys import Principal
from crashd.api.wire import IDEMPOTENCY_HEADER, REPLAYED_HEADER

from .contract import V, route_meta
from .problems import Problem, problem_response

KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
"""1-255 visible ASCII characters: room for a UUID, a ULID or a partner's own order id."""

_STORED_HEADERS = ("Content-Type", "Location")

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS api_idempotency (
        key_id           TEXT NOT NULL,
        idempotency_key  TEXT NOT NULL,
        fingerprint      BLOB NOT NULL,
        state            TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
        owner            TEXT NOT NULL,
        created_at       REAL NOT NULL,
        status           INTEGER,
        content_type     TEXT,
        location         TEXT,
        body             BLOB,
        PRIMARY KEY (key_id, idempotency_key)
    )""",
    "CREATE INDEX IF NOT EXISTS api_idempotency_created ON api_idempotency (created_at)",
)


@dataclass(frozen=True)
class Started:
    """The caller owns the key now: run the request, then complete or release."""


@dataclass(frozen=True)
class Replay:
    status: int
    content_type: str
    location: str | None
    body: bytes


@dataclass(frozen=True)
class Reused:
    """Same key, different request."""


@dataclass(frozen=True)
class InFlight:
    """Same key, same request, still running."""


BeginResult = Started | Replay | Reused | InFlight


@dataclass(frozen=True)
class IdempotencyToken:
    """Passed to an idempotent view as ``idempotency=``: the key the client sent, scoped
    to its API key. Give :attr:`scoped_id` to the ledger as the transfer's idempotent id,
    so a retry after a crash cannot move money twice."""

    key_id: str
    key: str

    @property
    def scoped_id(self) -> str:
        # key ids are "key_<hex>" (no "/"), so the split point is unambiguous.
        return f"{self.key_id}/{self.key}"


def canonical_body(body: bytes) -> bytes:
    """The body as it matters: a JSON body re-serialised with sorted members and no
    whitespace, so a client's retry that re-encodes the same JSON still matches; any
    other body byte for byte (it will be refused by validation anyway)."""
    try:
        data = validation.decode_json(body)
    except validation.MalformedJSON:
        return body
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8", "surrogatepass"
    )


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> bytes:
    h = hashlib.sha256()
    for part in (method.encode(), path.encode(), query):
        # Length-prefixed, so ("/a", "b=1") and ("/ab", "=1") cannot collide.
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    h.update(canonical_body(body))
    return h.digest()


class IdempotencyStore:
    """The ``api_idempotency`` table. Thread-safe, blocking; ``now`` is wall-clock
    seconds (records outlive the process, so monotonic time would not do)."""

    def __init__(self, database: Path, *, retention_s: float = 24 * 3600) -> None:
        if retention_s < 24 * 3600:
            raise ValueError("idempotency records must be kept at least 24 hours")
        self.retention_s = retention_s
        self._db = apidb.Connection(database)
        try:
            with self._db.write() as conn:
                for statement in _SCHEMA:
                    conn.execute(statement)
        except sqlite3.Error as exc:
            raise apidb.DatabaseError(
                f"cannot prepare idempotency table in {database}: {exc}"
            ) from None

    def close(self) -> None:
        self._db.close()

    def begin(self, key_id: str, key: str, fp: bytes, owner: str, now: float) -> BeginResult:
        with self._db.write() as conn:
            row = conn.execute(
                "SELECT fingerprint, state, owner, created_at, status, content_type, location, body"
                " FROM api_idempotency WHERE key_id = ? AND idempotency_key = ?",
                (key_id, key),
            ).fetchone()
            if row is not None and row[3] < now - self.retention_s:
                conn.execute(
                    "DELETE FROM api_idempotency WHERE key_id = ? AND idempotency_key = ?",
                    (key_id, key),
                )
                row = None
            if row is None:
                conn.execute(
                    "INSERT INTO api_idempotency (key_id, idempotency_key, fingerprint, state, owner, created_at)"
                    " VALUES (?, ?, ?, 'in_progress', ?, ?)",
                    (key_id, key, fp, owner, now),
                )
                return Started()
            stored_fp, state, stored_owner, _, status, content_type, location, body = row
            if bytes(stored_fp) != fp:
                return Reused()
            if state == "done":
                return Replay(int(status), str(content_type), location, bytes(body))
            if stored_owner != owner:
                conn.execute(
                    "UPDATE api_idempotency SET owner = ? WHERE key_id = ? AND idempotency_key = ?",
                    (owner, key_id, key),
                )
                return Started()
            return InFlight()

    def complete(
        self,
        key_id: str,
        key: str,
        owner: str,
        status: int,
        content_type: str,
        location: str | None,
        body: bytes,
    ) -> None:
        with self._db.write() as conn:
            conn.execute(
                "UPDATE api_idempotency SET state = 'done', status = ?, content_type = ?, location = ?, body = ?"
                " WHERE key_id = ? AND idempotency_key = ? AND owner = ? AND state = 'in_progress'",
                (status, content_type, location, body, key_id, key, owner),
            )

    def release(self, key_id: str, key: str, owner: str) -> None:
        with self._db.write() as conn:
            conn.execute(
                "DELETE FROM api_idempotency WHERE key_id = ? AND idempotency_key = ?"
                " AND owner = ? AND state = 'in_progress'",
                (key_id, key, owner),
            )

    def purge(self, now: float) -> int:
        """Delete records past the retention; returns how many."""
        with self._db.write() as conn:
            cur = conn.execute(
                "DELETE FROM api_idempotency WHERE created_at < ?", (now - self.retention_s,)
            )
            return cur.rowcount

    def count(self) -> int:
        with self._db.read() as conn:
            return int(conn.execute("SELECT count(*) FROM api_idempotency").fetchone()[0])


def _should_store(status: int) -> bool:
    return status < 500 and status != 429


def idempotent(view: V) -> V:
    """Require an ``Idempotency-Key`` and apply the rules above; the view receives
    ``idempotency=`` (an :class:`IdempotencyToken`). Place it inside
    :func:`crashd.api.security.auth.requires_scope` (it needs ``principal=``) and outside
    :func:`crashd.api.rest.contract.json_body` (so validation failures are answered consistently)."""
    from crashd.api.services import current_services  # services imports this module

    route_meta(view).idempotent = True

    @functools.wraps(view)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        principal: Principal = kwargs["principal"]
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if key is None:
            raise Problem(
                "idempotency_key_required",
                f"send an {IDEMPOTENCY_HEADER} header (e.g. a UUID) with this request",
            )
        if KEY_PATTERN.fullmatch(key) is None:
            raise Problem(
                "idempotency_key_invalid",
                f"{IDEMPOTENCY_HEADER} must be 1-255 visible ASCII characters",
            )
        services = current_services()
        store = services.idempotency
        owner = services.instance_id
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        fp = fingerprint(request.method, request.path, request.query_string, body)
        result = await trio.to_thread.run_sync(
            store.begin, principal.key_id, key, fp, owner, time.time()
        )
        if isinstance(result, Replay):
            headers = {REPLAYED_HEADER: "true", "Content-Type": result.content_type}
            if result.location is not None:
                headers["Location"] = result.location
            return Response(result.body, status=result.status, headers=headers)
        if isinstance(result, Reused):
            raise Problem(
                "idempotency_key_reused",
                f"this {IDEMPOTENCY_HEADER} was used for a different request",
            )
        if isinstance(result, InFlight):
            raise Problem(
                "idempotency_key_in_flight",
                f"a request with this {IDEMPOTENCY_HEADER} is still being processed; retry shortly",
                headers={"Retry-After": "1"},
            )
        stored = False
        kwargs["idempotency"] = IdempotencyToken(principal.key_id, key)
        try:
            try:
                response = await make_response(await view(*args, **kwargs))
            except Problem as problem:
                response = problem_response(problem)
            if _should_store(response.status_code):
                raw = response.get_data(as_text=False)
                # Quart's get_data is async, Werkzeug's (a view may return one) is not.
                data: bytes = await raw if inspect.isawaitable(raw) else raw
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(
                        store.complete,
                        principal.key_id,
                        key,
                        owner,
                        response.status_code,
                        response.headers.get("Content-Type", "application/json"),
                        response.headers.get("Location"),
                        data,
                    )
                stored = True
            return response
        finally:
            if not stored:
                # Shielded: a cancelled request must still free its key for a retry.
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(store.release, principal.key_id, key, owner)

    return wrapper  # type: ignore[return-value]

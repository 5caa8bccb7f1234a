"""``Idempotency-Key`` for requests that move money: one request, one effect, one answer,
and one durable commit.

A request's reply is stored by the ledger, in the same transaction (the same group
commit) as the money movement it answers (``crashd.engine.ledger.model.ReplySlot``), in
the ledger's ``replies`` table, keyed by a 16-byte hash of (API key id, Idempotency-Key)
so two partners cannot collide. With it: the request's fingerprint (SHA-256 of method,
path, query and body; a JSON body in canonical form, so member order and whitespace do
not matter) and the reply (status, content type, body).

For a request with key K:

* K is still running in this process: 409 ``idempotency_key_in_flight`` (kept in
  memory: a process that died has nothing in flight);
* K has a stored reply with the same fingerprint: it is replayed with
  ``Idempotent-Replayed: true``; the view does not run, nothing moves;
* with a different fingerprint: 422 ``idempotency_key_reused``;
* otherwise the view runs, and its money op carries K's reply slot into the commit.

Which keys have a stored reply is known in memory (``SeenKeys``, a Bloom filter over
the retention window, rebuilt from the table at start): a new key — almost every
request — costs no read at all, a possible replay one read. What is stored: the answer
to every request whose op reached the ledger, its refusals (``insufficient_funds``…)
included, as the ledger records them. A request refused before any money could move
(the round is closed, a validation error) touches no disk: a retry asks again. Records
are kept ``idempotency_retention_hours`` (at least 24 h), then purged.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quart import Response, request

from crashd.api.rest import validation
from crashd.api.rest.body import request_body
from crashd.api.security.keys import Principal
from crashd.api.wire import IDEMPOTENCY_HEADER, REPLAYED_HEADER
from crashd.engine.ledger.model import LedgerError, ReplySlot, Result, StoredReply

from .contract import V, route_meta
from .problems import PROBLEM_CONTENT_TYPE, Problem

if TYPE_CHECKING:
    from crashd.api.services import Services
    from crashd.engine.ledger import Ledger

KEY_PATTERN = re.compile(r"[\x21-\x7e]{1,255}")
"""1-255 visible ASCII characters: room for a UUID, a ULID or a partner's own order id."""


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


def reply_key(key_id: str, key: str) -> bytes:
    """The 16-byte key a request's reply is stored under (fixed size: the index stays
    compact however long clients' keys are)."""
    return hashlib.blake2b(f"{key_id}/{key}".encode(), digest_size=16).digest()


class SeenKeys:
    """A Bloom filter of the reply keys stored within the retention window.

    ``key in seen`` is never false for a stored key, and wrongly true for about one new
    key in a hundred at the sized capacity: those pay one read. Sized for ``capacity``
    keys; beyond it the false-positive rate rises (still correct), so the server
    rebuilds it from the table after each purge."""

    def __init__(self, capacity: int = 1_000_000, false_positive_rate: float = 0.01) -> None:
        capacity = max(1, capacity)
        bits = max(64, math.ceil(-capacity * math.log(false_positive_rate) / math.log(2) ** 2))
        self._bits = bits
        self._hashes = max(1, round(bits / capacity * math.log(2)))
        self._array = bytearray((bits + 7) // 8)
        self.added = 0

    def _positions(self, key: bytes) -> Iterable[int]:
        # Two 64-bit halves of the key's own hash (it is already a uniform hash),
        # combined Kirsch-Mitzenmacher style into k positions.
        a = int.from_bytes(key[:8], "little")
        b = int.from_bytes(key[8:16], "little") | 1
        return ((a + i * b) % self._bits for i in range(self._hashes))

    def add(self, key: bytes) -> None:
        array = self._array
        for pos in self._positions(key):
            array[pos >> 3] |= 1 << (pos & 7)
        self.added += 1

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, bytes):
            return False
        array = self._array
        return all(array[pos >> 3] & (1 << (pos & 7)) for pos in self._positions(key))


@dataclass
class Idempotency:
    """The process's side of the Idempotency-Key rules: what is in flight, which keys
    may have a stored reply, and the retention."""

    retention_ms: int
    seen: SeenKeys = field(default_factory=SeenKeys)
    in_flight: set[bytes] = field(default_factory=set)
    replays: int = 0
    """Requests answered from a stored reply (for the operator's metrics)."""

    async def load(self, ledger: Ledger, now_ms: int) -> int:
        """(Re)build ``seen`` from the replies stored within the retention."""
        keys = await ledger.reply_keys(now_ms - self.retention_ms)
        seen = SeenKeys(capacity=max(1_000_000, 2 * len(keys)))
        for key in keys:
            seen.add(key)
        self.seen = seen
        return len(keys)

    async def purge(self, ledger: Ledger, now_ms: int) -> int:
        """Drop replies past the retention, then rebuild ``seen``; returns how many
        replies remain."""
        await ledger.purge_replies(now_ms - self.retention_ms)
        return await self.load(ledger, now_ms)


Render = Callable[[Result], tuple[int, Any]]
"""A route's reply for its op's result: (HTTP status, JSON-able body)."""


@dataclass
class IdempotencyToken:
    """Passed to an idempotent view as ``idempotency=``: the key the client sent, scoped
    to its API key. Give :attr:`scoped_id` to the ledger as the transfer's idempotent id,
    so a retry after a crash cannot move money twice, and :meth:`slot` to the money op
    that answers the request, so the reply is stored in the same commit."""

    key_id: str
    key: str
    fingerprint: bytes = b""
    request_id: str = ""
    fresh: bool = False
    """No reply was ever stored under this key: the request is not a retry of one that
    reached the ledger (so, e.g., a confirm need not look for its bet first)."""
    slots: list[ReplySlot] = field(default_factory=list)

    @property
    def scoped_id(self) -> str:
        # key ids are "key_<hex>" (no "/"), so the split point is unambiguous.
        return f"{self.key_id}/{self.key}"

    def slot(self, render: Render) -> ReplySlot:
        """A reply slot for the op answering this request: ``render`` makes the reply of
        a result; a refusal of the ledger is kept as its problem."""
        request_id = self.request_id

        def keep(slot: ReplySlot, answer: Result | LedgerError) -> StoredReply:
            if isinstance(answer, LedgerError):
                from crashd.api.rest.routes.bets import problem_from  # (routes import us)

                problem = problem_from(answer)
                return StoredReply(problem.status, PROBLEM_CONTENT_TYPE, problem.encode(request_id))
            status, body = render(answer)
            data = json.dumps(body, separators=(",", ":")).encode()
            return StoredReply(status, "application/json", data)

        slot = ReplySlot(reply_key(self.key_id, self.key), self.fingerprint, keep)
        self.slots.append(slot)
        return slot


def reply_response(reply: StoredReply, *, replayed: bool = False) -> Response:
    headers = {"Content-Type": reply.content_type}
    if replayed:
        headers[REPLAYED_HEADER] = "true"
    return Response(reply.body, status=reply.status, headers=headers)


def stored_or(slot: ReplySlot, live: Callable[[], Response]) -> Response:
    """The response for a request whose op answered with ``slot``: exactly the reply
    that was stored (or, if its key was taken, the earlier one); ``live()`` only when
    nothing could be kept."""
    if slot.existing is not None:
        return reply_response(slot.existing[1], replayed=True)
    if slot.stored is not None:
        return reply_response(slot.stored)
    return live()


async def run_idempotent(
    principal: Principal,
    key: str,
    fp: bytes,
    request_id: str,
    run: Callable[[IdempotencyToken], Awaitable[Response]],
    services: Services | None = None,
) -> Response:
    """The rules above for one request (or one item of a batch, or one feed order) with
    key ``key`` and fingerprint ``fp``: in flight → 409, a stored reply → replayed or
    422, else ``run(token)``. ``services``: outside a Quart request (the feed)."""
    from crashd.api.services import current_services  # services imports this module

    if KEY_PATTERN.fullmatch(key) is None:
        raise Problem(
            "idempotency_key_invalid",
            f"{IDEMPOTENCY_HEADER} must be 1-255 visible ASCII characters",
        )
    if services is None:
        services = current_services()
    state = services.idempotency
    rkey = reply_key(principal.key_id, key)
    if rkey in state.in_flight:
        raise Problem(
            "idempotency_key_in_flight",
            f"a request with this {IDEMPOTENCY_HEADER} is still being processed; retry shortly",
            headers={"Retry-After": "1"},
        )
    state.in_flight.add(rkey)
    try:
        fresh = rkey not in state.seen
        if not fresh and services.game is not None:
            found = await services.game.game.ledger.reply(rkey)
            if found is not None:
                stored_fp, reply = found
                if stored_fp != fp:
                    raise Problem(
                        "idempotency_key_reused",
                        f"this {IDEMPOTENCY_HEADER} was used for a different request",
                    )
                state.replays += 1
                return reply_response(reply, replayed=True)
        token = IdempotencyToken(principal.key_id, key, fp, request_id, fresh=fresh)
        response = await run(token)
        for slot in token.slots:
            if slot.stored is not None:
                state.seen.add(slot.key)
            if slot.existing is not None and slot.existing[0] != fp:
                # The key was taken after all (a hash collision, or a reply stored by
                # another path): the first reply stands.
                raise Problem(
                    "idempotency_key_reused",
                    f"this {IDEMPOTENCY_HEADER} was used for a different request",
                )
        return response
    finally:
        state.in_flight.discard(rkey)


def idempotent(view: V) -> V:
    """Require an ``Idempotency-Key`` and apply the rules above; the view receives
    ``idempotency=`` (an :class:`IdempotencyToken`). Place it inside
    :func:`crashd.api.security.auth.requires_scope` (it needs ``principal=``) and
    outside :func:`crashd.api.rest.contract.json_body` (so validation failures are
    answered consistently)."""
    from crashd.api.rest.requestid import request_id_of

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
        body = await request_body()
        fp = fingerprint(request.method, request.path, request.query_string, body)

        async def run(token: IdempotencyToken) -> Response:
            return await view(*args, **{**kwargs, "idempotency": token})  # type: ignore[no-any-return]

        return await run_idempotent(principal, key, fp, request_id_of(request.scope), run)

    return wrapper  # type: ignore[return-value]

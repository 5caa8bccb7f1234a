"""``RestClient``: the REST API v1 (docs/api.md) from Python, on httpx under Trio.

* Every call returns a small typed result (``raw`` keeps the whole JSON body) or
  raises :class:`ProblemError` with the problem's ``code``, ``status``, ``detail`` and
  ``request_id`` (quote the last one when reporting a problem).
* Money-moving writes carry an ``Idempotency-Key`` (yours, or a fresh UUID) and, when
  the client has the key's signing secret, are signed (``crashd.api.security.signing.sign_request``).
* Retries are safe by construction: a retried write sends the **same** key and the
  same body bytes, so the server either runs it once or replays its stored answer;
  each attempt is signed afresh (new timestamp and nonce: the server refuses a reused
  nonce). Retried: connection errors and timeouts (the first attempt's answer may
  have been lost after the server acted: that is what the key is for), 5xx, 429 and
  409 ``idempotency_key_in_flight`` (both honouring ``Retry-After``). Everything else
  is an answer and is returned or raised at once. Attempts are bounded.
"""

from __future__ import annotations

import json
import random as _random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import trio

from crashd.api.security.signing import sign_request
from crashd.api.wire import API_PREFIX, MAX_BATCH

from .backoff import Backoff, RandomFn

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
RETRY_CODES = frozenset({"idempotency_key_in_flight"})


class ProblemError(Exception):
    """An RFC 9457 problem from the server (or an error response that was not one)."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        request_id: str | None,
        body: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            f"{status} {code}: {detail}" + (f" (request {request_id})" if request_id else "")
        )
        self.status = status
        self.code = code
        self.detail = detail
        self.request_id = request_id
        self.body: Mapping[str, Any] = body or {}
        """Every member of the problem (e.g. ``crash_point`` of ``too_late``, ``errors``)."""

    @classmethod
    def from_response(cls, response: httpx.Response) -> ProblemError:
        request_id = response.headers.get("X-Request-ID")
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and "code" in body:
            return cls(
                response.status_code,
                str(body["code"]),
                str(body.get("detail") or body.get("title") or ""),
                body.get("request_id") or request_id,
                body,
            )
        # Not a problem document (a proxy's HTML 502, say): still one exception type.
        return cls(
            response.status_code, f"http_{response.status_code}", response.text[:200], request_id
        )


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, and how long, a request is retried."""

    max_attempts: int = 5
    """Attempts in all, the first included."""
    backoff: Backoff = Backoff(base=0.1, cap=5.0)
    max_retry_after: float = 30.0
    """A ``Retry-After`` longer than this is not waited for: the error is raised."""


@dataclass(frozen=True)
class Hold:
    hold_id: str
    amount: int
    available: int
    expires_at: str
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Ticket:
    ticket_id: str
    round_id: int
    queued: bool
    stake: int
    auto_cashout: int | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def receipt(self) -> Mapping[str, Any] | None:
        """The bet's signed receipt (docs/fairness.md): keep it, ``crashd audit`` checks
        the round's transcript includes the bet as it was accepted."""
        receipt: Mapping[str, Any] | None = self.raw.get("receipt")
        return receipt


@dataclass(frozen=True)
class BatchResult:
    """One batch item's answer: exactly what the single request would have answered."""

    key: str
    status: int
    replayed: bool
    body: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class Cashout:
    """A cashout's one definitive answer: ``cashed_out`` (``multiplier``, ``payout``) or
    ``too_late`` (``crash_point``). Other refusals raise :class:`ProblemError`."""

    status: str
    ticket_id: str
    round_id: int | None
    multiplier: int | None
    payout: int | None
    crash_point: int | None
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def receipt(self) -> Mapping[str, Any] | None:
        """The cash-out's signed receipt (``None`` for ``too_late``; docs/fairness.md)."""
        receipt: Mapping[str, Any] | None = self.raw.get("receipt")
        return receipt


@dataclass(frozen=True)
class Bet:
    ticket_id: str
    status: str
    """``active``, ``cashed_out``, ``lost`` or ``refunded``."""
    round_id: int | None
    stake: int
    auto_cashout: int | None
    multiplier: int | None
    payout: int | None
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Bet:
        return cls(
            body["ticket_id"],
            body["status"],
            body.get("round_id"),
            body["stake"],
            body.get("auto_cashout"),
            body.get("multiplier"),
            body.get("payout"),
            body,
        )


@dataclass(frozen=True)
class Balance:
    user_id: str
    posted: int
    pending: int
    available: int
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class FeedToken:
    token: str
    ws_url: str
    expires_in_s: int
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class GameState:
    round_id: int
    status: str
    """``betting``, ``running`` or ``crashed``."""
    current_multiplier: int
    elapsed_ms: int | None
    crash_point: int | None
    game_hash: str | None
    raw: Mapping[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Round:
    """A finished round: crash point and revealed hash (``status`` ``crashed`` or ``voided``)."""

    round_id: int
    status: str
    crash_point: int | None
    game_hash: str | None
    salt: str | None
    raw: Mapping[str, Any] = field(repr=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Round:
        return cls(
            body["round_id"],
            body["status"],
            body.get("crash_point"),
            body.get("game_hash"),
            body.get("salt"),
            body,
        )


@dataclass(frozen=True)
class Fairness:
    scheme: str
    terminating_hash: str
    salt: str | None
    raw: Mapping[str, Any] = field(repr=False)


def _balance(body: Mapping[str, Any]) -> Balance:
    return Balance(body["user_id"], body["posted"], body["pending"], body["available"], body)


class RestClient:
    """One partner key's view of the API. Use as ``async with RestClient(...) as api:``.

    ``signing_secret`` is the key's signing secret (shown once by ``crashd keys
    create``); without it writes go unsigned, which only a server that does not require
    signatures accepts. ``transport`` is httpx's seam (tests wrap the real transport;
    an app may pass its own connection pool settings). ``clock`` gives Unix seconds for
    signatures and ``random`` feeds the jitter: both injectable for tests.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        signing_secret: str | None = None,
        timeout: float = 10.0,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        random: RandomFn = _random.random,
    ) -> None:
        if retry.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._signing_secret = signing_secret or None
        self.retry = retry
        self._clock = clock
        self._random = random
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)
        self.attempts = 0
        """HTTP requests actually sent (retries included): for monitoring and tests."""

    async def __aenter__(self) -> RestClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- the request path --------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        ok: tuple[int, ...] = (200, 201),
    ) -> httpx.Response:
        """Send with retries; return a response whose status is in ``ok``, else raise
        :class:`ProblemError`. ``idempotency_key`` marks a money-moving write: it is sent
        and signed (if the client has a signing secret) on every attempt."""
        # Serialised once: every attempt sends (and signs) the very same bytes, so the
        # server's idempotency check sees the same request.
        content = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        query = {k: v for k, v in (params or {}).items() if v is not None}
        attempt = 0
        while True:
            request = self._build(method, API_PREFIX + path, query, content, idempotency_key)
            self.attempts += 1
            try:
                response = await self._http.send(request)
            except httpx.TransportError:
                # Connection refused, reset, timed out, or the answer lost on the way
                # back: the same key makes a resend safe either way.
                if attempt + 1 >= self.retry.max_attempts:
                    raise
                await trio.sleep(self.retry.backoff.delay(attempt, self._random))
                attempt += 1
                continue
            if response.status_code in ok:
                return response
            delay = self._retry_delay(response, attempt)
            if delay is None:
                raise ProblemError.from_response(response)
            await trio.sleep(delay)
            attempt += 1

    def _build(
        self,
        method: str,
        path: str,
        query: Mapping[str, Any],
        content: bytes,
        idempotency_key: str | None,
    ) -> httpx.Request:
        headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        if content:
            headers["Content-Type"] = "application/json"
        request = self._http.build_request(
            method, path, params=query or None, content=content or None, headers=headers
        )
        if idempotency_key is not None:
            request.headers["Idempotency-Key"] = idempotency_key
            if self._signing_secret is not None:
                # Signed over the target exactly as it goes on the wire (percent-encoding
                # and query included), which is what the server verifies.
                target = request.url.raw_path.decode("ascii")
                request.headers.update(
                    sign_request(
                        self._signing_secret,
                        method,
                        target,
                        content,
                        idempotency_key,
                        int(self._clock()),
                    )
                )
        return request

    def _retry_delay(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``response``, or ``None``: it is the answer."""
        if attempt + 1 >= self.retry.max_attempts:
            return None
        retryable = response.status_code in RETRY_STATUS
        if response.status_code == 409:
            try:
                retryable = response.json().get("code") in RETRY_CODES
            except ValueError:
                retryable = False
        if not retryable:
            return None
        jitter = self.retry.backoff.delay(attempt, self._random)
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
        if retry_after is None:
            return jitter
        if retry_after > self.retry.max_retry_after:
            return None
        # The server said when: wait that long, plus a little jitter so clients it told
        # the same thing do not all come back in the same millisecond.
        return retry_after + jitter / 10

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self.request(method, path, **kwargs)
        return response.json()  # type: ignore[no-any-return]

    async def _write(
        self, method: str, path: str, body: Mapping[str, Any], idempotency_key: str | None
    ) -> dict[str, Any]:
        return await self._json(
            method, path, body=body, idempotency_key=idempotency_key or new_idempotency_key()
        )

    # -- game ---------------------------------------------------------------------------

    async def health(self) -> dict[str, Any]:
        return await self._json("GET", "/health")

    async def fairness(self) -> Fairness:
        body = await self._json("GET", "/fairness")
        return Fairness(body["scheme"], body["terminating_hash"], body.get("salt"), body)

    async def game_state(self) -> GameState:
        b = await self._json("GET", "/game/state")
        return GameState(
            b["round_id"],
            b["status"],
            b["current_multiplier"],
            b.get("elapsed_ms"),
            b.get("crash_point"),
            b.get("game_hash"),
            b,
        )

    async def rounds(
        self, limit: int = 20, before: int | None = None
    ) -> tuple[list[Round], int | None]:
        """Finished rounds, newest first, and the cursor for the next page (or ``None``)."""
        body = await self._json("GET", "/game/rounds", params={"limit": limit, "before": before})
        return [Round.from_json(r) for r in body["rounds"]], body.get("next_cursor")

    async def round(self, round_id: int) -> Round:
        return Round.from_json(await self._json("GET", f"/game/rounds/{int(round_id)}"))

    # -- verifiable settlement (docs/fairness.md) -------------------------------------------

    async def signing_keys(self) -> dict[str, Any]:
        """The JWK Set of the keys that sign transcripts, seals and receipts."""
        keys: dict[str, Any] = (await self._json("GET", "/fairness"))["signing_keys"]
        return keys

    async def transcript(self, round_id: int) -> dict[str, Any]:
        """A settled round's signed transcript, as signed."""
        return await self._json("GET", f"/game/rounds/{int(round_id)}/transcript")

    async def seal(self, round_id: int) -> dict[str, Any]:
        """A round's start seal (the signed Merkle root of its bets when betting closed)."""
        return await self._json("GET", f"/game/rounds/{int(round_id)}/seal")

    async def transcripts(self, first: int, last: int) -> list[dict[str, Any]]:
        """The transcripts of rounds ``first..last``, oldest first (every page)."""
        out: list[dict[str, Any]] = []
        following: int | None = first
        while following is not None and following <= last:
            page = await self._json(
                "GET",
                "/game/transcripts",
                params={"from_round": following, "to_round": last, "limit": 100},
            )
            out += page["transcripts"]
            following = page["next_round"]
        return out

    # -- bets ---------------------------------------------------------------------------

    async def reserve(
        self,
        user_id: str,
        amount: int,
        *,
        ttl_ms: int | None = None,
        idempotency_key: str | None = None,
    ) -> Hold:
        body: dict[str, Any] = {"user_id": user_id, "amount": amount}
        if ttl_ms is not None:
            body["ttl_ms"] = ttl_ms
        b = await self._write("POST", "/bets/reserve", body, idempotency_key)
        return Hold(b["hold_id"], b["amount"], b["available"], b["expires_at"], b)

    async def confirm(
        self,
        user_id: str,
        hold_id: str,
        *,
        auto_cashout: int | None = None,
        idempotency_key: str | None = None,
    ) -> Ticket:
        body: dict[str, Any] = {"user_id": user_id, "hold_id": hold_id}
        if auto_cashout is not None:
            body["auto_cashout"] = auto_cashout
        b = await self._write("POST", "/bets/confirm", body, idempotency_key)
        return Ticket(
            b["ticket_id"], b["round_id"], b["queued"], b["stake"], b.get("auto_cashout"), b
        )

    async def place_bet(
        self,
        user_id: str,
        amount: int,
        *,
        auto_cashout: int | None = None,
        idempotency_key: str | None = None,
    ) -> Ticket:
        """A bet in one request (``POST /bets``: the stake is taken and the bet placed in
        one durable commit). Calling it again with the same ``idempotency_key`` places the
        bet once and returns the same ticket. (``reserve`` + ``confirm`` is the two-phase
        form, for partners who hold the stake first.)"""
        body: dict[str, Any] = {"user_id": user_id, "amount": amount}
        if auto_cashout is not None:
            body["auto_cashout"] = auto_cashout
        b = await self._write("POST", "/bets", body, idempotency_key)
        return Ticket(
            b["ticket_id"], b["round_id"], b["queued"], b["stake"], b.get("auto_cashout"), b
        )

    async def batch(self, items: Sequence[Mapping[str, Any]]) -> list[BatchResult]:
        """Up to ``MAX_BATCH`` bets (``{"action": "place", "key", "user_id", "amount",
        "auto_cashout"?}``) and cash-outs (``{"action": "cashout", "key", "user_id",
        "ticket_id"}``) in one signed request; each item's ``key`` is its idempotency key
        (a retry of the batch, or of one item alone, moves nothing twice). One result per
        item, in order: partial success is normal."""
        if not 1 <= len(items) <= MAX_BATCH:
            raise ValueError(f"a batch holds 1..{MAX_BATCH} items")
        # Signed like every write, so it carries an Idempotency-Key too (the batch itself
        # is not stored: its items are, by their own keys).
        response = await self.request(
            "POST",
            "/bets/batch",
            body={"items": list(items)},
            idempotency_key=new_idempotency_key(),
        )
        return [
            BatchResult(r["key"], r["status"], bool(r.get("replayed")), r["body"])
            for r in response.json()["results"]
        ]

    async def release(
        self, user_id: str, hold_id: str, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        return await self._write(
            "POST", "/bets/release", {"user_id": user_id, "hold_id": hold_id}, idempotency_key
        )

    async def cashout(
        self, ticket_id: str, user_id: str, *, idempotency_key: str | None = None
    ) -> Cashout:
        """Cash out now. ``too_late`` is an answer, not an error: it is returned."""
        try:
            b = await self._write(
                "POST",
                f"/bets/{_segment(ticket_id)}/cashout",
                {"user_id": user_id},
                idempotency_key,
            )
        except ProblemError as err:
            if err.code != "too_late":
                raise
            b = dict(err.body)
            return Cashout(
                "too_late", ticket_id, b.get("round_id"), None, None, b.get("crash_point"), b
            )
        return Cashout(
            b["status"], b["ticket_id"], b.get("round_id"), b["multiplier"], b["payout"], None, b
        )

    async def set_auto_cashout(
        self,
        ticket_id: str,
        user_id: str,
        target: int | None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Set (hundredths, >= 101) or cancel (``None``) the target while the round is betting."""
        return await self._write(
            "PUT",
            f"/bets/{_segment(ticket_id)}/auto-cashout",
            {"user_id": user_id, "target": target},
            idempotency_key,
        )

    async def bet(self, ticket_id: str) -> Bet:
        return Bet.from_json(await self._json("GET", f"/bets/{_segment(ticket_id)}"))

    async def user_bets(
        self, user_id: str, limit: int = 20, before: str | None = None
    ) -> dict[str, Any]:
        return await self._json(
            "GET", "/user/bets", params={"user_id": user_id, "limit": limit, "before": before}
        )

    # -- users and the feed -------------------------------------------------------------

    async def balance(self, user_id: str) -> Balance:
        return _balance(await self._json("GET", "/user/balance", params={"user_id": user_id}))

    async def faucet(
        self, user_id: str, amount: int, *, idempotency_key: str | None = None
    ) -> Balance:
        """Sandbox only: credit demo money; returns the new balance."""
        return _balance(
            await self._write(
                "POST", "/sandbox/faucet", {"user_id": user_id, "amount": amount}, idempotency_key
            )
        )

    async def feed_token(self) -> FeedToken:
        """A 5-minute feed token (read scopes only) and the feed's ``ws_url``."""
        b = await self._json("POST", "/feed/token")
        return FeedToken(b["token"], b["ws_url"], b["expires_in_s"], b)

    async def user_token(
        self, user_id: str, *, ttl_s: int | None = None, read_only: bool = False
    ) -> FeedToken:
        """A feed token for one of your users' browsers (``POST /feed/user-token``, signed):
        that user's channel and, unless ``read_only``, orders for that user on the feed."""
        body: dict[str, Any] = {"user_id": user_id, "read_only": read_only}
        if ttl_s is not None:
            body["ttl_s"] = ttl_s
        b = await self._json(
            "POST", "/feed/user-token", body=body, idempotency_key=new_idempotency_key()
        )
        return FeedToken(b["token"], b["ws_url"], b["expires_in_s"], b)

    async def feed_token_string(self) -> str:
        """A fresh token, as ``FeedClient(token=rest.feed_token_string)`` wants it."""
        return (await self.feed_token()).token


def new_idempotency_key() -> str:
    return uuid.uuid4().hex


def _segment(value: str) -> str:
    # Ticket ids are [A-Za-z0-9_-]; refusing anything else keeps a hostile id from
    # becoming another path (the server would 404 it anyway).
    if not value or any(not (ch.isalnum() or ch in "_-") for ch in value):
        raise ValueError(f"not a valid id: {value!r}")
    return value


def _retry_after_seconds(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from crashd; fall back to the backoff

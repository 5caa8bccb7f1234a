"""``crashd wallet mock``: a real HTTP wallet implementing the contract, for partners
trying seamless mode and for the tests. Its own SQLite file holds the players'
balances and every transaction it applied; faults are injected from the command line
and from an admin endpoint.

The contract, as this wallet keeps it (docs/wallet.md):

* every call is signed (HMAC-SHA256 over timestamp, path and body) and so is every
  answer; a call with a bad signature is refused with 401 ``invalid_signature``;
* every call is idempotent by ``tx_id``: a replay answers exactly as the first time, the
  same id with a different body is 409 ``tx_conflict``;
* a rollback of a debit it never saw is a success, and it remembers it: that debit,
  arriving late, is refused (``tx_rolled_back``);
* refusals: ``insufficient_funds`` (with the balance), ``unknown_player``,
  ``player_blocked``, ``self_excluded``, ``limit_reached`` (a player's ``wager_limit``, or
  its ``max_stake``, which ``session.verify`` also gives in ``limits``),
  ``session_expired``, ``currency_mismatch``; and ``account_closed`` for a credit to a
  player marked ``closed`` (a credit crashd cannot deliver: it is parked for the operator).

It also keeps a *violations* table: anything crashd must never do (a rollback of a
debit already credited, a credit of a debit rolled back, a second closing of a debit)
is recorded there, and the tests read it.

Faults (``MockFaults``; each rate is a probability per call): ``latency_ms`` (+
``jitter_ms``) added to every answer; ``error_rate`` (503 before anything is applied);
``timeout_rate`` (the call hangs without being applied until the client gives up);
``drop_rate`` (applied and committed, then the connection is closed without an answer:
the hard case); ``duplicate_rate`` (the call is applied twice, as a retrying proxy would
deliver it: the second is a replay); ``insufficient_rate`` (debits refused as
``insufficient_funds``); ``outages`` (windows of Unix seconds during which every call
is closed unanswered; the admin endpoint still answers).

Admin endpoint (JSON; ``Authorization: Bearer <admin token>`` when one is set):
``GET/POST /admin/faults``, ``GET/POST /admin/players`` (one object, or a list of
them in one transaction), ``POST /admin/sessions``,
``GET /admin/transactions``, ``GET /admin/violations``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import sqlite3
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import h11
import trio

from crashd.engine.wallet.contract import MAX_ANSWER_BYTES, UNKNOWN_TX, Call
from crashd.engine.wallet.signing import HmacSha256Signer

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
DEFAULT_HANG_S = 60.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS players (
    player_id     TEXT PRIMARY KEY,
    currency      TEXT NOT NULL,
    balance       INTEGER NOT NULL CHECK (balance >= 0),
    blocked       INTEGER NOT NULL DEFAULT 0,
    self_excluded INTEGER NOT NULL DEFAULT 0,
    wager_limit   INTEGER,
    closed        INTEGER NOT NULL DEFAULT 0,
    max_stake     INTEGER
);
CREATE TABLE IF NOT EXISTS sessions (
    token         TEXT PRIMARY KEY,
    session_token TEXT NOT NULL UNIQUE,
    player_id     TEXT NOT NULL REFERENCES players (player_id),
    expires_at    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS txs (
    tx_id      TEXT PRIMARY KEY,
    call       TEXT NOT NULL,
    player_id  TEXT,
    ref_tx_id  TEXT,
    amount     INTEGER NOT NULL,
    body_hash  TEXT NOT NULL,
    status     INTEGER NOT NULL,
    answer     TEXT NOT NULL,
    applied    INTEGER NOT NULL,
    deliveries INTEGER NOT NULL DEFAULT 1,
    at         REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS closed (
    debit_tx_id TEXT PRIMARY KEY,
    by_tx_id    TEXT NOT NULL,
    how         TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS violations (
    id     INTEGER PRIMARY KEY,
    tx_id  TEXT NOT NULL,
    what   TEXT NOT NULL,
    at     REAL NOT NULL
);
"""


@dataclass
class MockFaults:
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0
    timeout_rate: float = 0.0
    drop_rate: float = 0.0
    duplicate_rate: float = 0.0
    insufficient_rate: float = 0.0
    outages: list[tuple[float, float]] = field(default_factory=list)
    hang_s: float = DEFAULT_HANG_S

    def update(self, data: Mapping[str, Any]) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(sorted(unknown))}")
        for name, value in data.items():
            if name == "outages":
                windows = [(float(a), float(b)) for a, b in value]
                if any(b <= a for a, b in windows):
                    raise ValueError("an outage window ends after it starts")
                self.outages = windows
                continue
            number = float(value)
            if name.endswith("_rate") and not 0.0 <= number <= 1.0:
                raise ValueError(f"{name} must be in 0..1")
            if number < 0:
                raise ValueError(f"{name} must not be negative")
            setattr(self, name, number)

    def in_outage(self, now: float) -> bool:
        return any(a <= now < b for a, b in self.outages)


class _Refusal(Exception):
    def __init__(self, status: int, code: str, message: str, balance: int | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.balance = balance


def _hash(body: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class MockBook:
    """The mock's ledger: balances and the transactions it applied. Blocking SQLite
    (a sandbox tool; each call is one short transaction)."""

    def __init__(self, path: Path | str) -> None:
        self.conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.executescript(_SCHEMA)
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(players)")}
        if "max_stake" not in columns:  # a file from before limits in session.verify
            self.conn.execute("ALTER TABLE players ADD COLUMN max_stake INTEGER")

    def close(self) -> None:
        self.conn.close()

    # -- admin --------------------------------------------------------------------

    def set_player(self, data: Mapping[str, Any], default_currency: str) -> dict[str, Any]:
        player = data.get("player_id")
        if not isinstance(player, str) or not player:
            raise ValueError("player_id is required")
        names = ("currency", "balance", "blocked", "self_excluded", "wager_limit", "closed")
        row = self.conn.execute(
            f"SELECT {', '.join(names)}, max_stake FROM players WHERE player_id = ?",
            (player,),
        ).fetchone()
        current = dict(
            zip(
                (*names, "max_stake"),
                row if row is not None else (default_currency, 0, 0, 0, None, 0, None),
                strict=True,
            )
        )
        for name in current:
            if name in data:
                current[name] = data[name]
        if type(current["balance"]) is not int or current["balance"] < 0:
            raise ValueError("balance must be a non-negative integer")
        if current["max_stake"] is not None and (
            type(current["max_stake"]) is not int or current["max_stake"] < 1
        ):
            raise ValueError("max_stake must be a positive integer or null")
        self.conn.execute(
            f"INSERT OR REPLACE INTO players (player_id, {', '.join(names)}, max_stake) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                player,
                current["currency"],
                current["balance"],
                int(bool(current["blocked"])),
                int(bool(current["self_excluded"])),
                current["wager_limit"],
                int(bool(current["closed"])),
                current["max_stake"],
            ),
        )
        return {"player_id": player, **current}

    def players(self) -> list[dict[str, Any]]:
        return [
            {"player_id": p, "currency": c, "balance": b}
            for p, c, b in self.conn.execute(
                "SELECT player_id, currency, balance FROM players ORDER BY player_id"
            )
        ]

    def add_session(self, token: str, player_id: str, ttl_s: float, now: float) -> str:
        """A launch token for ``player_id``; returns the session token that
        ``session.verify`` hands out for it (and debits then carry)."""
        session = "ws_" + hashlib.sha256(token.encode()).hexdigest()[:24]
        self.conn.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?)",
            (token, session, player_id, now + ttl_s),
        )
        return session

    def transactions(self) -> list[dict[str, Any]]:
        cols = (
            "tx_id",
            "call",
            "player_id",
            "ref_tx_id",
            "amount",
            "status",
            "applied",
            "deliveries",
        )
        return [
            dict(zip(cols, r, strict=True))
            for r in self.conn.execute(f"SELECT {', '.join(cols)} FROM txs ORDER BY rowid")
        ]

    def violations(self) -> list[dict[str, Any]]:
        return [
            {"tx_id": t, "what": w}
            for t, w in self.conn.execute("SELECT tx_id, what FROM violations ORDER BY id")
        ]

    # -- the contract ----------------------------------------------------------------

    def apply(
        self, call: str, body: Mapping[str, Any], now: float, force_refusal: bool = False
    ) -> tuple[int, dict[str, Any]]:
        """One call in one transaction: (HTTP status, answer body)."""
        c = self.conn
        c.execute("BEGIN IMMEDIATE")
        try:
            answer = self._apply(call, body, now, force_refusal)
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        return answer

    def _violation(self, tx_id: str, what: str, now: float) -> None:
        log.error("mock wallet: contract violation by the caller: %s %s", tx_id, what)
        self.conn.execute(
            "INSERT INTO violations (tx_id, what, at) VALUES (?, ?, ?)", (tx_id, what, now)
        )

    def _player(self, player_id: object, currency: object) -> tuple[str, int, int, int, int | None]:
        row = self.conn.execute(
            "SELECT currency, balance, blocked, self_excluded, wager_limit FROM players "
            "WHERE player_id = ?",
            (player_id,),
        ).fetchone()
        if row is None:
            raise _Refusal(404, "unknown_player", "no such player")
        if currency is not None and row[0] != currency:
            raise _Refusal(409, "currency_mismatch", f"the player's wallet is in {row[0]}", row[1])
        return row  # type: ignore[no-any-return]

    def _apply(
        self, call: str, body: Mapping[str, Any], now: float, force_refusal: bool
    ) -> tuple[int, dict[str, Any]]:
        c = self.conn
        if call == Call.SESSION_VERIFY.value:
            row = c.execute(
                "SELECT s.player_id, s.expires_at, p.currency, p.balance, s.session_token, "
                "p.max_stake FROM sessions s JOIN players p ON p.player_id = s.player_id "
                "WHERE s.token = ?",
                (body.get("launch_token"),),
            ).fetchone()
            if row is None:
                return 404, _error("unknown_player", "no such launch token")
            if row[1] <= now:
                return 403, _error("session_expired", "the launch token has expired")
            return 200, {
                "status": "ok",
                "player_id": row[0],
                "currency": row[2],
                "balance": row[3],
                "session_token": row[4],
                **({"limits": {"max_stake": row[5]}} if row[5] is not None else {}),
            }
        if call == Call.BALANCE.value:
            try:
                row = self._player(body.get("player_id"), body.get("currency"))
            except _Refusal as r:
                return r.status, _error(r.code, r.message, r.balance)
            return 200, {"status": "ok", "balance": row[1], "currency": row[0]}
        tx_id = body.get("tx_id")
        if not isinstance(tx_id, str) or not tx_id:
            return 422, _error("invalid_request", "tx_id is required")
        digest = _hash(body)
        seen = c.execute(
            "SELECT body_hash, status, answer FROM txs WHERE tx_id = ?", (tx_id,)
        ).fetchone()
        if seen is not None:
            if seen[0] != digest:
                return 409, _error("tx_conflict", "this tx_id was used with a different body")
            c.execute("UPDATE txs SET deliveries = deliveries + 1 WHERE tx_id = ?", (tx_id,))
            return int(seen[1]), json.loads(seen[2])
        player = body.get("player_id")
        amount = body.get("amount")
        ref = body.get("ref_tx_id")
        applied = 0
        try:
            if type(amount) is not int or amount < 0 or (call == Call.DEBIT.value and amount == 0):
                raise _Refusal(422, "invalid_request", "amount must be a positive integer")
            if call == Call.DEBIT.value:
                status, answer, applied = self._debit(
                    tx_id, body, player, amount, now, force_refusal
                )
            elif call == Call.CREDIT.value:
                status, answer, applied = self._credit(tx_id, player, amount, ref, now)
            elif call == Call.ROLLBACK.value:
                status, answer, applied = self._rollback(tx_id, player, ref, now)
            else:
                raise _Refusal(404, "invalid_request", "no such call")
        except _Refusal as r:
            status, answer = r.status, _error(r.code, r.message, r.balance)
        c.execute(
            "INSERT INTO txs (tx_id, call, player_id, ref_tx_id, amount, body_hash, status, answer, "
            "applied, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                tx_id,
                call,
                player,
                ref,
                amount if type(amount) is int else 0,
                digest,
                status,
                json.dumps(answer),
                applied,
                now,
            ),
        )
        return status, answer

    def _debit(
        self,
        tx_id: str,
        body: Mapping[str, Any],
        player: object,
        amount: int,
        now: float,
        force_refusal: bool,
    ) -> tuple[int, dict[str, Any], int]:
        c = self.conn
        if c.execute("SELECT 1 FROM closed WHERE debit_tx_id = ?", (tx_id,)).fetchone():
            raise _Refusal(409, "tx_rolled_back", "this debit was rolled back before it arrived")
        currency, balance, blocked, excluded, limit = self._player(player, body.get("currency"))
        token = body.get("session_token")
        if token is not None:
            session = c.execute(
                "SELECT expires_at FROM sessions WHERE session_token = ? AND player_id = ?",
                (token, player),
            ).fetchone()
            if session is None or session[0] <= now:
                raise _Refusal(403, "session_expired", "the session has expired", balance)
        if blocked:
            raise _Refusal(403, "player_blocked", "the account is blocked", balance)
        if excluded:
            raise _Refusal(403, "self_excluded", "the player is self-excluded", balance)
        if limit is not None and amount > limit:
            raise _Refusal(403, "limit_reached", f"wager limit: {limit} left", balance)
        max_stake = c.execute(
            "SELECT max_stake FROM players WHERE player_id = ?", (player,)
        ).fetchone()[0]
        if max_stake is not None and amount > max_stake:
            raise _Refusal(403, "limit_reached", f"max stake: {max_stake}", balance)
        if force_refusal or amount > balance:
            raise _Refusal(402, "insufficient_funds", "not enough money", balance)
        c.execute("UPDATE players SET balance = balance - ? WHERE player_id = ?", (amount, player))
        if limit is not None:
            c.execute(
                "UPDATE players SET wager_limit = wager_limit - ? WHERE player_id = ?",
                (amount, player),
            )
        wallet_tx = "mw_" + hashlib.sha256(tx_id.encode()).hexdigest()[:16]
        return (
            200,
            {
                "status": "ok",
                "tx_id": tx_id,
                "wallet_tx_id": wallet_tx,
                "balance": balance - amount,
                "currency": currency,
            },
            1,
        )

    def _debit_of(self, ref: object) -> tuple[str, int, int] | None:
        row = self.conn.execute(
            "SELECT player_id, amount, applied FROM txs WHERE tx_id = ? AND call = 'debit'", (ref,)
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def _credit(
        self, tx_id: str, player: object, amount: int, ref: object, now: float
    ) -> tuple[int, dict[str, Any], int]:
        c = self.conn
        currency, balance, *_ = self._player(player, None)
        closed_account = c.execute(
            "SELECT closed FROM players WHERE player_id = ?", (player,)
        ).fetchone()
        if closed_account is not None and closed_account[0]:
            raise _Refusal(
                409, "account_closed", "the account is closed: pay it out by hand", balance
            )
        debit = self._debit_of(ref)
        if debit is None or not debit[2] or debit[0] != player:
            self._violation(tx_id, f"credit of {ref}, a debit this wallet never applied", now)
            raise _Refusal(409, "unknown_tx", "no such debit")
        closed = c.execute(
            "SELECT by_tx_id, how FROM closed WHERE debit_tx_id = ?", (ref,)
        ).fetchone()
        if closed is not None:
            self._violation(
                tx_id, f"credit of {ref}, already closed by {closed[1]} {closed[0]}", now
            )
            raise _Refusal(409, "tx_closed", f"the debit was already closed by {closed[0]}")
        c.execute("INSERT INTO closed VALUES (?, ?, 'credit')", (ref, tx_id))
        c.execute("UPDATE players SET balance = balance + ? WHERE player_id = ?", (amount, player))
        wallet_tx = "mw_" + hashlib.sha256(tx_id.encode()).hexdigest()[:16]
        return (
            200,
            {
                "status": "ok",
                "tx_id": tx_id,
                "wallet_tx_id": wallet_tx,
                "balance": balance + amount,
                "currency": currency,
            },
            1,
        )

    def _rollback(
        self, tx_id: str, player: object, ref: object, now: float
    ) -> tuple[int, dict[str, Any], int]:
        c = self.conn
        if not isinstance(ref, str) or not ref:
            raise _Refusal(422, "invalid_request", "ref_tx_id is required")
        closed = c.execute(
            "SELECT by_tx_id, how FROM closed WHERE debit_tx_id = ?", (ref,)
        ).fetchone()
        if closed is not None:
            self._violation(
                tx_id, f"rollback of {ref}, already closed by {closed[1]} {closed[0]}", now
            )
            raise _Refusal(409, "tx_closed", f"the debit was already closed by {closed[0]}")
        c.execute("INSERT INTO closed VALUES (?, ?, 'rollback')", (ref, tx_id))
        debit = self._debit_of(ref)
        row = c.execute("SELECT balance FROM players WHERE player_id = ?", (player,)).fetchone()
        balance = None if row is None else int(row[0])
        if debit is None or not debit[2]:
            # Never applied (or never seen): nothing to undo; a late debit is refused.
            return 200, {"status": "ok", "tx_id": tx_id, "balance": balance, "note": UNKNOWN_TX}, 1
        c.execute(
            "UPDATE players SET balance = balance + ? WHERE player_id = ?", (debit[1], debit[0])
        )
        return 200, {"status": "ok", "tx_id": tx_id, "balance": (balance or 0) + debit[1]}, 1


def _error(code: str, message: str, balance: int | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"status": "error", "code": code, "message": message}
    if balance is not None:
        answer["balance"] = balance
    return answer


class _Drop(Exception):
    """Close the connection without answering."""


class MockWallet:
    """The HTTP side: h11 over Trio streams, one task per connection, keep-alive."""

    def __init__(
        self,
        book: MockBook,
        secret: str,
        *,
        currency: str = "EUR",
        prefix: str = "/wallet",
        faults: MockFaults | None = None,
        admin_token: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.book = book
        self.signer = HmacSha256Signer(secret)
        self.currency = currency
        self.prefix = prefix.rstrip("/")
        self.faults = faults if faults is not None else MockFaults()
        self.admin_token = admin_token
        self.rng = random.Random(seed)
        self.calls = 0
        self.port: int | None = None

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        listeners = await trio.open_tcp_listeners(port, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self.port)
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        try:
            while True:
                request, body = await self._read_request(stream, conn)
                if request is None:
                    return
                try:
                    status, headers, payload = await self._handle(request, body)
                except _Drop:
                    return
                await _send(stream, conn, status, headers, payload)
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
            return
        finally:
            await stream.aclose()

    async def _read_request(
        self, stream: trio.SocketStream, conn: h11.Connection
    ) -> tuple[h11.Request | None, bytes]:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return None, b""
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > MAX_REQUEST_BYTES:
                    return None, b""
            elif isinstance(event, h11.EndOfMessage):
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None, b""

    async def _handle(self, request: h11.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        headers = {k.decode().lower(): v.decode("latin-1") for k, v in request.headers}
        if path.startswith("/admin/"):
            return self._admin(request.method.decode(), path, headers, body)
        calls = {self.prefix + c.path: c for c in Call}
        call = calls.get(path)
        if call is None or request.method != b"POST":
            return 404, {}, json.dumps(_error("invalid_request", "no such call")).encode()
        self.calls += 1
        faults = self.faults
        if faults.in_outage(time.time()):
            raise _Drop  # the wallet is down: the connection closes unanswered
        delay = faults.latency_ms + self.rng.random() * faults.jitter_ms
        if delay:
            await trio.sleep(delay / 1000)
        if not self.signer.verify(headers, path, body, int(time.time())):
            return self._signed(path, 401, _error("invalid_signature", "bad or missing signature"))
        if self.rng.random() < faults.error_rate:
            return self._signed(path, 503, _error("unavailable", "injected 503"))
        if self.rng.random() < faults.timeout_rate:
            await trio.sleep(faults.hang_s)  # the client gives up first
            raise _Drop
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise ValueError
        except ValueError:
            return self._signed(
                path, 422, _error("invalid_request", "the body is not a JSON object")
            )
        force = call is Call.DEBIT and self.rng.random() < faults.insufficient_rate
        now = time.time()
        status, answer = self.book.apply(call.value, data, now, force)
        if self.rng.random() < faults.duplicate_rate:
            # The same delivery again (a retrying proxy): must be a replay.
            again = self.book.apply(call.value, data, now, force)
            if again != (status, answer) and "tx_id" in data:
                log.error(
                    "mock wallet: a duplicate delivery of %s answered differently", data["tx_id"]
                )
        if self.rng.random() < faults.drop_rate:
            raise _Drop  # committed, and the answer never arrives
        return self._signed(path, status, answer)

    def _signed(
        self, path: str, status: int, answer: Mapping[str, Any]
    ) -> tuple[int, dict[str, str], bytes]:
        payload = json.dumps(answer, separators=(",", ":")).encode()
        assert len(payload) <= MAX_ANSWER_BYTES
        return status, self.signer.sign(int(time.time()), path, payload), payload

    def _admin(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if (
            self.admin_token is not None
            and headers.get("authorization") != f"Bearer {self.admin_token}"
        ):
            return 401, {}, json.dumps({"error": "admin token required"}).encode()
        try:
            data = json.loads(body) if body else {}
            if method == "GET" and path == "/admin/faults":
                out: Any = asdict(self.faults)
            elif method == "POST" and path == "/admin/faults":
                self.faults.update(data)
                out = asdict(self.faults)
            elif method == "GET" and path == "/admin/players":
                out = self.book.players()
            elif method == "POST" and path == "/admin/players":
                if isinstance(data, list):  # many at once, one transaction
                    self.book.conn.execute("BEGIN")
                    try:
                        out = [self.book.set_player(d, self.currency) for d in data]
                        self.book.conn.execute("COMMIT")
                    except BaseException:
                        self.book.conn.execute("ROLLBACK")
                        raise
                else:
                    out = self.book.set_player(data, self.currency)
            elif method == "POST" and path == "/admin/sessions":
                session = self.book.add_session(
                    str(data["token"]),
                    str(data["player_id"]),
                    float(data.get("ttl_s", 3600)),
                    time.time(),
                )
                out = {
                    "token": data["token"],
                    "player_id": data["player_id"],
                    "session_token": session,
                }
            elif method == "GET" and path == "/admin/transactions":
                out = self.book.transactions()
            elif method == "GET" and path == "/admin/violations":
                out = self.book.violations()
            else:
                return 404, {}, json.dumps({"error": "no such admin route"}).encode()
        except (ValueError, KeyError, TypeError, sqlite3.Error) as exc:
            return 422, {}, json.dumps({"error": str(exc)}).encode()
        return 200, {}, json.dumps(out).encode()


async def _send(
    stream: trio.SocketStream,
    conn: h11.Connection,
    status: int,
    headers: Mapping[str, str],
    payload: bytes,
) -> None:
    head = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *((k.encode(), v.encode()) for k, v in headers.items()),
    ]
    data = conn.send(h11.Response(status_code=status, headers=head))
    assert data is not None
    data += conn.send(h11.Data(data=payload)) or b""
    data += conn.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)


__all__ = ["MockBook", "MockFaults", "MockWallet"]

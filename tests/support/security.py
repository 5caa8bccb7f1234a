"""Helpers for the security suite (holds no tests itself).

* :func:`money_fingerprint` — the ledger's money, byte for byte: every account, transfer,
  hold and bet row and every non-round op, hashed, plus ``audit()``'s sums and counts.
  Rounds keep opening and crashing while a test runs, so round bookkeeping is left out;
  a round without bets moves no money, so anything else changing means money moved.
* :class:`LogScan` — captures every log record of every logger while the security
  suite runs, and the secrets the suite handled (API keys, signing secrets,
  signatures, webhook secrets), and asserts no secret ever reached a log line.
* :class:`ThreadServer` — a real server in a background thread (its own Trio loop), so
  Hypothesis' synchronous ``@given`` tests can drive it with a blocking client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from crashd.api.config import Config
from crashd.api.ops.logs import JsonFormatter
from crashd.api.security.signing import sign_request
from crashd.api.server import ServerInfo, run_server
from crashd.engine.ledger.store import audit


@dataclass(frozen=True)
class MoneyFingerprint:
    transfers: int
    total: int
    psp_net: tuple[tuple[str, int], ...]
    internal_total: tuple[tuple[str, int], ...]
    digest: str


def money_fingerprint(database: Path) -> MoneyFingerprint:
    """What a hostile request must leave unchanged (read in one snapshot under WAL)."""
    conn = sqlite3.connect(database, isolation_level=None)
    try:
        report = audit(conn)
        h = hashlib.sha256()
        conn.execute("BEGIN")
        for query in (
            # An account row with nothing in it (created when a refused op first named
            # a user) holds no money.
            "SELECT * FROM accounts WHERE posted != 0 OR pending != 0 ORDER BY id",
            "SELECT * FROM transfers ORDER BY 1",
            "SELECT * FROM holds ORDER BY id",
            "SELECT * FROM bets ORDER BY id",
            # Successful money ops; a refusal recorded for its idempotency id moves nothing.
            "SELECT id, key, kind, result FROM ops WHERE ok = 1 AND kind NOT LIKE 'round%' ORDER BY id",
        ):
            for row in conn.execute(query):
                h.update(repr(row).encode())
            h.update(b"|")
        conn.execute("COMMIT")
    finally:
        conn.close()
    assert not report.problems, report.problems
    return MoneyFingerprint(
        report.transfers,
        report.total,
        tuple(sorted(report.psp_net.items())),
        tuple(sorted(report.internal_total.items())),
        h.hexdigest(),
    )


class LogScan(logging.Handler):
    """Every formatted log line, from every logger, at every level."""

    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []
        self.json_lines: list[str] = []
        """Each record as ``crashd serve`` writes it off a terminal (one JSON object,
        with its structured fields and the request's ids): scanned too."""
        self.secrets: set[str] = set()
        self._lock_lines = threading.Lock()
        self._json = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = record.getMessage()
        except Exception:
            line = f"{record.msg!r} {record.args!r}"
        if record.exc_info and record.exc_info[1] is not None:
            line += " " + repr(record.exc_info[1])
        try:
            as_json = self._json.format(record)
        except Exception as exc:  # a record the JSON formatter cannot write is a bug
            as_json = f"unformattable: {exc!r}"
        with self._lock_lines:
            self.lines.append(f"{record.name} {line}")
            self.json_lines.append(as_json)

    def remember(self, *secrets_: str) -> None:
        self.secrets.update(s for s in secrets_ if s)

    def leaks(self) -> list[tuple[str, str]]:
        found = []
        for line in self.lines + self.json_lines:
            for secret in self.secrets:
                if secret in line:
                    found.append((secret[:12] + "…", line[:200]))
        return found


class ThreadServer:
    """``run_server(config)`` in a daemon thread with its own Trio loop."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.info: ServerInfo | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._shutdown: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="crashd-test-server", daemon=True)

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            self._shutdown = trio.Event()
            async with trio.open_nursery() as nursery:
                self.info = await nursery.start(
                    partial(run_server, self.config, shutdown=self._shutdown)
                )
                self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def __enter__(self) -> ServerInfo:
        self._thread.start()
        self._ready.wait(60)
        if self.info is None:
            raise RuntimeError(f"server did not start: {self._error!r}")
        return self.info

    def __exit__(self, *exc: object) -> None:
        if self._token is not None and self._shutdown is not None:
            try:
                trio.from_thread.run_sync(self._shutdown.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join(30)


def signed_headers(
    key: str,
    signing_secret: str,
    method: str,
    path: str,
    body: bytes,
    idempotency_key: str,
    *,
    timestamp: int | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    headers = sign_request(
        signing_secret,
        method,
        path,
        body,
        idempotency_key,
        int(time.time()) if timestamp is None else timestamp,
        nonce,
    )
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers}


def json_bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def balance(client: httpx.Client, key: str, user: str) -> int:
    r = client.get(
        "/api/v1/user/balance", params={"user_id": user}, headers={"Authorization": f"Bearer {key}"}
    )
    assert r.status_code == 200, r.text
    return int(r.json()["available"])


REQUEST_LOGGERS = ("crashd.access ", "crashd.api.rest.routes.psp ", "crashd.api.rest.app ")

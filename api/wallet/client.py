"""The HTTP transport to a partner's wallet: httpx (its Trio backend), one keep-alive
pool per wallet, every call signed, every answer's signature checked.

``HttpWalletPort.send`` never raises for what the wallet or the network does: each end
is an ``Answer`` (ok, refused, or unknown with why: ``timeout``, ``not_sent`` — the
deadline passed while the call still waited for a connection of the pool, so nothing
reached the wallet —, ``connect_error``, ``connection_lost``, ``http_503``,
``bad_body``, ``bad_signature``) and a ``WalletCall``
for the reconciliation log. It runs in the calling task (a bet's request, an outbox
task): the engine's tick loop and the ledger writer never wait for it. The CPU it costs
on the event loop is JSON, one HMAC each way and httpx's parsing: microseconds.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from crashd.engine.ledger.wallet import WalletCall
from crashd.engine.wallet.contract import (
    MAX_ANSWER_BYTES,
    MAX_LOGGED_BYTES,
    NOT_SENT,
    PARTNER_HEADER,
    REQUEST_ID_HEADER,
    Answer,
    Request,
    interpret,
    unknown,
)
from crashd.engine.wallet.seamless import Sent
from crashd.engine.wallet.signing import Signer

_LEAVING = (".connect_tcp.started", ".start_tls.started", ".send_request_headers.started")
"""httpcore's trace events after which a call may have reached the wallet."""


def wallet_client(max_connections: int) -> httpx.AsyncClient:
    """One pool per wallet. Timeouts are the caller's deadline (``send``), so httpx's
    own are only a backstop."""
    return httpx.AsyncClient(
        timeout=httpx.Timeout(60.0),
        limits=httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        follow_redirects=False,
        trust_env=False,
    )


class HttpWalletPort:
    def __init__(
        self,
        client: httpx.AsyncClient,
        url: str,
        signer: Signer,
        *,
        environment: str,
        partner_id: str,
    ) -> None:
        self.client = client
        self.url = url.rstrip("/")
        self.base_path = urlsplit(self.url).path
        self.signer = signer
        self.environment = environment
        self.partner_id = partner_id

    async def send(self, request: Request, deadline: float) -> Sent:
        body = request.encode()
        path = self.base_path + request.call.path
        request_id = uuid.uuid4().hex
        headers = {
            **self.signer.sign(int(time.time()), path, body),
            REQUEST_ID_HEADER: request_id,
            PARTNER_HEADER: self.partner_id,
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        at_ms = time.time_ns() // 1_000_000
        started = trio.current_time()
        status: int | None = None
        raw = b""
        failure: str | None = None
        answer_headers: httpx.Headers | None = None
        left = False  # a connect or the request's headers started: it may have arrived

        async def trace(event: str, info: Mapping[str, Any]) -> None:
            nonlocal left
            if event.endswith(_LEAVING):
                left = True

        with trio.move_on_at(deadline) as scope:
            try:
                async with self.client.stream(
                    "POST",
                    self.url + request.call.path,
                    content=body,
                    headers=headers,
                    extensions={"trace": trace},
                ) as response:
                    status = response.status_code
                    answer_headers = response.headers
                    chunks = bytearray()
                    async for chunk in response.aiter_bytes():
                        chunks += chunk
                        if len(chunks) > MAX_ANSWER_BYTES:
                            failure = "bad_body"
                            break
                    raw = bytes(chunks)
            except httpx.PoolTimeout:
                failure = NOT_SENT
            except httpx.TimeoutException:
                failure = "timeout"
            except httpx.ConnectError:
                failure = "connect_error"
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError):
                failure = "connection_lost"
            except httpx.HTTPError as exc:
                failure = type(exc).__name__.lower()
        if scope.cancelled_caught:
            failure = "timeout" if left else NOT_SENT
        duration_ms = max(0, round((trio.current_time() - started) * 1000))
        answer: Answer
        if failure is not None or status is None or answer_headers is None:
            answer = unknown(failure or "no_answer")
        else:
            signed = self.signer.verify(answer_headers, path, raw, int(time.time()))
            answer = interpret(request, status, raw, signed)
        call = WalletCall(
            at=at_ms,
            environment=self.environment,
            partner_id=self.partner_id,
            call=request.call.value,
            request_id=request_id,
            request=request.logged(),
            outcome=answer.outcome.value,
            duration_ms=duration_ms,
            tx_id=request.tx_id,
            user_id=request.player_id,
            status=status,
            response=raw[:MAX_LOGGED_BYTES].decode("utf-8", "replace") if raw else None,
            code=answer.code,
        )
        return Sent(answer, call)

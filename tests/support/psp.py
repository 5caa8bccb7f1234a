"""PSP webhooks as a PSP sends them: events, and their raw body signed with the webhook
secret (``crashd.api.security.webhook``), each signature remembered by the log scan so
a test fails if any log line carries it."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx

from crashd.api import wire
from crashd.api.security import webhook as pspsig
from support.security import LogScan

WEBHOOK = "/api/v1/psp/webhook"


def psp_event(event_id: str, type_: str, environment: str = "sandbox", **data: Any) -> Any:
    """An event document: a deposit or withdrawal of player ``pat`` at partner ``acme``
    unless ``data`` says otherwise (a reversal names its ``withdrawal_id`` instead)."""
    if "withdrawal_id" not in data:
        data = {"partner_id": "acme", "user_id": "pat", "amount": 1000, **data}
    return {
        "id": event_id,
        "type": type_,
        "created": int(time.time()),
        "data": {"environment": environment, **data},
    }


class Psp:
    """Sends events signed with ``secret`` to ``client`` (or the ``client`` of a call:
    the same event to several processes)."""

    def __init__(self, scan: LogScan, secret: str, client: httpx.AsyncClient | None = None) -> None:
        self.scan, self.secret, self.client = scan, secret, client

    async def send(
        self,
        doc: Any = None,
        *,
        client: httpx.AsyncClient | None = None,
        raw: bytes | None = None,
        secret: str | None = None,
        timestamp: int | None = None,
        header: str | None = None,
    ) -> httpx.Response:
        """``raw`` instead of ``doc``'s JSON; ``header`` instead of the signature
        (empty: none sent)."""
        to = client or self.client
        assert to is not None, "no client to send to"
        body = raw if raw is not None else json.dumps(doc).encode()
        value = (
            header
            if header is not None
            else pspsig.header_value(
                secret or self.secret, int(time.time()) if timestamp is None else timestamp, body
            )
        )
        self.scan.remember(
            *(part.split("=", 1)[1] for part in value.split(",") if part.startswith("v1="))
        )
        headers = {"Content-Type": "application/json"}
        if value:
            headers[wire.PSP_SIGNATURE_HEADER] = value
        return await to.post(WEBHOOK, content=body, headers=headers)

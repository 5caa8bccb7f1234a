"""Reading a real feed connection in tests."""

from __future__ import annotations

import json
from typing import Any

import trio


async def next_of(ws: Any, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while True:
            msg = json.loads(await ws.get_message())
            if msg.get("type") == "heartbeat":
                await ws.send_message(json.dumps({"type": "ack", "id": msg["id"]}))
                continue
            if predicate(msg):
                return msg  # type: ignore[no-any-return]

"""The feed *on the API port*: quart-trio on hypercorn, for ``python -m bench fanout``.

usage: python hypercorn_peer.py PORT N RATE TICKS WARMUP PAYLOAD_BYTES

This is what sharing port 8000 with the REST app means: the tick goes through the
ASGI ``websocket.send`` of each connection, awaited once per subscriber, because an
ASGI app never sees the socket. It is here so docs/feed.md's choice of a dedicated feed
listener rests on a number from the same run, not an opinion.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import websocket
from quart_trio import QuartTrio


def tick_text(k: int, t_us: int, size: int) -> str:
    body: dict[str, Any] = {
        "seq": k + 1,
        "channel": "live_multiplier",
        "type": "tick",
        "n": k,
        "t": t_us,
        "m": 100 + k,
        "pad": "",
    }
    bare = len(json.dumps(body, separators=(",", ":")))
    body["pad"] = "x" * max(0, size - bare)
    return json.dumps(body, separators=(",", ":"))


def rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main(port: int, n: int, rate: float, ticks: int, warmup: int, size: int) -> None:
    app = QuartTrio(__name__)
    clients: set[Any] = set()
    all_in = trio.Event()

    @app.websocket("/api/v1/ws")
    async def feed() -> None:
        ws = websocket._get_current_object()  # type: ignore[attr-defined]
        await ws.accept()
        clients.add(ws)
        if len(clients) >= n:
            all_in.set()
        try:
            while True:
                await ws.receive()  # auth/subscribe from the load generator: ignored
        finally:
            clients.discard(ws)

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    config = Config()
    config.bind = [f"fd://{sock.fileno()}"]
    config.backlog = 4096
    config.websocket_ping_interval = None
    config.accesslog = None
    config.errorlog = None

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve, app, config)
            print(f"READY {sock.getsockname()[1]}", flush=True)
            await all_in.wait()
            t0 = trio.current_time() + 0.5
            wall0 = time.time() + 0.5
            cpu0 = 0.0
            for k in range(ticks):
                await trio.sleep_until(t0 + k / rate)
                if k == warmup:
                    cpu0 = time.process_time()
                text = tick_text(k, round((wall0 + k / rate) * 1e6), size)
                for ws in list(clients):
                    await ws.send(text)
            await trio.sleep(1.5)
            cpu = time.process_time() - cpu0
            print("RESULT " + json.dumps({"cpu_s": cpu, "rss_kb": rss_kb()}), flush=True)
            os._exit(0)

    trio.run(run)


if __name__ == "__main__":
    port, n, rate, ticks, warmup, size = sys.argv[1:7]
    main(int(port), int(n), float(rate), int(ticks), int(warmup), int(size))

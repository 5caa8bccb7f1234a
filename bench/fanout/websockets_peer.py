"""``websockets`` (asyncio) peer for ``python -m bench fanout``: ``broadcast()`` of each tick.

usage: python websockets_peer.py PORT N RATE TICKS WARMUP PAYLOAD_BYTES
This is the library's recommended fan-out: ``websockets.broadcast`` writes the message
to every connection without awaiting, skipping connections whose buffer is full.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve


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


async def main(port: int, n: int, rate: float, ticks: int, warmup: int, size: int) -> None:
    clients: set[ServerConnection] = set()
    all_in = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        if len(clients) >= n:
            all_in.set()
        try:
            async for _ in ws:  # auth/subscribe from the load generator: ignored
                pass
        finally:
            clients.discard(ws)

    async with serve(
        handler, "127.0.0.1", port, compression=None, ping_interval=None, backlog=4096
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"READY {bound}", flush=True)
        await all_in.wait()
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.5
        wall0 = time.time() + 0.5
        cpu0 = 0.0
        for k in range(ticks):
            due = t0 + k / rate
            delay = due - loop.time()  # re-read the clock before each tick
            if delay > 0:
                await asyncio.sleep(delay)
            if k == warmup:
                cpu0 = time.process_time()
            broadcast(clients, tick_text(k, round((wall0 + k / rate) * 1e6), size))
        await asyncio.sleep(1.5)
        cpu = time.process_time() - cpu0
        print("RESULT " + json.dumps({"cpu_s": cpu, "rss_kb": rss_kb()}), flush=True)
        os._exit(0)  # closing thousands of connections politely is not what we measure


if __name__ == "__main__":
    port, n, rate, ticks, warmup, size = sys.argv[1:7]
    asyncio.run(main(int(port), int(n), float(rate), int(ticks), int(warmup), int(size)))

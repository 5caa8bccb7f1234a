"""Regression: HTTP keep-alive connections must close (quart-trio 0.12 + Hypercorn 0.18).

Without the shielded ASGI ``send`` in :mod:`crashd.api.rest.requestid`, the server never closes a
connection after a response: ``Connection: close`` is ignored and the idle keep-alive
timer never fires, so server-side sockets accumulate (CLOSE_WAIT once clients leave).
These tests count the server's open sockets instead of trusting the client's view.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from support.servers import make_config, running_server, server_side_connections, wait_until


async def _raw_request(port: int, extra_headers: str = "") -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(
        f"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra_headers}\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = await stream.receive_some(65536)
        if not chunk:
            break
        data += chunk
    return stream, data


async def _read_until_eof(stream: trio.SocketStream) -> bytes:
    rest = b""
    while chunk := await stream.receive_some(65536):
        rest += chunk
    return rest


async def test_connection_close_is_honoured(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path, keep_alive_timeout=3600)) as info:
        streams = []
        for _ in range(5):
            stream, head = await _raw_request(info.port, "Connection: close\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            with trio.fail_after(10):
                assert await _read_until_eof(stream) == b""  # the server closed its end
            streams.append(stream)
        # Even while our client sockets are still open, the server holds none.
        assert await wait_until(lambda: server_side_connections(info.port) == 0)
        for stream in streams:
            await stream.aclose()


async def test_idle_keep_alive_connection_is_closed_after_timeout(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path, keep_alive_timeout=0.5)) as info:
        stream, head = await _raw_request(info.port)
        assert head.startswith(b"HTTP/1.1 200")
        assert server_side_connections(info.port) == 1  # kept alive for now
        with trio.fail_after(15):
            assert await _read_until_eof(stream) == b""  # closed by the server when idle
        assert await wait_until(lambda: server_side_connections(info.port) == 0)
        await stream.aclose()


async def test_client_that_leaves_leaves_no_server_socket(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path, keep_alive_timeout=3600)) as info:
        for _ in range(10):
            async with httpx.AsyncClient(base_url=info.url) as client:
                assert (await client.get("/api/v1/health")).status_code == 200
        # Clients closed their ends; the server must notice and close its ends too.
        assert await wait_until(lambda: server_side_connections(info.port) == 0)


async def test_keep_alive_connection_is_reused(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as info:
        async with httpx.AsyncClient(base_url=info.url) as client:
            for _ in range(20):
                assert (await client.get("/api/v1/health")).status_code == 200
            # Keep-alive still works: twenty requests, one connection.
            assert server_side_connections(info.port) == 1

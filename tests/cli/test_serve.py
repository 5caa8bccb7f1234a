"""``crashd serve`` as operators run it: a subprocess, signals, exit codes; and the
structured-concurrency promise of :func:`crashd.api.server.run_server`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from crashd.api.server import ServiceTaskEnded, describe_failure, run_server
from crashd.api.services import Services
from crashd.engine import chainstore
from support.servers import PYTHON, REPO, make_config


async def _start(
    cwd: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[trio.Process, str]:
    """Start ``crashd serve --port 0`` and return it with its URL (read from stdout)."""
    proc = await trio.lowlevel.open_process(
        [
            PYTHON,
            "-m",
            "crashd.api",
            "serve",
            "--port",
            "0",
            "--chain-length",
            "50",
            "--stop-wait-s",
            "1",
            "--feed-port",
            "0",
            *args,
        ],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )
    assert proc.stdout is not None
    line = b""
    with trio.fail_after(30):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                break
            line += chunk
    prefix = b"crashd: listening on "
    if not line.startswith(prefix):
        proc.kill()
        err = await proc.stderr.receive_some(65536) if proc.stderr else b""
        raise AssertionError(f"no listening line: {line!r} {err!r}")
    return proc, line[len(prefix) :].strip().decode()


async def _stop(proc: trio.Process, signum: int) -> tuple[int, str]:
    proc.send_signal(signum)
    with trio.fail_after(30):
        code = await proc.wait()
    assert proc.stderr is not None
    err = b""
    while chunk := await proc.stderr.receive_some(65536):
        err += chunk
    return code, err.decode()


async def test_serve_subprocess_first_start_keys_auth_and_sigterm(tmp_path: Path) -> None:
    proc, url = await _start(tmp_path, env={"CRASHD_LOG_LEVEL": "info"})
    try:
        # The chain was created on first start, its commitment printed and published.
        chain = chainstore.load(tmp_path / "crashd-chain.json")
        assert chain.spec.length == 50
        created = subprocess.run(
            [
                PYTHON,
                "-m",
                "crashd.api",
                "keys",
                "create",
                "--env",
                "sandbox",
                "--scopes",
                "read:balance",
                "--json",
            ],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
        )
        secret = json.loads(created.stdout)["secret"]
        async with httpx.AsyncClient(base_url=url) as client:
            health = await client.get("/api/v1/health")
            fairness = (await client.get("/api/v1/fairness")).json()
            missing = await client.get(
                "/api/v1/game/state", headers={"Authorization": f"Bearer {secret}"}
            )
        assert health.status_code == 200
        assert fairness["terminating_hash"] == chain.spec.terminating_hash.hex()
        assert missing.headers["content-type"] == "application/problem+json"
        assert (tmp_path / "crashd.sqlite3").exists() and (
            tmp_path / "crashd.sqlite3.pepper"
        ).exists()
    finally:
        code, err = await _stop(proc, signal.SIGTERM)
    assert code == 0, err
    assert f"terminating hash (publish it now): {chain.spec.terminating_hash.hex()}" in err
    assert "SIGTERM received" in err and "crashd stopped" in err
    assert secret not in err
    # Not a terminal: one JSON object per log line (the chain's progress lines aside),
    # request lines naming the request and the key by id.
    events = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert events and all({"ts", "level", "logger", "msg"} <= set(e) for e in events)
    access = [e for e in events if e["logger"] == "crashd.access"]
    assert access and all(e["request_id"] and e["key_id"] for e in access)
    assert any(e["key_id"].startswith("key_") and e["path"] == "/api/v1/game/state" for e in access)


async def test_serve_sigint_is_a_graceful_exit_too_and_the_chain_is_reused(tmp_path: Path) -> None:
    proc, url = await _start(tmp_path)
    code, _ = await _stop(proc, signal.SIGINT)
    assert code == 0
    first = chainstore.load(tmp_path / "crashd-chain.json").spec.terminating_hash
    proc, url = await _start(tmp_path, "--chain-length", "70")
    code, err = await _stop(proc, signal.SIGTERM)
    assert code == 0
    assert chainstore.load(tmp_path / "crashd-chain.json").spec.terminating_hash == first
    assert "created chain file" not in err


async def test_a_failing_service_task_stops_the_server_and_raises(tmp_path: Path) -> None:
    class EngineCrashed(Exception):
        pass

    ready = trio.Event()

    async def engine(services: Services) -> None:
        await ready.wait()
        raise EngineCrashed("tick loop fell over")

    port = None
    with pytest.raises(BaseExceptionGroup) as caught:
        async with trio.open_nursery() as nursery:
            info = await nursery.start(
                lambda task_status: run_server(
                    make_config(tmp_path), extra_tasks=[engine], task_status=task_status
                )
            )
            port = info.port
            async with httpx.AsyncClient(base_url=info.url) as client:
                assert (await client.get("/api/v1/health")).status_code == 200
            ready.set()
            await trio.sleep_forever()  # ended by the failure, not by us
    assert caught.group_contains(EngineCrashed)
    assert "EngineCrashed: tick loop fell over" in describe_failure(caught.value)
    # No zombie server: the port is closed.
    assert port is not None
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


async def test_a_service_task_that_returns_is_a_failure(tmp_path: Path) -> None:
    async def quits(services: Services) -> None:
        return None

    with pytest.raises(BaseExceptionGroup) as caught:
        await run_server(make_config(tmp_path), extra_tasks=[quits])
    assert caught.group_contains(ServiceTaskEnded)


async def test_graceful_shutdown_closes_idle_keep_alive_connections_and_returns(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, keep_alive_timeout=3600)
    shutdown = trio.Event()
    stopped = False
    async with trio.open_nursery() as nursery:

        async def serve(task_status: trio.TaskStatus[object]) -> None:
            nonlocal stopped
            await run_server(config, shutdown=shutdown, task_status=task_status)
            stopped = True

        info = await nursery.start(serve)
        stream = await trio.open_tcp_stream("127.0.0.1", info.port)
        await stream.send_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while not data.endswith(b"}"):
            data += await stream.receive_some(65536)
        assert data.startswith(b"HTTP/1.1 200")
        shutdown.set()
        with trio.fail_after(10):
            # The server closes the idle connection it would otherwise keep for an hour.
            assert await stream.receive_some(65536) == b""
        await stream.aclose()
    assert stopped


def test_module_entry_point_help() -> None:
    out = subprocess.run(
        [PYTHON, "-m", "crashd.api", "serve", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
    )
    assert out.returncode == 0
    for flag in (
        "--config",
        "--host",
        "--port",
        "--database",
        "--chain-file",
        "--chain-length",
        "--environment",
        "--keep-alive-timeout",
        "CRASHD_PORT",
    ):
        assert flag in out.stdout
    assert sys.executable


def test_a_port_in_use_is_a_clear_fatal_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = subprocess.run(
            [
                PYTHON,
                "-m",
                "crashd.api",
                "serve",
                "--port",
                str(taken.getsockname()[1]),
                "--chain-length",
                "10",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("crashd serve: fatal: OSError")

"""Shared test configuration: Hypothesis profiles and the fixtures every folder uses.

``ci`` (the default) keeps the suite within CI's budget; ``thorough`` runs many more
examples: ``pytest --hypothesis-profile=thorough``. Helpers live in ``tests/support``
(importable as ``support``: ``pythonpath`` in pyproject.toml).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, settings

from support.game import Api, game_config
from support.postgres import BACKENDS, Backend, backend
from support.redis import SKIP_NO_REDIS, URL_ENV, private_redis, server_binary
from support.security import REQUEST_LOGGERS, LogScan
from support.servers import make_key, running_server

settings.register_profile(
    "ci", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "thorough", max_examples=5_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# -- shared fixtures -------------------------------------------------------------


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """Each test leaves the root logger as it found it: ``crashd serve`` run in-process
    (``logs.configure``) replaces its handlers with one on the test's captured stderr,
    which is closed once the test ends; a later test's log line would then print
    "--- Logging error ---" into that test's stderr."""
    root = logging.getLogger()

    def ours(handler: logging.Handler) -> bool:  # pytest adds and removes its own per phase
        return not type(handler).__module__.startswith("_pytest")

    before, level = [h for h in root.handlers if ours(h)], root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if ours(handler) and handler not in before:
                root.removeHandler(handler)
        for handler in before:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


@pytest.fixture(scope="module")
def logscan() -> Iterator[LogScan]:
    """Capture every log line of the module at DEBUG; fail if any secret shows up.

    A module uses it with ``pytestmark = pytest.mark.usefixtures("logscan")``; its tests
    call ``logscan.remember(...)`` with every secret they handle."""
    scan = LogScan()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(scan)
    root.setLevel(logging.DEBUG)
    try:
        yield scan
    finally:
        root.removeHandler(scan)
        root.setLevel(old_level)
    # (A module that ran only pure tests logged nothing; then there is nothing to scan.)
    assert not scan.leaks(), scan.leaks()[:5]
    # Every line written for a request names the request and the key (or "-").
    per_request = [line for line in scan.lines if line.startswith(REQUEST_LOGGERS)]
    for line in per_request:
        assert "request_id=" in line and "key_id=" in line, line
    # The JSON form of every line: parseable, and a request's lines name it and its key.
    for text in scan.json_lines:
        event = json.loads(text)
        if event["logger"] in {name.strip() for name in REQUEST_LOGGERS}:
            assert event.get("request_id") and event.get("key_id"), text


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """A real server playing short rounds, and a signed client with every bet scope."""
    config = game_config(tmp_path)
    async with running_server(config) as info:
        _, secret = make_key(config, "read:game_state,read:balance,write:bet")
        async with httpx.AsyncClient(base_url=info.url, timeout=10) as client:
            yield Api(client, secret)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """The test's ledger database, once on SQLite and once on PostgreSQL (a database of
    its own on the test server; skipped with the reason when there is none)."""
    with backend(request.param, tmp_path) as b:
        yield b


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Backend]:
    """A PostgreSQL database of the test's own (skipped where none can be had)."""
    with backend("postgresql", tmp_path) as b:
        yield b


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A Redis to use (each test keys its data by its own prefix or epoch): CI's, or a
    private one; the test skips, saying why, where there is neither."""
    url = os.environ.get(URL_ENV)
    if url:
        yield url
        return
    if server_binary() is None:
        pytest.skip(SKIP_NO_REDIS)
    with tempfile.TemporaryDirectory(prefix="crashd-redis-") as directory:
        with private_redis(Path(directory)) as server:
            yield server.url

"""The request body is read from Quart once per request: the signature check, the
idempotency fingerprint and the JSON body share that one read, and only the first of
them waits (a checkpoint is a scheduler batch under load)."""

from __future__ import annotations

import trio.testing
from quart_trio import QuartTrio

from crashd.api.rest.body import request_body


async def test_the_body_is_read_once_and_shared() -> None:
    app = QuartTrio(__name__)
    raw = b'{"user_id": "alice", "amount": 100}'
    async with app.test_request_context("/x", method="POST", data=raw):
        assert await request_body() == raw
        with trio.testing.assert_no_checkpoints():
            assert await request_body() == raw
            assert await request_body() == raw


async def test_each_request_reads_its_own_body() -> None:
    app = QuartTrio(__name__)
    for raw in (b"first", b"", b"third"):
        async with app.test_request_context("/x", method="POST", data=raw):
            assert await request_body() == raw

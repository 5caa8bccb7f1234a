"""Shared helpers for the SDK tests (no tests here): a quick game, signed keys, and a
TCP proxy whose connections a test can cut, which is how a network failure between a
``FeedClient`` and the server is made real (the client's socket sees a dead peer, not
a polite close).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import trio

from crashd.api.config import Config
from crashd.api.security.keys import KeyStore
from crashd.engine.chainstore import ChainFile
from crashd.engine.chainstore import save as save_chain
from crashd.engine.fairness import ChainReader, build_chain, crash_point
from support.game import game_config

QUICK_GAMES = 8
"""Rounds a test may play: the salt makes each crash in [1.01x, 1.30x] (≤ 4.4 s of
running), so a test that waits for a few rounds waits seconds, not minutes."""


@functools.lru_cache(maxsize=1)
def _quick_chain() -> ChainFile:
    spec = build_chain(hashlib.sha256(b"crashd sdk tests").digest(), length=2000, interval=100)
    reader = ChainReader(spec)
    hashes = [reader.game_hash(g) for g in range(1, QUICK_GAMES + 1)]
    # Found once by the search below (400,000 tries, ~5 s); checked, not trusted.
    for attempt in [_KNOWN_GOOD, *range(10_000_000)]:
        salt = f"sdk-salt-{attempt}"
        if all(101 <= crash_point(h, salt) <= 130 for h in hashes):
            return ChainFile(spec=spec, salt=salt)
    raise AssertionError("no salt found")


_KNOWN_GOOD = 413022


def quick_config(tmp_path: Path, **overrides: object) -> Config:
    """``game_config`` (betting 400 ms, pause 200 ms) with rounds that crash early."""
    chain_file = tmp_path / "crashd-chain.json"
    if not chain_file.exists():
        save_chain(chain_file, _quick_chain())
    return game_config(tmp_path, **overrides)


def make_signed_key(config: Config, scopes: str, partner: str = "acme") -> tuple[str, str | None]:
    """(API key, signing secret or ``None`` where the key store has no signing secrets)."""
    store = KeyStore(config.database)
    try:
        created = store.create("sandbox", scopes, partner_id=partner, label="sdk test")
    finally:
        store.close()
    return created.secret, getattr(created, "signing_secret", None) or None


class CuttableProxy:
    """A loopback TCP proxy to ``target`` (changeable: "the server moved/restarted").

    ``cut()`` drops every open connection at once; while ``down`` is set, new
    connections are accepted and dropped immediately, like a network that is out.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.down = False
        self.port = 0
        self.accepted = 0
        self._scopes: set[trio.CancelScope] = set()

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._handle, listeners)
            task_status.started(self.port)

    def cut(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    async def _handle(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        if self.down:
            await trio.aclose_forcefully(client)
            return
        try:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        except OSError:
            await trio.aclose_forcefully(client)
            return
        with trio.CancelScope() as scope:
            self._scopes.add(scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)
            finally:
                self._scopes.discard(scope)
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(upstream)

    @staticmethod
    async def _pump(
        src: trio.SocketStream, dst: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # one side ended: end both, as a broken link would

"""Running crashd: Hypercorn with the app, and the engine beside it in *our* nursery.

Structure (Trio's: every task has a parent, errors propagate)::

    run_server
    └── nursery
        ├── service tasks: engine, ledger writer, feed hub (wiring point), purge loop
        ├── Hypercorn (hypercorn.trio.serve), stopped by the shutdown sequence
        └── shutdown sequence: waits for the shutdown request, drains, stops Hypercorn

If any task fails, the nursery cancels the others and ``run_server`` raises: the
process ends with an error instead of serving a frozen game. The app's own
``app.nursery`` (quart-trio's lifespan nursery) is deliberately not used for long-lived
tasks: failures there are not ours to see, and a never-ending task there makes every
shutdown wait for Hypercorn's lifespan timeout.

:func:`serve_until_signalled` adds SIGINT/SIGTERM handling for ``crashd serve``: the
first signal starts a graceful shutdown (exit 0), a second one stops at once.
"""

from __future__ import annotations

import gc
import logging
import secrets
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import hypercorn.config
import hypercorn.trio
import trio
from quart import Blueprint

from crashd.api.wire import FEED_PATH
from crashd.engine import chainstore, signingkey
from crashd.engine.driver import Engine
from crashd.engine.fairness import (
    DEFAULT_CHECKPOINT_INTERVAL,
    ChainEncoding,
    ChainReader,
    crash_point,
)
from crashd.engine.game import Game, Player
from crashd.engine.gctune import tune_gc
from crashd.engine.ledger import Balance, Ledger, LedgerInUse, open_ledger
from crashd.engine.ledger.database import is_postgres
from crashd.engine.notary import Notary
from crashd.engine.proclock import ProcessLock
from crashd.engine.round.config import RoundConfig

from .cluster.engine import serve_cluster
from .cluster.engine import wanted as cluster_wanted
from .config import Config, ConfigError, describe

if TYPE_CHECKING:
    from crashd.engine.ledger.lease import Lease
from .feed import FeedConfig, FeedServer
from .feed.balances import BalanceFeed
from .feed.hub import Hub
from .feed.messages import FeedAnnouncer, make_snapshot
from .feed.orders import OrderDesk
from .live import LiveState
from .ops.chains import PUBLISHED as CHAIN_PUBLISHED
from .ops.chains import Chain, ChainRegistry, load_registry, published_entry
from .ops.chains import read_entries as read_chain_entries
from .ops.runtime import start_ops
from .rest.app import create_app
from .rest.routes.feed import feed_authenticator
from .security.guard import security_state
from .services import GameRuntime, Services, open_services
from .wallet.driver import run_wallets

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 3600.0
ServiceTask = Callable[[Services], Awaitable[None]]
"""A long-lived task run beside the HTTP server; returning or raising stops the server."""


@dataclass(frozen=True)
class ServerInfo:
    """Where the server listens (reported through ``task_status``)."""

    host: str
    port: int
    url: str


class ServiceTaskEnded(RuntimeError):
    """A service task returned although it should run as long as the server."""


def ensure_chain(config: Config, out: TextIO = sys.stderr) -> chainstore.ChainFile:
    """Load the chain file, creating it (and printing its commitment) on first start.

    A sandbox server fixes a random salt itself (demo money: nobody needs to watch the
    commitment being published first); a production server waits for the operator to
    publish the terminating hash and fix the salt with ``crashd chain salt``.
    """
    sandbox = config.environment == "sandbox"
    if config.chain_file.exists():
        chain = chainstore.load(config.chain_file)
        if chain.salt is None and sandbox:
            chain = chainstore.ChainFile(spec=chain.spec, salt=secrets.token_hex(32))
            chainstore.save(config.chain_file, chain, overwrite=True)
            print(f"sandbox: fixed a random salt for {config.chain_file}: {chain.salt}", file=out)
        return chain
    if not config.chain_file.parent.is_dir():
        raise chainstore.ChainFileError(
            f"cannot create {config.chain_file}: no directory {config.chain_file.parent}"
        )
    interval = min(DEFAULT_CHECKPOINT_INTERVAL, config.chain_length)
    salt = secrets.token_hex(32) if sandbox else None
    chain = chainstore.create(
        config.chain_file,
        config.chain_length,
        ChainEncoding.HEX,
        interval,
        salt,
        chainstore.progress_printer(out, config.chain_length),
    )
    print(
        f"created chain file {config.chain_file} ({config.chain_length:,} games; secret, mode 0600: back it up)",
        file=out,
    )
    print(f"terminating hash (publish it now): {chain.spec.terminating_hash.hex()}", file=out)
    if sandbox:
        print(f"sandbox salt: {salt}", file=out)
    else:
        print("then fix the public salt with `crashd chain salt TEXT` before serving", file=out)
    return chain


def ensure_signing_key(config: Config, out: TextIO = sys.stderr) -> signingkey.SigningKey:
    """The key that signs transcripts, seals and receipts: created with the chain (and
    on the first start of a server whose chain predates it)."""
    path = config.signing_key_file or signingkey.beside(config.chain_file)
    return signingkey.ensure(path, out)


def build_notary(config: Config, chain: chainstore.ChainFile, key: signingkey.SigningKey) -> Notary:
    """Verifiable settlement for this server's rounds (docs/fairness.md)."""
    return Notary(
        key.signer,
        key.pseudonyms(),
        environment=config.environment,
        salt=chain.salt or "",
        terminating_hash=chain.spec.terminating_hash.hex(),
        chain_encoding=chain.spec.encoding.value,
        config=round_config(config),
    )


def round_config(config: Config) -> RoundConfig:
    return RoundConfig(
        min_stake=config.min_stake,
        max_stake=config.max_stake,
        max_profit=config.max_profit or None,
        max_bets_per_user=config.max_bets_per_user,
        betting_ms=config.betting_ms,
        pause_ms=config.pause_ms,
    )


def chain_reveal(chain: chainstore.ChainFile) -> Callable[[int], tuple[int, str] | None] | None:
    """Round id → (crash point, hash) of its game, for the rounds start-up recovery
    voids: their games are burnt, so, as when the engine voids, they are revealed."""
    salt = chain.salt
    if salt is None:
        return None
    reader = ChainReader(chain.spec)

    def reveal(round_id: int) -> tuple[int, str] | None:
        if not 1 <= round_id <= chain.spec.games:
            return None
        game_hash = reader.game_hash(round_id)
        return crash_point(game_hash, salt), game_hash

    return reveal


def build_game(
    config: Config,
    chain: chainstore.ChainFile,
    ledger: Ledger,
    chains: ChainRegistry | None = None,
) -> Game:
    """The engine resumes after the highest round the ledger ever saw, in the chain
    that holds it (``chains``: every chain published; else ``chain`` alone)."""
    if chain.salt is None:
        raise chainstore.ChainFileError(
            "the chain's public salt is not fixed yet: publish the terminating hash, then run "
            "`crashd chain salt TEXT`"
        )
    recovered = ledger.recovery
    first_game = (recovered.highest_round_id if recovered is not None else 0) + 1
    if chains is None:
        chains = ChainRegistry([Chain(1, 1, config.chain_file, chain, 0)], config.chain_warn_games)
    if chains.of_round(first_game) is None:
        raise chainstore.ChainFileError(
            "the hash chains are used up: publish the next one (crashd admin chain next) "
            "before the last game is played"
        )
    chains.next_round = first_game
    engine = Engine(
        games=chains.games(first_game),
        salt=chain.salt,
        first_game=first_game,
        config=round_config(config),
        tick_hz=config.tick_hz,
    )
    return Game(engine, ledger)


def hypercorn_config(config: Config) -> hypercorn.config.Config:
    hc = hypercorn.config.Config()
    host = (
        f"[{config.host}]"
        if ":" in config.host and not config.host.startswith("[")
        else config.host
    )
    hc.bind = [f"{host}:{config.port}"]
    hc.keep_alive_timeout = config.keep_alive_timeout
    hc.graceful_timeout = config.graceful_timeout
    hc.accesslog = None  # api.requestid writes the access log, with request and key ids
    hc.errorlog = logging.getLogger("crashd.hypercorn")
    hc.include_server_header = False
    if config.tls_cert is not None or config.tls_key is not None:
        if config.tls_cert is None or config.tls_key is None:
            raise ConfigError("TLS needs both tls_cert and tls_key")
        # Hypercorn's SSL context already refuses anything below TLS 1.2 (and disables
        # compression); api.security's test checks that a TLS 1.1 client is refused.
        hc.certfile = str(config.tls_cert)
        hc.keyfile = str(config.tls_key)
    return hc


def _parse_bind(url: str) -> ServerInfo:
    scheme, _, rest = url.partition("://")
    host, _, port = rest.rpartition(":")
    return ServerInfo(host=host.strip("[]"), port=int(port), url=url)


async def purge_idempotency_records(services: Services) -> None:
    """Forget stored replies past their retention, hourly (a ledger op: the one writer
    deletes them, in order with everything else)."""
    ledger = services.require_game().game.ledger
    while True:
        await trio.sleep(PURGE_INTERVAL_S)
        kept = await services.idempotency.purge(ledger, ledger.now_ms())
        log.info("idempotency: %d stored replies within the retention", kept)


def service_tasks(services: Services) -> list[ServiceTask]:
    """The tasks that run beside Hypercorn for the whole life of the server."""
    return [
        purge_idempotency_records,
        # Wiring point: the engine driver, the ledger writer and the feed hub go here.
        # Tasks that must be ready before the first request (the ledger writer) are
        # better started with `await nursery.start(...)` in run_server below.
    ]


async def _run_service_task(task: ServiceTask, services: Services) -> None:
    await task(services)
    raise ServiceTaskEnded(f"service task {getattr(task, '__name__', task)!r} ended unexpectedly")


async def run_server(
    config: Config,
    *,
    shutdown: trio.Event | None = None,
    extra_tasks: Sequence[ServiceTask] = (),
    blueprints: Sequence[Blueprint] = (),
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``shutdown`` is set, then stop gracefully and return.

    ``extra_tasks`` run like the service tasks, ``blueprints`` are served beside the
    API (embedding, tests, the bench's floor route). Raises if any task
    fails; the chain file is created first if missing (blocking work, in a thread).
    """
    shutdown = shutdown if shutdown is not None else trio.Event()
    # On PostgreSQL, the leader lease first (a standby waits here, holding nothing
    # else): only the leader may touch the chain and the ledger. On SQLite, the
    # database's flock instead. Either is held before anything reads the database (the
    # key store and the chain registry read it before the ledger opens it): a second
    # server's recovery would void the first's rounds. Then one server per chain, held
    # before the chain is read or created: two servers playing one chain would show
    # each other's players games still to come.
    lease = await take_lease(config, shutdown)
    if lease is None and is_postgres(config.database):
        return  # asked to stop while waiting as a standby
    database_lock = (
        None
        if lease is not None
        else ProcessLock(Path(config.database), "database", LedgerInUse, share=True)
    )
    try:
        chain_lock = lock_chain(config)
        try:
            await _run_server(config, shutdown, extra_tasks, blueprints, task_status, lease)
        finally:
            chain_lock.release()
    finally:
        if database_lock is not None:
            database_lock.release()
        if lease is not None:
            lease.release()


async def take_lease(config: Config, shutdown: trio.Event) -> Lease | None:
    """The leader lease of a PostgreSQL database (``None`` for SQLite, whose flock the
    ledger takes itself): at once, or, with ``standby``, once the leader is gone.
    ``None`` too if ``shutdown`` is set while waiting."""
    if not is_postgres(config.database):
        return None
    try:
        from crashd.engine.ledger.lease import Lease, wait_for_lease
    except ImportError:
        raise ConfigError(
            "a postgresql:// database needs psycopg: pip install 'crashd[postgres]'"
        ) from None
    url = str(config.database)
    if not config.standby:
        return await trio.to_thread.run_sync(Lease.take, url)
    lease: Lease | None = None
    async with trio.open_nursery() as nursery:

        async def stop_waiting() -> None:
            await shutdown.wait()
            nursery.cancel_scope.cancel()

        nursery.start_soon(stop_waiting)
        started = trio.current_time()
        lease = await wait_for_lease(url)
        log.info(
            "standby: took the leader lease (term %d) after %.1f s",
            lease.term,
            trio.current_time() - started,
        )
        nursery.cancel_scope.cancel()
    return lease


def lock_chain(config: Config) -> ProcessLock:
    if not config.chain_file.parent.is_dir():
        raise chainstore.ChainFileError(
            f"cannot create {config.chain_file}: no directory {config.chain_file.parent}"
        )
    return ProcessLock(config.chain_file, "hash chain")


async def _run_server(
    config: Config,
    shutdown: trio.Event,
    extra_tasks: Sequence[ServiceTask],
    blueprints: Sequence[Blueprint],
    task_status: trio.TaskStatus[ServerInfo],
    lease: Lease | None = None,
) -> None:
    chain = await trio.to_thread.run_sync(ensure_chain, config)
    key = await trio.to_thread.run_sync(ensure_signing_key, config)
    services = await trio.to_thread.run_sync(open_services, config, chain)
    try:
        notary = services.notary = build_notary(config, chain, key)
        app = create_app(services, blueprints)
        stop_http = trio.Event()

        entries = await trio.to_thread.run_sync(
            read_chain_entries, config.database, config.environment
        )
        chains = load_registry(services.chain, config.chain_file, entries, config.chain_warn_games)
        services.chains = chains
        notary.chain_of = chains.fairness_of
        async with (
            open_ledger(
                config.database,
                synchronous=config.synchronous,
                reveal=chains.reveal if services.chain.salt is not None else None,
                settlement=notary,
                lease=lease,
            ) as ledger,
            trio.open_nursery() as nursery,
        ):
            # The ledger outlives everything else here: it is entered first and closed
            # last, after the engine has stopped and every op it caused has committed.
            game = build_game(config, services.chain, ledger, chains)
            if chains.chains[0].published_seq == 0:
                # The first chain's commitment, in the audit log once (by its op id).
                first = chains.chains[0]
                await ledger.audit_record(
                    f"chain:1:{first.chain.spec.terminating_hash.hex()}",
                    environment=config.environment,
                    actor="crashd",
                    action=CHAIN_PUBLISHED,
                    after=published_entry(first),
                    note="the configured chain_file",
                )
            game.engine.on_tick_lateness = services.metrics.tick_lateness.observe
            ledger.on_commit = services.metrics.observe_commit
            # Before the first round opens: it plays with the limits in force.
            ops = await start_ops(config, game)
            services.ops = ops
            nursery.start_soon(ops.run)
            game_done = trio.Event()
            balances: BalanceFeed | None = None
            live = LiveState(game.engine, game.epoch_ms, config.environment, config.tick_hz)
            hub = Hub(
                snapshot=make_snapshot(
                    live, lambda channel: balances.known(channel) if balances is not None else None
                )
            )
            game.announcer = FeedAnnouncer(hub, game.epoch_ms)
            environment = config.environment

            async def read_balance(partner_id: str, user_id: str) -> Balance:
                wallets = services.wallets
                if wallets is not None and wallets.wallet_of(partner_id) is not None:
                    # A seamless player's money is in the operator's wallet.
                    held, _owed = await wallets.balance(Player(environment, partner_id, user_id))
                    return Balance(posted=held, pending=0, available=held)
                return await ledger.balance(
                    environment=environment, partner_id=partner_id, user_id=user_id
                )

            balances = BalanceFeed(hub, environment, read_balance)
            balances.external = frozenset(services.wallet_partners)
            ledger.add_balance_listener(balances.on_commit)
            hub.on_subscribe = balances.want
            nursery.start_soon(balances.run)
            # The seamless wallets: recovery of their debits and credits before the
            # engine plays, then the outbox, for the life of the server.
            services.wallets = await nursery.start(
                run_wallets, config, services.wallet_partners, game, balances.on_wallet
            )

            notary.attach(game.engine, ledger, lambda: game.epoch_offset_ms)
            notary.on_seal = FeedAnnouncer.seal_publisher(hub)
            nursery.start_soon(notary.run)

            async def run_game(task_status: trio.TaskStatus[None]) -> None:
                try:
                    await game.run(task_status=task_status)
                finally:
                    notary.close()
                game_done.set()
                if not shutdown.is_set():
                    raise ServiceTaskEnded("the game engine stopped (is the hash chain used up?)")

            await nursery.start(run_game)
            services.started_trio = trio.current_time()
            services.game = GameRuntime(game, game.epoch_offset_ms, live)
            services.hub = hub
            known = await services.idempotency.load(ledger, ledger.now_ms())
            log.info("idempotency: %d stored replies within the retention", known)
            orders = OrderDesk(services, security_state(app).nonces, config.signature_window_s)
            feed_server = FeedServer(
                hub, feed_authenticator(services.authenticator), FeedConfig(), orders
            )
            services.feed_server = feed_server
            if cluster_wanted(config):
                await nursery.start(serve_cluster, config, hub, live, feed_server, services, ledger)
            feed_port: int = await nursery.start(feed_server.serve, config.host, config.feed_port)
            services.feed_port = feed_port
            feed_host = f"[{config.host}]" if ":" in config.host else config.host
            services.feed_url = f"ws://{feed_host}:{feed_port}{FEED_PATH}"
            log.info("feed listening on %s", services.feed_url)
            log.info(
                "game running: next round %d, ledger recovery %s",
                game.engine.next_game,
                ledger.recovery,
            )
            for task in [*service_tasks(services), *extra_tasks]:
                nursery.start_soon(_run_service_task, task, services)

            async def serve_http(task_status: trio.TaskStatus[list[str]]) -> None:
                await hypercorn.trio.serve(
                    app,
                    hypercorn_config(config),
                    shutdown_trigger=stop_http.wait,
                    task_status=task_status,
                )
                # Hypercorn has drained its connections: nothing needs the services now.
                nursery.cancel_scope.cancel()

            binds: list[str] = await nursery.start(serve_http)
            info = _parse_bind(binds[0])
            log.info("crashd listening on %s %s", info.url, describe(config))

            async def shutdown_sequence() -> None:
                await shutdown.wait()
                log.info("shutdown requested: draining")
                # Stop taking bets at once; a running round that crashes within
                # stop_wait_s plays to its crash, any other round is voided and
                # refunded now (the engine knows when it will crash). All *before*
                # HTTP and the feed stop, so every cashout still gets its answer and
                # every settlement commits. Then HTTP (graceful_timeout) and the feed
                # (close frames) drain side by side: a default stop ends within
                # stop_wait_s + graceful_timeout, under Docker's 10 s.
                game.engine.stop(grace_ms=round(config.stop_wait_s * 1000), reason="shutdown")
                with trio.move_on_after(config.stop_wait_s + 1.0):
                    await game_done.wait()
                if not game_done.is_set():  # only if the engine missed its own deadline
                    log.warning(
                        "the round did not end within %.1f s: voiding it", config.stop_wait_s
                    )
                    game.engine.stop(void=True, reason="shutdown")
                    await game_done.wait()
                log.info("engine stopped: closing HTTP and the feed")
                stop_http.set()
                nursery.start_soon(feed_server.shutdown)

            nursery.start_soon(shutdown_sequence)
            task_status.started(info)
        log.info("crashd stopped")
    finally:
        services.close()


async def serve_until_signalled(
    config: Config,
    *,
    blueprints: Sequence[Blueprint] = (),
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``run_server`` with SIGINT/SIGTERM: first signal = graceful stop, second = now."""
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:

        async def watch_signals() -> None:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for signum in signals:
                    if shutdown.is_set():
                        log.warning("second %s: stopping now", signal.Signals(signum).name)
                        nursery.cancel_scope.cancel()
                        return
                    log.info("%s received: stopping gracefully", signal.Signals(signum).name)
                    shutdown.set()

        nursery.start_soon(watch_signals)

        async def run(task_status: trio.TaskStatus[ServerInfo]) -> None:
            await run_server(
                config, shutdown=shutdown, blueprints=blueprints, task_status=task_status
            )
            nursery.cancel_scope.cancel()  # done: stop watching signals

        info: ServerInfo = await nursery.start(run)
        task_status.started(info)


def describe_failure(exc: BaseException) -> str:
    """One line naming the root failure of a (possibly grouped) exception."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe_failure(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def run_blocking(
    config: Config,
    on_ready: Callable[[ServerInfo], Any] | None = None,
    blueprints: Sequence[Blueprint] = (),
) -> None:
    """Run the server in this thread until signalled (``crashd serve``)."""

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                partial(serve_until_signalled, config, blueprints=blueprints)
            )
            # Everything long-lived now exists: freeze it out of the collector's reach
            # and make full collections rare (their 40-70 ms pauses dominated tick
            # lateness; see engine/gctune.py and `python -m bench tick`).
            settings = tune_gc()
            log.info(
                "gc tuned: %d objects frozen, thresholds %s", settings.frozen, gc.get_threshold()
            )
            if on_ready is not None:
                on_ready(info)

    trio.run(main)


__all__ = [
    "ServerInfo",
    "ServiceTask",
    "ServiceTaskEnded",
    "describe_failure",
    "ensure_chain",
    "hypercorn_config",
    "run_blocking",
    "run_server",
    "serve_until_signalled",
    "service_tasks",
]

"""The browser suite's harness: a real crashd server serving the pages, a feed proxy a
test can cut, and headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium.

Everything here is real: the server is ``crashd.api.server.run_server`` on 127.0.0.1
(in a thread of its own, with its own Trio loop, so the synchronous Selenium calls of
the tests never block it), the page talks to it exactly as a partner's page would, and
the only thing between them is :class:`CuttableProxy` on the feed's TCP connections.

The suite skips (with the reason) when Chromium, chromedriver or Selenium is missing,
so ``pytest`` runs anywhere; CI installs them (``.ci/run``), so there it never skips.

Screenshots of every step go to ``tests/browser/screenshots/`` (git-ignored).
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from crashd.api.config import Config
from crashd.api.server import ServerInfo, run_server
from crashd.api.services import Services
from crashd.api.wire import FEED_PATH
from crashd.engine.chainstore import ChainFile
from crashd.engine.chainstore import save as save_chain
from crashd.engine.curve import ms_at
from crashd.engine.fairness import ChainReader, build_chain, crash_point
from support.client import CuttableProxy
from support.servers import make_config

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # the suite's page helpers: ``import pagedriver``
SCREENSHOTS = HERE / "screenshots"
AXE = HERE / "vendor" / "axe.min.js"

CHROMIUM = os.environ.get("CRASHD_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CRASHD_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
)


def missing_browser() -> str | None:
    """Why the browser suite cannot run here, or ``None``."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    for what, path in (("chromium", CHROMIUM), ("chromedriver", CHROMEDRIVER)):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            return f"{what} not found at {path} (apt-get install -y chromium chromium-driver)"
    return None


# -- the game the suite plays ----------------------------------------------------------------

GAMES = 16
SALT = "browser-salt-334190"
"""Chosen by a search over salts (the crash points stay fair: a real chain and the real
formula, a salt picked by the test as an operator never may) so that the first games
are short (64 s of running for all 16) and several reach 1.38x-1.86x, long enough to
click "Cash out" in: 1.00, 1.03, 1.22, 1.38, 1.24, 1.47, 1.57, 1.41, 1.31, 1.86, 1.18,
1.19, 1.35, 1.10, 1.23, 1.05."""
EXPECTED = (100, 103, 122, 138, 124, 147, 157, 141, 131, 186, 118, 119, 135, 110, 123, 105)


@functools.lru_cache(maxsize=1)
def browser_chain() -> ChainFile:
    spec = build_chain(hashlib.sha256(b"crashd browser tests").digest(), length=500, interval=50)
    chain = ChainFile(spec=spec, salt=SALT)
    reader = ChainReader(spec)
    points = tuple(crash_point(reader.game_hash(g), SALT) for g in range(1, GAMES + 1))
    assert points == EXPECTED, points  # checked, not trusted
    return chain


def game_hash(game: int) -> str:
    return ChainReader(browser_chain().spec).game_hash(game)


def crash_of(game: int) -> int:
    return crash_point(game_hash(game), SALT)


def browser_config(tmp_path: Path, **overrides: Any) -> Config:
    settings: dict[str, Any] = dict(
        chain_length=500,
        betting_ms=500,
        pause_ms=300,
        tick_hz=20,
        stop_wait_s=0.5,
        max_bets_per_user=2,  # the page's second bet panel
    )
    settings.update(overrides)
    config = make_config(tmp_path, **settings)
    save_chain(config.chain_file, browser_chain())
    return config


# -- the server, in a thread of its own -------------------------------------------------------


@dataclass
class LiveServer:
    """A real server in a background thread; ``url`` for the browser, ``rest`` for the
    test's own reads."""

    config: Config
    info: ServerInfo | None = None
    feed_proxy: CuttableProxy | None = None
    _token: Any = None
    _shutdown: trio.Event | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _proxied: Any = None
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    @property
    def url(self) -> str:
        assert self.info is not None
        return self.info.url

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="crashd-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(60):
            raise RuntimeError("the server did not start within 60 s")
        if self._error is not None:
            raise RuntimeError("the server failed to start") from self._error

    def _run(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to the test thread
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._shutdown = trio.Event()
        self._proxied = trio.Event()
        async with trio.open_nursery() as nursery:
            self.info = await nursery.start(
                functools.partial(
                    run_server,
                    self.config,
                    shutdown=self._shutdown,
                    extra_tasks=[self._front_feed],
                )
            )
            await self._proxied.wait()
            self._ready.set()
            await self._shutdown.wait()

    async def _front_feed(self, services: Services) -> None:
        """Put a cuttable proxy in front of the feed and advertise it as the feed's URL
        (``ws_url`` in every session), as an operator's reverse proxy would be: the page
        connects through it, and a test can cut the link under the page."""
        assert services.feed_url is not None
        target = int(services.feed_url.rsplit(":", 1)[1].split("/", 1)[0])
        proxy = CuttableProxy(target)
        async with trio.open_nursery() as nursery:
            port = await nursery.start(proxy.serve)
            services.feed_url = f"ws://127.0.0.1:{port}{FEED_PATH}"
            self.feed_proxy = proxy
            self._proxied.set()
            await trio.sleep_forever()

    def stop(self) -> None:
        if self._shutdown is not None and self._thread is not None and self._thread.is_alive():
            trio.from_thread.run_sync(self._shutdown.set, trio_token=self._token)
            self._thread.join(30)

    def cut_feed(self, *, down: bool) -> None:
        """Drop every feed connection at once (the browser's socket sees the link die,
        not a close frame); with ``down``, refuse new ones until :meth:`restore_feed`."""
        proxy = self.feed_proxy
        assert proxy is not None

        def cut() -> None:
            proxy.down = down
            proxy.cut()

        trio.from_thread.run_sync(cut, trio_token=self._token)

    def restore_feed(self) -> None:
        proxy = self.feed_proxy
        assert proxy is not None

        def up() -> None:
            proxy.down = False

        trio.from_thread.run_sync(up, trio_token=self._token)


def rest_state(server: LiveServer, client: httpx.Client, token: str) -> dict[str, Any]:
    r = client.get(f"{server.url}/api/v1/game/state", headers={"Authorization": f"Bearer {token}"})
    r.raise_for_status()
    return r.json()  # type: ignore[no-any-return]


# -- fixtures ---------------------------------------------------------------------------------

_ON_LEAVING: list[Callable[[], None]] = []
"""Closers of the suite's server and browser: session fixtures (the modules share them),
but closed as soon as the last browser test is done, so they do not tick and paint
through the rest of the test run."""


_BROWSERS: list[Any] = []
"""The shared browser, once started (the hook below has no fixtures)."""


@pytest.hookimpl(trylast=True)  # after the item's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    if nextitem is None or HERE not in Path(nextitem.path).parents:
        while _ON_LEAVING:
            _ON_LEAVING.pop()()
    elif nextitem.path != item.path:
        # A module's tests share the page (one test leaves it where the next goes on),
        # but the next module starts clean: a module's own server (the production
        # server) has just stopped under the page, whose reconnecting feed would log
        # refusals into the next module's ``console_errors``.
        for browser in _BROWSERS:
            browser.get("about:blank")
            browser.get_log("browser")


def once(close: Callable[[], None]) -> Callable[[], None]:
    done = False

    def run() -> None:
        nonlocal done
        if not done:
            done = True
            close()

    return run


@pytest.fixture(scope="session")
def browser_missing() -> str | None:
    return missing_browser()


@pytest.fixture(scope="session")
def server(browser_missing: str | None) -> Iterator[LiveServer]:
    if browser_missing:
        if os.environ.get("CI") == "true":
            # CI installs them (.ci/run): a skip there would hide a broken install.
            pytest.fail(f"{browser_missing}: CI must run the browser suite")
        pytest.skip(browser_missing)
    tmp = Path(tempfile.mkdtemp(prefix="crashd-browser-"))
    live = LiveServer(browser_config(tmp))

    @once
    def close() -> None:
        live.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    _ON_LEAVING.append(close)
    live.start()
    try:
        yield live
    finally:
        close()


@pytest.fixture(autouse=True)
def server_still_up(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test: the server thread is still serving (a failure that follows a
    dead server says so, instead of timing out on the page)."""
    yield
    if "server" in request.fixturenames:
        live: LiveServer = request.getfixturevalue("server")
        assert live._thread is not None and live._thread.is_alive(), live._error


@pytest.fixture(scope="session")
def driver(server: LiveServer) -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="crashd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    browser.set_script_timeout(60)

    @once
    def close() -> None:
        _BROWSERS.remove(browser)
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)

    _ON_LEAVING.append(close)
    _BROWSERS.append(browser)
    try:
        yield browser
    finally:
        close()


@pytest.fixture(scope="session")
def shots() -> Callable[[Any, str], Path]:
    SCREENSHOTS.mkdir(exist_ok=True)
    for old in SCREENSHOTS.glob("*.png"):
        old.unlink()  # this run's steps only
    counter = iter(range(1, 1000))

    def shoot(driver: Any, name: str) -> Path:
        path = SCREENSHOTS / f"{next(counter):02d}-{name}.png"
        driver.save_screenshot(str(path))
        return path

    return shoot


@pytest.fixture(scope="session")
def rest(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    """Wait (polling the browser: it has no events to await from here) until
    ``predicate()`` is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(0.05)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


def running_ms(game: int) -> int:
    return ms_at(crash_of(game))


__all__ = [
    "AXE",
    "EXPECTED",
    "LiveServer",
    "browser_chain",
    "console_errors",
    "crash_of",
    "game_hash",
    "rest_state",
    "running_ms",
    "wait_for",
]

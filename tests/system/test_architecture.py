"""The import directions that keep the architecture what the tree says it is.

Read from the source with ``ast`` (no module is imported), so a violation is found
even in a module no other test loads:

- the engine never imports ``crashd.api`` (the game knows nothing of HTTP, WebSockets
  or the CLI: it announces events and takes commands);
- the pure core (fairness, curve, the round, the ledger's planner) does no I/O and reads
  no clock: it imports nothing that could (time and input arrive as arguments);
- the SDK (``crashd.api.client``) is a leaf: besides itself it imports only the wire
  declarations and the signing scheme it shares with the server;
- REST routes, the feed and security never import the CLI;
- pyproject.toml's explicit package list names every folder that holds an __init__.py.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

from support.servers import REPO

FOLDERS = {"crashd.engine": REPO / "engine", "crashd.api": REPO / "api"}

PURE_CORE = (
    "crashd.engine.fairness",
    "crashd.engine.curve",
    "crashd.engine.bounds",
    "crashd.engine.reasons",
    "crashd.engine.settlement",
    "crashd.engine.round",
    "crashd.engine.ledger.ops",
    "crashd.engine.ledger.txn",
    "crashd.engine.ledger.model",
    "crashd.engine.ledger.wallet",
    "crashd.engine.ledger.walletops",
    "crashd.engine.wallet.contract",
    "crashd.engine.wallet.signing",
    "crashd.engine.wallet.retry",
    "crashd.engine.wallet.breaker",
)
"""Modules (and packages: everything below them) that must stay sans-IO."""

IMPURE = frozenset(
    {
        "trio",
        "sqlite3",
        "socket",
        "time",
        "datetime",
        "random",
        "os",
        "threading",
        "asyncio",
        "subprocess",
        "pathlib",
        "secrets",
        "selectors",
        "urllib",
        "http",
    }
)
"""Top-level modules a pure module must not import (clock, randomness, I/O)."""

SDK_MAY_IMPORT = ("crashd.api.client", "crashd.api.wire", "crashd.api.security.signing")


def modules() -> Iterator[tuple[str, Path]]:
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            yield ".".join([package, *parts]), path


def imports_of(module: str, path: Path) -> Iterator[str]:
    """Every module ``path`` imports, absolute (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                if node.level > 1:
                    base = base[: -(node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target
            for alias in node.names:  # `from crashd.api import wire` imports a module
                yield f"{target}.{alias.name}"


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_engine_never_imports_the_api() -> None:
    bad = [
        (m, i)
        for m, p in modules()
        if within(m, "crashd.engine")
        for i in imports_of(m, p)
        if within(i, "crashd.api")
    ]
    assert not bad, bad


def test_the_pure_core_does_no_io_and_reads_no_clock() -> None:
    checked = 0
    bad = []
    for module, path in modules():
        if not any(within(module, core) for core in PURE_CORE):
            continue
        checked += 1
        for name in imports_of(module, path):
            if name.split(".")[0] in IMPURE:
                bad.append((module, name))
    assert checked >= 8
    assert not bad, bad


def test_the_sdk_is_a_leaf() -> None:
    bad = [
        (m, i)
        for m, p in modules()
        if within(m, "crashd.api.client")
        for i in imports_of(m, p)
        if within(i, "crashd") and not any(within(i, ok) for ok in SDK_MAY_IMPORT)
    ]
    assert not bad, bad


def test_routes_feed_and_security_never_import_the_cli() -> None:
    areas = (
        "crashd.api.rest",
        "crashd.api.feed",
        "crashd.api.security",
        "crashd.api.server",
        "crashd.api.services",
        "crashd.engine",
    )
    bad = [
        (m, i)
        for m, p in modules()
        if any(within(m, a) for a in areas)
        for i in imports_of(m, p)
        if within(i, "crashd.api.cli")
    ]
    assert not bad, bad


def test_the_package_list_names_every_package() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {"crashd.engine": "engine", "crashd.api": "api"}
    found = {m for m, p in modules() if p.name == "__init__.py"}
    assert set(config["packages"]) == found

"""``python -m bench``: the list; ``python -m bench NAME [args…]``: one benchmark's
``main(argv)``; ``python -m bench all|report|compare``: the suite (see ``bench.suite``
for the registry and what a bench module exposes)."""

from __future__ import annotations

import importlib
import sys

from bench.suite import BENCHES, COMMANDS

MODULES = {"all": "bench.runner", "report": "bench.report", "compare": "bench.compare"}


def listing() -> str:
    width = max(len(n) for n in [*COMMANDS, *(b.name for b in BENCHES)])
    lines = ["usage: python -m bench NAME [args…]   (python -m bench NAME --help)", ""]
    lines += ["benchmarks:"] + [f"  {b.name:<{width}}  {b.summary}" for b in BENCHES]
    lines += ["", "suite:"] + [f"  {n:<{width}}  {what}" for n, what in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv or argv[0] in {"-h", "--help", "list"}:
        print(listing())
        return 0
    name, rest = argv[0], argv[1:]
    if name == "_worker":
        from bench.runner import worker

        return worker(rest)
    names = [b.name for b in BENCHES]
    if name not in names and name not in MODULES:
        print(
            f"python -m bench: unknown benchmark {name!r}; choose from: "
            + ", ".join([*names, *MODULES]),
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(MODULES.get(name, f"bench.{name}"))
    code: int = module.main(rest)
    return code


sys.exit(main(sys.argv[1:]))

"""``python -m bench NAME [args…]``: run one benchmark module's ``main(argv)``.

Each benchmark lives in ``bench/NAME.py`` and exposes ``main(argv: list[str]) -> int``.
Figures are printed as tables, always next to the peer or limit they are compared with.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def available() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(bench.__path__)
        if not m.name.startswith("_") and m.name not in {"common"}
    )


def main(argv: list[str]) -> int:
    names = available()
    if not argv or argv[0] in {"-h", "--help"}:
        print("usage: python -m bench NAME [args…]\nbenchmarks: " + ", ".join(names))
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in names:
        print(
            f"python -m bench: unknown benchmark {name!r}; choose from: {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(f"bench.{name}")
    code: int = module.main(rest)
    return code


sys.exit(main(sys.argv[1:]))

"""``crashd cluster --edges N --api M``: the scale-out topology on this machine, for
demos and tests (an engine, N feed edges on one port, M API processes on one port, and a
private Redis unless ``--redis-url`` is given). docs/scale-out.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from crashd.api.config import SETTINGS

from .usage import UsageError


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "cluster",
        help="run an engine, feed edges and API processes on this machine",
        description="Start an engine, N feed edges (one shared --feed-port) and M API "
        "processes (one shared --api-port) as separate processes, with a private Redis "
        "unless --redis-url is given; Ctrl-C stops them all. Other settings come from "
        "CRASHD_* variables or --config, which every part reads.",
    )
    parser.add_argument("--edges", type=int, default=2, metavar="N", help="feed edges (default 2)")
    parser.add_argument("--api", type=int, default=1, metavar="M", help="API processes (default 1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--api-port", type=int, default=8000, help="the API processes' port")
    parser.add_argument("--feed-port", type=int, default=8001, help="the edges' feed port")
    parser.add_argument("--engine-port", type=int, default=8100, help="the engine's own REST port")
    parser.add_argument("--redis-url", help="a Redis to use (default: start one here)")
    parser.add_argument(
        "--database", type=Path, help="the engine's database (default ./crashd.sqlite3)"
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML config for every part")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from crashd.api.cluster.topology import ClusterError, ClusterPlan, run_until_signalled

    if args.edges < 0 or args.api < 0 or args.edges + args.api == 0:
        raise UsageError("--edges and --api must be >= 0, and not both 0")
    env: dict[str, str] = {}
    if args.database is not None:
        env["CRASHD_DATABASE"] = str(args.database.resolve())
    if args.config is not None:
        env["CRASHD_CONFIG"] = str(args.config.resolve())
    known = {s.env for s in SETTINGS}
    assert set(env) - {"CRASHD_CONFIG"} <= known
    plan = ClusterPlan(
        edges=args.edges,
        apis=args.api,
        host=args.host,
        api_port=args.api_port,
        engine_port=args.engine_port,
        feed_port=args.feed_port,
        redis_url=args.redis_url,
        environment=env,
    )
    try:
        return run_until_signalled(plan)
    except ClusterError as exc:
        raise UsageError(str(exc)) from None

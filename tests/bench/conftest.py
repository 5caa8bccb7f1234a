"""tests/bench: the benchmark suite's pieces (registry, row and results schema, report,
compare, checks), never its speed, and never a whole ``python -m bench all`` run.

``bench`` is a top-level folder of the checkout, not an installed package: put the
checkout on ``sys.path`` so ``import bench`` works under ``pytest`` from anywhere.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from bench.suite import SCHEMA, Row  # noqa: E402  (after the path is set)


def rows() -> list[Row]:
    return [
        Row(
            "ledger",
            "Ledger: limits",
            "raw/FULL",
            "raw sqlite3",
            {"rows_per_s": 900_000.0},
            role="limit",
            headline=True,
        ),
        Row(
            "ledger",
            "Ledger: group commit",
            "FULL/group/100",
            "FULL, group commit, 100 callers",
            {"transfers_per_s": 25_000.0, "ack_p99_ms": 11.25, "mean_group_n": 98.6},
            {"× raw sqlite3": 25_000 / 900_000},
            params={"sync": "FULL", "callers": 100},
            checks={"audit: money conserved": True},
            headline=True,
            primary=["transfers_per_s", "× raw sqlite3"],
        ),
        Row(
            "ledger",
            "Ledger: group commit",
            "FULL/per-op/100",
            "FULL, one transaction per op, 100 callers",
            {"transfers_per_s": 2_400.0, "ack_p99_ms": float("nan"), "mean_group_n": 1.0},
            {"× raw sqlite3": 2_400 / 900_000},
            note="slow | on purpose",
        ),
        Row(
            "tick",
            "Tick lateness",
            "20hz/load/tuned",
            "20 Hz, 500 cmd/s, tuned GC",
            {"late_p99_ms": 0.295, "cashout_p99_us": 197.0},
            samples={"lateness_ms": [0.01, 0.02, 0.3]},
            headline=True,
        ),
    ]


def document(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "kind": "crashd-bench-results",
        "started_at": "2026-11-24T10:00:00Z",
        "finished_at": "2026-11-24T10:15:00Z",
        "wall_s": 900.0,
        "mode": "full",
        "budget_min": 15.0,
        "command": {
            "line": "python -m bench all",
            "argv": ["python", "-m", "bench", "all"],
            "python": "/usr/bin/python3",
            "cwd": "/work",
        },
        "machine": {
            "cpu_model": "Test CPU 3000",
            "cores": 2,
            "cpus_usable": 2,
            "memory_bytes": 24 * 2**30,
            "kernel": "Linux 6.1",
            "os": "Debian GNU/Linux 12 (bookworm)",
            "python": "3.11.7",
            "implementation": "CPython",
            "loadavg_start": [0.1, 0.1, 0.1],
            "loadavg_end": [1.0, 0.5, 0.2],
            "packages": {"trio": "0.35.0", "matplotlib": None},
            "tools": {"node": "v20.0.0", "pgbench": None},
        },
        "git": {
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "short": "0123456",
            "branch": "main",
            "dirty": False,
            "changed_files": 0,
        },
        "benches": [
            {
                "name": "ledger",
                "status": "ok",
                "planned_s": 210.0,
                "seconds": 200.0,
                "exit_code": 0,
                "rows": 3,
                "failed_checks": [],
                "notes": ["equivalent: python -m bench ledger --seconds 2"],
                "log": "ledger.log",
            },
            {
                "name": "tick",
                "status": "ok",
                "planned_s": 240.0,
                "seconds": 230.0,
                "exit_code": 0,
                "rows": 1,
                "failed_checks": [],
                "notes": [],
                "log": "tick.log",
            },
        ],
        "skips": [
            {"bench": "ledger", "what": "the raw PostgreSQL peer", "why": "pgbench not found"}
        ],
        "plots": [{"bench": "tick", "file": "tick-latency.png", "title": "Tick distributions"}],
        "rows": [r.to_json() for r in rows()],
    }
    doc.update(changes)
    return doc


@pytest.fixture
def synthetic_rows() -> list[Row]:
    return rows()


@pytest.fixture
def synthetic_doc() -> dict[str, Any]:
    """A small results document as ``python -m bench all`` writes one."""
    return document()

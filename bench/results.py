"""The results document ``python -m bench all`` writes, and what reads it back.

One JSON object (``SCHEMA`` in ``bench.suite``)::

    {"schema": 1, "kind": "crashd-bench-results",
     "started_at": ISO-8601 UTC, "finished_at": ..., "wall_s": seconds,
     "mode": "quick" | "full", "budget_min": minutes,
     "command": {"line": "python -m bench all ...", "argv": [...], "python": path, "cwd": ...},
     "machine": {"cpu_model", "cores", "cpus_usable", "memory_bytes", "kernel", "os",
                 "python", "implementation", "loadavg_start", "loadavg_end",
                 "packages": {name: version | null}, "tools": {name: version | null}},
     "git": {"commit", "short", "branch", "dirty", "changed_files"},
     "benches": [{"name", "status": "ok" | "failed" | "error" | "timeout",
                  "planned_s", "seconds", "exit_code", "rows", "failed_checks": [...],
                  "notes": [...], "log": file name}],
     "skips": [{"bench", "what", "why"}],
     "plots": [{"bench", "file", "title"}],
     "rows": [Row.to_json(), ...]}

``load`` reads one and checks it (``validate``); ``rows_of`` gives its rows back as
``Row`` objects.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.suite import JSON, SCHEMA, Row, validate_row

ROOT = Path(__file__).resolve().parent.parent
KIND = "crashd-bench-results"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
"""Where ``all`` writes by default (ignored by git: bench/.gitignore)."""
PUBLISHED = Path(__file__).resolve().parent / "published"
"""The committed run the README's section and docs/benchmarks.md are generated from."""

PACKAGES = (
    "crashd",
    "trio",
    "quart",
    "quart-trio",
    "hypercorn",
    "wsproto",
    "h11",
    "httpx",
    "websockets",
    "cryptography",
    "matplotlib",
    "psycopg",
)


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def command(argv: list[str]) -> JSON:
    return {
        "line": "python -m bench " + shlex.join(argv),
        "argv": ["python", "-m", "bench", *argv],
        "python": sys.executable,
        "cwd": os.getcwd(),
    }


def _first_line(cmd: list[str]) -> str | None:
    if shutil.which(cmd[0]) is None:
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    return text.splitlines()[0] if text else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _os_name() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return platform.platform()
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', text, re.M)
    return match[1] if match else platform.platform()


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def machine() -> JSON:
    """What produced the figures: hardware, kernel, Python, the packages and tools that
    take part (peers included), and how loaded the machine was."""
    import sqlite3
    import ssl

    packages: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    tools = {
        "sqlite": sqlite3.sqlite_version,
        "openssl": ssl.OPENSSL_VERSION,
        "node": _first_line(["node", "--version"]),
        "cc": _first_line(["cc", "--version"]),
        "pgbench": _first_line(["pgbench", "--version"]),
        "wrk": _first_line(["wrk", "--version"]),
    }
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_bytes": _memory_bytes(),
        "kernel": f"{platform.system()} {platform.release()}",
        "os": _os_name(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "loadavg_start": loadavg(),
        "packages": packages,
        "tools": tools,
    }


def git() -> JSON:
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain")
    return {
        "commit": commit,
        "short": commit[:7] if commit else None,
        "branch": run("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(status) if status is not None else None,
        "changed_files": len(status.splitlines()) if status else 0,
    }


def new_document(argv: list[str], *, quick: bool, budget_min: float) -> JSON:
    return {
        "schema": SCHEMA,
        "kind": KIND,
        "started_at": now(),
        "finished_at": None,
        "wall_s": None,
        "mode": "quick" if quick else "full",
        "budget_min": budget_min,
        "command": command(argv),
        "machine": machine(),
        "git": git(),
        "benches": [],
        "skips": [],
        "plots": [],
        "rows": [],
    }


def validate(doc: Any) -> list[str]:
    """What is wrong with a results document (empty when it can be reported)."""
    if not isinstance(doc, dict):
        return ["the document is not a JSON object"]
    problems = []
    if doc.get("kind") != KIND:
        problems.append(f"kind is {doc.get('kind')!r}, not {KIND!r}")
    if doc.get("schema") != SCHEMA:
        problems.append(f"schema {doc.get('schema')!r}: this code reads schema {SCHEMA}")
    for name in ("command", "machine", "git"):
        if not isinstance(doc.get(name), dict):
            problems.append(f"{name} missing")
    for name in ("benches", "skips", "rows"):
        if not isinstance(doc.get(name), list):
            problems.append(f"{name} missing or not a list")
    keys: set[tuple[str, str]] = set()
    for row in doc.get("rows", []) if isinstance(doc.get("rows"), list) else []:
        problems += validate_row(row)
        if isinstance(row, dict):
            key = (str(row.get("bench")), str(row.get("key")))
            if key in keys:
                problems.append(f"row key {key} appears twice")
            keys.add(key)
    return problems


class ResultsError(ValueError):
    pass


def load(path: Path) -> JSON:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{path}: {exc}") from exc
    problems = validate(doc)
    if problems:
        raise ResultsError(f"{path}: not a results document: " + "; ".join(problems[:5]))
    result: JSON = doc
    return result


def rows_of(doc: JSON, bench: str | None = None) -> list[Row]:
    return [Row.from_json(r) for r in doc["rows"] if bench is None or r["bench"] == bench]


def dump(doc: JSON, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False, allow_nan=False) + "\n")
    tmp.replace(path)

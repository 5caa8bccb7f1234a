"""crashd's double-entry ledger: SQLite, two-phase holds, idempotent ops, group commit.

``open_ledger`` is the entry point; ``docs/ledger.md`` describes the schema, every
operation and what recovery does. The pure planner (``ops``) takes time as an
argument and does no I/O; ``store`` executes it on SQLite; ``writer`` drives the store
from Trio with group commit.
"""

from engine.ledger.model import *  # noqa: F401,F403  (the public vocabulary)
from engine.ledger.model import (
    AccountKey,
    AccountKind,
    Balance,
    LedgerCorrupt,
    LedgerError,
    Result,
)
from engine.ledger.writer import Ledger, LedgerStatistics, open_ledger, wall_clock_ms

__all__ = [
    "AccountKey",
    "AccountKind",
    "Balance",
    "Ledger",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerStatistics",
    "Result",
    "open_ledger",
    "wall_clock_ms",
]

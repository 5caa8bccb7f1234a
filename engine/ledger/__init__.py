"""crashd's double-entry ledger: SQLite, two-phase holds, idempotent ops, group commit.

``open_ledger`` is the entry point; ``docs/ledger.md`` describes the schema, every
operation and what recovery does. The pure planner (``ops``) takes time as an
argument and does no I/O; ``store`` executes it on SQLite; ``writer`` drives the store
from Trio with group commit. Result, error and view classes live in ``model``.
"""

from .model import (
    AccountKey,
    AccountKind,
    AuditReport,
    Balance,
    BetView,
    LedgerClosed,
    LedgerCorrupt,
    LedgerError,
    LedgerInUse,
    PlayerBalance,
    Recovered,
    Result,
    RoundView,
)
from .writer import Ledger, LedgerStatistics, open_ledger, wall_clock_ms

__all__ = [
    "AccountKey",
    "AccountKind",
    "AuditReport",
    "Balance",
    "BetView",
    "Ledger",
    "LedgerClosed",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerInUse",
    "LedgerStatistics",
    "PlayerBalance",
    "Recovered",
    "Result",
    "RoundView",
    "open_ledger",
    "wall_clock_ms",
]

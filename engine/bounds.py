"""Bounds on every amount, multiplier and id the ledger accepts (one home each)."""

from __future__ import annotations

MAX_AMOUNT = 10**10
"""Bound on any stake, deposit or withdrawal (10^10 minor units: 100 million in cents)."""
MAX_MULTIPLIER = 100_000_000
"""Bound on a win or auto-cashout multiplier: 1,000,000.00x. With MAX_AMOUNT it keeps a
payout below 10^16, far inside SQLite's 64-bit integers (the engine's max-profit cap
is the product limit; this is the overflow guard)."""
MAX_CRASH_POINT = 2**53
"""Crash points are recorded as drawn; any double-derived value fits."""
MIN_AUTO_CASHOUT = 101
MAX_TTL_MS = 24 * 3600 * 1000
MAX_SWEEP = 10_000
"""Bound on holds released by one sweep or one op's housekeeping."""
MAX_ID_LEN = 200

"""Every bound on an amount, a multiplier or an id, declared once.

The engine, the ledger and the API (its request schemas and config limits) read them
from here, so the largest stake the API accepts is the largest the ledger stores.
Pure data.
"""

from __future__ import annotations

MIN_MULTIPLIER = 100
"""1.00x: the curve's value at (and before) elapsed time zero; the lowest crash point."""
MAX_MULTIPLIER = 10**8
"""1,000,000.00x: the largest multiplier the engine schedules or prices, and the bound on
a win or auto-cashout multiplier. With MAX_AMOUNT it keeps a payout below 10^16, far
inside SQLite's 64-bit integers (the engine's max-profit cap is the product limit; this
is the overflow guard)."""
MIN_AUTO_CASHOUT = 101
"""1.01x: the lowest auto-cashout target (1.00x would only return the stake)."""
MAX_AMOUNT = 10**10
"""Bound on any stake, deposit or withdrawal (10^10 minor units: 100 million in cents)."""
MAX_CRASH_POINT = 2**53
"""Crash points are recorded as drawn; any double-derived value fits."""
MAX_TTL_MS = 24 * 3600 * 1000
"""The longest a hold may wait for its confirmation."""
MAX_SWEEP = 10_000
"""Bound on holds released by one sweep or one op's housekeeping."""
MAX_ID_LEN = 200
"""Longest idempotency, hold, ticket, partner or user id the ledger stores."""
TOP_PARTICIPANTS = 10
"""The largest bets a live-state snapshot lists (the full list is paged)."""
KEYFRAME_EVERY_S = 1.0
"""The longest the engine's feed relay goes without a public keyframe (``STATE``): its
edges' and API processes' sign of life, even in a paused game."""
STALE_AFTER_S = 3 * KEYFRAME_EVERY_S
"""A process serving the engine's state from its keyframes (an edge, an API process)
whose newest one is older than this no longer passes it off as live: ``/readyz`` 503,
``GET /game/state`` ``engine_unavailable``, an edge refuses new feed connections. Three
keyframe periods: two may be late (a pause, a Redis blip, one blocking ``XREAD``)."""

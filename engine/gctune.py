"""Garbage-collector tuning for a latency-sensitive process, applied once after start-up.

CPython's cyclic collector stops the world. Young collections are cheap; a full
(generation 2) collection walks every tracked object, so with a large heap of start-up
objects (modules, config, caches: hundreds of thousands of containers in a server) it
can take tens of milliseconds and land on a tick. Two measures, as Instagram did:

* ``gc.freeze()`` after start-up moves everything alive into a permanent generation the
  collector never scans again, so a full collection only walks what was made since;
* a higher gen-2 threshold makes full collections rarer; what the engine allocates per
  tick and per command is short-lived and dies young, so little reaches generation 2.

The server calls ``tune_gc()`` once, after loading everything and before serving.
``bench/tick.py`` shows the effect on tick lateness.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GcSettings:
    thresholds: tuple[int, int, int]
    frozen: int
    """Objects moved to the permanent generation by this call (0 when restoring)."""


DEFAULT_THRESHOLDS = (700, 10, 1_000)
"""Young generations as CPython's default (their collections stay well under a
millisecond: a bigger gen 0 makes every young collection, and the gen-1 ones that
sweep up its survivors, proportionally longer), gen 2 x100."""


def tune_gc(thresholds: tuple[int, int, int] = DEFAULT_THRESHOLDS) -> GcSettings:
    """Collect once, freeze the survivors, raise the thresholds; returns the previous
    settings for ``restore_gc`` (tests and the bench switch back and forth)."""
    previous = GcSettings(thresholds=gc.get_threshold(), frozen=0)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    return GcSettings(thresholds=previous.thresholds, frozen=gc.get_freeze_count())


def restore_gc(previous: GcSettings) -> None:
    """Undo ``tune_gc``: unfreeze and put the old thresholds back."""
    gc.unfreeze()
    gc.set_threshold(*previous.thresholds)

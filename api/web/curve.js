// The curve, and the rule that keeps the drawn multiplier honest.
//
// The server's curve (README "The curve"): multiplier_hundredths(elapsed_ms) =
// floor(100 * e^(0.00006 * elapsed_ms)), evaluated in IEEE doubles exactly as the engine
// does (Math.exp is the same function as Python's math.exp to the last bit for these
// arguments on every platform we know of; the page never shows a value it did not also
// clamp to a tick, so a last-bit difference could never show more than the server).
//
// The honest rule (docs/page.md, "The curve"):
//   shown_elapsed(now) = min(now - anchor - delay, last_tick.elapsed_ms)
//   shown(now)         = min(curve(shown_elapsed), last_tick.multiplier)
// where `anchor` is re-set on every tick to min(anchor, receive_time - elapsed_ms) (the
// round's start as early as the ticks prove it, in the browser's own clock, so no clock
// sync is needed) and `delay` is one tick period plus a margin. Between ticks the curve
// runs on smoothly from the formula; it can reach the latest tick's value but never pass
// it, so a number on screen is always one the server has already announced: it never
// shows 2.31x for a round that crashed at 2.30x. When ticks stop (lag, or a crash whose
// message is still on its way) the curve stops at the last tick: visibly frozen.

export const GROWTH_PER_MS = 0.00006;
export const MIN_MULTIPLIER = 100;

export function multiplierAt(elapsedMs) {
  if (elapsedMs <= 0) return MIN_MULTIPLIER;
  return Math.floor(100 * Math.exp(GROWTH_PER_MS * elapsedMs));
}

// The smallest integer ms at which multiplierAt reaches `m` (the engine's ms_at).
export function msAt(m) {
  if (m <= MIN_MULTIPLIER) return 0;
  let ms = Math.max(0, Math.ceil(Math.log(m / 100) / GROWTH_PER_MS));
  while (ms > 0 && multiplierAt(ms - 1) >= m) ms -= 1;
  while (multiplierAt(ms) < m) ms += 1;
  return ms;
}

// 374 -> "3.74"
export function formatMultiplier(hundredths) {
  const h = Math.max(0, Math.trunc(hundredths));
  return `${Math.floor(h / 100)}.${String(h % 100).padStart(2, "0")}`;
}

export class CurveClock {
  // delayMs: how far behind the ticks the smooth curve runs (one tick period and a
  // margin); lagMs: no tick for this long while running means "lag".
  constructor({ delayMs = 60, lagMs = 300 } = {}) {
    this.delayMs = delayMs;
    this.lagMs = lagMs;
    this.reset(null);
  }

  reset(roundId) {
    this.roundId = roundId;
    this.running = false;
    this.anchor = null;
    this.lastElapsed = 0;
    this.lastMultiplier = MIN_MULTIPLIER;
    this.lastTickAt = null;
    this.final = null; // {elapsed, multiplier} once crashed
  }

  // The round started running (a `running` message, or a snapshot of a running round):
  // the server is at `elapsedMs` (0 for `running`) at our time `now`.
  start(roundId, now, elapsedMs = 0, multiplier = null) {
    if (this.roundId !== roundId) this.reset(roundId);
    this.running = true;
    this.observe(now, elapsedMs, multiplier ?? multiplierAt(elapsedMs));
  }

  // A tick: the server had reached `multiplier` at `elapsedMs` when it sent it.
  tick(roundId, now, elapsedMs, multiplier) {
    if (this.roundId !== roundId) this.reset(roundId);
    if (this.final !== null) return;
    this.running = true;
    this.observe(now, elapsedMs, multiplier);
  }

  observe(now, elapsedMs, multiplier) {
    const anchor = now - elapsedMs;
    this.anchor = this.anchor === null ? anchor : Math.min(this.anchor, anchor);
    if (elapsedMs >= this.lastElapsed) {
      this.lastElapsed = elapsedMs;
      this.lastMultiplier = Math.max(this.lastMultiplier, multiplier);
    }
    this.lastTickAt = now;
  }

  // The round crashed at `crashPoint` (after `elapsedMs` of running): the server reached
  // it, so the curve is drawn up to it, and stops there.
  crash(roundId, elapsedMs, crashPoint) {
    if (this.roundId !== roundId) this.reset(roundId);
    this.running = false;
    this.final = { elapsed: elapsedMs ?? msAt(crashPoint), multiplier: crashPoint };
  }

  // What to draw at our time `now`: {elapsed, multiplier, lagging}.
  view(now) {
    if (this.final !== null) {
      return { elapsed: this.final.elapsed, multiplier: this.final.multiplier, lagging: false };
    }
    if (!this.running || this.anchor === null) {
      return { elapsed: 0, multiplier: MIN_MULTIPLIER, lagging: false };
    }
    const predicted = now - this.anchor - this.delayMs;
    const elapsed = Math.max(0, Math.min(predicted, this.lastElapsed));
    const multiplier = Math.min(multiplierAt(elapsed), this.lastMultiplier);
    const lagging = now - this.lastTickAt > this.lagMs;
    return { elapsed, multiplier, lagging };
  }
}

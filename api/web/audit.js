// The settlement audit in the browser: what `crashd audit` checks of one round's signed
// transcript (docs/fairness.md "The audit"), computed here, independently of the server.
//
//   signature    Ed25519 (WebCrypto) over the canonical bytes (RFC 8785) without "sig",
//                by a key of the published set (/.well-known/crashd-keys)
//   format       a version 1 crashd.transcript, in the canonical domain
//   crash_point  recomputed from the game hash and the salt (fairness.js)
//   chain        "prev" is the SHA-256 of the round before's transcript
//   game_chain   the game hash hashes to the round before's (or, at a chain rotation,
//                to its own chain's terminating hash)
//   seal         the seal's signature, and its RFC 6962 Merkle root, count and stake
//                over the bets the re-run had in play at the start
//   rerun        the round played again by the rules: every command of the log at its
//                recorded instant through a port of the pure round engine
//                (engine/round/machine.py), which must accept each one and come out with
//                the same log, outcomes (kind, instant, elapsed ms, multiplier, payout),
//                force point and crash; a round voided by start-up recovery is checked
//                by rule instead (engine/settlement/audit.py _by_rule)
//   totals       the totals and force point add up from the settlement
//
// It mirrors engine/settlement/{audit,replay,recorder}.py step by step, and a test runs
// it (under node) over Hypothesis-generated rounds and their mutations against the
// Python auditor (tests/engine/test_audit_js.py). Money products use BigInt: a stake
// times a multiplier can pass 2^53 even when the payout does not. Receipts and the walk
// to the terminating hash are not here: the page walks the chain itself (verify.js).

import { crashPoint, nextLink, parseHash, toHex } from "./fairness.js";
import { formatMultiplier, msAt, multiplierAt } from "./curve.js";

const subtle = globalThis.crypto && globalThis.crypto.subtle;
const encoder = new TextEncoder();

export const VERSION = 1;
export const TRANSCRIPT = "crashd.transcript";
export const SEAL = "crashd.seal";
const MIN_MULTIPLIER = 100;
export const MAX_MULTIPLIER = 10 ** 8;
export const MIN_AUTO_CASHOUT = 101;

// The rules this engine plays by (engine/settlement/transcript.py; the test compares).
export const FIXED_RULES = {
  curve: "floor(100 * e^(0.00006 * elapsed_ms))",
  growth_per_ms: "0.00006",
  max_multiplier: MAX_MULTIPLIER,
  min_auto_cashout: MIN_AUTO_CASHOUT,
  payout: "floor(stake * multiplier / 100)",
  tie: "at one multiplier: auto cash-outs, then the force point, then the crash",
};
export const CONFIG_FIELDS = [
  "min_stake",
  "max_stake",
  "max_profit",
  "max_bets_per_user",
  "max_bets_per_round",
  "betting_ms",
  "pause_ms",
  "max_lateness_ms",
];

// Which command each phase takes (null: legal), engine/round/tables.py COMMANDS.
export const COMMANDS = {
  betting: { place_bet: null, set_auto_cashout: null, cancel_auto_cashout: null, cash_out: "round_not_running", void: null },
  running: { place_bet: "round_closed", set_auto_cashout: "round_closed", cancel_auto_cashout: "round_closed", cash_out: null, void: null },
  crashed: { place_bet: "round_closed", set_auto_cashout: "round_settled", cancel_auto_cashout: "round_settled", cash_out: null, void: "round_settled" },
  ended: { place_bet: "round_closed", set_auto_cashout: "round_settled", cancel_auto_cashout: "round_settled", cash_out: null, void: "round_settled" },
  voided: { place_bet: "round_voided", set_auto_cashout: "round_voided", cancel_auto_cashout: "round_voided", cash_out: null, void: "round_voided" },
};

// What the page lists, in order, with what a pass means.
export const CHECKS = [
  ["signature", "Signed by the server's published Ed25519 key"],
  ["format", "A well-formed version 1 transcript"],
  ["crash_point", "Crash point recomputed from the game hash and the salt"],
  ["chain", "Chained to the round before's transcript (prev = its SHA-256)"],
  ["game_chain", "Game hash links to the round before's game hash"],
  ["seal", "Start seal: signed, its Merkle root over the bets in play at the start"],
  ["rerun", "Re-run by the rules: every outcome, payout, force point and the crash identical"],
  ["totals", "Totals and force point add up from the settlement"],
];

class ReplayError extends Error {}
class EngineAssertion extends Error {}

function assert(cond, what) {
  if (!cond) throw new EngineAssertion(what);
}

// -- canonical JSON (RFC 8785 on our domain: engine/settlement/canonical.py) -------------

export function canonicalText(value) {
  if (value === null) return "null";
  if (typeof value === "boolean") return value ? "true" : "false";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalText).join(",")}]`;
  // Object.keys().sort() orders by UTF-16 code units, as RFC 8785 requires.
  const keys = Object.keys(value).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalText(value[k])}`).join(",")}}`;
}

export function canonical(value) {
  return encoder.encode(canonicalText(value));
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function checkDomain(value, path = "$") {
  const stack = [[value, path]];
  while (stack.length) {
    const [item, where] = stack.pop();
    if (item === null || typeof item === "boolean") continue;
    if (typeof item === "string") {
      if (LONE_SURROGATE.test(item)) return `${where}: a lone surrogate`;
      continue;
    }
    if (typeof item === "number") {
      if (!Number.isSafeInteger(item)) return `${where}: not an integer below 2^53`;
      continue;
    }
    if (Array.isArray(item)) {
      item.forEach((v, i) => stack.push([v, `${where}[${i}]`]));
      continue;
    }
    if (typeof item === "object") {
      for (const [k, v] of Object.entries(item)) {
        // eslint-disable-next-line no-control-regex
        if (!/^[\x00-\x7f]*$/.test(k)) return `${where}: a key that is not ASCII text`;
        stack.push([v, `${where}.${k}`]);
      }
      continue;
    }
    return `${where}: a ${typeof item}`;
  }
  return null;
}

async function sha256(bytes) {
  return new Uint8Array(await subtle.digest("SHA-256", bytes));
}

function unsigned(doc) {
  const out = {};
  for (const [k, v] of Object.entries(doc)) if (k !== "sig") out[k] = v;
  return out;
}

export async function docHash(doc) {
  return toHex(await sha256(canonical(unsigned(doc))));
}

function b64urlEncode(bytes) {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromB64url(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]*$/.test(text)) return null;
  let bin;
  try {
    bin = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (text.length % 4)) % 4));
  } catch {
    return null;
  }
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return b64urlEncode(bytes) === text ? bytes : null; // only the canonical spelling
}

// The published key set (a JWK Set) as key id -> CryptoKey.
export async function importKeys(jwks) {
  const keys = new Map();
  for (const k of (jwks && jwks.keys) || []) {
    if (k.kty !== "OKP" || k.crv !== "Ed25519" || typeof k.kid !== "string") continue;
    const key = await subtle.importKey("jwk", { kty: "OKP", crv: "Ed25519", x: k.x }, { name: "Ed25519" }, false, ["verify"]);
    keys.set(k.kid, key);
  }
  return keys;
}

// null if `doc` is a document in the canonical domain signed by one of `keys`.
export async function verifyDoc(doc, keys) {
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) return "not a JSON object";
  const problem = checkDomain(doc);
  if (problem !== null) return `not canonical JSON: ${problem}`;
  const keyId = doc.key_id;
  if (typeof keyId !== "string" || !keys.has(keyId)) return `signed by an unknown key ${JSON.stringify(keyId)}`;
  const raw = fromB64url(doc.sig);
  if (raw === null || raw.length !== 64) return "the signature is not 64 bytes of base64url";
  const ok = await subtle.verify({ name: "Ed25519" }, keys.get(keyId), raw, canonical(unsigned(doc)));
  return ok ? null : "the signature does not verify";
}

// -- Merkle (RFC 6962: engine/settlement/merkle.py) ---------------------------------------

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function leafDigest(leaf) {
  return sha256(concat(new Uint8Array([0]), canonical(leaf)));
}

export async function merkleRoot(leaves) {
  if (!leaves.length) return sha256(new Uint8Array(0));
  let level = leaves;
  const one = new Uint8Array([1]);
  while (level.length > 1) {
    const up = [];
    for (let i = 0; i + 1 < level.length; i += 2) up.push(await sha256(concat(one, level[i], level[i + 1])));
    if (level.length % 2) up.push(level[level.length - 1]);
    level = up;
  }
  return level[0];
}

function betLeaf(roundId, b) {
  return {
    round_id: roundId,
    ticket_id: b.ticket_id,
    player: b.player,
    stake: b.stake,
    auto_cashout: b.auto_cashout,
    placed_at: b.placed_at,
  };
}

// -- rules (engine/settlement/transcript.py config_of) ------------------------------------

function configOf(rules) {
  for (const [name, value] of Object.entries(FIXED_RULES)) {
    if (rules[name] !== value) throw new ReplayError(`rules.${name} is ${JSON.stringify(rules[name])}; this engine plays ${JSON.stringify(value)}`);
  }
  const c = {};
  for (const name of CONFIG_FIELDS) {
    const value = rules[name];
    if (name === "max_profit" && (value === null || value === undefined)) {
      c[name] = null;
      continue;
    }
    if (!Number.isSafeInteger(value)) throw new ReplayError(`rules.${name} must be an integer`);
    c[name] = value;
  }
  const extra = Object.keys(rules).filter((k) => !(k in FIXED_RULES) && !CONFIG_FIELDS.includes(k));
  if (extra.length) throw new ReplayError(`unknown rules: ${JSON.stringify(extra.sort())}`);
  // RoundConfig's own validation (engine/round/config.py).
  if (!(1 <= c.min_stake && c.min_stake <= c.max_stake)) throw new ReplayError("need 1 <= min_stake <= max_stake");
  if (c.max_profit !== null && c.max_profit < 0) throw new ReplayError("max_profit must not be negative");
  if (c.max_bets_per_user < 1) throw new ReplayError("max_bets_per_user must be at least 1");
  if (c.max_bets_per_round < 1) throw new ReplayError("max_bets_per_round must be at least 1");
  if (c.betting_ms < 0 || c.pause_ms < 0 || c.max_lateness_ms < 0) throw new ReplayError("durations must not be negative");
  if (c.betting_ms + c.pause_ms < 1) throw new ReplayError("betting_ms + pause_ms must be at least 1 ms");
  c.max_win = null; // not a rule of version 1 transcripts
  return c;
}

// floor(a * b / c) for non-negative integers, exact beyond 2^53.
function mulDiv(a, b, c) {
  return Number((BigInt(a) * BigInt(b)) / BigInt(c));
}

// -- the round engine (engine/round/machine.py), for the re-run --------------------------

const OPEN = "open";
const WON = "won";
const LOST = "lost";
const REFUNDED = "refunded";

class Round {
  constructor({ roundId, gameHash, crashPoint: point, config, opensAt }) {
    assert(point >= MIN_MULTIPLIER, "crash point below 1.00x");
    this.roundId = roundId;
    this.config = config;
    this.phase = "betting";
    this.opensAt = opensAt;
    this.closesAt = opensAt + config.betting_ms;
    this.startedAt = null;
    this.pauseEndsAt = null;
    this.gameHash = gameHash;
    this.crashPoint = point;
    this.stop = Math.min(point, MAX_MULTIPLIER);
    this.crashAt = null;
    this.now = opensAt;
    this.bets = new Map();
    this.userBets = new Map();
    this.autos = []; // sorted [target, order, ticket]; `head` is the next one
    this.head = 0;
    this.capped = new Set();
    this.totalStake = 0;
    this.openStake = 0;
    this.totalPayout = 0;
  }

  open(carried) {
    for (const bet of carried) this.addBet(bet);
    return [{ type: "BettingOpened", at: this.opensAt, closes_at: this.closesAt }];
  }

  addBet(bet) {
    this.bets.set(bet.ticket, bet);
    this.userBets.set(bet.user, (this.userBets.get(bet.user) || 0) + 1);
    this.totalStake += bet.stake;
    this.openStake += bet.stake;
  }

  advance(now) {
    assert(now >= this.now, `time went backwards: ${now} < ${this.now}`);
    this.now = now;
    const events = [];
    for (let pass = 0; pass < this.bets.size + 4; pass += 1) {
      if (this.phase === "betting") {
        if (now < this.closesAt) return events;
        const late = now - this.closesAt;
        this.startRunning(late <= this.config.max_lateness_ms ? this.closesAt : now, events);
      } else if (this.phase === "running") {
        const [m, rank, ticket] = this.nextPoint();
        const instant = this.startedAt + msAt(m);
        if (instant > now) return events;
        if (rank === 0) {
          this.head += 1;
          this.cashOut(this.bets.get(ticket), m, this.capped.has(ticket) ? "max_win" : "auto", instant, events);
        } else if (rank === 1) {
          for (const bet of [...this.bets.values()].filter((b) => b.state === OPEN)) this.cashOut(bet, m, "forced", instant, events);
        } else {
          this.crash(instant, events);
        }
      } else if (this.phase === "crashed") {
        if (now < this.pauseEndsAt) return events;
        this.phase = "ended";
      } else {
        return events;
      }
    }
    throw new EngineAssertion("advance() did not converge");
  }

  reject(now, command, ticket, reason) {
    return { type: "Rejected", at: now, command, ticket, reason };
  }

  placeBet(now, ticket, user, stake, target) {
    const events = this.advance(now);
    let reason = COMMANDS[this.phase].place_bet;
    if (reason === null && this.bets.has(ticket)) reason = "duplicate_ticket";
    if (reason === null) {
      if (stake < this.config.min_stake) reason = "stake_too_small";
      else if (stake > this.config.max_stake) reason = "stake_too_large";
      else reason = checkTarget(target);
    }
    if (reason === null && (this.userBets.get(user) || 0) >= this.config.max_bets_per_user) reason = "too_many_bets";
    if (reason === null && this.bets.size >= this.config.max_bets_per_round) reason = "round_full";
    if (reason !== null) {
      events.push(this.reject(now, "place_bet", ticket, reason));
      return events;
    }
    this.addBet({ ticket, user, stake, auto_cashout: target, placed_at: now, state: OPEN });
    events.push({ type: "BetAccepted", at: now, ticket, user, stake, auto_cashout: target, queued: false });
    return events;
  }

  setAutoCashout(now, ticket, target) {
    const command = target !== null ? "set_auto_cashout" : "cancel_auto_cashout";
    const events = this.advance(now);
    const bet = this.bets.get(ticket);
    let reason = bet === undefined ? "unknown_ticket" : COMMANDS[this.phase][command];
    if (reason === null) reason = checkTarget(target);
    if (reason !== null) {
      events.push(this.reject(now, command, ticket, reason));
      return events;
    }
    assert(bet.state === OPEN, "a target change of a bet that is not open");
    bet.auto_cashout = target;
    events.push({ type: "AutoCashoutChanged", at: now, ticket, target });
    return events;
  }

  cashOutCommand(now, ticket) {
    const events = this.advance(now);
    const bet = this.bets.get(ticket);
    const reason = bet === undefined ? "unknown_ticket" : COMMANDS[this.phase].cash_out;
    if (reason !== null) events.push(this.reject(now, "cash_out", ticket, reason));
    else if (bet.state === WON) events.push(this.reject(now, "cash_out", ticket, "already_cashed_out"));
    else if (bet.state === REFUNDED) events.push(this.reject(now, "cash_out", ticket, "bet_refunded"));
    else if (bet.state === LOST) events.push({ type: "TooLate", at: now, ticket });
    else {
      assert(this.phase === "running" && now < this.crashAt, "an open bet outside the run");
      const m = multiplierAt(now - this.startedAt);
      assert(m < this.stop, "a manual cash-out at the crash point");
      this.cashOut(bet, m, "manual", now, events);
    }
    return events;
  }

  void(now, reason) {
    const events = this.advance(now);
    const refusal = COMMANDS[this.phase].void;
    if (refusal !== null) {
      events.push(this.reject(now, "void", null, refusal));
      return events;
    }
    this.phase = "voided";
    for (const bet of this.bets.values()) {
      if (bet.state === OPEN) {
        bet.state = REFUNDED;
        this.openStake -= bet.stake;
        events.push({ type: "BetRefunded", at: now, ticket: bet.ticket, user: bet.user, stake: bet.stake, reason });
      }
    }
    events.push({ type: "RoundVoided", at: now, reason, crash_point: this.crashPoint, game_hash: this.gameHash });
    return events;
  }

  withdraw(now, ticket, reason) {
    const events = this.advance(now);
    const bet = this.bets.get(ticket);
    if (bet === undefined || bet.state !== OPEN || !(this.phase === "betting" || this.phase === "running")) return events;
    bet.state = REFUNDED;
    this.openStake -= bet.stake;
    this.totalStake -= bet.stake;
    this.userBets.set(bet.user, this.userBets.get(bet.user) - 1);
    events.push({ type: "BetRefunded", at: now, ticket, user: bet.user, stake: bet.stake, reason });
    return events;
  }

  startRunning(at, events) {
    this.phase = "running";
    this.startedAt = at;
    this.crashAt = at + msAt(this.stop);
    const autos = [];
    let i = 0;
    for (const b of this.bets.values()) {
      if (b.state === OPEN) {
        const cap = this.winCap(b.stake);
        if (b.auto_cashout !== null && (cap === null || b.auto_cashout <= cap)) autos.push([b.auto_cashout, i, b.ticket]);
        else if (cap !== null) {
          autos.push([cap, i, b.ticket]);
          this.capped.add(b.ticket);
        }
      }
      i += 1;
    }
    // Targets cannot change once running: sorted once, as the engine's heap pops them.
    autos.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
    this.autos = autos;
    events.push({ type: "RunningStarted", at });
  }

  winCap(stake) {
    const maxWin = this.config.max_win;
    if (maxWin === null) return null;
    const point = Math.floor((100 * (stake + maxWin) + 99) / stake);
    return point <= MAX_MULTIPLIER ? point : null;
  }

  forcePoint() {
    if (this.config.max_profit === null || this.openStake === 0) return null;
    const headroom = this.totalStake + this.config.max_profit - this.totalPayout;
    const point = mulDiv(100, headroom, this.openStake);
    assert(point >= MIN_MULTIPLIER, "the force point is below 1.00x");
    return point <= MAX_MULTIPLIER ? point : null;
  }

  nextPoint() {
    while (this.head < this.autos.length && this.bets.get(this.autos[this.head][2]).state !== OPEN) this.head += 1;
    let best = [this.stop, 2, null];
    const auto = this.autos[this.head];
    if (auto !== undefined && auto[0] <= best[0]) best = [auto[0], 0, auto[2]];
    const force = this.forcePoint();
    if (force !== null && (force < best[0] || (force === best[0] && 1 < best[1]))) best = [force, 1, null];
    return best;
  }

  cashOut(bet, m, kind, at, events) {
    assert(bet.state === OPEN && this.phase === "running", "a cash-out of a bet that is not open");
    assert(MIN_MULTIPLIER <= m && m <= this.stop, "a cash-out beyond the crash point");
    const payout = mulDiv(bet.stake, m, 100);
    bet.state = WON;
    this.openStake -= bet.stake;
    this.totalPayout += payout;
    if (this.config.max_profit !== null) {
      assert(this.totalPayout <= this.totalStake + this.config.max_profit, "paid beyond max profit");
    }
    events.push({ type: "CashedOut", at, ticket: bet.ticket, stake: bet.stake, multiplier: m, payout, elapsed_ms: at - this.startedAt, kind });
  }

  crash(at, events) {
    assert(at === this.crashAt, "crashed off its instant");
    this.phase = "crashed";
    this.pauseEndsAt = at + this.config.pause_ms;
    events.push({ type: "Crashed", at, crash_point: this.crashPoint, multiplier: this.stop, elapsed_ms: msAt(this.stop), game_hash: this.gameHash });
    for (const bet of this.bets.values()) {
      if (bet.state === OPEN) {
        bet.state = LOST;
        this.openStake -= bet.stake;
        events.push({ type: "BetLost", at, ticket: bet.ticket });
      }
    }
    events.push({ type: "RoundSettled", at });
  }
}

function checkTarget(target) {
  if (target !== null && !(MIN_AUTO_CASHOUT <= target && target <= MAX_MULTIPLIER)) return "invalid_target";
  return null;
}

// -- the record of a round's events (engine/settlement/recorder.py build_record) ---------

function buildRecord(events) {
  const log = [];
  const settlement = [];
  const bets = new Map();
  const order = [];
  const withdrawnBeforeStart = new Set();
  let opened = false;
  let started = false;
  let openedAt = 0;
  let closesAt = 0;
  let startedAt = null;
  let crash = null;
  let voided = null;
  const voidRefunds = new Set();
  events.forEach((e, i) => {
    if (e.type !== "RoundVoided") return;
    for (let j = i - 1; j >= 0 && events[j].type === "BetRefunded" && events[j].at === e.at; j -= 1) voidRefunds.add(j);
  });
  events.forEach((e, i) => {
    const at = e.at;
    if (e.type === "BettingOpened") {
      opened = true;
      openedAt = at;
      closesAt = e.closes_at;
    } else if (e.type === "BetAccepted") {
      const entry = { at, op: "bet", ticket_id: e.ticket, player: String(e.user), stake: e.stake, auto_cashout: e.auto_cashout, queued: !opened };
      log.push(entry);
      bets.set(e.ticket, { ...entry });
      order.push(e.ticket);
    } else if (e.type === "AutoCashoutChanged") {
      log.push({ at, op: "target", ticket_id: e.ticket, auto_cashout: e.target, queued: !opened });
      if (bets.has(e.ticket)) bets.get(e.ticket).auto_cashout = e.target;
    } else if (e.type === "RunningStarted") {
      started = true;
      startedAt = at;
    } else if (e.type === "CashedOut") {
      if (e.kind === "manual") log.push({ at, op: "cashout", ticket_id: e.ticket });
      settlement.push({ ticket_id: e.ticket, outcome: "won", cashout: e.kind, at, elapsed_ms: e.elapsed_ms, multiplier: e.multiplier, payout: e.payout });
    } else if (e.type === "BetRefunded") {
      if (voidRefunds.has(i)) settlement.push({ ticket_id: e.ticket, outcome: "refunded", payout: e.stake });
      else {
        log.push({ at, op: "withdraw", ticket_id: e.ticket, reason: e.reason, queued: !opened });
        settlement.push({ ticket_id: e.ticket, outcome: "withdrawn" });
        if (!started) withdrawnBeforeStart.add(e.ticket);
      }
    } else if (e.type === "BetLost") {
      settlement.push({ ticket_id: e.ticket, outcome: "lost", payout: 0 });
    } else if (e.type === "Crashed") {
      crash = { at, elapsed_ms: e.elapsed_ms, multiplier: e.multiplier };
    } else if (e.type === "RoundVoided") {
      voided = { at, reason: e.reason, by: "engine" };
    }
  });
  // The engine's order of play: bets carried from the queue, then those placed here.
  const playOrder = [...order.filter((t) => bets.get(t).queued), ...order.filter((t) => !bets.get(t).queued)];
  const sealed = started
    ? playOrder
        .filter((t) => !withdrawnBeforeStart.has(t))
        .map((t) => {
          const b = bets.get(t);
          return { ticket_id: t, player: b.player, stake: b.stake, auto_cashout: b.auto_cashout, placed_at: b.at };
        })
    : [];
  return { openedAt, closesAt, startedAt, log, sealed, settlement, crash, void: voided };
}

// -- the re-run (engine/settlement/replay.py) ---------------------------------------------

function int(value, what) {
  if (!Number.isSafeInteger(value)) throw new ReplayError(`${what} must be an integer`);
  return value;
}

// `at`, if the engine clock may move to it: it never goes backwards (replay.py _forward).
function forward(rnd, at, what) {
  if (at < rnd.now) throw new ReplayError(`${what} is ${at}, before the engine's clock (${rnd.now})`);
  return at;
}

async function fairPoint(fairness) {
  try {
    return await crashPoint(fairness.game_hash, fairness.salt);
  } catch (err) {
    throw new ReplayError(`fairness inputs: ${err.message}`);
  }
}

async function rerun(t) {
  const roundId = int(t.round_id, "round_id");
  const fairness = t.fairness;
  const config = configOf(t.rules);
  const point = await fairPoint(fairness);
  const clock = t.clock;
  const openedAt = int(clock.opened_at, "clock.opened_at");
  const startedAt = clock.started_at;
  const out = { record: null, crashPoint: point, problems: [] };
  const events = [];
  const rnd = new Round({ roundId, gameHash: fairness.game_hash, crashPoint: point, config, opensAt: openedAt });
  const log = [...t.log];
  const carried = new Map();
  let head = 0;
  while (head < log.length && log[head].queued === true) {
    const e = log[head];
    head += 1;
    const ticket = e.ticket_id;
    if (e.op === "bet") {
      carried.set(ticket, { ticket, user: e.player, stake: e.stake, auto_cashout: e.auto_cashout, placed_at: int(e.at, "at"), state: OPEN });
      events.push({ type: "BetAccepted", at: e.at, ticket, user: e.player, stake: e.stake, auto_cashout: e.auto_cashout, queued: true });
    } else if (e.op === "target" && carried.has(ticket)) {
      carried.get(ticket).auto_cashout = e.auto_cashout;
      events.push({ type: "AutoCashoutChanged", at: e.at, ticket, target: e.auto_cashout });
    } else if (e.op === "withdraw" && carried.has(ticket)) {
      const bet = carried.get(ticket);
      carried.delete(ticket);
      events.push({ type: "BetRefunded", at: e.at, ticket, user: bet.user, stake: bet.stake, reason: e.reason });
    } else {
      out.problems.push(`log[${head - 1}]: a queued ${e.op} of a bet not queued`);
    }
  }
  if (carried.size > config.max_bets_per_round) {
    out.problems.push("more bets queued than the round may hold");
    return out;
  }
  events.push(...rnd.open([...carried.values()]));
  let started = false;
  for (let index = head; index < log.length; index += 1) {
    const e = log[index];
    const at = forward(rnd, int(e.at, `log[${index}].at`), `log[${index}].at`);
    if (e.queued) {
      out.problems.push(`log[${index}]: queued after the round opened`);
      continue;
    }
    if (startedAt !== null && !started && at >= startedAt) {
      events.push(...rnd.advance(forward(rnd, startedAt, "clock.started_at")));
      started = true;
    }
    const op = e.op;
    let answer;
    if (op === "bet") {
      if (!Number.isSafeInteger(e.stake)) throw new ReplayError(`log[${index}].stake must be an integer`);
      answer = rnd.placeBet(at, e.ticket_id, e.player, e.stake, e.auto_cashout);
    } else if (op === "target") answer = rnd.setAutoCashout(at, e.ticket_id, e.auto_cashout);
    else if (op === "cashout") answer = rnd.cashOutCommand(at, e.ticket_id);
    else if (op === "withdraw") {
      answer = rnd.withdraw(at, e.ticket_id, e.reason);
      if (!answer.length) out.problems.push(`log[${index}]: nothing to withdraw`);
    } else {
      out.problems.push(`log[${index}]: unknown op ${JSON.stringify(op)}`);
      continue;
    }
    for (const event of answer) {
      if (event.type === "Rejected") out.problems.push(`log[${index}]: the engine refuses this ${op} of ${e.ticket_id}: ${event.reason}`);
    }
    events.push(...answer);
  }
  if (startedAt !== null && !started) events.push(...rnd.advance(forward(rnd, int(startedAt, "clock.started_at"), "clock.started_at")));
  const { crash, void: voided } = t;
  if (voided !== null && voided.by === "recovery") {
    // no instant to end at: the re-run stops at the last command
  } else if (voided !== null) events.push(...rnd.void(forward(rnd, int(voided.at, "void.at"), "void.at"), voided.reason));
  else if (crash !== null) events.push(...rnd.advance(forward(rnd, int(crash.at, "crash.at"), "crash.at")));
  out.record = buildRecord(events);
  return out;
}

// -- the checks (engine/settlement/audit.py) ----------------------------------------------

const same = (a, b) => canonicalText(a) === canonicalText(b);

export function totalsOf(log, settlement) {
  const stakes = new Map(log.filter((e) => e.op === "bet").map((e) => [e.ticket_id, e.stake]));
  const counts = { won: 0, lost: 0, refunded: 0, withdrawn: 0 };
  let stake = 0;
  let payout = 0;
  for (const entry of settlement) {
    if (entry.outcome in counts) counts[entry.outcome] += 1;
    if (entry.outcome !== "withdrawn") {
      stake += stakes.get(entry.ticket_id) || 0;
      payout += entry.payout || 0;
    }
  }
  return { bets: stakes.size, stake, payout, ...counts };
}

export function forcePointOf(settlement) {
  const forced = settlement.filter((e) => e.cashout === "forced");
  return forced.length ? forced[0].multiplier : null;
}

async function checkSeal(rid, seal, sealed, finding) {
  const out = [];
  const leaves = [];
  for (const b of sealed) leaves.push(await leafDigest(betLeaf(rid, b)));
  const root = toHex(await merkleRoot(leaves));
  if (seal.root !== root) {
    out.push(finding("seal", "the bets in play at the start do not hash to the sealed root (a bet added, dropped or its target changed after betting closed)"));
  }
  const stake = sealed.reduce((n, b) => n + b.stake, 0);
  if (seal.bets !== sealed.length || seal.total_stake !== stake) out.push(finding("seal", "the sealed count or stake differs from the bets in play"));
  return out;
}

function checkCrashPoint(t, point, finding) {
  const said = t.fairness.crash_point;
  return point !== said ? [finding("crash_point", `the game hash and salt give ${point}, the transcript says ${said}`)] : [];
}

function sameRecord(t, record, finding) {
  const out = [];
  if (!same(record.log, t.log)) out.push(finding("rerun", "the log differs from what the engine accepts"));
  const mine = record.settlement;
  const theirs = t.settlement;
  if (!same(mine, theirs)) {
    const n = Math.min(mine.length, theirs.length);
    const i = [...Array(n).keys()].find((k) => !same(mine[k], theirs[k]));
    if (i !== undefined) out.push(finding("rerun", `settlement[${i}]: the engine decides ${canonicalText(mine[i])}, the transcript says ${canonicalText(theirs[i])}`));
    else out.push(finding("rerun", `the engine settles ${mine.length} entries, the transcript ${theirs.length}`));
  }
  if (!same(record.crash, t.crash)) out.push(finding("rerun", `the engine crashes ${canonicalText(record.crash)}, the transcript ${canonicalText(t.crash)}`));
  if (record.void !== null && t.void !== null && !same(record.void, t.void)) out.push(finding("rerun", "the void differs"));
  return out;
}

async function checkRerun(t, rid, seal, finding) {
  const again = await rerun(t);
  const out = checkCrashPoint(t, again.crashPoint, finding);
  out.push(...again.problems.map((p) => finding("rerun", p)));
  const record = again.record;
  if (record === null) return out;
  const started = t.clock.started_at;
  if (started !== null && started !== undefined && record.startedAt !== started) out.push(finding("rerun", `the engine starts at ${record.startedAt}`));
  if (record.closesAt !== t.clock.closes_at) out.push(finding("rerun", `betting closes at ${record.closesAt}, not as recorded`));
  if (seal !== null && seal !== undefined) out.push(...(await checkSeal(rid, seal, record.sealed, finding)));
  else if (record.startedAt !== null) out.push(finding("rerun", "the round started but the transcript has no seal"));
  out.push(...sameRecord(t, record, finding));
  return out;
}

function byRule(t, finding) {
  const out = [];
  const stakes = new Map(t.log.filter((e) => e.op === "bet").map((e) => [e.ticket_id, e.stake]));
  const seen = new Set();
  const stop = Math.min(t.fairness.crash_point, MAX_MULTIPLIER);
  for (const entry of t.settlement) {
    const ticket = entry.ticket_id;
    if (seen.has(ticket) || !stakes.has(ticket)) {
      out.push(finding("rerun", `${ticket} settled twice or never placed`));
      continue;
    }
    seen.add(ticket);
    const stake = stakes.get(ticket);
    if (entry.outcome === "won") {
      const m = entry.multiplier;
      if (!Number.isSafeInteger(m) || !(100 <= m && m <= stop) || entry.payout !== mulDiv(stake, m, 100)) out.push(finding("rerun", `${ticket}: a win of ${m} is not by the rules`));
    } else if (entry.outcome === "refunded") {
      if (entry.payout !== stake) out.push(finding("rerun", `${ticket}: refunded ${entry.payout} of ${stake}`));
    } else if (entry.outcome === "lost") {
      if (t.void !== null || entry.payout !== 0) out.push(finding("rerun", `${ticket}: lost in a voided round`));
    } else if (entry.outcome !== "withdrawn") out.push(finding("rerun", `${ticket}: ${entry.outcome} is not an outcome`));
  }
  const missing = [...stakes.keys()].filter((k) => !seen.has(k)).sort();
  if (missing.length) out.push(finding("rerun", `bets never settled: ${JSON.stringify(missing.slice(0, 5))}`));
  return out;
}

async function fromLedger(t, rid, seal, finding) {
  let point;
  try {
    point = await fairPoint(t.fairness);
  } catch (err) {
    if (err instanceof ReplayError) return [finding("format", err.message)];
    throw err;
  }
  const out = checkCrashPoint(t, point, finding);
  if (seal !== null && seal !== undefined) {
    const sealed = t.log
      .filter((e) => e.op === "bet" && e.at !== null && e.at !== undefined)
      .map((e) => ({ ticket_id: e.ticket_id, player: e.player, stake: e.stake, auto_cashout: e.auto_cashout, placed_at: e.at }));
    out.push(...(await checkSeal(rid, seal, sealed, finding)));
  }
  return [...out, ...byRule(t, finding)];
}

// One transcript's findings (no link to the round before): audit.py _transcript.
// `counted.rerun` is set when the round was re-run through the engine.
async function transcriptFindings(t, keys, counted = {}) {
  const rid0 = t && typeof t === "object" ? t.round_id : undefined;
  const rid = Number.isSafeInteger(rid0) ? rid0 : null;
  const finding = (check, detail) => ({ round_id: rid, check, detail });
  const problem = await verifyDoc(t, keys);
  if (problem !== null) return [finding("signature", problem)];
  if (t.type !== TRANSCRIPT || t.v !== VERSION || rid === null) return [finding("format", `not a version ${VERSION} ${TRANSCRIPT}`)];
  const out = [];
  const seal = t.seal;
  if (seal !== null && seal !== undefined) {
    const sealProblem = await verifyDoc(seal, keys);
    if (sealProblem !== null) out.push(finding("seal", `the seal's ${sealProblem}`));
    else if (seal.type !== SEAL || seal.round_id !== rid) out.push(finding("seal", "the seal is not this round's"));
  }
  try {
    if (t.source === "ledger") out.push(...(await fromLedger(t, rid, seal, finding)));
    else {
      out.push(...(await checkRerun(t, rid, seal, finding)));
      counted.rerun = true;
    }
    if (!same(t.totals, totalsOf(t.log, t.settlement))) out.push(finding("totals", "the totals do not add up from the settlement"));
    if (!same(t.force_point, forcePointOf(t.settlement))) out.push(finding("totals", "force_point disagrees with the forced cash-outs"));
  } catch (err) {
    if (err instanceof ReplayError) return [...out, finding("format", err.message)];
    if (err instanceof EngineAssertion) return [...out, finding("rerun", `the round engine cannot play it: ${err.message}`)];
    return [...out, finding("format", `malformed transcript: ${err.name} ${err.message}`)];
  }
  return out;
}

// The link of `t` to the transcript of the round before: audit.py _link.
async function linkFindings(before, t) {
  const rid = Number.isSafeInteger(t.round_id) ? t.round_id : null;
  if (!Number.isSafeInteger(before.round_id) || before.round_id + 1 !== t.round_id) {
    return [{ round_id: rid, check: "chain", detail: `round ${t.round_id} does not follow ${before.round_id}` }];
  }
  const out = [];
  if (t.prev !== (await docHash(before))) out.push({ round_id: rid, check: "chain", detail: "prev is not the hash of the round before" });
  try {
    const f = t.fairness;
    const link = toHex(await nextLink(parseHash(f.game_hash, "game hash"), f.chain_encoding || "hex"));
    if (f.terminating_hash !== before.fairness.terminating_hash) {
      if (link !== f.terminating_hash) {
        out.push({ round_id: rid, check: "game_chain", detail: "the first round of a chain must be its game 1 (its game hash hashes to the chain's terminating hash)" });
      }
    } else if (link !== before.fairness.game_hash) {
      out.push({ round_id: rid, check: "game_chain", detail: "its game hash does not hash to the round before's" });
    }
  } catch {
    out.push({ round_id: rid, check: "game_chain", detail: "no game hash to link" });
  }
  return out;
}

// A run of transcripts in round order, as `crashd audit` takes them (no receipts, no
// walk to the commitment): {ok, transcripts, rounds, rerun, findings}.
export async function audit(transcripts, keys) {
  const report = { transcripts: 0, rounds: [], rerun: 0, findings: [] };
  let previous = null;
  for (const t of transcripts) {
    report.transcripts += 1;
    const rid = t && typeof t === "object" && Number.isSafeInteger(t.round_id) ? t.round_id : null;
    const counted = {};
    const findings = await transcriptFindings(t, keys, counted);
    if (counted.rerun) report.rerun += 1;
    if (rid !== null) {
      report.rounds.push(rid);
      if (previous !== null) findings.push(...(await linkFindings(previous, t)));
    }
    report.findings.push(...findings);
    previous = rid !== null ? t : null;
  }
  report.ok = report.findings.length === 0;
  return report;
}

// One round for the page: each check of CHECKS with its verdict ("pass", "fail" or
// "skipped") and why. `previous`: the round before's transcript, or null when there is
// none to link to (the first round) or it could not be read.
export async function auditRound(t, keys, previous = null) {
  const findings = await transcriptFindings(t, keys);
  const rid = t && Number.isSafeInteger(t.round_id) ? t.round_id : null;
  if (previous !== null && rid !== null) findings.push(...(await linkFindings(previous, t)));
  const stopped = findings.some((f) => f.check === "signature" || (f.check === "format" && f.detail.startsWith("not a version")));
  const checks = CHECKS.map(([check, what]) => {
    const mine = findings.filter((f) => f.check === check);
    if (mine.length) return { check, what, verdict: "fail", why: mine.map((f) => f.detail) };
    let skipped = null;
    if (stopped && check !== "signature" && check !== "format") skipped = "not checked: the document itself failed the checks above";
    else if ((check === "chain" || check === "game_chain") && previous === null) skipped = rid === 1 ? "round 1: no round before it" : "the round before's transcript could not be read";
    else if (check === "seal" && (t.seal === null || t.seal === undefined)) skipped = "the round never started: no seal";
    if (skipped) return { check, what, verdict: "skipped", why: [skipped] };
    return { check, what, verdict: "pass", why: [passNote(check, t)] };
  });
  return { ok: findings.length === 0, findings, checks };
}

function passNote(check, t) {
  switch (check) {
    case "signature":
      return `key ${t.key_id} verifies the signature over the canonical bytes`;
    case "format":
      return `version ${t.v}, ${t.source === "ledger" ? "written by start-up recovery from the ledger" : "the engine's own record"}`;
    case "crash_point":
      return `HMAC-SHA256 of the game hash under the salt gives ${formatMultiplier(t.fairness.crash_point)}x, as recorded`;
    case "chain":
      return `prev ${t.prev} is the SHA-256 of round ${t.round_id - 1}'s transcript`;
    case "game_chain":
      return "hashing this round's game hash gives the round before's";
    case "seal":
      return `${t.seal.bets} bets, ${t.seal.total_stake} staked (minor units), Merkle root ${t.seal.root}`;
    case "rerun":
      return t.source === "ledger"
        ? "voided by recovery: each bet settled once, wins by the floor rule below the crash point, the rest refunded"
        : `${t.log.length} commands replayed; ${t.settlement.length} outcomes${t.force_point !== null ? `, force point ${t.force_point}` : ""} identical`;
    case "totals":
      return `${t.totals.bets} bets, ${t.totals.stake} staked, ${t.totals.payout} paid (minor units)`;
    default:
      return "";
  }
}

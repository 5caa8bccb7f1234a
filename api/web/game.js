// The game page: the live curve, the bet panels, the round's bets, my bets and the
// history strip. It speaks the public REST API and the feed only (docs/page.md), so it
// is also the worked example of integrating crashd in a browser.

import { Session, get, post, Unreachable } from "./api.js";
import { CurveClock } from "./curve.js";
import { Feed } from "./feed.js";
import {
  band,
  el,
  formatMoney,
  parseMoney,
  parseMultiplier,
  setDecimals,
  shortHash,
  x,
} from "./format.js";

const $ = (id) => document.getElementById(id);
const ui = {
  conn: $("conn"),
  canvas: $("curve"),
  multiplier: $("multiplier"),
  phase: $("phase"),
  lag: $("lag"),
  offline: $("offline"),
  announce: $("announce"),
  crashHash: $("crash-hash"),
  history: $("history"),
  who: $("who"),
  balance: $("balance"),
  stakeHint: $("stake-hint"),
  rtt: $("rtt"),
  sound: $("sound"),
  liveBody: document.querySelector("#live-bets tbody"),
  liveCount: $("live-count"),
  mineBody: document.querySelector("#my-bets tbody"),
  mineBox: $("mine-box"),
};

const LIVE_ROWS = 50;
const MY_ROWS = 10;
const HISTORY = 24;

const state = {
  rules: null,
  roundId: null,
  phase: null, // betting | running | crashed | voided
  closesAt: null, // server epoch ms
  nextRoundAt: null,
  crashPoint: null,
  gameHash: null,
  skew: null, // server clock minus ours, a lower bound (ms)
  balance: null,
  walletMaxStake: null, // seamless: the largest stake the operator's wallet allows me
  bets: new Map(), // my bets by ticket id
  live: [], // the round's bets: {stake, status, cashedOutAt, payout, ticket, mine}
  liveRound: null,
  liveCount: 0,
  history: [],
  firstFrame: false,
  connected: false,
};

const clock = new CurveClock();

// A bet panel: its own form, button and answer; it follows one ticket at a time. The
// page has two (the second shown when the server allows two bets per round); the
// first keeps the plain ids (#stake, #auto, #action, #result), the second ends in -2.
class Slot {
  constructor(n) {
    const id = (name) => $(n === 1 ? name : `${name}-${n}`);
    this.n = n;
    this.box = id("slot");
    this.form = id("bet-form");
    this.stake = id("stake");
    this.auto = id("auto");
    this.action = id("action");
    this.result = id("result");
    this.ticket = null; // the bet it follows
    this.pending = null; // "bet" | "cashout": an order in flight
  }

  followed() {
    return this.ticket ? state.bets.get(this.ticket) || null : null;
  }

  // Free for a new bet: nothing in flight, and its bet (if any) is settled.
  free() {
    const bet = this.followed();
    return !this.pending && (!bet || FINAL.has(bet.status));
  }
}

const slots = [new Slot(1), new Slot(2)];
const slotOf = (ticket) => slots.find((slot) => slot.ticket === ticket) || null;

// A bet this page did not place from a panel (another tab, a reload): the first free
// panel follows it, unless a panel's own bet order is in flight (its answer decides).
function adopt(ticket) {
  if (slotOf(ticket) || slots.some((slot) => slot.pending === "bet")) return;
  const slot = slots.find((s) => s.free() && !s.box.hidden) || null;
  if (slot) slot.ticket = ticket;
}
const session = new Session(() => renderWho());
let feed = null;

// ---- clocks -------------------------------------------------------------------------

function noteServerTime(serverMs) {
  if (typeof serverMs !== "number") return;
  const sample = serverMs - Date.now();
  state.skew = state.skew === null ? sample : Math.max(state.skew, sample);
}

const serverNow = () => Date.now() + (state.skew ?? 0);

// ---- feed messages ------------------------------------------------------------------

function onMessage(msg) {
  if (msg.type === "snapshot") {
    applySnapshot(msg);
    return;
  }
  const channel = msg.channel || "";
  if (channel === "live_multiplier") {
    if (msg.type === "tick") onTick(msg);
  } else if (channel === "round_updates") {
    onRound(msg);
  } else if (channel.startsWith("user:")) {
    onUser(msg);
  }
}

function applySnapshot(msg) {
  const channels = msg.channels || {};
  const pub = channels.round_updates || channels.live_multiplier;
  if (pub) applyPublic(pub);
  for (const [name, part] of Object.entries(channels)) {
    if (name.startsWith("user:")) applyUserSnapshot(part);
  }
  refreshRest();
  render();
}

function applyPublic(s) {
  noteServerTime(s.server_time_ms);
  const now = performance.now();
  setRound(s.round_id);
  state.phase = s.status;
  state.closesAt = s.betting_closes_at_ms ?? null;
  state.nextRoundAt = s.next_round_at_ms ?? null;
  if (s.status === "running") {
    clock.start(s.round_id, now, s.elapsed_ms || 0, s.current_multiplier);
  } else if (s.status === "crashed" && s.crash_point) {
    state.crashPoint = s.crash_point;
    state.gameHash = s.game_hash;
    clock.crash(s.round_id, s.elapsed_ms, s.crash_point);
  } else {
    clock.reset(s.round_id);
  }
}

function setRound(roundId) {
  if (state.roundId === roundId) return;
  state.roundId = roundId;
  state.crashPoint = null;
  state.gameHash = null;
  state.closesAt = null;
  state.nextRoundAt = null;
}

function onTick(msg) {
  noteServerTime(msg.at_ms);
  if (msg.round_id !== state.roundId) setRound(msg.round_id);
  if (state.phase !== "running" && state.crashPoint === null) state.phase = "running";
  clock.tick(msg.round_id, performance.now(), msg.elapsed_ms, msg.multiplier);
}

function onRound(msg) {
  switch (msg.type) {
    case "betting_opened":
      setRound(msg.round_id);
      state.phase = "betting";
      state.closesAt = msg.closes_at_ms;
      clock.reset(msg.round_id);
      state.liveCount = 0;
      resetLive(msg.round_id);
      renderMine(); // a queued bet is in play now
      say(`Round ${msg.round_id}: betting is open.`);
      break;
    case "running":
      noteServerTime(msg.started_at_ms);
      setRound(msg.round_id);
      state.phase = "running";
      clock.start(msg.round_id, performance.now(), 0);
      loadLive();
      say(`Round ${msg.round_id} is running.`);
      break;
    case "crashed":
      noteServerTime(msg.at_ms);
      setRound(msg.round_id);
      state.phase = "crashed";
      state.crashPoint = msg.crash_point;
      state.gameHash = msg.game_hash;
      state.nextRoundAt = msg.next_round_at_ms;
      clock.crash(msg.round_id, msg.elapsed_ms, msg.crash_point);
      addHistory({ round_id: msg.round_id, crash_point: msg.crash_point, game_hash: msg.game_hash });
      beep("crash");
      say(`Busted at ${x(msg.crash_point)}.`);
      break;
    case "round_voided":
      setRound(msg.round_id);
      state.phase = "voided";
      clock.reset(msg.round_id);
      say(`Round ${msg.round_id} was voided; its bets are refunded.`);
      break;
    case "cashouts":
      if (msg.round_id === state.liveRound) applyPublicCashouts(msg.cashouts || []);
      break;
    case "round_settled":
      if (msg.round_id === state.liveRound) loadLive();
      break;
    default:
      break;
  }
  render();
}

// ---- my bets ------------------------------------------------------------------------

const FINAL = new Set(["won", "lost", "refunded"]);

function upsertBet(ticket, fields) {
  const bet = state.bets.get(ticket) || {
    ticket,
    roundId: null,
    stake: 0,
    auto: null,
    status: "active",
    multiplier: null,
    payout: null,
  };
  if (FINAL.has(bet.status)) return bet; // settled exactly once: the first answer stands
  Object.assign(bet, fields);
  state.bets.set(ticket, bet);
  return bet;
}

function settle(ticket, fields, reason = null) {
  const bet = state.bets.get(ticket);
  if (bet && FINAL.has(bet.status)) return;
  const settled = upsertBet(ticket, fields);
  const slot = slotOf(ticket);
  if (slot) {
    showResult(slot, settled, reason);
    if (slot.pending === "cashout") slot.pending = null;
  }
  markLiveMine(settled);
  renderMine();
}

function restStatus(s) {
  return { cashed_out: "won", lost: "lost", refunded: "refunded", active: "active", open: "active", won: "won" }[s] || s;
}

function applyUserSnapshot(part) {
  if (part.balance) setBalance(part.balance);
  for (const b of part.bets || []) {
    upsertBet(b.ticket_id, {
      roundId: part.round_id,
      stake: b.stake,
      status: restStatus(b.status),
      multiplier: b.cashed_out_at ?? null,
      payout: b.payout ?? null,
    });
    if (b.status === "open") adopt(b.ticket_id);
  }
}

function onUser(msg) {
  switch (msg.type) {
    case "balance":
      setBalance(msg);
      break;
    case "bet_accepted":
      upsertBet(msg.ticket_id, {
        roundId: msg.round_id,
        stake: msg.stake,
        auto: msg.auto_cashout ?? null,
        queued: !!msg.queued,
      });
      adopt(msg.ticket_id);
      addLiveMine(state.bets.get(msg.ticket_id));
      break;
    case "cashed_out":
      settle(msg.ticket_id, {
        roundId: msg.round_id,
        status: "won",
        stake: msg.stake,
        multiplier: msg.multiplier,
        payout: msg.payout,
        kind: msg.kind,
      });
      break;
    case "bet_lost":
      settle(msg.ticket_id, { roundId: msg.round_id, status: "lost", stake: msg.stake, payout: 0 });
      break;
    case "bet_refunded":
      settle(msg.ticket_id, { status: "refunded", stake: msg.stake, payout: msg.stake }, msg.reason);
      break;
    default:
      break;
  }
  renderMine();
  render();
}

function setBalance(b) {
  state.balance = { posted: b.posted, pending: b.pending, available: b.available };
  ui.balance.textContent = formatMoney(b.available);
  ui.balance.dataset.available = String(b.available);
}

// ---- orders -------------------------------------------------------------------------

async function onAction(slot, event) {
  event.preventDefault();
  if (!session.canBet || slot.pending) return;
  const bet = slot.followed();
  if (bet && bet.status === "active" && bet.roundId === state.roundId && state.phase === "running") {
    return cashOut(slot, bet);
  }
  if (bet && bet.status === "active") return; // placed or queued: nothing to do
  return placeBet(slot);
}

// The largest stake I may place: the game's, or my wallet's when it is lower (seamless
// mode: the limits the operator's wallet gave, on GET /user/balance).
function largestStake() {
  const game = (state.rules && state.rules.max_stake) || null;
  const wallet = state.walletMaxStake;
  if (wallet && (!game || wallet < game)) return { amount: wallet, wallet: true };
  return { amount: game, wallet: false };
}

function renderStakeHint() {
  const rules = state.rules;
  if (!rules || !rules.min_stake) return;
  const most = largestStake();
  ui.stakeHint.textContent =
    `From ${formatMoney(rules.min_stake)} to ${formatMoney(most.amount)}` +
    (most.wallet ? " (your wallet's limit)." : ".");
  ui.stakeHint.dataset.walletLimit = most.wallet ? String(most.amount) : "";
}

async function placeBet(slot) {
  const amount = parseMoney(slot.stake.value);
  const rules = state.rules || {};
  if (amount === null || amount <= 0) {
    return refuse(slot, "Enter a stake, e.g. 10.00.", slot.stake);
  }
  if (rules.min_stake && amount < rules.min_stake) {
    return refuse(slot, `The smallest stake is ${formatMoney(rules.min_stake)}.`, slot.stake);
  }
  const most = largestStake();
  if (most.amount && amount > most.amount) {
    const why = most.wallet ? "Your wallet allows stakes up to" : "The largest stake is";
    return refuse(slot, `${why} ${formatMoney(most.amount)}.`, slot.stake);
  }
  let target = null;
  if (slot.auto.value.trim() !== "") {
    target = parseMultiplier(slot.auto.value);
    const lowest = rules.min_auto_cashout || 101;
    if (target === null || target < lowest) {
      return refuse(slot, `An auto cash-out must be at least ${x(lowest)}.`, slot.auto);
    }
  }
  slot.stake.removeAttribute("aria-invalid");
  slot.auto.removeAttribute("aria-invalid");
  slot.pending = "bet";
  slot.ticket = null;
  delete slot.result.dataset.ticket;
  showText(slot, "Placing your bet…", "pending");
  render();
  const order = { type: "bet", amount };
  if (target !== null) order.auto_cashout = target;
  const answer = await feed.order(order);
  slot.pending = null;
  if (answer.status === 201) {
    const body = answer.body;
    const bet = upsertBet(body.ticket_id, {
      roundId: body.round_id,
      stake: body.stake,
      auto: body.auto_cashout ?? null,
      queued: !!body.queued,
    });
    for (const other of slots) if (other.ticket === body.ticket_id) other.ticket = null;
    slot.ticket = body.ticket_id;
    slot.result.dataset.ticket = body.ticket_id;
    addLiveMine(bet);
    const auto = bet.auto ? `, auto cash-out at ${x(bet.auto)}` : "";
    showText(
      slot,
      body.queued || body.round_id !== state.roundId
        ? `Bet of ${formatMoney(body.stake)}${auto} queued for the next round.`
        : `Bet of ${formatMoney(body.stake)}${auto} placed for round ${body.round_id}.`,
      "placed",
    );
    if (FINAL.has(bet.status)) showResult(slot, bet, null); // settled before its answer came
    renderMine();
  } else {
    showProblem(slot, answer.body, "Your bet was not placed");
  }
  render();
}

async function cashOut(slot, bet) {
  slot.pending = "cashout";
  const shown = clock.view(performance.now()).multiplier;
  showText(slot, `Cashing out (you clicked at ${x(shown)})…`, "pending");
  render();
  const answer = await feed.order({ type: "cashout", ticket_id: bet.ticket });
  const body = answer.body || {};
  if (answer.status === 200 && body.status === "cashed_out") {
    settle(bet.ticket, { status: "won", multiplier: body.multiplier, payout: body.payout });
  } else if (body.code === "too_late") {
    settle(bet.ticket, { status: "lost", payout: 0, multiplier: null }, `too_late:${body.crash_point}`);
  } else {
    const current = state.bets.get(bet.ticket);
    if (!current || !FINAL.has(current.status)) showProblem(slot, body, "The cash-out was refused");
  }
  slot.pending = null;
  render();
}

function refuse(slot, text, field) {
  field.setAttribute("aria-invalid", "true");
  showText(slot, text, "refused");
  field.focus();
}

function showText(slot, text, outcome) {
  slot.result.textContent = text;
  slot.result.dataset.outcome = outcome;
}

function showProblem(slot, body, prefix) {
  const detail = (body && (body.detail || body.title)) || "the server refused it";
  showText(slot, `${prefix}: ${detail}`, "refused");
  slot.result.dataset.code = (body && body.code) || "";
}

function showResult(slot, bet, reason) {
  slot.result.dataset.ticket = bet.ticket;
  if (bet.status === "won") {
    beep("win");
    const profit = bet.payout - bet.stake;
    const how =
      bet.kind === "auto"
        ? "Auto cashed out"
        : bet.kind === "forced"
          ? "Cashed out at the round's profit cap"
          : bet.kind === "max_win"
            ? "Cashed out at the max win"
            : "Cashed out";
    showText(
      slot,
      `${how} @ ${x(bet.multiplier)}: paid ${formatMoney(bet.payout)} (profit ${formatMoney(profit, { sign: true })}).`,
      "won",
    );
  } else if (bet.status === "lost") {
    if (reason && reason.startsWith("too_late:")) {
      const at = Number(reason.slice(9));
      showText(
        slot,
        `Too late: the round crashed @ ${x(at)} before your cash-out was handled. Lost ${formatMoney(bet.stake)}.`,
        "too_late",
      );
    } else {
      const at = state.crashPoint ? ` @ ${x(state.crashPoint)}` : "";
      showText(slot, `Busted${at}: lost ${formatMoney(bet.stake)}.`, "lost");
    }
  } else if (bet.status === "refunded") {
    showText(slot, `Round voided: your stake of ${formatMoney(bet.stake)} was refunded.`, "refunded");
  }
}

// ---- the round's bets ---------------------------------------------------------------

function resetLive(roundId) {
  state.liveRound = roundId;
  state.live = [];
  for (const bet of state.bets.values()) {
    if (bet.roundId === roundId && bet.status === "active") addLiveMine(bet, false);
  }
  renderLive();
}

async function loadLive() {
  const round = state.roundId;
  const token = session.current && session.current.token;
  if (!token) return;
  try {
    const page = await get(`/game/state/participants?limit=100`, { token });
    if (page.round_id !== state.roundId || !session.current || session.current.token !== token) return;
    state.liveRound = page.round_id;
    state.live = (page.participants || []).map((p) => ({
      stake: p.stake,
      status: p.status,
      cashedOutAt: p.cashed_out_at,
      payout: p.payout,
      ticket: p.ticket_id || null,
      mine: !!p.ticket_id && state.bets.has(p.ticket_id),
    }));
    state.liveCount = page.participant_count;
    renderLive();
  } catch (err) {
    if (round === state.roundId) renderLive();
  }
}

function addLiveMine(bet, draw = true) {
  if (!bet || bet.roundId !== state.liveRound) return;
  if (state.live.some((p) => p.ticket === bet.ticket)) return;
  state.live.unshift({
    stake: bet.stake,
    status: "open",
    cashedOutAt: null,
    payout: null,
    ticket: bet.ticket,
    mine: true,
  });
  if (draw) renderLive();
}

function markLiveMine(bet) {
  const entry = state.live.find((p) => p.ticket === bet.ticket);
  if (!entry) return;
  entry.status = bet.status;
  entry.cashedOutAt = bet.status === "won" ? bet.multiplier : null;
  entry.payout = bet.payout;
  renderLive();
}

// Public cash-outs are anonymous (stake, multiplier, payout): any open bet of that stake
// stands for it, and the table is the same whichever one it was. My own cash-out is
// already marked (from my channel), so its public twin is matched to it first.
function applyPublicCashouts(cashouts) {
  for (const c of cashouts) {
    const twin = state.live.find(
      (p) => p.mine && p.status === "won" && !p.publicSeen && p.stake === c.stake && p.cashedOutAt === c.multiplier,
    );
    if (twin) {
      twin.publicSeen = true;
      continue;
    }
    const open = state.live.find((p) => p.status === "open" && !p.mine && p.stake === c.stake);
    if (open) {
      open.status = "won";
      open.cashedOutAt = c.multiplier;
      open.payout = c.payout;
    }
  }
  renderLive();
}

function profitCell(stake, status, payout) {
  if (status === "won") return formatMoney(payout - stake, { sign: true });
  if (status === "lost") return formatMoney(-stake);
  if (status === "refunded") return "refunded";
  return "–";
}

function renderLive() {
  const rows = state.live.slice(0, LIVE_ROWS).map((p) => {
    const status = p.status === "open" && state.phase === "crashed" ? "lost" : p.status;
    return el(
      "tr",
      { class: `${p.mine ? "mine " : ""}${status}` },
      el("td", { text: p.mine ? "You" : "–" }),
      el("td", { text: formatMoney(p.stake) }),
      el("td", { text: status === "won" ? x(p.cashedOutAt) : status === "lost" ? "busted" : "–" }),
      el("td", { text: profitCell(p.stake, status, p.payout) }),
    );
  });
  ui.liveBody.replaceChildren(...rows);
  const count = Math.max(state.liveCount || 0, state.live.length);
  ui.liveCount.textContent = count ? `(${count})` : "";
}

function renderMine() {
  if (!session.readsBalance) {
    ui.mineBox.hidden = true;
    return;
  }
  ui.mineBox.hidden = false;
  const bets = [...state.bets.values()].sort((a, b) => (b.roundId ?? 0) - (a.roundId ?? 0));
  const rows = bets.slice(0, MY_ROWS).map((b) =>
    el(
      "tr",
      { class: b.status },
      el("td", {}, b.roundId ? el("a", { href: `/rounds/${b.roundId}`, text: String(b.roundId) }) : "–"),
      el("td", { text: formatMoney(b.stake) }),
      el("td", {
        text:
          b.status === "won"
            ? x(b.multiplier)
            : b.status !== "active"
              ? b.status
              : b.roundId !== state.roundId
                ? `queued${b.auto ? `, auto ${x(b.auto)}` : ""}`
                : b.auto
                  ? `auto ${x(b.auto)}`
                  : "in play",
      }),
      el("td", { text: profitCell(b.stake, b.status, b.payout) }),
    ),
  );
  ui.mineBody.replaceChildren(...rows);
}

// ---- history ------------------------------------------------------------------------

function addHistory(round) {
  if (round.crash_point === null || round.crash_point === undefined) return;
  if (state.history.some((r) => r.round_id === round.round_id)) return;
  state.history.unshift(round);
  state.history.sort((a, b) => b.round_id - a.round_id);
  state.history.length = Math.min(state.history.length, HISTORY);
  renderHistory();
}

function renderHistory() {
  const items = state.history.map((r) =>
    el(
      "li",
      {},
      el("a", {
        href: `/rounds/${r.round_id}`,
        class: `band-${band(r.crash_point)}`,
        "aria-label": `Round ${r.round_id}: crashed at ${x(r.crash_point)}`,
        text: x(r.crash_point),
      }),
    ),
  );
  ui.history.replaceChildren(...items);
}

// ---- REST reads ---------------------------------------------------------------------

async function refreshRest() {
  const s = session.current;
  if (!s) return;
  // Each answer is for the session that asked: a partner may hand the tab another
  // player while these are in flight, and a late answer must not show the previous
  // player's bets or balance as the new one's.
  const stale = () => session.current !== s;
  try {
    const page = await get(`/game/rounds?limit=${HISTORY}`, { token: s.token });
    for (const r of page.rounds || []) addHistory(r);
  } catch (err) {
    // History is a nicety; the live stream goes on without it.
  }
  if (stale()) return;
  if (session.readsBalance) {
    try {
      const mine = await get(`/user/bets?user_id=${encodeURIComponent(s.userId)}&limit=${MY_ROWS}`, {
        token: s.token,
      });
      if (stale()) return;
      for (const b of mine.bets || []) {
        upsertBet(b.ticket_id, {
          roundId: b.round_id,
          stake: b.stake,
          auto: b.auto_cashout ?? null,
          status: restStatus(b.status),
          multiplier: b.multiplier ?? null,
          payout: b.payout ?? null,
        });
      }
      renderMine();
    } catch (err) {
      // My bets also arrive on my channel.
    }
    if (stale()) return;
    try {
      const balance = await get(`/user/balance?user_id=${encodeURIComponent(s.userId)}`, { token: s.token });
      if (stale()) return;
      if (state.balance === null) setBalance(balance); // the feed's is newer
      // Only this answer carries my wallet's limits (seamless mode).
      state.walletMaxStake = (balance.limits && balance.limits.max_stake) || null;
      renderStakeHint();
    } catch (err) {
      // The balance arrives on my channel as well.
    }
  }
  loadLive();
  render();
}

// ---- sound (off unless the player turns it on) ------------------------------------------

const SOUND = "crashd.sound";
let audio = null;

function soundOn() {
  try {
    return localStorage.getItem(SOUND) === "on";
  } catch {
    return false;
  }
}

function beep(kind) {
  if (!soundOn()) return;
  try {
    audio = audio || new AudioContext();
    const osc = audio.createOscillator();
    const gain = audio.createGain();
    osc.frequency.value = kind === "win" ? 880 : 220;
    gain.gain.setValueAtTime(0.12, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + 0.25);
    osc.connect(gain).connect(audio.destination);
    osc.start();
    osc.stop(audio.currentTime + 0.25);
  } catch {
    // no audio here: silence
  }
}

function renderSound() {
  const on = soundOn();
  ui.sound.setAttribute("aria-pressed", String(on));
  ui.sound.textContent = on ? "Sound: on" : "Sound: off";
}

function toggleSound() {
  try {
    localStorage.setItem(SOUND, soundOn() ? "off" : "on");
  } catch {
    // storage off: the setting cannot be kept
  }
  renderSound();
  if (soundOn()) beep("win");
}

// ---- rendering ----------------------------------------------------------------------

let announced = "";
function say(text) {
  if (text === announced) return;
  announced = text;
  ui.announce.textContent = text;
}

function renderWho() {
  const s = session.current;
  ui.who.replaceChildren();
  if (!s) return;
  const sandbox = state.rules && state.rules.environment === "sandbox";
  if (s.kind === "viewer") {
    if (sandbox) {
      const button = el("button", { type: "button", id: "demo", class: "demo" }, "Play with demo money");
      button.addEventListener("click", startDemo);
      ui.who.append(
        el("p", { text: "You are watching. This is a sandbox server: play with demo money, no sign-up." }),
        button,
      );
    } else {
      ui.who.append(
        el("p", {
          text: "View only. To play, open the game from your casino's site (it signs you in).",
        }),
      );
    }
  } else {
    const label = s.kind === "demo" ? `Demo player ${s.userId}` : `Playing as ${s.userId}`;
    ui.who.append(el("p", { text: label, id: "player" }));
  }
  const two = (state.rules && state.rules.max_bets_per_user) >= 2;
  slots[0].box.hidden = !session.canBet;
  document.getElementById("keys-hint").hidden = !session.canBet;
  slots[1].box.hidden = !session.canBet || !two;
  ui.balance.parentElement.hidden = !session.readsBalance;
  renderMine();
}

// The page plays as someone else now (a demo started, a partner's token arrived): forget
// the last player's bets and balance, and start the feed again from a snapshot (its new
// user channel has no past on this connection).
function switchedUser(s) {
  state.bets.clear();
  state.balance = null;
  state.walletMaxStake = null;
  renderStakeHint();
  for (const slot of slots) {
    slot.ticket = null;
    slot.pending = null;
    slot.result.textContent = "";
    delete slot.result.dataset.outcome;
    delete slot.result.dataset.ticket;
  }
  ui.balance.textContent = "–";
  delete ui.balance.dataset.available;
  if (s.balance) setBalance(s.balance);
  feed.seq = null;
  feed.restart();
  renderWho();
  renderMine();
  refreshRest();
}

async function startDemo(event) {
  const button = event.currentTarget;
  button.disabled = true;
  try {
    switchedUser(await session.demo());
    slots[0].stake.focus();
  } catch (err) {
    button.disabled = false;
    showText(slots[0], `Could not start a demo session: ${err.message}`, "refused");
  }
}

function renderAction(slot, view) {
  const b = slot.action;
  let label;
  let enabled = false;
  let mode;
  const bet = slot.followed();
  if (!session.canBet || slot.box.hidden) {
    b.hidden = true;
    return;
  }
  b.hidden = false;
  if (slot.pending === "bet") {
    [mode, label] = ["placing", "Placing bet…"];
  } else if (slot.pending === "cashout") {
    [mode, label] = ["cashing", "Cashing out…"];
  } else if (bet && bet.status === "active" && bet.roundId === state.roundId && state.phase === "running") {
    [mode, label, enabled] = ["cashout", `Cash out @ ${x(view.multiplier)}`, true];
  } else if (bet && bet.status === "active" && bet.roundId !== state.roundId) {
    [mode, label] = ["queued", `Queued for next round (${bet.roundId})`];
  } else if (bet && bet.status === "active" && state.phase === "betting") {
    [mode, label] = ["placed", "Bet placed: waiting for take-off"];
  } else if (bet && bet.status === "active") {
    [mode, label] = ["settling", "Settling…"];
  } else {
    const next = state.phase !== "betting";
    [mode, label, enabled] = ["bet", next ? "Bet on next round" : "Bet", state.connected];
  }
  if (b.dataset.state !== mode) b.dataset.state = mode;
  if (b.textContent !== label) b.textContent = label;
  b.disabled = !enabled;
}

function renderPhase(view) {
  let text = "";
  const now = serverNow();
  if (!state.connected && state.phase === null) {
    text = ui.phase.textContent;
  } else if (state.phase === "betting") {
    const left = state.closesAt ? Math.max(0, state.closesAt - now) : 0;
    text = left > 0 ? `Round ${state.roundId}: betting closes in ${(left / 1000).toFixed(1)} s` : `Round ${state.roundId}: starting…`;
  } else if (state.phase === "running") {
    text = `Round ${state.roundId} is running`;
  } else if (state.phase === "crashed") {
    const left = state.nextRoundAt ? Math.max(0, state.nextRoundAt - now) : 0;
    text = `Busted @ ${x(state.crashPoint)}${left > 0 ? ` · next round in ${(left / 1000).toFixed(1)} s` : ""}`;
  } else if (state.phase === "voided") {
    text = `Round ${state.roundId} was voided: every bet refunded`;
  }
  if (ui.phase.textContent !== text) ui.phase.textContent = text;
  const mult = state.phase === "crashed" ? state.crashPoint : view.multiplier;
  const shown = state.phase === "betting" || state.phase === "voided" ? 100 : mult;
  const label = state.phase === "crashed" ? `Busted @ ${x(shown)}` : x(shown);
  if (ui.multiplier.textContent !== label) {
    ui.multiplier.textContent = label;
    ui.multiplier.dataset.value = String(shown);
  }
  if (ui.multiplier.dataset.phase !== (state.phase || "waiting")) ui.multiplier.dataset.phase = state.phase || "waiting";
  if (state.roundId !== null) ui.multiplier.dataset.round = String(state.roundId);
  const lagging = state.phase === "running" && view.lagging;
  if (ui.lag.hidden === lagging) ui.lag.hidden = !lagging;
  const hashText = state.phase === "crashed" && state.gameHash ? state.gameHash : "";
  if (ui.crashHash.dataset.hash !== hashText) {
    ui.crashHash.dataset.hash = hashText;
    ui.crashHash.replaceChildren();
    if (hashText) {
      ui.crashHash.append(
        "Game hash ",
        el("a", { href: `/rounds/${state.roundId}`, title: hashText, text: shortHash(hashText) }),
        " — verify it yourself.",
      );
    }
  }
}

// ---- the canvas ---------------------------------------------------------------------

const ctx = ui.canvas.getContext("2d");
let size = { w: 0, h: 0, dpr: 1 };

function resize() {
  const rect = ui.canvas.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  size = { w: rect.width, h: rect.height, dpr };
  ui.canvas.width = Math.max(1, Math.round(rect.width * dpr));
  ui.canvas.height = Math.max(1, Math.round(rect.height * dpr));
  lastDrawn = "";
}

let lastDrawn = "";

function draw(view) {
  const key = `${state.phase}|${view.elapsed}|${size.w}x${size.h}`;
  if (key === lastDrawn) return;
  lastDrawn = key;
  const { w, h, dpr } = size;
  if (!w || !h) return;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const pad = { l: 44, r: 12, t: 12, b: 24 };
  const elapsed = state.phase === "running" || state.phase === "crashed" ? view.elapsed : 0;
  const top = state.phase === "crashed" ? state.crashPoint : view.multiplier;
  const spanMs = Math.max(10_000, elapsed * 1.15);
  const spanX = Math.max(2, (top / 100) * 1.15);
  const px = (ms) => pad.l + (ms / spanMs) * (w - pad.l - pad.r);
  const py = (m) => h - pad.b - ((m - 1) / (spanX - 1)) * (h - pad.t - pad.b);
  // grid: a few multipliers and seconds
  ctx.strokeStyle = "#2c3540";
  ctx.fillStyle = "#a9b4c0";
  ctx.lineWidth = 1;
  ctx.font = "12px system-ui, sans-serif";
  const stepX = niceStep(spanX - 1);
  for (let m = 1; m <= spanX; m += stepX) {
    const y = Math.round(py(m)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(pad.l, y);
    ctx.lineTo(w - pad.r, y);
    ctx.stroke();
    ctx.fillText(`${m.toFixed(stepX < 1 ? 1 : 0)}x`, 4, y + 4);
  }
  const stepS = niceStep(spanMs / 1000) * 1000;
  ctx.textAlign = "center";
  for (let t = 0; t <= spanMs; t += stepS) {
    const label = `${Math.round(t / 1000)}s`;
    const half = ctx.measureText(label).width / 2;
    ctx.fillText(label, Math.min(px(t), w - pad.r - half), h - 6);
  }
  ctx.textAlign = "start";
  if (elapsed <= 0) return;
  const crashed = state.phase === "crashed";
  ctx.beginPath();
  ctx.moveTo(px(0), py(1));
  const steps = 64;
  for (let i = 1; i <= steps; i += 1) {
    const t = (elapsed * i) / steps;
    const m = Math.min(Math.exp(0.00006 * t), top / 100);
    ctx.lineTo(px(t), py(m));
  }
  ctx.lineWidth = 3;
  ctx.strokeStyle = crashed ? "#ff6b6b" : "#3ddc97";
  ctx.stroke();
  ctx.lineTo(px(elapsed), py(1));
  ctx.closePath();
  ctx.fillStyle = crashed ? "rgba(255,107,107,0.12)" : "rgba(61,220,151,0.12)";
  ctx.fill();
}

function niceStep(span) {
  const raw = span / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (raw <= m * p) return m * p;
  return 10 * p;
}

function render() {
  const view = clock.view(performance.now());
  renderPhase(view);
  for (const slot of slots) renderAction(slot, view);
  draw(view);
  if (!state.firstFrame && state.phase !== null) {
    state.firstFrame = true;
    performance.mark("crashd:first-curve-frame");
  }
}

function frame() {
  render();
  requestAnimationFrame(frame);
}

// ---- connection ---------------------------------------------------------------------

function onStatus(status, info) {
  state.connected = status === "live";
  const text = {
    live: "Live",
    connecting: "Connecting…",
    reconnecting: "Connection lost: reconnecting…",
    unreachable: `The server is unreachable. Retrying${info && info.retryInMs ? ` in ${Math.ceil(info.retryInMs / 1000)} s` : ""}…`,
    expired: "Your session has expired: open the game again from your site.",
  }[status];
  ui.conn.textContent = text;
  ui.conn.dataset.state = status;
  // The outage, where the player looks: the game goes on at the server meanwhile.
  const offline = status !== "live" && (status !== "connecting" || state.phase !== null);
  ui.offline.hidden = !offline;
  ui.offline.textContent = offline
    ? `${text} Your bets stay in play; an auto cash-out still happens at its target.`
    : "";
  render();
}

function onRtt(ms, fromOrder) {
  if (fromOrder) return;
  ui.rtt.textContent = `${Math.max(1, Math.round(ms))} ms`;
  ui.rtt.dataset.ms = String(Math.round(ms));
}

async function target(refresh) {
  if (refresh) {
    const renewed = await session.renew();
    if (!renewed) return null;
  }
  const s = session.current;
  if (!s) return null;
  let url = s.wsUrl || (state.rules && state.rules.ws_url);
  if (!url) {
    url = (await post("/session/viewer", {})).ws_url;
    s.wsUrl = url;
  }
  return { url: reachable(url), token: s.token };
}

// A feed bound to every interface (0.0.0.0) advertises that address, which no browser
// can dial: dial the host this page came from instead, on the feed's port.
function reachable(url) {
  const u = new URL(url);
  if (u.hostname === "0.0.0.0" || u.hostname === "[::]") u.hostname = location.hostname;
  return u.toString();
}

function channels(welcome) {
  const list = ["live_multiplier", "round_updates"];
  const s = session.current;
  if (s && s.userId && s.scopes.includes("read:balance")) {
    list.push(`user:${welcome.partner_id}:${s.userId}`);
  }
  return list;
}

async function boot() {
  for (const slot of slots) slot.form.addEventListener("submit", (event) => onAction(slot, event));
  ui.sound.addEventListener("click", toggleSound);
  renderSound();
  new ResizeObserver(resize).observe(ui.canvas);
  resize();
  requestAnimationFrame(frame);
  document.addEventListener("keydown", (event) => {
    // Space or Enter outside a field presses the one action button (bet / cash out).
    const t = event.target;
    const typing = t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "BUTTON" || t.tagName === "A");
    const first = slots[0];
    if (!typing && event.key === " " && !first.action.disabled && !first.action.hidden) {
      event.preventDefault();
      first.form.requestSubmit();
    }
  });
  for (let attempt = 0; ; attempt += 1) {
    try {
      state.rules = await get("/game/rules");
      if (state.rules) {
        setDecimals(state.rules.currency_decimals ?? state.rules.minor_unit_digits ?? 2);
        if (state.rules.tick_hz) clock.delayMs = Math.ceil(1000 / state.rules.tick_hz) + 10;
        renderStakeHint();
      }
      await session.open();
      break;
    } catch (err) {
      const wait = Math.min(5000, 500 * 2 ** attempt);
      const why = err instanceof Unreachable ? "The server is unreachable" : `The server refused the page (${err.message})`;
      onStatus("unreachable", { retryInMs: wait });
      ui.phase.textContent = `${why}. Retrying in ${Math.ceil(wait / 1000)} s…`;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
  const s = session.current;
  if (s && s.balance) setBalance(s.balance);
  renderWho();
  feed = new Feed({
    getTarget: target,
    channels,
    on: { message: onMessage, status: onStatus, rtt: onRtt, refused: () => {} },
  });
  feed.start();
  booted = true;
  takeHandedToken(); // one that came while the page was starting
}

// A partner may hand this tab a player's token later, in the fragment: take it.
let booted = false;
window.addEventListener("hashchange", () => {
  if (booted) takeHandedToken();
});

async function takeHandedToken() {
  if (!new URLSearchParams(location.hash.slice(1)).get("token")) return;
  switchedUser(await session.open());
}

boot();

// For a console session (and nothing else): the page's state and its curve clock.
export { state, clock };

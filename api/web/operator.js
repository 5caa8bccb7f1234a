// The operator's page: the live round, the house and its exposure, RTP, bets per
// round, subscribers, keys, recent PSP events, the audit log, pause/resume/void. It
// speaks only the operator endpoints (/api/v1/admin/…, docs/operations.md) with the
// operator token from `crashd admin page` (/operator#token=ft_…: the fragment never
// reaches a server; the page moves it to sessionStorage and clears the address bar).

import { API, ApiError } from "/assets/api.js";

const STORE = "crashd.operator";
const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const rtpHistory = [];

function token() {
  const hash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (hash) {
    sessionStorage.setItem(STORE, hash);
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(STORE);
}

const TOKEN = token();
const money = (v) => (v === null || v === undefined ? "none" : (v / 100).toLocaleString("en", { minimumFractionDigits: 2 }));
const pct = (v) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(2)}%`);
const text = (id, value) => { $(id).textContent = value; };

function cell(row, value) {
  const td = document.createElement("td");
  td.textContent = value;
  row.appendChild(td);
  return td;
}

function connection(state, message) {
  const el = $("conn");
  el.dataset.state = state;
  el.textContent = message;
}

// Operator writes carry an Idempotency-Key (each click is one action, recorded once).
async function request(method, path, body) {
  const headers = { Accept: "application/json", Authorization: `Bearer ${TOKEN}` };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    headers["Idempotency-Key"] = crypto.randomUUID();
  }
  const response = await fetch(API + path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-cache",
    credentials: "omit",
  });
  const data = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

const get = (path) => request("GET", path);
const write = (path, body) => request("POST", path, body);

function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function drawRtp(rtp) {
  if (rtp.observed !== null) {
    rtpHistory.push({ observed: rtp.observed, band: rtp.band });
    if (rtpHistory.length > 120) rtpHistory.shift();
  }
  const chart = $("rtp-chart");
  chart.replaceChildren();
  if (!rtpHistory.length) return;
  const values = rtpHistory.flatMap((p) => [p.observed, ...(p.band || [])]).concat([0.99]);
  const lo = Math.min(...values) - 0.005;
  const hi = Math.max(...values) + 0.005;
  const y = (v) => 80 - ((v - lo) / (hi - lo)) * 80;
  const step = 300 / Math.max(1, rtpHistory.length - 1);
  const last = rtpHistory[rtpHistory.length - 1];
  if (last.band) {
    chart.appendChild(svg("rect", { class: "band", x: 0, width: 300, y: y(last.band[1]), height: Math.max(1, y(last.band[0]) - y(last.band[1])) }));
  }
  chart.appendChild(svg("line", { class: "theory", x1: 0, x2: 300, y1: y(0.99), y2: y(0.99) }));
  const points = rtpHistory.map((p, i) => `${(i * step).toFixed(1)},${y(p.observed).toFixed(1)}`).join(" ");
  chart.appendChild(svg("polyline", { class: "line", points }));
}

function drawBets(rounds) {
  const chart = $("bets-chart");
  chart.replaceChildren();
  const list = rounds.slice(0, 30).reverse();
  const top = Math.max(1, ...list.map((r) => r.bets));
  const width = 300 / Math.max(1, list.length);
  list.forEach((r, i) => {
    const h = (r.bets / top) * 76;
    const bar = svg("rect", { class: "bar", x: i * width + 1, width: Math.max(1, width - 2), y: 80 - h, height: h });
    const title = svg("title", {});
    title.textContent = `round ${r.round_id}: ${r.bets} bets`;
    bar.appendChild(title);
    chart.appendChild(bar);
  });
  chart.dataset.rounds = String(list.length);
}

function showState(s) {
  text("env", `(${s.environment})`);
  const r = s.round || {};
  text("round-id", r.round_id ?? "–");
  text("round-phase", s.paused ? `${r.status} — paused` : r.status ?? "–");
  text("round-mult", r.multiplier ? `${(r.multiplier / 100).toFixed(2)}x` : "–");
  text("round-bets", r.bets ?? "–");
  text("round-stake", money(r.stake));
  text("subscribers", s.feed.subscribers);
  text("house-balance", money(s.house.balance));
  text("house-funded", money(s.house.funded));
  text("house-profit", money(s.house.profit));
  text("exposure", money(s.house.exposure));
  text("cap", money(s.house.round_max_profit));
  text("next-cap", money(s.house.next_round_max_profit));
  const cap = s.house.round_max_profit;
  const share = cap ? Math.min(100, (100 * s.house.exposure) / (cap + (r.stake || 0))) : 0;
  $("exposure-fill").setAttribute("width", String(share));
  const chain = s.chain;
  text("chain", chain ? `${chain.current.chain}: ${chain.games_left.toLocaleString("en")} games left` : "–");
  const rtp = s.rtp;
  text("rtp-observed", pct(rtp.observed));
  text("rtp-band", rtp.band ? `${pct(rtp.band[0])} – ${pct(rtp.band[1])}` : "–");
  text("rtp-theory", pct(rtp.theoretical));
  text("rtp-window", `last ${rtp.window.rounds} rounds, ${rtp.window.bets} bets, stake ${money(rtp.window.stake)}`);
  drawRtp(rtp);
  const problems = [];
  if (s.paused) problems.push("The game is paused: no round opens until you resume.");
  if (rtp.alert) problems.push("RTP alert: the observed RTP is outside its band.");
  if (chain && chain.low) problems.push("The hash chain runs low: publish the next one (crashd admin chain next).");
  $("banner").hidden = !problems.length;
  text("banner", problems.join(" "));
  $("pause").disabled = s.paused;
  $("resume").disabled = !s.paused;
  $("void").disabled = !(r.status === "betting" || r.status === "running");
  const limits = $("limits");
  limits.replaceChildren();
  for (const [name, value] of Object.entries(s.limits)) {
    const row = document.createElement("tr");
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = name;
    row.appendChild(th);
    cell(row, String(value));
    limits.appendChild(row);
  }
}

function showKeys(keys) {
  const body = $("keys");
  body.replaceChildren();
  for (const k of keys) {
    const row = document.createElement("tr");
    row.dataset.key = k.id;
    cell(row, `${k.id} (${k.prefix}…)`);
    cell(row, k.partner_id);
    cell(row, k.scopes.join(", "));
    cell(row, k.label);
    cell(row, k.revoked_at ? `revoked ${k.revoked_at}` : "active");
    const td = cell(row, "");
    if (!k.revoked_at) {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Revoke";
      button.setAttribute("aria-label", `Revoke ${k.id}`);
      button.addEventListener("click", () => act(`/admin/keys/${k.id}/revoke`, `Revoke ${k.id}?`));
      td.appendChild(button);
    }
    body.appendChild(row);
  }
}

function showPsp(events) {
  const body = $("psp");
  body.replaceChildren();
  for (const e of events) {
    const row = document.createElement("tr");
    cell(row, e.event_id);
    cell(row, e.kind);
    cell(row, money(e.amount));
    cell(row, e.ok ? "posted" : e.code);
    cell(row, e.at);
    body.appendChild(row);
  }
}

function showAudit(entries) {
  const body = $("audit");
  body.replaceChildren();
  for (const e of entries) {
    const row = document.createElement("tr");
    row.dataset.action = e.action;
    cell(row, e.seq);
    cell(row, new Date(e.ts).toISOString());
    cell(row, e.actor);
    cell(row, e.action);
    cell(row, `${JSON.stringify(e.before)} → ${JSON.stringify(e.after)}`);
    cell(row, e.note);
    body.appendChild(row);
  }
}

async function act(path, question) {
  if (question && !confirm(question)) return;
  try {
    const answer = await write(path, { note: "from the operator page" });
    text("action-result", `Done (audit entry ${answer.audit_seq ?? "–"}).`);
  } catch (err) {
    text("action-result", err instanceof ApiError ? `Refused: ${err.code}: ${err.message}` : String(err));
  }
  await refresh(true);
}

let slow = 0;
async function refresh(all = false) {
  try {
    showState(await get("/admin/state"));
    if (all || slow++ % 5 === 0) {
      const [keys, psp, audit, rounds] = await Promise.all([
        get("/admin/keys"),
        get("/admin/psp-events"),
        get("/admin/audit?limit=30"),
        get("/game/rounds?limit=30"),
      ]);
      showKeys(keys.keys);
      showPsp(psp.events);
      showAudit(audit.entries);
      drawBets(rounds.rounds);
    }
    connection("live", "Live");
  } catch (err) {
    if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
      connection("offline", "Not signed in");
      $("login").hidden = false;
      return false;
    }
    connection("offline", "Server unreachable: retrying");
  }
  return true;
}

$("pause").addEventListener("click", () => act("/admin/pause"));
$("resume").addEventListener("click", () => act("/admin/resume"));
$("void").addEventListener("click", () => act("/admin/void", "Void the current round? Every open bet is refunded."));

async function loop() {
  if (!TOKEN) {
    $("login").hidden = false;
    connection("offline", "Not signed in");
    return;
  }
  if (!(await refresh(true))) return;
  setInterval(refresh, 1000);
}

loop();

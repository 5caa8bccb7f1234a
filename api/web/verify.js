// The verifier (/verify) and a round's page (/rounds/{id}): the crash point and the
// chain link to the published terminating hash, recomputed in this browser.
//
// A round's page also offers its signed transcript (showTranscript) with the command
// that audits it.

import { API, Session, get, ApiError, Unreachable } from "./api.js";
import { crashPoint, chainPosition, FairnessError, parseHash } from "./fairness.js";
import { formatMultiplier } from "./curve.js";
import { el, formatMoney, setDecimals } from "./format.js";
import { auditRound, importKeys } from "./audit.js";

const $ = (id) => document.getElementById(id);
const ui = {
  title: $("title"),
  form: $("verify-form"),
  hash: $("hash"),
  salt: $("salt"),
  button: $("verify"),
  verdict: $("verdict"),
  body: $("verdict-body"),
  chain: $("chain"),
  round: $("round"),
  facts: $("round-facts"),
  bets: $("round-bets"),
  transcript: $("transcript"),
  terminating: $("terminating"),
  command: $("command"),
  encodingRule: $("encoding-rule"),
  audit: $("audit"),
  auditBody: $("audit-body"),
  auditFile: $("transcript-file"),
};

const AUTO_WALK = 200_000; // longer walks start on request (they take a while)

let fairness = null;
let round = null; // the server's round, on /rounds/{id}
let walk = null; // AbortController of a running chain walk
const x = (h) => `${formatMultiplier(h)}x`;

function roundIdFromPath() {
  const m = /^\/rounds\/(\d+)$/.exec(location.pathname);
  return m ? Number(m[1]) : null;
}

function fact(term, value) {
  return [el("dt", { text: term }), el("dd", {}, value)];
}

async function verify() {
  if (walk) walk.abort();
  const hash = ui.hash.value.trim().toLowerCase();
  const salt = ui.salt.value;
  ui.verdict.hidden = false;
  ui.chain.replaceChildren();
  ui.command.textContent = `crashd verify --hash ${hash || "GAME_HASH"} --salt ${salt || "SALT"}`;
  let point;
  try {
    parseHash(hash, "the game hash");
    point = await crashPoint(hash, salt);
  } catch (err) {
    ui.verdict.dataset.ok = "false";
    ui.hash.setAttribute("aria-invalid", "true");
    ui.body.replaceChildren(el("p", { class: "bad", id: "error", text: err.message }));
    return;
  }
  ui.hash.removeAttribute("aria-invalid");
  // On a round's page, the hash in the form is checked against that round's claim.
  const fromServer = round ? round.crash_point : null;
  const parts = [
    el("p", {}, "Crash point computed here: ", el("strong", { id: "computed", "data-value": String(point), text: x(point) })),
  ];
  let ok = true;
  if (fromServer !== null && fromServer !== undefined) {
    const agrees = fromServer === point;
    ok = agrees;
    parts.push(
      el(
        "p",
        { id: "agreement", class: agrees ? "ok" : "bad", "data-agrees": String(agrees) },
        agrees
          ? `Matches the server's crash point for round ${round.round_id}: ${x(fromServer)}.`
          : `Does NOT match the server's crash point for round ${round.round_id} (${x(fromServer)}): this hash is not that round's.`,
      ),
    );
  }
  ui.verdict.dataset.ok = String(ok);
  ui.body.replaceChildren(...parts);
  await checkChain(hash);
}

async function checkChain(hash) {
  if (!fairness) return;
  const expected = round && hash === round.game_hash ? round.round_id : null;
  const maxSteps = expected ?? fairness.games;
  const controller = new AbortController();
  walk = controller;
  const status = el("p", { id: "chain-status", text: "Checking the chain…" });
  const progress = el("progress", { max: String(maxSteps), value: "0", "aria-label": "Chain check progress" });
  const stop = el("button", { type: "button", class: "button", text: "Stop" });
  stop.addEventListener("click", () => controller.abort());
  const run = async () => {
    ui.chain.replaceChildren(status, progress, stop);
    let position;
    try {
      position = await chainPosition(hash, fairness.terminating_hash, maxSteps, {
        encoding: fairness.chain_encoding,
        signal: controller.signal,
        onProgress: (step) => {
          progress.value = step;
          status.textContent = `Checking the chain… ${step.toLocaleString("en")} of up to ${maxSteps.toLocaleString("en")} steps`;
        },
      });
    } catch (err) {
      if (err instanceof FairnessError) {
        ui.chain.replaceChildren(el("p", { id: "chain-status", class: "bad", text: `Chain check ${err.message}.` }));
        return;
      }
      throw err;
    }
    const linked = position !== null && (expected === null || position === expected);
    ui.chain.replaceChildren(
      el(
        "p",
        { id: "chain-status", class: linked ? "ok" : "bad", "data-linked": String(linked), "data-position": String(position ?? "") },
        linked
          ? `Linked: hashed ${position === 1 ? "once" : `${position.toLocaleString("en")} times`} it gives the published terminating hash, so it is game ${position.toLocaleString("en")} of the chain, fixed before the first game.`
          : position !== null
            ? `Linked at position ${position}, but this is round ${expected}: not this round's hash.`
            : `Not linked: within ${maxSteps.toLocaleString("en")} steps this hash never reaches the published terminating hash. It is not part of the committed chain.`,
      ),
    );
    if (!linked) ui.verdict.dataset.ok = "false";
  };
  if (maxSteps <= AUTO_WALK) {
    await run();
  } else {
    const start = el("button", { type: "button", class: "button", id: "walk", text: `Check the chain (up to ${maxSteps.toLocaleString("en")} hashes)` });
    start.addEventListener("click", run);
    ui.chain.replaceChildren(el("p", { text: "Checking the link to the commitment takes one hash per game." }), start);
  }
}

function showRound(r) {
  ui.round.hidden = false;
  ui.title.textContent = `Round ${r.round_id}`;
  document.title = `crashd — round ${r.round_id}`;
  ui.facts.replaceChildren(
    ...fact("Status", r.status === "voided" ? `voided (${r.void_reason || "no reason given"}): every bet refunded` : "crashed"),
    ...fact("Crash point (server)", r.crash_point !== null ? x(r.crash_point) : "–"),
    ...fact("Game hash", el("code", { text: r.game_hash || "–" })),
    ...fact("Started", r.started_at || "–"),
    ...fact("Ended", r.ended_at || "–"),
    ...fact("Bets", String(r.bets ?? 0)),
    ...fact("Total staked", formatMoney(r.total_stake ?? 0)),
    ...fact("Total paid out", formatMoney(r.total_payout ?? 0)),
  );
}

// The round's bets, from the ledger, a page at a time in the order placed (other
// partners' players anonymous): GET /game/rounds/{id}/bets.
const BETS_PAGE = 100;

async function showBets(roundId, token, offset = 0) {
  const page = await get(`/game/rounds/${roundId}/bets?offset=${offset}&limit=${BETS_PAGE}`, { token });
  let body = ui.bets.querySelector("tbody");
  if (!body) {
    if (!page.bet_count) {
      ui.bets.replaceChildren(el("p", { text: "No bets were placed in this round." }));
      return;
    }
    body = el("tbody", {});
    const head = el(
      "tr",
      {},
      ...["Player", "Stake", "Cashed out @", "Paid"].map((t) => el("th", { scope: "col", text: t })),
    );
    ui.bets.replaceChildren(
      el(
        "div",
        { class: "table-wrap" },
        el("table", { id: "bets-table" }, el("caption", { text: `The round's ${page.bet_count} bets` }), el("thead", {}, head), body),
      ),
    );
  }
  for (const b of page.bets) {
    const outcome =
      b.status === "won" ? x(b.cashed_out_at) : b.status === "refunded" ? "refunded" : b.status === "lost" ? "busted" : "–";
    body.append(
      el(
        "tr",
        { "data-status": b.status },
        el("td", { text: b.user_id ?? "–" }),
        el("td", { text: formatMoney(b.stake) }),
        el("td", { text: outcome }),
        el("td", { text: b.payout ? formatMoney(b.payout) : "–" }),
      ),
    );
  }
  ui.bets.querySelector("#more-bets")?.remove();
  if (page.next_offset !== null) {
    const more = el("button", { type: "button", class: "button", id: "more-bets", text: "Show more bets" });
    more.addEventListener("click", () => showBets(roundId, token, page.next_offset));
    ui.bets.append(more);
  }
}

// -- the settlement check: crashd audit's checks of one transcript, in this browser ---------

const KEYS_PATH = "/.well-known/crashd-keys";
let signingKeys = null; // the published key set, imported once

async function publishedKeys() {
  if (signingKeys === null) {
    const response = await fetch(KEYS_PATH, { credentials: "omit" });
    if (!response.ok) throw new Error(`the key set could not be read (HTTP ${response.status})`);
    signingKeys = await importKeys(await response.json());
  }
  return signingKeys;
}

// The transcript of round `roundId` as the server serves it, or null.
async function fetchTranscript(roundId, token) {
  try {
    const response = await fetch(`${API}/game/rounds/${roundId}/transcript`, {
      headers: { Authorization: `Bearer ${token}` },
      credentials: "omit",
    });
    return response.ok ? await response.json() : null;
  } catch {
    return null;
  }
}

const VERDICT_TEXT = { pass: "Pass", fail: "FAIL", skipped: "Not checked" };

// Run every check on transcript `t` (the round before's fetched for the chain link) and
// show each with its verdict and why. `source` says where the transcript came from.
async function auditTranscript(t, token, source) {
  ui.audit.hidden = false;
  ui.audit.dataset.ok = "";
  ui.auditBody.replaceChildren(el("p", { id: "audit-status", text: "Checking the transcript…" }));
  let result;
  try {
    const keys = await publishedKeys();
    const rid = t && Number.isSafeInteger(t.round_id) ? t.round_id : null;
    const previous = rid !== null && rid > 1 && token ? await fetchTranscript(rid - 1, token) : null;
    result = await auditRound(t, keys, previous);
  } catch (err) {
    ui.audit.dataset.ok = "false";
    ui.auditBody.replaceChildren(el("p", { id: "audit-status", class: "bad", text: `The check could not run: ${err.message}` }));
    return;
  }
  const items = result.checks.map((c) =>
    el(
      "li",
      { "data-check": c.check, "data-verdict": c.verdict },
      el("span", { class: c.verdict === "pass" ? "ok" : c.verdict === "fail" ? "bad" : "muted", text: `${VERDICT_TEXT[c.verdict]}: ` }),
      el("strong", { text: c.what }),
      el("span", { class: "why", text: ` — ${c.why.join("; ")}` }),
    ),
  );
  const failed = result.checks.filter((c) => c.verdict === "fail").length;
  const rid = t && t.round_id;
  ui.audit.dataset.ok = String(result.ok);
  ui.auditBody.replaceChildren(
    el(
      "p",
      { id: "audit-status", class: result.ok ? "ok" : "bad", "data-ok": String(result.ok) },
      result.ok
        ? `The ${source} of round ${rid} checks out: signed by the server, and settled by the rules (computed here, not by the server).`
        : `The ${source} of round ${rid ?? "?"} does NOT check out: ${failed} check${failed === 1 ? "" : "s"} failed.`,
    ),
    el("ul", { id: "audit-checks", class: "checks" }, ...items),
  );
}

// The round's signed transcript (docs/fairness.md): every bet, command and outcome,
// chained to the round before. The page offers its exact bytes, the command that
// checks them, and checks them itself (auditTranscript).
async function showTranscript(roundId, token) {
  const url = `${API}/game/rounds/${roundId}/transcript`;
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: `Bearer ${token}` }, credentials: "omit" });
  } catch (err) {
    ui.transcript.textContent = "The round's transcript could not be read (the server is unreachable).";
    return;
  }
  const bytes = new Uint8Array(await response.arrayBuffer());
  if (!response.ok) {
    let code = null;
    try {
      code = JSON.parse(new TextDecoder().decode(bytes)).code;
    } catch {
      // not a problem document
    }
    ui.transcript.textContent =
      code === "transcript_unavailable"
        ? "This round was settled before the server kept signed transcripts."
        : `The round's transcript could not be read (${code || `HTTP ${response.status}`}).`;
    return;
  }
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  const hex = [...digest].map((b) => b.toString(16).padStart(2, "0")).join("");
  const name = `round-${roundId}.transcript.json`;
  const link = el("a", { href: URL.createObjectURL(new Blob([bytes], { type: "application/json" })), download: name, id: "transcript-download", text: "download it" });
  ui.transcript.replaceChildren(
    el("p", {}, `This round has a signed transcript (${bytes.length.toLocaleString("en")} bytes, SHA-256 `, el("code", { id: "transcript-sha256", text: hex }), "): ", link, "."),
    el("p", {}, "The checks below are made by this page; the same from a terminal: ", el("code", { text: `crashd audit ${name} --keys ${location.origin}${KEYS_PATH}` }), "."),
  );
  let doc;
  try {
    doc = JSON.parse(new TextDecoder().decode(bytes));
  } catch (err) {
    doc = null;
  }
  await auditTranscript(doc, token, "signed transcript");
}

// A transcript file the visitor has (downloaded here, exported by crashd audit export,
// or handed over by anyone): checked the same way, against this server's keys.
async function checkFile(file, token) {
  let doc = null;
  try {
    doc = JSON.parse(await file.text());
  } catch {
    // not JSON: the checks say so (not a JSON object)
  }
  await auditTranscript(doc, token, `file ${file.name}`);
}

async function boot() {
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    verify();
  });
  try {
    fairness = await get("/fairness");
    ui.terminating.textContent = fairness.terminating_hash;
    if (fairness.chain_encoding === "raw") ui.encodingRule.textContent = "(SHA-256 of its 32 bytes)";
    if (!ui.salt.value && fairness.salt) ui.salt.value = fairness.salt;
  } catch (err) {
    ui.verdict.hidden = false;
    ui.body.replaceChildren(el("p", { class: "bad", text: `Could not read the published commitment: ${err.message}` }));
  }
  try {
    const rules = await get("/game/rules");
    setDecimals(rules.currency_decimals ?? rules.minor_unit_digits ?? 2);
  } catch {
    // two decimals
  }
  const params = new URLSearchParams(location.search);
  if (params.get("hash")) ui.hash.value = params.get("hash");
  if (params.get("salt")) ui.salt.value = params.get("salt");
  let viewer = null; // a viewer token, once one is needed
  const token = async () => {
    if (viewer === null) viewer = (await new Session().open()).token;
    return viewer;
  };
  ui.auditFile.addEventListener("change", async () => {
    const file = ui.auditFile.files && ui.auditFile.files[0];
    if (!file) return;
    let t = null;
    try {
      t = await token();
    } catch {
      // without a token the chain link is not checked; everything else still is
    }
    await checkFile(file, t);
  });
  const id = roundIdFromPath();
  if (id !== null) {
    try {
      const s = { token: await token() };
      round = await get(`/game/rounds/${id}`, { token: s.token });
      showRound(round);
      showTranscript(id, s.token);
      showBets(id, s.token).catch((err) => {
        ui.bets.replaceChildren(el("p", { text: `Could not read the round's bets: ${err.message}` }));
      });
      if (round.game_hash && !params.get("hash")) ui.hash.value = round.game_hash;
      if (round.salt) ui.salt.value = round.salt;
    } catch (err) {
      ui.verdict.hidden = false;
      const why =
        err instanceof ApiError && err.code === "round_not_finished"
          ? `Round ${id} is still being played: its hash is revealed when it crashes.`
          : err instanceof ApiError && err.code === "unknown_round"
            ? `Round ${id} has not been played.`
            : err instanceof Unreachable
              ? "The server is unreachable."
              : `Could not read round ${id}: ${err.message}`;
      ui.body.replaceChildren(el("p", { class: "bad", id: "error", text: why }));
      return;
    }
  }
  if (ui.hash.value && ui.salt.value) await verify();
}

boot();

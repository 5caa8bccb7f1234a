// The rules page, generated from the live configuration (GET /api/v1/game/rules): the
// figures are this server's, the sentences the engine's rules (README "Cashout rules",
// docs/round-engine.md).

import { get } from "./api.js";
import { formatMultiplier } from "./curve.js";
import { el, formatMoney, setDecimals } from "./format.js";

const x = (h) => `${formatMultiplier(h)}x`;
const seconds = (ms) => `${(ms / 1000).toLocaleString("en", { maximumFractionDigits: 2 })} s`;

function section(id, title, ...children) {
  return el("section", { id, "aria-labelledby": `${id}-title` }, el("h2", { id: `${id}-title`, text: title }), ...children);
}

const p = (...parts) => el("p", {}, ...parts);
const li = (...parts) => el("li", {}, ...parts);
const strong = (text, id) => el("strong", { text, id });

function render(r) {
  const edge = r.house_edge_percent ?? 1;
  const rtp = r.rtp_percent ?? 100 - edge;
  const cap = r.max_profit === null || r.max_profit === undefined ? null : r.max_profit;
  const maxWin = r.max_win === null || r.max_win === undefined ? null : r.max_win;
  const share = r.max_profit_bankroll_bp ?? null;
  const lowestTarget = r.min_auto_cashout ?? 101;
  return [
    section(
      "game",
      "The game",
      p(
        "A round opens for bets for ",
        strong(seconds(r.betting_ms), "betting-time"),
        ". Then a multiplier rises from 1.00x along a fixed curve, multiplier = floor(100 × e^(0.00006 × ms)) hundredths (2.00x after 11.6 s, 10x after 38.4 s), until it crashes at a point fixed before the round and provably fair (",
        el("a", { href: "/verify", text: "verify any round" }),
        "). Cash out before the crash to win stake × multiplier; a bet still in at the crash loses its stake. ",
        `The next round opens ${seconds(r.pause_ms)} after a crash. The multiplier is sent ${r.tick_hz} times a second.`,
      ),
      p(
        "Return to player: ",
        strong(`${rtp}%`, "rtp"),
        ` (house edge ${edge}%): the chance that a round reaches a multiplier m is 0.99 / m, so 1 round in about 50 crashes at once, at 1.00x.`,
        r.max_multiplier ? ` The multiplier never exceeds ${x(r.max_multiplier)}.` : "",
      ),
    ),
    section(
      "stakes",
      "Stakes",
      el(
        "ul",
        {},
        li("Smallest stake: ", strong(formatMoney(r.min_stake), "min-stake"), "."),
        li("Largest stake: ", strong(formatMoney(r.max_stake), "max-stake"), "."),
        li(`At most ${r.max_bets_per_user ?? 1} bet${(r.max_bets_per_user ?? 1) === 1 ? "" : "s"} per player per round.`),
        maxWin === null
          ? li(strong("No cap", "max-win"), " on what one bet can win.")
          : li(
              "Largest win per bet: a profit of ",
              strong(formatMoney(maxWin), "max-win"),
              ". A bet still in when its profit would exceed it is cashed out at the largest multiplier within it, as if that were its auto cash-out target (a lower target plays as usual).",
            ),
        li(
          "A bet placed while a round is running (or in the pause after a crash) plays in the next round. A bet cannot be cancelled once the server has accepted it.",
        ),
        r.currency || r.amounts
          ? li(String(r.currency || r.amounts))
          : li("Amounts are shown with two decimals of the currency’s unit; the server counts whole minor units."),
      ),
    ),
    section(
      "max-profit",
      "Maximum profit per round",
      cap === null
        ? p(strong("No cap", "max-profit-value"), " is set on this server: every cash-out is paid in full.")
        : p(
            "The players’ total profit in one round is capped at ",
            strong(formatMoney(cap), "max-profit-value"),
            share === null
              ? ""
              : ` (${(share / 100).toLocaleString("en", { maximumFractionDigits: 2 })}% of the house bankroll, set again every round)`,
            ". When the open bets could win more than what is left of the cap, everyone still in is cashed out at that point (the “force point”), paid at the multiplier reached: no bet loses because of the cap.",
          ),
    ),
    section(
      "cashout",
      "Cashing out",
      el(
        "ul",
        {},
        li(
          strong("A manual cash-out is priced by the server’s clock at the moment the server handles it"),
          ", never by what your screen showed. It wins if the round has not crashed at that moment, and pays the multiplier of that moment, so you are paid at least what you saw when you clicked.",
        ),
        li(
          "An auto cash-out at a target A (at least ",
          x(lowestTarget),
          ") pays exactly A if the round reaches A; ",
          strong("a target equal to the crash point wins"),
          ". It can be set or removed only while betting is open (or while the bet is queued for the next round).",
        ),
        li(
          strong("The tie between a cash-out and the crash"),
          ": a manual cash-out handled at the crash millisecond or later is too late and the bet loses; everything due at the same multiplier is settled cash-outs first, so an auto target (or a max-win cap) equal to the crash point still wins.",
        ),
        li("Every cash-out gets one definitive answer: cashed out at X with the payout, or too late (crashed at Y). Never both, never none."),
        li("Payout = stake × multiplier, rounded down to the minor unit."),
      ),
    ),
    section(
      "voids",
      "Voided rounds and restarts",
      p(
        "If a round is voided (by the operator, or because the server stopped or restarted during it), ",
        strong("every bet still open in it is refunded"),
        ", exactly once. Cash-outs already paid in that round stay paid. A voided round’s game hash is revealed with it, so it can still be verified.",
      ),
    ),
    section(
      "connection",
      "If your connection drops",
      p(
        "Your bet stays in the round: the server does not need your browser. An auto cash-out still happens at its target. A manual cash-out cannot reach the server while you are offline; the page reconnects by itself, picks the game up where it left off, and sends an unanswered cash-out again (it is never done twice). If the round crashes meanwhile, the bet loses.",
      ),
    ),
    section(
      "latency",
      "Latency",
      p(
        strong("A slow network can cost a manual cash-out"),
        ": your click travels to the server, and the round may crash before it arrives. ",
        strong("An auto cash-out does not depend on the network"),
        ": the server executes it at its target on its own clock. The game page shows your measured round-trip time to the server under the bet button. The curve on screen runs a little behind the server (one tick and your network’s delay) so that it never shows a multiplier the server has not reached.",
      ),
    ),
    section(
      "fairness",
      "Provable fairness",
      p(
        "Every crash point comes from a hash chain committed before the first game and a public salt; anyone can recompute it. ",
        el("a", { href: "/verify", text: "The verifier" }),
        " does it in your browser; `crashd verify` does it in a terminal.",
      ),
    ),
  ];
}

async function boot() {
  const source = document.getElementById("source");
  const box = document.getElementById("rules");
  try {
    const rules = await get("/game/rules");
    setDecimals(rules.currency_decimals ?? rules.minor_unit_digits ?? 2);
    box.replaceChildren(...render(rules));
    source.textContent = `Read from this ${rules.environment === "production" ? "" : `${rules.environment || "sandbox"} `}server’s live configuration.`;
    box.dataset.loaded = "true";
    if (location.hash) document.getElementById(location.hash.slice(1))?.scrollIntoView();
  } catch (err) {
    source.textContent = `Could not read the rules from the server: ${err.message}`;
    source.className = "bad";
  }
}

boot();

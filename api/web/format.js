// Money and text helpers shared by the pages. Money is integer minor units everywhere
// (the API's rule); it becomes a decimal string only on screen, and a typed amount is
// parsed back to minor units as text, never through a float.

import { formatMultiplier } from "./curve.js";

export let DECIMALS = 2;

export function setDecimals(n) {
  if (Number.isInteger(n) && n >= 0 && n <= 8) DECIMALS = n;
}

const group = (digits) => digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");

// 123456 -> "1,234.56" (with DECIMALS = 2)
export function formatMoney(minor, { sign = false } = {}) {
  if (minor === null || minor === undefined) return "–";
  const negative = minor < 0;
  const digits = String(Math.abs(Math.trunc(minor))).padStart(DECIMALS + 1, "0");
  const whole = DECIMALS ? digits.slice(0, -DECIMALS) : digits;
  const frac = DECIMALS ? `.${digits.slice(-DECIMALS)}` : "";
  const prefix = negative ? "−" : sign ? "+" : "";
  return `${prefix}${group(whole)}${frac}`;
}

// "12.5" -> 1250; null for anything that is not a plain non-negative amount.
export function parseMoney(text) {
  const t = String(text).trim().replace(/,/g, "");
  const match = new RegExp(`^(\\d+)(?:\\.(\\d{0,${DECIMALS}}))?$`).exec(t);
  if (!match || (DECIMALS === 0 && t.includes("."))) return null;
  const whole = match[1];
  const frac = (match[2] || "").padEnd(DECIMALS, "0");
  const value = Number(whole + frac);
  return Number.isSafeInteger(value) ? value : null;
}

// "2" / "2.5" / "2.50x" -> 200 / 250 / 250 (hundredths); null if not a multiplier.
export function parseMultiplier(text) {
  const t = String(text).trim().replace(/x$/i, "");
  const match = /^(\d{1,9})(?:\.(\d{0,2}))?$/.exec(t);
  if (!match) return null;
  return Number(match[1]) * 100 + Number((match[2] || "").padEnd(2, "0"));
}

export const x = (hundredths) => `${formatMultiplier(hundredths)}x`;

// A crash point's band, for the history's colours (and its text, never colour alone).
export function band(hundredths) {
  if (hundredths < 200) return "low";
  if (hundredths < 1000) return "mid";
  return "high";
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function shortHash(hash) {
  return hash ? `${hash.slice(0, 10)}…${hash.slice(-6)}` : "";
}

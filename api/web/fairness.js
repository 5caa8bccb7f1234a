// Provable fairness, recomputed in the browser with WebCrypto (README "Provable
// fairness"; the Bustabit v2 scheme), independently of the server:
//
//   r = int(HMAC_SHA256(key = salt as ASCII, msg = the 32 raw bytes of game_hash)
//           .hexdigest()[:13], 16)
//   X = r / 2**52
//   crash = max(1.00, floor(99 / (1 - X)) / 100)     (IEEE doubles, as written)
//
// and the chain: h[i-1] = sha256(lowercase hex of h[i]) ("hex" encoding) or
// sha256(the 32 bytes of h[i]) ("raw"); game n's hash hashed n times is the terminating
// hash that GET /api/v1/fairness publishes.

const subtle = globalThis.crypto && globalThis.crypto.subtle;
const encoder = new TextEncoder();

export class FairnessError extends Error {}

export function parseHash(value, what = "hash") {
  const text = String(value).trim();
  if (text.length !== 64) {
    throw new FairnessError(`${what} must be 64 hex digits, got ${text.length} characters`);
  }
  if (!/^[0-9a-fA-F]{64}$/.test(text)) throw new FairnessError(`${what} is not hexadecimal`);
  const bytes = new Uint8Array(32);
  for (let i = 0; i < 32; i += 1) bytes[i] = parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

export function toHex(bytes) {
  let out = "";
  for (const b of bytes) out += HEX[b];
  return out;
}

function saltBytes(salt) {
  // eslint-disable-next-line no-control-regex
  if (!/^[\x00-\x7f]*$/.test(salt)) throw new FairnessError("the salt must be ASCII text");
  return encoder.encode(salt);
}

function requireCrypto() {
  if (!subtle) {
    throw new FairnessError(
      "this browser offers no WebCrypto here (it needs https:// or http://localhost)",
    );
  }
}

const keys = new Map();

async function hmacKey(salt) {
  let key = keys.get(salt);
  if (key === undefined) {
    // WebCrypto refuses an empty HMAC key; HMAC pads a short key with zero bytes to the
    // block size, so 64 zero bytes are the same key as none at all.
    const raw = salt === "" ? new Uint8Array(64) : saltBytes(salt);
    key = await subtle.importKey("raw", raw, { name: "HMAC", hash: "SHA-256" }, false, [
      "sign",
    ]);
    keys.set(salt, key);
  }
  return key;
}

// The crash point in hundredths (374 is 3.74x).
export async function crashPoint(gameHash, salt) {
  requireCrypto();
  const message = parseHash(gameHash, "game hash");
  const mac = new Uint8Array(await subtle.sign("HMAC", await hmacKey(salt), message));
  const r = parseInt(toHex(mac).slice(0, 13), 16); // 52 bits: exact in a double
  const x = r / 2 ** 52;
  return Math.max(100, Math.floor(99 / (1 - x)));
}

// One step along the chain, towards the terminating hash.
export async function nextLink(link, encoding = "hex") {
  const input = encoding === "raw" ? link : encoder.encode(toHex(link));
  return new Uint8Array(await subtle.digest("SHA-256", input));
}

function same(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return false;
  return true;
}

// Steps from `gameHash` to `terminatingHash` (its game number), or null if not within
// `maxSteps`. `onProgress(step)` is called every `every` steps, and the walk yields to
// the page then (so a long walk keeps the page responsive); `signal` aborts it.
export async function chainPosition(
  gameHash,
  terminatingHash,
  maxSteps,
  { encoding = "hex", onProgress = null, every = 2000, signal = null } = {},
) {
  requireCrypto();
  let link = parseHash(gameHash, "game hash");
  const target = parseHash(terminatingHash, "terminating hash");
  for (let step = 0; step <= maxSteps; step += 1) {
    if (same(link, target)) return step;
    if (step === maxSteps) break;
    if (step > 0 && step % every === 0) {
      if (signal && signal.aborted) throw new FairnessError("stopped");
      if (onProgress) onProgress(step);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    link = await nextLink(link, encoding);
  }
  return null;
}

// The hash one step further along the chain (the previous game's hash), as hex.
export async function previousGameHash(gameHash, encoding = "hex") {
  requireCrypto();
  return toHex(await nextLink(parseHash(gameHash, "game hash"), encoding));
}

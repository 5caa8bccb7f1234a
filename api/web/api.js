// The public REST API, as a partner's page calls it (docs/api.md), and the page's
// session: who the page plays (or watches) as, and with which feed token.
//
// Where the credential comes from, in order:
//   1. `/#token=ft_…`: a partner's backend opened the page for one of its users with a
//      short-lived, user-scoped feed token (POST /api/v1/feed/user-token). The fragment
//      is never sent to any server; the page removes it from the address bar at once.
//   2. a demo session this tab started before (sessionStorage), renewed on a sandbox
//      server with POST /api/v1/sandbox/session {"token": …} (same demo user);
//   3. otherwise a view-only token, POST /api/v1/session/viewer.
// A demo session starts only when the player asks (the "Play with demo money" button).

export const API = "/api/v1";
const STORE = "crashd.session";

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
    this.code = (body && body.code) || null;
  }
}

export class Unreachable extends Error {}

export async function call(method, path, { token = null, body = undefined, signal } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-cache",
      credentials: "omit",
      signal,
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new Unreachable(`the server is unreachable (${err && err.message})`);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

export const get = (path, options) => call("GET", path, options);
export const post = (path, body, options = {}) => call("POST", path, { ...options, body });

// The claims of a feed token (ft_<base64url JSON>.<mac>), read, not verified: the server
// verifies; the page only needs to know whose page it is and until when.
export function tokenClaims(token) {
  try {
    const payload = token.slice(3).split(".")[0];
    const json = atob(payload.replace(/-/g, "+").replace(/_/g, "/"));
    const c = JSON.parse(json);
    return {
      partnerId: c.p ?? null,
      userId: c.u ?? null,
      scopes: Array.isArray(c.s) ? c.s : [],
      expiresAt: typeof c.x === "number" ? c.x : null,
      environment: c.e ?? null,
    };
  } catch {
    return { partnerId: null, userId: null, scopes: [], expiresAt: null, environment: null };
  }
}

function fromAnswer(kind, answer) {
  const claims = tokenClaims(answer.token);
  return {
    kind,
    token: answer.token,
    wsUrl: answer.ws_url || null,
    userId: answer.user_id ?? claims.userId,
    partnerId: answer.partner_id ?? claims.partnerId,
    scopes: answer.scopes ?? claims.scopes,
    expiresAt: answer.expires_at ?? claims.expiresAt,
    balance: answer.balance ?? null,
  };
}

export class Session {
  constructor(onChange) {
    this.current = null;
    this.onChange = onChange || (() => {});
    this.renewTimer = null;
  }

  get canBet() {
    const s = this.current;
    return !!(s && s.userId && s.scopes.includes("write:bet"));
  }

  get readsBalance() {
    const s = this.current;
    return !!(s && s.userId && s.scopes.includes("read:balance"));
  }

  // The page's credential at start-up (see the top of this file).
  async open() {
    const fragment = new URLSearchParams(location.hash.slice(1));
    const handed = fragment.get("token");
    if (handed) {
      history.replaceState(null, "", location.pathname + location.search);
      const claims = tokenClaims(handed);
      this.set({ kind: "player", token: handed, wsUrl: null, ...claims, balance: null });
      this.save();
      return this.current;
    }
    const saved = this.load();
    const fresh = saved && (!saved.expiresAt || saved.expiresAt * 1000 - Date.now() > 120_000);
    if (saved && (saved.kind === "player" || fresh)) {
      // This tab's session, still good (a player's token cannot be renewed here anyway).
      this.set({ ...saved, balance: null });
      return this.current;
    }
    if (saved && saved.kind === "demo") {
      try {
        return await this.demo(saved.token);
      } catch (err) {
        if (err instanceof Unreachable) throw err;
        // The demo session cannot be renewed (expired long ago, sandbox gone): watch.
      }
    }
    return this.viewer();
  }

  async viewer() {
    this.set(fromAnswer("viewer", await post("/session/viewer", {})));
    this.save();
    return this.current;
  }

  async demo(previous = null) {
    const body = previous ? { token: previous } : {};
    this.set(fromAnswer("demo", await post("/sandbox/session", body)));
    this.save();
    return this.current;
  }

  // A fresh token for the same kind of session, when the old one is about to expire or
  // was refused (the feed's 4001). A partner's token cannot be renewed by the page.
  async renew() {
    const s = this.current;
    if (!s) return this.open();
    if (s.kind === "demo") return this.demo(s.token);
    if (s.kind === "viewer") return this.viewer();
    return null;
  }

  set(session) {
    this.current = session;
    clearTimeout(this.renewTimer);
    if (session.expiresAt && session.kind !== "player") {
      // Renew a minute before expiry (at least in 10 s, at most in an hour).
      const inMs = session.expiresAt * 1000 - Date.now() - 60_000;
      this.renewTimer = setTimeout(
        () => this.renew().catch(() => {}),
        Math.min(Math.max(inMs, 10_000), 3_600_000),
      );
    }
    this.onChange(session);
  }

  save() {
    try {
      const { kind, token, wsUrl, userId, partnerId, scopes, expiresAt } = this.current;
      sessionStorage.setItem(
        STORE,
        JSON.stringify({ kind, token, wsUrl, userId, partnerId, scopes, expiresAt }),
      );
    } catch {
      // Storage may be off (private mode): the session lasts as long as the page.
    }
  }

  load() {
    try {
      const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
      return saved && typeof saved.token === "string" ? saved : null;
    } catch {
      return null;
    }
  }
}

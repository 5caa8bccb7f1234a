// The WebSocket feed, as docs/feed.md describes it: auth as the first message,
// subscribe, heartbeats acknowledged, every stream message applied once in `seq`
// order, resume after a reconnect, and orders (bet, cashout, auto_cashout) answered
// with a `result` on the same connection.
//
// Reconnects by itself, with backoff, and resumes where it left off (the server
// replays what was missed, or sends a snapshot when the gap is too old). Orders still
// unanswered when the connection dropped are sent again after the reconnect, with the
// same idempotency key: the server answers them from the first attempt's stored reply
// (or runs them once), so a cash-out is never lost and never done twice.
//
// The feed has no ping message, so the round-trip time is measured with a subscribe to
// a channel the connection already holds: the server answers it with `subscribed` and
// nothing else (no snapshot; see docs/page.md).

const PROBE_EVERY_MS = 5000;
const BACKOFF_MS = [250, 500, 1000, 2000, 4000];
const UNREACHABLE_AFTER = 3; // failed attempts in a row before saying so

export class Feed {
  // getTarget(): {url, token}, awaited before every connection attempt;
  // channels(welcome): the channels to hold; on: {message, status, rtt, refused}.
  constructor({ getTarget, channels, on }) {
    this.getTarget = getTarget;
    this.channelsFor = channels;
    this.on = on;
    this.ws = null;
    this.epoch = null;
    this.seq = null; // the last stream message applied
    this.channels = [];
    this.pending = new Map(); // order key -> {message, resolve, sentAt}
    this.nextId = 1;
    this.failures = 0;
    this.status = "connecting";
    this.lastHeard = 0;
    this.heartbeatMs = 15000;
    this.probe = null;
    this.timer = null;
    this.stopped = false;
    this.welcome = null;
    this.needsRefresh = false;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.probe);
    if (this.ws) this.ws.close(1000, "page closed");
  }

  // Close the current connection and connect again with a fresh credential (e.g. after
  // the page's session changed); the stream resumes where it was.
  restart() {
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.onclose = null;
      ws.close(1000, "new credential");
    }
    clearTimeout(this.timer);
    this.connect();
  }

  setStatus(status, detail = null) {
    this.status = status;
    this.on.status(status, detail);
  }

  async connect() {
    if (this.stopped) return;
    let target;
    try {
      target = await this.getTarget(this.needsRefresh);
      this.needsRefresh = false;
    } catch (err) {
      this.failed(err && err.message);
      return;
    }
    if (!target) {
      this.setStatus("expired", "your session has expired: open the game again from your site");
      return;
    }
    let ws;
    try {
      ws = new WebSocket(target.url);
    } catch (err) {
      this.failed(err && err.message);
      return;
    }
    this.ws = ws;
    let welcomed = false;
    ws.onopen = () => {
      this.lastHeard = performance.now();
      ws.send(JSON.stringify({ type: "auth", token: target.token }));
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastHeard = performance.now();
      let msg;
      try {
        msg = JSON.parse(event.data);
      } catch {
        return;
      }
      if (msg.type === "welcome") welcomed = true;
      this.receive(msg);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this.probe);
      if (this.stopped) return;
      if (event.code === 4001 || event.code === 4003) {
        // The credential was refused (expired, revoked): get a new one.
        this.needsRefresh = true;
        this.on.refused && this.on.refused(event.code);
      }
      if (welcomed) this.failures = 0;
      this.failed(event.reason || `closed (${event.code})`);
    };
  }

  failed(detail) {
    if (this.stopped) return;
    this.failures += 1;
    const wait = BACKOFF_MS[Math.min(this.failures - 1, BACKOFF_MS.length - 1)];
    const jittered = Math.round(wait * (0.75 + Math.random() * 0.5));
    if (this.failures >= UNREACHABLE_AFTER) {
      this.setStatus("unreachable", { detail, retryInMs: jittered });
    } else {
      this.setStatus("reconnecting", { detail, retryInMs: jittered });
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), jittered);
  }

  send(obj) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) {
      this.ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  receive(msg) {
    switch (msg.type) {
      case "welcome":
        this.onWelcome(msg);
        return;
      case "heartbeat":
        this.send({ type: "ack", id: msg.id });
        return;
      case "subscribed":
        if (typeof msg.id === "string" && msg.id.startsWith("rtt:")) {
          const sentAt = Number(msg.id.slice(4));
          this.on.rtt(performance.now() - sentAt);
        }
        return;
      case "resumed":
        this.live();
        return;
      case "result":
        this.onResult(msg);
        return;
      case "error":
        // Refused by the server (it says why): nothing the player can act on.
        console.info("feed refused a message:", msg.code, msg.message);
        return;
      case "unsubscribed":
        return;
      default:
        break;
    }
    if (typeof msg.seq !== "number") return;
    if (msg.type === "snapshot") {
      // A snapshot is the state as of its seq: apply it, then only later messages.
      if (this.seq !== null && msg.seq < this.seq && msg.epoch === this.epoch) return;
      this.seq = msg.seq;
      this.epoch = msg.epoch || this.epoch;
      this.on.message(msg);
      this.live();
      return;
    }
    if (this.seq !== null && msg.seq <= this.seq) return; // seen: drop (docs/feed.md)
    this.seq = msg.seq;
    this.on.message(msg);
  }

  onWelcome(msg) {
    this.welcome = msg;
    this.heartbeatMs = msg.heartbeat_interval_ms || this.heartbeatMs;
    this.channels = this.channelsFor(msg);
    const subscribe = { type: "subscribe", channels: this.channels, id: this.nextId++ };
    if (this.seq !== null && this.epoch !== null) {
      subscribe.resume = { seq: this.seq, epoch: this.epoch };
    }
    if (this.epoch === null) this.epoch = msg.epoch;
    this.send(subscribe);
    // Orders that never got their answer: send them again, same key, same body.
    for (const entry of this.pending.values()) {
      entry.sentAt = performance.now();
      this.send(entry.message);
    }
    clearInterval(this.probe);
    this.probe = setInterval(() => this.measure(), PROBE_EVERY_MS);
    setTimeout(() => this.measure(), 300);
  }

  live() {
    this.failures = 0;
    if (this.status !== "live") this.setStatus("live");
  }

  measure() {
    const now = performance.now();
    // Nothing heard for two probes (each is answered at once) or a heartbeat period and
    // a half: the link is dead even if the socket has not noticed. Reconnect.
    const silence = Math.min(this.heartbeatMs * 1.5, PROBE_EVERY_MS * 2 + 1000);
    if (this.ws && this.status === "live" && now - this.lastHeard > silence) {
      const ws = this.ws;
      ws.close(4000, "silent");
      this.ws = null;
      clearInterval(this.probe);
      this.failed("no answer from the server");
      return;
    }
    if (this.channels.length) {
      this.send({ type: "subscribe", channels: [this.channels[0]], id: `rtt:${now}` });
    }
  }

  // Send an order; resolves with its `result` (status, body) whenever it comes,
  // across reconnects.
  order(message) {
    const key = message.key || crypto.randomUUID();
    const full = { ...message, key, id: `o:${key}` };
    return new Promise((resolve) => {
      this.pending.set(key, { message: full, resolve, sentAt: performance.now() });
      this.send(full);
    });
  }

  onResult(msg) {
    const entry = this.pending.get(msg.key);
    if (!entry) return;
    if (msg.status === 409 && msg.body && msg.body.code === "idempotency_key_in_flight") {
      // The first attempt (before a reconnect) is still running: ask again shortly.
      setTimeout(() => this.send(entry.message), 200);
      return;
    }
    this.pending.delete(msg.key);
    this.on.rtt(performance.now() - entry.sentAt, true);
    entry.resolve(msg);
  }
}

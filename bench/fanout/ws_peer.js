// Node `ws` peer for `python -m bench fanout`: the same ticks, sent the idiomatic way
// (`client.send(text)` for each client, the broadcast loop in ws's README).
// usage: node ws_peer.js PORT N RATE TICKS WARMUP PAYLOAD_BYTES   (needs `ws` on NODE_PATH)
'use strict';
const { WebSocketServer } = require('ws');
const fs = require('fs');
const [port, n, rate, ticks, warmup, size] = process.argv.slice(2).map(Number);

const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, backlog: 4096 });
wss.on('connection', (ws) => {
  ws.on('message', () => {});   // auth/subscribe from the load generator: ignored
  ws.on('error', () => {});
  if (wss.clients.size === n) start();
});
wss.on('listening', () => console.log(`READY ${wss.address().port}`));

function tickText(k, tUs) {
  const base = { seq: k + 1, channel: 'live_multiplier', type: 'tick', n: k, t: tUs, m: 100 + k, pad: '' };
  const bare = JSON.stringify(base).length;
  base.pad = 'x'.repeat(Math.max(0, size - bare));
  return JSON.stringify(base);
}

function rssKb() {
  const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : 0;
}

let started = false;
function start() {
  if (started) return;
  started = true;
  // Wall clock and monotonic clock: ticks are scheduled on the monotonic one and
  // stamped with the matching wall time, so lateness counts against the server.
  const t0 = performance.now() + 500;
  const wall0 = Date.now() + 500;
  let k = 0;
  let cpu0 = null;
  function next() {
    const due = t0 + (k * 1000) / rate;
    const wait = due - performance.now();   // re-read the clock before each tick
    if (wait > 0) { setTimeout(fire, wait); } else { setImmediate(fire); }
  }
  function fire() {
    const due = t0 + (k * 1000) / rate;
    if (performance.now() < due - 0.5) { next(); return; }
    if (k === warmup) cpu0 = process.cpuUsage();
    const text = tickText(k, Math.round((wall0 + (k * 1000) / rate) * 1000));
    for (const client of wss.clients) {
      if (client.readyState === 1) client.send(text);
    }
    k += 1;
    if (k < ticks) { next(); return; }
    setTimeout(() => {
      // CPU from the first tick until the sends have drained (idle time costs nothing).
      const cpu = process.cpuUsage(cpu0);
      console.log('RESULT ' + JSON.stringify({ cpu_s: (cpu.user + cpu.system) / 1e6, rss_kb: rssKb() }));
      process.exit(0);
    }, 1500);
  }
  next();
}

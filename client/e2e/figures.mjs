#!/usr/bin/env node
// Usage: node e2e/figures.mjs [--runs N] [--json FILE]
//
// The SDK's figures, measured in headless Chromium through the same fleet as the e2e tests
// (HAProxy, two trackers, Redis; the two pages always on different trackers):
// - time from join to open data channel (median, p95), on the page that joins second;
// - bytes and messages sent to the tracker per established connection (both pages, signals
//   only: offer, answer, cands; joins listed apart), with and without minification and
//   candidate batching, in JSON and MessagePack;
// - JSON vs MessagePack framing in the browser: frame size and encode+decode time of the
//   same signals.
// Prints a Markdown table; figures only, no pass/fail on timing.
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

import { launch } from './browser.mjs';
import { connections, startFleet, until } from './fleet.mjs';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '30' }, json: { type: 'string' } } });
const runs = Number(values.runs);
if (!Number.isInteger(runs) || runs < 1 || runs > 1000) {
  console.error('--runs: 1..1000');
  process.exit(2);
}

const CONFIGS = [
  { name: 'json, minified, batched', options: { framing: 'json', minify: true, batchWindowMs: 15 } },
  { name: 'json, plain SDP, batched', options: { framing: 'json', minify: false, batchWindowMs: 15 } },
  { name: 'json, minified, unbatched', options: { framing: 'json', minify: true, batchWindowMs: 0 } },
  { name: 'json, plain SDP, unbatched', options: { framing: 'json', minify: false, batchWindowMs: 0 } },
  { name: 'msgpack, minified, batched', options: { framing: 'msgpack', minify: true, batchWindowMs: 15 } },
  { name: 'msgpack, plain SDP, batched', options: { framing: 'msgpack', minify: false, batchWindowMs: 15 } },
];

/** @param {number[]} xs @param {number} q */
function quantile(xs, q) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)];
}
const median = (xs) => quantile(xs, 0.5);

const fleet = await startFleet({ trackers: 2 });
const browser = await launch();
try {
  const pages = [await browser.page(fleet.pageOrigin), await browser.page(fleet.pageOrigin)];
  const state = (p) => p.evaluate(() => /** @type {any} */ (window).harness.state());
  const start = async (p, swarm, o) => {
    await p.evaluate(([u, s, opts]) => /** @type {any} */ (window).harness.start(u, s, opts), [fleet.frontUrl, swarm, o]);
    return until(async () => (await state(p)).peerId && state(p), 'welcome');
  };
  const signals = ['offer', 'answer', 'cands'];
  const results = [];
  let seq = 0;
  for (const cfg of CONFIGS) {
    const r = { name: cfg.name, joinToOpen: [], signalBytes: [], joinBytes: [], messages: [], candMessages: [] };
    for (let i = 0; i < runs; i++) {
      for (const p of pages) await p.evaluate(() => /** @type {any} */ (window).harness.close());
      await until(async () => (await Promise.all(fleet.trackers.map(connections))).every((n) => n === 0), 'idle trackers');
      const swarm = `fig-${++seq}`;
      const a = await start(pages[0], swarm, cfg.options);
      const b = await start(pages[1], swarm, cfg.options);
      if (a.instance === b.instance) throw new Error('both pages on one tracker');
      const [sa, sb] = await until(async () => {
        const [x, y] = [await state(pages[0]), await state(pages[1])];
        // Wait for both ends, and for gathering to finish (the final `end`) so every
        // candidate message is counted.
        const ended = (s) => (s.stats.sent.cands?.messages ?? 0) > 0;
        return x.peers[b.peerId]?.open && y.peers[a.peerId]?.open && ended(x) && ended(y) && [x, y];
      }, 'the data channel');
      // Let trailing candidate batches leave (end-of-candidates can follow the open channel).
      await new Promise((res) => setTimeout(res, 100));
      const [fa, fb] = [await state(pages[0]), await state(pages[1])];
      r.joinToOpen.push(sb.peers[a.peerId].at);
      const sum = (f) => [fa, fb].reduce((n, s) => n + signals.reduce((m, t) => m + f(s.stats.sent[t] ?? { messages: 0, bytes: 0 }), 0), 0);
      r.signalBytes.push(sum((x) => x.bytes));
      r.messages.push(sum((x) => x.messages));
      r.candMessages.push([fa, fb].reduce((n, s) => n + (s.stats.sent.cands?.messages ?? 0), 0));
      r.joinBytes.push([fa, fb].reduce((n, s) => n + (s.stats.sent.join?.bytes ?? 0), 0));
      void sa;
    }
    results.push(r);
    console.error(`${cfg.name}: done`);
  }

  // Framing in the browser: the same signals encoded and decoded 20,000 times each way.
  const framing = await pages[0].evaluate(async () => {
    const { encodeFrame, decodeServerFrame } = await import('/index.js');
    const sdp = 'v=0\r\no=- 3000636234264023297 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\na=extmap-allow-mixed\r\na=msid-semantic: WMS\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:zMoC\r\na=ice-pwd:nDNXZvurjhraIwdspg/LF1q1\r\na=ice-options:trickle\r\na=fingerprint:sha-256 3E:77:A6:7F:94:A4:04:C6:1F:27:FF:C5:7A:19:D9:90:78:B6:6B:AF:62:36:B6:C4:F6:3F:24:6A:DB:84:FA:7C\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n';
    const msgs = {
      'offer, plain SDP': { t: 'offer', swarm: 'video-42', from: 'Gis8TQAAAACfOsDS5Bt3hQ', sid: '1-abc', m: sdp },
      'offer, minified': { t: 'offer', swarm: 'video-42', from: 'Gis8TQAAAACfOsDS5Bt3hQ', sid: '1-abc', m: '1,zMoC,nDNXZvurjhraIwdspg/LF1q1,sha-256:Pnemf5SkBMYfJ//FehnZkHi2a69iNrbE9j8katuE+nw,a,0,5000,262144' },
      'cands, 2 minified': { t: 'cands', swarm: 'video-42', from: 'Gis8TQAAAACfOsDS5Bt3hQ', sid: '1-abc', c: ['3962554493 1 udp 2113937151 192.0.2.2 35486 host', '659098013 1 udp 2113942271 fd00::2 32858 host'], end: true },
    };
    const out = {};
    const n = 20000;
    for (const [name, m] of Object.entries(msgs)) {
      out[name] = {};
      for (const f of ['json', 'msgpack']) {
        const frame = encodeFrame(m, f);
        const size = typeof frame === 'string' ? new TextEncoder().encode(frame).length : frame.length;
        let t = performance.now();
        for (let i = 0; i < n; i++) encodeFrame(m, f);
        const enc = ((performance.now() - t) * 1000) / n;
        t = performance.now();
        for (let i = 0; i < n; i++) decodeServerFrame(frame);
        const dec = ((performance.now() - t) * 1000) / n;
        out[name][f] = { size, encodeUs: enc, decodeUs: dec };
      }
    }
    return out;
  });

  console.log(`\nChromium ${browser.context.browser()?.version() ?? ''}, ${runs} connections per row, two pages on two trackers (via HAProxy and Redis)\n`);
  console.log('| configuration | join -> open, median | p95 | signal bytes to tracker per connection (median) | signal messages per connection (median) | of which `cands` | join bytes (both pages) |');
  console.log('|---|---|---|---|---|---|---|');
  for (const r of results) {
    console.log(`| ${r.name} | ${median(r.joinToOpen).toFixed(1)} ms | ${quantile(r.joinToOpen, 0.95).toFixed(1)} ms | ${median(r.signalBytes)} B | ${median(r.messages)} | ${median(r.candMessages)} | ${median(r.joinBytes)} B |`);
  }
  console.log('\nFraming in the browser (20,000 rounds each; decode = the SDK\'s checked server-frame decoder)\n');
  console.log('| message | JSON bytes | MessagePack bytes | JSON encode / decode | MessagePack encode / decode |');
  console.log('|---|---|---|---|---|');
  for (const [name, f] of Object.entries(framing)) {
    console.log(`| ${name} | ${f.json.size} | ${f.msgpack.size} | ${f.json.encodeUs.toFixed(2)} / ${f.json.decodeUs.toFixed(2)} µs | ${f.msgpack.encodeUs.toFixed(2)} / ${f.msgpack.decodeUs.toFixed(2)} µs |`);
  }
  if (values.json) writeFileSync(values.json, JSON.stringify({ runs, results, framing }, null, 2));
} finally {
  await browser.close();
  await fleet.stop();
}

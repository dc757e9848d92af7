#!/usr/bin/env node
// Usage: node player/bench.mjs [--viewers 2,4,8] [--runs 3] [--watch 40] [--stagger 2000]
//                              [--modes p2p,off] [--streams vod,live] [--out DIR]
//
// The P2P share figure (`scripts/bench player`): for each viewer count and run, that many
// headless Chromium viewers open the player page one after another (`--stagger` ms apart) on
// the 180 s test stream, through HAProxy in front of two trackers and Redis, and each watches
// `--watch` seconds. Mode `p2p` is hls.js + p2p-media-loader as shipped (it prefetches up to
// 3000 s ahead over HTTP and 6000 s over P2P: a whole VOD); `p2p30` the same with those
// windows at 30 s and 60 s; `off` is the same page with P2P disabled (isP2PDisabled), the
// baseline for origin bytes and stalls. Stream
// `vod` is the 180 s VOD from its start; `live` the same segments as a live stream (origin.mjs
// `/live/`, starting with each session), where every viewer plays near the live edge. Each run
// has a fresh swarm id. Per run it writes the whole result as JSON to DIR, and at the end a
// markdown table of medians over the runs for docs/BENCHMARKS.md.
//
// Tracker binary: $TRACKER_BIN (scripts/bench sets the release build), else target/debug.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

import { startFleet } from '../client/e2e/fleet.mjs';
import { startOrigin } from './origin.mjs';
import { ROOT, startSite } from './site.mjs';
import { watch } from './watch.mjs';

const { values } = parseArgs({
  options: {
    viewers: { type: 'string', default: '2,4,8' },
    runs: { type: 'string', default: '3' },
    watch: { type: 'string', default: '40' },
    stagger: { type: 'string', default: '2000' },
    modes: { type: 'string', default: 'p2p,p2p30,off' },
    streams: { type: 'string', default: 'vod,live' },
    out: { type: 'string', default: join(ROOT, 'bench-out', `player-${new Date().toISOString().replace(/[:.]/g, '')}`) },
  },
});
const counts = values.viewers.split(',').map(Number);
const runs = Number(values.runs);
const watchSecs = Number(values.watch);
const staggerMs = Number(values.stagger);
const modes = values.modes.split(',');
const streams = values.streams.split(',');
/** Every (stream, viewer count), in the order they run. */
const cases = streams.flatMap((stream) => counts.map((n) => ({ stream, n })));
if (counts.some((n) => !Number.isInteger(n) || n < 1 || n > 16) || !(runs >= 1) || !(watchSecs >= 5) || !(staggerMs >= 0) || modes.some((m) => !['p2p', 'p2p30', 'off'].includes(m)) || streams.some((m) => m !== 'vod' && m !== 'live')) {
  console.error('bench: --viewers 1..16 each, --runs >= 1, --watch >= 5, --stagger >= 0, --modes p2p,p2p30,off, --streams vod,live');
  process.exit(2);
}
mkdirSync(values.out, { recursive: true });

const stream = join(ROOT, 'target', 'player', 'stream');
const made = spawnSync(join(ROOT, 'player', 'make-stream'), ['--out', stream, '--duration', '180'], { stdio: 'inherit' });
if (made.status !== 0) process.exit(1);

const fleet = await startFleet({ trackers: 2 });
const origin = await startOrigin({ root: stream });
const site = await startSite();
const tracker = fleet.frontUrl.replace(/\/v1\/ws$/, '/announce');
/** @type {{stream: string, n: number, mode: string, run: number, r: Awaited<ReturnType<typeof watch>>}[]} */
const results = [];
try {
  for (const { stream, n } of cases) {
    for (let run = 1; run <= runs; run++) {
      // Modes alternate within a run, so both see the same machine load.
      for (const mode of modes) {
        const r = await watch({
          site,
          origin,
          tracker,
          playlist: stream === 'live' ? '/live/master.m3u8' : '/master.m3u8',
          swarm: `bench-${stream}-${n}-${run}-${mode}-${Date.now()}`,
          p2p: mode !== 'off',
          window: mode === 'p2p30' ? 30 : undefined,
          browsers: Array(n).fill('chromium'),
          watchSecs,
          staggerMs,
        });
        writeFileSync(join(values.out, `player-${stream}-${mode}-${n}-${run}.json`), JSON.stringify(r, null, 1));
        results.push({ stream, n, mode, run, r });
        const stalls = r.viewers.reduce((a, v) => a + v.stalls, 0);
        const errs = r.viewers.flatMap((v) => v.errors);
        console.error(`player ${stream} ${mode} ${n} viewers run ${run}: P2P share ${(r.p2pShare * 100).toFixed(1)} %, origin ${(r.origin.segment.bytes / 1e6).toFixed(1)} MB, stalls ${stalls}${errs.length ? `, errors: ${errs.slice(0, 3).join('; ')}` : ''}`);
      }
    }
  }
} finally {
  await site.close();
  await origin.close();
  await fleet.stop();
}

/** @param {number[]} xs */
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
/** @param {number[]} xs @param {(x: number) => string} f */
const spread = (xs, f) => `${f(median(xs))} (${f(Math.min(...xs))}–${f(Math.max(...xs))})`;
const pct = (/** @type {number} */ x) => `${(x * 100).toFixed(1)} %`;
const mb = (/** @type {number} */ x) => (x / 1e6).toFixed(1);

console.log(`\nresults in ${values.out}\n`);
console.log(`${runs} runs each; viewers ${staggerMs} ms apart, each watching ${watchSecs} s of the 180 s stream; medians (min–max over runs)\n`);
console.log('| stream | viewers | P2P | P2P share of segment bytes | origin segment MB | downloaded MB (all viewers) | startup ms | stalls per run | stalled s per run |');
console.log('|---|---|---|---|---|---|---|---|---|');
for (const { stream, n } of cases) {
  for (const mode of modes) {
    const rs = results.filter((x) => x.stream === stream && x.n === n && x.mode === mode).map((x) => x.r);
    if (!rs.length) continue;
    const startups = rs.flatMap((r) => r.viewers.map((v) => v.startupMs)).filter((x) => x !== null);
    const never = rs.flatMap((r) => r.viewers).filter((v) => v.startupMs === null).length;
    console.log(
      `| ${stream} | ${n} | ${{ p2p: 'on', p2p30: 'on, 30 s windows', off: 'off' }[mode]} | ${mode === 'off' ? '–' : spread(rs.map((r) => r.p2pShare), pct)} ` +
        `| ${spread(rs.map((r) => r.origin.segment.bytes), mb)} | ${mb(median(rs.map((r) => r.p2pBytes + r.httpBytes)))} ` +
        `| ${startups.length ? Math.round(median(startups)) : '–'}${never ? ` (${never} never started)` : ''} ` +
        `| ${spread(rs.map((r) => r.viewers.reduce((a, v) => a + v.stalls, 0)), String)} ` +
        `| ${spread(rs.map((r) => r.viewers.reduce((a, v) => a + v.stallMs, 0) / 1000), (x) => x.toFixed(1))} |`,
    );
  }
}

// hls.js + p2p-media-loader v2 in headless browsers, watching the locally made stream through a
// real fleet: HAProxy (leastconn, the production template) in front of two trackers sharing a
// redis-server, the stream from the counting origin. Two Chromium viewers and one Firefox ESR
// viewer open one after another; with leastconn they land on both instances, so their offers
// and answers cross Redis. Small on purpose (3 viewers, 20 s each): `scripts/bench player`
// makes the figures.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { startFleet } from '../../client/e2e/fleet.mjs';
import { startOrigin } from '../origin.mjs';
import { ROOT, startSite } from '../site.mjs';
import { watch } from '../watch.mjs';

const STREAM = join(ROOT, 'target', 'player', 'stream-test');

/** @type {Awaited<ReturnType<typeof startFleet>>} */
let fleet;
/** @type {any} */
let origin;
/** @type {any} */
let site;

before(async () => {
  // 60 s of stream: more than the viewers watch, and p2p-media-loader prefetches all of it.
  const made = spawnSync(join(ROOT, 'player', 'make-stream'), ['--out', STREAM, '--duration', '60'], { stdio: 'inherit' });
  assert.equal(made.status, 0, 'player/make-stream failed');
  // Announce every 5 s instead of 120 s, so the players' periodic re-announces (with more
  // offers, and the `trackerid` they were given) happen within the test.
  fleet = await startFleet({ trackers: 2, env: { TRACKER__WEBTORRENT__INTERVAL_SECS: '5' } });
  origin = await startOrigin({ root: STREAM });
  site = await startSite();
});

after(async () => {
  await site?.close();
  await origin?.close();
  await fleet?.stop();
});

/** Sum of one metric's samples on every tracker's admin listener. @param {RegExp} re */
async function trackerSum(re) {
  let sum = 0;
  for (const t of fleet.trackers) {
    const text = await (await fetch(`http://127.0.0.1:${t.adminPort}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
    for (const line of text.split('\n')) if (re.test(line)) sum += Number(line.split(' ').pop());
  }
  return sum;
}

test('viewers on two tracker instances, Chromium and Firefox, get segments from each other and never stall', async () => {
  const r = await watch({
    site,
    origin,
    tracker: fleet.frontUrl.replace(/\/v1\/ws$/, '/announce'),
    playlist: '/master.m3u8',
    swarm: 'e2e-test-pattern',
    p2p: true,
    browsers: ['chromium', 'firefox', 'chromium'],
    watchSecs: 20,
    staggerMs: 3000,
  });
  const brief = r.viewers.map((v) => ({ ...v, sent: undefined }));
  const why = `\n${JSON.stringify({ viewers: brief, origin: r.origin, share: r.p2pShare, pageErrors: r.pageErrors }, null, 1)}\n${fleet.logs().slice(-3000)}`;

  assert.deepEqual(r.pageErrors, [], `page errors${why}`);
  for (const v of r.viewers) {
    assert.deepEqual(v.errors, [], `${v.viewer}: errors${why}`);
    assert.ok(v.startupMs !== null, `${v.viewer} never started playing${why}`);
    assert.ok(v.position >= 10, `${v.viewer} played only ${v.position} s${why}`);
    assert.equal(v.stalls, 0, `${v.viewer} stalled${why}`);
    // The tracker told each its instance, one of the fleet's.
    assert.equal(v.instances.length, 1, `${v.viewer}: tracker instances ${v.instances}${why}`);
    assert.ok(fleet.byInstance(v.instances[0]), `${v.viewer}: ${v.instances[0]} is no instance of the fleet${why}`);
  }
  assert.ok(new Set(r.viewers.flatMap((v) => v.instances)).size >= 2, `all viewers on one tracker instance${why}`);

  // p2p-media-loader's own counters: everyone but the first comes after the segments are out
  // there, so each of them, the Firefox viewer included, downloads from peers.
  for (const v of r.viewers.slice(1)) {
    assert.ok(v.segments.p2p > 0 && v.bytes.p2p > 0, `${v.viewer}: nothing from peers${why}`);
  }
  assert.ok(r.viewers.reduce((a, v) => a + v.bytes.uploaded, 0) > 0, `nobody uploaded${why}`);
  // The origin served at least what came over HTTP, and less than the viewers downloaded.
  assert.ok(r.origin.segment.bytes >= r.httpBytes, `origin ${r.origin.segment.bytes} B < HTTP ${r.httpBytes} B${why}`);
  assert.ok(r.origin.segment.bytes < r.httpBytes + r.p2pBytes, `the origin served everything${why}`);

  // Everything p2p-media-loader sent the tracker was accepted, and signals crossed instances.
  assert.equal(await trackerSum(/^tracker_webtorrent_failures_total/), 0, `tracker failures${why}`);
  assert.ok((await trackerSum(/^tracker_messages_relayed_total\{kind="(offer|answer)",path="remote"/)) > 0, `no offer or answer crossed Redis${why}`);
  const shapes = [...new Set(r.viewers.flatMap((v) => Object.keys(v.sent)))];
  assert.ok(shapes.some((s) => /^announce event=started offers=\d+ numwant=\d+$/.test(s)), `no started announce with offers: ${shapes}`);
  assert.ok(shapes.some((s) => /^announce offers=\d+ numwant=\d+ trackerid$/.test(s)), `no periodic announce echoing the tracker id: ${shapes}`);
  assert.ok(shapes.some((s) => s.startsWith('announce answer')), `no answer: ${shapes}`);
});

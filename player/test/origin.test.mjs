// The origin and the live window, in Node: byte ranges, counters, bad requests, and the live
// playlist's advance with the clock.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { liveWindow, parseVod } from '../live.mjs';
import { parseRange, startOrigin } from '../origin.mjs';

const VOD = ['#EXTM3U', '#EXT-X-VERSION:7', '#EXT-X-TARGETDURATION:2', '#EXT-X-MEDIA-SEQUENCE:0', '#EXT-X-PLAYLIST-TYPE:VOD', '#EXT-X-INDEPENDENT-SEGMENTS', '#EXT-X-MAP:URI="init_0.mp4"']
  .concat(...Array.from({ length: 10 }, (_, i) => ['#EXTINF:2.000000,', `seg00${i}.m4s`]), ['#EXT-X-ENDLIST', ''])
  .join('\n');

let dir = '';
/** @type {any} */
let origin;
before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'swarmtrack-origin-'));
  mkdirSync(join(dir, 'r'));
  writeFileSync(join(dir, 'r', 'index.m3u8'), VOD);
  writeFileSync(join(dir, 'r', 'seg000.m4s'), Buffer.alloc(1000, 7));
  writeFileSync(join(dir, 'secret.txt'), 'no');
  origin = await startOrigin({ root: join(dir, 'r') });
});
after(async () => {
  await origin?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('byte ranges', () => {
  assert.deepEqual(parseRange('bytes=0-99', 1000), { start: 0, end: 99 });
  assert.deepEqual(parseRange('bytes=900-', 1000), { start: 900, end: 999 });
  assert.deepEqual(parseRange('bytes=-100', 1000), { start: 900, end: 999 });
  assert.deepEqual(parseRange('bytes=990-2000', 1000), { start: 990, end: 999 });
  assert.equal(parseRange('bytes=1000-', 1000), 'invalid');
  assert.equal(parseRange('bytes=5-4', 1000), 'invalid');
  assert.equal(parseRange('bytes=-0', 1000), 'invalid');
  // Several ranges or another unit: the whole file.
  assert.equal(parseRange('bytes=0-1,5-6', 1000), null);
  assert.equal(parseRange('items=0-1', 1000), null);
  assert.equal(parseRange(undefined, 1000), null);
});

test('the origin serves ranges and counts segment and playlist bytes', async () => {
  origin.reset();
  const whole = await fetch(`${origin.url}/seg000.m4s`);
  assert.equal(whole.status, 200);
  assert.equal((await whole.arrayBuffer()).byteLength, 1000);
  const part = await fetch(`${origin.url}/seg000.m4s`, { headers: { range: 'bytes=100-199' } });
  assert.equal(part.status, 206);
  assert.equal(part.headers.get('content-range'), 'bytes 100-199/1000');
  assert.equal((await part.arrayBuffer()).byteLength, 100);
  assert.equal((await fetch(`${origin.url}/seg000.m4s`, { headers: { range: 'bytes=5000-' } })).status, 416);
  const pl = await (await fetch(`${origin.url}/index.m3u8`)).text();
  assert.equal(pl, VOD);
  const s = await (await fetch(`${origin.url}/_origin/stats`)).json();
  assert.deepEqual({ segment: s.segment, playlist: s.playlist }, { segment: { requests: 3, bytes: 1100 }, playlist: { requests: 1, bytes: VOD.length } });
});

test('the origin refuses what it must not serve, and goes on', async () => {
  for (const path of ['/../secret.txt', '/%2e%2e/secret.txt', '/nope.m4s', '/']) {
    assert.equal((await fetch(`${origin.url}${path}`)).status, 404, path);
  }
  assert.equal((await fetch(`${origin.url}/%E0%A4%A`)).status, 400);
  assert.equal((await fetch(`${origin.url}/seg000.m4s`, { method: 'POST' })).status, 405);
  assert.equal((await fetch(`${origin.url}/seg000.m4s`)).status, 200);
});

test('the live window advances with the clock and ends with the VOD', () => {
  const vod = parseVod(VOD);
  const seqAndUris = (/** @type {string} */ text) => ({
    seq: Number(/#EXT-X-MEDIA-SEQUENCE:(\d+)/.exec(text)?.[1]),
    uris: text.split('\n').filter((l) => l.endsWith('.m4s')),
    ended: text.includes('#EXT-X-ENDLIST'),
    map: text.includes('#EXT-X-MAP:URI="init_0.mp4"'),
    vod: text.includes('PLAYLIST-TYPE'),
  });
  const at0 = seqAndUris(liveWindow(vod, 0, 4));
  assert.deepEqual(at0, { seq: 0, uris: ['seg000.m4s', 'seg001.m4s', 'seg002.m4s', 'seg003.m4s'], ended: false, map: true, vod: false });
  // One more segment each 2 s.
  assert.deepEqual(seqAndUris(liveWindow(vod, 4.5, 4)).uris, ['seg002.m4s', 'seg003.m4s', 'seg004.m4s', 'seg005.m4s']);
  assert.equal(seqAndUris(liveWindow(vod, 4.5, 4)).seq, 2);
  const end = seqAndUris(liveWindow(vod, 1e6, 4));
  assert.deepEqual(end, { seq: 6, uris: ['seg006.m4s', 'seg007.m4s', 'seg008.m4s', 'seg009.m4s'], ended: true, map: true, vod: false });
  assert.throws(() => parseVod('#EXTM3U\n'), /no segments/);
  assert.throws(() => parseVod('#EXTM3U\nseg.m4s\n'), /without #EXTINF/);
});

test('the origin serves the live window under /live/, and the segments there', async () => {
  origin.reset();
  const text = await (await fetch(`${origin.url}/live/index.m3u8`)).text();
  assert.match(text, /#EXT-X-MEDIA-SEQUENCE:0\n/);
  // 10 segments in all, fewer than the 15 of a window: all of them, and it is the end.
  assert.equal(text.split('\n').filter((l) => l.endsWith('.m4s')).length, 10);
  assert.ok(text.includes('#EXT-X-ENDLIST'));
  assert.equal((await (await fetch(`${origin.url}/live/seg000.m4s`)).arrayBuffer()).byteLength, 1000);
  const s = await (await fetch(`${origin.url}/_origin/stats`)).json();
  assert.deepEqual(s.segment, { requests: 1, bytes: 1000 });
  assert.equal(s.playlist.bytes, text.length);
});

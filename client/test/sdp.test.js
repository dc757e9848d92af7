// minify/expand on every capture in the repository's fixtures/ (real Chromium and Firefox output).
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import {
  expand,
  expandCandidate,
  firstMid,
  minify,
  minifyCandidate,
  parseDataChannel,
  parseMinified,
} from '../src/sdp.js';
import { FIXTURES, jsonl, names, read } from './fixtures.js';

const SHARED = '/work/shared/fixtures/sdp';

test('the repository fixtures are the shared captures, all of them', { skip: !existsSync(SHARED) }, () => {
  for (const name of readdirSync(SHARED)) {
    assert.equal(read(name), readFileSync(join(SHARED, name), 'utf8'), name);
  }
});

/** Every data-channel SDP of the captures: the .sdp files and the SDPs in stream-offers. */
function dataChannelSdps() {
  const out = names(/datachannel.*\.sdp$/).map((n) => [n, read(n)]);
  jsonl('stream-offers.jsonl').forEach((o, i) => out.push([`stream-offers.jsonl:${i + 1}`, o.sdp]));
  return out;
}

/** The lines of an SDP, for checking that a parsed value really is in the capture. */
const lineSet = (sdp) => new Set(sdp.split(/\r?\n/).map((l) => l.trim()));

test('every data-channel capture minifies, expands and keeps the fields that matter', () => {
  const all = dataChannelSdps();
  assert.equal(all.length, 28); // 10 .sdp files and 18 offers in stream-offers.jsonl
  for (const [name, sdp] of all) {
    const fields = parseDataChannel(sdp);
    assert.ok(fields, `${name}: not recognised as a data-channel SDP`);
    const lines = lineSet(sdp);
    // The parsed values are the capture's own lines, not something the parser made up.
    assert.ok(lines.has(`a=ice-ufrag:${fields.ufrag}`), name);
    assert.ok(lines.has(`a=ice-pwd:${fields.pwd}`), name);
    assert.ok(lines.has(`a=fingerprint:${fields.hash} ${fields.fingerprint}`), name);
    assert.ok(lines.has(`a=setup:${fields.setup}`), name);
    assert.ok(lines.has(`a=mid:${fields.mid}`), name);
    assert.ok(lines.has(`a=sctp-port:${fields.sctpPort}`), name);
    assert.ok(lines.has(`a=max-message-size:${fields.maxMessageSize}`), name);
    const inline = [...lines].filter((l) => l.startsWith('a=candidate:'));
    assert.equal(fields.candidates.length, inline.length, name);

    const m = minify(sdp);
    assert.ok(m && m.startsWith('1,'), name);
    assert.ok(m.length < sdp.length / 2, `${name}: ${m.length} B of ${sdp.length}`);
    assert.deepEqual(parseMinified(m), fields, name);

    const back = expand(m, { sessionId: '1234' });
    assert.ok(back.startsWith('v=0\r\no=- 1234 2 IN IP4 127.0.0.1\r\n'), name);
    assert.ok(back.endsWith('\r\n') && !back.includes('\n\n'), name);
    assert.deepEqual(parseDataChannel(back), fields, `${name}: expanded SDP lost a field`);
    assert.equal(minify(back), m, `${name}: minify(expand(m)) != m`);
    assert.equal(firstMid(m), fields.mid);
    assert.equal(firstMid(sdp), fields.mid);
    // The offerer's setup is actpass; an answer picks a role.
    assert.equal(fields.setup === 'actpass', /offer/.test(name) || name.startsWith('stream'), name);
  }
});

test('the m1 format is the simulator\'s, byte for byte', () => {
  // simulator/src/sdp_min.rs, test chrome_trickle_offer.
  assert.equal(
    minify(read('chrome-datachannel-offer.sdp')),
    '1,zMoC,nDNXZvurjhraIwdspg/LF1q1,sha-256:Pnemf5SkBMYfJ//FehnZkHi2a69iNrbE9j8katuE+nw,a,0,5000,262144',
  );
  // And its candidate test.
  assert.equal(
    minifyCandidate('candidate:2 1 TCP 2105458943 83442bb4-7643-4721-8bfd-8d99b3a6ea02.local 9 typ host tcptype active'),
    '2 1 TCP 2105458943 83442bb4-7643-4721-8bfd-8d99b3a6ea02.local 9 host tcptype active',
  );
});

test('trickle offers shrink as documented (Chrome 458 B -> 99 B)', () => {
  const sdp = read('chrome-datachannel-offer.sdp');
  assert.equal(sdp.length, 458);
  assert.equal(minify(sdp).length, 99);
});

test('audio/video SDPs are not minified: minify refuses, expand passes them through', () => {
  const av = names(/-av-.*\.sdp$/);
  assert.equal(av.length, 8);
  for (const name of av) {
    const sdp = read(name);
    assert.equal(parseDataChannel(sdp), null, name);
    assert.equal(minify(sdp), null, name);
    // The SDK then sends the SDP as it is, and the receiver takes a plain SDP unchanged.
    assert.equal(expand(sdp), sdp, name);
    assert.ok(firstMid(sdp) !== null, name);
  }
});

test('every trickled candidate of every capture survives minify and expand', () => {
  const files = names(/candidates\.jsonl$/);
  assert.equal(files.length, 8);
  let n = 0;
  for (const name of files) {
    for (const line of jsonl(name)) {
      if (line.event !== undefined) continue;
      if (line.candidate === '') {
        // Firefox's end-of-candidates: not a candidate.
        assert.equal(minifyCandidate(line.candidate), null);
        continue;
      }
      n++;
      const min = minifyCandidate(line.candidate);
      assert.ok(min && !min.includes('typ ') && !min.includes(','), `${name}: ${line.candidate}`);
      const full = expandCandidate(min);
      const orig = line.candidate.split(' ');
      const back = full.split(' ');
      // foundation, component, transport, priority, address, port, typ, type unchanged.
      assert.deepEqual(back.slice(0, 8), orig.slice(0, 8), name);
      for (const key of ['raddr', 'rport', 'tcptype']) {
        const i = orig.indexOf(key);
        const j = back.indexOf(key);
        assert.equal(j === -1 ? null : back[j + 1], i === -1 ? null : orig[i + 1], `${name}: ${key}`);
      }
      assert.ok(!full.includes('generation') && !full.includes('ufrag') && !full.includes('network-'));
      assert.equal(minifyCandidate(full), min);
      // A receiver takes a full candidate too (minify off on the other side).
      assert.equal(expandCandidate(line.candidate), line.candidate);
    }
  }
  assert.ok(n > 50, `only ${n} candidates`);
});

test('one minified candidate is ~38 B, as the captures README says', () => {
  const min = minifyCandidate(jsonl('chrome-datachannel-candidates.jsonl')[0].candidate);
  assert.ok(min.length <= 90, min);
  const relay = jsonl('firefox-turn-datachannel-candidates.jsonl').find((l) => / typ relay /.test(l.candidate ?? ''));
  assert.match(minifyCandidate(relay.candidate), / relay raddr \S+ rport \d+$/);
});

test('malformed input is refused, never thrown', () => {
  const good = minify(read('firefox-datachannel-offer.sdp'));
  const bad = [
    '',
    '1,',
    '1,a,b',
    'v=1',
    good.replace(',a,', ',x,'),
    good.replace(/sha-256:[^,]+/, 'sha-256:###'),
    good.replace(/sha-256:[^,]+/, 'sha-256'),
    good.replace(',5000,', ',50a0,'),
    `${good},not a candidate`,
    `${good},1 1 udp 1 1.2.3.4 5 host raddr`,
    `${good},1 1 udp 1 1.2.3.4 5 host evil x`,
    `${good},candidate:1 1 udp 1 1.2.3.4 5 typ host`,
    'x'.repeat(70000),
    `1,${'a,'.repeat(100000)}`,
  ];
  for (const m of bad) {
    assert.equal(expand(m), null, m.slice(0, 80));
  }
  for (const v of [null, undefined, 42, {}, []]) {
    assert.equal(expand(/** @type {any} */ (v)), null);
    assert.equal(minify(/** @type {any} */ (v)), null);
    assert.equal(expandCandidate(/** @type {any} */ (v)), null);
    assert.equal(minifyCandidate(/** @type {any} */ (v)), null);
  }
  // An SDP whose field would break the comma-separated format is sent plain, not mangled.
  const sdp = read('chrome-datachannel-offer.sdp').replace('a=mid:0', 'a=mid:0,1');
  assert.equal(minify(sdp), null);
  // A data-channel SDP without the fields a peer needs.
  assert.equal(minify(read('chrome-datachannel-offer.sdp').replace(/a=ice-pwd:.*\r\n/, '')), null);
});

test('fixture folder holds only what the tests above read', () => {
  const known = /(\.sdp|candidates\.jsonl|stream-offers\.jsonl|gathering-timing\.csv|README\.md)$/;
  for (const name of readdirSync(FIXTURES)) assert.match(name, known);
});

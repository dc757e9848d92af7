// MessagePack subset: round trips, the tracker's wire shapes, and hostile input.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { decode, encode, MAX_DEPTH, MsgpackError } from '../src/msgpack.js';
import { read } from './fixtures.js';

test('round trips every value kind the protocol uses, at every length boundary', () => {
  const values = [
    null, true, false, 0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32,
    Number.MAX_SAFE_INTEGER, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1,
    Number.MIN_SAFE_INTEGER, 0.5, -1.25e300, '', 'a', 'x'.repeat(31), 'x'.repeat(32),
    'x'.repeat(255), 'x'.repeat(256), 'x'.repeat(65535), 'x'.repeat(65536), 'é€😀',
    // Non-ASCII: more bytes than characters, across each header size.
    'é'.repeat(20), 'é'.repeat(200), 'é'.repeat(40000), `${'x'.repeat(30)}é`,
    [], [1, 'a', null], Array.from({ length: 15 }, (_, i) => i), Array.from({ length: 16 }, (_, i) => i),
    Array.from({ length: 70000 }, () => 0),
  ];
  for (const v of values) assert.deepEqual(decode(encode(v)), v);
  const big = Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i]));
  assert.deepEqual({ ...decode(encode(big)) }, big);
});

test('a signal as the SDK sends it: a map with string keys, the SDP as a string', () => {
  const sdp = read('chrome-datachannel-offer.sdp');
  const msg = { t: 'offer', swarm: 'video-42', to: 'Gis8TQAAAAEEwdLj9KW2xw', sid: 'n1', m: sdp, skip: undefined };
  const bytes = encode(msg);
  assert.equal(bytes[0], 0x85, 'fixmap of 5 (undefined left out)');
  assert.deepEqual({ ...decode(bytes) }, { t: 'offer', swarm: 'video-42', to: 'Gis8TQAAAAEEwdLj9KW2xw', sid: 'n1', m: sdp });
  // Smaller than JSON, which escapes every \r\n.
  assert.ok(bytes.length < JSON.stringify(msg).length);
});

test('hostile input throws MsgpackError, never allocates by a claimed length', () => {
  const cases = [
    [],
    [0xc1], // never used
    [0xd9, 5, 0x61], // string longer than the buffer
    [0xdd, 0xff, 0xff, 0xff, 0xff], // array of 4 billion
    [0xdf, 0xff, 0xff, 0xff, 0xff], // map of 4 billion
    [0xc6, 0xff, 0xff, 0xff, 0xff], // bin of 4 GiB
    [0x81, 0x01, 0x02], // integer map key
    [0xa2, 0xc3, 0x28], // invalid UTF-8
    [0xc0, 0xc0], // trailing bytes
    [0xd3, 0, 0], // truncated int64
  ];
  for (const c of cases) assert.throws(() => decode(Uint8Array.from(c)), MsgpackError, JSON.stringify(c));
  // Nesting: MAX_DEPTH levels decode, one more is refused (the tracker's own limit).
  const nest = (n) => Uint8Array.from([...Array(n).fill(0x91), 0xc0]);
  assert.doesNotThrow(() => decode(nest(MAX_DEPTH)));
  assert.throws(() => decode(nest(MAX_DEPTH + 1)), MsgpackError);
  assert.throws(() => decode(nest(100000)), MsgpackError);
});

test('floats, binaries and 64-bit integers from a server decode (skipped as unknown fields)', () => {
  const f32 = Uint8Array.from([0xca, 0x3f, 0xc0, 0, 0]);
  assert.equal(decode(f32), 1.5);
  assert.deepEqual(decode(Uint8Array.from([0xc4, 2, 7, 8])), Uint8Array.from([7, 8]));
  assert.equal(decode(Uint8Array.from([0xcf, 0, 0, 0, 1, 0, 0, 0, 0])), 2 ** 32);
});

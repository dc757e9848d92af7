// SwarmClient against a real WebSocket server that misbehaves on purpose: the socket state
// machine (welcome, rejoin, reconnect, backoff) and hostile frames. WebRTC itself is exercised
// in Chromium by e2e/run.mjs; nothing here needs an RTCPeerConnection.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';

import { SwarmClient } from '../src/client.js';
import { decode, encode } from '../src/msgpack.js';
import { startServer, until } from './ws-server.js';

const ID_A = 'Gis8TQAAAACfOsDS5Bt3hQ';
const welcome = (peer = ID_A) => ({ t: 'welcome', peer, instance: '1a2b3c4d', limits: { want: 3, max_message: 16384, rate: 50, burst: 200 } });
/** Client messages the server got on one connection, decoded. */
const got = (conn) => conn.received.map((f) => (typeof f === 'string' ? JSON.parse(f) : { ...decode(f) }));

const servers = [];
after(() => Promise.all(servers.map((s) => s.close())));

async function setup(options = {}) {
  const server = await startServer();
  servers.push(server);
  const client = new SwarmClient(server.url, {
    WebSocket: globalThis.WebSocket,
    backoffMinMs: 20,
    backoffMaxMs: 100,
    refillDelayMs: 0,
    ...options,
  });
  return { server, client };
}

test('joins after welcome, clamps want, rejoins after reconnect', async () => {
  const { server, client } = await setup({ want: 10 });
  const events = [];
  client.on('connected', (e) => events.push(e));
  client.join('video-42');
  const c1 = await until(() => server.conns[0], 'first connection');
  assert.match(c1.url, /^\/v1\/ws\?format=json&swarm=video-42$/);
  c1.send(JSON.stringify(welcome()));
  await until(() => c1.received.length === 1, 'join');
  // The tracker announced want 3: asking for 10 would be a bad_message.
  assert.deepEqual(got(c1), [{ t: 'join', swarm: 'video-42', want: 3 }]);
  assert.equal(client.peerId, ID_A);

  // A draining tracker: reconnect after 30 ms, to a new instance, then join again.
  c1.send(JSON.stringify({ t: 'reconnect', after_ms: 30 }));
  const c2 = await until(() => server.conns[1], 'second connection');
  // Marked as moved by a drain, so the tracker doesn't count it as a new viewer.
  assert.match(c2.url, /^\/v1\/ws\?format=json&swarm=video-42&reconnect=1$/);
  assert.ok(c1.closed || (await until(() => c1.closed, 'old socket closed')));
  c2.send(JSON.stringify(welcome('Gis8TQAAAAEEwdLj9KW2xw')));
  await until(() => c2.received.length === 1, 'rejoin');
  assert.deepEqual(got(c2), [{ t: 'join', swarm: 'video-42', want: 3 }]);
  assert.equal(events.length, 2);
  client.close();
  await until(() => c2.received.length === 2, 'leave');
  assert.deepEqual(got(c2)[1], { t: 'leave', swarm: 'video-42' });
});

test('reconnects with backoff after a dropped connection and after no welcome', async () => {
  const { server, client } = await setup({ handshakeTimeoutMs: 50 });
  client.join('s');
  const c1 = await until(() => server.conns[0], 'first connection');
  c1.drop(); // no close frame: a crashed tracker
  const c2 = await until(() => server.conns[1], 'reconnect after drop');
  assert.doesNotMatch(c2.url, /reconnect=/, 'a crash is no drain: back as a new viewer');
  // c2 never says welcome: the client gives up on it and tries again.
  const c3 = await until(() => server.conns[2], 'reconnect after handshake timeout');
  assert.ok(await until(() => c2.closed, 'silent socket closed'));
  c3.send(JSON.stringify(welcome()));
  await until(() => c3.received.length === 1, 'join');
  assert.equal(client.attempt, 0, 'welcome resets the backoff');
  client.close();
});

test('hostile frames are dropped; the client keeps working', async () => {
  const { server, client } = await setup({ framing: 'msgpack' });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  client.join('s');
  const c = await until(() => server.conns[0], 'connection');
  assert.match(c.url, /format=msgpack/);
  const nested = Uint8Array.from([...Array(5000).fill(0x91), 0xc0]);
  const hostile = [
    'not json',
    '[1,2,3]',
    'null',
    '{"t":42}',
    '{"t":"welcome","peer":"short"}',
    '{"t":"peers","swarm":"s","peers":"nope"}',
    '{"t":"offer","swarm":"s","from":"../../etc","sid":"1","m":"v=0"}',
    '{"t":"cands","swarm":"s","from":"Gis8TQAAAAEEwdLj9KW2xw","sid":"1","c":[1,2,{}]}',
    '{"t":"batch","msgs":{"length":1e9}}',
    `{"t":"batch","msgs":[${'{"t":"pong"},'.repeat(10000)}{"t":"pong"}]}`,
    '{"t":"__proto__","__proto__":{"polluted":true}}',
    nested,
    Uint8Array.from([0xdf, 0xff, 0xff, 0xff, 0xff]),
    Uint8Array.from([0xc1]),
    new Uint8Array(0),
    encode({ t: 'answer', swarm: 's', from: ID_A, sid: 'x', m: 'v=0' }), // before welcome, unknown peer
    encode({ t: 'error', code: 'x'.repeat(100000), msg: 42 }),
  ];
  for (const f of hostile) c.send(f);
  c.send(encode(welcome()));
  await until(() => c.received.length === 1, 'join after the garbage');
  assert.deepEqual(got(c), [{ t: 'join', swarm: 's', want: 3 }]);
  assert.ok(client.stats.malformed >= 12, `malformed ${client.stats.malformed}`);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code.length, 64, 'error code cut to 64 chars');
  assert.equal(/** @type {any} */ ({}).polluted, undefined);
  // A second welcome on the same connection is ignored, not a new identity.
  c.send(encode(welcome('Gis8TQAAAAEEwdLj9KW2xw')));
  c.send(encode({ t: 'pong' }));
  await until(() => client.stats.framesReceived === hostile.length + 3, 'frames read');
  assert.equal(client.peerId, ID_A);
  client.close();
});

test('a message over the tracker\'s max_message is not sent', async () => {
  const { server, client } = await setup();
  client.join('s');
  const c = await until(() => server.conns[0], 'connection');
  c.send(JSON.stringify({ ...welcome(), limits: { want: 3, max_message: 1024 } }));
  await until(() => c.received.length === 1, 'join');
  assert.equal(client.send({ t: 'offer', swarm: 's', to: ID_A, sid: '1', m: 'x'.repeat(2000) }), false);
  assert.equal(client.stats.dropped, 1);
  client.close();
});

test('option and argument checks', () => {
  assert.throws(() => new SwarmClient('ws://x', { framing: /** @type {any} */ ('xml') }), TypeError);
  const client = new SwarmClient('ws://127.0.0.1:9/v1/ws', { WebSocket: globalThis.WebSocket, maxSwarms: 1 });
  assert.throws(() => client.join(''), RangeError);
  assert.throws(() => client.join('x'.repeat(257)), RangeError);
  client.join('a');
  assert.throws(() => client.join('b'), RangeError);
  client.close();
  assert.throws(() => client.join('a'), /closed/);
});

test('offers from one remote are rate limited with back-off; other remotes are not held back', async () => {
  let t = 0;
  const { server, client } = await setup({ now: () => t });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  client.join('s');
  const c = await until(() => server.conns[0], 'connection');
  c.send(JSON.stringify(welcome()));
  await until(() => c.received.length === 1, 'join');
  const flooder = 'Gis8TQAAAAEEwdLj9KW2xw';
  const offer = (from, sid) => JSON.stringify({ t: 'offer', swarm: 's', from, sid, m: 'v=0' });
  // 50 offers, each a new negotiation, at once: the tracker relays ~50 a second.
  for (let i = 0; i < 50; i++) c.send(offer(flooder, `f${i}`));
  await until(() => client.stats.framesReceived === 51, 'the offers');
  // Node has no RTCPeerConnection: each connection the client tries to make is reported as
  // rtc_config, so the errors count the connections attempted.
  const attempts = () => errors.filter((e) => e.code === 'rtc_config').length;
  assert.equal(attempts(), 3, 'three connections (the burst) for 50 offers');
  assert.equal(client.stats.offersLimited, 47);
  c.send(offer('Gis8TQAAAAKfOsDS5Bt3hQ', 'other'));
  await until(() => attempts() === 4, 'an offer from another remote');
  // The flooder backed off to the 60 s maximum; after it, one offer gets through again.
  t = 59999;
  c.send(offer(flooder, 'late-1'));
  await until(() => client.stats.offersLimited === 48, 'still backing off');
  t += 60000;
  c.send(offer(flooder, 'late-2'));
  await until(() => attempts() === 5, 'a patient remote is answered again');
  client.close();
});

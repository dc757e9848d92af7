// The SDK in headless Chromium through a real fleet: HAProxy (leastconn) in front of two
// trackers sharing a redis-server. Every wait polls with a deadline.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { decodeServerFrame } from '../src/wire.js';
import { read } from '../test/fixtures.js';
import { launch } from './browser.mjs';
import { connections, startFleet, until } from './fleet.mjs';

/** @type {Awaited<ReturnType<typeof startFleet>>} */
let fleet;
/** @type {Awaited<ReturnType<typeof launch>>} */
let browser;
/** @type {import('playwright-core').Page[]} */
const pages = [];
let swarmSeq = 0;

before(async () => {
  fleet = await startFleet({
    trackers: 2,
    // A drain tells viewers to come back within 300 ms instead of 10 s, so the drain test is fast.
    env: { TRACKER__DRAIN__RECONNECT_WINDOW_MS: '300', TRACKER__DRAIN__CLOSE_GRACE_MS: '2000' },
  });
  browser = await launch();
  for (let i = 0; i < 6; i++) pages.push(await browser.page(fleet.pageOrigin));
});

after(async () => {
  await browser?.close();
  await fleet?.stop();
});

/** @param {import('playwright-core').Page} page */
const state = (page) => page.evaluate(() => /** @type {any} */ (window).harness.state());

/**
 * Starts a client on a page and waits for its `welcome`.
 * @param {import('playwright-core').Page} page
 * @param {string} swarm
 * @param {Record<string, unknown>} options
 */
async function start(page, swarm, options) {
  await page.evaluate(([url, s, o]) => /** @type {any} */ (window).harness.start(url, s, o), [fleet.frontUrl, swarm, options]);
  return until(async () => (await state(page)).peerId && state(page), 'welcome');
}

/** Closes every page's client and waits until the trackers have let go of them all. */
async function reset() {
  for (const p of pages) await p.evaluate(() => /** @type {any} */ (window).harness.close());
  const live = fleet.trackers.filter((t) => !t.exited());
  await until(async () => (await Promise.all(live.map(connections))).every((n) => n === 0), 'no open sessions');
}

/**
 * Two pages on one swarm, one per tracker: their data channel opens and a message crosses it
 * both ways.
 * @param {Record<string, unknown>} a options of the first page
 * @param {Record<string, unknown>} b options of the second
 */
async function pair(a, b) {
  await reset();
  const swarm = `pair-${++swarmSeq}`;
  const sa = await start(pages[0], swarm, a);
  const sb = await start(pages[1], swarm, b);
  // leastconn with one session on the first tracker sends the second page to the other one:
  // their signals cross Redis.
  assert.notEqual(sa.instance, sb.instance, 'both pages on one tracker');
  const [ea, eb] = await until(async () => {
    const [x, y] = [await state(pages[0]), await state(pages[1])];
    return x.peers[sb.peerId]?.received.length && y.peers[sa.peerId]?.received.length && [x, y];
  }, 'the data channel to open and the hellos to cross');
  assert.deepEqual(ea.peers[sb.peerId].received, [`hello from ${sb.peerId}`]);
  assert.deepEqual(eb.peers[sa.peerId].received, [`hello from ${sa.peerId}`]);
  await pages[0].evaluate(() => /** @type {any} */ (window).harness.send('ping over the data channel'));
  await until(async () => (await state(pages[1])).peers[sa.peerId].received.includes('ping over the data channel'), 'a second message');
  return { a: await state(pages[0]), b: await state(pages[1]) };
}

/** Signal messages of one kind sent by a page. */
const sent = (s, t) => s.stats.sent[t] ?? { messages: 0, bytes: 0 };

test('two pages through HAProxy and two trackers: minified SDP, JSON', async () => {
  const { a, b } = await pair({ framing: 'json', minify: true }, { framing: 'json', minify: true });
  // B offered (it joined second and got A in `peers`), A answered; candidates went batched.
  assert.equal(sent(b, 'offer').messages, 1);
  assert.equal(sent(a, 'answer').messages, 1);
  assert.ok(sent(b, 'offer').bytes < 250, `minified offer of ${sent(b, 'offer').bytes} B`);
  assert.ok(sent(b, 'cands').messages >= 1 && sent(b, 'cands').messages <= 3);
  assert.equal(a.stats.malformed + b.stats.malformed, 0);
});

test('plain SDP, JSON', async () => {
  const { b } = await pair({ framing: 'json', minify: false }, { framing: 'json', minify: false });
  assert.ok(sent(b, 'offer').bytes > 400, `plain offer of ${sent(b, 'offer').bytes} B`);
});

test('minified SDP, MessagePack', async () => {
  const { a, b } = await pair({ framing: 'msgpack', minify: true }, { framing: 'msgpack', minify: true });
  assert.equal(a.stats.malformed + b.stats.malformed, 0);
});

test('plain SDP, MessagePack', async () => {
  await pair({ framing: 'msgpack', minify: false }, { framing: 'msgpack', minify: false });
});

test('mixed: a JSON page with minified SDP and a MessagePack page with plain SDP', async () => {
  await pair({ framing: 'json', minify: true }, { framing: 'msgpack', minify: false });
});

test('six pages in one swarm connect to each other', async () => {
  await reset();
  const swarm = `mesh-${++swarmSeq}`;
  const ids = [];
  for (const [i, p] of pages.entries()) {
    ids.push((await start(p, swarm, { want: 5, framing: i % 2 ? 'msgpack' : 'json' })).peerId);
  }
  const instances = new Set((await Promise.all(pages.map(state))).map((s) => s.instance));
  assert.equal(instances.size, 2, 'pages spread over both trackers');
  await until(async () => {
    const all = await Promise.all(pages.map(state));
    return all.every((s, i) => ids.every((id, j) => i === j || s.peers[id]?.received.includes(`hello from ${id}`)));
  }, 'every page to hear from the five others', 30000);
  for (const s of await Promise.all(pages.map(state))) assert.equal(s.open.length, 5);
});

test('a peer that never answers is closed after connectTimeoutMs; leave cleans up', async () => {
  await reset();
  const swarm = `silent-${++swarmSeq}`;
  // A viewer that joins and then ignores everything: a plain WebSocket client in this process.
  const ws = new WebSocket(fleet.frontUrl);
  /** @type {any[]} */
  const got = [];
  ws.onmessage = (ev) => got.push(...decodeServerFrame(ev.data));
  try {
    const welcome = await until(() => got.find((m) => m.t === 'welcome'), 'welcome of the silent viewer');
    ws.send(JSON.stringify({ t: 'join', swarm, want: 5 }));
    await until(() => got.some((m) => m.t === 'peers'), 'peers of the silent viewer');
    await start(pages[0], swarm, { connectTimeoutMs: 1500, refillDelayMs: 300 });
    // The page offers (minified) and trickles its candidates, batched, ending with `end`.
    const offer = await until(() => got.find((m) => m.t === 'offer'), 'the offer');
    assert.match(offer.m, /^1,/);
    await until(() => got.some((m) => m.t === 'cands' && m.end), 'the end of candidates');
    // Nobody answers: the page gives up on the peer and, the swarm being short of peers, asks
    // the tracker again; the tracker hands out the same silent viewer, which the page doesn't
    // offer to again for retryFailedAfterMs.
    const s = await until(async () => {
      const x = await state(pages[0]);
      return x.stats.peersFailed === 1 && x.stats.skippedFailed >= 1 && x;
    }, 'the timeout, the refill and the skip');
    assert.ok(s.stats.sent.join.messages >= 2);
    assert.equal(s.stats.sent.offer.messages, 1);
    assert.deepEqual(s.open, []);
    assert.equal(s.held, 0);
    assert.equal(offer.from, s.peerId);
    assert.equal(welcome.peer.length, 22);
    // Leaving closes what the page holds and takes it out of the swarm.
    await pages[0].evaluate((sw) => /** @type {any} */ (window).harness.leave(sw), swarm);
    assert.equal((await state(pages[0])).held, 0);
    const before = got.length;
    ws.send(JSON.stringify({ t: 'join', swarm, want: 5 }));
    const peers = await until(() => got.slice(before).find((m) => m.t === 'peers'), 'peers after the leave');
    assert.deepEqual(peers.peers, []);
  } finally {
    ws.close();
  }
});

test('a remote flooding offers is rate limited; one replacing its connection too often is quarantined', async () => {
  await reset();
  const swarm = `hostile-${++swarmSeq}`;
  // A short offer interval so the test takes a second or two; the rest is the defaults (a
  // burst of 3 offers, quarantine past 3 replacements in a minute).
  await start(pages[0], swarm, { offerIntervalMs: 100, offerBackoffMaxMs: 300 });
  // The hostile swarm member: a plain WebSocket client in this process, with a real browser
  // offer so the page's RTCPeerConnection takes it and waits for ICE that never comes.
  const sdp = read('chrome-datachannel-offer-complete.sdp');
  const ws = new WebSocket(fleet.frontUrl);
  /** @type {any[]} */
  const got = [];
  ws.onmessage = (ev) => got.push(...decodeServerFrame(ev.data));
  try {
    await until(() => got.find((m) => m.t === 'welcome'), 'welcome of the hostile viewer');
    ws.send(JSON.stringify({ t: 'join', swarm, want: 5 }));
    const peers = await until(() => got.find((m) => m.t === 'peers'), 'peers of the hostile viewer');
    const page = peers.peers[0];
    assert.ok(page, 'the page is in the swarm');
    let sid = 0;
    const offer = () => ws.send(JSON.stringify({ t: 'offer', swarm, to: page, sid: `h${++sid}`, m: sdp }));
    const answered = () => got.filter((m) => m.t === 'answer').map((m) => m.sid);
    // 1. 30 new negotiations at once: the burst of 3 is taken (each replacing the one before),
    // the rest ignored.
    for (let i = 0; i < 30; i++) offer();
    await until(async () => (await state(pages[0])).stats.offersLimited === 27, 'the burst limited');
    await until(() => answered().length >= 1, 'an answer');
    // 2. Offers spaced past the back-off are taken, each replacing the connection: the third
    // replacement is allowed and answered, the fourth quarantines the remote (not answered,
    // its connection closed).
    await new Promise((r) => setTimeout(r, 400));
    offer();
    await until(() => answered().includes(`h${sid}`), 'the answer to the third replacement');
    await new Promise((r) => setTimeout(r, 400));
    offer();
    const quarantining = `h${sid}`;
    const s = await until(async () => {
      const x = await state(pages[0]);
      return x.stats.quarantined === 1 && x;
    }, 'the quarantine');
    assert.equal(s.held, 0, 'the quarantined remote holds no connection');
    // 3. While quarantined, its offers are ignored.
    await new Promise((r) => setTimeout(r, 400));
    offer();
    await until(async () => (await state(pages[0])).stats.offersLimited === 28, 'ignored while quarantined');
    assert.ok(!answered().includes(quarantining) && !answered().includes(`h${sid}`), `answered ${answered()}`);
  } finally {
    ws.close();
  }
});

test('a malformed ICE server is reported as rtc_config, not thrown', async () => {
  await reset();
  const swarm = `badice-${++swarmSeq}`;
  await start(pages[0], swarm, {});
  await start(pages[1], swarm, { iceServers: [{ urls: 'not a url' }] });
  const s = await until(async () => {
    const x = await state(pages[1]);
    return x.events.some((e) => e.startsWith('error rtc_config')) && x;
  }, 'the rtc_config error');
  assert.equal(s.held, 0);
  assert.equal(s.stats.malformed, 0);
});

test('a plain module script tag puts the SDK on window.swarmtrack', async () => {
  const page = await browser.context.newPage();
  try {
    await page.goto(`${fleet.pageOrigin}/e2e/page.html`);
    await page.addScriptTag({ url: '/global.js', type: 'module' });
    await page.waitForFunction(() => typeof (/** @type {any} */ (window).swarmtrack?.SwarmClient) === 'function');
    // The browser's own parser takes an expanded SDP: a throwaway connection applies one.
    const ok = await page.evaluate(async () => {
      const { minify, expand } = /** @type {any} */ (window).swarmtrack;
      const a = new RTCPeerConnection();
      a.createDataChannel('x');
      await a.setLocalDescription(await a.createOffer());
      const b = new RTCPeerConnection();
      await b.setRemoteDescription({ type: 'offer', sdp: expand(minify(a.localDescription.sdp)) });
      await b.setLocalDescription(await b.createAnswer());
      await a.setRemoteDescription({ type: 'answer', sdp: expand(minify(b.localDescription.sdp)) });
      const states = [a.signalingState, b.signalingState];
      a.close();
      b.close();
      return states;
    });
    assert.deepEqual(ok, ['stable', 'stable']);
  } finally {
    await page.close();
  }
});

test('the demo page: two tabs on the same video connect and chat', async () => {
  await reset();
  const url = `${fleet.pageOrigin}/demo/?tracker=${encodeURIComponent(fleet.frontUrl)}&video=demo-${++swarmSeq}&autojoin=1`;
  const tabs = [await browser.context.newPage(), await browser.context.newPage()];
  try {
    for (const t of tabs) {
      await t.goto(url);
      await until(async () => (await t.textContent('#me')) !== '-', 'the demo to connect');
    }
    const ids = await Promise.all(tabs.map((t) => t.textContent('#me')));
    // Each tab lists the other as a peer.
    await until(async () => (await tabs[0].textContent('#peers')).includes(ids[1]) && (await tabs[1].textContent('#peers')).includes(ids[0]), 'the peer rows');
    await tabs[0].fill('#text', 'hi from tab one');
    await tabs[0].click('#chat button');
    await until(async () => (await tabs[1].textContent('#peers')).includes('hi from tab one'), 'the message in the other tab');
    await tabs[1].click('#leave');
    await until(async () => !(await tabs[0].textContent('#peers')).includes(ids[1]), 'the peer to leave the list');
  } finally {
    for (const t of tabs) await t.close();
  }
});

test('a page whose tracker drains reconnects, rejoins and reconnects its peer', async () => {
  const { a, b } = await pair({ refillDelayMs: 200 }, { refillDelayMs: 200 });
  const drained = fleet.byInstance(a.instance);
  assert.ok(drained, `no tracker with instance ${a.instance}`);
  await fleet.drain(drained);
  // A is told to reconnect, comes back through HAProxy on the other tracker with a new id, and
  // joins its swarm again.
  const a2 = await until(async () => {
    const s = await state(pages[0]);
    return s.connects.length === 2 && s.events.some((e) => e.startsWith('reconnect')) && s;
  }, 'the drained page to reconnect');
  assert.equal(a2.connects[1].instance, b.instance);
  assert.notEqual(a2.peerId, a.peerId);
  // The data channel itself never depended on the tracker.
  assert.deepEqual(a2.open, [b.peerId]);
  // Now the peer link breaks: A asks the tracker for peers again and B is found and reconnected
  // through the new session (B's side refills too; whoever offers, one connection results).
  await pages[0].evaluate((id) => /** @type {any} */ (window).harness.disconnect(id), b.peerId);
  await until(async () => {
    const [x, y] = [await state(pages[0]), await state(pages[1])];
    return x.open.includes(b.peerId) && y.open.includes(a2.peerId) && y.peers[a2.peerId].received.length > 0;
  }, 'the peer to reconnect after the drain');
  const [x, y] = [await state(pages[0]), await state(pages[1])];
  assert.equal(x.open.length, 1);
  assert.equal(y.open.length, 1);
  await until(() => drained.exited(), 'the drained tracker to exit', 15000);
});

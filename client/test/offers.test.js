// OfferGate (src/offers.js): incoming offers per remote, rate with back-off and quarantine, on
// a hand-driven clock.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { OfferGate } from '../src/offers.js';

function gate(extra = {}) {
  const clock = { t: 0 };
  const g = new OfferGate({
    intervalMs: 1000,
    burst: 3,
    maxIntervalMs: 8000,
    maxReplacements: 3,
    replaceWindowMs: 60000,
    quarantineMs: 30000,
    now: () => clock.t,
    ...extra,
  });
  return { g, clock };
}

test('a burst of offers per remote, then one per interval; other remotes are not affected', () => {
  const { g, clock } = gate();
  for (let i = 0; i < 3; i++) assert.equal(g.admit('a'), 'ok', `offer ${i + 1} of the burst`);
  assert.equal(g.admit('b'), 'ok', 'another remote has its own bucket');
  clock.t = 999;
  assert.equal(g.admit('a'), 'limited', 'the bucket is empty'); // interval now 2000
  clock.t = 999 + 2000;
  assert.equal(g.admit('a'), 'ok', 'a token after the (doubled) interval'); // back to 1000
  clock.t += 1000;
  assert.equal(g.admit('a'), 'ok', 'a well-behaved remote, one offer a second');
});

test('offers over the rate double the interval, up to the maximum; a patient remote gets in', () => {
  const { g, clock } = gate();
  for (let i = 0; i < 3; i++) g.admit('a');
  const expect = [2000, 4000, 8000, 8000];
  for (const interval of expect) {
    assert.equal(g.admit('a'), 'limited');
    assert.equal(g.remotes.get('a')?.interval, interval);
  }
  clock.t = 8000;
  assert.equal(g.admit('a'), 'ok');
  assert.equal(g.remotes.get('a')?.interval, 4000, 'an accepted offer halves the interval');
});

test('a flood of 50 offers a second for a minute gets a handful through', () => {
  const { g, clock } = gate({ maxIntervalMs: 60000 });
  let ok = 0;
  for (let i = 0; i < 50 * 60; i++) {
    clock.t = i * 20;
    if (g.admit('flooder') === 'ok') ok++;
  }
  // The burst of 3, then the back-off reaches 60 s within seconds.
  assert.ok(ok >= 3 && ok <= 6, `${ok} offers let through`);
});

test('replacing the connection more than maxReplacements times in the window quarantines', () => {
  const { g, clock } = gate();
  for (const t of [0, 30000, 50000]) {
    clock.t = t;
    assert.equal(g.replaced('a'), false);
  }
  clock.t = 70000; // the first replacement has left the 60 s window
  assert.equal(g.replaced('a'), false);
  clock.t = 71000;
  assert.equal(g.quarantined('a'), false);
  assert.equal(g.replaced('a'), true, 'the fourth within 60 s');
  assert.equal(g.quarantined('a'), true);
  assert.equal(g.admit('a'), 'quarantined');
  assert.equal(g.quarantined('b'), false);
  clock.t = 71000 + 30000;
  assert.equal(g.quarantined('a'), false, 'quarantine ends after quarantineMs');
  assert.equal(g.admit('a'), 'ok');
});

test('state is bounded; a quarantined remote is forgotten last', () => {
  const { g } = gate({ maxRemotes: 4, maxReplacements: 0 });
  assert.equal(g.replaced('bad'), true);
  for (let i = 0; i < 20; i++) g.admit(`r${i}`);
  assert.equal(g.remotes.size, 4);
  assert.equal(g.quarantined('bad'), true);
  assert.ok(!g.remotes.has('r0'));
});

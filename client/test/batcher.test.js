// Candidate batching timing, replaying the browsers' real gathering timelines on a fake clock.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CandidateBatcher, DEFAULT_WINDOW_MS } from '../src/batcher.js';
import { FakeClock } from './clock.js';
import { jsonl, names, read } from './fixtures.js';

/**
 * The gathering sessions of a capture: per side, the candidates with their times and the time
 * gathering completed. Firefox's empty-string candidate marks the end of one m-line's
 * candidates, not of gathering, so only the `event` line ends a session here.
 */
function sessions(name) {
  /** @type {Map<string, {cands: {t: number, c: string}[], endAt: number | null}>} */
  const by = new Map();
  for (const l of jsonl(name)) {
    const s = by.get(l.side) ?? { cands: [], endAt: null };
    by.set(l.side, s);
    if (l.event !== undefined) s.endAt = l.t_ms;
    else if (l.candidate !== '') s.cands.push({ t: l.t_ms, c: l.candidate });
  }
  return [...by.entries()];
}

/** Feeds one session to a batcher and returns what it sent, with times. */
function replay(session, windowMs, maxBatch) {
  const clock = new FakeClock();
  /** @type {{at: number, c: string[], end: boolean}[]} */
  const sent = [];
  const b = new CandidateBatcher((c, end) => sent.push({ at: clock.now(), c, end }), {
    windowMs,
    maxBatch,
    timers: clock.timers,
  });
  for (const { t, c } of session.cands) {
    clock.advanceTo(t);
    b.add(c);
  }
  clock.advanceTo(session.endAt);
  b.end();
  clock.advanceTo(session.endAt + 1000);
  return sent;
}

test('every capture: candidates leave in order, within the window, end flushed at once', () => {
  const files = names(/candidates\.jsonl$/);
  assert.equal(files.length, 8);
  let candidates = 0;
  let messages = 0;
  for (const name of files) {
    for (const [side, s] of sessions(name)) {
      const what = `${name} ${side}`;
      assert.ok(s.endAt !== null, what);
      const sent = replay(s, DEFAULT_WINDOW_MS, 32);
      assert.deepEqual(sent.flatMap((m) => m.c), s.cands.map((x) => x.c), what);
      // end: exactly once, last, at the moment gathering completed.
      assert.equal(sent.filter((m) => m.end).length, 1, what);
      assert.equal(sent.at(-1).end, true, what);
      assert.equal(sent.at(-1).at, s.endAt, what);
      // A batch that wasn't cut short by the end left exactly one window after its first
      // candidate, and holds everything that arrived in that window.
      let i = 0;
      for (const m of sent) {
        const first = s.cands[i];
        if (m.c.length > 0) {
          if (!m.end) assert.equal(m.at, first.t + DEFAULT_WINDOW_MS, what);
          for (const x of s.cands.slice(i, i + m.c.length)) assert.ok(x.t - first.t <= DEFAULT_WINDOW_MS, what);
          const next = s.cands[i + m.c.length];
          // ...and nothing that arrived before it left.
          if (next && !m.end) assert.ok(next.t >= m.at, what);
        }
        i += m.c.length;
        assert.ok(m.c.length > 0 || m.end, `${what}: empty message`);
      }
      candidates += s.cands.length;
      messages += sent.length;
    }
  }
  // Each session would otherwise send a message per candidate plus one for the end.
  assert.ok(messages < candidates, `${messages} messages for ${candidates} candidates`);
});

test('Chrome data channel: 2 host candidates + end make one message per side', () => {
  for (const [side, s] of sessions('chrome-datachannel-candidates.jsonl')) {
    const sent = replay(s, DEFAULT_WINDOW_MS, 32);
    assert.equal(sent.length, 1, side);
    assert.deepEqual(sent[0].c.length, 2);
  }
});

test('window 0 sends every candidate alone (the comparison mode)', () => {
  const [, s] = sessions('firefox-datachannel-candidates.jsonl')[0];
  const sent = replay(s, 0, 32);
  assert.equal(sent.length, s.cands.length + 1);
  assert.ok(sent.slice(0, -1).every((m) => m.c.length === 1 && !m.end));
  assert.deepEqual(sent.at(-1), { at: s.endAt, c: [], end: true });
});

test('a full batch leaves at once, before its window closes', () => {
  const clock = new FakeClock();
  const sent = [];
  const b = new CandidateBatcher((c, end) => sent.push({ at: clock.now(), n: c.length, end }), {
    windowMs: 20,
    maxBatch: 3,
    timers: clock.timers,
  });
  for (let i = 0; i < 7; i++) b.add(`c${i}`);
  assert.deepEqual(sent, [
    { at: 0, n: 3, end: false },
    { at: 0, n: 3, end: false },
  ]);
  clock.advanceTo(19);
  assert.equal(sent.length, 2);
  clock.advanceTo(20);
  assert.deepEqual(sent[2], { at: 20, n: 1, end: false });
  assert.equal(clock.pending.size, 0);
});

test('close drops what is pending and nothing leaves afterwards', () => {
  const clock = new FakeClock();
  const sent = [];
  const b = new CandidateBatcher((c) => sent.push(c), { windowMs: 15, timers: clock.timers });
  b.add('a');
  b.close();
  assert.equal(clock.pending.size, 0, 'timer left behind');
  b.add('b');
  b.end();
  clock.advanceTo(100);
  assert.deepEqual(sent, []);
});

test('end with nothing pending still says end; later candidates are ignored', () => {
  const clock = new FakeClock();
  const sent = [];
  const b = new CandidateBatcher((c, end) => sent.push({ c, end }), { windowMs: 15, timers: clock.timers });
  b.end();
  b.add('late');
  clock.advanceTo(100);
  assert.deepEqual(sent, [{ c: [], end: true }]);
});

test('gathering-timing.csv: 88 sessions, batched within the window, never more messages', () => {
  const [head, ...lines] = read('gathering-timing.csv').trim().split('\n');
  const cols = head.split(',');
  const rows = lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i], v])));
  assert.equal(rows.length, 88);
  let batched = 0;
  let alone = 0;
  for (const r of rows) {
    const n = Number(r.n_candidates);
    const first = Number(r.first_cand_ms);
    const last = Number(r.last_cand_ms);
    // The CSV has the first and last candidate time; the others are spread evenly between.
    const cands = Array.from({ length: n }, (_, i) => ({ t: n === 1 ? first : first + ((last - first) * i) / (n - 1), c: `c${i}` }));
    const session = { cands, endAt: Number(r.gather_complete_ms) };
    const sent = replay(session, DEFAULT_WINDOW_MS, 32);
    const what = `${r.source} ${r.kind} run ${r.run} ${r.side}`;
    assert.deepEqual(sent.flatMap((m) => m.c), cands.map((x) => x.c), what);
    assert.ok(sent.length <= n + 1, what);
    // Candidates that all came within one window leave together.
    if (n > 0 && last - first < DEFAULT_WINDOW_MS) assert.equal(sent[0].c.length, n, what);
    batched += sent.length;
    alone += replay(session, 0, 32).length;
  }
  // 377 candidates and 88 ends: 465 messages alone, 145 with a 15 ms window.
  assert.equal(alone, 88 + rows.reduce((s, r) => s + Number(r.n_candidates), 0));
  assert.equal(batched, 145);
});

// What the differential tests share: the targets of a test file, one scenario session per target,
// stable ids across targets, and the normal form of what clients receive.
//
// A scenario is an async function (target, ids) -> observation. It runs once on every target with
// the SAME ids (each target is its own deployment, so they never collide), which makes the
// observations comparable literally once the random parts are normalized.

import assert from 'node:assert/strict'
import { after, before, test } from 'node:test'

import {
  Client, SDP, binaryId, closeClients, startReference, startSwarmtrack
} from './harness.mjs'

/** The swarmtrack binary (scripts/test sets it); without it the harness proves itself ref vs ref. */
export const TRACKER_BIN = process.env.TRACKER_BIN

/**
 * Starts the targets of a test file before its tests and stops them after: the reference, then
 * swarmtrack alone and two swarmtrack instances joined by Redis (clients alternate between them).
 * Without TRACKER_BIN the second target is another reference server, so that the harness and the
 * scenarios are proved on their own.
 */
export function useTargets (env = {}) {
  const targets = []
  before(async () => {
    targets.push(await startReference())
    if (TRACKER_BIN) {
      targets.push(await startSwarmtrack(TRACKER_BIN, { instances: 1, env }))
      targets.push(await startSwarmtrack(TRACKER_BIN, { instances: 2, env }))
    } else {
      const second = await startReference()
      second.name = 'reference #2'
      targets.push(second)
    }
  })
  after(async () => {
    for (const target of targets) await target.close()
  })
  return targets
}

/** Ids by name, drawn on first use and then stable: `ids.alice`, `ids.hashX`. */
export function idBook () {
  const book = {}
  return new Proxy(book, {
    get: (o, name) => {
      if (typeof name !== 'string') return undefined
      if (!(name in o)) o[name] = binaryId()
      return o[name]
    }
  })
}

/**
 * The comparable form of a received message: ids become `#name` (readable in a diff), an SDP
 * that is one of the fixtures becomes `sdp:<fixture>` (anything else `sdp:ALTERED` and its length,
 * so a changed SDP fails the comparison). A reply's `tracker id` is left out: only swarmtrack
 * sends it (difference 19).
 */
export function norm (msg, ids) {
  const byValue = new Map(Object.entries(ids).map(([k, v]) => [v, `#${k}`]))
  const bySdp = new Map(Object.entries(SDP).map(([k, v]) => [v, `sdp:${k}`]))
  const walk = (v, top = false) => {
    if (typeof v === 'string') return byValue.get(v) ?? v
    if (Array.isArray(v)) return v.map(x => walk(x))
    if (v && typeof v === 'object') {
      const out = {}
      for (const [k, x] of Object.entries(v)) {
        // swarmtrack's announce replies name the instance (difference 19, asserted there).
        if (top && k === 'tracker id') continue
        const key = byValue.get(k) ?? k // scrape's `files` is keyed by info_hash
        out[key] = k === 'sdp' && typeof x === 'string' ? (bySdp.get(x) ?? `sdp:ALTERED(${x.length})`) : walk(x)
      }
      return out
    }
    return v
  }
  return walk(msg, true)
}

/** The clients of one scenario run on one target; `close()` closes them all. */
export class Session {
  constructor (target) {
    this.target = target
    this.clients = []
  }

  /** Connects client number `i` (default: the next), to the instance `target.url(i)` picks. */
  async connect (name, i = this.clients.length) {
    const client = await Client.connect(`${this.target.name}:${name}`, this.target.url(i))
    this.clients.push(client)
    return client
  }

  /** Connects one client per name, in order; returns them. */
  async connectAll (...names) {
    const clients = []
    for (const name of names) clients.push(await this.connect(name))
    return clients
  }

  /**
   * Connects one client per name, all to the first instance: for tests about counts, which with
   * two instances are each instance's own (a difference test covers that).
   */
  async connectOnOneInstance (...names) {
    const clients = []
    for (const name of names) clients.push(await this.connect(name, 0))
    return clients
  }

  async close () {
    await closeClients(this.clients)
  }
}

/** Runs `fn(session)` and closes the session's clients whatever happens. */
export async function withSession (target, fn) {
  const session = new Session(target)
  try {
    return await fn(session)
  } finally {
    await session.close()
  }
}

/**
 * A differential test: `scenario` runs on every target, each a subtest named after it;
 * `check(observation, target)` asserts what matters on each, and every other target's
 * observation must equal the reference's. `report(t)` may add diagnostics (what differs
 * legitimately, such as the texts of failure reasons). `todo` maps a target name to the reason
 * its failure is known and reported (node:test shows it as TODO; it does not fail the run).
 */
export function differential (targets, name, scenario, check = () => {}, { report, todo = {} } = {}) {
  test(name, async t => {
    const ids = idBook()
    let ref
    for (const target of targets) {
      await t.test(target.name, { todo: todo[target.name] }, async t => {
        const observation = await scenario(target, ids)
        t.diagnostic(`observation: ${JSON.stringify(observation).slice(0, 600)}`)
        check(observation, target)
        if (ref === undefined) ref = observation // the reference runs first
        else assert.deepStrictEqual(observation, ref, `${target.name} differs from the reference`)
      })
    }
    if (report) report(t)
  })
}

/**
 * A deliberate difference (docs/WEBTORRENT.md): the scenario runs on every target, each a
 * subtest; the reference's observation must equal `expected.reference` and swarmtrack's
 * `expected.swarmtrack`, or `expected[target.name]` where one target differs from the other
 * swarmtrack one. Each observation is printed so the report shows them side by side.
 */
export function difference (targets, name, scenario, expected, { todo = {} } = {}) {
  test(name, async t => {
    const ids = idBook()
    for (const target of targets) {
      await t.test(target.name, { todo: todo[target.name] }, async t => {
        const observation = await scenario(target, ids)
        const side = target.isReference ? 'reference' : 'swarmtrack'
        t.diagnostic(`observation: ${JSON.stringify(observation).slice(0, 800)}`)
        assert.deepStrictEqual(observation, expected[target.name] ?? expected[side], `${side} behaviour`)
      })
    }
  })
}

/** A reply's counts as their types only, where a test is about relaying, not counting. */
export function replyShape (reply) {
  const out = { ...reply }
  for (const k of ['complete', 'incomplete']) if (k in out) out[k] = typeof out[k]
  return out
}
